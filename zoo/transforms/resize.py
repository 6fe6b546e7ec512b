"""``resize``: the one entry point materialize uses to bring a signal to a target shape."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from zoo import _memory
from zoo._threads import one_thread
from zoo.errors import TransformError

from . import baselines, wavelets
from ._checks import as_float, check_shape, norm_axes, norm_axis, restore
from ._filters import bank
from .dct import dct_resize, resize_axis, resize_order
from .sizes import dyadic_plan

METHODS = ("dwt", "dct", "select", "tile", "net2net")
RESCALES = ("none", "std", "fan", "fan-sqrt", "exact")


def _dwt_resize(x: torch.Tensor, target: list[int], wavelet: str) -> torch.Tensor:
    plans = {a: dyadic_plan(s, t) for a, (s, t) in enumerate(zip(x.shape, target, strict=True))}
    sizes = list(x.shape)
    # Shrinking axes first (the data gets smaller), then growing ones; see sizes.py.
    for a in resize_order(sizes, target):
        s, t = sizes[a], target[a]
        levels, mid = plans[a]
        if t < s:
            x = wavelets.lowpass_down(x, [a], wavelet, levels) if levels else x
            x = resize_axis(x, a, t)
        else:
            x = resize_axis(x, a, mid)
            x = wavelets.lowpass_up(x, [a], wavelet, levels) if levels else x
    return x


def exact_gain(source: Sequence[int], target: Sequence[int], fan_in_axes: Sequence[int]) -> float:
    """The ``exact`` amplitude factor of a raw dwt/dct result: values, not coefficients.

    An orthonormal low-pass (any wavelet, the DCT) turns a constant signal of length ``S``
    into a constant ``sqrt(S / T)`` times larger at length ``T``; dividing by that on every
    resized axis gives copies of each unit when growing and means of merged units when
    shrinking. Along fan-in axes the result is then multiplied by ``S / T``: a grown input
    repeats each unit ``T / S`` times, so each copy carries that share of the weight (as
    HyperCloning divides); a shrunk input stands for ``S / T`` merged units, so it carries
    their summed weight. A Linear layer whose input is grown by repetition, or shrunk by
    merging equal units, then computes the same outputs (grown the same way).
    """
    gain = 1.0
    for a, (s, t) in enumerate(zip(source, target, strict=True)):
        if s != t:
            gain *= math.sqrt(t / s) * (s / t if a in fan_in_axes else 1.0)
    return gain


def _rescale(y, x, rescale, reference_std, fan_in_axes, target):
    if rescale == "none":
        return y
    if rescale == "exact":
        gain = exact_gain(x.shape, target, fan_in_axes)
        return y if gain == 1.0 else torch.mul(y, gain)
    with one_thread(y):
        if reference_std is None:
            ref = float(x.std(correction=0)) if x.numel() > 1 else 0.0
        else:
            ref = float(reference_std)
        cur = float(y.std(correction=0)) if y.numel() > 1 else 0.0
    gain = ref / cur if cur > 0.0 and ref > 0.0 else None
    fan = None
    if rescale in ("fan", "fan-sqrt"):
        fan = baselines.fan_in_multiplier(list(x.shape), target, fan_in_axes)
        # fan-sqrt: the 1/sqrt(fan-in) scaling random inits follow (inputs taken as
        # independent); fan: 1/fan-in, exact when the wider input repeats the narrower one.
        fan = math.sqrt(fan) if rescale == "fan-sqrt" else fan
    if gain is None and fan is None:
        return y
    # One hinted output written in place: same roundings as ``y * gain / fan``, without
    # a second fresh (page-faulting) full-size temporary.
    out = _memory.empty(y.shape, like=y)
    if gain is not None:
        torch.mul(y, gain, out=out)
        if fan is not None:
            out.div_(fan)
    else:
        torch.div(y, fan, out=out)
    return out


def rescale_like(
    y: torch.Tensor,
    source_shape: Sequence[int],
    *,
    rescale: str,
    reference_std: float | None,
    fan_in_axes: Sequence[int] = (),
) -> torch.Tensor:
    """Apply :func:`resize`'s amplitude rule to an already resized ``y``.

    For results computed elsewhere, e.g. a stored approximation band that already has the
    target shape: ``resize(x, shape, rescale=r)`` equals ``rescale_like(raw, x.shape,
    rescale=r, reference_std=std(x))`` up to rounding, where ``raw`` is the unrescaled result.
    """
    if rescale not in RESCALES:
        raise TransformError(f"`rescale` {rescale!r} is not one of {', '.join(RESCALES)}.")
    if rescale not in ("none", "exact") and reference_std is None:
        raise TransformError("`reference_std` (the source's std) is needed to rescale `y`.")
    yf = as_float(y, "y")
    fan = norm_axes(fan_in_axes, yf.ndim, "fan_in_axes")
    source = check_shape(source_shape, yf.ndim, "source_shape")
    # With a reference std given, _rescale reads nothing of the source but its shape.
    out = _rescale(yf, _Shape(tuple(source)), rescale, reference_std, fan, list(yf.shape))
    return restore(out, y)


@dataclass(frozen=True)
class _Shape:
    shape: tuple[int, ...]


def resize(
    x: torch.Tensor,
    shape: Sequence[int],
    *,
    method: str = "dwt",
    wavelet: str = "haar",
    rescale: str = "none",
    fan_in_axes: Sequence[int] = (),
    reference_std: float | None = None,
    layer_axis: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Resize a signal to ``shape``; axes whose size is equal are untouched.

    Args:
        x: floating-point tensor (fp16/bf16 computed in fp32, returned in their dtype).
        shape: target size per dim, all positive; any mix of growing and shrinking axes.
        method: ``"dwt"`` (BoT: whole wavelet levels plus a DCT bridge for non-dyadic
            ratios, see :mod:`zoo.transforms.sizes`), ``"dct"`` (FRONT-style band-limited
            resize), ``"select"`` (weight selection, shrink only), ``"tile"``
            (HyperCloning, integer multiples), ``"net2net"`` (random unit copies).
        wavelet: for ``"dwt"``: any discrete wavelet PyWavelets knows.
        rescale: ``"none"``: raw output (paper-faithful); ``"std"``: multiply so the whole
            result's std equals ``reference_std``; ``"fan"``: ``"std"`` then divide by the
            fan-in multiplier ``prod(T / S)`` over ``fan_in_axes``; ``"fan-sqrt"``: by its
            square root instead (the variance rule of random inits). Applied after every
            method alike (for tile/net2net, whose output already carries the fan-in
            division, ``"fan"`` gives the same result and ``"std"`` undoes the division).
            ``"exact"`` (dwt and dct only): values instead of orthonormal coefficients,
            fan-in axes summed when shrinking and split when growing (:func:`exact_gain`).
        fan_in_axes: input-width axes (for HF Linear ``(L, out, in)``: the last one).
        reference_std: the source's std (population); default ``x.std(correction=0)``.
        layer_axis: the depth axis; used by ``select`` (first N layers), ``tile`` and
            ``net2net`` (stacking). ``dwt`` and ``dct`` treat it like any other axis.
        generator: for ``net2net``.

    Example:
        >>> import torch
        >>> resize(torch.ones(12, 8), (6, 16), method="dwt").shape
        torch.Size([6, 16])
    """
    if method not in METHODS:
        raise TransformError(f"`method` {method!r} is not one of {', '.join(METHODS)}.")
    if rescale not in RESCALES:
        raise TransformError(f"`rescale` {rescale!r} is not one of {', '.join(RESCALES)}.")
    if rescale == "exact" and method not in ("dwt", "dct"):
        raise TransformError(
            f"`rescale` 'exact' undoes the orthonormal gain of dwt and dct; {method!r} "
            "keeps amplitudes already."
        )
    if reference_std is not None and not (
        isinstance(reference_std, (int, float))
        and math.isfinite(reference_std)
        and reference_std >= 0
    ):
        raise TransformError(
            f"`reference_std` must be a finite number >= 0, got {reference_std!r}."
        )
    xf = as_float(x)
    target = check_shape(shape, xf.ndim)
    fan = norm_axes(fan_in_axes, xf.ndim, "fan_in_axes")
    la = norm_axis(layer_axis, xf.ndim, "layer_axis")
    if method == "dwt":
        bank(wavelet)
        y = _dwt_resize(xf, target, wavelet)
    elif method == "dct":
        y = dct_resize(xf, target)
    elif method == "select":
        y = baselines.weight_select(xf, target, layer_axis=la)
    elif method == "tile":
        y = baselines.tile(xf, target, fan_in_axes=fan, layer_axis=la)
    else:
        y = baselines.net2net_widen(xf, target, fan_in_axes=fan, generator=generator, layer_axis=la)
    return restore(_rescale(y, xf, rescale, reference_std, fan, target), x)
