"""Separable N-D discrete wavelet transforms with periodization (BoT).

Numerically equal to ``pywt.wavedecn`` / ``pywt.waverecn`` with ``mode="periodization"``
over the same ``axes`` (up to floating-point rounding). Periodization makes every level
halve (analysis) or double (synthesis) each transformed length exactly, so every length
that is decomposed must be divisible by ``2**level``; approximation bands of odd length
are fine to synthesize from.

Amplitude: the coefficients are the raw orthonormal ones. A smooth signal's ``cA`` grows
by ``2**(n/2)`` per level over ``n`` axes (white noise keeps its std); synthesis with zero
details shrinks a smooth signal's elements by ``2**(-n/2)`` per level.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from zoo import _memory
from zoo._threads import each_on_one_thread
from zoo.errors import TransformError

from . import _filters, _periodic
from ._checks import as_float, check_float, check_level, compute_dtype, norm_axes, restore


def _prepare(x, axes, level, wavelet, *, need_even: bool, upcast: bool = True):
    xf = as_float(x) if upcast else check_float(x)
    ax = norm_axes(axes, xf.ndim)
    if not ax:
        raise TransformError("`axes` must name at least one axis.")
    bank = _filters.bank(wavelet)
    if need_even:
        check_level(level, [xf.shape[a] for a in ax])
    else:
        check_level(level, [])
    return xf, ax, bank


def lowpass_down(
    x: torch.Tensor,
    axes: Sequence[int],
    wavelet: str,
    level: int = 1,
    *,
    out_dtype: torch.dtype | None = None,
):
    """``level`` analysis low-pass steps over ``axes``, returned in the compute dtype. An
    fp16/bf16 ``x`` is converted a slab at a time (the same bits as converted whole), so
    a large signal never has a float32 copy. ``out_dtype``: the result may come in this
    dtype instead, each slab rounded as it is written (the bits of rounding it whole)."""
    if _filters.is_haar(wavelet):
        return _haar_down(x, list(axes), level)
    taps = _periodic.analysis_taps(_filters.bank(wavelet)[0])
    for n in range(level):
        # Short axes first: a dense product over the largest data costs least per element.
        order = sorted(axes, key=lambda a: x.shape[a])
        steps = [(a, taps) for a in order]
        free = _free_axis(x.ndim, axes)
        if free is None and order[0] == min(axes) != x.ndim - 1:
            if len(order) > 1 and compute_dtype(x.dtype) != x.dtype:
                # Every step but the last runs slab by slab along the last step's axis,
                # which they do not mix; each slab is converted on its own. The last step
                # then runs slab by slab along the first axis, as below.
                x = _by_slabs(x, order[-1], steps[:-1], up=False)
                free, steps = order[0], steps[-1:]
            else:
                # Once the first axis is done the others run slab by slab along it.
                x = as_float(x)
                buf = _memory.empty(_grown(x.shape, order[:1], 0.5), like=x)
                x = _periodic.apply(x, order[0], taps, up=False, out=buf)
                free, steps = order[0], steps[1:]
        x = _by_slabs(x, free, steps, up=False, out_dtype=out_dtype if n == level - 1 else None)
    return x


def lowpass_up(c: torch.Tensor, axes: Sequence[int], wavelet: str, level: int = 1):
    """``level`` synthesis steps over ``axes`` with every detail band zero."""
    if _filters.is_haar(wavelet):
        return _haar_up(c, list(axes), level)
    taps = _periodic.synthesis_taps(_filters.bank(wavelet)[2])
    for _ in range(level):
        order = sorted(axes, key=lambda a: -c.shape[a])  # mirror of lowpass_down
        steps = [(a, taps) for a in order]
        free = _free_axis(c.ndim, axes)
        if free is None and order[-1] == min(axes) != c.ndim - 1:
            c = _by_slabs(c, order[-1], steps[:-1], up=True)
            buf = _memory.empty(_grown(c.shape, order[-1:], 2), like=c)
            c = _periodic.apply(c, order[-1], taps, up=True, out=buf)
        else:
            c = _by_slabs(c, free, steps, up=True)
    return c


def _free_axis(ndim: int, axes: Sequence[int]) -> int | None:
    """An axis outside ``axes`` and before all of them, or ``None``.

    Slabs along it change only the batch of each matrix product, never the shape of one
    product, so every slab rounds exactly as the whole tensor would."""
    return 0 if min(axes) > 0 and ndim > 1 else None


def _grown(shape, axes, factor) -> list[int]:
    return [int(n * factor) if d in axes else n for d, n in enumerate(shape)]


def _by_slabs(
    x: torch.Tensor, free: int | None, steps, *, up: bool, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Apply ``steps`` ((axis, taps) along axes other than ``free``) slab by slab along
    ``free`` (or to the whole tensor if ``None``); each slab gives the same bits as the
    whole tensor would. The result is in the compute dtype (or in ``out_dtype``, when
    slabs are written, each rounded into it); an fp16/bf16 ``x`` is converted slab by
    slab."""
    if free is None:
        x = as_float(x)
        for a, taps in steps:
            buf = _memory.empty(_grown(x.shape, [a], 2 if up else 0.5), like=x)
            x = _periodic.apply(x, a, taps, up=up, out=buf)
        return x
    if not steps:
        return as_float(x)
    factor = 2 if up else 0.5
    dtype = out_dtype or compute_dtype(x.dtype)
    out = _memory.empty(_grown(x.shape, [a for a, _ in steps], factor), like=x, dtype=dtype)
    n = x.shape[free]
    big = max(x.nbytes, out.nbytes) // max(n, 1)

    def slab(i: int, k: int) -> None:
        s = as_float(x.narrow(free, i, k))
        for a, taps in steps:
            s = _periodic.apply(s, a, taps, up=up)
        out.narrow(free, i, k).copy_(s)

    # Slabs are fixed by the shape; each runs whole on one thread (zoo/_threads.py).
    each_on_one_thread([lambda i=i, k=k: slab(i, k) for i, k in _slabs(n, big)], x)
    return out


