"""A checkpoint's identity: one hash over its config and every tensor's content.

The manifest hash is the sha256 of the canonical JSON of::

    {"config": <config.json as a JSON object, or null>,
     "tensors": [[name, dtype, [shape...], sha256-of-raw-bytes], ...]}   # sorted by name

It covers the config and each tensor's name, dtype, shape and content hash, and nothing
about files: the same checkpoint copied, renamed, moved, re-sharded or found loose on a disk
has the same manifest hash, while changing one config value or one tensor byte changes it.
That is what lets an auditor ask "which registered checkpoint is this folder?".
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from zoo.errors import InvalidInputError

__all__ = [
    "CONFIG_BUFFERS",
    "ID_BUFFERS",
    "MASK_BUFFERS",
    "SAVE_KEYS",
    "TensorLike",
    "as_saved",
    "canonical_json",
    "copy_key",
    "manifest_hash",
    "rebuilt_buffer",
    "weights_key",
]


class TensorLike(Protocol):
    """What :func:`manifest_hash` reads from each tensor (e.g. a ``TensorInfo``)."""

    @property
    def name(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def shape(self) -> Iterable[int]: ...
    @property
    def digest(self) -> str: ...


def canonical_json(obj: Any) -> str:
    """Serialize ``obj`` to one canonical JSON string: sorted keys, no whitespace, ASCII.

    NaN and infinities are refused (they are not JSON), so equal data always gives equal text.

    Example:
        >>> canonical_json({"b": [1, 2.5], "a": "é"})
        '{"a":"\\\\u00e9","b":[1,2.5]}'
    """
    try:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"cannot write canonical JSON ({exc}); use only JSON types and finite numbers."
        ) from exc


def manifest_hash(config: Mapping[str, Any] | None, tensors: Iterable[TensorLike]) -> str:
    """The sha256 hex of a checkpoint's manifest (see the module docstring).

    Args:
        config: the parsed ``config.json``, or ``None`` for a weights file without one.
        tensors: every tensor, in any order, each with ``name``, ``dtype``, ``shape`` and
            ``digest`` (sha256 hex of its raw bytes).

    Returns:
        64 lowercase hex characters.

    Raises:
        InvalidInputError: two tensors share a name, or the config is not plain JSON.

    Example:
        >>> from zoo.checkpoint.hf import TensorInfo
        >>> t = TensorInfo("w", "F32", (2,), 8, "0" * 64)
        >>> manifest_hash({"model_type": "bert"}, [t]) == manifest_hash(
        ...     {"model_type": "bert"}, [t])
        True
    """
    rows = sorted([t.name, t.dtype, [int(d) for d in t.shape], t.digest] for t in tensors)
    for a, b in itertools.pairwise(rows):
        if a[0] == b[0]:
            raise InvalidInputError(
                f"tensor {a[0]!r} is listed twice; a manifest names each tensor once."
            )
    doc = {"config": None if config is None else dict(config), "tensors": rows}
    return hashlib.sha256(canonical_json(doc).encode("ascii")).hexdigest()


# Floating-point buffers that older transformers saved with the weights although they
# follow from the config (rotary frequencies from head_dim and rope_theta): every model of
# that config holds the same bytes.
CONFIG_BUFFERS = (".inv_freq",)
# The last name part of the integer and bool buffers transformers builds from the config
# and older versions saved, in families zoo has no rules for: position and token-type ids
# (any integer dtype), and GPT-2-style causal masks (bool or uint8 only: a quantized
# layer's int32 ``bias`` is a weight). Any other integer tensor is a weight.
ID_BUFFERS = frozenset({"position_ids", "token_type_ids"})
MASK_BUFFERS = frozenset({"bias", "masked_bias"})


def rebuilt_buffer(name: str, dtype: str) -> bool:
    """Whether a tensor is one transformers rebuilds from the config whatever the model
    (:data:`CONFIG_BUFFERS`, :data:`ID_BUFFERS`, :data:`MASK_BUFFERS`), by its name and
    safetensors dtype code alone."""
    if name.endswith(CONFIG_BUFFERS):
        return True
    last = name.rsplit(".", 1)[-1]
    if dtype in ("BOOL", "U8"):
        return last in ID_BUFFERS or last in MASK_BUFFERS
    return last in ID_BUFFERS and not dtype.startswith(("F", "BF"))


def weights_key(tensors: Iterable[TensorLike]) -> str | None:
    """The sha256 hex of a checkpoint's weights (name, dtype, shape and digest of each, as
    in the manifest), leaving out the buffers transformers rebuilds from the config
    (:func:`rebuilt_buffer`); None when it has no weights.

    Two checkpoints with one key hold the same weights under the same names whatever their
    configs: a registry finds the artifact a ``save_pretrained`` copy is made of by this
    key with one indexed look-up (:func:`zoo.api.audit.relative_of`)."""
    rows = sorted(
        [t.name, t.dtype, [int(d) for d in t.shape], t.digest]
        for t in tensors
        if not rebuilt_buffer(t.name, t.dtype)
    )
    if not rows:
        return None
    return hashlib.sha256(canonical_json(rows).encode("ascii")).hexdigest()


# Config keys transformers writes on every save, whatever the model: its version, the
# weights' dtype under either spelling (the tensors' own dtypes are compared), where the
# model was loaded from, and whether it chose the attention implementation itself (4.48
# and near versions write `_attn_implementation_autoset`; it does not change the model).
SAVE_KEYS = frozenset(
    {
        "transformers_version",
        "dtype",
        "torch_dtype",
        "_name_or_path",
        "_attn_implementation_autoset",
    }
)


def as_saved(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as a save would write it: the keys every save writes left out, and the
    ties spelled out at the model type's default."""
    from zoo.families._common import ties_word_embeddings

    out = {k: v for k, v in config.items() if k not in SAVE_KEYS}
    out["tie_word_embeddings"] = ties_word_embeddings(config)
    return out


def copy_key(config: Mapping[str, Any] | None, weights: str | None) -> str | None:
    """The sha256 hex of a checkpoint's weights key (:func:`weights_key`) and its config
    :func:`as_saved`; None without either. A ``save_pretrained`` copy of a checkpoint has
    its key (the keys every save writes aside): a registry finds what it copies with one
    indexed look-up, however many artifacts hold the same weights under other configs."""
    if weights is None or not isinstance(config, Mapping):
        return None
    doc = {"weights": weights, "config": as_saved(config)}
    try:
        text = canonical_json(doc)
    except InvalidInputError:  # a config that is no plain JSON: no copy is looked up by it
        return None
    return hashlib.sha256(text.encode("ascii")).hexdigest()
