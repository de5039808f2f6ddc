"""``python -m cnnx``: the same command as ``cnnx``."""

from cnnx.app.launch import main

main()
