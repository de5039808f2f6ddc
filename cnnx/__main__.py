"""``python -m cnnx``: the same command as ``cnnx``."""

from cnnx.cli import main

main()
