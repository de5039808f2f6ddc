"""No speed cliffs: each convolution's chosen path against the plain BLAS bank for the same shape, in one run.

    python benchmarks/bench_paths.py
    python benchmarks/bench_paths.py --rounds 9

The engine picks, by estimated cost, how a convolution runs: one kernel by
multiply-add passes over its taps (or 1-D passes of its factors, or the FFT),
or as a bank (the taps gathered, one BLAS product; or, with few kernels over
many channels, a product per kernel row); a grouped convolution by
multiply-adds per tap or one batched product over its groups. For each shape
below this times the path chosen and the bank forced, interleaved, and prints
the ratio. Target: no shape slower than 1.2x the bank.
"""

from __future__ import annotations

# isort: off
import cnnx  # noqa: F401  (first, as in the command: it sets OpenBLAS's idle-thread timeout before numpy loads it)
# isort: on

import argparse
from contextlib import contextmanager

import numpy as np
from interleaved import interleaved_medians

from cnnx.compute import engine, ops

# (channels in, kernels out, groups, kernel side, map side): one kernel over few and many channels, small and
# large maps, dense and separable kernels; depthwise and grouped layers of MobileNet, EfficientNet and RegNet.
SHAPES = [
    (1, 1, 1, 3, 1024), (1, 1, 1, 7, 1024), (1, 1, 1, 15, 512), (3, 1, 1, 3, 1024), (8, 1, 1, 3, 256),
    (64, 1, 1, 3, 128), (64, 1, 1, 3, 32), (512, 1, 1, 3, 32), (512, 1, 1, 3, 14), (2048, 1, 1, 1, 7),
    (96, 96, 96, 3, 112), (144, 144, 144, 3, 56), (240, 240, 240, 5, 28), (672, 672, 672, 5, 14),
    (96, 96, 12, 3, 56), (240, 240, 3, 1, 28), (128, 32, 1, 3, 56), (128, 32, 1, 3, 14), (64, 16, 1, 3, 112),
]


@contextmanager
def bank_forced():
    """One kernel always as a bank, a bank always by im2col, and grouped layers always as a batched product."""
    call, direct, rows = engine.PASS_CALL_PIXELS, engine.grouped_is_direct, engine.by_kernel_rows
    never = lambda *shape: False  # noqa: E731
    engine.PASS_CALL_PIXELS, engine.grouped_is_direct, engine.by_kernel_rows = 10**15, never, never
    try:
        yield
    finally:
        engine.PASS_CALL_PIXELS, engine.grouped_is_direct, engine.by_kernel_rows = call, direct, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    rng = np.random.default_rng(0)
    worst = 0.0
    print(f"{'C':>5s} {'O':>4s} {'groups':>6s} {'k':>3s} {'map':>5s} {'chosen':>9s} {'bank':>9s} {'ratio':>6s}")
    for C, O, groups, k, side in SHAPES:
        x = rng.standard_normal((C, side, side)).astype(np.float32)
        w = rng.standard_normal((O, C // groups, k, k)).astype(np.float32)

        def chosen(x=x, w=w, groups=groups, k=k):
            return ops.conv2d(x, w, padding=k // 2, groups=groups)

        def bank(x=x, w=w, groups=groups, k=k):
            with bank_forced():
                return ops.conv2d(x, w, padding=k // 2, groups=groups)

        medians = interleaved_medians({"chosen": chosen, "bank": bank}, rounds, repeat=3)
        ratio = medians["chosen"] / medians["bank"]
        worst = max(worst, ratio)
        print(f"{C:5d} {O:4d} {groups:6d} {k:3d} {side:5d} {medians['chosen'] * 1000:7.2f}ms "
              f"{medians['bank'] * 1000:7.2f}ms {ratio:5.2f}x")
    print(f"\nslowest against the bank: {worst:.2f}x (target: at most 1.2x)")


if __name__ == "__main__":
    main()
