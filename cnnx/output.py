"""Where a run's files go: a folder or file that appears whole or not at all, never replacing what cnnx did not write.

A run writes into a hidden temporary folder beside the destination and
renames it into place only when everything is written, so a failure or
Ctrl-C leaves nothing behind.  A folder that an earlier cnnx run made (it
holds cnnx's manifest) is replaced; any other non-empty folder is left alone
unless the user says ``--force``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from cnnx.errors import CnnxError
from cnnx.png import umask

MANIFEST = "manifest.json"


def safe_name(text: str) -> str:
    """A file-name fragment from free text: letters, digits, ``.``, ``_``, ``-``; never a path."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")
    return name[:80] or "map"


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
    """Create ``folder`` and its missing parents; return the ones this call created, deepest first.

    Another process of a batch may create the same parent at the same moment: that is no error.
    """
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    created = []
    try:
        for path in reversed(missing):
            try:
                path.mkdir()
                created.append(path)
            except FileExistsError:
                if not path.is_dir():
                    raise
    except OSError as error:
        raise CnnxError(f"{missing[0]}: cannot create the folder ({error.strerror or error})") from None
    return created[::-1]


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, or gone: either way it stays as it is
        folder.rmdir()


def _replace(temporary: Path, destination: Path) -> None:
    """Move the finished run into place; an earlier run there goes only once the new one is in."""
    os.chmod(temporary, 0o777 & ~umask())
    if not destination.exists():
        os.rename(temporary, destination)
        return
    old = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.old-"))
    os.rename(destination, old / destination.name)
    os.rename(temporary, destination)
    shutil.rmtree(old)
