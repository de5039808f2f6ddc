"""Plain-loop references for the ops, written from the definitions and used only as test oracles.

They index pixels one by one in float64, with the border rules spelled out,
and share no code with cnnx.compute.ops.
"""

import math

import numpy as np


def border_index(index: int, size: int, mode: str) -> int | None:
    """Which input pixel a padded coordinate reads, or None for a zero."""
    if 0 <= index < size:
        return index
    if mode == "zeros":
        return None
    if mode == "replicate":
        return min(max(index, 0), size - 1)
    if mode == "circular":
        return index % size
    if mode == "reflect":  # mirror without repeating the edge pixel: -1 -> 1, size -> size - 2
        period = 2 * (size - 1)
        index = abs(index) % period if period else 0
        return period - index if index >= size else index
    raise ValueError(mode)


def conv2d_loops(x, weight, bias=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1, mode="zeros"):
    """Cross-correlation of (N, C, H, W) with (O, C/groups, kH, kW), pixel by pixel."""
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    N, C, H, W = x.shape
    O, Cg, kh, kw = weight.shape
    (top, bottom), (left, right) = pads
    Hout = (H + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wout = (W + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((N, O, Hout, Wout))
    per_group = O // groups
    for n in range(N):
        for o in range(O):
            g = o // per_group
            for i in range(Hout):
                for j in range(Wout):
                    total = 0.0
                    for c in range(Cg):
                        for ki in range(kh):
                            r = border_index(i * stride[0] + ki * dilation[0] - top, H, mode)
                            for kj in range(kw):
                                s = border_index(j * stride[1] + kj * dilation[1] - left, W, mode)
                                if r is not None and s is not None:
                                    total += weight[o, c, ki, kj] * x[n, g * Cg + c, r, s]
                    out[n, o, i, j] = total + (0.0 if bias is None else bias[o])
    return out


def pool_size(size, kernel, stride, pad, dilation, ceil_mode):
    """Output length from the formula in the PyTorch MaxPool2d documentation."""
    span = (size + 2 * pad - dilation * (kernel - 1) - 1) / stride
    out = (math.ceil(span) if ceil_mode else math.floor(span)) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def max_pool2d_loops(x, kernel, stride, pad, dilation, ceil_mode):
    x = np.asarray(x, np.float64)
    N, C, H, W = x.shape
    Hout = pool_size(H, kernel[0], stride[0], pad[0], dilation[0], ceil_mode)
    Wout = pool_size(W, kernel[1], stride[1], pad[1], dilation[1], ceil_mode)
    out = np.empty((N, C, Hout, Wout))
    for n, c, i, j in np.ndindex(out.shape):
        values = [
            x[n, c, r, s]
            for ki in range(kernel[0])
            for kj in range(kernel[1])
            if 0 <= (r := i * stride[0] - pad[0] + ki * dilation[0]) < H
            and 0 <= (s := j * stride[1] - pad[1] + kj * dilation[1]) < W
        ]
        out[n, c, i, j] = max(values, default=-math.inf)  # a dilated window can fall wholly in the padding
    return out


def avg_pool2d_loops(x, kernel, stride, pad, ceil_mode, count_include_pad):
    """Mean of each window; with count_include_pad the padding counts, but never what lies past it."""
    x = np.asarray(x, np.float64)
    N, C, H, W = x.shape
    Hout = pool_size(H, kernel[0], stride[0], pad[0], 1, ceil_mode)
    Wout = pool_size(W, kernel[1], stride[1], pad[1], 1, ceil_mode)
    out = np.empty((N, C, Hout, Wout))
    for n, c, i, j in np.ndindex(out.shape):
        total, inside, in_padding = 0.0, 0, 0
        for ki in range(kernel[0]):
            for kj in range(kernel[1]):
                r, s = i * stride[0] - pad[0] + ki, j * stride[1] - pad[1] + kj
                if 0 <= r < H and 0 <= s < W:
                    total += x[n, c, r, s]
                    inside += 1
                elif -pad[0] <= r < H + pad[0] and -pad[1] <= s < W + pad[1]:
                    in_padding += 1
        out[n, c, i, j] = total / (inside + in_padding if count_include_pad else inside)
    return out


def conv2d_backward_loops(g, x, weight, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
                          mode="zeros"):
    """Gradients of conv2d_loops's output, each output's gradient sent back along the products that made it:
    to the input pixel each tap read (through the border) times the weight, and to the weight times that pixel."""
    g, x, weight = (np.asarray(a, np.float64) for a in (g, x, weight))
    N, C, H, W = x.shape
    O, Cg, kh, kw = weight.shape
    (top, _), (left, _) = pads
    grad_x, grad_w = np.zeros_like(x), np.zeros_like(weight)
    per_group = O // groups
    for n, o, i, j in np.ndindex(g.shape):
        for c in range(Cg):
            channel = (o // per_group) * Cg + c
            for ki in range(kh):
                r = border_index(i * stride[0] + ki * dilation[0] - top, H, mode)
                for kj in range(kw):
                    s = border_index(j * stride[1] + kj * dilation[1] - left, W, mode)
                    if r is not None and s is not None:
                        grad_x[n, channel, r, s] += g[n, o, i, j] * weight[o, c, ki, kj]
                        grad_w[o, c, ki, kj] += g[n, o, i, j] * x[n, channel, r, s]
    return grad_x, grad_w, g.sum(axis=(0, 2, 3))


def max_pool2d_backward_loops(g, x, kernel, stride, pad, dilation, ceil_mode):
    """Each window's gradient to the first of its largest values, scanning the window row by row."""
    g, x = np.asarray(g, np.float64), np.asarray(x, np.float64)
    H, W = x.shape[2:]
    grad = np.zeros_like(x)
    for n, c, i, j in np.ndindex(g.shape):
        best, where = -math.inf, None
        for ki in range(kernel[0]):
            for kj in range(kernel[1]):
                r, s = i * stride[0] - pad[0] + ki * dilation[0], j * stride[1] - pad[1] + kj * dilation[1]
                if 0 <= r < H and 0 <= s < W and (where is None or x[n, c, r, s] > best):
                    best, where = x[n, c, r, s], (r, s)
        if where is not None:
            grad[n, c, where[0], where[1]] += g[n, c, i, j]
    return grad
