"""Drawing explanations in the terminal with rich: matrices as heat maps, the current window highlighted.

Negative numbers sit on blue, positive on red, zero on none; rich drops the
colours when the output is not a terminal or NO_COLOR is set.
"""

from __future__ import annotations

import math

import numpy as np
from rich import box
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from cnnx.explain import (
    ConvExplanation,
    FieldRow,
    LayerExplanation,
    PatchExplanation,
    PoolExplanation,
    ReluExplanation,
    ShiftExplanation,
    ValueExplanation,
)


def _heat(value: float, scale: float) -> str:
    """A background whose hue says the value's sign and whose strength its size (none for zero)."""
    if not value:
        return ""
    shade = int(60 + 140 * (min(1.0, abs(value) / scale) if scale else 0.0))
    return f"on rgb({shade},40,40)" if value > 0 else f"on rgb(40,60,{shade})"


def _cell(value: float, scale: float, *, highlight: bool = False, digits: int = 3) -> Text:
    """A number on a background whose hue says its sign and whose strength its size."""
    text = f"{value:.{digits}g}" if not float(value).is_integer() or abs(value) >= 1e6 else f"{int(value)}"
    style = _heat(value, scale)
    if highlight:
        # Brackets mark the window where colour is off (a pipe, NO_COLOR); reverse video where it is on.
        return Text(f"[{text}]", style=(style + " bold reverse").strip())
    return Text(text, style=style.strip())


def matrix(
    values: list[list[float]], title: str, *, window: tuple[int, int, int, int] | None = None, digits: int = 3
) -> Table:
    """A heat-map grid of ``values``; ``window`` = (top, left, height, width) is highlighted."""
    scale = max((abs(v) for row in values for v in row), default=0.0)
    grid = Table(title=title, show_header=False, box=box.SQUARE, padding=(0, 1), title_style="bold")
    for _ in values[0]:
        grid.add_column(justify="right")
    for r, row in enumerate(values):
        cells = []
        for c, value in enumerate(row):
            inside = (
                window is not None and window[0] <= r < window[0] + window[2] and window[1] <= c < window[1] + window[3]
            )
            cells.append(_cell(value, scale, highlight=inside, digits=digits))
        grid.add_row(*cells)
    return grid


def compact_matrix(values, title: str | None = None, *, signs: bool = False) -> Table:
    """A grid too wide for boxed cells, borderless: whole numbers as they are, others with as many decimals as
    the width allows (4 up to 5 columns, 2 up to 9, 1 beyond) after a common power of ten where all are below 1,
    named in the caption; an 11-wide grid fits 80 columns.  Cells are heat colours, or with ``signs`` red below
    zero and green above."""
    array = np.asarray(values, np.float64)
    array = np.where(np.isfinite(array), array, 0.0)
    largest = float(np.abs(array).max()) if array.size else 0.0
    whole = np.array_equal(array, np.round(array))
    power = 0 if whole or largest == 0 or largest >= 1 else int(np.floor(np.log10(largest)))
    grid = Table(title=title, show_header=False, box=None, pad_edge=False, padding=(0, 0, 0, 1),
                 title_style="bold", caption=f"each times 1e{power}" if power else None, caption_justify="left")
    for _ in range(array.shape[1]):
        grid.add_column(justify="right")
    decimals = 0 if whole else 4 if array.shape[1] <= 5 else 2 if array.shape[1] <= 9 else 1
    for row in array:
        cells = []
        for value in row:
            shown = round(value / 10.0**power, decimals)
            text = f"{shown:.{decimals}f}" if shown else "0"
            if signs:
                cells.append(Text(text, style="red" if shown < 0 else "green" if shown > 0 else "dim"))
            else:
                cells.append(Text(text, style=_heat(value, largest) if shown else "dim"))
        grid.add_row(*cells)
    return grid


def _side_by_side(*parts: RenderableType) -> Table:
    row = Table.grid(padding=(0, 2))
    for _ in parts:
        row.add_column()
    row.add_row(*parts)
    return row


def conv_view(e: ConvExplanation) -> Group:
    kh, kw = len(e.weights), len(e.weights[0])
    parts: list[RenderableType] = [
        Text(
            f"Cross-correlation of the {len(e.input)}x{len(e.input[0])} input with {e.kernel} "
            f"(stride {e.stride}, zero padding {e.padding}): the kernel slides over the input, and each "
            "output is the sum of the nine products under it."
            if kh * kw == 9
            else f"Cross-correlation of the input with {e.kernel} (stride {e.stride}, zero padding {e.padding})."
        )
    ]
    for w in e.windows:
        parts.append(
            Text(
                f"\nwindow {w.row * len(e.result[0]) + w.col + 1} of {len(e.windows)}: "
                f"output row {w.row}, column {w.col}",
                style="bold",
            )
        )
        parts.append(
            _side_by_side(
                matrix(e.padded, "input", window=(w.top, w.left, kh, kw)),
                matrix(e.weights, "kernel"),
                matrix(w.products, "products"),
            )
        )
        parts.append(Text(w.written))
    parts.append(Text(""))
    parts.append(
        _side_by_side(matrix(e.result, "result"), matrix(e.convolution, "true convolution"),
                      matrix(e.relu, "after ReLU"))
    )
    if e.lesson:
        parts.append(Padding(Text(e.lesson["correction"], style="bold yellow"), (1, 0, 0, 0)))
    return Group(*parts)


