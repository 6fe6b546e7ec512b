"""HyperCloning (Samragh et al. 2024, arXiv 2409.12903): a wider model repeats the
source's units and divides their inputs, so it computes the same function
(:func:`zoo.transforms.tile`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Method

if TYPE_CHECKING:
    import torch


class Hypercloning(Method):
    """Tile every wider axis by a whole multiple, divide along fan-in; depth grows by
    stacking. Grows only."""

    name = "hypercloning"
    shrinks = False
    integer_multiples = True
    in_source_dtype = True
    layer_local = True

    def resize(self, x, target, *, fan_in_axes, layer_axis, **_) -> torch.Tensor:
        from zoo.transforms import tile

        return tile(x, target, fan_in_axes=fan_in_axes, layer_axis=layer_axis)

    def source_layer(self, layer: int, source_layers: int, target_layers: int) -> int:
        return layer % source_layers  # the whole stack again (zoo.transforms.tile)


HYPERCLONING = Hypercloning()
