"""Training the shipped shapes model with numpy alone: the lesson's exact flow, learned.

conv 1->8 3x3 -> relu -> maxpool 2 -> conv 8->16 3x3 -> relu -> maxpool 2 ->
fully connected 1024->5 -> softmax.  The forward pass is cnnx's own ops; the
backward passes below follow from them (and are checked against finite
differences in the tests); Adam updates the weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cnnx.compute import ops
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


def linear_backward(
    grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``linear`` with respect to its input, weight and bias."""
    return grad_out @ weight, grad_out.T @ x, grad_out.sum(axis=0)


def relu_backward(grad_out: np.ndarray, output: np.ndarray) -> np.ndarray:
    """ReLU passes the gradient where it passed the value."""
    return grad_out * (output > 0)


def max_pool2_backward(grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """2x2, stride 2 max pooling: each window's gradient goes to its (first) largest element."""
    N, C, H, W = x.shape
    windows = x.reshape(N, C, H // 2, 2, W // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, H // 2, W // 2, 4)
    winner = windows.argmax(axis=-1)
    grad = np.zeros_like(windows)
    np.put_along_axis(grad, winner[..., None], grad_out[..., None], axis=-1)
    return grad.reshape(N, C, H // 2, W // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, H, W)


def conv_backward(grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, *, need_input: bool = True):
    """Gradients of a stride-1, padding-1, 3x3 ``conv2d``: input, weight and bias.

    The input's is a conv with the kernels turned and transposed.
    """
    windows = sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))  # N C H W 3 3
    grad_weight = np.einsum("nohw,nchwij->ocij", grad_out, windows, optimize=True)
    grad_bias = grad_out.sum(axis=(0, 2, 3))
    grad_input = None
    if need_input:
        turned = np.ascontiguousarray(weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        grad_input = ops.conv2d(grad_out, turned, padding=1)
    return grad_input, grad_weight, grad_bias


def gradients(params: dict, x: np.ndarray, labels: np.ndarray) -> tuple[float, dict]:
    logits, saved = forward(params, x)
    loss, grad = cross_entropy(logits, labels)
    g_flat, g_fc_w, g_fc_b = linear_backward(grad, saved["flat"], params["fc.weight"])
    g = max_pool2_backward(g_flat.reshape(saved["p2"].shape), saved["r2"])
    g = relu_backward(g, saved["r2"])
    g_p1, g_c2_w, g_c2_b = conv_backward(g, saved["p1"], params["conv2.weight"])
    g = relu_backward(max_pool2_backward(g_p1, saved["r1"]), saved["r1"])
    _, g_c1_w, g_c1_b = conv_backward(g, saved["x"], params["conv1.weight"], need_input=False)
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
        for name, grad in grads.items():
            m, v = state.setdefault(name, (np.zeros_like(grad), np.zeros_like(grad)))
            m[...] = self.beta1 * m + (1 - self.beta1) * grad
            v[...] = self.beta2 * v + (1 - self.beta2) * grad * grad
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
