"""From scratch: the target architecture's own random initialization, the reference every
transfer is measured against."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Method

if TYPE_CHECKING:
    import torch

# HF's default initializer_range for every family zoo ships.
INIT_STD = 0.02


class Scratch(Method):
    """HF's initialization: normal(0, 0.02) weights, zero biases, unit norm gains, drawn
    on the CPU so every device gets the same numbers. Reads nothing of the source but its
    shapes."""

    name = "scratch"
    reads_source = False
    random = True
    # Draws in float32 and rounds once to the signal's dtype: handed the signal in its own
    # dtype, it never needs a float32 copy of it.
    in_source_dtype = True
    options = frozenset({"seed"})

    def resize(self, x, target, *, kind, generator, **_) -> torch.Tensor:
        import torch

        if kind == "norm_weight":
            return torch.ones(target, dtype=x.dtype, device=x.device)
        if kind in ("bias", "norm_bias"):
            return torch.zeros(target, dtype=x.dtype, device=x.device)
        values = torch.randn(target, generator=generator, dtype=torch.float32) * INIT_STD
        return values.to(device=x.device, dtype=x.dtype)


SCRATCH = Scratch()
