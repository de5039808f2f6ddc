"""What a run tells the user: the summary table, the manifest, the filter bank and kernel cards."""

from __future__ import annotations

from dataclasses import asdict
from html import escape
from pathlib import Path

import numpy as np
from rich import box
from rich.table import Table
from rich.text import Text

from cnnx import __version__
from cnnx.draw import format_number
from cnnx.folder import StageFiles, Style, stage_folder_name
from cnnx.images import Source
from cnnx.kernels import BANK, Filter, Kernel
from cnnx.pipeline import Pipeline, StageResult


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _field(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def summary_table(results: list[StageResult], out_dir: Path, pipeline: Pipeline) -> Table:
    """One row per stage: its folder of PNGs, operation, shape, value statistics, zeros, receptive field, time."""
    table = Table(
        title=f"cnnx pipeline -> {out_dir}/",
        title_justify="left",
        caption=f"convolution = {pipeline.convention_text}; RF = receptive field in input pixels",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        padding=0,
        pad_edge=False,
        show_edge=False,
    )
    table.add_column("files", no_wrap=True)
    table.add_column("stage", ratio=1, min_width=23, overflow="fold")
    for name in ("shape", "min", "mean", "max", "zeros", "RF", "ms"):
        table.add_column(name, justify="right", no_wrap=True)
    for result in results:
        stats = result.stats
        table.add_row(
            f"{stage_folder_name(result)}/",
            result.description,
            _shape(result.shape),
            format_number(stats.min),
            format_number(stats.mean),
            format_number(stats.max),
            f"{stats.zeros:.0%}",
            _field(result.receptive_field),
            f"{result.seconds * 1000:.1f}",
        )
    return table


def manifest(source: Source, pipeline: Pipeline, style: Style, stages: list[StageFiles], root: Path) -> dict:
    """Everything needed to map a pixel of any written PNG back to its value, without timings (runs stay byte-identical).

    A map's pixel of colour-table index ``i`` (0..255) stands for
    ``low + i / 255 * (high - low)``; with the gray map, ``i`` is the grey level.
    """
    C, H, W = stages[0].result.shape  # the input stage

    def relative(path: Path) -> str:
        return path.relative_to(root).as_posix()

    return {
        "tool": "cnnx",
        "version": __version__,
        "convention": pipeline.convention_text,
        "pipeline": {
            "spec": pipeline.to_spec(),
            "color": "rgb" if pipeline.color else "gray",
            "convention": pipeline.convention,
            "stages": [stage.to_table() for stage in pipeline.stages],
        },
        "drawing": {
            "normalize": style.normalize,
            "scope": style.scope,
            "cmap": style.cmap,
            "percentile": style.percentile,
            "range": list(style.fixed) if style.fixed else None,
            "min_side": style.min_side,
            "pixel_to_value": "low + index / 255 * (high - low), index = grey level or colour-table position",
        },
        "input": {
            "path": str(source.path),
            "format": source.format,
            "mode": source.mode,
            "frames": source.frames,
            "frame": source.frame,
            "height": H,
            "width": W,
            "channels": C,
            "sha256": source.sha256,
        },
        "overview": "overview.png",
        "stages": [
            {
                "index": s.result.index,
                "operation": s.result.name,
                "description": s.result.description,
                "shape": list(s.result.shape),
                "receptive_field": list(s.result.receptive_field),
                "jump": list(s.result.jump),
                "stats": asdict(s.result.stats),
                "cmap": s.cmap,
                "montages": [relative(p) for p in s.montages],
                "raw": relative(s.raw) if s.raw else None,
                "maps": [
                    {"file": relative(m.path), "channel": m.channel, "label": m.label, "low": m.low, "high": m.high}
                    for m in s.maps
                ],
            }
            for s in stages
        ],
    }


def _answer_html(answer: list[tuple[str, float]] | None) -> str:
    if not answer:
        return ""
    rows = "".join(
        f'<tr><th>{escape(name)}</th><td><div class="bar" style="width:{p * 300:.0f}px"></div></td><td>{p:.1%}</td></tr>'
        for name, p in answer
    )
    return f'<div class="arrow">&darr;</div><section class="stage"><h2>answer: {escape(answer[0][0])}</h2><table>{rows}</table></section>'


def gallery(
    source: Source, pipeline: Pipeline, stages: list[StageFiles], root: Path, answer: list[tuple[str, float]] | None = None
) -> str:
    """index.html: the input, then each stage in order with its montage and numbers; no script, no network."""
    cards = []
    for s in stages:
        r = s.result
        stats = r.stats
        title = "input" if r.index == 0 else f"{r.index}. {r.name}"
        facts = [
            ("shape (C x H x W)", " x ".join(map(str, r.shape))),
            ("min / mean / max", f"{stats.min:.4g} / {stats.mean:.4g} / {stats.max:.4g}"),
            ("zeros", f"{stats.zeros:.1%}"),
            ("receptive field", f"{_field(r.receptive_field)} px (jump {_field(r.jump)})"),
        ]
        rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
        images = "".join(
            f'<img src="{escape(p.relative_to(root).as_posix())}" alt="{escape(title)} montage">' for p in s.montages
        )
        links = " ".join(
            f'<a href="{escape(m.path.relative_to(root).as_posix())}">{escape(m.label)}</a>' for m in s.maps
        )
        spec = "" if r.index == 0 else f'<p class="spec">{escape(r.description)}</p>'
        count = f"{len(s.maps)} map{'' if len(s.maps) == 1 else 's'}"
        cards.append(
            f'<section class="stage"><h2>{escape(title)}</h2>{spec}<table>{rows}</table>{images}'
            f"<details><summary>{count} at full size</summary><p>{links}</p></details></section>"
        )
    flow = '<div class="arrow">&darr;</div>'.join(cards) + _answer_html(answer)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cnnx: {escape(source.path.name)}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }}
