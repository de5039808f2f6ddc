"""Where a run's files go: a folder or file that appears whole or not at all, never replacing what cnnx did not write.

A run writes into a hidden temporary folder beside the destination and
renames it into place only when everything is written, so a failure or
Ctrl-C leaves nothing behind.  A folder that an earlier cnnx run made (it
holds cnnx's manifest) is replaced; any other non-empty folder is left alone
unless the user says ``--force``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import unicodedata
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from cnnx.base import signals
from cnnx.base.errors import CnnxError, printable
from cnnx.base.files import refuse_special, umask

MANIFEST = "manifest.json"


# The folders this process moved into place whole, latest last: what an interruption leaves behind. Bounded, so a
# long-lived process (cnnx serve writes a run per edit) does not grow with every run.
finished: deque[Path] = deque(maxlen=16)


def safe_name(text: str, fallback: str = "map") -> str:
    """A file-name fragment from free text: letters and digits of any script (猫 stays 猫), ``.``, ``_``, ``-``;
    every other run of characters (separators, controls, spaces, punctuation) one ``-``.  Never a path, ``.`` or
    ``..``, and at most 80 characters and 200 bytes, so that it fits any file system's names with room to spare."""
    kept = "".join(c if c in "._-" or unicodedata.category(c)[0] in "LMN" else "\0" for c in
                   unicodedata.normalize("NFC", text))
    name = re.sub("\0+", "-", kept).strip(".-")[:80]
    while len(name.encode()) > 200:
        name = name[:-1]
    return name.strip(".-") or fallback


def destination_folder(path: Path) -> Path:
    """The folder a run will replace: absolute, through a symlink to its target (the link stays).

    The working folder and the folders above it are refused: a run replaces
    its folder whole, and those hold everything else.
    """
    absolute = Path(os.path.abspath(path))  # "out/..", "." and ".." resolved by their names
    if absolute.is_symlink():
        absolute = absolute.resolve()
    here = Path.cwd().resolve()
    real = absolute.resolve()
    if real == here or real in here.parents:
        raise CnnxError(
            f"{path}: is the working folder or a folder above it; cnnx replaces its output folder whole, "
            f"so give one of its own (e.g. -o {Path(path) / 'cnnx-out'})"
        )
    return absolute


def is_cnnx_png(path: Path) -> bool:
    """True if ``path`` is a PNG that cnnx wrote (it carries cnnx's tEXt chunk)."""
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == "cnnx"
    except (OSError, ValueError, SyntaxError):
        return False


def check_writable(path: Path, *, force: bool = False) -> None:
    """Refuse to overwrite a file cnnx did not write (unless ``force``), or to write into a missing folder."""
    refuse_special(path)
    if path.is_dir():
        raise CnnxError(f"{path}: is a folder; give a file name ending in .png")
    if path.exists() and not force and not is_cnnx_png(path):
        raise CnnxError(f"{path}: exists and was not written by cnnx; use --force to overwrite it")
    if not path.parent.is_dir():
        raise CnnxError(f"{path.parent}: no such folder")
    if not os.access(path.parent, os.W_OK):
        raise CnnxError(f"{path.parent}: cannot write here (permission denied)")


def _written_by_cnnx(folder: Path) -> set[Path] | None:
    """Every path an earlier cnnx run wrote into ``folder``, from its manifest; None if it holds no cnnx manifest."""
    try:
        record = json.loads((folder / MANIFEST).read_text())
        if record.get("tool") != "cnnx":
            return None
        files = {MANIFEST, "index.html", record.get("overview") or "overview.png"}
        for stage in record.get("stages", []):
            files.update(m[key] for m in stage.get("maps", []) for key in ("file", "tile") if m.get(key))
            files.update([stage["colorbar"]] if stage.get("colorbar") else [])
            files.update(stage.get("montages", []))
            files.update([stage["raw"]] if stage.get("raw") else [])
        files.update(record.get("files", []))
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
    paths = {Path(f) for f in files if isinstance(f, str)}
    for inner in (p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and (p / MANIFEST).is_file()):
        nested = _written_by_cnnx(inner)  # a run of its own inside this one (``cnnx why``'s why/)
        if nested is not None:
            paths |= {Path(inner.name)} | {Path(inner.name) / p for p in nested}
    return paths | {parent for p in paths for parent in p.parents if parent != Path(".")}


def run_image(folder: Path) -> str | None:
    """The image an earlier cnnx run in ``folder`` was made from, as its manifest names it; None if none is there."""
    try:
        record = json.loads((folder / MANIFEST).read_text())
        path = record["input"]["path"] if record.get("tool") == "cnnx" else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
    return path if isinstance(path, str) else None


