"""A chain of stages made learnable: its convolutions' kernels and a fully connected layer after them, trained by the
reverse pass (``compute.grad``) with Adam, as the lesson says a CNN learns its filters.

``Network.of(pipeline, input_shape, classes, seed)`` starts each convolution from the filters its spec names (a
bank filter as it is, ``random:N`` as He et al. initialise it) and adds the lesson's last steps: flatten, a
fully connected layer to one score per class, and softmax.  ``fit`` trains it on arrays of prepared images.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.base.files import written_whole
from cnnx.base.signals import Stopped
from cnnx.compute import grad as reverse
from cnnx.compute import ops
from cnnx.sources.stages import Activation, Conv, Dense, Flatten, GlobalAvgPool, Pool, Softmax


@dataclass
class Network:
    """The stages (with their learned convolutions' weights in ``params``), then flatten, dense and softmax."""

    stages: tuple
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    params: dict[str, np.ndarray] = field(repr=False)
    flip: bool = False
    stopped: BaseException | None = field(default=None, repr=False)  # a stop that came while it learned
    mean: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32), repr=False)  # of each input channel
    std: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32), repr=False)  # taken off, divided by

    @classmethod
    def of(cls, pipeline, input_shape, classes, seed: int = 0, images: np.ndarray | None = None) -> Network:
        """The network for ``pipeline``'s stages; ``images`` (the training set) give each input channel's mean and
        spread, taken off before the first stage so that learning starts on centred values."""
        stages = tuple(s for s in pipeline.stages if not isinstance(s, (Flatten, Dense, Softmax)))
        params: dict[str, np.ndarray] = {}
        shape = tuple(input_shape)
        rng = np.random.default_rng(seed)
        for k, stage in enumerate(stages):
            if isinstance(stage, Conv):
                banks = stage.banks(shape[0], flip=pipeline.convention == "convolution")
                if any(groups != 1 for _, groups in banks) or len({w.shape[2:] for w, _ in banks}) != 1:
                    raise CnnxError(f"stage {k + 1}: cnnx train learns convolutions whose filters span every input "
                                    "channel and share one size (no combine=depthwise)")
                params[f"conv{k}.weight"] = np.concatenate([w for w, _ in banks]).astype(np.float32)
                params[f"conv{k}.bias"] = np.full(params[f"conv{k}.weight"].shape[0], stage.bias, np.float32)
            elif not isinstance(stage, (Activation, Pool, GlobalAvgPool)):
                raise CnnxError(f"stage {k + 1} ({stage.name}): cnnx train learns conv, activation and pool stages")
            shape = stage.output_shape(shape)
        features = math.prod(shape)
        if features > 1 << 22:
            raise CnnxError(f"the stages leave {features} values for the fully connected layer: add pooling, or "
                            "a smaller --size")
        params["fc.weight"] = (rng.standard_normal((len(classes), features)) * math.sqrt(1 / features)).astype(
            np.float32)
        params["fc.bias"] = np.zeros(len(classes), np.float32)
        mean, std = np.zeros(input_shape[0], np.float32), np.ones(input_shape[0], np.float32)
        if images is not None and len(images):
            mean = images.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
            std = np.maximum(images.std(axis=(0, 2, 3), dtype=np.float64), 1e-3).astype(np.float32)
        return cls(stages, tuple(input_shape), tuple(classes), params, pipeline.convention == "convolution",
                   mean=mean, std=std)

    def run_order(self) -> list[int]:
        """The stages' indices in the order they are computed: a ReLU (or leaky ReLU) followed by a max pool is
        computed after it, on a quarter of the values.  The two commute exactly, in floating point too (the
        largest of f(x) is f of the largest where f is x, 0 or a positive multiple of x), and so do their
        gradients: where f rises the same value is the largest, and where ReLU is flat its gradient is zero
        whichever value the pool picked."""
        order = list(range(len(self.stages)))
        for k in range(len(self.stages) - 1):
            first, then = self.stages[k], self.stages[k + 1]
            rising = isinstance(first, Activation) and (first.function == "relu" or
                                                        (first.function == "leaky_relu" and first.slope >= 0))
            if rising and isinstance(then, Pool) and then.kind == "max" and order[k] == k:
                order[k], order[k + 1] = k + 1, k
        return order

    def logits(self, x: np.ndarray) -> tuple[np.ndarray, list]:
        """Scores (N, classes) for a batch (N, C, H, W), and what the backward pass needs: the input of each stage
        in ``run_order``, then the last output."""
        saved = []
        x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        for k in self.run_order():
            saved.append(x)
            x = self._apply(k, self.stages[k], x)
        saved.append(x)
        return ops.linear(x.reshape(len(x), -1), self.params["fc.weight"], self.params["fc.bias"]), saved

    def _apply(self, k: int, stage, x: np.ndarray) -> np.ndarray:
        if isinstance(stage, Conv):
            return ops.conv2d(x, self.params[f"conv{k}.weight"], self.params[f"conv{k}.bias"], stride=stage.stride,
                              padding=stage.padding, dilation=stage.dilation, padding_mode=stage.padding_mode)
        if isinstance(stage, GlobalAvgPool):
            return x.mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
        if isinstance(stage, Pool):
            pool = ops.max_pool2d if stage.kind == "max" else ops.avg_pool2d
            return pool(x, stage.size, stage.step, stage.padding)
        return stage.apply(x)

    def gradients(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, dict, np.ndarray]:
        """The batch's mean cross-entropy, every parameter's gradient, and the logits."""
        scores, saved = self.logits(x)
        log_p = ops.log_softmax(scores)
        n = len(labels)
        loss = -float(log_p[np.arange(n), labels].mean())
        g = np.exp(log_p)
        g[np.arange(n), labels] -= 1
        g /= n
        grads: dict[str, np.ndarray] = {}
        flat = saved[-1].reshape(n, -1)
        g_flat, grads["fc.weight"], grads["fc.bias"] = reverse.linear_backward(g, flat, self.params["fc.weight"])
        g = g_flat.reshape(saved[-1].shape)
        order = self.run_order()
        for place in range(len(order) - 1, -1, -1):
            k = order[place]
            stage, before, after = self.stages[k], saved[place], saved[place + 1]
            if isinstance(stage, Conv):
                g_input, grads[f"conv{k}.weight"], grads[f"conv{k}.bias"] = reverse.conv2d_backward(
                    g, before, self.params[f"conv{k}.weight"], stage.stride, stage.padding, stage.dilation,
                    padding_mode=stage.padding_mode, need_input=k > 0)  # the image itself needs no gradient
                g = g_input
            elif isinstance(stage, GlobalAvgPool):
                g = np.broadcast_to(g / np.float32(before.shape[2] * before.shape[3]), before.shape).astype(np.float32)
            elif isinstance(stage, Pool):
                g = (reverse.max_pool2d_backward(g, before, stage.size, stage.step, stage.padding, output=after)
                     if stage.kind == "max" else
                     reverse.avg_pool2d_backward(g, before.shape, stage.size, stage.step, stage.padding))
            else:
                g = reverse.activation_backward(stage.function, g, before, after, slope=stage.slope)
        return loss, grads, scores

    def probabilities(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        return np.concatenate([ops.softmax(self.logits(x[k : k + batch])[0]) for k in range(0, len(x), batch)])


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20
    batch: int = 32
    rate: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 5  # epochs without a better validation loss before stopping
    augment: bool = True
    seed: int = 0
    optimizer: str = "adam"  # or "sgd", with momentum


@dataclass
class Epoch:
    number: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float
    kernels: dict = field(default_factory=dict, repr=False)  # each convolution's weights after the epoch, by name


def fit(network: Network, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
        settings: TrainSettings, report: Callable[[Epoch], None] | None = None, *,
        checkpoint: Path | None = None, resume: bool = False) -> tuple[dict, list[Epoch]]:
    """Adam (or SGD with momentum) on shuffled batches (flipped and shifted at random where ``augment``), weight
    decay on the weights, early stopping on the validation loss; the best parameters and every epoch.
    Deterministic for a seed.

    After each epoch everything needed to go on is saved to ``checkpoint`` (whole); ``resume`` goes on from it,
    as if never stopped.  Stopped (Ctrl-C, SIGTERM) between or within epochs, it returns what it has, and
    ``network.stopped`` holds the stop to raise once the best parameters are written."""
    progress = Progress.load(checkpoint, network) if resume else Progress(dict(network.params))
    network.params = progress.params
    rng = np.random.default_rng(settings.seed)
    if progress.rng_state is not None:
        rng.bit_generator.state = progress.rng_state
    optimizer = (Adam(settings.rate) if settings.optimizer == "adam" else SGD(settings.rate))
    optimizer.step = progress.step
    try:
        _epochs(network, train, val, settings, report, rng, optimizer, progress, checkpoint)
    except (KeyboardInterrupt, Stopped) as stop:
        network.stopped = stop
    return progress.best or dict(network.params), progress.history


def _epochs(network, train, val, settings, report, rng, optimizer, progress: Progress, checkpoint) -> None:
    images, labels = train
    convs = [name for name in network.params if name.startswith("conv") and name.endswith("weight")]
    for number in range(len(progress.history) + 1, settings.epochs + 1):
        if progress.since >= settings.patience:
            break
        start, total, right = time.perf_counter(), 0.0, 0
        order = rng.permutation(len(images))
        for k in range(0, len(images), settings.batch):
            chosen = order[k : k + settings.batch]
            batch = _augmented(images[chosen], rng) if settings.augment else images[chosen]
            loss, grads, scores = network.gradients(batch, labels[chosen])
            for name, g in grads.items():
                if name.endswith("weight") and settings.weight_decay:
                    g += np.float32(settings.weight_decay) * network.params[name]
            optimizer.update(network.params, grads, progress.state)
            total += loss * len(chosen)
            right += int((scores.argmax(axis=1) == labels[chosen]).sum())
        val_loss, val_accuracy = evaluate(network, *val)
        epoch = Epoch(number, total / len(images), right / len(images), val_loss, val_accuracy,
                      time.perf_counter() - start, {name: network.params[name].copy() for name in convs})
        progress.history.append(epoch)
        if val_loss < progress.best_loss - 1e-6 or math.isnan(val_loss):
            progress.best, progress.best_loss, progress.since = {k: v.copy() for k, v in network.params.items()}, \
                val_loss, 0
        else:
            progress.since += 1
        progress.step, progress.rng_state = optimizer.step, rng.bit_generator.state
        if checkpoint is not None:
            progress.save(checkpoint)
        if report:
            report(epoch)


@dataclass
class Adam:
    """Adam (Kingma & Ba 2015) with its usual constants."""

    rate: float = 3e-3
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    step: int = 0

    def update(self, params: dict, grads: dict, state: dict) -> None:
        self.step += 1
        for name, gradient in grads.items():
            m, v = state.setdefault(name, (np.zeros_like(gradient), np.zeros_like(gradient)))
            m[...] = self.beta1 * m + (1 - self.beta1) * gradient
            v[...] = self.beta2 * v + (1 - self.beta2) * gradient * gradient
            m_hat = m / (1 - self.beta1**self.step)
            v_hat = v / (1 - self.beta2**self.step)
            params[name] -= (self.rate * m_hat / (np.sqrt(v_hat) + self.epsilon)).astype(np.float32)


@dataclass
class SGD:
    """Stochastic gradient descent with momentum (Polyak), the classic alternative to Adam."""

    rate: float = 0.01
    momentum: float = 0.9
    step: int = 0

    def update(self, params: dict, grads: dict, state: dict) -> None:
        self.step += 1
        for name, gradient in grads.items():
            velocity, unused = state.setdefault(name, (np.zeros_like(gradient), np.zeros(0, np.float32)))
            velocity[...] = self.momentum * velocity + gradient
            params[name] -= (self.rate * velocity).astype(np.float32)


@dataclass
class Progress:
    """Where learning stands after an epoch: the parameters, the best so far, the optimizer's state and the random
    generator's, and every epoch; saved whole and read back by ``--resume``."""

    params: dict
    best: dict | None = None
    best_loss: float = math.inf
    since: int = 0
    step: int = 0
    state: dict = field(default_factory=dict)
    rng_state: dict | None = None
    history: list = field(default_factory=list)

    def save(self, path: Path) -> None:
        arrays = {f"params/{k}": v for k, v in self.params.items()}
        arrays.update({f"best/{k}": v for k, v in (self.best or {}).items()})
        for name, (first, second) in self.state.items():
            arrays[f"first/{name}"], arrays[f"second/{name}"] = first, second
        arrays.update({f"kernels/{e.number}/{name}": w for e in self.history for name, w in e.kernels.items()})
        epochs = [{k: getattr(e, k) for k in ("number", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")}
                  for e in self.history]
        meta = {"best_loss": self.best_loss, "since": self.since, "step": self.step, "rng": self.rng_state,
                "epochs": epochs}
        with written_whole(path) as stream:
            np.savez(stream, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: Path | None, network: Network) -> Progress:
        if path is None or not Path(path).is_file():
            raise CnnxError(f"{path}: no checkpoint to resume from (one is written after every epoch)")
        try:
            with np.load(path, allow_pickle=False) as held:
                meta = json.loads(str(held["meta"]))
                part = {prefix: {k.split("/", 1)[1]: held[k] for k in held.files if k.startswith(prefix + "/")}
                        for prefix in ("params", "best", "first", "second", "kernels")}
        except (OSError, ValueError, KeyError) as error:
            raise CnnxError(f"{path}: not a checkpoint cnnx wrote ({error})") from None
        if {k: v.shape for k, v in part["params"].items()} != {k: v.shape for k, v in network.params.items()}:
            raise CnnxError(f"{path}: a checkpoint of another network (its stages, size or classes differ)")
        kernels: dict[str, dict] = {}
        for key, weights in part["kernels"].items():
            number, _, name = key.partition("/")
            if name:  # a checkpoint of an older cnnx kept the first layer's alone, unnamed: its sheets are not drawn
                kernels.setdefault(number, {})[name] = weights
        history = [Epoch(**{**e, "kernels": kernels.get(str(e["number"]), {})}) for e in meta["epochs"]]
        return cls(part["params"], part["best"] or None, meta["best_loss"], meta["since"], meta["step"],
                   {k: (part["first"][k], part["second"][k]) for k in part["first"]}, meta["rng"], history)


def evaluate(network: Network, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The mean cross-entropy and the accuracy on a set (nan, nan for an empty one)."""
    if not len(images):
        return math.nan, math.nan
    p = network.probabilities(images)
    loss = max(0.0, -float(np.log(np.maximum(p[np.arange(len(labels)), labels], 1e-12)).mean()))  # no -0.000
    return loss, float((p.argmax(axis=1) == labels).mean())


def _augmented(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light augmentation: each image flipped left to right at random, shifted by up to an eighth of its side
    (the border repeated), its brightness scaled by 0.9 to 1.1."""
    out = batch.copy()
    flips = rng.random(len(batch)) < 0.5
    out[flips] = out[flips][..., ::-1]
    H, W = batch.shape[2:]
    for k in range(len(batch)):
        dy, dx = rng.integers(-(H // 8), H // 8 + 1), rng.integers(-(W // 8), W // 8 + 1)
        rows = np.clip(np.arange(H) - dy, 0, H - 1)
        cols = np.clip(np.arange(W) - dx, 0, W - 1)
        out[k] = out[k][:, rows][:, :, cols] * np.float32(rng.uniform(0.9, 1.1))
    return out


def calibrate(network: Network, images: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017) on the validation set: the last layer divided by the temperature whose
    probabilities fit it best, so that a confident answer means what it says; the temperature (1 with no set)."""
    if not len(images):
        return 1.0
    scores = np.concatenate([network.logits(images[k : k + 256])[0] for k in range(0, len(images), 256)])
    scores = scores.astype(np.float64)
    temperatures = np.geomspace(0.25, 20, 400)
    losses = [-ops.log_softmax(scores / t)[np.arange(len(labels)), labels].mean() for t in temperatures]
    best = float(temperatures[int(np.argmin(losses))])
    network.params["fc.weight"] = (network.params["fc.weight"] / best).astype(np.float32)
    network.params["fc.bias"] = (network.params["fc.bias"] / best).astype(np.float32)
    return best
