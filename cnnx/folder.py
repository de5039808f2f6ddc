"""The output folder of a run: one PNG per channel per stage, appearing whole or not at all.

A run writes into a hidden temporary folder beside the destination and
renames it into place only when everything is written, so a failure or
Ctrl-C leaves nothing behind.  A folder that an earlier cnnx run made (it
holds cnnx's manifest) is replaced; any other non-empty folder is left alone
unless the user says ``--force``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from cnnx.errors import CnnxError
from cnnx.images import display_range, to_pixels, upscale, write_png
from cnnx.pipeline import StageResult

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class MapFile:
    """One written feature map: its file, channel, label, and the values black and white stand for."""

    path: Path
    channel: int
    label: str
    black: float
    white: float


def safe_name(text: str) -> str:
    """A file-name fragment from free text: letters, digits, ``.``, ``_``, ``-``; never a path."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")
    return name[:80] or "map"


def stage_folder_name(result: StageResult) -> str:
    """``03_maxpool``: sorts in pipeline order and names the operation."""
    return f"{result.index:02d}_{safe_name(result.name)}"


def write_stage(result: StageResult, root: Path, *, png_level: int = 1) -> list[MapFile]:
    """Draw each channel of ``result`` on its own scale and write it as ``root/NN_op/chCC_label.png``."""
    folder = root / stage_folder_name(result)
    folder.mkdir()
    files = []
    for channel, (fmap, label) in enumerate(zip(result.array, result.labels)):
        # The input is drawn as it is; feature maps are scaled to their own range.
        black, white = (0.0, 1.0) if result.index == 0 else display_range(fmap)
        path = folder / f"ch{channel:02d}_{safe_name(label)}.png"
        pixels = upscale(to_pixels(fmap, black, white))
        write_png(path, pixels, level=png_level, text=png_text(label, black, white, fmap.shape))
        files.append(MapFile(path, channel, label, black, white))
    return files


def png_text(label: str, black: float, white: float, shape: tuple[int, ...]) -> dict[str, str]:
    """tEXt chunks that let a reader map any pixel back to its value."""
    return {
        "Software": "cnnx",
        "cnnx:map": label,
        "cnnx:black": repr(black),
        "cnnx:white": repr(white),
        "cnnx:size": "x".join(map(str, shape)),
    }


def is_cnnx_png(path: Path) -> bool:
    """True if ``path`` is a PNG that cnnx wrote (it carries cnnx's tEXt chunk)."""
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == "cnnx"
    except (OSError, ValueError, SyntaxError):
        return False


def check_writable(path: Path, *, force: bool = False) -> None:
    """Refuse to overwrite a file cnnx did not write (unless ``force``), or to write into a missing folder."""
    if path.is_dir():
        raise CnnxError(f"{path}: is a folder; give a file name ending in .png")
    if path.exists() and not force and not is_cnnx_png(path):
        raise CnnxError(f"{path}: exists and was not written by cnnx; use --force to overwrite it")
    if not path.parent.is_dir():
        raise CnnxError(f"{path.parent}: no such folder")


def is_cnnx_folder(folder: Path) -> bool:
    """True if ``folder`` holds the manifest of an earlier cnnx run."""
    try:
        return json.loads((folder / MANIFEST).read_text()).get("tool") == "cnnx"
    except (OSError, ValueError, AttributeError):
        return False


@contextmanager
def staged_folder(destination: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``destination`` when the block succeeds.

    On any exception (Ctrl-C included) the temporary folder is removed and
    ``destination`` is untouched.
    """
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise CnnxError(f"{destination}: exists and is not a folder")
    if destination.is_dir() and any(destination.iterdir()) and not is_cnnx_folder(destination) and not force:
        raise CnnxError(f"{destination}: folder exists and was not written by cnnx; use --force to replace it")
    created = _make_parents(destination.parent)
    try:
        temporary = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.tmp-"))
    except OSError as error:
        raise CnnxError(f"{destination.parent}: cannot write here ({error.strerror or error})") from None
    try:
        yield temporary
        _replace(temporary, destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        for folder in created:
            _remove_if_empty(folder)
        raise


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    try:
        for path in reversed(missing):
            path.mkdir()
    except OSError as error:
        raise CnnxError(f"{missing[0]}: cannot create the folder ({error.strerror or error})") from None
    return missing


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _replace(temporary: Path, destination: Path) -> None:
    """Move the finished run into place; an earlier run there goes only once the new one is in."""
    os.chmod(temporary, 0o777 & ~_umask())
    if not destination.exists():
        os.rename(temporary, destination)
        return
    old = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.old-"))
    os.rename(destination, old / destination.name)
    os.rename(temporary, destination)
    shutil.rmtree(old)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write ``manifest.json``, sorted and indented so that runs can be diffed."""
    text = json.dumps(manifest, indent=2, sort_keys=True, default=_json_default) + "\n"
    (folder / MANIFEST).write_text(text)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return value.as_posix()
    raise TypeError(f"cannot write {type(value).__name__} to the manifest")
