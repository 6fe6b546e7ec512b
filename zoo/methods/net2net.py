"""Net2Net (Chen et al. 2016, arXiv 1511.05641): a wider model copies randomly chosen
source units and divides their inputs by the copy count (:func:`zoo.transforms.net2net_widen`).

The function is kept only if every tensor that writes a set of units and every tensor that
reads them copy the same units: one copy map per set (:class:`CopyMaps`), not one draw per
tensor. The sets are the residual stream (every ``hidden`` axis but attention's inner
one), the FFN units, and attention's query and key/value heads. Heads are copied whole,
so a copy attends exactly as its source (rotary pairs included); a key/value head's copy
serves copies of the query heads its source served. Normalization layers average over
the residual stream, which uneven copies change: there the function is kept only
approximately (HyperCloning's even copies keep it exactly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Method

if TYPE_CHECKING:
    import torch

#: How net2net draws its copies; recorded on each lineage edge of a net2net recipe, so a
#: checkpoint re-derives by the rule it was made by. 1: a fresh map per tensor and axis,
#: drawn in signal-name order (a unit's writers and readers copied different units);
#: 2: one map per set of units (:class:`CopyMaps`), each extra key/value head a random one,
#: which can leave a source query head uncopied where a key/value head serves fewer query
#: heads than its source did (key/value heads grown alone); 3: each source key/value head
#: first gets the copies its query heads need.
NET2NET_VERSION = "3"


class Net2Net(Method):
    """Random unit copies for any larger size; depth grows by stacking. Grows only."""

    name = "net2net"
    shrinks = False
    random = True
    keeps_function = True
    options = frozenset({"norm", "depth", "order", "seed"})

    def resize(
        self, x, target, *, fan_in_axes, layer_axis, generator, unit_maps=None, **_
    ) -> torch.Tensor:
        from zoo.transforms import net2net_widen

        return net2net_widen(
            x,
            target,
            fan_in_axes=fan_in_axes,
            generator=generator,
            layer_axis=layer_axis,
            maps=unit_maps,
        )

    def depth_map(self, source_layers: int, target_layers: int) -> list[int]:
        return [j % source_layers for j in range(target_layers)]  # the stack again


NET2NET = Net2Net()


@dataclass(frozen=True)
class CopyMaps:
    """The source unit each target unit copies, per set of units (None: it keeps its size).

    ``residual``: the residual stream; ``ffn``: FFN units (every layer alike);
    ``query`` and ``kv``: attention's inner axis of the query/output and of the key/value
    projections, unit by unit (heads times head dimensions).
    """

    residual: torch.Tensor | None
    ffn: torch.Tensor | None
    query: torch.Tensor | None
    kv: torch.Tensor | None

    @classmethod
    def draw(
        cls,
        seed: int,
        source: Mapping[str, int],
        target: Mapping[str, int],
        source_heads: tuple[int, int] | None,
        target_heads: tuple[int, int] | None,
        version: int = int(NET2NET_VERSION),
    ) -> CopyMaps:
        """Maps from ``source`` to ``target`` sizes (roles ``hidden``, ``ffn`` and, where
        the attention width is not ``hidden``, ``attn`` and ``kv``), drawn from one
        generator seeded by ``seed`` in a fixed order: the same maps whatever order the
        tensors are widened in. ``*_heads``: (query heads, key/value heads); ``version``:
        the :data:`NET2NET_VERSION` whose rule draws them."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        residual = _units(gen, source.get("hidden"), target.get("hidden"))
        ffn = _units(gen, source.get("ffn"), target.get("ffn"))
        s_q = source.get("attn", source.get("hidden"))
        t_q = target.get("attn", target.get("hidden"))
        s_kv, t_kv = source.get("kv", s_q), target.get("kv", t_q)
        if source_heads is None or target_heads is None or not s_q or not t_q:
            return cls(residual, ffn, None, None)
        (sh, skv), (th, tkv) = source_heads, target_heads
        d = s_q // sh
        whole_heads = (
            sh * d == s_q and th * d == t_q and skv * d == s_kv and tkv * d == t_kv and th >= sh
        )
        if whole_heads and tkv >= skv:
            query, kv = _heads(gen, sh, skv, th, tkv, cover=version >= 3)
            return cls(residual, ffn, _expand(query, d), _expand(kv, d))
        # A head dimension that changes: no head to copy whole, so units are copied one by
        # one (a query's dot products change); keys and values share the queries' map
        # where they are as wide.
        query = _units(gen, s_q, t_q)
        kv = query if (s_kv, t_kv) == (s_q, t_q) else _units(gen, s_kv, t_kv)
        return cls(residual, ffn, query, kv)

    def for_signal(self, key: str, axes: Sequence[str]) -> tuple[torch.Tensor | None, ...]:
        """The map of each axis of signal ``key`` with roles ``axes``."""
        from zoo.unit_order import ATTENTION_INNER

        inner = ATTENTION_INNER.get(key)
        keys_values = key.startswith(("attn.k.", "attn.v."))
        out: list[torch.Tensor | None] = []
        for i, role in enumerate(axes):
            if i == inner or role in ("attn", "kv"):
                out.append(self.kv if keys_values else self.query)
            elif role == "hidden":
                out.append(self.residual)
            elif role == "ffn":
                out.append(self.ffn)
            else:
                out.append(None)
        return tuple(out)


def _units(gen, s: int | None, t: int | None) -> torch.Tensor | None:
    """Unit ``i < s`` is itself; each extra unit copies a random one."""
    import torch

    if not s or not t or t <= s:
        return None
    return torch.cat([torch.arange(s), torch.randint(0, s, (t - s,), generator=gen)])


def _heads(
    gen, sh: int, skv: int, th: int, tkv: int, *, cover: bool = True
) -> tuple[list[int], list[int]]:
    """(query head map, key/value head map). The query heads a target key/value head
    serves copy the query heads its source served, taken in turn, so a group that grows
    repeats its heads and a head's copies share its key and value. A target key/value head
    that serves fewer query heads than its source did takes only some of them: with
    ``cover``, each source key/value head first gets as many copies, side by side, as it
    takes to serve all of its query heads (2 -> 4 key/value heads under 4 query heads:
    0 0 1 1, and the query heads stay in place), so each query head keeps a copy. The
    other key/value heads copy random ones."""
    import torch

    group_s, group_t = sh // skv, th // tkv
    copies = -(-group_s // group_t) if cover else 1
    kv = [s for s in range(skv) for _ in range(copies)][:tkv]
    kv += torch.randint(0, skv, (tkv - len(kv),), generator=gen).tolist()
    taken = [0] * skv
    query: list[int] = []
    for s in kv:
        query += [s * group_s + (taken[s] + i) % group_s for i in range(group_t)]
        taken[s] += group_t
    return query, kv


def _expand(heads: list[int], d: int) -> torch.Tensor:
    """A head map as a unit map: head ``h``'s ``d`` units in order."""
    import torch

    h = torch.tensor(heads, dtype=torch.long)
    return (h[:, None] * d + torch.arange(d)).reshape(-1)
