"""cnnx: see what a convolutional network does to an image.

The public names are imported on first use, so that ``cnnx --version`` and
``cnnx --help`` start without loading numpy and Pillow.
"""

from importlib import import_module

__version__ = "0.1.0"

_HOMES = {
    "CnnxError": "cnnx.errors",
    "load_image": "cnnx.images",
    "BANK": "cnnx.kernels",
    "parse_kernel": "cnnx.kernels",
    "conv2d": "cnnx.ops",
    "max_pool2d": "cnnx.ops",
    "avg_pool2d": "cnnx.ops",
    "relu": "cnnx.ops",
    "leaky_relu": "cnnx.ops",
    "sigmoid": "cnnx.ops",
    "tanh": "cnnx.ops",
    "LESSON": "cnnx.stages",
    "Pipeline": "cnnx.stages",
    "Conv": "cnnx.stages",
    "Activation": "cnnx.stages",
    "Pool": "cnnx.stages",
    "Chain": "cnnx.pipeline",
    "run": "cnnx.pipeline",
    "stream": "cnnx.pipeline",
    "parse_spec": "cnnx.spec",
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
