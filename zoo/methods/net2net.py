"""Net2Net (Chen et al. 2016, arXiv 1511.05641): a wider model copies randomly chosen
source units and divides their inputs by the copy count (:func:`zoo.transforms.net2net_widen`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Method

if TYPE_CHECKING:
    import torch


class Net2Net(Method):
    """Random unit copies for any larger size; depth grows by stacking. Grows only."""

    name = "net2net"
    shrinks = False
    random = True
    options = frozenset({"norm", "depth", "order", "seed"})

    def resize(self, x, target, *, fan_in_axes, layer_axis, generator, **_) -> torch.Tensor:
        from zoo.transforms import net2net_widen

        return net2net_widen(
            x, target, fan_in_axes=fan_in_axes, generator=generator, layer_axis=layer_axis
        )


NET2NET = Net2Net()
