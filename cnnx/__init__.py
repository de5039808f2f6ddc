"""cnnx: see what a convolutional network does to an image.

The public names are imported on first use, so that ``cnnx --version`` and
``cnnx --help`` start without loading numpy and Pillow.
"""

import os
from importlib import import_module

# OpenBLAS's idle threads spin for 2^28 cycles (about a tenth of a second) after each product before they sleep; on
# two cores that spin takes a core from the work cnnx runs on its own threads between products. Measured here, 2^20
# cycles (under a millisecond) ran VGG-19 in 250 ms instead of 330 and every other network as fast or faster (2^24:
# ConvNeXt 214 ms against 185, EfficientNet 59 against 52). OpenBLAS reads it once, when numpy first loads it, so it
# is set here, before that (a user's own setting stays).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

__version__ = "0.1.0"

_HOMES = {
    "CnnxError": "cnnx.base.errors",
    "load_image": "cnnx.io.images",
    "BANK": "cnnx.sources.kernels",
    "parse_kernel": "cnnx.sources.kernels",
    "conv2d": "cnnx.compute.ops",
    "max_pool2d": "cnnx.compute.ops",
    "avg_pool2d": "cnnx.compute.ops",
    "relu": "cnnx.compute.ops",
    "leaky_relu": "cnnx.compute.ops",
    "sigmoid": "cnnx.compute.ops",
    "tanh": "cnnx.compute.ops",
    "LESSON": "cnnx.sources.stages",
    "Pipeline": "cnnx.sources.stages",
    "Conv": "cnnx.sources.stages",
    "Activation": "cnnx.sources.stages",
    "Pool": "cnnx.sources.stages",
    "Chain": "cnnx.sources.pipeline",
    "run": "cnnx.render.notebook",
    "Run": "cnnx.render.notebook",
    "load_model": "cnnx.sources.model",
    "load_graph": "cnnx.sources.onnx_file",
    "stream": "cnnx.sources.pipeline",
    "parse_spec": "cnnx.sources.spec",
}

__all__ = ["__version__", *_HOMES]


def __getattr__(name: str):
    if name in _HOMES:
        value = getattr(import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
