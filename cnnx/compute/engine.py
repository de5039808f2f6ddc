"""How the ops run fast: cache-sized row strips on the runtime's threads, contiguous tap views.

The output rows are cut into a fixed grid of strips whose working set fits in
the L2 cache.  Each strip gathers the padded input rows it needs into a
buffer of its own (so the image is never padded as a whole), then visits the
kernel's taps.  With stride 1 a strip is one flat array: the tap at (i, j) is
the contiguous slice starting ``i*dilation*W_padded + j*dilation`` elements in,
and each output row carries ``W_padded - W_out`` wrapped columns that are
dropped when the strip is stored.

Threads take contiguous runs of the strip grid.  A strip computes the same
numbers whichever thread runs it and however many there are, so results do
not depend on the thread count.  numpy releases the GIL inside its loops and
BLAS calls, which is what lets two Python threads use two cores.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cnnx.base import runtime
from cnnx.base.runtime import buffer, run_tasks, strips


def border_map(index: np.ndarray, size: int, mode: str) -> np.ndarray:
    """The input index each padded coordinate reads, as ``torch.nn.functional.pad`` does; -1 reads the fill value."""
    if mode == "zeros":
        return np.where((index >= 0) & (index < size), index, -1)
    if mode == "replicate":
        return np.clip(index, 0, size - 1)
    if mode == "circular":
        return index % size
    period = 2 * (size - 1)  # reflect: mirror about the edge pixels without repeating them
    if period == 0:
        return np.zeros_like(index)
    folded = np.abs(index) % period
    return np.where(folded >= size, period - folded, folded)


def border_columns(W: int, pads, mode: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Where the left and right padding columns read from, as indices into a padded row; None for a fill."""
    (_, _), (left, right) = pads
    if mode == "zeros" or not (left or right):
        return None
    return left + border_map(np.arange(-left, 0), W, mode), left + border_map(np.arange(W, W + right), W, mode)


def gather_rows(
    x: np.ndarray, first: int, stop: int, pads, mode: str, fill: float, columns, out: np.ndarray
) -> np.ndarray:
    """Copy padded rows ``first:stop`` of the (C, H, W) image into ``out`` (C, stop-first, W_padded).

    ``columns`` is what ``border_columns`` gave for this image, padding and mode.
    """
    (top, _), (left, right) = pads
    H, W = x.shape[1:]
    lo, hi = max(first, top), min(stop, top + H)
    if lo < hi:
        out[:, lo - first : hi - first, left : left + W] = x[:, lo - top : hi - top]
    for row in [*range(first, min(lo, stop)), *range(max(hi, first), stop)]:
        source = int(border_map(np.array([row - top]), H, mode)[0])
        out[:, row - first, left : left + W] = fill if source < 0 else x[:, source]
    if columns is not None:
        out[:, :, :left] = out[:, :, columns[0]]
        out[:, :, left + W :] = out[:, :, columns[1]]
    elif left or right:
        out[:, :, :left] = fill
        out[:, :, left + W :] = fill
    return out


# ---------------------------------------------------------------- convolution


