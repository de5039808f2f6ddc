"""Signals as exceptions: Ctrl-C, SIGTERM and SIGHUP unwind the stack, so every half-written file is removed.

By default SIGTERM and SIGHUP end a process on the spot, with no cleanup;
once ``install()`` has run all three raise ``Stopped``, so the ``finally``
and ``except BaseException`` blocks that remove temporary files run.
Inside ``deferred()`` (moving a finished run into place) a signal is held
and raised when the block ends, so a replacement is never left half done;
once a stop unwinds, further signals are ignored so its cleanup runs whole.
Before ``install()`` (while the command's modules import) and after
``uninstall()`` (its work done), a signal ends the process at once with the
stop line and ``128 + signal``: there is nothing to clean up then.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Stopped", "children_ignore_interrupt", "deferred", "end_at_once", "install", "job", "stopped",
           "stopping", "uninstall"]

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_pending: list[int] = []
_depth = 0  # how many deferred() blocks the main thread is in
_worker = False  # a worker process: between jobs a signal just ends it
_busy = 0  # how many jobs the worker is running
_stopping = False  # a stop is unwinding: a second signal must not cut its cleanup short


class Stopped(BaseException):
    """The process was asked to stop by a signal: Ctrl-C (SIGINT), SIGTERM or SIGHUP.

    Not a KeyboardInterrupt, so that no library on the way (click prints "Aborted!" and exits 1) takes it for its
    own; ``stopped()`` reads a KeyboardInterrupt raised where these handlers were not installed as one.
    """

    def __init__(self, signum: int):
        super().__init__("interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's code for a process a signal ended: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
        return 128 + self.signum


def stopped(error: BaseException) -> Stopped:
    """A KeyboardInterrupt or Stopped as a Stopped: the one place a stop becomes its line and exit code."""
    return error if isinstance(error, Stopped) else Stopped(signal.SIGINT)


def stopping() -> bool:
    """Whether a signal has stopped the work: its cleanup ran as the stack unwound."""
    return _stopping


def _raise(signum: int) -> None:
    global _stopping
    _stopping = True
    raise Stopped(signum)


def _end(signum: int, frame) -> None:
    """End the process now, with the stop line and its code: nothing of a job is under way."""
    os.write(2, f"cnnx: {Stopped(signum)}{_ending_note}\n".encode())
    os._exit(128 + signum)


_ending_note = ""


def end_at_once(note: str = "") -> None:
    """From now on a handled signal ends the process at once with the stop line (and ``note``) and 128 + signal;
    a signal the process was born ignoring (a worker's Ctrl-C) stays ignored."""
    global _ending_note
    if threading.current_thread() is not threading.main_thread():
        return
    _ending_note = note
    for signum in HANDLED:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _end)


def _handler(signum: int, frame) -> None:
    # Once a stop unwinds, another signal (a second Ctrl-C, or the SIGTERM a pool sends every worker when one
    # ends) would interrupt the cleanup it runs and leave half-written files: the process is ending already.
    if _stopping:
        return
    if _depth:
        _pending.append(signum)
        return
    if _worker and not _busy:
        os._exit(128 + signum)  # nothing of a job to clean up, and no one to tell
    _raise(signum)


RESEND_SECONDS = 0.005  # a dropped stop comes back this much later, outside whatever dropped it


def _unraisable(report) -> None:
    """A stop raised where Python cannot pass an exception on (a finaliser, a callback inside C code) is dropped
    there with an "Exception ignored" report: instead the signal is sent again, to be raised where the stack can
    unwind. Any other report is Python's own."""
    global _stopping
    if not isinstance(report.exc_value, Stopped):
        sys.__unraisablehook__(report)
        return
    _stopping = False
    signum = report.exc_value.signum
    try:  # from another thread, a moment later: raised here, it would be dropped again
        threading.Timer(RESEND_SECONDS, os.kill, (os.getpid(), signum)).start()
    except RuntimeError:  # the interpreter is shutting down: there is nothing left to unwind
        _end(signum, None)


def install(*, worker: bool = False) -> None:
    """Make the handled signals raise (in the main thread).

    A ``worker`` process leaves Ctrl-C to its parent, and between jobs (see
    ``job()``) ends at once on SIGTERM.
    """
    global _worker
    if threading.current_thread() is not threading.main_thread():
        return
    _worker = worker
    sys.unraisablehook = _unraisable
    for signum in HANDLED:
        signal.signal(signum, signal.SIG_IGN if worker and signum == signal.SIGINT else _handler)


def uninstall() -> None:
    """Once the work is done, a signal just ends the process (with its line and code)."""
    end_at_once()


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
