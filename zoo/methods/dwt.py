"""BoT's discrete wavelet transform (arXiv 2603.07506): whole wavelet levels, and a DCT
bridge for ratios that are not powers of two (:mod:`zoo.transforms.sizes`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Method

if TYPE_CHECKING:
    import torch


class Dwt(Method):
    """Shrink by keeping the approximation band, grow by synthesis with zero details;
    reads a learngene of stored bands when one holds the target's shape."""

    name = "dwt"
    learngene = True
    options = frozenset({"wavelet", "rescale", "norm", "depth", "order"})

    def resize(self, x, target, *, wavelet, **_) -> torch.Tensor:
        from zoo.transforms import wavelets
        from zoo.transforms._filters import bank
        from zoo.transforms.dct import resize_axis, resize_order
        from zoo.transforms.sizes import dyadic_plan

        bank(wavelet)  # names the wavelet before any work when PyWavelets does not know it
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


DWT = Dwt()