def patch_view(e: PatchExplanation) -> Group:
    w = e.window
    return Group(
        Text(f"{e.image}: the {e.kernel} map at row {e.row}, column {e.col} ({e.padding_mode} border)", style="bold"),
        _side_by_side(
            matrix(w.values, "pixels under the kernel"), matrix(e.weights, "kernel"), matrix(w.products, "products")
        ),
        Text(w.written),
        Text(
            f"This sum is pixel (row {e.row}, column {e.col}) of the {e.map_shape[0]}x{e.map_shape[1]} feature map, "
            f"which the whole-image filter computes as {e.map_value:.6g}."
        ),
    )


def relu_view(e: ReluExplanation) -> Group:
    if e.histogram is None:
        table = Table(title="ReLU(x) = max(0, x)", box=box.SIMPLE_HEAD, title_justify="left")
        table.add_column("x", justify="right")
        table.add_column("ReLU(x)", justify="right")
        table.add_column("", no_wrap=True)
        scale = max(abs(v) for v in e.values) or 1
        for x, y in zip(e.values, e.outputs, strict=True):
            table.add_row(_cell(x, scale), _cell(y, scale), Text("#" * round(20 * y / scale), style="red"))
        return Group(table, Text("Negative values become 0; positive values pass unchanged."))
    edges, before, after = e.histogram["edges"], e.histogram["before"], e.histogram["after"]
    top = max(before + after) or 1
    table = Table(title=f"values before and after {e.stage}", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("from", justify="right")
    table.add_column("to", justify="right")
    table.add_column("before", no_wrap=True)
    table.add_column("after", no_wrap=True)

    def bar(n: int, colour: str) -> Text:
        return Text("#" * max(0 if not n else 1, round(20 * n / top)), style=colour) + Text(f" {n}")

    for k in range(len(before)):
        table.add_row(f"{edges[k]:.3g}", f"{edges[k + 1]:.3g}", bar(before[k], "blue"), bar(after[k], "red"))
    return Group(table, Text(f"ReLU set {e.zeroed:.1%} of the values to 0 (all of them negative or zero)."))


def pool_view(e: PoolExplanation) -> Group:
    parts: list[RenderableType] = [
        Text(
            f"{e.size}x{e.size} pooling with stride {e.stride}: each window of the input gives one output, "
            "its maximum (max pooling) or its mean (average pooling for contrast)."
        )
    ]
    for k, w in enumerate(e.windows):
        top, left = w.row * e.stride, w.col * e.stride
        parts.append(Text(f"\nwindow {k + 1} of {len(e.windows)}: max {w.max:g}, mean {w.mean:.4g}", style="bold"))
        parts.append(matrix(e.input, "input", window=(top, left, e.size, e.size)))
    parts.append(Text(""))
    parts.append(_side_by_side(matrix(e.max_result, "max pooling"), matrix(e.mean_result, "average pooling")))
    rows, cols = len(e.input), len(e.input[0])
    parts.append(
        Text(
            f"The {rows}x{cols} input became {len(e.max_result)}x{len(e.max_result[0])}: "
            f"{len(e.max_result) * len(e.max_result[0]) / (rows * cols):.0%} of the values remain."
        )
    )
    return Group(*parts)


def shift_view(e: ShiftExplanation) -> Group:
    table = Table(
        title=f"{e.image}: how alike each stage stays when the input moves right",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    table.add_column("#", justify="right")
    table.add_column("stage", overflow="fold")
    table.add_column("jump", justify="right")
    for s in e.shifts:
        table.add_column(f"{s} px", justify="right")
    for row in e.rows:
        cells = []
        for value in row.similarity:
            colour = "green" if value >= 0.9 else "yellow" if value >= 0.6 else "red"
            cells.append(Text("-" if math.isnan(value) else f"{value:.2f}", style=colour))
        table.add_row(str(row.index), row.stage, str(row.jump), *cells)
    return Group(
        table,
        Text(
            "Correlation between the outputs for the image and for the image moved by that many pixels, "
            "compared place by place away from the borders (1 = unchanged). Pooling makes each output pixel "
            "cover several input pixels (the jump), so a small move changes the pooled maps less."
        ),
    )


def field_view(rows: list[FieldRow]) -> Group:
    table = Table(
        title="receptive field: how many input pixels one output pixel sees", box=box.SIMPLE_HEAD, title_justify="left"
    )
    table.add_column("#", justify="right")
    table.add_column("stage", overflow="fold")
    table.add_column("C x H x W", justify="right", no_wrap=True)
    table.add_column("field", justify="right")
    table.add_column("jump", justify="right")
    table.add_column("", no_wrap=True)
    largest = max(r.receptive_field[0] for r in rows) or 1
    for r in rows:
        bar = "#" * max(1, round(12 * r.receptive_field[0] / largest))
        field = (
            "x".join(map(str, r.receptive_field))
            if r.receptive_field[0] != r.receptive_field[1]
            else str(r.receptive_field[0])
        )
        table.add_row(
            str(r.index), r.stage, "x".join(map(str, r.shape)), field, str(r.jump[0]), Text(bar, style="cyan")
        )
    return Group(
        table,
        Text(
            "Each stage sees a larger patch of the input than the one before: deeper layers respond to larger patterns."
        ),
    )


def learned_kernels_view(title: str, layer: str, weights) -> Group:
    """One conv layer's learned filters, each input channel's kernel a heat-map grid."""
    O, C, kh, kw = weights.shape
    heading = Text(f"{title}, layer {layer}: {O} filters over {C} input channels, {kh}x{kw}")
    shown = max(1, min(O, 64 // C))  # a screenful: the rest are in the picture -o draws
    grids = [
        matrix(weights[o, c].round(2).tolist(), f"filter {o}" + (f" ch {c}" if C > 1 else ""), digits=2)
        for o in range(shown)
        for c in range(C)
    ]
    more = Text(f"(the first {shown} of {O} filters; -o FILE draws them all)" if shown < O else "")
    return Group(heading, Columns(grids, padding=(0, 2)), more)


def layer_view(e: LayerExplanation) -> Group:
    """A real layer's value: the channels that weigh most in full, every channel's sum, the bias, the total."""
    heading = Text(
        f"{e.model}, layer {e.layer}: map {e.channel} at row {e.row}, column {e.col} (kernel {e.kernel[0]}x"
        f"{e.kernel[1]}, stride {e.stride[0]}, dilation {e.dilation[0]}): a sum over {len(e.parts)} input "
        "channels, each the window under the kernel times its weights, plus the bias.", style="bold")
    parts: list[RenderableType] = [heading]
    for part in e.parts:
        if part.values is not None:
            parts.append(Text(f"input channel {part.channel}: its products add to {part.total:.6g}"))
            parts.append(_side_by_side(matrix(part.values, "window"), matrix(part.weights, "kernel"),
                                       matrix(part.products, "products")))
    table = Table(title="every input channel's sum", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("channel", justify="right")
    table.add_column("sum", justify="right")
    scale = max(abs(p.total) for p in e.parts) or 1.0
    for part in sorted(e.parts, key=lambda p: -abs(p.total))[:16]:
        table.add_row(str(part.channel), _cell(part.total, scale, digits=6))
    parts.append(table)
    if len(e.parts) > 16:
        parts.append(Text(f"... and {len(e.parts) - 16} more channels (all in --json)"))
    parts.append(Text(f"sum of the channels {e.total - e.bias:.6g} + bias {e.bias:.6g} = {e.total:.6g}; the layer's "
                      f"{e.map_shape[1]}x{e.map_shape[2]} map {e.channel} holds {e.map_value:.6g} there."))
    return Group(*parts)


def value_view(e: ValueExplanation) -> Group:
    """Any stage's value: its rule, the windows (with kernels and products) or inputs it used, and the total."""
    parts: list[RenderableType] = [
        Text(f"stage {e.stage} ({e.op}), map {e.channel} at row {e.row}, column {e.col}: {e.rule}", style="bold")
    ]
    shown = [part for part in e.parts if part.values is not None]
    for part in shown[:4]:
        height, width = len(part.values), len(part.values[0])
        if width > 7:  # wider than boxed cells can hold in a line: borderless grids, one under another
            parts.append(Text(f"input channel {part.channel}: {part.total:.6g} (a {height}x{width} window)"))
            grids = [compact_matrix(part.values, "window")]
            if part.weights is not None:
                grids += [compact_matrix(part.weights, "kernel"), compact_matrix(part.products, "products")]
            parts.append(Group(*grids))
            continue
        grids = [matrix([[v if v == v else 0.0 for v in row] for row in part.values], "window")]
        if part.weights is not None:
            grids += [matrix(part.weights, "kernel"), matrix(part.products, "products")]
        parts.append(Text(f"input channel {part.channel}: {part.total:.6g}"))
        parts.append(_side_by_side(*grids) if width <= 3 else Group(*grids))
    if len(e.parts) > 4:
        parts.append(Text(f"... {len(e.parts)} input channels in all (every one in --json)"))
    if e.inputs:
        names = e.names or [""] * len(e.inputs)
        used = (f"{name} {value:.6g}".strip() for name, value in zip(names, e.inputs, strict=True))
        parts.append(Text("from " + ", ".join(used)))
    bias = f"plus bias {e.bias:.6g}: " if e.bias else ""
    parts.append(Text(f"{bias}= {e.total:.6g}; the stage holds {e.value:.6g} there."))
    return Group(*parts)