def separable(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(column, row)`` with ``outer(column, row) == kernel`` to float32 rounding, or None.

    The row is the kernel's own row of largest magnitude, so integer kernels
    such as Sobel factor into exact numbers.
    """
    kh, kw = kernel.shape
    if kh < 2 or kw < 2:
        return None
    i = int(np.argmax(np.abs(kernel).max(axis=1)))
    row = kernel[i]
    j = int(np.argmax(np.abs(row)))
    if row[j] == 0:
        return None
    column = (kernel[:, j] / row[j]).astype(np.float32)
    if np.abs(np.outer(column, row) - kernel).max() > 1e-6 * np.abs(kernel).max():
        return None
    return column, row


def factorise(kernel: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """A few ``(column, row)`` pairs whose outer products sum to ``kernel``, when 1-D passes are cheaper than taps.

    Rank 1 (Sobel, Gaussian, box) is factored exactly; rank 2 or 3 (a
    difference of Gaussians) through the SVD, to float32 rounding.
    """
    exact = separable(kernel)
    if exact is not None:
        return [exact]
    kh, kw = kernel.shape
    taps = np.count_nonzero(kernel)
    if kh < 3 or kw < 3:
        return None
    u, s, vt = np.linalg.svd(kernel.astype(np.float64))
    rank = int(np.count_nonzero(s > 1e-7 * s[0]))
    if rank > 3 or rank * (kh + kw) >= taps:
        return None
    pairs = [((u[:, k] * s[k]).astype(np.float32), vt[k].astype(np.float32)) for k in range(rank)]
    rebuilt = sum(np.outer(c.astype(np.float64), r) for c, r in pairs)
    if np.abs(rebuilt - kernel).max() > 1e-6 * np.abs(kernel).max():
        return None
    return pairs


def _accumulate(acc: np.ndarray, scratch: np.ndarray, terms: list, *, add: bool = False) -> None:
    """``acc (+)= sum(view * value for view, value in terms)`` with no temporaries (zero terms give zeros).

    Weights of 1 and -1 (edge and box kernels) are added or subtracted without a multiply, one pass
    instead of two; multiplying by them is exact, so the sums are the same to the bit.
    """
    if not terms:
        if not add:
            acc.fill(0)
        return
    rest = terms
    if not add:
        (view, value), *rest = terms
        if rest and abs(value) == 1 and abs(rest[0][1]) == 1:
            (second, sign), *rest = rest
            if value == sign:
                np.add(view, second, out=acc)
                if value < 0:
                    np.negative(acc, out=acc)
            else:
                np.subtract(*((view, second) if value > 0 else (second, view)), out=acc)
        else:
            np.multiply(view, value, out=acc)
    for view, value in rest:
        if value == 1:
            acc += view
        elif value == -1:
            acc -= view
        else:
            np.multiply(view, value, out=scratch)
            acc += scratch


def correlate(x: np.ndarray, w: np.ndarray, stride, dilation, pads, mode: str, out: np.ndarray,
              bias: np.ndarray | None = None) -> None:
    """``out[o] = sum over (c, i, j) of w[o, c, i, j] * padded x[c]`` shifted by the tap, plus ``bias[o]`` if given,
    for one group. The bias is added as each strip is stored, where a strip is stored, not in a pass of its own.

    One kernel on one plane runs as 1-D passes when it is (nearly) separable,
    by FFT when it is large and dense, else as a multiply-accumulate over its
    non-zero taps; a bank of kernels gathers the taps (im2col) for one BLAS
    product per strip, or, with few kernels over many channels, takes a
    product per kernel row over shifted copies of the strip.
    """
    O, C, kh, kw = w.shape
    if O == 1 and C == 1 and stride == (1, 1) and fft_is_faster(w[0, 0], out.shape[1:]):
        correlate_fft(x, w[0, 0], dilation, pads, mode, out)
        return add_bias(out, bias)
    if (kh, kw) == (1, 1) and stride == (1, 1) and not any(pads[0] + pads[1]) and C > 1:
        return correlate_pointwise(x, w.reshape(O, C), out, bias)
    column = None if bias is None else bias.reshape(O, 1, 1)
    W = x.shape[2]
    Wp = W + pads[1][0] + pads[1][1]
    Wout = out.shape[2]
    s0, s1 = stride
    d0, d1 = dilation
    factors = factorise(w[0, 0]) if O == 1 and C == 1 else None
    bank = O > 1 or not _one_kernel_by_passes(w[0], factors, stride, Wp, Wout, out.shape[1])
    if bank:
        factors = None
    rows_of_taps = bank and by_kernel_rows(O, C, kh, kw, stride)
    # Stride 1 reads each tap as one flat run of padded rows, computing the padding's columns too: a bank on a
    # narrow map (7 columns and 2 of padding) gathers just the output's columns instead.
    flat = stride == (1, 1) and (not bank or rows_of_taps or Wp <= 1.1 * Wout)
    weights = w.reshape(O, C * kh * kw)
    if rows_of_taps:  # kernel row i's weights, columns in the order (kernel column, channel)
        weights = [np.ascontiguousarray(w[:, :, i, :].transpose(0, 2, 1)).reshape(O, kw * C) for i in range(kh)]
    # One kernel by passes visits its non-zero taps (c, i, j); a bank gathers them all, as one view, listing none
    # (a list of ResNet's 4,608 took longer than the layer's product on a small map).
    taps = [] if bank else [tuple(int(k) for k in t) for t in np.argwhere(w[0])]
    width = Wp if flat else Wout  # columns of one output row as computed
    gathered = C * kh * kw if bank else len(taps)
    per_row = _correlate_row_bytes(C, Wp, width, s0, O, gathered, bank, kw if rows_of_taps else 0) // 4
    borders = border_columns(W, pads, mode)
    slack = d1 * (kw - 1) if flat else 0

    def work(strip: tuple[int, int], scratch: dict) -> None:
        r0, r1 = strip
        R = r1 - r0
        first, stop = r0 * s0, (r1 - 1) * s0 + d0 * (kh - 1) + 1
        # A product per kernel row keeps the strip's shifted copies beside it, the strip itself the first.
        copies = buffer(scratch, "input", (kw if rows_of_taps else 1, C, (stop - first) * Wp + slack))
        held = copies[0]
        held[:, (stop - first) * Wp :] = 0
        grid = gather_rows(x, first, stop, pads, mode, 0.0, borders, held[:, : (stop - first) * Wp].reshape(C, -1, Wp))

        def tap(c: int, i: int, j: int) -> np.ndarray:
            if flat:
                start = i * d0 * Wp + j * d1
                return held[c, start : start + R * Wp]
            return grid[c, i * d0 : i * d0 + s0 * (R - 1) + 1 : s0, j * d1 : j * d1 + s1 * (Wout - 1) + 1 : s1]

        if factors is not None:
            result = _factored_strip(factors, held[0], grid[0], R, Wp, Wout, stride, dilation, flat, scratch)
        elif not bank and flat and len(taps) > 1:
            # All taps but the last in the flat strip; the last one's sum lands in the output directly,
            # which saves the pass that copies the strip out.
            acc = buffer(scratch, "acc", (R * Wp,))
            product = buffer(scratch, "product", (R * Wp,))
            _accumulate(acc, product, [(tap(*t), w[0][t]) for t in taps[:-1]])
            last, value = tap(*taps[-1]), w[0][taps[-1]]
            if abs(value) != 1:
                last = np.multiply(last, value, out=product)
            combine = np.subtract if value == -1 else np.add
            combine(acc.reshape(R, Wp)[:, :Wout], last.reshape(R, Wp)[:, :Wout], out=out[0, r0:r1])
            add_bias(out[:, r0:r1], bias)
            return
        elif not bank:
            result = buffer(scratch, "acc", (1, R * width))
            product = buffer(scratch, "product", (R * width,))
            view = (lambda a: a) if flat else (lambda a: a.reshape(R, Wout))
            _accumulate(view(result[0]), view(product), [(tap(*t), w[0][t]) for t in taps])
        elif rows_of_taps:
            result = _product_per_kernel_row(copies, weights, (stop - first) * Wp, R * Wp, Wp, dilation, scratch)
        else:
            columns = buffer(scratch, "columns", (gathered, R * width))
            view = _taps_view(held, grid, R, Wp, Wout, kh, kw, stride, dilation, flat)
            columns.reshape(view.shape)[...] = view
            result = np.matmul(weights, columns, out=buffer(scratch, "acc", (O, R * width)))
        stored = result.reshape(O, R, width)[:, :, :Wout]
        if column is None:
            out[:, r0:r1] = stored
        else:
            np.add(stored, column, out=out[:, r0:r1])

    grid = strips(out.shape[1], 4 * per_row)
    if bank and 4 * per_row * out.shape[1] <= WHOLE_BYTES:
        # A bank on a small map: one product over the whole map is several times faster than a product per strip
        # (BLAS runs its own threads on it), and the working set still fits the cache's neighbourhood.
        with runtime.blas_threads():
            work((0, out.shape[1]), {})
        return
    run_tasks(grid, work)


def _product_per_kernel_row(copies: np.ndarray, row_weights: list, n: int, pixels: int, Wp: int, dilation,
                            scratch: dict) -> np.ndarray:
    """A bank on a flat strip ``copies[0]`` (C, n + slack) as one BLAS product per kernel row, summed.

    The strip is copied into ``copies[j]`` shifted by kernel column j; then kernel row i's taps over every channel
    are one matrix read in place, ``i`` rows further on: kw copies of the input where im2col makes kh*kw.
    """
    kw, C, length = copies.shape
    d0, d1 = dilation
    for j in range(1, kw):
        copies[j, :, :n] = copies[0, :, j * d1 : j * d1 + n]
    matrix = copies.reshape(kw * C, length)
    O = row_weights[0].shape[0]
    acc = np.matmul(row_weights[0], matrix[:, :pixels], out=buffer(scratch, "acc", (O, pixels)))
    product = buffer(scratch, "product", (O, pixels))
    for i, weights in enumerate(row_weights[1:], 1):
        acc += np.matmul(weights, matrix[:, i * d0 * Wp : i * d0 * Wp + pixels], out=product)
    return acc


def by_kernel_rows(O: int, C: int, kh: int, kw: int, stride) -> bool:
    """Whether a bank of stride 1 costs less as a product per kernel row (``_product_per_kernel_row``) than as
    im2col's gather and one product: by the memory each writes, the input kw times and kh - 1 sums of the output
    (two passes each), against the input kh*kw times, with a margin for the products' smaller inner size.

    Measured here (3x3): 32 outputs of 128 channels (DenseNet's), 0.65x to 0.95x of im2col's time from 112x112 to
    7x7 maps, 16 of 64 on 112x112 0.5x; as many outputs as channels, 0.9x at 64 to 1.8x at 512 channels on 7x7
    maps; more outputs than channels, 1.1x.
    """
    return tuple(stride) == (1, 1) and kh > 1 and kw * C + 4 * (kh - 1) * O < 0.75 * kh * kw * C


def batch_fits(x_shape, w_shape, out_shape) -> bool:
    """Whether a batch of images is small enough to run as one product over all of them (the gathered taps of
    every image within ``WHOLE_BYTES``): a training batch of small images, where a product per image would cost
    more in calls than in work."""
    N, C = x_shape[:2]
    O, _, kh, kw = w_shape
    return 4 * N * out_shape[-2] * out_shape[-1] * (C * kh * kw + O) <= WHOLE_BYTES


def correlate_batch(x: np.ndarray, w: np.ndarray, stride, dilation, pads, mode: str, out: np.ndarray) -> None:
    """A bank of kernels over a batch (N, C, H, W) at once: every image's taps gathered side by side, one BLAS
    product, the result laid out per image."""
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Hout, Wout = out.shape[2:]
    (s0, s1), (d0, d1) = stride, dilation
    (top, bottom), (left, right) = pads
    padded = x
    if top or bottom or left or right:
        numpy_mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
        padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode=numpy_mode)
    n, c, r, q = padded.strides
    taps = as_strided(padded, (C, kh, kw, N, Hout, Wout), (c, d0 * r, d1 * q, n, s0 * r, s1 * q), writeable=False)
    columns = np.ascontiguousarray(taps).reshape(C * kh * kw, N * Hout * Wout)
    with runtime.blas_threads():
        result = np.matmul(w.reshape(O, -1), columns)
    out[...] = result.reshape(O, N, Hout, Wout).transpose(1, 0, 2, 3)


def correlate_grouped(x: np.ndarray, w: np.ndarray, groups: int, stride, dilation, pads, mode: str,
                      out: np.ndarray) -> None:
    """A grouped convolution, every group at once: ``out[o]`` sums group ``o // (O / groups)``'s channels only.

    A convolution of many small groups (depthwise: one channel each) costs a pass per group when each group is run
    as a bank of its own; here each strip gathers a block of groups' rows once, then a depthwise layer is a few
    multiply-adds over all of the block's channels per tap (each tap one contiguous run of the strip, as in
    ``correlate``) where that is cheaper (``grouped_is_direct``), else one batched BLAS product over the groups.
    Each thread takes a block of groups (no rows gathered twice), cut into strips of rows where the block's map
    outgrows the cache; each output value is summed the same way whatever the cut.
    """
    C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Og = O // groups
    Hout, Wout = out.shape[1:]
    Wp = W + pads[1][0] + pads[1][1]
    (s0, s1), (d0, d1) = stride, dilation
    direct = grouped_is_direct(Cg, Og, stride, Hout * Wout)
    banks = w.reshape(groups, Og, Cg * kh * kw)
    if (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and not any(pads[0] + pads[1]):
        # A grouped 1x1 (ShuffleNet's) is a product per group over the input where it lies: one batched product,
        # 6x faster than gathering its columns by strips.
        with runtime.blas_threads():
            np.matmul(banks, x.reshape(groups, Cg, H * W), out=out.reshape(groups, Og, H * W))
        return
    borders = border_columns(W, pads, mode)
    flat = _grouped_flat(stride, kw)
    row_width = Wp if flat else Wout  # columns of one output row as computed
    slack = d1 * (kw - 1) if flat or direct else 0  # the last flat run reaches past the strip's rows

    def work(task: tuple[int, int, int, int], scratch: dict) -> None:
        g0, g1, r0, r1 = task
        G, R = g1 - g0, r1 - r0
        first, stop = r0 * s0, (r1 - 1) * s0 + d0 * (kh - 1) + 1
        held = buffer(scratch, "input", (G * Cg, (stop - first) * Wp + slack))
        held[:, (stop - first) * Wp :] = 0
        grid = gather_rows(x[g0 * Cg : g1 * Cg], first, stop, pads, mode, 0.0, borders,
                           held[:, : (stop - first) * Wp].reshape(G * Cg, -1, Wp))
        result = out[g0 * Og : g1 * Og, r0:r1].reshape(G, Og, R, Wout)
        weights = banks[g0:g1]
        if direct:
            planes = held.reshape(G, Cg, -1)
            acc = buffer(scratch, "acc", (G, R * Wp))
            product = buffer(scratch, "product", (G, R * Wp))
            for o in range(Og):
                terms = [(planes[:, t // (kh * kw), (t // kw % kh) * d0 * Wp + (t % kw) * d1 :][:, : R * Wp],
                          weights[:, o, t, None]) for t in range(Cg * kh * kw)]
                _accumulate_planes(acc, product, terms)
                result[:, o] = acc.reshape(G, R, Wp)[:, :, :Wout]
            return
        if flat:  # each tap a contiguous run of the strip's padded rows, its wrapped columns dropped at the end
            c, q = held.strides
            taps = as_strided(held, (G, Cg, kh, kw, R * Wp), (Cg * c, c, d0 * Wp * q, d1 * q, q), writeable=False)
        else:
            c, r, q = grid.strides
            taps = as_strided(grid, (G, Cg, kh, kw, R, Wout), (Cg * c, c, d0 * r, d1 * q, s0 * r, s1 * q),
                              writeable=False)
        columns = buffer(scratch, "columns", (G, Cg * kh * kw, R * row_width))
        columns.reshape(taps.shape)[...] = taps
        acc = buffer(scratch, "acc", (G, Og, R * row_width))
        np.matmul(weights, columns, out=acc)
        result[...] = acc.reshape(G, Og, R, row_width)[..., :Wout]

    count = min(groups, runtime.num_threads())
    blocks = [(k * groups // count, (k + 1) * groups // count) for k in range(count)]
    width = -(-groups // count)  # groups in the largest block
    row_strips = strips(Hout, _grouped_row_bytes(width * Cg, Wp, row_width, s0, width * Og, Cg * kh * kw * width,
                                                 direct))
    run_tasks([(g0, g1, r0, r1) for g0, g1 in blocks for r0, r1 in row_strips], work, O * Hout * Wout * Cg * kh * kw)


def _grouped_flat(stride, kw: int) -> bool:
    """Whether a grouped layer's batched product reads each tap as one flat run of the strip's padded rows (as
    ``correlate`` does), computing the padding's columns too, rather than gathering the output's columns.

    Measured here: a 3x3 of stride 1, flat: long runs to copy where a 14x14 map's rows of 14 made the gather cost
    several times the product (0.64 to 0.52 ms over 384 channels); a wider kernel's padding made the flat runs longer
    than they saved (7x7 over 384 channels of 14x14: 1.9 ms by columns, 2.4 ms flat).
    """
    return tuple(stride) == (1, 1) and kw <= 3


def grouped_is_direct(Cg: int, Og: int, stride, pixels: int) -> bool:
    """Whether a grouped convolution runs as multiply-adds per tap or as one batched product over its groups.

    Measured here: the taps win only as contiguous runs (stride 1) over maps of a few thousand pixels or more, with
    few channels a group (a depthwise 3x3 on 56x56: 0.87x the product's time); with stride 2 they took up to 1.8x,
    and on 14x14 maps 1.1x to 1.4x.
    """
    return Cg * Og <= 4 and tuple(stride) == (1, 1) and pixels >= DIRECT_PIXELS


DIRECT_PIXELS = 2048  # output pixels of a plane from which a grouped layer's taps beat the batched product


def _accumulate_planes(acc: np.ndarray, product: np.ndarray, terms: list) -> None:
    """``acc = sum(view * weights for view, weights in terms)``, each group's weight broadcast over its plane."""
    for k, (view, weights) in enumerate(terms):
        if k == 0:
            np.multiply(view, weights, out=acc)
        else:
            np.multiply(view, weights, out=product)
            acc += product


def _grouped_row_bytes(C: int, Wp: int, row_width: int, s0: int, O: int, taps: int, direct: bool) -> int:
    """What one output row costs a grouped strip: its input rows, its im2col columns (or a product row) and its
    accumulators."""
    return 4 * (Wp * C * s0 + (2 * Wp * C if direct else row_width * (taps + O)))


def grouped_scratch(x_shape, w_shape, groups: int, stride, dilation, pads, out_shape, threads: int) -> int:
    """Bytes of scratch ``correlate_grouped`` holds at most, on all threads."""
    C, H, W = x_shape
    O, Cg, kh, kw = w_shape
    Wp = W + pads[1][0] + pads[1][1]
    Hout, Wout = out_shape
    count = min(groups, threads)
    width = -(-groups // count)
    C, O = width * Cg, width * (O // groups)
    direct = grouped_is_direct(Cg, O // width, stride, Hout * Wout)
    row_width = Wp if _grouped_flat(stride, kw) else Wout
    row_bytes = _grouped_row_bytes(C, Wp, row_width, stride[0], O, Cg * kh * kw * width, direct)
    rows = _strip_rows(Hout, row_bytes)
    held = 4 * C * (((rows - 1) * stride[0] + dilation[0] * (kh - 1) + 1) * Wp + dilation[1] * (kw - 1))
    return min(threads, count * -(-Hout // rows)) * (held + rows * (row_bytes - 4 * Wp * C * stride[0]))


def _taps_view(held, grid, R, Wp, Wout, kh, kw, stride, dilation, flat) -> np.ndarray:
    """Every tap's input of a strip as one strided view, (C, kh, kw, pixels) or (C, kh, kw, rows, columns), read
    in place: the im2col columns are then one copy, not a copy per tap (ResNet's 512-channel 3x3 layers have
    4,608 taps)."""
    (s0, s1), (d0, d1) = stride, dilation
    if flat:  # tap (c, i, j) is the flat strip shifted by i rows and j columns
        step = held.strides[1]
        return as_strided(held, (held.shape[0], kh, kw, R * Wp), (held.strides[0], d0 * Wp * step, d1 * step, step),
                          writeable=False)
    c, r, q = grid.strides
    return as_strided(grid, (grid.shape[0], kh, kw, R, Wout), (c, d0 * r, d1 * q, s0 * r, s1 * q), writeable=False)


# Bytes a bank's columns and accumulators may take for one product over the whole map.
WHOLE_BYTES = 1 << 25


def correlate_pointwise(x: np.ndarray, weights: np.ndarray, out: np.ndarray, bias: np.ndarray | None = None) -> None:
    """A 1x1 convolution: each strip of output pixels one BLAS product of the weights (O, C) and the input's
    columns there, read where they lie (no gathered copy), and the bias added while the strip is in the cache."""
    C, H, W = x.shape
    planes, result = x.reshape(C, H * W), out.reshape(out.shape[0], H * W)
    step = max(W, (STRIP_PIXELS // W) * W)

    def work(first: int, scratch: dict) -> None:
        add_bias(np.matmul(weights, planes[:, first : first + step], out=result[:, first : first + step]), bias)

    if 4 * (C + out.shape[0]) * H * W <= WHOLE_BYTES:  # small: one product, BLAS's own threads on it
        with runtime.blas_threads():
            np.matmul(weights, planes, out=result)
        add_bias(out, bias)
        return
    run_tasks(list(range(0, H * W, step)), work)


def add_bias(out: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``out[o] += bias[o]`` over each output channel's map (the first axis), where there is a bias."""
    if bias is not None:
        out += bias.reshape((-1,) + (1,) * (out.ndim - 1))
    return out


STRIP_PIXELS = 4096  # output pixels a 1x1 strip takes: enough columns for BLAS to run at speed


def _correlate_row_bytes(C: int, Wp: int, width: int, s0: int, O: int, taps: int, bank: bool, shifts: int = 0) -> int:
    """What one output row costs a strip, in bytes: its input rows, and its accumulators and im2col columns (or the
    input's ``shifts`` shifted copies, for a product per kernel row)."""
    return 4 * (Wp * C * s0 + width * ((shifts * C if shifts else taps) + 2 * O if bank else 4))


# Measured here: a multiply-add pass over a pixel costs about what the bank's gather and product cost for one tap
# of it, and a pass's call as much as 8,000 pixels of the bank's work.
PASS_VS_BANK = 1.0
PASS_CALL_PIXELS = 8000


def by_passes(passes: int, taps: int, pixels: int, strips_: int) -> bool:
    """Whether one output channel costs less as ``passes`` multiply-add passes over strips of ``pixels`` each than
    as the bank's gather of its ``taps`` and a product: the estimated costs, in pixels of the bank's work.

    So the passes win where they are fewer than the taps, on maps large enough to pay for their calls: a
    separable or sparse kernel (Sobel's six 1-D taps for nine) on a photo; a dense kernel goes to the bank (over
    512 channels of 32x32 its passes took 1.8x the bank's time).
    """
    return passes * (PASS_VS_BANK * pixels + PASS_CALL_PIXELS * strips_) <= taps * pixels


def _one_kernel_by_passes(kernel: np.ndarray, factors, stride, Wp: int, Wout: int, Hout: int) -> bool:
    """``by_passes`` for one kernel (C, kh, kw): its non-zero taps, or the 1-D passes of its factors."""
    C, kh, kw = kernel.shape
    passes = sum(np.count_nonzero(c) + np.count_nonzero(r) for c, r in factors) if factors else np.count_nonzero(kernel)
    width = Wp if tuple(stride) == (1, 1) else Wout
    rows = _strip_rows(Hout, _correlate_row_bytes(C, Wp, width, stride[0], 1, int(passes), False))
    return by_passes(int(passes), C * kh * kw, rows * width, -(-Hout // rows))


def _strip_rows(n_rows: int, row_bytes: int) -> int:
    """Rows of the tallest strip of the grid."""
    first, stop = strips(n_rows, row_bytes)[0]
    return stop - first


def correlate_scratch(x_shape, w_shape, stride, dilation, pads, out_shape, threads: int) -> int:
    """Bytes of scratch ``correlate`` holds at most, on all threads: each strip's input rows and working rows.

    Counted for every tap, and for the FFT where a kernel could take it, so the number is never below the truth.
    """
    if w_shape[0] == 1:  # one kernel may run by passes or as a bank, as its values decide: the larger of the two
        return max(_correlate_scratch(x_shape, w_shape, stride, dilation, pads, out_shape, threads, bank)
                   for bank in (False, True))
    return _correlate_scratch(x_shape, w_shape, stride, dilation, pads, out_shape, threads, True)


def _correlate_scratch(x_shape, w_shape, stride, dilation, pads, out_shape, threads: int, bank: bool) -> int:
    C, H, W = x_shape
    O, _, kh, kw = w_shape
    Wp = W + pads[1][0] + pads[1][1]
    Hout, Wout = out_shape
    shifts = kw if bank and by_kernel_rows(O, C, kh, kw, stride) else 0
    flat = tuple(stride) == (1, 1) and (not bank or shifts or Wp <= 1.1 * Wout)
    width = Wp if flat else Wout
    row_bytes = _correlate_row_bytes(C, Wp, width, stride[0], O, C * kh * kw, bank, shifts)
    whole = bank and row_bytes * Hout <= WHOLE_BYTES  # a bank on a small map: one product over all of it
    rows = Hout if whole else _strip_rows(Hout, row_bytes)
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    held = 4 * C * (((rows - 1) * stride[0] + span[0]) * Wp + dilation[1] * (kw - 1))
    # The shifted copies hold the strip's extra kernel rows too.
    per_thread = held + rows * (row_bytes - 4 * Wp * C * stride[0]) + 4 * shifts * C * (span[0] - 1) * Wp
    if whole:
        return per_thread
    if not bank and C == 1 and flat and kh * kw >= 64:
        fft_rows, fft_cols = _fft_shape(span, Wp)
        spectra = 16 * fft_rows * (fft_cols // 2 + 1)  # complex128, as numpy's FFT computes
        per_thread = max(per_thread, 4 * fft_rows * Wp + 3 * spectra + 8 * fft_rows * fft_cols)
    return min(threads, -(-Hout // rows)) * per_thread


def pool_scratch(x_shape, kernel, stride, dilation, pads, out_shape, threads: int) -> int:
    """Bytes of scratch ``pool`` holds at most, on all threads: a strip's padded rows and its row-reduced rows."""
    P, H, W = x_shape
    Wp = W + pads[1][0] + pads[1][1]
    Hout = out_shape[0]
    padded = any(pads[0]) or any(pads[1])
    row_bytes = _pool_row_bytes(Wp, stride[0], padded)
    rows = _strip_rows(Hout, row_bytes)
    block = _planes_per_strip(P, Hout, row_bytes)
    held = 4 * ((rows - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1) * Wp if padded else 0
    strips_ = -(-P // block) * -(-Hout // rows)
    return min(threads, strips_) * block * (held + 4 * rows * Wp)


def _factored_strip(factors, flat_rows, grid, R, Wp, Wout, stride, dilation, flat, scratch) -> np.ndarray:
    """Sum over the (column, row) pairs of a column pass then a row pass, on one strip of one plane."""
    (s0, s1), (d0, d1) = stride, dilation
    slack = d1 * (len(factors[0][1]) - 1)
    width = Wp if flat else Wout
    result = buffer(scratch, "acc", (1, R * width))
    acc = result[0] if flat else result[0].reshape(R, Wout)
    middle = buffer(scratch, "middle", (R * Wp + slack,))
    middle[R * Wp :] = 0
    product = buffer(scratch, "product", (R * Wp,))
    for k, (column, row) in enumerate(factors):
        if flat:
            rows = [(flat_rows[i * d0 * Wp : i * d0 * Wp + R * Wp], v) for i, v in enumerate(column) if v]
            _accumulate(middle[: R * Wp], product, rows)
            columns = [(middle[j * d1 : j * d1 + R * Wp], v) for j, v in enumerate(row) if v]
            _accumulate(acc, product, columns, add=k > 0)
        else:
            plane = middle[: R * Wp].reshape(R, Wp)
            rows = [(grid[i * d0 : i * d0 + s0 * (R - 1) + 1 : s0], v) for i, v in enumerate(column) if v]
            _accumulate(plane, product.reshape(R, Wp), rows)
            columns = [(plane[:, j * d1 : j * d1 + s1 * (Wout - 1) + 1 : s1], v) for j, v in enumerate(row) if v]
            _accumulate(acc, product[: R * Wout].reshape(R, Wout), columns, add=k > 0)
    return result


# ---------------------------------------------------------------- FFT


def fast_length(n: int) -> int:
    """The smallest length >= n whose only prime factors are 2, 3 and 5 (fast for numpy's pocketfft)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            length = p35
            while length < n:
                length *= 2
            best = min(best, length)
            p35 *= 3
        p5 *= 5
    return best


# Measured here: one multiply-accumulate tap costs about as much per pixel as
# 1/8 of a forward-and-inverse FFT pair per pixel per doubling of its size.
FFT_TAP_RATIO = 8


def _fft_shape(span: tuple[int, int], padded_width: int) -> tuple[int, int]:
    """FFT size of a strip: rows a few kernel heights tall, the padded width."""
    return fast_length(max(128, 4 * span[0])), fast_length(padded_width)


def fft_is_faster(kernel: np.ndarray, out_shape: tuple[int, int]) -> bool:
    """Whether the overlap-save FFT beats the taps and the 1-D passes for this kernel and output."""
    kh, kw = kernel.shape
    if kh * kw < 64 or factorise(kernel) is not None:
        return False
    rows, cols = _fft_shape((kh, kw), out_shape[1] + kw - 1)
    useful = (rows - kh + 1) * out_shape[1]
    fft_per_pixel = rows * cols * np.log2(rows * cols) / useful
    return np.count_nonzero(kernel) * FFT_TAP_RATIO > fft_per_pixel


def correlate_fft(x: np.ndarray, kernel: np.ndarray, dilation, pads, mode: str, out: np.ndarray) -> None:
    """One kernel on one plane by overlap-save: each strip of rows is correlated in the frequency domain.

    A strip's FFT holds its output rows plus the kernel's height less one;
    the rows that wrapped around are the ones dropped.
    """
    d0, d1 = dilation
    span = (d0 * (kernel.shape[0] - 1) + 1, d1 * (kernel.shape[1] - 1) + 1)
    spread = np.zeros(span, np.float32)
    spread[::d0, ::d1] = kernel
    W = x.shape[2]
    Wp = W + pads[1][0] + pads[1][1]
    Hout, Wout = out.shape[1:]
    shape = _fft_shape(span, Wp)
    step = shape[0] - span[0] + 1
    borders = border_columns(W, pads, mode)
    spectrum = np.conj(np.fft.rfft2(spread, s=shape))

    def work(strip: tuple[int, int], scratch: dict) -> None:
        r0, r1 = strip
        rows = buffer(scratch, "input", (1, r1 - r0 + span[0] - 1, Wp))
        gather_rows(x, r0, r1 + span[0] - 1, pads, mode, 0.0, borders, rows)
        transformed = np.fft.rfft2(rows[0], s=shape)
        transformed *= spectrum
        out[0, r0:r1] = np.fft.irfft2(transformed, s=shape)[: r1 - r0, :Wout]

    run_tasks([(r, min(r + step, Hout)) for r in range(0, Hout, step)], work)


# ---------------------------------------------------------------- pooling


def pool(x: np.ndarray, kernel, stride, dilation, pads, fill: float, reduce, out: np.ndarray) -> None:
    """Reduce every window of each (H, W) plane of ``x`` with ``reduce``, rows first, then columns.

    ``pads`` may reach past the padding a caller asked for (ceil_mode's last
    window); those cells hold ``fill``.
    """
    P, H, W = x.shape
    (top, bottom), (left, right) = pads
    Wp = W + left + right
    Hout, Wout = out.shape[1:]
    (kh, kw), (s0, s1), (d0, d1) = kernel, stride, dilation
    padded = top or bottom or left or right

    def work(task: tuple[int, int, int, int], scratch: dict) -> None:
        p0, p1, r0, r1 = task
        R = r1 - r0
        first, stop = r0 * s0, (r1 - 1) * s0 + d0 * (kh - 1) + 1
        if padded:
            held = buffer(scratch, "input", (p1 - p0, stop - first, Wp))
            grid = gather_rows(x[p0:p1], first, stop, pads, "zeros", fill, None, held)
        else:
            grid = x[p0:p1, first:stop]
        rows = [grid[:, i * d0 : i * d0 + s0 * (R - 1) + 1 : s0] for i in range(kh)]
        middle = _reduce_all(rows, reduce, buffer(scratch, "middle", (p1 - p0, R, Wp)))
        columns = [middle[:, :, j * d1 : j * d1 + s1 * (Wout - 1) + 1 : s1] for j in range(kw)]
        _reduce_all(columns, reduce, out[p0:p1, r0:r1])

    row_bytes = _pool_row_bytes(Wp, s0, bool(padded))
    block = _planes_per_strip(P, Hout, row_bytes)
    run_tasks([(p, min(p + block, P), r0, r1) for p in range(0, P, block) for r0, r1 in strips(Hout, row_bytes)],
              work, P * Hout * Wout * kh * kw)


def _planes_per_strip(P: int, Hout: int, row_bytes: int) -> int:
    """Planes a pooling strip takes at once: small maps (a network's later stages) many to a strip, as the cache
    allows, since a pass per plane would cost more in calls than in work; one when a plane fills a strip."""
    return max(1, min(P, runtime.STRIP_BYTES // max(1, row_bytes * Hout)))


def _pool_row_bytes(Wp: int, s0: int, padded: bool) -> int:
    """What one output row costs a pooling strip: its padded input rows (where padded) and its row-reduced row."""
    return 4 * Wp * (s0 * (2 if padded else 1) + 1)


def _reduce_all(views: list[np.ndarray], reduce, out: np.ndarray) -> np.ndarray:
    """``out = reduce(views[0], views[1], ...)``, pairwise, in as few passes as there are views minus one."""
    if len(views) == 1:
        np.copyto(out, views[0])
        return out
    reduce(views[0], views[1], out=out)
    for view in views[2:]:
        reduce(out, view, out=out)
    return out
