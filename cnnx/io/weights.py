"""Reading weight files and finding the models cnnx ships: the one place arrays come from disk.

A weight file is a ``.npy`` array or a ``.npz`` archive of named arrays; no
pickle is ever loaded.  An archive member is read only when asked for, and
its header (shape and type) is checked before its data is.  A layer's
weights and bias sit side by side: ``NAME.weight`` with ``NAME.bias``, or
``weight``/``weights`` with ``bias``.  A shipped model is an archive in
``cnnx/models/`` holding its layers and, as JSON under ``meta``, what it is.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.base.files import open_regular

__all__ = [
    "MODELS",
    "bias_key",
    "layer_arrays",
    "model_names",
    "model_path",
    "read_array",
    "read_archive",
    "read_model",
    "save_model",
]

MODELS = Path(__file__).resolve().parent.parent / "models"
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


MAX_VALUES = 1 << 28  # numbers one array may hold (1 GiB of float32): a layer of any CNN, and no bomb


def _unreadable(path: Path, error: BaseException) -> CnnxError:
    return CnnxError(f"{path}: not a readable numpy file ({error})")


def _checked_header(stream, path: Path, name: str = "", max_values: int = MAX_VALUES) -> None:
    """Read an .npy header and refuse, before any data is read, an array of objects or of more than ``max_values``."""
    start = stream.tell()
    try:
        version = np.lib.format.read_magic(stream)
        shape, _, dtype = _header(stream, version)
    except (ValueError, EOFError, OSError) as error:
        raise _unreadable(path, error) from None
    stream.seek(start)
    where = f"{path}" + (f": array {name!r}" if name else "")
    if dtype.hasobject:
        raise CnnxError(f"{where}: holds Python objects; cnnx reads numbers only")
    if math.prod(shape) > max_values:
        raise CnnxError(f"{where}: shape {shape} holds more than {max_values:,} numbers")


def _header(stream, version):
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f"unknown .npy format version {version}")


def read_array(path: Path, *, max_values: int = MAX_VALUES) -> np.ndarray:
    """The array of a ``.npy`` file, its header checked against ``max_values`` before its data is read."""
    with open_regular(path, "a numpy file") as stream:
        _checked_header(stream, path, max_values=max_values)
        try:
            return np.asarray(np.load(stream, allow_pickle=False))
        except (OSError, ValueError, EOFError) as error:
            raise _unreadable(path, error) from None


@contextmanager
def read_archive(path: Path) -> Iterator[np.lib.npyio.NpzFile]:
    """A ``.npz`` archive, open for reading member by member while the block runs."""
    with open_regular(path, "a numpy archive") as stream:
        try:
            archive = np.load(stream, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise _unreadable(path, error) from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise CnnxError(f"{path}: a single array, not a .npz archive of named arrays")
        with archive:
            yield archive


def _member(archive: np.lib.npyio.NpzFile, name: str, path: Path) -> np.ndarray:
    """One array of an archive, its header checked before its data is decompressed."""
    try:
        with archive.zip.open(f"{name}.npy") as member:
            _checked_header(member, path, name)
        return np.asarray(archive[name])
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise CnnxError(f"{path}: cannot read array {name!r} ({error})") from None


def bias_key(weights_key: str) -> str:
    """Where a layer's bias sits beside its weights: ``fc.weight`` -> ``fc.bias``, ``weights`` -> ``bias``."""
    prefix = weights_key[: -len("weight")] if weights_key.endswith("weight") else ""
    return f"{prefix}bias"


def layer_arrays(path: Path, key: str = "") -> tuple[str, np.ndarray, np.ndarray | None]:
    """The weights of a ``.npz`` archive's layer (``key``, or the only or ``weight``/``weights`` array) and its bias.

    Returns the key the weights were found under, the weights, and the bias (None when there is none).
    """
    with read_archive(path) as archive:
        names = archive.files
        if not key:
            key = next((k for k in ("weight", "weights") if k in names), names[0] if len(names) == 1 else "")
        if key not in names:
            raise CnnxError(f"{path}: say which array holds the weights, as {path}:NAME; it holds {', '.join(names)}")
        weights = _member(archive, key, path)
        bias = _member(archive, bias_key(key), path) if bias_key(key) in names else None
    return key, weights, bias


def model_names() -> list[str]:
    """The models cnnx ships."""
    return sorted(p.stem for p in MODELS.glob("*.npz"))


def model_path(name: str) -> Path:
    """The weights file of a shipped model; an unknown name lists the ones there are.  Never a path of the user's."""
    path = MODELS / f"{name}.npz"
    if not _MODEL_NAME.fullmatch(name) or not path.is_file():
        raise CnnxError(f"unknown model {name!r}; cnnx ships {', '.join(model_names()) or 'none'}")
    return path


def read_model(name: str, *, layers: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """A shipped model's layer arrays (by ``NAME.weight``/``NAME.bias``) and its metadata."""
    path = model_path(name)
    with read_archive(path) as archive:
        try:
            if "meta" not in archive.files:
                raise ValueError("no metadata")
            meta = json.loads(str(_member(archive, "meta", path)))
        except (ValueError, RecursionError):
            raise CnnxError(f"{path}: a shipped model must hold its metadata as JSON under 'meta'") from None
        if not isinstance(meta, dict):
            raise CnnxError(f"{path}: the metadata must be a JSON object")
        arrays = {key: _member(archive, key, path) for key in archive.files if key != "meta"} if layers else {}
    return arrays, meta


def save_model(path: Path, params: dict[str, np.ndarray], meta: dict) -> None:
    """The layer arrays and, as JSON in the same archive, what the model is."""
    np.savez_compressed(path, **params, meta=np.array(json.dumps(meta, sort_keys=True)))
