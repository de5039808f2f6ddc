"""Training the shipped shapes model with numpy alone: the lesson's exact flow, learned.

conv 1->8 3x3 -> relu -> maxpool 2 -> conv 8->16 3x3 -> relu -> maxpool 2 ->
fully connected 1024->5 -> softmax.  The forward pass is cnnx's own ops, the
backward pass their vector-Jacobian products (``compute.grad``); Adam updates
the weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from cnnx.compute import grad, ops
from cnnx.sources.shapes import CLASSES, CONTENT_SIZE, INPUT_SIZE, dataset


def init_params(seed: int) -> dict[str, np.ndarray]:
    """He-initialised weights (normal, variance 2 / fan-in) and zero biases."""
    rng = np.random.default_rng(seed)

    def he(*shape):
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    flat = 16 * (INPUT_SIZE // 4) ** 2
    return {
        "conv1.weight": he(8, 1, 3, 3), "conv1.bias": np.zeros(8, np.float32),
        "conv2.weight": he(16, 8, 3, 3), "conv2.bias": np.zeros(16, np.float32),
        "fc.weight": he(len(CLASSES), flat), "fc.bias": np.zeros(len(CLASSES), np.float32),
    }


def forward(params: dict, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """Logits for a batch (N, 1, 32, 32), and what the backward pass needs."""
    a1 = ops.conv2d(x, params["conv1.weight"], params["conv1.bias"], padding=1)
    r1 = ops.relu(a1)
    p1 = ops.max_pool2d(r1, 2)
    a2 = ops.conv2d(p1, params["conv2.weight"], params["conv2.bias"], padding=1)
    r2 = ops.relu(a2)
    p2 = ops.max_pool2d(r2, 2)
    flat = p2.reshape(len(x), -1)
    logits = ops.linear(flat, params["fc.weight"], params["fc.bias"])
    return logits, {"x": x, "r1": r1, "p1": p1, "r2": r2, "p2": p2, "flat": flat}


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy loss and its gradient with respect to the logits: (softmax - one-hot) / N."""
    log_p = ops.log_softmax(logits)
    n = len(labels)
    loss = -float(log_p[np.arange(n), labels].mean())
    grad = np.exp(log_p)
    grad[np.arange(n), labels] -= 1
    return loss, grad / n


def gradients(params: dict, x: np.ndarray, labels: np.ndarray) -> tuple[float, dict]:
    """The mean loss of a batch and its gradient with respect to every weight, by the reverse pass."""
    logits, saved = forward(params, x)
    loss, g = cross_entropy(logits, labels)
    g_flat, g_fc_w, g_fc_b = grad.linear_backward(g, saved["flat"], params["fc.weight"])
    g = grad.max_pool2d_backward(g_flat.reshape(saved["p2"].shape), saved["r2"], 2)
    g = grad.activation_backward("relu", g, saved["r2"])
    g_p1, g_c2_w, g_c2_b = grad.conv2d_backward(g, saved["p1"], params["conv2.weight"], padding=1)
    g = grad.activation_backward("relu", grad.max_pool2d_backward(g_p1, saved["r1"], 2), saved["r1"])
    _, g_c1_w, g_c1_b = grad.conv2d_backward(g, saved["x"], params["conv1.weight"], padding=1, need_input=False)
    return loss, {
        "conv1.weight": g_c1_w,
        "conv1.bias": g_c1_b,
        "conv2.weight": g_c2_w,
        "conv2.bias": g_c2_b,
        "fc.weight": g_fc_w,
        "fc.bias": g_fc_b,
    }


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


def predict(params: dict, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """Class probabilities for prepared inputs (N, 1, 32, 32)."""
    return np.concatenate([ops.softmax(forward(params, x[k : k + batch])[0]) for k in range(0, len(x), batch)])


def accuracy(params: dict, x: np.ndarray, labels: np.ndarray) -> float:
    return float((predict(params, x).argmax(axis=1) == labels).mean())


def calibrated(params: dict, x: np.ndarray, labels: np.ndarray) -> tuple[dict, float]:
    """The weights with the logits divided by the temperature that fits held-out shapes best, and that temperature.

    Temperature scaling (Guo et al. 2017): one number that makes the
    probabilities honest (a model right 90% of the time says about 90%),
    found by the least cross-entropy over a grid.  Dividing the last layer's
    weights and bias by it leaves every answer the same.
    """
    logits = np.concatenate([forward(params, x[k : k + 500])[0] for k in range(0, len(x), 500)]).astype(np.float64)
    temperatures = np.geomspace(0.25, 20, 400)
    losses = [-ops.log_softmax(logits / t)[np.arange(len(labels)), labels].mean() for t in temperatures]
    best = float(temperatures[int(np.argmin(losses))])
    scaled = dict(params, **{"fc.weight": params["fc.weight"] / best, "fc.bias": params["fc.bias"] / best})
    return {k: v.astype(np.float32) for k, v in scaled.items()}, best


def train(
    *, samples: int = 24000, epochs: int = 8, batch: int = 64, seed: int = 7, rate: float = 3e-3, log=print
) -> tuple[dict, list[float]]:
    """Train from scratch on ``samples`` generated shapes; the loss of every epoch, in order."""
    images, labels = dataset(samples, seed)
    params = init_params(seed)
    optimizer, state, rng = Adam(rate), {}, np.random.default_rng(seed)
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(samples)
        total, start = 0.0, time.perf_counter()
        if epochs > 4 and epoch == epochs - 2:
            optimizer.rate /= 3  # settle for the last two epochs
        for k in range(0, samples, batch):
            chosen = order[k : k + batch]
            loss, grads = gradients(params, images[chosen], labels[chosen])
            optimizer.update(params, grads, state)
            total += loss * len(chosen)
        losses.append(total / samples)
        log(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f} ({time.perf_counter() - start:.1f} s)")
    return params, losses


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
        "training": {"seed": seed, "samples": samples, "epochs": epochs, "optimizer": "Adam", "batch": 64},
        "test": {"seed": test_seed, "accuracy": test_accuracy},
        "calibration": {"temperature": temperature, "seed": held_out_seed, "method": "temperature scaling"},
    }
