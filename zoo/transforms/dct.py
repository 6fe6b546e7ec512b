"""Orthonormal DCT-II / DCT-III over axes, and band-limited resizing (FRONT).

``dct`` equals ``scipy.fft.dctn(x, norm="ortho", axes=axes)`` and ``idct`` its inverse.
Axes up to 1024 long use a cached dense matrix per (lengths, device, dtype): one matrix
product along the axis, no transposes, BLAS speed on any device. Longer axes use
Makhoul's algorithm (reorder, real FFT, twiddle), O(n log n) rather than O(n^2).

``dct_resize`` keeps the lowest ``min(S, T)`` coefficients of each changed axis (truncate
when shrinking, zero-pad when growing) and inverts at the target length. With the
orthonormal scaling a smooth signal's values scale by ``sqrt(S / T)`` per axis, the same
convention as a raw orthonormal DWT level (``sqrt(2)`` for a halving).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from ._checks import as_float, check_shape, norm_axes, restore

_DENSE_MAX = 1024


@functools.lru_cache(maxsize=64)
def _dct_matrix64(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


@functools.lru_cache(maxsize=64)
def dct_matrix(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``C`` (``C @ x`` is the DCT, ``C.T @ X`` the inverse)."""
    return _dct_matrix64(n).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def resize_matrix(s: int, t: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(t, s)`` matrix: DCT at length s, keep ``min(s, t)`` coefficients, inverse at t."""
    m = min(s, t)
    r = _dct_matrix64(t)[:m].T @ _dct_matrix64(s)[:m]
    return r.to(device=device, dtype=dtype)


def apply_matrix(x: torch.Tensor, axis: int, mat: torch.Tensor) -> torch.Tensor:
    """``mat @ x`` along ``axis``."""
    shape = list(x.shape)
    p, n, q = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])
    out = x.reshape(p, n) @ mat.T if q == 1 else torch.matmul(mat, x.reshape(p, n, q))
    shape[axis] = mat.shape[0]
    return out.reshape(shape)


def _fft_forward(x: torch.Tensor, m: int) -> torch.Tensor:
    """First ``m`` orthonormal DCT-II coefficients along the last axis (Makhoul)."""
    n = x.shape[-1]
    v = torch.cat([x[..., 0::2], x[..., 1::2].flip(-1)], dim=-1)
    spec = torch.fft.rfft(v)
    if m > n // 2 + 1:
        spec = torch.cat([spec, spec[..., 1 : (n + 1) // 2].flip(-1).conj()], dim=-1)
    spec = spec[..., :m]
    ang = torch.arange(m, device=x.device, dtype=x.dtype) * (-math.pi / (2 * n))
    scale = torch.full((m,), math.sqrt(2.0 / n), device=x.device, dtype=x.dtype)
    scale[0] = math.sqrt(1.0 / n)
    return (spec.real * torch.cos(ang) - spec.imag * torch.sin(ang)) * scale


def _fft_inverse(coef: torch.Tensor, t: int) -> torch.Tensor:
    """Orthonormal inverse DCT at length ``t`` of the first ``m`` coefficients (rest zero)."""
    m = min(coef.shape[-1], t)
    dev, dt = coef.device, coef.dtype
    scale = torch.full((m,), math.sqrt(2.0 / t), device=dev, dtype=dt)
    scale[0] = math.sqrt(1.0 / t)
    half = t // 2 + 1
    y = torch.zeros(*coef.shape[:-1], t + 1, device=dev, dtype=dt)
    y[..., :m] = coef[..., :m] * scale
    k = torch.arange(half, device=dev)
    re, im = y[..., :half], -y[..., t - k]
    ang = k.to(dt) * (math.pi / (2 * t))
    c, s = torch.cos(ang), torch.sin(ang)
    spec = torch.complex(re * c - im * s, re * s + im * c)
    spec[..., 1:] *= 0.5
    v = torch.fft.irfft(spec, n=t) * t
    out = torch.empty(*coef.shape[:-1], t, device=dev, dtype=dt)
    out[..., 0::2] = v[..., : (t + 1) // 2]
    out[..., 1::2] = v[..., (t + 1) // 2 :].flip(-1)
    return out


def _along_last(x: torch.Tensor, axis: int, fn) -> torch.Tensor:
    if axis == x.ndim - 1:
        return fn(x)
    return fn(x.movedim(axis, -1).contiguous()).movedim(-1, axis).contiguous()


def lowpass_coefficients(x: torch.Tensor, axis: int, m: int) -> torch.Tensor:
    """The first ``m`` orthonormal DCT-II coefficients along ``axis``."""
    n = x.shape[axis]
    if n <= _DENSE_MAX:
        return apply_matrix(x, axis, dct_matrix(n, x.device, x.dtype)[:m])
    return _along_last(x, axis, lambda v: _fft_forward(v, m))


def from_coefficients(coef: torch.Tensor, axis: int, t: int) -> torch.Tensor:
    """Inverse DCT at length ``t`` from leading coefficients (truncated or zero-padded)."""
    m = min(coef.shape[axis], t)
    if t <= _DENSE_MAX:
        return apply_matrix(
            coef.narrow(axis, 0, m), axis, dct_matrix(t, coef.device, coef.dtype)[:m].T
        )
    return _along_last(coef, axis, lambda v: _fft_inverse(v, t))


def resize_axis(x: torch.Tensor, axis: int, t: int) -> torch.Tensor:
    """DCT resize of one axis (compute dtype in and out)."""
    s = x.shape[axis]
    if s == t:
        return x
    if max(s, t) <= _DENSE_MAX:
        return apply_matrix(x, axis, resize_matrix(s, t, x.device, x.dtype))
    return from_coefficients(lowpass_coefficients(x, axis, min(s, t)), axis, t)


def _transform(x: torch.Tensor, axes: Sequence[int], inverse: bool) -> torch.Tensor:
    for a in norm_axes(axes, x.ndim):
        n = x.shape[a]
        if n <= _DENSE_MAX:
            c = dct_matrix(n, x.device, x.dtype)
            x = apply_matrix(x, a, c.T if inverse else c)
        elif inverse:
            x = _along_last(x, a, lambda v, n=n: _fft_inverse(v, n))
        else:
            x = _along_last(x, a, lambda v, n=n: _fft_forward(v, n))
    return x


def dct(x: torch.Tensor, *, axes: Sequence[int]) -> torch.Tensor:
    """Orthonormal DCT-II over ``axes`` (== ``scipy.fft.dctn(x, norm="ortho", axes=axes)``).

    Example:
        >>> import torch
        >>> dct(torch.ones(4), axes=(0,)).tolist()
        [2.0, 0.0, 0.0, 0.0]
    """
    xf = as_float(x)
    return restore(_transform(xf, axes, inverse=False), x)


def idct(x: torch.Tensor, *, axes: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`dct` (orthonormal DCT-III), ``scipy.fft.idctn(norm="ortho")``."""
    xf = as_float(x)
    return restore(_transform(xf, axes, inverse=True), x)


def _cost(s: int, t: int) -> float:
    """Rough flops per element of one axis resize (dense product or FFT path)."""
    if max(s, t) <= _DENSE_MAX:
        return 2.0 * min(s, t)
    return 40.0 * math.log2(max(s, t))


def resize_order(sizes: Sequence[int], shape: Sequence[int]) -> list[int]:
    """Changed axes in the order that keeps the work small: shrinking axes first, cheapest
    per element first (they run on the largest data); then growing axes, dearest first."""
    pairs = list(enumerate(zip(sizes, shape, strict=True)))
    shrink = sorted((a for a, (s, t) in pairs if t < s), key=lambda a: _cost(sizes[a], shape[a]))
    grow = sorted((a for a, (s, t) in pairs if t > s), key=lambda a: -_cost(sizes[a], shape[a]))
    return shrink + grow


def dct_resize(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Band-limited resize to ``shape`` with the orthonormal DCT (FRONT's transform).

    Axes whose size is unchanged are untouched. For each changed axis: DCT-II, keep the
    low-frequency (top-left) ``min(S, T)`` coefficients (truncate or zero-pad), inverse
    DCT at length ``T``. Resizing down then up is an orthogonal projection; up then down
    is the identity.

    Example:
        >>> import torch
        >>> dct_resize(torch.ones(2, 4, dtype=torch.float64), (2, 2)).round(decimals=6).tolist()
        [[1.414214, 1.414214], [1.414214, 1.414214]]
    """
    xf = as_float(x)
    target = check_shape(shape, xf.ndim)
    for a in resize_order(list(xf.shape), target):
        xf = resize_axis(xf, a, target[a])
    return restore(xf, x)
