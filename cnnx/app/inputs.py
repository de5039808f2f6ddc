"""The images a command line names, and where each one's output goes: folders searched, patterns expanded, cnnx's
own output never read back in, names that never share a folder."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cnnx.base.errors import CnnxError
from cnnx.io.output import run_image, safe_name

__all__ = ["IMAGE_SUFFIXES", "Found", "batch_destinations", "default_destination", "find_images", "output_name"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".tga"}


@dataclass
class Found:
    """The images a command line names, in a stable order, and what inside its folders was passed over, and why."""

    images: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _kind_of(path: Path) -> str | None:
    """Why a folder entry named like an image is no image file: None for a regular file."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return "a link that leads nowhere" if path.is_symlink() else (error.strerror or str(error)).lower()
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else "a pipe or device, not a file"


def _walk(folder: Path, found: Found, skip: Path | None) -> None:
    """Image files below ``folder``; folders are entered once each, so a link loop ends.  The output folder
    ``skip`` and the folders of cnnx's runs are passed over: cnnx never reads its own maps back in."""
    seen: set[tuple[int, int]] = set()
    output = None
    if skip is not None and skip.is_dir():
        here = os.stat(skip)
        output = (here.st_dev, here.st_ino)
        seen.add(output)
    for top, folders, files in os.walk(folder, followlinks=True):
        here = os.stat(top)
        if (here.st_dev, here.st_ino) in seen:
            if (here.st_dev, here.st_ino) != output:
                found.skipped.append(f"{top}: a link back to a folder already searched")
            folders.clear()
            continue
        seen.add((here.st_dev, here.st_ino))
        if run_image(Path(top)) is not None:
            found.skipped.append(f"{top}: a folder of cnnx's maps")
            folders.clear()
            continue
        folders.sort()
        for name in sorted(files):
            path = Path(top, name)
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            why = _kind_of(path)
            if why:
                found.skipped.append(f"{path}: {why}")
            else:
                found.images.append(path)


def _in_output(path: Path, root: Path | None) -> bool:
    """True if ``path`` lies in the output folder ``root`` or in a cnnx run's folder (its maps are up to three
    folders down: ``run/01_conv/tiles/ch00.png``)."""
    real = Path(os.path.realpath(path))
    if root is not None and Path(os.path.realpath(root)) in real.parents:
        return True
    return any(run_image(folder) is not None for folder in list(real.parents)[:3])


def find_images(inputs: Iterable[str], *, skip: Path | None = None) -> Found:
    """The image files named by paths, folders (searched recursively) and glob patterns, in a stable order.

    A name given on its own is kept whatever it is, so that its job reports
    the problem; inside folders and patterns, what is not a regular file is
    passed over and listed in ``skipped``.
    """
    found = Found()
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            before = len(found.images)
            _walk(path, found, skip)
            found.images[before:] = sorted(found.images[before:])
            if len(found.images) == before:
                raise CnnxError(f"{path}: no image files in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif any(char in text for char in "*?[") and not path.exists():
            matches = sorted(Path().glob(text)) if not path.is_absolute() else sorted(Path(path.anchor).glob(text[1:]))
            if not matches:
                raise CnnxError(f"{text}: no file matches this pattern")
            for match in (m for m in matches if not _in_output(m, skip)):
                why = _kind_of(match)
                if why is None:
                    found.images.append(match)
                elif why != "a folder":
                    found.skipped.append(f"{match}: {why}")
        else:
            found.images.append(path)
    found.images = list(dict.fromkeys(found.images))
    return found


def output_name(image: Path) -> str:
    """The name of an image's output: its stem as a safe file name (never ``.`` or ``..``)."""
    return safe_name(image.stem, fallback="image")


def default_destination(image: Path, root: Path) -> tuple[Path, str | None]:
    """``root/NAME`` for an image's run, NAME its safe stem; where that folder holds the run of another image (two
    names alike once made safe), the first ``NAME-2``, ``NAME-3``, ... that is free or holds this image's own run.
    Returns the folder, and a note saying why it is not ``root/NAME`` (None where it is)."""
    stem = output_name(image)
    wanted = os.path.realpath(image)
    count = 1
    while True:
        folder = root / (stem if count == 1 else f"{stem}-{count}")
        other = run_image(folder)
        if other is None or os.path.realpath(other) == wanted:
            break
        count += 1
    if count == 1:
        return folder, None
    return folder, f"{root / stem} holds the maps of another image; those of {image} go to {folder}"


def batch_destinations(images: list[Path], root: Path) -> list[Path]:
    """One subfolder of ``root`` per image, named after it, no two alike (nor alike but for case).

    A name already taken gets the first free of -2, -3, ...: ``a-2.png`` and
    a second ``a.png`` never share a folder.
    """
    taken: set[str] = set()
    destinations = []
    for image in images:
        stem = name = output_name(image)
        count = 1
        while name.casefold() in taken:
            count += 1
            name = f"{stem}-{count}"
        taken.add(name.casefold())
        destinations.append(root / name)
    return destinations
