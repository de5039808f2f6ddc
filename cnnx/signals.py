"""Signals as exceptions: Ctrl-C, SIGTERM and SIGHUP unwind the stack, so every half-written file is removed.

By default SIGTERM and SIGHUP end a process on the spot, with no cleanup;
once ``install()`` has run they raise ``Stopped`` (and SIGINT raises
``KeyboardInterrupt``), so the ``finally`` and ``except BaseException``
blocks that remove temporary files run.  Inside ``deferred()`` (moving a
finished run into place) a signal is held and raised when the block ends,
so a replacement is never left half done.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Stopped", "children_ignore_interrupt", "deferred", "install", "job", "uninstall"]

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_pending: list[int] = []
_depth = 0  # how many deferred() blocks the main thread is in
_worker = False  # a worker process: between jobs a signal just ends it
_busy = 0  # how many jobs the worker is running


class Stopped(BaseException):
    """The process was asked to stop by a signal (SIGTERM, SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Stopped(signum)


def _handler(signum: int, frame) -> None:
    if _depth:
        _pending.append(signum)
        return
    if _worker and not _busy:
        os._exit(128 + signum)  # nothing of a job to clean up, and no one to tell
    _raise(signum)


def install(*, worker: bool = False) -> None:
    """Make the handled signals raise (in the main thread).

    A ``worker`` process leaves Ctrl-C to its parent, and between jobs (see
    ``job()``) ends at once on SIGTERM.
    """
    global _worker
    if threading.current_thread() is not threading.main_thread():
        return
    _worker = worker
    for signum in HANDLED:
        signal.signal(signum, signal.SIG_IGN if worker and signum == signal.SIGINT else _handler)


def uninstall() -> None:
    """The default actions again: once the work is done, a signal just ends the process."""
    if threading.current_thread() is threading.main_thread():
        for signum in HANDLED:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)


@contextmanager
def job() -> Iterator[None]:
    """A worker's job: a signal now unwinds it (so its files are cleaned up), then ends the process."""
    global _busy
    _busy += 1
    try:
        yield
    except Stopped as stop:
        if _worker:
            os._exit(128 + stop.signum)
        raise
    finally:
        _busy -= 1


@contextmanager
def deferred() -> Iterator[None]:
    """Hold the handled signals until the block ends, then raise the first that came."""
    global _depth
    main = threading.current_thread() is threading.main_thread()
    if main:
        _depth += 1
    try:
        yield
    finally:
        if main:
            _depth -= 1
            if not _depth and _pending:
                signum = _pending[0]
                _pending.clear()
                _raise(signum)


@contextmanager
def children_ignore_interrupt() -> Iterator[None]:
    """Processes started in the block are born ignoring Ctrl-C, which their parent handles for them.

    An ignored signal is the one disposition a new program inherits, so
    SIGINT is ignored here for the moment it takes to start them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
