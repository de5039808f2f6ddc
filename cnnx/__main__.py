"""``python -m cnnx``: the same command as ``cnnx``."""

from cnnx.launch import main

main()
