"""A run that shows itself in a notebook: ``cnnx.run(image)`` is the list of stage records, and Jupyter draws it as
a table of the stages, each with its first maps, and the answer where the source classifies.

    >>> import cnnx
    >>> result = cnnx.run(cnnx.load_image("samples/chelsea.png").array)
    >>> [stage.name for stage in result]
    ['input', 'conv', 'relu', 'maxpool', 'conv', 'relu', 'maxpool']
    >>> "<table" in result._repr_html_()
    True
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from cnnx.render.colours import colormap, thumbnail
from cnnx.render.labels import format_number, shape_text
from cnnx.render.ranges import to_index, value_range
from cnnx.sources.pipeline import stream
from cnnx.sources.spec import pipeline_text
from cnnx.sources.stages import LESSON, Pipeline

MAPS_SHOWN = 4  # maps of each stage drawn in the table
TILE = 96  # pixels, the longer side of each


class Run(list):
    """The stage records of one run, the input first (a list, as before); ``answer`` is the source's, where it
    classifies.  In a notebook it shows itself as a table: each stage's name, shape, values and receptive field,
    and its first maps, drawn as cnnx draws them (blue below zero, white at zero, red above)."""

    def __init__(self, records, answer=None, title: str = ""):
        super().__init__(records)
        self.answer = answer
        self.title = title

    def _repr_html_(self) -> str:
        rows = "".join(_row(record) for record in self)
        answer = ""
        if self.answer:
            answer = "<p><b>answer</b>: " + ", ".join(
                f"{html.escape(name)} {share:.1%}" for name, share in self.answer[:5]) + "</p>"
        title = f"<p>{html.escape(self.title)}</p>" if self.title else ""
        return (f"<div class='cnnx-run'>{title}<table><thead><tr><th>stage</th><th>shape</th><th>min / mean / max"
                f"</th><th>RF</th><th>maps</th></tr></thead><tbody>{rows}</tbody></table>{answer}</div>")


def run(image: np.ndarray, stages=LESSON) -> Run:
    """Run ``stages`` on a (C, H, W) image: a chain (a ``Pipeline``, a tuple of stages), or any source of stages
    (``cnnx.sources.model.load_model("shapes")``, an ONNX graph), which prepares the image first.  The records,
    as a ``Run``."""
    if isinstance(stages, (Pipeline, tuple)):
        pipeline = stages if isinstance(stages, Pipeline) else Pipeline(tuple(stages))
        return Run(stream(image, pipeline), title=pipeline_text(pipeline))
    records = list(stages.stream(stages.prepare(np.asarray(image, np.float32))))
    return Run(records, stages.answer(records[-1].array), stages.title)


def _row(record) -> str:
    stats = record.stats
    values = f"{format_number(stats.min)} / {format_number(stats.mean)} / {format_number(stats.max)}"
    field = "x".join(str(n) for n in record.receptive_field) if record.receptive_field else ""
    maps = "".join(_tile(record.array, k, grey=record.index == 0) for k in range(min(MAPS_SHOWN, record.shape[0])))
    return (f"<tr><td>{record.index}. {html.escape(record.description)}</td><td>{shape_text(record.shape)}</td>"
            f"<td>{values}</td><td>{field}</td><td>{maps}</td></tr>")


def _tile(array, channel: int, *, grey: bool = False) -> str:
    return f"<img src='{tile_data(array, channel, grey=grey)}' alt='map {channel}' style='margin-right:4px'>"


def tile_data(array, channel: int, *, grey: bool = False, size: int = TILE) -> str:
    """One map as a PNG data URL, ranged as a single map is drawn (the input in grey, from its least to its most),
    made in memory."""
    plane = np.asarray(array, np.float32).reshape(-1, *array.shape[-2:])[channel]
    low, high = value_range(plane, "minmax" if grey else "percentile")
    table = None if grey else colormap("positive" if low >= 0 else "diverging")
    picture = thumbnail(to_index(plane, low, high), table, size, within=True)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def frame_view(records, answer=None) -> dict:
    """A camera frame's run for the served page: each stage's title, shape and first maps as PNG data URLs, and
    the answer's first five classes."""
    return {
        "stages": [{"index": r.index, "title": "input" if r.index == 0 else f"{r.index}. {r.name}",
                    "shape": shape_text(r.shape),
                    "tiles": [tile_data(r.array, k, grey=r.index == 0) for k in range(min(MAPS_SHOWN, r.shape[0]))]}
                   for r in records],
        "answer": [[name, float(share)] for name, share in (answer or [])[:5]],
    }
