"""Signals as exceptions: Ctrl-C, SIGTERM and SIGHUP unwind the stack, so every half-written file is removed.

By default SIGTERM and SIGHUP end a process on the spot, with no cleanup;
once ``install()`` has run they raise ``Stopped`` (and SIGINT raises
``KeyboardInterrupt``), so the ``finally`` and ``except BaseException``
blocks that remove temporary files run.  Inside ``deferred()`` (moving a
finished run into place) a signal is held and raised when the block ends,
so a replacement is never left half done.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Stopped", "deferred", "install"]

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_pending: list[int] = []
_depth = 0  # how many deferred() blocks the main thread is in


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
    _raise(signum)


def install(*, ignore_interrupt: bool = False) -> None:
    """Make the handled signals raise (in the main thread); ``ignore_interrupt`` leaves Ctrl-C to a parent process."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        signal.signal(signum, signal.SIG_IGN if ignore_interrupt and signum == signal.SIGINT else _handler)


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
