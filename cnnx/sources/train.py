"""Training the shipped shapes model with ``cnnx train``'s own learning (``learn``): the lesson's exact flow.

conv 1->8 3x3 -> relu -> maxpool 2 -> conv 8->16 3x3 -> relu -> maxpool 2 ->
fully connected 1024->5 -> softmax, on prepared drawings of the shapes
generator, trained by the reverse pass with Adam and calibrated by temperature
scaling, as ``cnnx train`` trains any stages.  The shipped file names the
network's parameters conv1, conv2 and fc.
"""

from __future__ import annotations

import numpy as np

from cnnx.sources.learn import Network, TrainSettings, calibrate, fit
from cnnx.sources.shapes import CLASSES, CONTENT_SIZE, INPUT_SIZE, dataset
from cnnx.sources.spec import load_pipeline

SPEC = "conv(random:8, padding=1) -> relu -> maxpool(2) -> conv(random:16, padding=1) -> relu -> maxpool(2)"
NAMES = {"conv0": "conv1", "conv3": "conv2", "fc": "fc"}  # the network's parameters, as the shipped file names them


def network(params: dict | None = None, seed: int = 7) -> Network:
    """The shapes model's network, He-initialised from ``seed``, or holding the shipped file's ``params``.  Its
    inputs are the prepared drawings themselves (no mean taken off), as the shipped pipeline runs them."""
    made = Network.of(load_pipeline(spec=SPEC), (1, INPUT_SIZE, INPUT_SIZE), CLASSES, seed)
    if params is not None:
        made.params = {name: params[_shipped(name)] for name in made.params}
    return made


def _shipped(name: str) -> str:
    layer, _, kind = name.partition(".")
    return f"{NAMES[layer]}.{kind}"


def shipped_params(made: Network) -> dict[str, np.ndarray]:
    return {_shipped(name): value.astype(np.float32) for name, value in made.params.items()}


def train(*, samples: int = 30000, epochs: int = 10, seed: int = 7, held_out: tuple | None = None,
          log=print) -> tuple[Network, list]:
    """Learn from ``samples`` generated drawings, keeping the parameters with the least loss on the ``held_out``
    set; the network with them, and every epoch.  No augmentation: the preparation already centres and scales
    each drawing, and augmented training left the model too sure of its mistakes on pen drawings."""
    images, labels = dataset(samples, seed)
    held = held_out if held_out is not None else (images[:0], labels[:0])
    made = network(seed=seed)
    settings = TrainSettings(epochs=epochs, batch=64, seed=seed, patience=epochs, augment=False)

    def report(epoch) -> None:
        log(f"epoch {epoch.number}/{epochs}: loss {epoch.loss:.4f}, held out {epoch.val_accuracy:.4f} "
            f"({epoch.seconds:.1f} s)")

    best, history = fit(made, (images, labels), held, settings, report)
    made.params = best
    return made, history


def calibrated(made: Network, images: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling on held-out drawings (``learn.calibrate``): the temperature, the last layer divided by
    it."""
    return calibrate(made, images, labels)


def predict(params: dict, x: np.ndarray) -> np.ndarray:
    """Class probabilities of the shipped file's ``params`` for prepared inputs (N, 1, 32, 32)."""
    return network(params).probabilities(x)


def accuracy(params: dict, x: np.ndarray, labels: np.ndarray) -> float:
    return float((predict(params, x).argmax(axis=1) == labels).mean())


def describe(
    test_accuracy: float, seed: int, test_seed: int, samples: int, epochs: int, temperature: float, held_out_seed: int
) -> dict:
    return {
        "name": "shapes",
        "classes": list(CLASSES),
        "input": f"1x{INPUT_SIZE}x{INPUT_SIZE} grey, light shape on dark, in [0, 1]",
        "preprocessing": (
            "grey (BT.601 luma); inverted when the border is light; minus the background level; scaled to peak 1; "
            f"cropped to the ink (above a third of the peak), made square, scaled to {CONTENT_SIZE} px, centred"
        ),
        "spec": (
            "conv(model:shapes:conv1) -> relu -> maxpool(2) -> conv(model:shapes:conv2) -> relu -> maxpool(2)"
            " -> flatten -> dense(model:shapes:fc) -> softmax"
        ),
        "preparation": "shapes",
        "training": {"seed": seed, "samples": samples, "epochs": epochs, "optimizer": "Adam", "batch": 64,
                     "weight_decay": 1e-4, "by": "cnnx train's learning (cnnx.sources.learn)"},
        "test": {"seed": test_seed, "accuracy": test_accuracy},
        "calibration": {"temperature": temperature, "seed": held_out_seed, "method": "temperature scaling"},
    }
