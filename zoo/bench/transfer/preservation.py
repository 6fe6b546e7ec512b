"""How much of the source's function a grown target keeps before any training.

A grown model that repeats every unit of the source computes the source's hidden states
repeated, tiled (``[h, h]``, as HyperCloning lays units out) or interleaved (``[h0, h0,
h1, h1, ...]``, as haar with zero details does), or copied as Net2Net's map says (the
source's units, then random copies). :func:`preservation` runs the source and each
method's target on the same validation windows, folds the target's last hidden states
back to the source's width by averaging the copies (every layout that applies; the best
one counts) and reports their cosine similarity with the source's: 1 means the function
is kept exactly, a random network gives about 0. It needs no LM head and no training, so
it measures a grow at full size where training it does not fit (e.g. on a CPU).
"""

from __future__ import annotations

from typing import Any

import torch

from .initializations import initialize
from .methods import MethodSpec
from .models import build_model, load_state


def fold(
    hidden: torch.Tensor, width: int, copies: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """``hidden`` (..., k * width) folded to (..., width) by averaging its ``k`` copies,
    laid out tiled or interleaved; with ``copies`` (the source unit each unit copies), by
    averaging the units that copy each source unit instead (``copied``), at any width, or
    by summing them (``copied-sum``: a state a tied LM head reads has each copy divided by
    its count, as the fan-in of that head, so its copies sum to the source's unit)."""
    if copies is not None:
        total = hidden.new_zeros(*hidden.shape[:-1], width).index_add_(-1, copies, hidden)
        counts = torch.bincount(copies, minlength=width).to(hidden)
        return {"copied": total / counts, "copied-sum": total}
    k = hidden.shape[-1] // width
    if k * width != hidden.shape[-1]:
        raise ValueError(f"width {hidden.shape[-1]} is not a multiple of {width}")
    lead = hidden.shape[:-1]
    return {
        "tiled": hidden.reshape(*lead, k, width).mean(-2),
        "interleaved": hidden.reshape(*lead, width, k).mean(-1),
    }


def residual_copies(spec: MethodSpec, source: int, target: int, seed: int):
    """The source unit each residual unit of a ``net2net`` target copies (its residual map
    is drawn first from the recipe's seed: :meth:`zoo.methods.net2net.CopyMaps.draw`);
    None for the other methods, and for a unit order other than the stored one."""
    from zoo.methods.net2net import NET2NET, CopyMaps

    if spec.method != NET2NET.name or spec.order != "stored" or target <= source:
        return None
    return CopyMaps.draw(seed, {"hidden": source}, {"hidden": target}, None, None).residual


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity of ``a`` and ``b`` per token (last axis)."""
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).mean())


@torch.no_grad()
def last_hidden(model, family: str, windows: torch.Tensor) -> torch.Tensor:
    base = getattr(model, model.base_model_prefix)
    model.eval()
    return base(input_ids=windows).last_hidden_state


@torch.no_grad()
def preservation(
    reg,
    family: str,
    source: str,
    specs: dict[str, MethodSpec],
    target: tuple[int, int],
    windows: torch.Tensor,
    *,
    source_state,
    seed: int = 0,
) -> dict[str, Any]:
    """Per method: the cosine of the folded target states with the source's, its layout."""
    src_model = build_model(family, source_state[0], seed=seed)
    load_state(src_model, family, source_state[1])
    want = last_hidden(src_model, family, windows)
    width = want.shape[-1]
    out = {}
    for name, spec in specs.items():
        state, config, _ = initialize(
            reg, family, source, spec, target, seed=seed, dct_keep=1.0, source_state=source_state
        )
        model = build_model(family, config, seed=seed)
        load_state(model, family, state)
        grown = last_hidden(model, family, windows)
        copies = residual_copies(spec, width, grown.shape[-1], seed)
        folds = fold(grown, width, copies)
        scores = {layout: cosine(h, want) for layout, h in folds.items()}
        best = max(scores, key=scores.get)
        out[name] = {"cosine": scores[best], "layout": best, "by_layout": scores}
        del model
    return out
