"""Time cnnx's ONNX runner against ONNX Runtime (and PyTorch eager where installed), model by model, in one
interleaved run.

    python benchmarks/bench_onnx.py                  # every model, 7 rounds
    python benchmarks/bench_onnx.py --rounds 11 --only resnet50,vgg19

The models: the nine light model-zoo graphs that ship inside the onnx package,
as shipped (their weights built by ConstantOfShape, which cnnx and ONNX
Runtime both compute once when the model is read); ResNet-50 with seeded
random weights (PyTorch eager's time beside it, where installed); and, where
PyTorch is installed, MobileNetV2, EfficientNet-B0 and a ConvNeXt-Tiny-like
network built here with random weights and exported
by its TorchScript exporter. All at batch 1 and their own sizes. Each round
runs every candidate three times in a row, the fastest counting (the first
run after another candidate's is slowed by the threads it left spinning),
so a noisy machine slows them alike; the table shows medians and the ratio the targets are stated in: cnnx's compute at
most 1.5x ONNX Runtime's InferenceSession.run (default options) for each
model, at most 1.0x in the geometric mean, ResNet-50 at most 0.9x. The
GFLOP/s column is the model's multiply-adds (twice, for convolutions and
products) over cnnx's time, beside the machine's sgemm rate measured in the
same run. The last line times the whole command,
`cnnx pipeline photo --model resnet50.onnx`, against a target of 3 s.
"""

from __future__ import annotations

# isort: off
import cnnx  # noqa: F401  (first, as in the command: it sets OpenBLAS's idle-thread timeout before numpy loads it)
# isort: on

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from interleaved import interleaved_medians

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))


def sgemm_rate() -> float:
    """The machine's float32 matrix product rate, in GFLOP/s, on a ResNet-50-sized product."""
    a = np.random.default_rng(0).random((512, 4608), dtype=np.float32)
    b = np.random.default_rng(1).random((4608, 3136), dtype=np.float32)
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 512 * 4608 * 3136 / (time.perf_counter() - start) / 1e9


def flops(graph) -> float:
    """Twice the multiply-adds of the graph's convolutions and products, at its input size."""
    total = 0
    for node in graph.nodes:
        out = graph.shapes.get(node.outputs[0])
        if not out:
            continue
        if node.op == "Conv":
            w = graph.shapes.get(node.inputs[1]) or graph.constants[node.inputs[1]].shape
            total += 2 * math.prod(out) * math.prod(w[1:])
        elif node.op in ("Gemm", "MatMul"):
            a = graph.shapes.get(node.inputs[0]) or graph.constants[node.inputs[0]].shape
            total += 2 * math.prod(out) * a[-1]
    return total


def torch_resnet50():
    """ResNet-50 in plain PyTorch (random weights, eval mode), or None where PyTorch is not installed: torch's
    eager CPU time, printed beside the others."""
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
    return nn.Sequential(*layers).eval()


