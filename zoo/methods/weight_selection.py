"""Weight selection (Xu et al. 2023, arXiv 2311.18823): a smaller model keeps a subset of
the source's weights (:func:`zoo.transforms.weight_select`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Method

if TYPE_CHECKING:
    import torch


class WeightSelection(Method):
    """The first layers; evenly spaced units of every narrower axis. Shrinks only."""

    name = "weight-selection"
    grows = False
    first_layers = True
    in_source_dtype = True
    layer_local = True

    def resize(self, x, target, *, layer_axis, **_) -> torch.Tensor:
        from zoo.transforms import weight_select

        return weight_select(x, target, layer_axis=layer_axis)

    def source_layer(self, layer: int, source_layers: int, target_layers: int) -> int:
        return layer  # the first layers (zoo.transforms.select_indices)


WEIGHT_SELECTION = WeightSelection()
