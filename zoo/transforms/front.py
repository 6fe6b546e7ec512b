"""FRONT learngene: z-scored, low-frequency 3-D DCT block of a layer-stacked signal.

Extraction: z-score each layer with its own scalar mean and std (population std), take
the orthonormal DCT-II over every axis (depth included), keep the top-left block of
``ceil(keep * n)`` coefficients per axis. Materialization: inverse DCT of the block at
any target shape (zero-padded or truncated), then de-normalize each target layer.

Depth rule (zoo's, not the public FRONT code's): target layer ``i`` of ``L_t`` sits at
source depth ``u = i * (L_s - 1) / (L_t - 1)`` (a single target layer sits at the middle)
and gets mean and std linearly interpolated between the two nearest source layers. The
first and last layers keep their own statistics and no two target layers share one
object, so expanded layers differ (the public code gives every layer past the source
depth the same aliased statistics and identical weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from zoo._threads import one_thread
from zoo.errors import TransformError

from ._checks import as_float, check_count, check_shape, norm_axis, restore
from .dct import from_coefficients, lowpass_coefficients


@dataclass(frozen=True)
class FrontBlock:
    """What :func:`front_extract` keeps.

    Attributes:
        block: low-frequency DCT coefficients of the z-scored signal (compute dtype).
        means: per-source-layer means, shape ``(L,)`` (``(1,)`` when ``layer_axis`` is None).
        stds: per-source-layer population stds, same shape (a constant layer stores 1).
        source_shape: shape of the source signal.
        layer_axis: the depth axis of the source, or None for one whole-tensor z-score.
        dtype: the source dtype; :func:`front_materialize` returns it.
    """

    block: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor
    source_shape: tuple[int, ...]
    layer_axis: int | None = 0
    dtype: torch.dtype = torch.float32


def _keep_sizes(keep: float | Sequence[float], shape: Sequence[int]) -> list[int]:
    ratios = [keep] * len(shape) if isinstance(keep, (int, float)) else list(keep)
    if len(ratios) != len(shape):
        raise TransformError(f"`keep` has {len(ratios)} ratios for a {len(shape)}-D signal.")
    sizes = []
    for r, n in zip(ratios, shape, strict=True):
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
            raise TransformError(f"`keep` ratios must be in (0, 1], got {r!r}.")
        sizes.append(max(1, math.ceil(round(r * n, 9))))
    return sizes


def _bcast(v: torch.Tensor, ndim: int, axis: int | None) -> torch.Tensor:
    if axis is None:
        return v.reshape([1] * ndim)
    view = [1] * ndim
    view[axis] = -1
    return v.reshape(view)


def front_extract(
    x: torch.Tensor, *, keep: float | Sequence[float], layer_axis: int | None = 0
) -> FrontBlock:
    """Extract a FRONT learngene from a layer-stacked signal.

    Args:
        x: floating-point signal, e.g. ``(L, d_out, d_in)``.
        keep: kept fraction of coefficients per axis (one ratio, or one per axis), in (0, 1].
        layer_axis: the depth axis (per-layer statistics), or None for whole-tensor ones.

    Example:
        >>> import torch
        >>> fb = front_extract(torch.randn(4, 8, 8), keep=0.5)
        >>> tuple(fb.block.shape), tuple(fb.means.shape)
        ((2, 4, 4), (4,))
    """
    xf = as_float(x)
    la = norm_axis(layer_axis, xf.ndim, "layer_axis")
    sizes = _keep_sizes(keep, xf.shape)
    flat = xf.reshape(1, -1) if la is None else xf.movedim(la, 0).reshape(xf.shape[la], -1)
    with one_thread(flat):
        means = flat.mean(dim=1)
        stds = flat.std(dim=1, correction=0) if flat.shape[1] > 1 else torch.zeros_like(means)
    stds = torch.where(stds > 0, stds, torch.ones_like(stds))
    # A widened copy is z-scored in place (the same bits): a 16-bit role then holds one
    # float32 copy, not three at once. The caller's float32 signal is left as it is.
    z = xf.sub_(_bcast(means, xf.ndim, la)) if xf is not x else xf - _bcast(means, xf.ndim, la)
    z = z.div_(_bcast(stds, xf.ndim, la))
    del xf
    for a, m in enumerate(sizes):
        z = lowpass_coefficients(z, a, m)
    return FrontBlock(z, means, stds, tuple(x.shape), la, x.dtype)


def layer_stats(values: torch.Tensor, target_layers: int) -> torch.Tensor:
    """Per-layer statistics at ``target_layers`` layers, linearly interpolated over depth.

    Example:
        >>> layer_stats(torch.tensor([1.0, 3.0]), 3).tolist()
        [1.0, 2.0, 3.0]
    """
    target_layers = check_count(target_layers, "target_layers")
    if values.ndim == 0 or values.shape[0] == 0:
        raise TransformError(f"`values` must hold one row per layer, got {tuple(values.shape)}.")
    n = values.shape[0]
    if n == target_layers:
        return values.clone()
    v = values.double()
    if target_layers == 1:
        pos = torch.tensor([(n - 1) / 2], dtype=torch.float64)
    else:
        pos = torch.arange(target_layers, dtype=torch.float64) * ((n - 1) / (target_layers - 1))
    lo = pos.floor().long().clamp(max=n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo).to(v.device)
    return ((1 - w) * v[lo] + w * v[hi]).to(values.dtype)


def front_materialize(
    block: FrontBlock, shape: Sequence[int], *, amplitude: bool = False
) -> torch.Tensor:
    """Materialize a FRONT learngene at ``shape`` (any positive sizes, same number of dims).

    The block is placed top-left in zeros of the target spectrum (truncated where the
    target is smaller), inverted with the orthonormal DCT at the target lengths, and each
    target layer is de-normalized with its interpolated mean and std (see module doc).

    Args:
        amplitude: multiply the normalized signal by ``sqrt(prod(T / S))`` over all axes,
            the orthonormal counterpart of FRONT's ``(h_t / h_s)(w_t / w_s)`` factor: a
            smooth signal then keeps its values at any size. Off by default.

    Returns:
        Tensor of ``shape`` in the source dtype.
    """
    if not isinstance(block, FrontBlock):
        raise TransformError(f"`block` must be a FrontBlock, got {type(block).__name__}.")
    target = check_shape(shape, len(block.source_shape))
    z = block.block
    for a, t in enumerate(target):
        z = from_coefficients(z, a, t)
    if amplitude:
        z = z * math.sqrt(math.prod(t / s for t, s in zip(target, block.source_shape, strict=True)))
    la = block.layer_axis
    n_layers = 1 if la is None else target[la]
    means = layer_stats(block.means, n_layers).to(z)
    stds = layer_stats(block.stds, n_layers).to(z)
    out = z * _bcast(stds, z.ndim, la) + _bcast(means, z.ndim, la)
    return restore(out, torch.empty(0, dtype=block.dtype))
