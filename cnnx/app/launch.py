"""The ``cnnx`` command's first step: from its first instant, a signal ends it with one line and 128 + signal.

The console script imports this module before anything heavy, so Ctrl-C or
SIGTERM while typer, rich and numpy are still importing prints the stop line,
not a traceback; once the command runs, ``signals.install`` makes a signal
unwind the stack instead, so that half-written files are removed.
"""

from cnnx.base import signals

signals.end_at_once("; nothing was written")


def main() -> None:
    """Entry point of the ``cnnx`` script."""
    import warnings

    # numpy's floating-point warnings name a line of cnnx, not the user's input; what they mean cnnx says itself
    # (the statistics count infinities and NaN, a note names weights that are not finite). The tests, which call
    # the app directly, keep them as errors.
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    from cnnx.app.cli import main as run

    run()
