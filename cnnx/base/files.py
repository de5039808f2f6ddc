"""Opening the files a user names (regular files only, never more bytes than a limit), and writing files whole.

A FIFO, a device or a socket given as an image, a pipeline file or a
weight file would block a read forever or never end it; they are refused
before a byte is read.  The file is opened without blocking and checked on
the open descriptor, so what is read is what was checked.

A file cnnx writes goes to a hidden temporary file beside it, renamed over
it once complete.  The temporary file is made and recorded with signals
held (``signals.deferred``): a stop arriving just after the call that made
it, before its name was kept, would leave it behind.
"""

from __future__ import annotations

import functools
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from cnnx.base import signals
from cnnx.base.errors import CnnxError

__all__ = ["open_regular", "read_regular", "refuse_special", "umask", "written_whole"]


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def _cannot(path: Path, error: OSError, what: str) -> CnnxError:
    if isinstance(error, FileNotFoundError):
        return CnnxError(f"{path}: no such file")
    if isinstance(error, IsADirectoryError):
        return CnnxError(f"{path}: is a folder, not {what}")
    if isinstance(error, PermissionError):
        return CnnxError(f"{path}: permission denied")
    return CnnxError(f"{path}: cannot read ({error.strerror or error})")


def open_regular(path: Path, what: str = "a file", *, limit: int | None = None) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file of at most ``limit`` bytes."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise _cannot(path, error, what) from None
    info = os.fstat(handle)
    if not stat.S_ISREG(info.st_mode):
        os.close(handle)
        raise CnnxError(f"{path}: is {_kind(info.st_mode)}, not {what}")
    if limit is not None and info.st_size > limit:
        os.close(handle)
        raise CnnxError(f"{path}: {info.st_size:,} bytes is more than {what} may hold here ({limit:,})")
    os.set_blocking(handle, True)
    return os.fdopen(handle, "rb")


def read_regular(path: Path, what: str = "a file", *, limit: int | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes."""
    with open_regular(path, what, limit=limit) as stream:
        try:
            return stream.read()
        except OSError as error:
            raise _cannot(path, error, what) from None


def refuse_special(path: Path) -> None:
    """Refuse to write over anything but a regular file (a FIFO would block the write, a device take it)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise _cannot(path, error, "a file") from None
    if not stat.S_ISREG(mode):
        raise CnnxError(f"{path}: is {_kind(mode)}; give the name of a file to write")


@contextmanager
def written_whole(path: Path, mode: int = 0o666) -> Iterator[BinaryIO]:
    """A binary stream whose bytes replace ``path`` when the block ends, or leave no trace if it fails or is stopped.

    ``mode`` is the new file's permissions before the umask (mkstemp makes the file private).
    """
    path = Path(path)
    temporary = None
    try:
        with signals.deferred():
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
            stream = os.fdopen(handle, "wb")
        with stream:
            yield stream
        os.chmod(temporary, mode & ~umask())
        with signals.deferred():
            os.replace(temporary, path)
            temporary = None
    except BaseException:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise


def umask() -> int:
    """The process's file-creation mask, read without changing it where Linux tells it in /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _umask_by_setting()


@functools.cache
def _umask_by_setting() -> int:
    """Elsewhere reading the mask means setting it: done once, and set straight back."""
    mask = os.umask(0o22)
    os.umask(mask)
    return mask
