"""What a run tells the user: the summary table, the manifest, the filter bank and kernel cards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich import box
from rich.table import Table
from rich.text import Text

from cnnx import __version__
from cnnx.folder import MapFile, stage_folder_name
from cnnx.images import Source
from cnnx.kernels import BANK, Filter, Kernel
from cnnx.pipeline import Pipeline, StageResult

def _number(value: float) -> str:
    """Three significant digits in at most 6 characters; the manifest keeps every digit."""
    if value and abs(value) < 1e-2:
        return f"{value:.0e}"
    return f"{value:.3g}"


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
            _number(stats.min),
            _number(stats.mean),
            _number(stats.max),
            f"{stats.zeros:.0%}",
            _field(result.receptive_field),
            f"{result.seconds * 1000:.1f}",
        )
    return table


def manifest(
    source: Source, pipeline: Pipeline, results: list[StageResult], files: dict[int, list[MapFile]], root: Path
) -> dict:
    """Everything needed to map a pixel of any written PNG back to its value, without timings (runs stay byte-identical)."""
    C, H, W = source.array.shape
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
        "input": {
            "path": str(source.path),
            "format": source.format,
            "mode": source.mode,
            "frames": source.frames,
            "height": H,
            "width": W,
            "channels": C,
            "sha256": source.sha256,
        },
        "stages": [
            {
                "index": r.index,
                "operation": r.name,
                "description": r.description,
                "shape": list(r.shape),
                "receptive_field": list(r.receptive_field),
                "jump": list(r.jump),
                "stats": {"min": r.stats.min, "mean": r.stats.mean, "max": r.stats.max, "zeros": r.stats.zeros},
                "maps": [
                    {
                        "file": f.path.relative_to(root).as_posix(),
                        "channel": f.channel,
                        "label": f.label,
                        "black": f.black,
                        "white": f.white,
                    }
                    for f in files.get(r.index, [])
                ],
            }
            for r in results
        ],
    }


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