def foreign_entries(folder: Path) -> list[Path]:
    """What in ``folder`` cnnx did not write: all of it, unless it is an earlier cnnx run's folder."""
    entries = [p.relative_to(folder) for p in sorted(folder.rglob("*"))]
    ours = _written_by_cnnx(folder)
    return entries if ours is None else [p for p in entries if p not in ours]


def checked_destination(destination: Path, *, force: bool = False) -> Path:
    """The folder a run may replace (see ``destination_folder``): not a file, and holding nothing foreign."""
    given, destination = destination, destination_folder(destination)
    if destination.exists() and not destination.is_dir():
        raise CnnxError(f"{given}: exists and is not a folder")
    if destination.is_dir() and not force:
        _refuse_foreign(destination, given)
    return destination


def _refuse_foreign(folder: Path, given: Path, *, when: str = "") -> None:
    foreign = foreign_entries(folder)
    if foreign:
        raise CnnxError(f"{given}: holds {printable(foreign[0])}{' and more' if len(foreign) > 1 else ''}, which "
                        f"cnnx did not write{when}; use --force to replace the folder")


@contextmanager
def staged_folder(destination: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``destination`` when the block succeeds.

    On any exception (Ctrl-C and, once ``signals.install()`` ran, SIGTERM
    included) the temporary folder is removed and ``destination`` is
    untouched.  A folder holding anything cnnx did not write is refused
    unless ``force``; another run writing the same destination is refused.
    """
    given, destination = destination, checked_destination(destination, force=force)
    created: list[Path] = []  # parent folders this run made, removed again if it fails
    try:
        _make_parents(destination.parent, created)
        with _locked(destination, given):
            temporary = None
            try:
                with signals.deferred():  # made and named as one step: a stop then always finds it to remove
                    temporary = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.tmp-"))
                yield temporary
                _replace(temporary, destination, given, force=force)
            except OSError as error:  # a full disk, say: the folder it could not write is named, nothing left of it
                if temporary is None:
                    raise CnnxError(f"{destination.parent}: cannot write here ({error.strerror or error})") from None
                shutil.rmtree(temporary, ignore_errors=True)
                raise _naming_folder(error, temporary, given) from None
            except BaseException:
                if temporary is not None:
                    shutil.rmtree(temporary, ignore_errors=True)
                raise
    except BaseException:
        for folder in created:
            _remove_if_empty(folder)
        raise


@contextmanager
def _locked(destination: Path, given: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside the destination, so two runs never write it at once; the lock file goes after."""
    lock = destination.parent / f".{destination.name}.lock"
    handle, held = None, False
    try:
        with signals.deferred():  # made, opened and held as one step, so a stop always finds it to let go
            try:
                handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                raise CnnxError(f"{given}: another cnnx run is writing this folder; wait, or choose another") from None
            except OSError as error:
                raise CnnxError(f"{destination.parent}: cannot write here ({error.strerror or error})") from None
        yield
    finally:
        if held:  # another run's lock file is left to it
            with contextlib.suppress(OSError):
                os.unlink(lock)
        if handle is not None:
            os.close(handle)


def _make_parents(folder: Path, created: list[Path]) -> None:
    """Create ``folder`` and its missing parents, adding each one made to ``created``, deepest first.

    Another process of a batch may create the same parent at the same moment: that is no error.
    """
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    try:
        for path in reversed(missing):
            try:
                with signals.deferred():  # made and recorded as one step
                    path.mkdir()
                    created.insert(0, path)
            except FileExistsError:
                if not path.is_dir():
                    raise
    except OSError as error:
        raise CnnxError(f"{missing[0]}: cannot create the folder ({error.strerror or error})") from None


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, or gone: either way it stays as it is
        folder.rmdir()


def _naming_folder(error: OSError, temporary: Path, given: Path) -> OSError:
    """A failure to write the run (a full disk) as one naming the output folder, not a hidden temporary file."""
    if error.filename and not str(error.filename).startswith(str(temporary)):
        return error  # about another file, which it names
    return OSError(error.errno, f"cannot write the run here ({error.strerror or error})", str(given))


def _replace(temporary: Path, destination: Path, given: Path, *, force: bool) -> None:
    """Move the finished run into place; an earlier run there goes only once the new one is in.

    What was there is moved aside first and checked again there: a file the user saved into the folder while the
    run was written is found, and the folder put back as it was (unless ``force``).  Signals wait until the swap
    is done: a run is either not in place, or in place with nothing of the old left.
    """
    os.chmod(temporary, 0o777 & ~umask())
    with signals.deferred():
        if destination.exists():
            old = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.old-"))
            aside = old / destination.name
            os.rename(destination, aside)
            try:
                if not force:
                    _refuse_foreign(aside, given, when=" (it came while this run was being written)")
                os.rename(temporary, destination)
            except BaseException:
                os.rename(aside, destination)
                os.rmdir(old)
                raise
            shutil.rmtree(old)
        else:
            os.rename(temporary, destination)
        finished.append(destination)
