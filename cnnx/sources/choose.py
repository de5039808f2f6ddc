"""Which source of stages a request names: a chain of stages (the lesson's by default), a shipped model, or an ONNX
network; the one place outside the sources' own modules that knows their classes."""

from __future__ import annotations

from pathlib import Path

from cnnx.base.errors import CnnxError
from cnnx.sources.source import StageSource

__all__ = ["make_source"]


def make_source(spec: str | None = None, config: Path | None = None, preset: str | None = None,
                model: str | None = None, color: bool | None = None, convention: str | None = None, *,
                layers: str | None = None, labels: Path | None = None, preprocess=None,
                memory_budget: int | None = None) -> StageSource:
    """The source of stages these settings ask for: an ONNX model (``model`` ending in .onnx, with its ``layers``,
    ``labels`` and input ``preprocess``), a shipped model by name, or a chain from ``spec``, a TOML ``config`` or a
    ``preset`` (the lesson's when none is given).  A model computes what it can at load within ``memory_budget``."""
    onnx = model is not None and model.lower().endswith(".onnx")
    if not onnx and (layers or labels or preprocess):
        raise CnnxError("--layers, --labels, --preprocess and the input's preparation go with an ONNX model: "
                        "--model FILE.onnx")
    if model is None:
        from cnnx.sources.pipeline import Chain
        from cnnx.sources.spec import load_pipeline

        return Chain(load_pipeline(spec=spec, config=config, preset_name=preset, color=color, convention=convention))
    if spec or config or preset or color or convention:
        raise CnnxError("--model brings its own stages: give no --spec, --config, --preset, --color or --convention")
    if onnx:
        from cnnx.sources.onnx_file import load_graph

        return load_graph(Path(model), layers=layers, labels=labels, preprocess=preprocess or "none",
                          memory_budget=memory_budget)
    from cnnx.sources.model import load_model

    return load_model(model)
