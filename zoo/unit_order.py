"""Function-preserving unit orders: permute a checkpoint's units so neighbours are alike.

A trained network stores its units (residual-stream coordinates, FFN neurons) in an
arbitrary order. BoT's wavelets and FRONT's DCT low-pass every axis as if neighbouring
units were alike, and weight selection keeps every other unit as if neighbours could
stand in for each other. Reordering units leaves the network's outputs unchanged, so zoo
can choose the order those transforms see: ``similar`` chains units so that each sits next
to the most similar one not yet placed, ``dissimilar`` next to the least similar one.

What is permuted, and why it keeps the function:

* the **residual axis** (every ``hidden`` axis except attention's inner one), by one
  permutation for the whole model: embeddings, norms (LayerNorm and RMSNorm act per
  coordinate after a permutation-invariant statistic), and every matrix reading or
  writing the residual stream move together;
* the **FFN axis**, by one permutation per layer: the rows of its input (and gate)
  matrices and biases and the columns of its output matrix move together.

Attention's inner axis (heads x head_dim; rotary pairs in llama) is left as stored. The
model's outputs (logits, task heads) are unchanged; hidden states, which live on the
residual axis, come out in the new order. The measurements behind this module are in
benchmarks/results/transfer.md ("What each lever changes").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from zoo.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

    from zoo.families.base import Signal

#: ``stored``: units as the checkpoint has them (default); ``similar``, ``dissimilar``:
#: see the module doc.
ORDERS = ("stored", "similar", "dissimilar")

#: Signals whose ``hidden`` axis at this position is attention's inner (heads x head_dim)
#: axis, not the residual stream; every family names its attention projections so.
ATTENTION_INNER = {
    "attn.q.weight": 1,
    "attn.k.weight": 1,
    "attn.v.weight": 1,
    "attn.q.bias": 1,
    "attn.k.bias": 1,
    "attn.v.bias": 1,
    "attn.out.weight": 2,
}


def check_order(order: str) -> None:
    if order not in ORDERS:
        raise InvalidInputError(f"Unknown unit order {order!r}; choose one of {', '.join(ORDERS)}.")


def residual_axes(key: str, signal: Signal) -> list[int]:
    """Positions of ``signal``'s residual-stream axes."""
    inner = ATTENTION_INNER.get(key)
    return [i for i, role in enumerate(signal.axes) if role == "hidden" and i != inner]


def chain(gram: torch.Tensor) -> torch.Tensor:
    """A greedy nearest-neighbour chain through units, given their cosine ``gram``.

    Starts at the unit least like the rest on average (the most peripheral one, a
    natural end of the chain), then steps to the most similar unit not yet placed. Ties
    go to the lowest index (``argmax``).
    """
    import torch

    n = gram.shape[0]
    if n == 1:
        return torch.zeros(1, dtype=torch.long)
    current = int(gram.sum(dim=1).argmin())
    sim = gram.clone()
    sim.fill_diagonal_(-float("inf"))
    order = [current]
    sim[:, current] = -float("inf")
    for _ in range(n - 1):
        current = int(sim[current].argmax())
        order.append(current)
        sim[:, current] = -float("inf")
    return torch.tensor(order, dtype=torch.long)


def cosine_gram(blocks: Iterable[torch.Tensor], n: int) -> torch.Tensor:
    """Cosine similarity of ``n`` units whose features are the rows of ``blocks`` side by
    side, each block scaled to unit Frobenius norm so no one tensor decides the order.
    Accumulated block by block: blocks may come from a generator, so the features are
    never all in memory at once.

    Computed on the CPU in float64 whatever the device of the blocks: the greedy chain is
    discrete, and a rounding difference between devices could change it. One order per
    checkpoint, on every machine, is what lets a learngene's bands and the source signals
    a materialization falls back to agree, and a virtual checkpoint re-derive anywhere."""
    import torch

    gram = None
    for block in blocks:
        b = block.detach().to("cpu", torch.float64).reshape(n, -1)
        size = b.norm()
        if size == 0:
            continue
        b = b / size  # not in place: b may be the caller's own float64 tensor
        part = b @ b.t()
        gram = part if gram is None else gram.add_(part)
    if gram is None:
        return torch.eye(n, dtype=torch.float64)
    diag = gram.diagonal().clamp_min(1e-30).sqrt()
    return gram / diag[:, None] / diag[None, :]


def _rows(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """``tensor`` with ``axis`` first and the rest flattened: one row per unit."""
    t = tensor.movedim(axis, 0)
    return t.reshape(t.shape[0], -1)


def chained_order(
    signals: Mapping[str, Signal], order: str = "similar"
) -> tuple[dict[str, Signal], dict[str, list]]:
    """``signals`` with units chained by similarity (``similar``) or dissimilarity
    (``dissimilar``: the chain of the negated gram); also the permutations,
    ``{"hidden": [...], "ffn": [[...] per layer]}``, as index lists."""
    import dataclasses

    import torch

    residual = [(s.tensor, a) for k, s in signals.items() for a in residual_axes(k, s)]
    if not residual:
        raise InvalidInputError("This checkpoint has no residual axis to order.")
    width = residual[0][0].shape[residual[0][1]]
    sign = {"similar": 1.0, "dissimilar": -1.0}[order]
    hidden = chain(sign * cosine_gram((_rows(t, a) for t, a in residual), width))

    ffn_keys = sorted(k for k, s in signals.items() if "ffn" in s.axes)
    for key in ffn_keys:
        if signals[key].axes[0] != "layers" or signals[key].axes.count("ffn") != 1:
            raise InvalidInputError(f"Cannot order the FFN units of signal {key}.")
    layers = signals[ffn_keys[0]].tensor.shape[0] if ffn_keys else 0
    ffn = []
    for layer in range(layers):
        per_layer = [(signals[k].tensor[layer], signals[k].axes.index("ffn") - 1) for k in ffn_keys]
        units = per_layer[0][0].shape[per_layer[0][1]]
        ffn.append(chain(sign * cosine_gram((_rows(t, a) for t, a in per_layer), units)))

    out = {}
    for key, sig in signals.items():
        t = sig.tensor
        for axis in residual_axes(key, sig):
            t = t.index_select(axis, hidden.to(t.device))
        if key in ffn_keys:
            axis = sig.axes.index("ffn") - 1
            t = torch.stack([t[i].index_select(axis, ffn[i].to(t.device)) for i in range(layers)])
        out[key] = dataclasses.replace(sig, tensor=t.contiguous()) if t is not sig.tensor else sig
    return out, {"hidden": hidden.tolist(), "ffn": [p.tolist() for p in ffn]}


def ordered(signals: Mapping[str, Signal], order: str) -> dict[str, Signal]:
    """``signals`` in unit order ``order`` (one of :data:`ORDERS`)."""
    check_order(order)
    if order == "stored":
        return dict(signals)
    return chained_order(signals, order)[0]