def torch_networks(folder: Path) -> dict[str, Path]:
    """MobileNetV2, EfficientNet-B0 and a ConvNeXt-Tiny-like network, random weights, exported to ONNX; none
    where PyTorch is not installed."""
    try:
        import torch
        from torch import nn
        from torch_goldens import ConvNeXtBlock, _export
    except ImportError:
        return {}

    class Inverted(nn.Module):
        """MobileNetV2's and EfficientNet's inverted residual: expand, depthwise, (squeeze-excite), project."""

        def __init__(self, c_in, c_out, expand, kernel, stride, act, excite):
            super().__init__()
            e = c_in * expand
            layers = [nn.Conv2d(c_in, e, 1, bias=False), nn.BatchNorm2d(e), act()] if expand != 1 else []
            layers += [nn.Conv2d(e, e, kernel, stride, kernel // 2, groups=e, bias=False), nn.BatchNorm2d(e), act()]
            self.body = nn.Sequential(*layers)
            squeezed = max(1, c_in // 4)
            self.excite = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(e, squeezed, 1), nn.SiLU(),
                                        nn.Conv2d(squeezed, e, 1), nn.Sigmoid()) if excite else None
            self.project = nn.Sequential(nn.Conv2d(e, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
            self.skip = stride == 1 and c_in == c_out

        def forward(self, x):
            y = self.body(x)
            if self.excite is not None:
                y = y * self.excite(y)
            y = self.project(y)
            return x + y if self.skip else y

    def inverted_net(config, act, excite, stem=32, head=1280):
        layers, c = [nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), act()], stem
        for expand, kernel, stride, out, repeat in config:
            for k in range(repeat):
                layers.append(Inverted(c, out, expand, kernel, stride if k == 0 else 1, act, excite))
                c = out
        layers += [nn.Conv2d(c, head, 1, bias=False), nn.BatchNorm2d(head), act(), nn.AdaptiveAvgPool2d(1),
                   nn.Flatten(), nn.Linear(head, 1000)]
        return nn.Sequential(*layers)

    class ChannelsLastNorm(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.norm = nn.LayerNorm(c, eps=1e-6)

        def forward(self, x):
            return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def convnext_tiny():
        dims, depths = (96, 192, 384, 768), (3, 3, 9, 3)
        layers = [nn.Conv2d(3, dims[0], 4, 4), ChannelsLastNorm(dims[0])]
        for k, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            if k:
                layers += [ChannelsLastNorm(dims[k - 1]), nn.Conv2d(dims[k - 1], dim, 2, 2)]
            layers += [ConvNeXtBlock(dim) for _ in range(depth)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(dims[-1]), nn.Linear(dims[-1], 1000)]
        return nn.Sequential(*layers)

    torch.manual_seed(0)
    relu6 = nn.ReLU6
    networks = {
        "mobilenet_v2": inverted_net([(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 3, 2, 32, 3), (6, 3, 2, 64, 4),
                                      (6, 3, 1, 96, 3), (6, 3, 2, 160, 3), (6, 3, 1, 320, 1)], relu6, False),
        "efficientnet_b0": inverted_net([(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                                         (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)], nn.SiLU, True),
        "convnext_tiny": convnext_tiny(),
    }
    paths = {}
    for name, network in networks.items():
        paths[name] = folder / f"{name}.onnx"
        _export(network.eval(), (1, 3, 224, 224), paths[name], dynamo=False)
    return paths


def models(folder: Path, only: set[str] | None) -> dict[str, Path]:
    from onnx_models import LIGHT, LIGHT_MODELS, with_random_weights

    chosen = {name: LIGHT / f"light_{name}.onnx" for name in LIGHT_MODELS}
    chosen["resnet50 (random weights)"] = with_random_weights("resnet50", folder)
    chosen.update(torch_networks(folder))
    return {k: v for k, v in chosen.items() if only is None or k.split()[0] in only}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", help="models to time, by name, comma-separated")
    arguments = parser.parse_args()
    import onnxruntime as ort

    from cnnx.sources.onnx_file import load_graph

    folder = Path(tempfile.mkdtemp())
    rate = sgemm_rate()
    print(f"sgemm here: {rate:.0f} GFLOP/s\n")
    print(f"{'model':28s} {'cnnx':>9s} {'ORT':>9s} {'ratio':>6s} {'GFLOP/s':>8s} {'of sgemm':>8s}")
    ratios = {}
    for name, path in models(folder, set(arguments.only.split(",")) if arguments.only else None).items():
        graph = load_graph(path)
        x = np.random.default_rng(0).random((1, *graph.input_shape_), dtype=np.float32)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        candidates = {
            "cnnx": lambda graph=graph, x=x: [None for _ in graph.evaluate(x[0])],
            "ort": lambda session=session, graph=graph, x=x: session.run(None, {graph.input_name: x}),
        }
        eager = torch_resnet50() if name.startswith("resnet50 (random") else None
        if eager is not None:
            import torch

            def run_eager(eager=eager, x=x):
                with torch.no_grad():
                    return eager(torch.from_numpy(x))

            candidates["torch"] = run_eager
        medians = interleaved_medians(candidates, arguments.rounds, repeat=3)
        if "torch" in medians:
            print(f"  (PyTorch eager, the same network with its own random weights: {medians['torch'] * 1000:.1f} ms)")
        ratios[name] = medians["cnnx"] / medians["ort"]
        speed = flops(graph) / medians["cnnx"] / 1e9
        print(f"{name:28s} {medians['cnnx'] * 1000:7.1f}ms {medians['ort'] * 1000:7.1f}ms {ratios[name]:5.2f}x "
              f"{speed:8.0f} {speed / rate:7.0%}")
    geomean = math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios))
    print(f"\ngeometric mean cnnx / ONNX Runtime: {geomean:.2f}x (target: at most 1.0x; each model at most 1.5x, "
          "ResNet-50 at most 0.9x)")
    photo = folder / "photo.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(1).integers(0, 255, (480, 640, 3), np.uint8)).save(photo)
    model = folder / "resnet50.onnx"
    if model.exists():
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnx", "pipeline", str(photo), "--model", str(model), "-o",
                        str(folder / "run"), "-q", "--preprocess", "imagenet"], check=True, capture_output=True)
        print(f"cnnx pipeline photo --model resnet50.onnx, whole process: {time.perf_counter() - start:.2f} s "
              "(target: under 3 s)")


if __name__ == "__main__":
    main()
