"""Time the reverse pass: ResNet-50's input gradient, Grad-CAM and integrated gradients against cnnx's own forward
pass (and PyTorch's forward and backward where installed), in one interleaved run.

    python benchmarks/bench_why.py
    python benchmarks/bench_why.py --rounds 7

ResNet-50 is the light model-zoo graph with seeded random weights, at 224x224,
batch 1. Targets: the input gradient and Grad-CAM at most 3x cnnx's forward
and at most 1.5x PyTorch's forward and backward; integrated gradients with 32
steps at most 40x the forward; 256 steps of activation maximisation for a
channel of the third block stage (layer3's output, the stage at a sixteenth
of the input's side) at 128x128 in under 60 s, the forward stopping there.
"""

from __future__ import annotations

# isort: off
import cnnx  # noqa: F401  (first, as in the command: it sets OpenBLAS's idle-thread timeout before numpy loads it)
# isort: on

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from interleaved import interleaved_medians

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def torch_forward_backward():
    """PyTorch's ResNet-50 (bench_onnx's), forward and backward to the input, or None without PyTorch."""
    from bench_onnx import torch_resnet50

    network = torch_resnet50()
    if network is None:
        return None
    import torch

    x = torch.rand(1, 3, 224, 224, requires_grad=True)

    def run():
        x.grad = None
        network(x)[0, 3].backward()

    return run


def any_size_copy(path: Path) -> Path:
    """The model with its input's height and width left open and its last pool global (as torchvision's ResNet-50
    exports its adaptive pool), so it runs at 128x128."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for k, node in enumerate(model.graph.node):
        if node.op_type == "AveragePool":
            model.graph.node[k].CopyFrom(helper.make_node("GlobalAveragePool", node.input, node.output, node.name))
    del model.graph.value_info[:]
    copy = path.with_name("resnet50-any-size.onnx")
    onnx.save(model, str(copy))
    return copy


def activation_maximisation(path: Path) -> float:
    """Seconds for 256 steps at 128x128 on the liveliest of the first 16 channels of the third block stage."""
    import time

    from cnnx.explain.features import FeatureSettings, visualise
    from cnnx.sources.onnx_file import load_graph
    from cnnx.sources.reverse import Target

    graph = load_graph(any_size_copy(path))
    shape = graph.input_shape((3, 128, 128))
    third = next(p.index for p in graph.plan(shape) if p.shape[1] * 16 == shape[1])
    prepared = graph.preprocess
    probe = prepared.values(np.random.default_rng(0).random(shape, dtype=np.float32))
    scores = [graph.reverse(probe, Target(stage=third, channel=c), gradient=False).score for c in range(16)]
    target = Target(stage=third, channel=int(np.argmax(scores)))
    start = time.perf_counter()
    visualise(graph, target, shape, FeatureSettings(steps=256), (prepared.values, prepared.values_backward))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    from onnx_models import with_random_weights

    from cnnx.explain.why import WhySettings, explain_why
    from cnnx.sources.onnx_file import load_graph
    from cnnx.sources.reverse import Target

    path = with_random_weights("resnet50", Path(tempfile.mkdtemp()))
    graph = load_graph(path)
    x = np.random.default_rng(0).random(graph.input_shape_, dtype=np.float32)
    target = Target(label=3)
    candidates = {
        "forward": lambda: [None for _ in graph.evaluate(x)],
        "input gradient": lambda: graph.reverse(x, target),
        "Grad-CAM": lambda: explain_why(graph, x, target, WhySettings("gradcam"), ""),
    }
    torch_run = torch_forward_backward()
    if torch_run is not None:
        candidates["PyTorch forward+backward"] = torch_run
    medians = interleaved_medians(candidates, rounds)
    steps = interleaved_medians({"integrated gradients, 32 steps": lambda: explain_why(
        graph, x, target, WhySettings("integrated-gradients", steps=32), "")}, 1)
    medians.update(steps)
    forward = medians["forward"]
    for name, seconds in medians.items():
        print(f"{name:32s} {seconds * 1000:8.1f} ms  {seconds / forward:5.2f}x the forward")
    if torch_run is not None:
        for name in ("input gradient", "Grad-CAM"):
            print(f"{name} / PyTorch forward+backward: {medians[name] / medians['PyTorch forward+backward']:.2f}x "
                  "(target: at most 1.5x)")
    print("targets: input gradient and Grad-CAM at most 3x the forward; integrated gradients at most 40x")
    print(f"activation maximisation, 256 steps, third block stage at 128x128: {activation_maximisation(path):.1f} s "
          "(target: under 60 s)")


if __name__ == "__main__":
    main()