# Haar analysis works on slabs of about this many input bytes, so each slab's partial sums
# stay in cache and the only large allocation is the output. Synthesis writes 2**n times
# what it reads, so its slabs are counted in output bytes (measured best at 8 MiB on a
# 2-core EPYC: cache-sized, yet few enough ops that per-call overhead stays small).
_SLAB_BYTES = 4 << 20
_UP_SLAB_BYTES = 8 << 20


def _slabs(n: int, row_bytes: int, slab_bytes: int = _SLAB_BYTES):
    """``(start, length)`` chunks of ``n`` rows, each about ``slab_bytes``."""
    k = max(1, min(n, slab_bytes // max(row_bytes, 1)))
    return [(i, min(k, n - i)) for i in range(0, n, k)]


def _haar_down(x: torch.Tensor, axes: list[int], level: int) -> torch.Tensor:
    for _ in range(level):
        x = _haar_down_once(x, axes)
    return x


def _haar_down_once(x: torch.Tensor, axes: list[int]) -> torch.Tensor:
    # Sum the 2**n corners of each 2x...x2 cell, then scale once. The additions happen in
    # a fixed order (outer corners in ``itertools.product`` order, then the innermost
    # pair), slab by slab along the first dim, straight into the preallocated output.
    last = x.ndim - 1
    outer = [a for a in axes if a != last]
    shape = list(x.shape)
    split, pos = [], {}
    for d, n in enumerate(shape):
        if d in outer:
            pos[d] = len(split) + 1
            split += [n // 2, 2]
        else:
            split.append(n)
    v = x.reshape(split)
    out_shape = [n // 2 if d in axes else n for d, n in enumerate(shape)]
    out = _memory.empty(out_shape, like=x, dtype=compute_dtype(x.dtype))
    scale = 2.0 ** (-len(axes) / 2)
    corners = []
    for corner in itertools.product((0, 1), repeat=len(outer)):
        idx = [slice(None)] * v.ndim
        for a, c in zip(outer, corner, strict=True):
            idx[pos[a]] = c
        corners.append(tuple(idx))
    rows = out_shape[0] if x.ndim > 1 else 1
    row_bytes = x.nbytes // max(rows, 1)
    for i, k in _slabs(rows, row_bytes) if x.ndim > 1 else [(0, 1)]:
        o = out.narrow(0, i, k) if x.ndim > 1 else out
        # An fp16/bf16 ``x`` is converted slab by slab (the same bits as whole).
        vs = as_float(v.narrow(0, i, k) if x.ndim > 1 else v)
        if outer:
            terms = [vs[c] for c in corners]
            acc = o if last not in axes else None
            acc = torch.add(terms[0], terms[1], out=acc)
            for term in terms[2:]:
                acc.add_(term)
        else:
            acc = vs
        if last in axes:
            w = acc.reshape(*acc.shape[:-1], acc.shape[-1] // 2, 2)
            torch.add(w[..., 0], w[..., 1], out=o)
        o.mul_(scale)
    return out


def _haar_up(c: torch.Tensor, axes: list[int], level: int) -> torch.Tensor:
    for _ in range(level):
        c = _haar_up_once(c, axes)
    return c


def _haar_up_once(c: torch.Tensor, axes: list[int]) -> torch.Tensor:
    # Zero-detail haar synthesis repeats each scaled coefficient over its 2x...x2 cell:
    # per slab, duplicate along the innermost axis (as a complex number with equal parts,
    # one vectorized pass into a reused buffer), then one broadcasting multiply by the
    # scale straight into the output. The buffer is allocated once per call with the
    # huge-page hint: fresh per-slab temporaries cost more in page faults than the math.
    last = c.ndim - 1
    scale = 2.0 ** (-len(axes) / 2)
    view, expand, target = [], [], []
    for d, n in enumerate(c.shape):
        if d in axes and d != last:
            view += [n, 1]
            expand += [n, 2]
        else:
            m = 2 * n if d in axes else n
            view.append(m)
            expand.append(m)
        target.append(2 * n if d in axes else n)
    out = _memory.empty(target, like=c)
    ov = out.view(expand)
    pairs = last in axes
    complex_ok = pairs and c.dtype in (torch.float32, torch.float64)
    rows = c.shape[0] if c.ndim > 1 else 1
    slabs = _slabs(rows, out.nbytes // max(rows, 1), _UP_SLAB_BYTES) if c.ndim > 1 else [(0, 1)]
    pair_buf = None
    if complex_ok:
        k_max = max(k for _, k in slabs)
        slab_shape = [k_max, *c.shape[1:]] if c.ndim > 1 else list(c.shape)
        pair_dtype = torch.complex64 if c.dtype == torch.float32 else torch.complex128
        pair_buf = _memory.empty(slab_shape, dtype=pair_dtype, device=c.device)
    for i, k in slabs:
        cs = c.narrow(0, i, k) if c.ndim > 1 else c
        if pairs:
            if complex_ok:
                z = pair_buf.narrow(0, 0, k) if c.ndim > 1 else pair_buf
                cs = torch.view_as_real(torch.complex(cs, cs, out=z))
            else:
                cs = cs.unsqueeze(-1).expand(*cs.shape, 2).contiguous()
            cs = cs.reshape(*cs.shape[:-2], -1)
        sview = list(view)
        sexp = list(expand)
        if c.ndim > 1:
            sview[0] = sexp[0] = k
        dst = ov.narrow(0, i, k) if c.ndim > 1 else ov
        torch.mul(cs.reshape(sview).expand(sexp), scale, out=dst)
    return out


def dwt_approx(
    x: torch.Tensor, *, axes: Sequence[int], level: int = 1, wavelet: str = "haar"
) -> torch.Tensor:
    """Approximation band ``cA`` after ``level`` DWT levels over ``axes`` (BoT L2S).

    Args:
        x: floating-point tensor; fp16/bf16 are computed in fp32.
        axes: axes to transform; each length must be divisible by ``2**level``.
        level: number of levels; each halves every axis in ``axes``.
        wavelet: any discrete wavelet PyWavelets knows.

    Returns:
        ``cA`` in ``x``'s dtype, equal to ``pywt.wavedecn(x, wavelet, mode="periodization",
        level=level, axes=axes)[0]``.

    Example:
        >>> import torch
        >>> dwt_approx(torch.ones(4, 4), axes=(0, 1)).tolist()
        [[2.0, 2.0], [2.0, 2.0]]
    """
    xf, ax, _ = _prepare(x, axes, level, wavelet, need_even=True, upcast=False)
    return restore(lowpass_down(xf, ax, wavelet, level, out_dtype=x.dtype), x)


def idwt_zero(
    ca: torch.Tensor, *, axes: Sequence[int], level: int = 1, wavelet: str = "haar"
) -> torch.Tensor:
    """Inverse DWT of ``ca`` with every detail band zero (BoT S2L).

    Each level doubles every axis in ``axes``. Equal to ``pywt.waverecn`` of ``ca`` with
    all-zero details, mode ``periodization``.

    Example:
        >>> import torch
        >>> idwt_zero(torch.full((1, 1), 2.0), axes=(0, 1)).tolist()
        [[1.0, 1.0], [1.0, 1.0]]
    """
    cf, ax, _ = _prepare(ca, axes, level, wavelet, need_even=False)
    return restore(lowpass_up(cf, ax, wavelet, level), ca)


def _keys(n: int) -> list[str]:
    return ["".join(k) for k in itertools.product("ad", repeat=n)]


def wavedec(
    x: torch.Tensor, *, axes: Sequence[int], level: int, wavelet: str
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Multi-level N-D DWT, like ``pywt.wavedecn(..., mode="periodization")``.

    Returns:
        ``(cA, details)``: ``details`` lists one dict per level, coarsest first; keys are
        strings of ``'a'``/``'d'`` per axis in ``axes`` order (e.g. ``'ad'``, ``'da'``,
        ``'dd'``), without the all-``'a'`` key.
    """
    xf, ax, bank = _prepare(x, axes, level, wavelet, need_even=True)
    lo, hi = (_periodic.analysis_taps(f) for f in bank[:2])
    details = []
    for _ in range(level):
        bands = {"": xf}
        for a in ax:
            bands = {
                k + s: _periodic.apply(v, a, t, up=False)
                for k, v in bands.items()
                for s, t in (("a", lo), ("d", hi))
            }
        xf = bands.pop("a" * len(ax))
        details.insert(0, {k: restore(bands[k], x) for k in _keys(len(ax)) if k in bands})
    return restore(xf, x), details


def waverec(
    ca: torch.Tensor,
    details: Sequence[dict[str, torch.Tensor | None]],
    *,
    axes: Sequence[int],
    wavelet: str,
) -> torch.Tensor:
    """Inverse of :func:`wavedec`; a missing or ``None`` detail band counts as zero."""
    cf, ax, bank = _prepare(ca, axes, 0, wavelet, need_even=False)
    lo, hi = (_periodic.synthesis_taps(f) for f in bank[2:])
    for lvl, band in enumerate(details):
        if not isinstance(band, dict):
            raise TransformError(f"`details[{lvl}]` must be a dict of bands, got {band!r}.")
        unknown = set(band) - set(_keys(len(ax)))
        if unknown:
            raise TransformError(f"`details[{lvl}]` has unknown keys {sorted(unknown)}.")
        bands = {"a" * len(ax): cf}
        for k, v in band.items():
            if v is None:
                continue
            vf = as_float(v, f"details[{lvl}][{k!r}]").to(cf.dtype)
            if vf.shape != cf.shape:
                raise TransformError(
                    f"`details[{lvl}][{k!r}]` has shape {tuple(vf.shape)}, expected "
                    f"{tuple(cf.shape)} (the approximation's shape at that level)."
                )
            bands[k] = vf
        for i in reversed(range(len(ax))):
            merged: dict[str, torch.Tensor] = {}
            for k, v in bands.items():
                y = _periodic.apply(v, ax[i], lo if k[i] == "a" else hi, up=True)
                key = k[:i]
                merged[key] = y if key not in merged else merged[key].add_(y)
            bands = merged
        cf = bands[""]
    return restore(cf, ca)


def scale_per_level(n_axes: int) -> float:
    """Factor by which one analysis level scales a smooth signal: ``2**(n/2)``."""
    return math.sqrt(2.0**n_axes)
