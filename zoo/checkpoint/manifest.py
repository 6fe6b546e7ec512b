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
    "INTEGER_BUFFERS",
    "TensorLike",
    "canonical_json",
    "manifest_hash",
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
# and older versions saved (position and token-type ids, GPT-2-style causal masks), in
# families zoo has no rules for; any other integer tensor is a weight (quantized).
INTEGER_BUFFERS = frozenset({"position_ids", "token_type_ids", "bias", "masked_bias"})


def weights_key(tensors: Iterable[TensorLike]) -> str | None:
    """The sha256 hex of a checkpoint's weights (name, dtype, shape and digest of each, as
    in the manifest), leaving out the buffers transformers rebuilds from the config
    (:data:`CONFIG_BUFFERS`, :data:`INTEGER_BUFFERS`); None when it has no weights.

    Two checkpoints with one key hold the same weights under the same names whatever their
    configs: a registry finds the artifact a ``save_pretrained`` copy is made of by this
    key with one indexed look-up (:func:`zoo.api.audit.relative_of`)."""
    rows = sorted(
        [t.name, t.dtype, [int(d) for d in t.shape], t.digest]
        for t in tensors
        if not t.name.endswith(CONFIG_BUFFERS)
        and (t.dtype.startswith(("F", "BF")) or t.name.rsplit(".", 1)[-1] not in INTEGER_BUFFERS)
    )
    if not rows:
        return None
    return hashlib.sha256(canonical_json(rows).encode("ascii")).hexdigest()
