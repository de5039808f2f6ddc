"""Train the shapes model that ships as cnnx/models/shapes.npz, reproducibly, with cnnx train's own learning.

    python tools/train_shapes.py            # about two minutes on two cores

It draws the training shapes from one seed, held-out shapes (early stopping
and calibration) from another and a fresh test set from a third, trains the
lesson's stages with ``cnnx train``'s learning (``cnnx.sources.learn``: the
reverse pass, Adam, augmentation), and writes the weights with their metadata
(classes, input size, preprocessing, seeds, test accuracy).
"""

import argparse
import time
from pathlib import Path

from cnnx.io.weights import MODELS, save_model
from cnnx.sources.shapes import dataset
from cnnx.sources.train import accuracy, calibrated, describe, shipped_params, train

TRAIN_SEED, HELD_OUT_SEED, TEST_SEED = 7, 99, 2024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=MODELS / "shapes.npz")
    arguments = parser.parse_args()
    start = time.perf_counter()
    held_x, held_y = dataset(5000, HELD_OUT_SEED)
    made, _ = train(samples=arguments.samples, epochs=arguments.epochs, seed=TRAIN_SEED, held_out=(held_x, held_y))
    temperature = calibrated(made, held_x, held_y)
    params = shipped_params(made)
    test_x, test_y = dataset(5000, TEST_SEED)
    score = accuracy(params, test_x, test_y)
    meta = describe(score, TRAIN_SEED, TEST_SEED, arguments.samples, arguments.epochs, temperature, HELD_OUT_SEED)
    save_model(arguments.out, params, meta)
    print(f"test accuracy {score:.4f} on 5000 fresh shapes; {time.perf_counter() - start:.0f} s; wrote {arguments.out}")


if __name__ == "__main__":
    main()
