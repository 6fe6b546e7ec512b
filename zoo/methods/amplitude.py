"""The amplitude rule: how loud a resized signal is, decided and applied in one place.

A resize's raw result keeps the method's own scale (orthonormal coefficients for dwt and
dct, the source's values for the baselines). A recipe's ``rescale`` then scales the whole
result (``none``, ``std``, ``fan``, ``fan-sqrt``, ``exact``), and normalization layers may
be moment-matched to the source. :class:`Amplitude` says which of these a signal gets; the
same rule applies whether the signal was computed from the source
(:func:`zoo.methods.resize`) or read from a learngene (a stored band, a FRONT block).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoo.errors import TransformError

if TYPE_CHECKING:
    import torch

    from .base import Method

RESCALES = ("none", "std", "fan", "fan-sqrt", "exact")

# Bump when the rule changes what a materialization writes; recorded on its lineage edge
# (absent: "1"), so a checkpoint recorded before re-derives by its own rule. 2: an output
# head's input width is a fan-in like a linear layer's, so a grown untied head keeps the
# source's logits (it doubled them under HyperCloning). 3: so is the width of the
# normalization that only a tied output head reads, so a grown tied head keeps them too.
# 4: a normalization is matched to the source's moments over the population on both sides
# (the source's std was a sample's, n-1, and so was the result's: a tiled norm of n gains,
# whose population std is the source's, came out stretched by sqrt((2n-1)/(2n-2))).
# 5: the std rules (std, fan, fan-sqrt) give the result the source's population std, as
# zoo.methods.resize documents (they were given its sample std, sqrt(n/(n-1)) larger);
# and the normalization a tied head reads is divided as the rule divides linear layers
# (fan and exact: by the fan-in multiplier, fan-sqrt: by its root, std and none: not at
# all; a method that tiles divides by it): it was divided by the multiplier under every
# rule, halving a norm the rule meant to keep.
# 6: a tied output head the source file holds beside the embedding it is tied to, with the
# same bytes, is that embedding, as transformers loads it (zoo.families.base.Ties): it is
# derived as the tied case is, with the normalization it reads divided; before, it was
# derived as an untied head while the target's config still said tied, so re-tying the
# grown model multiplied its logits by the width multiplier.
AMPLITUDE_VERSION = "6"

CURRENT = int(AMPLITUDE_VERSION)

# How each rule divides a linear layer's fan-in, as a power of the fan-in multiplier.
FAN_POWER = {"none": 0.0, "std": 0.0, "fan": 1.0, "fan-sqrt": 0.5, "exact": 1.0}


def population_std(sample_std: float, count: int) -> float:
    """The population std (n) of ``count`` values whose sample std (n-1) is given."""
    return sample_std * math.sqrt((count - 1) / count) if count > 1 else 0.0


NORM_KINDS = ("norm_weight", "norm_bias")


@dataclass(frozen=True)
class Amplitude:
    """The amplitude rule one signal gets under one recipe.

    Attributes:
        rescale: applied to the resized tensor (``none`` for normalization layers and for
            methods without the ``rescale`` option).
        fan_in_axes: the signal's input-width axes (linear layers and output heads: a
            head reading a hidden state twice as wide, each unit repeated, is halved so
            its logits stay the source's; the normalization feeding a head tied to the
            embeddings, whose weights are not divided, is halved in its place).
        match_moments: normalization layers: affinely matched to the source's mean and
            std after the resize.
    """

    rescale: str = "none"
    fan_in_axes: tuple[int, ...] = ()
    match_moments: bool = False
    # A matched normalization with a fan-in (the one a tied head reads) is divided by the
    # fan-in multiplier to this power: how the recipe's rule divides linear layers.
    fan_power: float = 1.0

    @classmethod
    def of(
        cls,
        method: Method,
        kind: str,
        fan_in_axis: int | None,
        *,
        rescale: str,
        norm: str,
    ) -> Amplitude:
        """The rule for a signal of ``kind`` made by ``method`` with these options: norm
        layers keep the method's scale unless the rescale is not ``none`` or ``norm`` is
        ``match`` (then they take the source's moments, whatever the method); other signals
        take the rescale of a method that reads one."""
        fan = () if fan_in_axis is None else (fan_in_axis,)
        if kind in NORM_KINDS:
            match = "norm" in method.options and (rescale != "none" or norm == "match")
            power = FAN_POWER[rescale] if "rescale" in method.options else 1.0
            return cls("none", fan, match, power)
        return cls(rescale if "rescale" in method.options else "none", fan, False)

    @property
    def scales_by_std(self) -> bool:
        """Whether the resized signal is scaled by its own std (``std`` and the ``fan``
        rules); ``exact`` depends on shapes only."""
        return self.rescale not in ("none", "exact")

    @property
    def needs_reference(self) -> bool:
        """Whether the source's (mean, std) is read."""
        return self.match_moments or self.scales_by_std

    def finish(
        self,
        y: torch.Tensor,
        reference: tuple[float, float] | None,
        source_shape: Sequence[int],
        *,
        version: int = CURRENT,
    ) -> torch.Tensor:
        """``y`` (already rescaled, in its output dtype) moment-matched when the rule asks.

        Matching undoes any division, so a normalization with a fan-in (the one a tied
        output head reads) is divided after it, as the rule divides linear layers.
        ``reference`` is the mean and sample std of the whole source signal,
        ``source_shape`` (a group whose norms are matched is derived whole, never a layer
        or a block of rows at a time); both sides are matched over the population.
        ``version``: the amplitude version whose rule to follow (a checkpoint recorded
        under an earlier one re-derives by it; see :data:`AMPLITUDE_VERSION`)."""
        if self.match_moments and reference is not None:
            power = self.fan_power if version >= 5 else 1.0
            gain = 1 / fan_in_multiplier(source_shape, y.shape, self.fan_in_axes) ** power
            mean, std = reference
            sample_spread = version < 4
            if not sample_spread:
                std = population_std(std, math.prod(source_shape))
            return match_moments(y, mean, std, gain=gain, sample_spread=sample_spread)
        return y

    def apply(
        self,
        y: torch.Tensor,
        source_shape: Sequence[int],
        reference: tuple[float, float],
        *,
        whole_moments: bool = False,
        version: int = CURRENT,
    ) -> torch.Tensor:
        """The whole rule on a signal resized elsewhere (a learngene's stored band or
        FRONT block), with the source's statistics from the learngene."""
        if self.rescale != "none":
            y = rescale_like(
                y,
                source_shape,
                rescale=self.rescale,
                reference_std=self.reference_std(reference, math.prod(source_shape), version),
                fan_in_axes=self.fan_in_axes,
                whole_moments=whole_moments,
            )
        return self.finish(y, reference, source_shape, version=version)

    def reference_std(
        self, reference: tuple[float, float] | None, count: int, version: int = CURRENT
    ) -> float | None:
        """The std the rescale gives the result: the source's population std, from the
        sample std in ``reference`` of a source signal of ``count`` values (versions up
        to 4 gave it the sample std); None when the rule reads none."""
        if reference is None or self.rescale == "none":
            return None
        return population_std(reference[1], count) if version >= 5 else reference[1]


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


def fan_in_multiplier(src: Sequence[int], dst: Sequence[int], fan_in_axes: Sequence[int]) -> float:
    """``prod(dst[a] / src[a])`` over ``fan_in_axes``: how much wider each input got."""
    return math.prod(dst[a] / src[a] for a in fan_in_axes)


def scaled(
    y: torch.Tensor,
    source_shape: Sequence[int],
    rescale: str,
    reference_std: float | None,
    fan_in_axes: Sequence[int],
    source: torch.Tensor | None = None,
    *,
    whole_moments: bool = False,
    result_std: float | None = None,
) -> torch.Tensor:
    """``y`` (in its compute dtype, at the target shape) under ``rescale``; the std rules
    read ``reference_std``, else the std of ``source``, and ``result_std``, else the std
    of ``y`` (population stds in float64 by :mod:`zoo.transforms.moments`;
    ``whole_moments``: torch's over the whole tensor, the rule of transform versions up
    to 3)."""
    import torch

    from zoo import _memory

    if rescale == "none":
        return y
    target = list(y.shape)
    if rescale == "exact":
        gain = exact_gain(source_shape, target, fan_in_axes)
        return y if gain == 1.0 else torch.mul(y, gain)
    ref = _std(source, whole_moments) if reference_std is None else float(reference_std)
    cur = _std(y, whole_moments) if result_std is None else float(result_std)
    gain = ref / cur if cur > 0.0 and ref > 0.0 else None
    fan = None
    if rescale in ("fan", "fan-sqrt"):
        fan = fan_in_multiplier(list(source_shape), target, fan_in_axes)
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


def _std(t: torch.Tensor, whole: bool) -> float:
    """The population std of every element of ``t``."""
    from zoo._threads import one_thread
    from zoo.transforms.moments import mean_std

    if not whole:
        return mean_std(t, correction=0)[1]
    with one_thread(t):
        return float(t.std(correction=0)) if t.numel() > 1 else 0.0


def rescale_like(
    y: torch.Tensor,
    source_shape: Sequence[int],
    *,
    rescale: str,
    reference_std: float | None,
    fan_in_axes: Sequence[int] = (),
    whole_moments: bool = False,
) -> torch.Tensor:
    """Apply :func:`zoo.methods.resize`'s amplitude rule to an already resized ``y``.

    For results computed elsewhere, e.g. a stored approximation band that already has the
    target shape: ``resize(x, shape, rescale=r)`` equals ``rescale_like(raw, x.shape,
    rescale=r, reference_std=std(x))`` up to rounding, where ``raw`` is the unrescaled result.
    """
    from zoo.transforms._checks import as_float, check_shape, norm_axes, restore

    check_rescale(rescale)
    if rescale not in ("none", "exact") and reference_std is None:
        raise TransformError("`reference_std` (the source's std) is needed to rescale `y`.")
    yf = as_float(y, "y")
    fan = norm_axes(fan_in_axes, yf.ndim, "fan_in_axes")
    source = check_shape(source_shape, yf.ndim, "source_shape")
    return restore(scaled(yf, source, rescale, reference_std, fan, whole_moments=whole_moments), y)


def check_rescale(rescale: str) -> None:
    if rescale not in RESCALES:
        raise TransformError(f"`rescale` {rescale!r} is not one of {', '.join(RESCALES)}.")


def match_moments(
    y: torch.Tensor, mean: float, std: float, *, gain: float = 1.0, sample_spread: bool = False
) -> torch.Tensor:
    """``y`` shifted and scaled to ``mean`` and a population ``std``, then times ``gain``
    (computed in float32, returned in ``y``'s dtype); a constant ``y`` only shifts.
    ``sample_spread``: ``std`` and ``y``'s spread both taken with n-1, as amplitude
    versions up to 3 took them."""
    from zoo._threads import one_thread

    y32 = y.float()
    with one_thread(y32):
        correction = 1 if sample_spread else 0
        spread = y32.std(correction=correction) if y32.numel() > 1 else y32.new_tensor(0.0)
        centered = y32 - y32.mean()
    if float(spread) > 0 and std > 0:
        centered = centered * (std / spread)
    matched = centered + mean
    return (matched if gain == 1.0 else matched * gain).to(y.dtype)
