"""The most bytes of tensors alive at once while a function runs: the memory a transform
holds besides its input, measured by watching every tensor torch makes."""

from __future__ import annotations

from typing import Any


def peak_live_bytes(fn, given) -> tuple[Any, int]:
    """``fn()``'s result and the most bytes of tensors alive at once while it ran, besides
    the memory of ``given`` (its input). It runs on one thread, where every allocation is
    seen."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    live: dict[int, int] = {given.untyped_storage().data_ptr(): 0}
    peak = [0]

    class Live(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in live:
                    ptr = t.untyped_storage().data_ptr()
                    live[ptr] = t.untyped_storage().nbytes()
                    weakref.finalize(t, live.pop, ptr, None)
                    peak[0] = max(peak[0], sum(live.values()))
            return out

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with Live():
            result = fn()
    finally:
        torch.set_num_threads(before)
    return result, peak[0]
