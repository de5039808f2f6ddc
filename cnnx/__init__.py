"""cnnx: see what a convolutional network does to an image."""

__version__ = "0.1.0"

from cnnx.errors import CnnxError
from cnnx.images import load_image
from cnnx.kernels import BANK, parse_kernel
from cnnx.ops import avg_pool2d, conv2d, leaky_relu, max_pool2d, relu, sigmoid, tanh
from cnnx.pipeline import LESSON, Activation, Conv, Pool, run, stream

__all__ = [
    "__version__",
    "CnnxError",
    "load_image",
    "BANK",
    "parse_kernel",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "LESSON",
    "Conv",
    "Activation",
    "Pool",
    "run",
    "stream",
]
