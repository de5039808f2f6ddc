"""Time an epoch of cnnx train's default network against the same network trained by PyTorch on CPU, in one run.

    python benchmarks/bench_train.py
    python benchmarks/bench_train.py --images 2000 --rounds 3

The network: conv 1->8 3x3 -> relu -> maxpool 2 -> conv 8->16 3x3 -> relu ->
maxpool 2 -> dense -> softmax on 32x32 drawings, batches of 32, Adam, no
augmentation. Each round runs an epoch of each, so a noisy machine slows them
alike. Target: cnnx's epoch at most 1.5x PyTorch's.
"""

from __future__ import annotations

# isort: off
import cnnx  # noqa: F401  (first, as in the command: it sets OpenBLAS's idle-thread timeout before numpy loads it)
# isort: on

import argparse

import numpy as np
from interleaved import interleaved_medians

from cnnx.sources.learn import Network, TrainSettings, fit
from cnnx.sources.shapes import CLASSES, dataset
from cnnx.sources.spec import load_pipeline

SPEC = "conv(random:8, padding=1) -> relu -> maxpool(2) -> conv(random:16, padding=1) -> relu -> maxpool(2)"


def torch_epoch(images: np.ndarray, labels: np.ndarray):
    """An epoch of the same network in PyTorch (Adam, batches of 32), or None without PyTorch."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 8 * 8, len(CLASSES)))
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    x, y = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))

    def epoch():
        order = torch.randperm(len(x))
        for k in range(0, len(x), 32):
            chosen = order[k : k + 32]
            optimizer.zero_grad()
            nn.functional.cross_entropy(network(x[chosen]), y[chosen]).backward()
            optimizer.step()

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    images, labels = dataset(arguments.images, 0)
    network = Network.of(load_pipeline(spec=SPEC), (1, 32, 32), CLASSES, images=images)
    empty = (images[:0], labels[:0])
    candidates = {"cnnx": lambda: fit(network, (images, labels), empty, TrainSettings(epochs=1, augment=False))}
    epoch = torch_epoch(images, labels)
    if epoch is not None:
        candidates["PyTorch"] = epoch
    medians = interleaved_medians(candidates, arguments.rounds)
    for name, seconds in medians.items():
        print(f"{name:8s} an epoch of {arguments.images} images: {seconds:.2f} s")
    if "PyTorch" in medians:
        print(f"cnnx / PyTorch: {medians['cnnx'] / medians['PyTorch']:.2f}x (target: at most 1.5x)")


if __name__ == "__main__":
    main()
