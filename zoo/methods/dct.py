"""FRONT's discrete cosine transform (arXiv 2603.07523): a band-limited resize that keeps
the lowest frequencies of every changed axis (:func:`zoo.transforms.dct_resize`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Method

if TYPE_CHECKING:
    import torch


class Dct(Method):
    """Truncate or zero-pad the orthonormal DCT; reads a learngene's stored low-frequency
    block (:func:`zoo.transforms.front_materialize`) when given one."""

    name = "dct"
    learngene = True
    options = frozenset({"rescale", "norm", "depth", "order"})

    def resize(self, x, target, **_) -> torch.Tensor:
        from zoo.transforms import dct_resize

        return dct_resize(x, target)


DCT = Dct()
