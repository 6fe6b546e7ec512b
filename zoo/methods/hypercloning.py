"""HyperCloning (Samragh et al. 2024, arXiv 2409.12903): a wider model repeats the
source's units and divides their inputs, so it computes the same function
(:func:`zoo.transforms.tile`).

Attention heads are units of their own: under grouped-query attention, query head ``q`` of
``H`` reads key/value head ``q // (H / K)`` of ``K`` (transformers' ``repeat_kv``). Tiling
query and key/value heads alike keeps that pairing only when both grow by the same
multiple; otherwise (key/value heads grown alone, 2 -> 4 under 8 query heads) the heads are
copied by :func:`head_maps`, so each query head still reads the keys and values it read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .base import Method

if TYPE_CHECKING:
    import torch

    from .net2net import CopyMaps

#: How HyperCloning copies attention heads; recorded on each lineage edge of a
#: hypercloning recipe, so a checkpoint re-derives by the rule it was made by. 1: every
#: axis tiled, attention's too, which pairs query heads with other key/value heads where
#: the two grow by different multiples; 2: those heads copied by :func:`head_maps`.
HYPERCLONING_VERSION = "2"


class Hypercloning(Method):
    """Tile every wider axis by a whole multiple, divide along fan-in; depth grows by
    stacking. Grows only."""

    name = "hypercloning"
    shrinks = False
    integer_multiples = True
    in_source_dtype = True
    layer_local = True
    keeps_function = True

    def resize(self, x, target, *, fan_in_axes, layer_axis, unit_maps=None, **_) -> torch.Tensor:
        from zoo.transforms import tile

        return tile(x, target, fan_in_axes=fan_in_axes, layer_axis=layer_axis, maps=unit_maps)

    def source_layer(self, layer: int, source_layers: int, target_layers: int) -> int:
        return layer % source_layers  # the whole stack again (zoo.transforms.tile)


HYPERCLONING = Hypercloning()


def head_maps(sh: int, skv: int, th: int, tkv: int) -> tuple[list[int], list[int]] | None:
    """(query head map, key/value head map): the source head each target head copies, when
    ``sh`` query heads in ``skv`` groups grow to ``th`` in ``tkv`` by whole multiples
    ``a = th / sh`` and ``b = tkv / skv``; None where tiling both (``a == b``) keeps every
    pairing. Each source query head is copied ``a`` times (the fan-in division) and
    target query head ``j`` copies one that source key/value head ``K[j // (th / tkv)]``
    served.

    Where ``b`` is a multiple of ``a``, the query heads are tiled as every other axis and
    within each tile the key/value heads are repeated in place (8 query heads, key/value
    heads 2 -> 4: 0 0 1 1, the query heads unchanged). Otherwise (query heads grow more:
    8 -> 16 under 2) the key/value heads are tiled and each group's query heads are
    tiled within its group (0 1 2 3 0 1 2 3 4 5 6 7 4 5 6 7)."""
    a, b = th // sh, tkv // skv
    if a == b:
        return None
    gs, gt = sh // skv, th // tkv
    if b % a == 0:
        block, per = tkv // a, b // a  # key/value heads per tile; copies of each in it
        return [j % sh for j in range(th)], [(m % block) // per for m in range(tkv)]
    kv = [m % skv for m in range(tkv)]
    query = [kv[j // gt] * gs + ((j // gt) // skv * gt + j % gt) % gs for j in range(th)]
    return query, kv


def head_copies(
    source: Mapping[str, int],
    target: Mapping[str, int],
    source_heads: tuple[int, int] | None,
    target_heads: tuple[int, int] | None,
) -> CopyMaps | None:
    """The unit maps of attention's query and key/value axes (:func:`head_maps`, each
    head's dimensions in order) for a model grown from ``source`` to ``target`` sizes;
    None where tiling keeps the function or no head is copied whole (a head dimension
    that changes regroups the matrices: no method keeps the function there)."""
    from .net2net import CopyMaps, _expand

    if source_heads is None or target_heads is None:
        return None
    (sh, skv), (th, tkv) = source_heads, target_heads
    s_q = source.get("attn", source.get("hidden"))
    t_q = target.get("attn", target.get("hidden"))
    s_kv, t_kv = source.get("kv", s_q), target.get("kv", t_q)
    if not s_q or not t_q or s_q % sh:
        return None
    d = s_q // sh
    if (th * d, skv * d, tkv * d) != (t_q, s_kv, t_kv) or th % sh or tkv % skv or th % tkv:
        return None
    maps = head_maps(sh, skv, th, tkv)
    if maps is None:
        return None
    query, kv = maps
    return CopyMaps(None, None, _expand(query, d), _expand(kv, d))
