"""Time cnnx's ONNX runner against ONNX Runtime (and PyTorch where installed) on ResNet-50, in one interleaved run.

    python benchmarks/bench_onnx.py               # 11 rounds
    python benchmarks/bench_onnx.py --rounds 5

The model is the ResNet-50 graph that ships inside the onnx package's
backend test data (light_resnet50), with seeded random weights in place of
its constant ones, at 224x224, batch 1. Each round runs every candidate
once, so a noisy machine slows them alike; the table shows medians and the
ratio the target is stated in: cnnx's compute at most 2x ONNX Runtime's
InferenceSession.run with default options. The last line times the whole
command, `cnnx pipeline photo --model resnet50.onnx` with its default
layers, against a target of 3 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from interleaved import interleaved_medians

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def torch_resnet50():
    """ResNet-50 in plain PyTorch (random weights, eval mode), and a call that runs it on a batch of one, or None
    where PyTorch is not installed: torch's eager CPU time, printed beside the others."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None

    class Bottleneck(nn.Module):
        def __init__(self, inputs: int, width: int, stride: int):
            super().__init__()
            out = 4 * width
            self.body = nn.Sequential(
                nn.Conv2d(inputs, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out))
            self.skip = (nn.Sequential(nn.Conv2d(inputs, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                         if stride != 1 or inputs != out else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    layers, inputs = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for k in range(blocks):
            layers.append(Bottleneck(inputs, width, stride if k == 0 else 1))
            inputs = 4 * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000), nn.Softmax(1)]
    network = nn.Sequential(*layers).eval()
    x = torch.rand(1, 3, 224, 224)

    def run():
        with torch.no_grad():
            return network(x)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=11)
    rounds = parser.parse_args().rounds
    import onnxruntime as ort
    from onnx_models import with_random_weights

    from cnnx.sources.onnx_file import load_graph

    folder = Path(tempfile.mkdtemp())
    path = with_random_weights("resnet50", folder)
    graph = load_graph(path, layers="Softmax")  # compute the whole graph, write the output only
    x = np.random.default_rng(0).random((1, *graph.input_shape_), dtype=np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    candidates = {
        "cnnx": lambda: list(graph.stream(x[0])),
        "ONNX Runtime": lambda: session.run(None, {graph.input_name: x}),
    }
    eager = torch_resnet50()
    if eager is not None:
        candidates["PyTorch eager"] = eager
    medians = interleaved_medians(candidates, rounds)
    for name, value in medians.items():
        print(f"{name:14s} {value * 1000:7.1f} ms")
    print(f"cnnx / ONNX Runtime: {medians['cnnx'] / medians['ONNX Runtime']:.2f}x (target: at most 2x)")
    from PIL import Image

    photo = folder / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (480, 640, 3), np.uint8)).save(photo)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnx", "pipeline", str(photo), "--model", str(path), "-o",
                    str(folder / "run"), "-q", "--preprocess", "imagenet"], check=True, capture_output=True)
    print(f"cnnx pipeline photo --model resnet50.onnx, whole process: {time.perf_counter() - start:.2f} s "
          "(target: under 3 s)")


if __name__ == "__main__":
    main()
