"""What the terminal shows: the summary and plan tables, batches, the filter bank, kernel cards and answers.

Each function returns a rich ``Table`` built from data; the command prints it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich import box
from rich.table import Table
from rich.text import Text

from cnnx.base.errors import printable
from cnnx.render.draw import format_number, pair_text, shape_text
from cnnx.render.maps import stage_folder_name
from cnnx.sources.kernels import BANK, Kernel
from cnnx.sources.source import PlannedStage, StageResult


def summary_table(results: list[StageResult], out_dir: Path, caption: str) -> Table:
    """One row per stage: its folder of PNGs, operation, shape, value statistics, zeros, receptive field, time."""
    table = Table(
        title=f"cnnx pipeline -> {printable(out_dir)}/",
        title_justify="left",
        caption=f"{caption}; RF = receptive field in input pixels",
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
    notes = []
    for result in results:
        stats = result.stats
        if stats.nonfinite:
            notes.append(f"{stage_folder_name(result)}: {stats.nonfinite:.1%} of the values are NaN or infinite "
                         "(left out of min, mean and max)")
        table.add_row(
            f"{stage_folder_name(result)}/",
            "input, prepared for the model" if result.preparation else result.description,
            shape_text(result.shape),
            format_number(stats.min),
            format_number(stats.mean),
            format_number(stats.max),
            f"{stats.zeros:.0%}",
            pair_text(result.receptive_field),
            f"{result.seconds * 1000:.1f}",
        )
    if notes:
        table.caption = "\n".join([table.caption, *notes])
    return table


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
    """The kernel as a grid, negative weights red, positive green, zeros dim; an 11x11 one fits 80 columns."""
    from cnnx.explain.views import compact_matrix

    return compact_matrix(weights, signs=True)


def kernel_card(kernel: Kernel) -> Table:
    """A kernel's matrix and facts, with the bank's description and source where it has one."""
    entry = BANK.get(kernel.label.partition(":")[0])
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


def answer_table(answer: list[tuple[str, float]], model: str, caution: str | None = None):
    """A model's answer: its top class in a line of its own (never wrapped into the table's width), then each class
    with its probability as a bar chart, and what the model's answers are worth where it says."""
    from rich.console import Group

    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("class", style="bold")
    table.add_column("probability", justify="right")
    table.add_column("", no_wrap=True)
    for name, p in answer:
        table.add_row(name, f"{p:.1%}", Text("#" * round(40 * p), style="red"))
    lines = [Text(f"model {model}: {answer[0][0]}", style="bold"), table]
    return Group(*lines, *([Text(caution, style="italic")] if caution else []))


def plan_table(image: Path, shape: tuple[int, int, int], planned: list[PlannedStage]) -> Table:
    """What --dry-run shows: each stage and the shape it will give, with the receptive field."""
    table = Table(title=f"cnnx pipeline --dry-run: {printable(image)}", title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False)
    table.add_column("#", justify="right")
    table.add_column("stage", overflow="fold")
    table.add_column("C x H x W", justify="right", no_wrap=True)
    table.add_column("RF", justify="right")
    table.add_row("0", "input", shape_text(shape), "1")
    for stage in planned:
        field = "-" if stage.receptive_field is None else pair_text(stage.receptive_field)
        table.add_row(str(stage.index), stage.description, shape_text(stage.shape), field)
    return table


def batch_table(outcomes: list, root: Path, command: str = "pipeline") -> Table:
    """One row per image of a batch: where its maps went, how many, how long, or what went wrong."""
    table = Table(title=f"cnnx {command} -> {printable(root)}/", title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False)
    table.add_column("image", overflow="fold")
    table.add_column("written to", overflow="fold")
    table.add_column("maps", justify="right")
    table.add_column("s", justify="right")
    table.add_column("result", overflow="fold")
    for outcome in outcomes:
        job = outcome.job
        if outcome.error:
            table.add_row(printable(job.image), "-", "-", "-", Text("failed", style="red"))
            continue
        seconds = outcome.timings["total"]
        table.add_row(printable(job.image), printable(job.destination), str(outcome.maps), f"{seconds:.2f}", "ok")
    done = sum(1 for o in outcomes if not o.error)
    table.caption = f"{done} of {len(outcomes)} images done"
    table.caption_justify = "left"
    return table
