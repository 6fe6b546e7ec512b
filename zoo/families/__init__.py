"""Architecture families: how HF parameter names group into signals, and how a config is
rewritten for a target size.

One module per architecture, except the llama-shaped decoders, which are declarations
(zoo/families/decoders.py); :data:`FAMILY_NAMES` lists them all and :func:`get_family` /
:func:`family_for_config` find one. Importing this package does not import torch.

Example:
    >>> from zoo.families import TargetSize, family_for_config
    >>> family = family_for_config({"model_type": "bert"})
    >>> family.name
    'bert'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zoo.errors import UnknownFamilyError
from zoo.families.base import Family, Signal, SignalKind, SignalSpec, TargetSize
from zoo.families.bert import BertFamily
from zoo.families.decoder import DecoderFamily
from zoo.families.decoders import DECODERS
from zoo.families.deit import DeiTFamily
from zoo.families.gpt2 import GPT2Family
from zoo.families.roberta import RobertaFamily
from zoo.families.vit import ViTFamily

# The registry: adding a family is its module plus one entry here, or for a llama-shaped
# decoder one declaration in decoders.py.
_FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        BertFamily(),
        RobertaFamily(),
        GPT2Family(),
        ViTFamily(),
        DeiTFamily(),
        *(DecoderFamily(d) for d in DECODERS),
    )
}
_BY_MODEL_TYPE: dict[str, Family] = {t: f for f in _FAMILIES.values() for t in f.model_types}

#: registry names of every family zoo knows
FAMILY_NAMES: tuple[str, ...] = tuple(_FAMILIES)


def get_family(name: str) -> Family:
    """The family registered as ``name`` (case-insensitive).

    Raises:
        UnknownFamilyError: no family has that name.
    """
    family = _FAMILIES.get(name.lower()) if isinstance(name, str) else None
    if family is None:
        raise UnknownFamilyError(f"Unknown family {name!r}; zoo knows {', '.join(FAMILY_NAMES)}.")
    return family


def listed_as(name: str) -> str:
    """The family name checkpoints of ``name`` are listed under: a family's name in any
    case, or a config's ``model_type`` (gemma3_text checkpoints are family gemma3, as the
    config's model_type names them); ``name`` itself when it is neither."""
    family = (
        _FAMILIES.get(name.lower()) or _BY_MODEL_TYPE.get(name) or _BY_MODEL_TYPE.get(name.lower())
    )
    return family.name if family is not None else name


def family_filter(name: str) -> tuple[str | None, str | None]:
    """What a listing's ``family`` filter ``name`` keeps: ``(family, None)`` for a family
    (:func:`listed_as`), or ``(None, model_type)`` for a config's model_type no family
    reads (t5): the checkpoints catalogued without a family whose config.json names it,
    in any case."""
    listed = listed_as(name)
    return (listed, None) if listed in _FAMILIES else (None, listed)


def family_for_config(config: Mapping[str, Any]) -> Family:
    """The family that reads a config.json, chosen by its ``model_type``.

    Raises:
        UnknownFamilyError: ``model_type`` is missing or no family reads it.
    """
    known = ", ".join(sorted(_BY_MODEL_TYPE))
    model_type = config.get("model_type") if isinstance(config, Mapping) else None
    if not model_type:
        raise UnknownFamilyError(
            f"config.json has no model_type, so zoo cannot tell its architecture; known "
            f"model types are {known}."
        )
    family = _BY_MODEL_TYPE.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise UnknownFamilyError(
            f"model_type {model_type!r} is not one zoo supports; known model types are {known}."
        )
    return family


__all__ = [
    "FAMILY_NAMES",
    "Family",
    "Signal",
    "SignalKind",
    "SignalSpec",
    "TargetSize",
    "family_for_config",
    "get_family",
]
