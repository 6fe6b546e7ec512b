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

from zoo.errors import TransformError

from . import _filters, _periodic
from ._checks import as_float, check_level, norm_axes, restore


def _prepare(x, axes, level, wavelet, *, need_even: bool):
    xf = as_float(x)
    ax = norm_axes(axes, xf.ndim)
    if not ax:
        raise TransformError("`axes` must name at least one axis.")
    bank = _filters.bank(wavelet)
    if need_even:
        check_level(level, [xf.shape[a] for a in ax])
    else:
        check_level(level, [])
    return xf, ax, bank


def lowpass_down(x: torch.Tensor, axes: Sequence[int], wavelet: str, level: int = 1):
    """``level`` analysis low-pass steps over ``axes`` (compute dtype in, same out)."""
    if _filters.is_haar(wavelet):
        return _haar_down(x, list(axes), level)
    taps = _periodic.analysis_taps(_filters.bank(wavelet)[0])
    # Short axes first: a dense product over the largest data costs least per element.
    order = sorted(axes, key=lambda a: x.shape[a])
    for _ in range(level):
        for a in order:
            x = _periodic.apply(x, a, taps, up=False)
    return x


def lowpass_up(c: torch.Tensor, axes: Sequence[int], wavelet: str, level: int = 1):
    """``level`` synthesis steps over ``axes`` with every detail band zero."""
    if _filters.is_haar(wavelet):
        return _haar_up(c, list(axes), level)
    taps = _periodic.synthesis_taps(_filters.bank(wavelet)[2])
    order = sorted(axes, key=lambda a: -c.shape[a])  # mirror of lowpass_down
    for _ in range(level):
        for a in order:
            c = _periodic.apply(c, a, taps, up=True)
    return c


def _haar_down(x: torch.Tensor, axes: list[int], level: int) -> torch.Tensor:
    # Sum the 2**n corners of each 2x...x2 cell, then scale once: one pass over the input
    # for all non-contiguous axes, a pairwise add for the innermost one.
    last = x.ndim - 1
    outer = [a for a in axes if a != last]
    for _ in range(level):
        shape = list(x.shape)
        if outer:
            split = []
            for d, n in enumerate(shape):
                split += [n // 2, 2] if d in outer else [n]
            v = x.reshape(split)
            pos = {a: a + sum(1 for b in outer if b < a) + 1 for a in outer}
            acc = None
            for corner in itertools.product((0, 1), repeat=len(outer)):
                idx = [slice(None)] * v.ndim
                for a, c in zip(outer, corner, strict=True):
                    idx[pos[a]] = c
                term = v[tuple(idx)]
                acc = term.clone() if acc is None else acc.add_(term)
            x = acc
        if last in axes:
            v = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
            x = v[..., 0] + v[..., 1]
        x = x.mul_(2.0 ** (-len(axes) / 2))
    return x


def _haar_up(c: torch.Tensor, axes: list[int], level: int) -> torch.Tensor:
    # Zero-detail haar synthesis repeats each coefficient over its 2x...x2 cell.
    for _ in range(level):
        c = c * (2.0 ** (-len(axes) / 2))
        view, expand, target = [], [], []
        for d, n in enumerate(c.shape):
            if d in axes:
                view += [n, 1]
                expand += [n, 2]
                target.append(2 * n)
            else:
                view.append(n)
                expand.append(n)
                target.append(n)
        c = c.reshape(view).expand(expand).reshape(target)
    return c


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
    xf, ax, _ = _prepare(x, axes, level, wavelet, need_even=True)
    return restore(lowpass_down(xf, ax, wavelet, level), x)


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
