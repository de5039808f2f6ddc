"""PyTorch's answers for the networks the tests check, as small golden files: run where PyTorch is installed.

Builds, with seeded weights, a small image classifier made of every block CNNs
are made of (residual, depthwise-separable with ReLU6, fire,
squeeze-and-excitation, dense, pools with their options), one of the newer
families' blocks (ShuffleNetV2's split and channel shuffle, MobileNetV3's and
EfficientNet's inverted residuals with HardSwish, SiLU and squeeze-excitation,
RegNet's grouped convolutions, ConvNeXt's 7x7 depthwise, LayerNorm, GELU and
layer scale; also exported to take any height and width) and AlexNet's first
layers with LocalResponseNorm, an encoder-decoder with upsampling and the
rarer activations, and the rarer blocks (circular padding, pixel unshuffle,
shrinks, power-average pooling, rolls); exports each with PyTorch's TorchScript exporter
and its default torch.export-based one (onnxscript); and writes into
tests/goldens/ the ONNX files and, in answers.npz, seeded inputs with
PyTorch's outputs for them and the gradients of one class's logit with
respect to them (torch.autograd), for the reverse pass.  The tests check cnnx against these answers and
against ONNX Runtime, so the test install needs no PyTorch.

    pip install ".[goldens]"
    python tools/torch_goldens.py            # write tests/goldens/
    python tools/torch_goldens.py --check    # export again and check the stored answers still hold
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

GOLDENS = Path(__file__).resolve().parent.parent / "tests" / "goldens"
NETWORK_SHAPE = (1, 3, 64, 80)
STEM_SHAPE = (1, 3, 40, 48)
OTHER_SHAPE = (1, 3, 45, 61)  # another size, odd on both sides, for the exports of any size


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

    def logits(self, x):
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x):
        return torch.softmax(self.logits(x), 1)


class ShuffleV2(nn.Module):
    """ShuffleNetV2's unit: split the channels in two, one half through 1x1, depthwise 3x3, 1x1, concatenated
    with the other, then the channels shuffled by Reshape/Transpose."""
    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(),
                                    nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h),
                                    nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU())
    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        y = torch.cat([a, self.branch(b)], 1)
        n, c, hh, ww = y.shape
        return y.view(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)

class InvertedResidual(nn.Module):
    """MobileNetV3's (HardSwish, squeeze-excitation with HardSigmoid) or EfficientNet's MBConv (SiLU, sigmoid)."""
    def __init__(self, c, e, act, gate):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), act())
        self.depth = nn.Sequential(nn.Conv2d(e, e, 5, 1, 2, groups=e, bias=False), nn.BatchNorm2d(e), act())
        self.down, self.up, self.gate = nn.Conv2d(e, e // 4, 1), nn.Conv2d(e // 4, e, 1), gate
        self.project = nn.Sequential(nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))
    def forward(self, x):
        y = self.depth(self.expand(x))
        s = self.gate(self.up(nn.functional.relu(self.down(nn.functional.adaptive_avg_pool2d(y, 1)))))
        return x + self.project(y * s)

class RegNetBlock(nn.Module):
    """RegNet's X block: 1x1, grouped 3x3 (groups of 8 channels), 1x1, plus the input."""
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, 1, 1, groups=c // 8, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
    def forward(self, x):
        return nn.functional.relu(x + self.body(x))

class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block: 7x7 depthwise, channels last, LayerNorm, Linear x4, GELU, Linear, layer scale, back."""
    def __init__(self, c):
        super().__init__()
        self.depth = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm, self.one, self.two = nn.LayerNorm(c, eps=1e-6), nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.scale = nn.Parameter(torch.full((c,), 0.5))
    def forward(self, x):
        y = self.depth(x).permute(0, 2, 3, 1)
        y = self.scale * self.two(nn.functional.gelu(self.one(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)

class Families(nn.Module):
    """The blocks of the newer families in one small classifier: ShuffleNetV2, MobileNetV3, EfficientNet, RegNet,
    ConvNeXt."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(ShuffleV2(16), InvertedResidual(16, 32, nn.Hardswish, nn.functional.hardsigmoid),
                                    nn.Conv2d(16, 24, 3, 2, 1), InvertedResidual(24, 48, nn.SiLU, torch.sigmoid),
                                    RegNetBlock(24), ConvNeXtBlock(24))
        self.head = nn.Linear(24, 10)
    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))  # logits, as most exports end