h1 {{ font-size: 1.4em; }}
.stage {{ border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; }}
.stage h2 {{ font-size: 1.1em; margin: 0.2em 0; }}
.spec {{ font-family: ui-monospace, monospace; color: #555; word-break: break-word; }}
.stage img {{ max-width: 100%; display: block; margin: 0.5em 0; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th {{ text-align: left; padding-right: 1em; color: #555; font-weight: normal; }}
.arrow {{ text-align: center; font-size: 1.6em; color: #888; }}
.bar {{ height: 0.9em; background: #b2182b; }}
</style>
</head>
<body>
<h1>cnnx pipeline on {escape(source.path.name)}</h1>
<p class="spec">{escape(pipeline.to_spec())}</p>
<p>Convolution is {escape(pipeline.convention_text)}. Each stage's colour bar gives the values its colours
stand for; <a href="manifest.json">manifest.json</a> has every number, and <a href="overview.png">overview.png</a>
shows all stages side by side.</p>
{flow}
</body>
</html>
"""


def presets_table(presets: dict[str, tuple[str, str]]) -> Table:
    """Each preset's name, what it shows, and its spec."""
    table = Table(title="cnnx presets", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_lines=True)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("what it shows and its spec")
    for name, (description, spec) in presets.items():
        table.add_row(name, Text(description + "\n") + Text(spec, style="dim"))
    return table


def filters_table() -> Table:
    """The bank: name, size, family and a one-line description."""
    table = Table(
        title="cnnx filter bank",
        title_justify="left",
        caption="'cnnx filters NAME' shows one in full",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("name", style="bold")
    table.add_column("size", justify="right")
    table.add_column("family")
    table.add_column("description")
    for entry in BANK.values():
        size = "x".join(map(str, entry.kernel().shape))
        if entry.defaults:
            params = ", ".join(f"{k}={v:g}" for k, v in entry.defaults.items())
            size = f"{size} ({params})"
        table.add_row(entry.name, size, entry.family, entry.description)
    return table


def kernel_facts(weights: np.ndarray) -> dict[str, object]:
    """Size, sum, kind and the output range the kernel gives for inputs in [0, 1]."""
    total = float(weights.sum(dtype=np.float64))
    scale = float(np.abs(weights).sum(dtype=np.float64))
    if abs(total) <= 1e-6 * scale:
        kind = "zero-sum: a flat image gives 0, only changes respond"
    elif abs(total - 1) <= 1e-6 * max(1.0, scale):
        kind = "normalised: sums to 1, a flat image keeps its value"
    else:
        kind = f"neither zero-sum nor normalised: a flat image is scaled by {total:.4g}"
    return {
        "size": "x".join(map(str, weights.shape)),
        "sum": 0.0 if abs(total) <= 1e-6 * scale else total,
        "kind": kind,
        # Each weight meets a pixel in [0, 1]: negatives at 1 give the least, positives at 1 the most.
        "range": (float(weights[weights < 0].sum(dtype=np.float64)), float(weights[weights > 0].sum(dtype=np.float64))),
    }


def kernel_matrix(weights: np.ndarray) -> Table:
    """The kernel as a grid, negative weights red, positive green, zeros dim."""
    table = Table(show_header=False, box=None, pad_edge=False)
    for _ in range(weights.shape[1]):
        table.add_column(justify="right")
    decimals = 0 if np.array_equal(weights, np.round(weights)) else 4
    for row in weights:
        cells = []
        for value in row:
            style = "red" if value < 0 else "green" if value > 0 else "dim"
            cells.append(Text(f"{value:.{decimals}f}", style=style))
        table.add_row(*cells)
    return table


def kernel_card(kernel: Kernel, entry: Filter | None) -> Table:
    """A kernel's matrix and facts, with the bank's description and source where it has one."""
    facts = kernel_facts(kernel.weights)
    card = Table(title=f"kernel {kernel.label}", title_justify="left", show_header=False)
    card.add_column(style="bold")
    card.add_column()
    if entry is not None:
        card.add_row("family", entry.family)
        card.add_row("what", entry.description)
        card.add_row("source", entry.source)
    card.add_row("size", facts["size"])
    card.add_row("sum", f"{facts['sum']:.6g}")
    card.add_row("kind", facts["kind"])
    low, high = facts["range"]
    card.add_row("output range", f"[{low:.4g}, {high:.4g}] for inputs in [0, 1]")
    card.add_row("matrix", kernel_matrix(kernel.weights))
    return card


def answer_table(answer: list[tuple[str, float]], model: str) -> Table:
    """A model's answer: each class with its probability, as a bar chart."""
    table = Table(title=f"model {model}: {answer[0][0]}", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("class", style="bold")
    table.add_column("probability", justify="right")
    table.add_column("", no_wrap=True)
    for name, p in answer:
        table.add_row(name, f"{p:.1%}", Text("#" * round(40 * p), style="red"))
    return table


def plan_table(job, shape: tuple[int, int, int], shapes: list[tuple[int, int, int]]) -> Table:
    """What --dry-run shows: each stage and the shape it will give, with the receptive field."""
    from cnnx.pipeline import receptive_fields

    table = Table(title=f"cnnx pipeline --dry-run: {job.image}", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("#", justify="right")
    table.add_column("stage", overflow="fold")
    table.add_column("C x H x W", justify="right", no_wrap=True)
    table.add_column("RF", justify="right")
    table.add_row("0", "input", _shape(shape), "1")
    fields = receptive_fields(job.pipeline.stages, shape)
    for index, (stage, out, (rf, _)) in enumerate(zip(job.pipeline.stages, shapes, fields), 1):
        table.add_row(str(index), stage.describe(), _shape(out), _field(rf))
    return table


def batch_table(outcomes: list, root: Path, command: str = "pipeline") -> Table:
    """One row per image of a batch: where its maps went, how many, how long, or what went wrong."""
    table = Table(title=f"cnnx {command} -> {root}/", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("image", overflow="fold")
    table.add_column("written to", overflow="fold")
    table.add_column("maps", justify="right")
    table.add_column("s", justify="right")
    table.add_column("result", overflow="fold")
    for outcome in outcomes:
        job = outcome.job
        if outcome.error:
            table.add_row(str(job.image), "-", "-", "-", Text("failed", style="red"))
            continue
        where = getattr(job, "destination", None) or job.target
        seconds = outcome.timings["total"] if hasattr(outcome, "timings") else outcome.seconds
        table.add_row(str(job.image), str(where), str(outcome.maps), f"{seconds:.2f}", "ok")
    done = sum(1 for o in outcomes if not o.error)
    table.caption = f"{done} of {len(outcomes)} images done"
    table.caption_justify = "left"
    return table


def kernels_picture(layers: list, names: list[str], cell: int = 8):
    """Every kernel of each conv layer as a small heat map (blue below zero, red above), a row per output filter."""
    from PIL import Image, ImageDraw

    from cnnx import draw

    table = draw.colormap("diverging")
    font = draw._font(12)
    blocks = []
    for weights, name in zip(layers, names):
        low, high = draw.value_range(weights, "symmetric")
        O, C, kh, kw = weights.shape
        block = Image.new("RGB", (C * (kw * cell + 4) + 8, O * (kh * cell + 4) + 24), draw.BACKGROUND)
        ImageDraw.Draw(block).text((4, 4), f"{name}: {O} filters x {C} channels, {low:.2g}..{high:.2g}", fill=draw.INK, font=font)
        for o in range(O):
            for c in range(C):
                tile = draw.picture(draw.upscale(draw.to_index(weights[o, c], low, high), min_side=kh * cell), table)
                block.paste(tile.convert("RGB"), (4 + c * (kw * cell + 4), 22 + o * (kh * cell + 4)))
        blocks.append(block)
    sheet = Image.new("RGB", (sum(b.width for b in blocks) + 8 * len(blocks), max(b.height for b in blocks)), draw.BACKGROUND)
    x = 0
    for block in blocks:
        sheet.paste(block, (x, 0))
        x += block.width + 8
    return sheet
