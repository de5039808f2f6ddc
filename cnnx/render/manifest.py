"""manifest.json: every number a run's pictures stand for, so any pixel maps back to its value."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cnnx import __version__
from cnnx.io.images import LoadedImage
from cnnx.io.output import MANIFEST
from cnnx.render.draw import Style
from cnnx.render.maps import StageFiles
from cnnx.sources.source import StageSource


def manifest(
    image: LoadedImage, source: StageSource, style: Style, stages: list[StageFiles], root: Path,
    answer: list[tuple[str, float]] | None = None,
) -> dict:
    """Everything needed to map a pixel of any written PNG back to its value; no timings, so runs stay byte-identical.

    A map's pixel of colour-table index ``i`` (0..255) stands for
    ``low + i / 255 * (high - low)`` where its stage's stretch is linear (``draw.to_value`` inverts sqrt too);
    with the gray map, ``i`` is the grey level.
    """
    C, H, W = stages[0].result.shape  # the input stage

    def relative(path: Path) -> str:
        return path.relative_to(root).as_posix()

    about = source.about()
    if answer:
        about.setdefault("model", {})["answer"] = dict(answer)
    return {
        "tool": "cnnx",
        "version": __version__,
        **about,
        "drawing": {
            "normalize": style.normalize,
            "scope": style.scope,
            "cmap": style.cmap,
            "percentile": style.percentile,
            "range": list(style.fixed) if style.fixed else None,
            "min_side": style.min_side,
            "stretch": style.stretch,
            "pixel_to_value": "index = grey level or colour-table position, p = index / 255; linear: "
            "low + p * (high - low); sqrt: with z = (0 - low) / (high - low) clipped to [0, 1] and s = 1 - z "
            "above z, z below, value = low + (z + sign(p - z) * (p - z)**2 / s) * (high - low)",
            "clipped": "shares of a map's values below low and above high, drawn in the end colours",
        },
        "input": {
            "path": str(image.path),
            "format": image.format,
            "mode": image.mode,
            "frames": image.frames,
            "frame": image.frame,
            "height": H,
            "width": W,
            "channels": C,
            "sha256": image.sha256,
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
                "stretch": s.stretch,
                "montages": [relative(p) for p in s.montages],
                "colorbar": relative(s.colorbar) if s.colorbar else None,
                "raw": relative(s.raw) if s.raw else None,
                "maps": [
                    {
                        "file": relative(m.path),
                        "tile": relative(m.tile) if m.tile else None,
                        "channel": m.channel,
                        "label": m.label,
                        "low": m.low,
                        "high": m.high,
                        "clipped": {"below": m.clipped[0], "above": m.clipped[1]},
                    }
                    for m in s.maps
                ],
            }
            for s in stages
        ],
    }


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write ``manifest.json``, sorted and indented so that runs can be diffed; strict JSON, NaN and infinity null."""
    text = json.dumps(_finite(manifest), indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n"
    (folder / MANIFEST).write_text(text)


def _finite(value):
    """The record with every NaN or infinite number as None, which JSON can hold."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return value.as_posix()
    raise TypeError(f"cannot write {type(value).__name__} to the manifest")