class Decoder(nn.Module):
    """An encoder-decoder of the kind segmentation and detection networks are made of, and the activations other
    networks use: a transposed convolution, upsampling back to a skip connection's size (bilinear), by a factor
    (nearest), bicubic with its corners aligned; ELU, SELU, CELU, Mish, Softplus, Softsign and an elementwise
    maximum; ending in log-softmax, as PyTorch's MNIST example does."""

    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ELU(0.5))
        self.deeper = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.SELU(), nn.Conv2d(8, 8, 3, 2, 1), nn.Mish())
        self.lift = nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1)  # as U-Net and DCGAN decoders upsample
        self.merge = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.CELU(1.5))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        skip = self.down(x)
        deep = self.deeper(skip)
        back = nn.functional.interpolate(self.lift(deep), size=skip.shape[2:], mode="bilinear", align_corners=False)
        merged = self.merge(torch.cat([skip, back], 1))
        smaller = nn.functional.interpolate(merged, scale_factor=0.5, mode="bicubic", align_corners=True)
        mixed = torch.maximum(nn.functional.softplus(self.up(smaller)), nn.functional.softsign(merged))
        return nn.functional.log_softmax(self.head(mixed.mean((2, 3))), dim=1)


class Rarer(nn.Module):
    """The rarer blocks PyTorch networks are built of: circular and reflected padding, pixel unshuffle and shuffle,
    hard and soft shrink, power-average pooling, rolls and flips, a gated linear unit, a per-map standardisation, an
    elementwise maximum over channels."""

    def __init__(self):
        super().__init__()
        self.wrap = nn.Conv2d(3, 8, 3, padding=1, padding_mode="circular")
        self.mirror = nn.Conv2d(32, 16, 3, padding=1, padding_mode="reflect")
        self.unshuffle, self.shuffle = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.pool = nn.LPPool2d(2, 2)
        self.head = nn.Linear(2, 10)

    def forward(self, x):
        x = nn.functional.hardshrink(self.wrap(x), 0.1)
        x = nn.functional.softshrink(self.mirror(self.unshuffle(x)), 0.05)
        x = nn.functional.glu(self.shuffle(x), dim=1)
        x = torch.roll(x, shifts=3, dims=3) + torch.flip(x, dims=[2])
        x = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True)
        x = self.pool(x * x.amax(dim=1, keepdim=True))
        return self.head(x.mean((2, 3)))


def _trained_looking(network: nn.Module, seed: int) -> nn.Module:
    """``network`` in eval mode with batch-norm statistics and scales far from the defaults, as after training
    (its weights were drawn after ``torch.manual_seed(seed)``)."""
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return network.eval()


def _network() -> nn.Module:
    """The network of every common block, seeded."""
    torch.manual_seed(0)
    return _trained_looking(Network(), 0)


def _alexnet_stem() -> nn.Module:
    """AlexNet's first layers, with PyTorch's LocalResponseNorm."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 12, 5, 2, 2), nn.ReLU(), nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0),
                         nn.MaxPool2d(3, 2)).eval()


def _families() -> nn.Module:
    """The newer families' blocks, seeded."""
    torch.manual_seed(4)
    return _trained_looking(Families(), 4)


def _decoder() -> nn.Module:
    """The encoder-decoder, seeded."""
    torch.manual_seed(7)
    return Decoder().eval()


def _rarer() -> nn.Module:
    """The rarer blocks, seeded."""
    torch.manual_seed(8)
    return Rarer().eval()


def _export(network: nn.Module, shape, path: Path, dynamo: bool, any_size: bool = False) -> None:
    """The network as an ONNX file, of its fixed input size or of any height and width; the exporters' own
    warnings and chatter are theirs, not cnnx's."""
    sized = {}
    if any_size and dynamo:
        sized = {"dynamic_shapes": ({2: torch.export.Dim("height", min=32, max=4096),
                                     3: torch.export.Dim("width", min=32, max=4096)},)}
    elif any_size:
        sized = {"input_names": ["x"], "dynamic_axes": {"x": {0: "batch", 2: "height", 3: "width"}}}
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(network, torch.zeros(*shape), str(path), dynamo=dynamo, external_data=False, **sized)


