"""Filter banks from PyWavelets, as cached torch tensors per (wavelet, device, dtype)."""

from __future__ import annotations

import functools

import pywt

from zoo.errors import TransformError


@functools.cache
def _discrete_names() -> frozenset[str]:
    return frozenset(pywt.wavelist(kind="discrete"))


@functools.lru_cache(maxsize=64)
def bank(name: str) -> tuple[tuple[float, ...], ...]:
    """(dec_lo, dec_hi, rec_lo, rec_hi) of a discrete wavelet, as float64 tuples."""
    if not isinstance(name, str) or name not in _discrete_names():
        raise TransformError(
            f"`wavelet` {name!r} is not a discrete wavelet PyWavelets knows; "
            f"see pywt.wavelist(kind='discrete') (e.g. 'haar', 'db2', 'bior6.8')."
        )
    w = pywt.Wavelet(name)
    return tuple(tuple(float(v) for v in f) for f in (w.dec_lo, w.dec_hi, w.rec_lo, w.rec_hi))


def is_haar(name: str) -> bool:
    """True for the two-tap orthonormal average/difference pair (haar, db1)."""
    dec_lo = bank(name)[0]
    return len(dec_lo) == 2 and abs(dec_lo[0] - dec_lo[1]) < 1e-15


def is_orthogonal(name: str) -> bool:
    """True when synthesis is the adjoint of analysis (rec_lo is dec_lo reversed)."""
    dec_lo, _, rec_lo, _ = bank(name)
    return all(abs(a - b) < 1e-12 for a, b in zip(dec_lo, reversed(rec_lo), strict=True))
