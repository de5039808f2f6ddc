"""Networks built in PyTorch and exported with torch.onnx.export run in cnnx as PyTorch and ONNX Runtime run them.

Each block CNNs are made of (residual, depthwise-separable with ReLU6,
fire, squeeze-and-excitation, dense, pools with their options) is
exported with the TorchScript exporter and, where onnxscript is installed,
with the torch.export-based one that is PyTorch's default; cnnx's values are
checked against PyTorch's output and against ONNX Runtime at every node.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from test_graph import agree, ours, reference  # noqa: E402
from torch import nn  # noqa: E402

from cnnx.sources.graph import load_graph  # noqa: E402


class Residual(nn.Module):
    """conv, batch norm, ReLU, conv, batch norm, plus the input, ReLU (ResNet's basic block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.a, self.na = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.b, self.nb = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(self.nb(self.b(torch.relu(self.na(self.a(x))))) + x)


class Separable(nn.Module):
    """A depthwise 3x3 (stride 2) and a pointwise 1x1, each with batch norm and ReLU6 (MobileNet's)."""

    def __init__(self, channels: int, out: int):
        super().__init__()
        self.depth = nn.Sequential(nn.Conv2d(channels, channels, 3, 2, 1, groups=channels), nn.BatchNorm2d(channels),
                                   nn.ReLU6())
        self.point = nn.Sequential(nn.Conv2d(channels, out, 1), nn.BatchNorm2d(out), nn.ReLU6())

    def forward(self, x):
        return self.point(self.depth(x))


class Fire(nn.Module):
    """Squeeze with a 1x1, expand with a 1x1 and a 3x3 side by side, concatenated (SqueezeNet's)."""

    def __init__(self, channels: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Conv2d(channels, squeeze, 1)
        self.one, self.three = nn.Conv2d(squeeze, expand, 1), nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        s = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.one(s)), torch.relu(self.three(s))], 1)


class SqueezeExcite(nn.Module):
    """The channels weighed by a gate computed from their means: pool, 1x1 down, ReLU, 1x1 up, hard sigmoid."""

    def __init__(self, channels: int):
        super().__init__()
        self.down, self.up = nn.Conv2d(channels, channels // 4, 1), nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x):
        gate = nn.functional.hardsigmoid(self.up(torch.relu(self.down(nn.functional.adaptive_avg_pool2d(x, 1)))))
        return x * gate


class Dense(nn.Module):
    """Each layer's maps added to all before them (DenseNet's)."""

    def __init__(self, channels: int, growth: int):
        super().__init__()
        self.first = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, growth, 3, padding=1))
        self.second = nn.Sequential(nn.BatchNorm2d(channels + growth), nn.ReLU(),
                                    nn.Conv2d(channels + growth, growth, 3, padding=1))

    def forward(self, x):
        x = torch.cat([x, self.first(x)], 1)
        return torch.cat([x, self.second(x)], 1)


class Network(nn.Module):
    """Every block above in one small image classifier, with pools with their options.

    PyTorch's LocalResponseNorm is tested on its own: it exports not as ONNX's LRN but as its arithmetic.
    """

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.LeakyReLU(0.1),
                                  nn.MaxPool2d(3, 2, ceil_mode=True))
        self.blocks = nn.Sequential(Residual(16), Separable(16, 24), Fire(24, 8, 16), SqueezeExcite(32),
                                    nn.AvgPool2d(3, 1, padding=1, count_include_pad=False), Dense(32, 8),
                                    nn.Hardswish())
        self.head = nn.Linear(48, 10)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return torch.softmax(self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)), 1)


def _network() -> nn.Module:
    """The network with seeded weights and batch-norm statistics far from the defaults, as after training."""
    torch.manual_seed(0)
    network = Network()
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return network.eval()


def _exported(path, dynamo: bool, network=None, shape=(1, 3, 64, 80)):
    """The network as an ONNX file; the exporters' own warnings (tracing, deprecation) are theirs, not cnnx's."""
    import contextlib
    import io
    import warnings

    if dynamo:
        pytest.importorskip("onnxscript")
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(network or _network(), torch.zeros(*shape), str(path), dynamo=dynamo, external_data=False)
    return path


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "torch.export"])
@pytest.mark.slow
def test_a_pytorch_network_runs_as_pytorch_and_onnx_runtime_run_it(tmp_path, dynamo):
    """The exported network's answer is PyTorch's, and every node's value is ONNX Runtime's."""
    path = _exported(tmp_path / "network.onnx", dynamo)
    graph = load_graph(path, layers="all")
    x = np.random.default_rng(2).random((1, 3, 64, 80), dtype=np.float32)
    got = ours(graph, x)
    with torch.no_grad():
        want = _network()(torch.from_numpy(x)).numpy()
    assert agree(got[graph.output_name].astype(np.float32), want)
    runtime = reference(path, x)
    compared = [key for key in runtime if key in got]
    assert len(compared) > len(graph.nodes) // 2
    for key in compared:
        assert agree(np.asarray(got[key], np.float32), runtime[key]), key


@pytest.mark.slow
def test_a_pytorch_network_through_the_command(tmp_path):
    """cnnx pipeline on the exported network: every layer written, the answer the model's top class."""
    from PIL import Image
    from typer.testing import CliRunner

    from cnnx.app.cli import app

    path = _exported(tmp_path / "network.onnx", dynamo=False)
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 80, 3), np.uint8)).save(photo)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pipeline", str(photo), "--model", str(path), "-o", str(out), "--save-raw",
                                      "--layers", "all"])
    assert result.exit_code == 0, result.output
    first = np.load(out / "00_input" / "stage.npy")
    with torch.no_grad():
        want = _network()(torch.from_numpy(first[None])).numpy().ravel()
    last = sorted(p for p in out.iterdir() if p.is_dir())[-1]
    assert agree(np.load(last / "stage.npy").ravel(), want)
    assert f"class {int(want.argmax())}" in result.output


def _alexnet_stem() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 12, 5, 2, 2), nn.ReLU(), nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0),
                         nn.MaxPool2d(3, 2)).eval()


@pytest.mark.slow
def test_a_pytorch_local_response_norm_runs_as_pytorch_runs_it(tmp_path):
    """AlexNet's first layers with PyTorch's LocalResponseNorm, which its default exporter writes as its arithmetic
    (the squares pooled over neighbouring channels as a 3-D average pool, a power, a division): PyTorch's values."""
    path = _exported(tmp_path / "lrn.onnx", True, _alexnet_stem(), (1, 3, 40, 48))
    graph = load_graph(path, layers="all")
    assert "AveragePool" in {n.op for n in graph.nodes} and "Pow" in {n.op for n in graph.nodes}
    x = np.random.default_rng(5).random((1, 3, 40, 48), dtype=np.float32)
    with torch.no_grad():
        want = _alexnet_stem()(torch.from_numpy(x)).numpy()
    assert agree(np.asarray(ours(graph, x)[graph.output_name], np.float32), want)


def test_a_control_flow_export_is_refused_naming_the_op(tmp_path):
    """The TorchScript exporter writes LocalResponseNorm with an If (a branch on the input's rank): refused before
    any work, naming each op cnnx does not run and a node of it."""
    from cnnx.base.errors import CnnxError

    path = _exported(tmp_path / "lrn.onnx", False, _alexnet_stem(), (1, 3, 40, 48))
    with pytest.raises(CnnxError, match=r"op .*If \(node [^)]+\).* are not supported"):
        load_graph(path)