def _answers() -> dict[str, np.ndarray]:
    """Seeded inputs and PyTorch's outputs for them: the network's, and the LocalResponseNorm stem's."""
    network_x = np.random.default_rng(2).random(NETWORK_SHAPE, dtype=np.float32)
    stem_x = np.random.default_rng(5).random(STEM_SHAPE, dtype=np.float32)
    # A photo as cnnx reads it for this network: RGB, each 8-bit value over 255, at the network's own size.
    photo = np.random.default_rng(3).integers(0, 256, (*NETWORK_SHAPE[2:], 3), np.uint8)
    photo_x = photo.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)
    other_x = np.random.default_rng(6).random(OTHER_SHAPE, dtype=np.float32)  # for the models of any size
    answers = {
        "network_logit_grad": _input_gradient(_network().logits, network_x),
        "families_logit_grad": _input_gradient(_families(), network_x),
        "families_other_logit_grad": _input_gradient(_families(), other_x),
        "decoder_logit_grad": _input_gradient(lambda x: _decoder()(x), network_x, before_log_softmax=True),
        "rarer_logit_grad": _input_gradient(_rarer(), network_x),
    }
    with torch.no_grad():
        return answers | {
            "network_x": network_x, "network_y": _network()(torch.from_numpy(network_x)).numpy(),
            "stem_x": stem_x, "stem_y": _alexnet_stem()(torch.from_numpy(stem_x)).numpy(),
            "photo": photo, "photo_y": _network()(torch.from_numpy(photo_x)).numpy(),
            "families_x": network_x, "families_y": _families()(torch.from_numpy(network_x)).numpy(),
            "families_other_x": other_x, "families_other_y": _families()(torch.from_numpy(other_x)).numpy(),
            "decoder_x": network_x, "decoder_y": _decoder()(torch.from_numpy(network_x)).numpy(),
            "rarer_x": network_x, "rarer_y": _rarer()(torch.from_numpy(network_x)).numpy(),
        }


GRADIENT_CLASS = 3  # the class whose logit's gradient with respect to the input is stored


def _input_gradient(logits, x: np.ndarray, before_log_softmax: bool = False) -> np.ndarray:
    """The gradient of class GRADIENT_CLASS's logit with respect to the input, by torch.autograd; for a network
    ending in log-softmax, the logit is the value before it (the log-softmax is undone by a hook on its input)."""
    tensor = torch.tensor(x, requires_grad=True)
    if before_log_softmax:
        seen = []
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda module, inputs, output: seen.append(output) if isinstance(module, nn.Linear) else None)
        try:
            logits(tensor)
        finally:
            handle.remove()
        seen[-1][0, GRADIENT_CLASS].backward()
    else:
        logits(tensor)[0, GRADIENT_CLASS].backward()
    return tensor.grad.numpy()


def write(folder: Path) -> None:
    """Every golden file into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for dynamo, name in ((False, "torchscript"), (True, "torch.export")):
        _export(_network(), NETWORK_SHAPE, folder / f"network-{name}.onnx", dynamo)
        _export(_alexnet_stem(), STEM_SHAPE, folder / f"lrn-{name}.onnx", dynamo)
        _export(_families(), NETWORK_SHAPE, folder / f"families-{name}.onnx", dynamo)
        _export(_families(), NETWORK_SHAPE, folder / f"families-any-size-{name}.onnx", dynamo, any_size=True)
        _export(_decoder(), NETWORK_SHAPE, folder / f"decoder-{name}.onnx", dynamo)
        _export(_rarer(), NETWORK_SHAPE, folder / f"rarer-{name}.onnx", dynamo)
    np.savez_compressed(folder / "answers.npz", **_answers())


def check() -> bool:
    """Export again with the PyTorch installed here: the stored answers are still PyTorch's, and ONNX Runtime
    gives them from the stored files and the new ones alike."""
    import onnxruntime

    stored = dict(np.load(GOLDENS / "answers.npz"))
    fresh = _answers()
    good = all(np.allclose(stored[k], fresh[k], rtol=1e-5, atol=1e-6) for k in stored)
    with tempfile.TemporaryDirectory() as scratch:
        write(Path(scratch))
        checked = (("network", "network_x", "network_y"), ("lrn", "stem_x", "stem_y"),
                   ("families", "families_x", "families_y"),
                   ("families-any-size", "families_other_x", "families_other_y"),
                   ("decoder", "decoder_x", "decoder_y"), ("rarer", "rarer_x", "rarer_y"))
        for kind, x, y in checked:
            for folder in (GOLDENS, Path(scratch)):
                for path in sorted(folder.glob(f"{kind}-t*.onnx")):
                    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                    got = session.run(None, {session.get_inputs()[0].name: stored[x]})[0]
                    same = np.allclose(got, stored[y], rtol=1e-3, atol=1e-4 * float(np.abs(stored[y]).max()))
                    print(f"{path.name:28s} {'agrees' if same else 'DISAGREES'} with the stored answer")
                    good &= same
    return good


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="check the stored files instead of writing them")
    if parser.parse_args().check:
        sys.exit(0 if check() else 1)
    write(GOLDENS)
    print(f"wrote {', '.join(sorted(p.name for p in GOLDENS.iterdir()))} to {GOLDENS}")


if __name__ == "__main__":
    main()
