"""The numbers: torch-like ops (``conv2d``, pooling, activations, ``linear``, ``softmax``) and the engine that runs
them fast.  Imports only ``base``."""
