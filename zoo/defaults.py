"""zoo's default initialization per family and direction, and the measurement behind it.

The table maps ``(family, direction)`` to a :class:`Default` ``(method, wavelet, rescale,
norm, depth)``. The rule: on a real pretrained checkpoint a default never loses to the
direction's best training-free baseline beyond the seed spread, so where no learngene
recipe has beaten that baseline there, the default *is* the baseline (weight selection to
shrink, HyperCloning to grow). The evidence is benchmarks/results/transfer.md
(``zoo bench transfer`` on all-MiniLM-L6-v2, a real pretrained BERT). The learngene recipes
(BoT's ``--method dwt --wavelet haar --rescale none``, FRONT's ``--method dct``, zoo's
``--rescale exact`` and ``fan``) stay one flag away. Re-run the benchmark and update this
table together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from zoo.errors import InvalidInputError
from zoo.methods import DCT, DWT, HYPERCLONING, WEIGHT_SELECTION


class Default(NamedTuple):
    """One default recipe; the fields are :class:`zoo.derive.Recipe`'s (``method`` a name
    of :data:`zoo.methods.METHODS`)."""

    method: str
    wavelet: str | None  # None for methods other than dwt
    rescale: str
    norm: str = "method"
    depth: str = "method"  # applies only when the target has more layers


def _by_name(*defaults: Default) -> dict[str, Default]:
    return {d.method: d for d in defaults}


#: Measured on a real checkpoint (benchmarks/results/transfer.md), final masked-LM
#: validation loss, mean ± std over seeds.
MEASURED: dict[tuple[str, str], Default] = {
    # all-MiniLM-L6-v2 6x384 -> 3x192 (H200, 500 steps of 64x128 tokens): weight selection
    # 5.16 ± .05 beats every learngene recipe (dwt db2 raw 5.37 ± .01, BoT haar raw 5.38,
    # FRONT 5.35, db2 fan 6.02; scratch 5.95). On a 2-core CPU (12x64 tokens a step) raw db2
    # and haar lead it after 120-240 steps and fall behind by 480 (5.54 ± .04 against haar
    # 5.57, a tie, and db2 5.59, a loss): a head start that training does not keep.
    ("bert", "l2s"): Default(WEIGHT_SELECTION.name, None, "none"),
    # all-MiniLM-L6-v2 6x384 -> 12x768 (H200, 500 steps): HyperCloning 3.02 / 3.09 beats
    # dwt db2 fan with identity depth 3.33 / 3.32; BoT and FRONT as published stay at
    # scratch's 6.37. At step 0 it is the only grow that keeps the source's function in
    # width (transfer.md).
    ("bert", "s2l"): Default(HYPERCLONING.name, None, "none"),
    # Decoders: no real checkpoint measured yet. Weight selection and HyperCloning by the
    # rule above; dwt db2 fan led HyperCloning only on tiny byte-level models, which also
    # ranked it first for BERT, where the real checkpoint reversed the order.
    ("gpt2", "l2s"): Default(WEIGHT_SELECTION.name, None, "none"),
    ("gpt2", "s2l"): Default(HYPERCLONING.name, None, "none"),
}

#: The best recipe measured for each learngene method, used when that method is asked for
#: without the rest (``zoo materialize LEARNGENE``, ``--method dwt``), and where the
#: default cannot make the target (HyperCloning grows by integer multiples only: the dwt
#: recipe makes any size).
BY_METHOD: dict[tuple[str, str], dict[str, Default]] = {
    # MiniLM shrink (H200): db2 raw 5.37 ± .01, FRONT raw 5.35; fan 6.02.
    ("bert", "l2s"): _by_name(Default(DWT.name, "db2", "none"), Default(DCT.name, None, "none")),
    # MiniLM grow (H200): db2 fan with identity depth 3.33; dct fan 4.84; raw 6.37 (both).
    ("bert", "s2l"): _by_name(
        Default(DWT.name, "db2", "fan", depth="identity"), Default(DCT.name, None, "fan")
    ),
    # Tiny byte-level decoders only (transfer.md, appendix).
    ("gpt2", "l2s"): _by_name(Default(DWT.name, "db2", "none"), Default(DCT.name, None, "none")),
    ("gpt2", "s2l"): _by_name(Default(DWT.name, "db2", "fan"), Default(DCT.name, None, "fan")),
}

#: Families without a measurement of their own take the closest measured one.
CLOSEST = {
    "gpt2": "gpt2",
    "bert": "bert",
    "roberta": "bert",  # not measured: encoder with masked-LM pre-training, like bert
    "vit": "bert",  # not measured: encoder (post-/pre-LN differs), closest is bert
    "deit": "bert",  # not measured: vit with a distillation token
    "llama": "gpt2",  # not measured on a real checkpoint: a decoder, like gpt2
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


def _by_method(family: str, direction: str, method: str) -> Default:
    table = BY_METHOD[(CLOSEST[family], direction)]
    return table.get(method, Default(method, None, "none"))


def direction_of(source_sizes: Mapping[str, int], target_sizes: Mapping[str, int]) -> str:
    """``s2l`` if any changeable size grows, else ``l2s``."""
    grows = any(n > source_sizes.get(role, n) for role, n in target_sizes.items())
    return "s2l" if grows else "l2s"


def default_recipe(
    family: str,
    source_sizes: Mapping[str, int],
    target_sizes: Mapping[str, int],
    method: str | None = None,
) -> Default:
    """The recipe zoo uses when the user names none (or names only ``method``).

    Args:
        family: a family name (bert, roberta, gpt2, vit, deit, llama).
        source_sizes, target_sizes: changeable sizes, e.g. ``{"layers": 4, "hidden": 128}``
            (``Family.axis_sizes`` of the source and target configs).
        method: the method asked for, if any: its best measured recipe (:data:`BY_METHOD`)
            when it is not the table's.

    Example:
        >>> default_recipe("gpt2", {"layers": 4, "hidden": 128}, {"layers": 2, "hidden": 64})[:3]
        ('weight-selection', None, 'none')
        >>> default_recipe("bert", {"layers": 6, "hidden": 384}, {"layers": 9, "hidden": 576})[:3]
        ('dwt', 'db2', 'fan')
    """
    if family not in CLOSEST:
        raise InvalidInputError(
            f"No default initialization for family {family!r}; known: {', '.join(CLOSEST)}."
        )
    direction = direction_of(source_sizes, target_sizes)
    chosen = DEFAULTS[(family, direction)]
    if method is not None and method != chosen.method:
        return _by_method(family, direction, method)
    if not _can_make(chosen.method, source_sizes, target_sizes):
        # The baselines make only some targets (HyperCloning grows by integer multiples,
        # weight selection only shrinks): the rest take the best dwt recipe measured,
        # which makes any size, also one that grows some axes and shrinks others.
        return _by_method(family, direction, DWT.name)
    return chosen


def _can_make(method: str, source_sizes, target_sizes) -> bool:
    from zoo.errors import InvalidTargetError
    from zoo.methods import check_target

    try:
        check_target(method, source_sizes, target_sizes)
    except InvalidTargetError:
        return False
    return True


__all__ = [
    "BY_METHOD",
    "CLOSEST",
    "DEFAULTS",
    "MEASURED",
    "Default",
    "default_recipe",
    "direction_of",
]
