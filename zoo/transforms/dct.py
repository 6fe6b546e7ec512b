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

import math
from collections.abc import Sequence

import torch

from zoo import _memory
from zoo._threads import blockwise, each_on_one_thread, product, table

from ._checks import as_float, check_shape, norm_axes, restore

_DENSE_MAX = 1024


@table
def _dct_matrix64(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


@table
def dct_matrix(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``C`` (``C @ x`` is the DCT, ``C.T @ X`` the inverse)."""
    return _dct_matrix64(n).to(device=device, dtype=dtype)


@table
def resize_matrix(s: int, t: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(t, s)`` matrix: DCT at length s, keep ``min(s, t)`` coefficients, inverse at t."""
    m = min(s, t)
    r = _dct_matrix64(t)[:m].T @ _dct_matrix64(s)[:m]
    return r.to(device=device, dtype=dtype)


def apply_matrix(x: torch.Tensor, axis: int, mat: torch.Tensor) -> torch.Tensor:
    """``mat @ x`` along ``axis``, written into a fresh (huge-page hinted) output."""
    return blockwise(x, axis, mat.shape[0], lambda src, dst: product(mat, src, dst))


@table
def _forward_twiddle(n: int, m: int, device: torch.device, dtype: torch.dtype):
    ang = torch.arange(m, device=device, dtype=dtype) * (-math.pi / (2 * n))
    scale = torch.full((m,), math.sqrt(2.0 / n), device=device, dtype=dtype)
    scale[0] = math.sqrt(1.0 / n)
    return torch.cos(ang), torch.sin(ang), scale


# Dense resizes at least this long on both sides use the centrosymmetric split below.
_SPLIT_MIN = 64


@table
def _split_resize_matrices(s: int, t: int, device: torch.device, dtype: torch.dtype):
    """Halves of the resize matrix for the even/odd split (see :func:`_resize_dense`)."""
    r = _dct_matrix64(t)[: min(s, t)].T @ _dct_matrix64(s)[: min(s, t)]
    hs, ht = s // 2, t // 2
    r1, r2 = r[:ht, :hs], r[:ht, hs:].flip(1)
    plus, minus = (r1 + r2) * 0.5, (r1 - r2) * 0.5
    return plus.to(device=device, dtype=dtype), minus.to(device=device, dtype=dtype)


def _resize_dense(x: torch.Tensor, axis: int, t: int) -> torch.Tensor:
    """Dense DCT resize of one axis, at half the multiplies for even lengths.

    The resize matrix ``R`` (``t x s``) is centrosymmetric (``R[t-1-j, s-1-i] = R[j, i]``,
    from the DCT's even/odd symmetry). With ``u`` the first half of ``x`` and ``w`` the
    second half reversed, ``P = (R1 + R2) / 2 (u + w)`` and ``Q = (R1 - R2) / 2 (u - w)``
    give the first half of the result as ``P + Q`` and the second half, reversed, as
    ``P - Q`` (``R1``, ``R2``: the left half of ``R``'s top rows and its right half
    reversed): two half-size products instead of one full one.
    """
    s = x.shape[axis]
    if s % 2 or t % 2 or min(s, t) < _SPLIT_MIN:
        return apply_matrix(x, axis, resize_matrix(s, t, x.device, x.dtype))
    plus, minus = _split_resize_matrices(s, t, x.device, x.dtype)
    hs, ht = s // 2, t // 2

    def block(src: torch.Tensor, dst: torch.Tensor) -> None:
        u, w = src[:, :hs], src[:, hs:].flip(1)
        rows = (src.shape[0], ht, src.shape[2])
        p = torch.empty(rows, dtype=src.dtype, device=src.device)
        q = torch.empty(rows, dtype=src.dtype, device=src.device)
        product(plus, u + w, p)
        product(minus, u - w, q)
        torch.add(p, q, out=dst[:, :ht])
        dst[:, ht:].copy_(p.sub_(q).flip(1))

    return blockwise(x, axis, t, block)


def _fft_forward(x: torch.Tensor, m: int) -> torch.Tensor:
    """First ``m`` orthonormal DCT-II coefficients along the last axis (Makhoul)."""
    n = x.shape[-1]
    v = torch.cat([x[..., 0::2], x[..., 1::2].flip(-1)], dim=-1)
    spec = torch.fft.rfft(v)
    if m > n // 2 + 1:
        spec = torch.cat([spec, spec[..., 1 : (n + 1) // 2].flip(-1).conj()], dim=-1)
    spec = torch.view_as_real(spec[..., :m])
    cos, sin, scale = _forward_twiddle(n, m, x.device, x.dtype)
    out = spec[..., 0] * cos
    out.sub_(spec[..., 1] * sin)
    return out.mul_(scale)


@table
def _inverse_twiddle(t: int, m: int, device: torch.device, dtype: torch.dtype):
    scale = torch.full((m,), math.sqrt(2.0 / t), device=device, dtype=dtype)
    scale[0] = math.sqrt(1.0 / t)
    half = t // 2 + 1
    ang = torch.arange(half, device=device).to(dtype) * (math.pi / (2 * t))
    # The 1/2 on every bin but DC is a power of two, so folding it in here rounds exactly
    # as halving the product would.
    half_but_dc = torch.full((half,), 0.5, device=device, dtype=dtype)
    half_but_dc[0] = 1.0
    return scale, torch.cos(ang) * half_but_dc, torch.sin(ang) * half_but_dc


def _fft_inverse(coef: torch.Tensor, t: int) -> torch.Tensor:
    """Orthonormal inverse DCT at length ``t`` of the first ``m`` coefficients (rest zero)."""
    m = min(coef.shape[-1], t)
    dev, dt = coef.device, coef.dtype
    scale, c, s = _inverse_twiddle(t, m, dev, dt)
    half = t // 2 + 1
    y = torch.empty(*coef.shape[:-1], t + 1, device=dev, dtype=dt)
    torch.mul(coef[..., :m], scale, out=y[..., :m])
    y[..., m:].zero_()
    re = y[..., :half]
    im = y[..., t - half + 1 :].flip(-1).neg_()  # -y[t - k] for k < half
    spec = torch.empty(*coef.shape[:-1], half, 2, device=dev, dtype=dt)
    torch.mul(re, c, out=spec[..., 0]).sub_(im * s)
    torch.mul(re, s, out=spec[..., 1]).add_(im * c)
    v = torch.fft.irfft(torch.view_as_complex(spec), n=t).mul_(t)
    out = torch.empty(*coef.shape[:-1], t, device=dev, dtype=dt)
    out[..., 0::2] = v[..., : (t + 1) // 2]
    out[..., 1::2] = v[..., (t + 1) // 2 :].flip(-1)
    return out


@table
def _resize_twiddles(n: int, t: int, device: torch.device, dtype: torch.dtype):
    """Complex factors for :func:`_fft_resize` (computed in float64, then cast)."""
    m, half = min(n, t), t // 2 + 1
    k = torch.arange(m, dtype=torch.float64)
    scale = torch.full((m,), math.sqrt(2.0 / n), dtype=torch.float64)
    scale[0] = math.sqrt(1.0 / n)
    fwd = torch.polar(scale, k * (-math.pi / (2 * n)))
    k = torch.arange(half, dtype=torch.float64)
    # irfft's 1/t, the orthonormal scale, and the 1/2 on every bin but DC, folded in.
    gain = torch.full((half,), t * math.sqrt(2.0 / t) * 0.5, dtype=torch.float64)
    gain[0] = t * math.sqrt(1.0 / t)
    inv = torch.polar(gain, k * (math.pi / (2 * t)))
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    return fwd.to(device=device, dtype=cdt), inv.to(device=device, dtype=cdt)


def _fft_resize(x: torch.Tensor, t: int) -> torch.Tensor:
    """DCT resize of the last axis to ``t`` in one go (Makhoul both ways).

    ``A = rfft(reorder(x)) * fwd`` has the kept DCT-II coefficients as its real part;
    the inverse at ``t`` needs ``(X[k] - i X[t - k]) * inv`` for ``k <= t / 2``, then
    ``irfft`` and the inverse reorder. All twiddles and scales are precomputed complex
    factors, so the per-element work is two complex products and two strided copies.
    """
    n = x.shape[-1]
    m, half = min(n, t), t // 2 + 1
    fwd, inv = _resize_twiddles(n, t, x.device, x.dtype)
    v = torch.cat([x[..., 0::2], x[..., 1::2].flip(-1)], dim=-1)
    spec = torch.fft.rfft(v)
    if m > n // 2 + 1:
        spec = torch.cat([spec, spec[..., 1 : (n + 1) // 2].flip(-1).conj()], dim=-1)
    coef = torch.view_as_real(spec[..., :m] * fwd)[..., 0]  # X[k], k < m
    u = torch.zeros(*x.shape[:-1], half, 2, device=x.device, dtype=x.dtype)
    u[..., : min(half, m), 0] = coef[..., : min(half, m)]
    lo = max(1, t - m + 1)  # X[t - k] exists for k >= lo
    if lo < half:
        torch.neg(coef[..., t - half + 1 : t - lo + 1].flip(-1), out=u[..., lo:, 1])
    w = torch.fft.irfft(torch.view_as_complex(u) * inv, n=t)
    out = torch.empty(*x.shape[:-1], t, device=x.device, dtype=x.dtype)
    out[..., 0::2] = w[..., : (t + 1) // 2]
    out[..., 1::2] = w[..., (t + 1) // 2 :].flip(-1)
    return out


# The FFT path works on slabs of about this many bytes (rows of the last axis, or
# sub-tensors along axis 0), so its temporaries stay in cache and are not page-faulted in.
_SLAB_BYTES = 2 << 20


def _along_last(x: torch.Tensor, axis: int, fn, t: int) -> torch.Tensor:
    """``fn`` (rows in, rows of length ``t`` out) applied along ``axis``, slab by slab.

    Every row is transformed on its own, so slabbing gives the same bits as one call."""
    shape = list(x.shape)
    shape[axis] = t
    out = _memory.empty(shape, like=x)
    last = axis == x.ndim - 1
    if last:
        rows = x.reshape(-1, x.shape[-1])
        dst = out.view(-1, t)
    else:
        # Slabs along axis 0 (or along the axis before ``axis`` when it is 0); each slab
        # is turned to put ``axis`` last, transformed, and turned back into place.
        rows, dst = x, out
    lead = 0 if axis != 0 or last else 1
    n = rows.shape[lead] if rows.ndim > 1 else 1
    per = max(rows.nbytes, dst.nbytes) // max(n, 1)
    if not last and per > _SLAB_BYTES:
        _columns(x, out, axis, fn)
        return out
    k = max(1, min(n, _SLAB_BYTES // max(per, 1)))

    def slab(i: int) -> None:
        j = min(k, n - i)
        src = rows.narrow(lead, i, j)
        y = fn(src.contiguous() if last else src.movedim(axis, -1).contiguous())
        if last:
            dst.narrow(0, i, j).copy_(y)
        else:
            dst.narrow(lead, i, j).copy_(y.movedim(-1, axis))

    each_on_one_thread([lambda i=i: slab(i) for i in range(0, n, k)], x)
    return out


def _columns(x: torch.Tensor, out: torch.Tensor, axis: int, fn) -> None:
    """:func:`_along_last` for a middle ``axis`` whose slabs along the lead axis would be
    large (one layer of a 1B model's role is 46 MB, and the FFT's temporaries several
    times that): ``x`` seen as ``(p, n, q)``, each slab is a block of ``q``'s columns of
    one ``p``, turned so ``axis`` is last. The same rows, so the same bits."""
    shape = x.shape
    p, n, q = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])
    t = out.shape[axis]
    src, dst = x.reshape(p, n, q), out.view(p, t, q)
    k = max(1, min(q, _SLAB_BYTES // (max(n, t) * x.element_size())))

    def slab(i: int, c: int) -> None:
        j = min(k, q - c)
        y = fn(src[i, :, c : c + j].T.contiguous())
        dst[i, :, c : c + j].copy_(y.T)

    each_on_one_thread([lambda i=i, c=c: slab(i, c) for i in range(p) for c in range(0, q, k)], x)


def lowpass_coefficients(x: torch.Tensor, axis: int, m: int) -> torch.Tensor:
    """The first ``m`` orthonormal DCT-II coefficients along ``axis``."""
    n = x.shape[axis]
    if n <= _DENSE_MAX:
        return apply_matrix(x, axis, dct_matrix(n, x.device, x.dtype)[:m])
    return _along_last(x, axis, lambda v: _fft_forward(v, m), m)


def from_coefficients(coef: torch.Tensor, axis: int, t: int) -> torch.Tensor:
    """Inverse DCT at length ``t`` from leading coefficients (truncated or zero-padded)."""
    m = min(coef.shape[axis], t)
    if t <= _DENSE_MAX:
        return apply_matrix(
            coef.narrow(axis, 0, m), axis, dct_matrix(t, coef.device, coef.dtype)[:m].T
        )
    return _along_last(coef, axis, lambda v: _fft_inverse(v, t), t)


def resize_axis(x: torch.Tensor, axis: int, t: int) -> torch.Tensor:
    """DCT resize of one axis (compute dtype in and out)."""
    s = x.shape[axis]
    if s == t:
        return x
    if max(s, t) <= _DENSE_MAX:
        return _resize_dense(x, axis, t)
    return _along_last(x, axis, lambda v: _fft_resize(v, t), t)


def _transform(x: torch.Tensor, axes: Sequence[int], inverse: bool) -> torch.Tensor:
    for a in norm_axes(axes, x.ndim):
        n = x.shape[a]
        if n <= _DENSE_MAX:
            c = dct_matrix(n, x.device, x.dtype)
            x = apply_matrix(x, a, c.T if inverse else c)
        elif inverse:
            x = _along_last(x, a, lambda v, n=n: _fft_inverse(v, n), n)
        else:
            x = _along_last(x, a, lambda v, n=n: _fft_forward(v, n), n)
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
