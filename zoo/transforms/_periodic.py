"""Periodic two-band filtering along one axis, as blocked matrix products.

A periodized DWT step is a banded circulant operator. Instead of a convolution kernel
(slow for one input channel on CPU) it is applied as a small dense block matrix over
overlapping windows of the axis: gather the periodic padding once, view the windows with
``unfold`` (no copy), and multiply. BLAS does the arithmetic on any device, the block
matrices are cached per (filter, length, device, dtype), and the result is bit-identical
run to run on the same device.

Conventions (checked against PyWavelets' ``mode="periodization"``): with a filter of even
length F, analysis is ``out[k] = sum_j f[j] * x[(2k + F/2 - j) mod N]`` and synthesis is
``out[(2k + j - F/2 + 1) mod N] += f[j] * c[k]``.
"""

from __future__ import annotations

import functools
import math

import torch

from zoo._threads import blockwise, product

# Outputs per block: small blocks waste fewer multiplies on zeros of the band, large ones
# give BLAS longer rows; 32 suits 2-18 tap filters. Axes whose output is at most
# _DENSE_MAX long use one dense periodic matrix instead.
_BLOCK = 32
_DENSE_MAX = 128


def analysis_taps(filt: tuple[float, ...]) -> tuple[tuple[int, float], ...]:
    """(offset, weight) pairs: ``out[k] = sum w * x[2k + offset]`` (mod N)."""
    half = len(filt) // 2
    return tuple((half - j, w) for j, w in enumerate(filt) if w != 0.0)


def synthesis_taps(filt: tuple[float, ...]) -> tuple[tuple[int, float], ...]:
    """(offset, weight) pairs: ``out[2k + offset] += w * c[k]`` (mod N)."""
    half = len(filt) // 2
    return tuple((j - half + 1, w) for j, w in enumerate(filt) if w != 0.0)


def _dense(taps, up: bool, n_in: int, n_out: int) -> torch.Tensor:
    mat = torch.zeros(n_out, n_in, dtype=torch.float64)
    for k in range(n_in if up else n_out):
        for o, w in taps:
            if up:
                mat[(2 * k + o) % n_out, k] += w
            else:
                mat[k, (2 * k + o) % n_in] += w
    return mat


@functools.lru_cache(maxsize=256)
def _plan(taps: tuple[tuple[int, float], ...], up: bool, n_in: int, n_out: int):
    """Matrix (float64, CPU), chunk length, block count, gather start, rows per block.

    Blocked form: the axis is cut into chunks of ``chunk`` inputs; output block ``i``
    depends on chunks ``i`` and ``i + 1`` only, through the two halves of ``mat``
    (``2 * rows`` x ``chunk``), so one contiguous matrix product does all the work.
    """
    if n_out <= _DENSE_MAX:
        return _dense(taps, up, n_in, n_out), 0, 1, 0, n_out
    offs = [o for o, _ in taps]
    lo, hi = min(offs), max(offs)
    span = hi - lo + 1
    b = max(_BLOCK, span)  # the window must fit in two chunks
    if not up:
        rows, chunk, start = b, 2 * b, lo
        width = 2 * (rows - 1) + span
        win = torch.zeros(rows, width, dtype=torch.float64)
        for r in range(rows):
            for o, w in taps:
                win[r, 2 * r + o - lo] += w
    else:
        rows, chunk = 2 * b, b
        start, k_hi = math.ceil(-hi / 2), (rows - 1 - lo) // 2
        width = k_hi - start + 1
        win = torch.zeros(rows, width, dtype=torch.float64)
        for c in range(width):
            for o, w in taps:
                n = 2 * (start + c) + o
                if 0 <= n < rows:
                    win[n, c] += w
    assert width <= 2 * chunk
    mat = torch.zeros(2 * rows, chunk, dtype=torch.float64)
    mat[:rows, : min(width, chunk)] = win[:, :chunk]
    mat[rows:, : width - chunk] = win[:, chunk:]
    blocks = -(-n_out // rows)
    return mat, chunk, blocks, start, rows


@functools.lru_cache(maxsize=256)
def _matrix(taps, up, n_in, n_out, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return _plan(taps, up, n_in, n_out)[0].to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=256)
def _gather(taps, up, n_in, n_out, device: torch.device) -> torch.Tensor:
    _, chunk, blocks, start, _ = _plan(taps, up, n_in, n_out)
    return ((torch.arange((blocks + 1) * chunk) + start) % n_in).to(device)


def apply(
    x: torch.Tensor, axis: int, taps, *, up: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply one periodic two-fold down- (``up=False``) or up-sampling filter along ``axis``.

    ``out``, if given, is a contiguous tensor of the result's shape that receives it (and
    is returned); results are the same bits either way. The work runs in blocks fixed by
    the shape, each on one intra-op thread (``zoo._threads.blockwise``), so the bits do
    not depend on the thread count either.
    """
    n_in = x.shape[axis]
    n_out = n_in * 2 if up else n_in // 2
    mat = _matrix(taps, up, n_in, n_out, x.device, x.dtype)
    if n_out <= _DENSE_MAX:
        return blockwise(x, axis, n_out, lambda src, dst: product(mat, src, dst), out)
    _, chunk, blocks, _, rows = _plan(taps, up, n_in, n_out)
    gather = _gather(taps, up, n_in, n_out, x.device)

    def banded(src: torch.Tensor, dst: torch.Tensor) -> None:
        p, _, q = src.shape
        xp = src.index_select(1, gather)
        if q == 1:
            y = (xp.reshape(-1, chunk) @ mat.T).reshape(p, blocks + 1, 2 * rows, 1)
        else:
            y = torch.matmul(mat, xp.reshape(p, blocks + 1, chunk, q))
        res = (y[:, :blocks, :rows] + y[:, 1:, rows:]).reshape(p, blocks * rows, q)
        dst.copy_(res[:, :n_out])

    return blockwise(x, axis, n_out, banded, out)
