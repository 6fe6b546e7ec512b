"""Training-free baselines: weight selection (L2S), HyperCloning tiling and Net2Net (S2L).

Same conventions as the wavelet transforms: tensors in, tensors out, axes whose size is
equal are untouched, fp16/bf16 computed in fp32 and returned in the input dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zoo.errors import TransformError

from ._checks import (
    as_float,
    check_count,
    check_float,
    check_shape,
    norm_axes,
    norm_axis,
    restore,
)


def select_indices(s: int, t: int, *, layer: bool = False) -> list[int]:
    """Indices weight selection keeps when an axis shrinks from ``s`` to ``t``.

    * layer axis: the first ``t`` layers (Xu et al. 2023, "first-N layer selection");
    * ``s % t == 0``: every ``(s // t)``-th element starting at 0 (uniform selection);
    * otherwise: rounded linspace, ``floor(i * (s - 1) / (t - 1) + 1/2)`` for
      ``i < t``, in exact integer arithmetic (first and last element always kept).

    Example:
        >>> select_indices(12, 4), select_indices(12, 5), select_indices(12, 3, layer=True)
        ([0, 3, 6, 9], [0, 3, 6, 8, 11], [0, 1, 2])
    """
    s = check_count(s, "s")
    t = check_count(t, "t")
    if t > s:
        raise TransformError(f"select_indices keeps {t} of {s}: it shrinks, so `t` <= `s`.")
    if layer:
        return list(range(t))
    if s % t == 0:
        return list(range(0, s, s // t))
    return [(2 * i * (s - 1) + (t - 1)) // (2 * (t - 1)) for i in range(t)]


def _setup(x, shape, fan_in_axes, layer_axis, *, compute_dtype: bool = True):
    xf = as_float(x) if compute_dtype else check_float(x)
    target = check_shape(shape, xf.ndim)
    fan = set(norm_axes(fan_in_axes, xf.ndim, "fan_in_axes"))
    return xf, target, fan, norm_axis(layer_axis, xf.ndim, "layer_axis")


def weight_select(
    x: torch.Tensor, shape: Sequence[int], *, layer_axis: int | None = None
) -> torch.Tensor:
    """Weight selection (L2S): keep a subset of elements per shrinking axis.

    See :func:`select_indices` for exactly which. Growing an axis is refused.
    """
    # Selection only copies elements: it runs in the input's own dtype.
    xf, target, _, la = _setup(x, shape, (), layer_axis, compute_dtype=False)
    for a, (s, t) in enumerate(zip(xf.shape, target, strict=True)):
        if t > s:
            raise TransformError(
                f"`shape` grows axis {a} ({s} -> {t}); weight selection only shrinks. "
                "Use hypercloning, net2net, dwt or dct to grow."
            )
        if t < s:
            if a == la or s % t == 0:
                # The first t, or every (s // t)-th: a strided copy, not an element gather.
                step = 1 if a == la else s // t
                cut = [slice(None)] * xf.ndim
                cut[a] = slice(0, step * t, step)
                xf = xf[tuple(cut)].contiguous()
            else:
                idx = torch.tensor(select_indices(s, t, layer=a == la), device=xf.device)
                xf = xf.index_select(a, idx)
    return restore(xf, x)


def _divide_along(x: torch.Tensor, axis: int, div: torch.Tensor) -> torch.Tensor:
    view = [1] * x.ndim
    view[axis] = -1
    return x / div.to(x.dtype).reshape(view)


def tile(
    x: torch.Tensor,
    shape: Sequence[int],
    *,
    fan_in_axes: Sequence[int] = (),
    layer_axis: int | None = None,
    maps: Sequence[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """HyperCloning-style expansion: ``W' = tile(W) / n_in`` along fan-in axes.

    Each growing axis must grow by an integer multiple ``n``; the tensor is repeated
    ``n`` times along it (``[W, W, ...]``) and divided by ``n`` along ``fan_in_axes``,
    so a Linear layer fed a tiled input returns tiled outputs: the function is kept.
    The ``layer_axis`` (depth) grows by stacking the whole stack again (target layer
    ``i`` is source layer ``i % S``), which needs no integer multiple and no division.

    ``maps``: per axis, None to tile, or the source unit each target unit copies (a
    long tensor of length ``T`` naming every source unit ``n`` times), for units that
    must be copied in another order than tiling's (attention heads:
    :func:`zoo.methods.hypercloning.head_maps`).
    """
    xf, target, fan, la = _setup(x, shape, fan_in_axes, layer_axis, compute_dtype=False)
    growing = [a for a, (s, t) in enumerate(zip(xf.shape, target, strict=True)) if t != s]
    for a in growing:
        s, t = xf.shape[a], target[a]
        if t < s or (a != la and t % s):
            raise TransformError(
                f"`shape` changes axis {a} from {s} to {t}; tiling needs an integer "
                f"multiple (e.g. {s} -> {2 * s}). Use net2net, dwt or dct for other sizes."
            )
    given = _tile_maps(maps, xf, target, growing, la)
    # Copies commute with the divisions, so the source is divided (in the compute dtype,
    # one fan-in axis after another) and cast back before it is copied: each element is
    # rounded exactly as if the copies were divided, and the large passes are block
    # copies in the checkpoint's own dtype.
    divided = [a for a in growing if a in fan and a != la]
    if divided:
        # Divided in place, on a float copy never the caller's: one float copy of the
        # source at a time, not two (a 32000x2048 head: 0.26 GB less while it is divided).
        xf = as_float(xf)
        xf = xf.clone() if xf is x else xf
    for a in divided:
        xf.div_(target[a] // xf.shape[a])
    y = restore(xf, x)
    del xf  # the float copy, once cast back, is not kept beside the copies made below
    for a in growing:
        s, t = y.shape[a], target[a]
        if a in given:
            y = y.index_select(a, given[a])
            continue
        reps = [1] * y.ndim
        reps[a] = -(-t // s)
        y = y.repeat(reps)  # element j is element j % s: [W, W, ...]
        if y.shape[a] != t:  # the layer axis may stop part-way through a copy
            y = y.narrow(a, 0, t).contiguous()
    return y


def _tile_maps(maps, x, target, growing, layer_axis) -> dict[int, torch.Tensor]:
    """:func:`tile`'s ``maps`` by axis, checked: each names every source unit as many
    times as the axis's multiplier, so the division along a fan-in axis is its count."""
    if maps is None:
        return {}
    if len(maps) != x.ndim:
        raise TransformError(f"`maps` has {len(maps)} entries for a {x.ndim}-d tensor.")
    given = {}
    for a in growing:
        if maps[a] is None or a == layer_axis:
            continue
        s, t = x.shape[a], target[a]
        m = maps[a].to(device=x.device, dtype=torch.long)
        if (
            tuple(m.shape) != (t,)
            or int(m.min()) < 0
            or int(m.max()) >= s
            or bool((torch.bincount(m, minlength=s) != t // s).any())
        ):
            raise TransformError(
                f"`maps` must name each of the {s} source units of axis {a} {t // s} "
                f"times, in {t} target units."
            )
        given[a] = m
    return given


def net2net_widen(
    x: torch.Tensor,
    shape: Sequence[int],
    *,
    fan_in_axes: Sequence[int] = (),
    generator: torch.Generator | None = None,
    layer_axis: int | None = None,
    maps: Sequence[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Net2Net widening: copy random units, divide fan-in weights by the replica count.

    For each growing axis (in axis order) target unit ``i < S`` is source unit ``i`` and
    each extra unit copies ``torch.randint(0, S, (T - S,), generator=generator)``; along
    ``fan_in_axes`` every copy is divided by how many times its source unit appears, so a
    widened hidden layer computes the same function. Two calls with generators in the
    same state draw the same mapping: widen the producing and the consuming weights with
    equally seeded generators. ``generator=None`` means a CPU generator seeded with 0.
    The ``layer_axis`` grows by stacking (layer ``i`` copies ``i % S``, no division).

    ``maps``: per axis, the source unit each target unit copies (a long tensor of length
    ``T`` whose first ``S`` entries may be anything in ``[0, S)``), or None to draw as
    above. A model's producers and consumers of one set of units take the same map
    (:class:`zoo.methods.net2net.CopyMaps`), whatever order they are widened in.
    """
    xf, target, fan, la = _setup(x, shape, fan_in_axes, layer_axis)
    if maps is not None and len(maps) != xf.ndim:
        raise TransformError(f"`maps` has {len(maps)} entries for a {xf.ndim}-d tensor.")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    for a, (s, t) in enumerate(zip(xf.shape, target, strict=True)):
        if t == s:
            continue
        if t < s:
            raise TransformError(
                f"`shape` shrinks axis {a} ({s} -> {t}); Net2Net only widens. "
                "Use weight-selection, dwt or dct to shrink."
            )
        if a == la:
            xf = xf.index_select(a, torch.arange(t, device=xf.device) % s)
            continue
        given = maps[a] if maps is not None else None
        if given is not None:
            if tuple(given.shape) != (t,) or int(given.min()) < 0 or int(given.max()) >= s:
                raise TransformError(
                    f"`maps` must give each of the {t} target units of axis {a} a source "
                    f"unit in [0, {s})."
                )
            mapping = given.to(device=xf.device, dtype=torch.long)
        else:
            extra = torch.randint(0, s, (t - s,), generator=gen, device=gen.device)
            mapping = torch.cat([torch.arange(s, device=gen.device), extra]).to(xf.device)
        xf = xf.index_select(a, mapping)
        if a in fan:
            counts = torch.bincount(mapping, minlength=s)
            xf = _divide_along(xf, a, counts[mapping])
    return restore(xf, x)
