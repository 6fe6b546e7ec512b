"""``resize``: one signal brought to a target shape by a method named in the registry."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from zoo.errors import TransformError

from .amplitude import check_rescale, scaled
from .registry import METHODS

if TYPE_CHECKING:
    import torch


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
    unit_maps: Sequence[torch.Tensor | None] | None = None,
    kind: str = "linear",
    whole_moments: bool = False,
    result_std: float | None = None,
    raw: bool = False,
) -> torch.Tensor:
    """Resize a signal to ``shape``; axes whose size is equal are untouched.

    Args:
        x: floating-point tensor (fp16/bf16 computed in fp32, returned in their dtype).
        shape: target size per dim, all positive; any mix of growing and shrinking axes
            the method allows.
        method: a name of :data:`zoo.methods.METHODS`: ``"dwt"`` (BoT: whole wavelet
            levels plus a DCT bridge for non-dyadic ratios, see :mod:`zoo.transforms.sizes`),
            ``"dct"`` (FRONT-style band-limited resize), ``"weight-selection"`` (shrink
            only), ``"hypercloning"`` (integer multiples), ``"net2net"`` (random unit
            copies) or ``"scratch"`` (a fresh initialization of ``kind``).
        wavelet: for ``"dwt"``: any discrete wavelet PyWavelets knows.
        rescale: ``"none"``: raw output (paper-faithful); ``"std"``: multiply so the whole
            result's std equals ``reference_std``; ``"fan"``: ``"std"`` then divide by the
            fan-in multiplier ``prod(T / S)`` over ``fan_in_axes``; ``"fan-sqrt"``: by its
            square root instead (the variance rule of random inits). Applied after every
            method alike (for hypercloning and net2net, whose output already carries the
            fan-in division, ``"fan"`` gives the same result and ``"std"`` undoes the
            division). ``"exact"`` (methods with the ``rescale`` option: dwt and dct):
            values instead of orthonormal coefficients, fan-in axes summed when shrinking
            and split when growing (:func:`zoo.methods.amplitude.exact_gain`).
        fan_in_axes: input-width axes (for HF Linear ``(L, out, in)``: the last one).
        reference_std: the source's std (population); default ``x.std(correction=0)``.
        layer_axis: the depth axis; used by weight-selection (first N layers),
            hypercloning and net2net (stacking). ``dwt`` and ``dct`` treat it like any
            other axis.
        generator: for the methods that draw random numbers (net2net, scratch).
        unit_maps: for net2net, the source unit each target unit copies, per axis
            (:meth:`zoo.methods.net2net.CopyMaps.for_signal`); None draws from ``generator``.
        kind: the signal's kind, for scratch (``linear``, ``bias``, ``norm_weight``...).
        whole_moments: the std rules' statistics by the rule of transform versions up to
            3 (see :func:`zoo.methods.amplitude.scaled`).
        result_std: the std rules' std of the raw result, when it was taken elsewhere (a
            signal derived a layer at a time: the std of every layer's raw result).
        raw: return the method's result before the amplitude rule, in the compute dtype.

    Example:
        >>> import torch
        >>> resize(torch.ones(12, 8), (6, 16), method="dwt").shape
        torch.Size([6, 16])
    """
    from zoo.transforms._checks import (
        as_float,
        check_float,
        check_shape,
        norm_axes,
        norm_axis,
        restore,
    )

    m = METHODS.get(method) if isinstance(method, str) else None
    if m is None:
        raise TransformError(f"`method` {method!r} is not one of {', '.join(METHODS)}.")
    check_rescale(rescale)
    if rescale == "exact" and "rescale" not in m.options:
        exact = " and ".join(n for n, o in METHODS.items() if "rescale" in o.options)
        raise TransformError(
            f"`rescale` 'exact' undoes the orthonormal gain of {exact}; {method!r} "
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
    x = check_float(x)
    target = check_shape(shape, x.ndim)
    fan = norm_axes(fan_in_axes, x.ndim, "fan_in_axes")
    la = norm_axis(layer_axis, x.ndim, "layer_axis")
    options = dict(
        fan_in_axes=fan,
        layer_axis=la,
        kind=kind,
        wavelet=wavelet,
        generator=generator,
        unit_maps=unit_maps,
    )
    if rescale == "none" and m.in_source_dtype and not raw:
        # Same bits without the float32 copies of a large result.
        return restore(m.resize(x, target, **options), x)
    xf = as_float(x)
    y = m.resize(xf, target, **options)
    if raw:
        return y
    y = scaled(
        y,
        list(xf.shape),
        rescale,
        reference_std,
        fan,
        source=xf,
        whole_moments=whole_moments,
        result_std=result_std,
    )
    return restore(y, x)
