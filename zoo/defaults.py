"""zoo's default initialization per family and direction, chosen by the transfer benchmark.

The table maps ``(family, direction)`` to a :class:`Default` ``(method, wavelet, rescale,
norm)``. The evidence is in benchmarks/results/transfer.md (``zoo bench transfer``;
byte-level LMs on the Python standard library, 3 seeds, equal training budgets). Only
gpt2 (decoder, causal LM) and bert (encoder, masked LM) were measured; the other families
take the closest measured one and say so below. Re-run the benchmark and update this table together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from zoo.errors import InvalidInputError


class Default(NamedTuple):
    """One default recipe; the fields are :class:`zoo.derive.Recipe`'s."""

    method: str
    wavelet: str | None  # None for methods other than dwt
    rescale: str
    norm: str = "method"
    depth: str = "method"  # applies only when the target has more layers


#: Measured: see benchmarks/results/transfer.md for the table behind every entry.
#: Final validation loss, mean ± std over 3 seeds (best training-free baseline in brackets).
MEASURED: dict[tuple[str, str], Default] = {
    # 4x128 -> 2x64, 400 steps: weight selection 2.014 ± 0.005 ties dwt db2 raw 2.016 ± 0.009;
    # every BoT variant trails weight selection with x2 LayerNorm gains (1.961, a gain-scale
    # effect, not a transfer); dwt db2 fan 2.045 loses. At 4000 steps every method ties
    # (1.575-1.588). No BoT recipe beats the baseline. Units in similar order (eighth
    # session, order="similar"): every method gains at 400 steps (weight selection 1.993
    # ± 0.011, raw db2 1.982 ± 0.006) and ties at 4000 (1.577-1.580), so the order stays
    # "stored"; it makes GPT-2 S2L worse (db2 fan 1.597 vs 1.584) and BERT L2S ties.
    ("gpt2", "l2s"): Default("weight-selection", None, "none"),
    # 2x64 -> 4x128, 250 steps: dwt db2 fan 1.788 ± 0.009 beats hypercloning 1.809 ± 0.010;
    # 1500 steps: 1.584 ± 0.002 vs 1.632 ± 0.008; 4x128 -> 8x256, 400 steps: 1.723 ± 0.009
    # beats 1.749 ± 0.022. Identity layers for depth (seventh session): 1.590 ± 0.004, 0.006
    # behind, so the depth stays the method's. Eighth session: units in dissimilar order
    # 1.576 ± 0.004 (78% of hypercloning's steps), similar order 1.597; one run of one
    # family, and a learngene's order is fixed at extraction, so the order stays "stored".
    ("gpt2", "s2l"): Default("dwt", "db2", "fan"),
    # 4x128 -> 2x64, 400 steps: dwt db2 fan 2.931 ± 0.019 beats weight selection 2.954 ± 0.015,
    # raw db2 2.934 ± 0.023 ties it. 4000 steps from a source trained 4000 steps: raw db2
    # 2.046 ± 0.035 beats weight selection 2.131 ± 0.030 and fan 2.084 ± 0.021; from a source
    # still on the masked-LM plateau, raw db2 (doubled norm gains) leaves it, 2.290 vs fan 2.876.
    ("bert", "l2s"): Default("dwt", "db2", "none"),
    # 2x64 -> 4x128, 250 steps: dwt db2 fan 2.904 ± 0.030 beats hypercloning 2.942 ± 0.010;
    # raw db2 with norms matched to the source (norm="match") is better still, 2.865. At
    # 4x128 -> 8x256, 400 steps: fan 2.925 ± 0.003, norm-matched raw db2 2.934 ± 0.012 and
    # hypercloning 2.945 ± 0.043 tie; fan stays, with the better mean at the larger size.
    # 2x64 -> 4x128 at 1500 steps: fan 2.500 ± 0.035 beats hypercloning 2.625 ± 0.091; with
    # identity layers for depth (seventh session) 2.443 ± 0.027, ahead of fan beyond the
    # spread, and at hypercloning's final loss after 63% of its steps (fan: 73%).
    ("bert", "s2l"): Default("dwt", "db2", "fan", depth="identity"),
}

#: Families without a measurement of their own take the closest measured one.
CLOSEST = {
    "gpt2": "gpt2",
    "bert": "bert",
    "roberta": "bert",  # not measured: encoder with masked-LM pre-training, like bert
    "vit": "bert",  # not measured: encoder (post-/pre-LN differs), closest is bert
    "deit": "bert",  # not measured: vit with a distillation token
    "llama": "gpt2",  # measured on itself (sixth session): gpt2's defaults held
    "mistral": "gpt2",  # not measured: llama-shaped decoder, like llama
    "qwen2": "gpt2",  # not measured: llama-shaped decoder, like llama
    "qwen3": "gpt2",  # not measured: llama-shaped decoder, like llama
    "gemma": "gpt2",  # not measured: llama-shaped decoder, like llama
    "gemma2": "gpt2",  # not measured: llama-shaped decoder, like llama
    "gemma3": "gpt2",  # not measured: llama-shaped decoder, like llama
    "phi3": "gpt2",  # not measured: llama-shaped decoder, like llama
}

#: The whole table, every family zoo ships.
DEFAULTS: dict[tuple[str, str], Default] = {
    (family, direction): MEASURED[(measured, direction)]
    for family, measured in CLOSEST.items()
    for direction in ("l2s", "s2l")
}


def direction_of(source_sizes: Mapping[str, int], target_sizes: Mapping[str, int]) -> str:
    """``s2l`` if any changeable size grows, else ``l2s``."""
    grows = any(n > source_sizes.get(role, n) for role, n in target_sizes.items())
    return "s2l" if grows else "l2s"


def default_recipe(
    family: str, source_sizes: Mapping[str, int], target_sizes: Mapping[str, int]
) -> Default:
    """The recipe zoo uses when the user names none.

    Args:
        family: a family name (bert, roberta, gpt2, vit, deit, llama).
        source_sizes, target_sizes: changeable sizes, e.g. ``{"layers": 4, "hidden": 128}``
            (``Family.axis_sizes`` of the source and target configs).

    Example:
        >>> default_recipe("gpt2", {"layers": 4, "hidden": 128}, {"layers": 2, "hidden": 64})[:3]
        ('weight-selection', None, 'none')
    """
    if family not in CLOSEST:
        raise InvalidInputError(
            f"No default initialization for family {family!r}; known: {', '.join(CLOSEST)}."
        )
    return DEFAULTS[(family, direction_of(source_sizes, target_sizes))]


__all__ = ["CLOSEST", "DEFAULTS", "MEASURED", "Default", "default_recipe", "direction_of"]
