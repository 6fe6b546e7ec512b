"""Shared machinery of the transformer families: name rules, stacking, target sizing.

A family module declares a table of :class:`Rule` s (which HF tensor names exist, which
signal each feeds, with which axis roles) and the config keys of its sizes;
:class:`TransformerFamily` does the rest: it matches a state dict against the rules,
stacks per-layer tensors over depth, checks every shape against the config, and writes
state dicts and configs back. Nothing here imports torch at module level.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from zoo.errors import (
    ConfigMismatchError,
    InvalidCheckpointError,
    InvalidInputError,
    InvalidTargetError,
)
from zoo.families.base import (
    Family,
    Signal,
    SignalKind,
    TargetSize,
    Ties,
    layers_by_position,
)

if TYPE_CHECKING:
    import torch

#: roles whose size a target may change; every other role is fixed. ``attn`` is the width
#: of attention's queries (heads x head_dim), which equals ``hidden`` unless a config sets
#: head_dim apart (Qwen3, Gemma); ``kv`` the width of keys and values (kv heads x head_dim).
CHANGING_ROLES = ("layers", "hidden", "ffn", "kv", "attn")

#: how a refusal names each changing size of the source
SIZE_WORDS = {
    "layers": "layer count",
    "hidden": "hidden size",
    "ffn": "intermediate size",
    "kv": "key/value width",
    "attn": "attention width",
}

#: signal-name prefix of tensors no rule knows that pass through unchanged.
EXTRA_PREFIX = "extra:"

#: role of the leading axis of a stacked per-layer *buffer* (never resized by a transform).
COPIES = "copies"

#: how the architectures whose only head is a language-model head end (GPT2LMHeadModel,
#: LlamaForCausalLM, BertForMaskedLM).
LM_ARCHITECTURES = ("LMHeadModel", "ForCausalLM", "ForMaskedLM")

Split = Callable[["torch.Tensor"], Sequence["torch.Tensor"]]
Join = Callable[[Sequence["torch.Tensor"]], "torch.Tensor"]


# transformers' default of ``tie_word_embeddings`` for a config.json that leaves the key
# out: each config class's own (LlamaConfig False, GPT2Config True); read from transformers
# 5's classes, since zoo derives without importing transformers.
TIED_BY_DEFAULT: dict[str, bool] = {
    "bert": True,
    "roberta": True,
    "gpt2": True,
    "gemma": True,
    "gemma2": True,
    "gemma3": True,
    "gemma3_text": True,
    "llama": False,
    "mistral": False,
    "qwen2": False,
    "qwen3": False,
    "phi3": False,
}


def ties_word_embeddings(config: Mapping[str, Any]) -> bool:
    """Whether transformers ties this config's LM head to its word embedding."""
    value = config.get("tie_word_embeddings")
    if value is None:
        return TIED_BY_DEFAULT.get(config.get("model_type"), True)
    return bool(value)


@dataclass(frozen=True)
class Piece:
    """One signal that a tensor rule feeds; per-layer axes exclude the ``layers`` axis."""

    signal: str
    axes: tuple[str, ...]
    kind: SignalKind
    fan_in_axis: int | None = None


@dataclass(frozen=True)
class Rule:
    """How one HF tensor name maps to signals.

    Attributes:
        keys: accepted names; the first is the one :meth:`TransformerFamily.from_signals`
            writes (a LayerNorm's legacy name where the source has it, see
            :func:`legacy_norm_name`), the others are older or newer layouts that are also
            read. A ``{i}`` in
            the name makes the rule per layer.
        pieces: the signals the tensor feeds (several when ``split`` cuts it, as GPT-2's
            fused ``c_attn``).
        scope: ``"base"`` names sit under the base-model prefix (``bert.``...), ``"top"``
            names are absolute (task heads).
        required: a checkpoint without it is refused.
        buffer: a non-parameter buffer that transformers can rebuild; it is passed through
            (per-layer ones stacked along a fixed ``copies`` axis and replicated over the
            target's layers) and left out when the target's sizes no longer fit it.
        split: tensor -> one tensor per piece, in ``(out, in)`` order (default: itself).
        join: the inverse of ``split``.
        fused_axis: the tensor is its pieces concatenated along this axis (of the stored,
            per-layer tensor), each as wide as the config makes its role there: Phi-3's
            ``qkv_proj`` is q, k and v stacked, ``gate_up_proj`` gate and up.
    """

    keys: tuple[str, ...]
    pieces: tuple[Piece, ...]
    scope: Literal["base", "top"] = "base"
    required: bool = True
    buffer: bool = False
    split: Split | None = None
    join: Join | None = None
    fused_axis: int | None = None

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.keys[0]


def rule(
    keys: str | tuple[str, ...],
    signal: str,
    axes: tuple[str, ...],
    kind: SignalKind,
    *,
    scope: Literal["base", "top"] = "base",
    required: bool = True,
    buffer: bool = False,
    fan_in_axis: int | None = None,
    split: Split | None = None,
    join: Join | None = None,
) -> Rule:
    """A rule for a tensor that feeds one signal.

    ``fan_in_axis`` defaults to the last axis for ``linear`` and ``head`` matrices.
    """
    if fan_in_axis is None and kind in ("linear", "head") and len(axes) >= 2:
        fan_in_axis = len(axes) - 1
    keys = (keys,) if isinstance(keys, str) else keys
    return Rule(
        keys, (Piece(signal, axes, kind, fan_in_axis),), scope, required, buffer, split, join
    )


def linear(
    keys: str | tuple[str, ...],
    name: str,
    out: str,
    in_: str,
    *,
    bias: bool = True,
    bias_required: bool = True,
    required: bool = True,
    scope: Literal["base", "top"] = "base",
    kind: SignalKind = "linear",
) -> list[Rule]:
    """Rules for a Linear layer ``<key>.weight`` (out, in) and optionally ``<key>.bias``."""
    keys = (keys,) if isinstance(keys, str) else keys
    layer = ("layers",) if "{i}" in keys[0] else ()
    out_rules = [
        rule(
            tuple(f"{k}.weight" for k in keys),
            f"{name}.weight",
            (*layer, out, in_),
            kind,
            scope=scope,
            required=required,
        )
    ]
    if bias:
        out_rules.append(
            rule(
                tuple(f"{k}.bias" for k in keys),
                f"{name}.bias",
                (*layer, out),
                "bias",
                scope=scope,
                required=required and bias_required,
            )
        )
    return out_rules


def fused(
    key: str, pieces: Sequence[tuple[str, tuple[str, ...], SignalKind]], *, axis: int = 0
) -> Rule:
    """A rule for a tensor that is several signals concatenated along ``axis``; each
    piece is ``(signal, axes, kind)`` with per-layer axes including ``layers``."""
    return Rule(
        (key,),
        tuple(
            Piece(signal, axes, kind, len(axes) - 1 if kind in ("linear", "head") else None)
            for signal, axes, kind in pieces
        ),
        fused_axis=axis,
    )


# transformers reads a LayerNorm's gain and bias of any model under the names TensorFlow
# gave them too (BERTs converted from TensorFlow, bert-base-uncased among them, store
# ``LayerNorm.gamma`` and ``LayerNorm.beta``), and saves them back under the names it read.
_LEGACY_NORM_NAMES = (("LayerNorm.weight", "LayerNorm.gamma"), ("LayerNorm.bias", "LayerNorm.beta"))


def legacy_norm_name(name: str) -> str | None:
    """The TensorFlow-era name transformers also loads as ``name``
    (``x.LayerNorm.weight`` -> ``x.LayerNorm.gamma``); None when it has none."""
    for current, legacy in _LEGACY_NORM_NAMES:
        if name.endswith(current):
            return name[: -len(current)] + legacy
    return None


def as_loaded(name: str) -> str:
    """``name`` as transformers loads it: ``LayerNorm.gamma`` and ``LayerNorm.beta`` are
    the LayerNorm's ``weight`` and ``bias``; every other name is itself."""
    for current, legacy in _LEGACY_NORM_NAMES:
        if name.endswith(legacy):
            return name[: -len(legacy)] + current
    return name


def norm(
    keys: str | tuple[str, ...],
    name: str,
    *,
    bias: bool = True,
    required: bool = True,
    scope: Literal["base", "top"] = "base",
    axis: str = "hidden",
    gain: SignalKind = "norm_weight",
) -> list[Rule]:
    """Rules for a LayerNorm (weight and bias) or RMSNorm (weight only) over ``axis``.

    ``gain`` is the weight's kind: ``norm_weight`` for a gain that starts at one,
    ``norm_bias`` for one stored as an offset from one (Gemma's ``1 + w``), which starts
    at zero like a bias.
    """
    keys = (keys,) if isinstance(keys, str) else keys
    layer = ("layers",) if "{i}" in keys[0] else ()

    def named(attribute: str) -> tuple[str, ...]:
        # The legacy names (see legacy_norm_name) are read, after the current ones.
        names = tuple(f"{k}.{attribute}" for k in keys)
        return names + tuple(n for n in map(legacy_norm_name, names) if n is not None)

    out = [
        rule(
            named("weight"),
            f"{name}.weight",
            (*layer, axis),
            gain,
            required=required,
            scope=scope,
        )
    ]
    if bias:
        out.append(
            rule(
                named("bias"),
                f"{name}.bias",
                (*layer, axis),
                "norm_bias",
                required=required,
                scope=scope,
            )
        )
    return out


# --- config reading -----------------------------------------------------------------------


def config_int(
    config: Mapping[str, Any], key: str, family: str, *, default: int | None = None
) -> int:
    """``config[key]`` as a positive int, or a clear :class:`InvalidCheckpointError`."""
    value = config.get(key)
    if value is None:
        value = default
    if value is None:
        raise InvalidCheckpointError(
            f"config.json of this {family} checkpoint has no {key!r}; add it or re-export "
            "the checkpoint with transformers."
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidCheckpointError(
            f"config.json of this {family} checkpoint has {key}={value!r}; expected a "
            "positive integer."
        )
    return value


def head_dim_of(hidden: int, heads: int, family: str) -> int:
    if hidden % heads:
        raise InvalidCheckpointError(
            f"this {family} config has hidden size {hidden} not divisible by {heads} "
            "attention heads; it cannot be a valid checkpoint."
        )
    return hidden // heads


# --- target sizing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A validated target: every size a family writes into its config."""

    layers: int
    hidden: int
    heads: int
    head_dim: int
    ffn: int
    kv_heads: int | None = None


#: The largest width a target may ask for: one 2**20-wide square matrix is 2 TB in bf16,
#: beyond any machine; larger requests are typos, refused before any arithmetic on them.
MAX_WIDTH = 1 << 20


def check_size(what: str, value: object) -> int:
    """A target size (layers, hidden, heads...): a positive integer, not 2.0, "2" or True.
    Also checked by a client before any request (:mod:`zoo.api.arguments`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidTargetError(
            f"target {what}= must be a positive integer, got {value!r}.", params=[what]
        )
    return value


def _positive(
    what: str,
    value: object,
    most: int = MAX_WIDTH,
    why: str = f"a {MAX_WIDTH:,}-wide square matrix is 2 TB",
) -> int:
    """``value``, a positive integer no larger than ``most`` (a width: :data:`MAX_WIDTH`)."""
    check_size(what, value)
    if value > most:
        raise InvalidTargetError(
            f"target {what}={value} is more than {most:,} ({why}).", params=[what]
        )
    return value


def _depth(value: object) -> int:
    """A target's layer count: at most one layer per tensor zoo accepts in a checkpoint."""
    from zoo.checkpoint.safetensors_format import MAX_TENSORS

    why = f"a checkpoint holds at most {MAX_TENSORS:,} tensors"
    return _positive("layers", value, MAX_TENSORS, why)


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})


def closest(values: Sequence[int], around: float, k: int = 4) -> list[int]:
    return sorted(sorted(values, key=lambda v: (abs(v - around), v))[:k])


def join_or(values: Sequence[int]) -> str:
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def join_and(values: Sequence[str]) -> str:
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} and {values[-1]}"


def round_ratio(value: int, numerator: int, denominator: int) -> int:
    """``value * numerator / denominator`` rounded half up, in exact integer arithmetic."""
    return (2 * value * numerator + denominator) // (2 * denominator)


def fitting_multiples_near(
    value: int, step: int, ok: Callable[[int], bool], reach: int = 64
) -> list[int]:
    """The nearest multiples of ``step`` below and above ``value`` that ``ok`` accepts."""
    lower = value // step * step
    below = next((m for m in range(lower, 0, -step) if ok(m)), None)
    above = next((m for m in range(lower + step, lower + step * (reach + 1), step) if ok(m)), None)
    return [m for m in (below, above) if m is not None and m != value]


def plan_target(
    family: str,
    *,
    src_hidden: int,
    src_heads: int,
    src_ffn: int,
    target: TargetSize,
    gqa: bool = False,
    fits: Callable[[int, int], bool] = lambda hidden, heads: True,
) -> Plan:
    """Validate ``target`` against the defaults every family shares.

    Defaults: heads = hidden / source head_dim (head_dim kept); intermediate = hidden times
    the source's intermediate/hidden ratio, rounded half up. Raises
    :class:`InvalidTargetError` with what would work: sizes that ``fits(hidden, heads)``,
    the family's own further rules, accepts too.
    """
    layers = _depth(target.layers)
    hidden = _positive("hidden", target.hidden)
    src_head_dim = src_hidden // src_heads
    if target.heads is None:
        if hidden % src_head_dim:
            heads_ok = [d for d in divisors(hidden) if fits(hidden, d)]
            hiddens = fitting_multiples_near(
                hidden, src_head_dim, lambda h: fits(h, h // src_head_dim)
            )
            raise InvalidTargetError(
                f"hidden={hidden} is not a multiple of the source head_dim {src_head_dim}, "
                f"which the default keeps (heads = hidden / head_dim); use hidden="
                f"{join_or(hiddens)}"
                + (
                    f", or set heads= to one that divides {hidden} "
                    f"({join_or(closest(heads_ok, hidden / src_head_dim))})."
                    if heads_ok
                    else "."
                ),
                params=["hidden", "heads"],
            )
        heads = hidden // src_head_dim
    else:
        heads = _positive("heads", target.heads)
        if hidden % heads:
            heads_ok = [d for d in divisors(hidden) if fits(hidden, d)]
            hiddens = fitting_multiples_near(hidden, heads, lambda h: fits(h, heads))
            options = [f"heads={join_or(closest(heads_ok, heads))}"] if heads_ok else []
            options += [f"hidden={join_or(hiddens)}"] if hiddens else []
            if not options:  # no hidden fits this head count: drop it, keep head_dim
                defaults = fitting_multiples_near(
                    hidden, src_head_dim, lambda h: fits(h, h // src_head_dim)
                )
                options = [f"hidden={join_or(defaults)} with heads= left unset"]
            raise InvalidTargetError(
                f"hidden={hidden} is not divisible by heads={heads}; use {', or '.join(options)}.",
                params=["hidden", "heads"],
            )
    if target.intermediate is None:
        ffn = round_ratio(hidden, src_ffn, src_hidden)
        if ffn < 1:
            raise InvalidTargetError(
                f"the source's intermediate/hidden ratio {src_ffn}/{src_hidden} gives an "
                f"intermediate size of 0 for hidden={hidden}; set intermediate= explicitly.",
                params=["hidden", "intermediate"],
            )
    else:
        ffn = _positive("intermediate", target.intermediate)
    if target.kv_heads is not None and not gqa and target.kv_heads != heads:
        raise InvalidTargetError(
            f"{family} has no grouped-query attention (kv_heads always equals heads, here "
            f"{heads}); leave kv_heads= unset.",
            params=["kv_heads"],
        )
    return Plan(layers, hidden, heads, hidden // heads, ffn)


# --- the engine ---------------------------------------------------------------------------

_INDEX = re.compile(r"(?:^|(?<=\.))(\d+)(?=\.)")


def _template(name: str) -> tuple[str, int] | None:
    """``"encoder.layer.3.x"`` -> ``("encoder.layer.{i}.x", 3)``; ``None`` without an index."""
    m = _INDEX.search(name)
    if m is None:
        return None
    return f"{name[: m.start()]}{{i}}{name[m.end() :]}", int(m.group(1))


#: Tensor names whose rule a family keeps (:meth:`TransformerFamily._match`): a 100-layer
#: checkpoint has about 1,600.
_MATCHES_KEPT = 1 << 16
_UNMATCHED = object()


def _as_tensor(value: Any) -> torch.Tensor:
    return value.tensor if isinstance(value, Signal) else value


class TransformerFamily(Family):
    """A family described by a rule table; subclasses set the class attributes below."""

    #: prefix of the base model inside task models, e.g. ``"bert"``
    base_prefix: ClassVar[str]
    #: architectures whose checkpoints have no base prefix (the bare base model)
    base_archs: ClassVar[frozenset[str]]
    #: task architectures that save their base model under ``transformer`` instead of
    #: ``base_prefix`` (transformers keeps that name for llama's and Qwen's QA models)
    transformer_archs: ClassVar[frozenset[str]] = frozenset()
    #: name stems of the layer stack, e.g. ``("encoder.layer",)``; unknown tensors under
    #: them are refused because their count follows the depth
    layer_stems: ClassVar[tuple[str, ...]]
    #: config keys of the sizes
    layers_key: ClassVar[str]
    hidden_key: ClassVar[str]
    heads_key: ClassVar[str]
    #: the normalization signals a language-model head reads (see :meth:`tied_head_inputs`);
    #: a gain stored as ``1 + w`` cannot be divided, so a family with such gains names none
    lm_head_inputs: ClassVar[tuple[str, ...]] = ()
    #: the language-model head's own signal: absent when the head is tied
    lm_head_signal: ClassVar[str] = "lm_head.weight"
    #: whether every head reads those norms (a decoder's final norm), or the LM head alone
    #: (BERT's MLM-head LayerNorm)
    lm_head_inputs_shared: ClassVar[bool] = True
    #: the signals transformers ties to another under ``tie_word_embeddings``: (each copy,
    #: the signal it is tied to) (see :meth:`tied_copies`)
    tied_signals: ClassVar[tuple[tuple[str, str], ...]] = ()

    def build_rules(self) -> list[Rule]:
        """Every tensor rule, in the order a state dict lists them."""
        raise NotImplementedError

    @property
    def rules(self) -> tuple[Rule, ...]:
        cached = self.__dict__.get("_rules_cache")
        if cached is None:
            cached = self.__dict__["_rules_cache"] = tuple(self.build_rules())
        return cached

    def tied_head_inputs(
        self, config: Mapping[str, Any], kinds: Mapping[str, str], names: Collection[str]
    ) -> tuple[str, ...]:
        inputs = tuple(k for k in self.lm_head_inputs if k in kinds)
        # Tied: the head has no signal of its own (save_pretrained leaves it out).
        if not inputs or self.lm_head_signal in kinds:
            return ()
        if not config.get("tie_word_embeddings", True):
            return ()
        if not self.lm_head_inputs_shared:
            return inputs
        # A norm every head reads: only where the one head is the tied LM head, not a
        # task head (divided as a fan-in already) nor a base model's hidden states.
        if "head" in kinds.values():
            return ()
        archs = config.get("architectures")
        if archs:
            lm = all(a.endswith(LM_ARCHITECTURES) for a in archs)
        else:  # no architecture recorded: a task model's tensors carry the base prefix
            lm = any(n.startswith(f"{self.base_prefix}.") for n in names)
        return inputs if lm else ()

    def tied_copies(self, config: Mapping[str, Any], records: Collection[Any]) -> Ties:
        # transformers' own rule, pair by pair: under a tied config, a copy the file lacks
        # is the tensor it is tied to; one it holds is tied only when the values are equal.
        if not self.tied_signals or not ties_word_embeddings(config):
            return Ties()
        ties = dict(self.tied_signals)
        wanted = {*ties, *ties.values()}
        found: dict[str, Any] = {}
        for r in records:
            signal = self._whole_signal(r.name)
            if signal in wanted:
                found[signal] = r
        pairs = {c: (found[c], found[t]) for c, t in ties.items() if c in found and t in found}
        if not pairs:
            return Ties()

        def same(a, b) -> bool:
            return (a.dtype, tuple(a.shape), a.digest) == (b.dtype, tuple(b.shape), b.digest)

        if all(same(c, t) for c, t in pairs.values()):
            return Ties(copies={c.name: signal for signal, (c, _) in pairs.items()})
        # Untied only where the file holds every copy: one it lacks is transformers' tie.
        lacking = [c for c, t in ties.items() if t in found and c not in found]
        return Ties(untie=not lacking)

    def tied_partners(self, config: Mapping[str, Any], names: Collection[str]) -> dict[str, str]:
        if not self.tied_signals or not ties_word_embeddings(config):
            return {}
        ties = dict(self.tied_signals)
        by_signal: dict[str, list[str]] = {}
        for name in names:
            signal = self._whole_signal(name)
            if signal is not None and (signal in ties or signal in ties.values()):
                by_signal.setdefault(signal, []).append(name)
        return {
            copy: min(by_signal[tied])
            for signal, tied in ties.items()
            if tied in by_signal
            for copy in by_signal.get(signal, ())
        }

    def _whole_signal(self, name: str) -> str | None:
        """The signal a tensor that is one whole signal (not a layer's slice, not a part of
        a fused tensor) feeds; None otherwise."""
        hit = self._match(name)
        if hit is None or hit[1].per_layer or len(hit[1].pieces) != 1:
            return None
        return hit[1].pieces[0].signal

    # --- sizes ---------------------------------------------------------------------------

    def sizes(self, config: Mapping[str, Any]) -> dict[str, int]:
        """Sizes of every role the config fixes: the changing ones and known fixed ones."""
        raise NotImplementedError

    def attention_heads(self, config: Mapping[str, Any]) -> tuple[int, int] | None:
        heads = config_int(config, self.heads_key, self.name)
        return heads, heads

    def axis_sizes(self, config: Mapping[str, Any]) -> dict[str, int]:
        sizes = self.sizes(config)
        return {r: sizes[r] for r in CHANGING_ROLES if r in sizes}

    # --- state dict -> signals -----------------------------------------------------------------

    def _tables(self) -> tuple[dict[str, tuple[int, Rule]], dict[str, tuple[int, Rule]]]:
        cached = self.__dict__.get("_tables_cache")
        if cached is None:
            base: dict[str, tuple[int, Rule]] = {}
            top: dict[str, tuple[int, Rule]] = {}
            for n, r in enumerate(self.rules):
                for key in r.keys:
                    (top if r.scope == "top" else base)[key] = (n, r)
            cached = (base, top)
            self.__dict__["_tables_cache"] = cached
        return cached

    def _rules_of_signal(self) -> dict[str, tuple[int, ...]]:
        """Signal name -> the numbers of the rules with a piece of it."""
        cached = self.__dict__.get("_rules_of_signal_cache")
        if cached is None:
            found: dict[str, list[int]] = {}
            for n, r in enumerate(self.rules):
                for p in r.pieces:
                    found.setdefault(p.signal, []).append(n)
            cached = {k: tuple(v) for k, v in found.items()}
            self.__dict__["_rules_of_signal_cache"] = cached
        return cached

    def legacy_norm_signals(self, names: Iterable[str]) -> frozenset[str]:
        """The signals that a checkpoint with tensors ``names`` stores under the legacy
        LayerNorm names (``LayerNorm.gamma`` / ``.beta``, see :func:`legacy_norm_name`):
        :meth:`from_signals` writes them so, and a same-size copy keeps its names."""
        found: set[str] = set()
        for name in names:
            if as_loaded(name) != name and (hit := self._match(name)) is not None:
                found.update(p.signal for p in hit[1].pieces)
        return frozenset(found)

    def is_buffer(self, name: str) -> bool:
        hit = self._match(name)
        return hit is not None and hit[1].buffer

    def layer_index(self, tensor_name: str) -> int | None:
        hit = self._match(tensor_name)
        if hit is None or not hit[1].per_layer or hit[1].buffer:
            return None
        return hit[2]

    def _match(self, key: str) -> tuple[int, Rule, int | None] | None:
        # One materialization asks about each tensor name several times (ties, layer
        # indexes, groups), and every checkpoint of a family has the same names: the
        # answer, a function of the name and the rule table alone, is kept by name.
        known = self.__dict__.get("_match_cache")
        if known is None:
            known = self.__dict__["_match_cache"] = {}
        hit = known.get(key, _UNMATCHED)
        if hit is _UNMATCHED:
            hit = self._match_rules(key)
            if len(known) >= _MATCHES_KEPT:
                known.clear()
            known[key] = hit
        return hit

    def _match_rules(self, key: str) -> tuple[int, Rule, int | None] | None:
        base, top = self._tables()
        if key in top:
            return (*top[key], None)
        rel = self._without_base_prefix(key)
        if rel in base:
            return (*base[rel], None)
        templ = _template(rel)
        if templ is not None and templ[0] in base:
            n, r = base[templ[0]]
            return n, r, templ[1]
        return None

    def _base_prefixes(self) -> tuple[str, ...]:
        """Every prefix this family's task models save their base model under."""
        return (self.base_prefix, "transformer") if self.transformer_archs else (self.base_prefix,)

    def _without_base_prefix(self, key: str) -> str:
        for prefix in self._base_prefixes():
            if key.startswith(f"{prefix}."):
                return key[len(prefix) + 1 :]
        return key

    def _check_shape(
        self,
        key: str,
        piece: Piece,
        shape: tuple[int, ...],
        sizes: Mapping[str, int],
        *,
        layered: bool,
    ) -> None:
        axes = piece.axes[1:] if layered else piece.axes
        want = tuple(sizes.get(a) for a in axes)
        if len(shape) != len(axes) or any(
            w is not None and w != s for w, s in zip(want, shape, strict=True)
        ):
            shown = tuple("?" if w is None else w for w in want)
            raise ConfigMismatchError(
                f"tensor {key!r} has shape {tuple(shape)} but this {self.name} config expects "
                f"{shown} (axes {axes}); the checkpoint does not match its config.json."
            )

    def _unknown(self, key: str, tensor: torch.Tensor, changing: Mapping[str, int]) -> Signal:
        for stem in self.layer_stems:
            for candidate in (key, self._without_base_prefix(key)):
                if re.match(rf"{re.escape(stem)}\.\d+\.", candidate):
                    raise InvalidCheckpointError(
                        f"tensor {key!r} is a per-layer tensor that the {self.name} family "
                        "does not know, so zoo cannot follow a change of depth; remove it "
                        "or add a rule for it in zoo/families."
                    )
        # A size is only known to equal one the target may change, not to be that axis
        # (a vocabulary of 96 beside an intermediate size of 96): name the coincidence.
        hits = {
            d: [SIZE_WORDS.get(r, r) for r, s in changing.items() if d == s]
            for d in dict.fromkeys(tensor.shape)
        }
        hits = {d: words for d, words in hits.items() if words}
        if hits:
            equal = "; ".join(
                f"{d} equals the source's {join_and(words)}" for d, words in hits.items()
            )
            raise InvalidCheckpointError(
                f"tensor {key!r} with shape {tuple(tensor.shape)} is not a {self.name} "
                f"parameter zoo knows, so zoo cannot tell whether it would follow the target's "
                f"sizes ({equal}); remove it or add a rule for it in zoo/families."
            )
        return Signal(tensor, ("fixed",) * tensor.dim(), "embedding")

    def group_of(self, tensor_name: str) -> tuple[str, ...]:
        """The signals that tensor feeds together with every other tensor of its rule:
        the unit in which a state dict can be turned into signals and back piece by piece
        (GPT-2's fused ``c_attn`` feeds q, k and v; most tensors feed one signal)."""
        hit = self._match(tensor_name)
        if hit is None:
            return (EXTRA_PREFIX + tensor_name,)
        return tuple(p.signal for p in hit[1].pieces)

    def signal_group(self, signal: str) -> tuple[str, ...]:
        """The group (see :meth:`group_of`) that ``signal`` belongs to."""
        numbers = self._rules_of_signal().get(signal)
        if not numbers:
            return (signal,)
        return tuple(p.signal for p in self.rules[numbers[0]].pieces)

    def to_signals(
        self,
        state: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        *,
        partial: bool = False,
        layers: Sequence[int] | None = None,
    ) -> dict[str, Signal]:
        """Group a state dict into signals; see :meth:`Family.to_signals`.

        Accepts the checkpoint layout ``save_pretrained`` writes, the in-memory layout of the
        installed transformers, and a bare base model without the base prefix. Tensors no
        rule knows pass through as ``"extra:<name>"`` signals with fixed roles when none of
        their sizes could change, and are refused otherwise. ``partial``: ``state`` holds
        whole groups (:meth:`group_of`) of a checkpoint, not all of it; the rules it has
        no tensor for are skipped rather than refused; ``layers``: its per-layer tensors are
        those of these layers only, stacked in this order.

        Raises:
            InvalidCheckpointError: a tensor is missing, unknown, duplicated or mis-shaped.
        """
        sizes = self.sizes(config)
        changing = {r: sizes[r] for r in CHANGING_ROLES if r in sizes}
        if layers is not None and not partial:
            raise InvalidInputError("a subset of layers is read only with partial=True.")
        depth = sizes["layers"]
        rules = self.rules
        found: dict[int, dict[int | None, tuple[str, torch.Tensor]]] = {}
        extras: dict[str, Signal] = {}
        for key, tensor in state.items():
            hit = self._match(key)
            if hit is None:
                extras[EXTRA_PREFIX + key] = self._unknown(key, tensor, changing)
                continue
            n, r, index = hit
            slot = found.setdefault(n, {})
            if index in slot:
                raise InvalidCheckpointError(
                    f"tensors {slot[index][0]!r} and {key!r} are the same {self.name} "
                    "parameter in two layouts; keep one."
                )
            if index is not None and index >= depth and not r.buffer:
                raise ConfigMismatchError(
                    f"tensor {key!r} belongs to layer {index} but config.json says "
                    f"{self.layers_key}={depth}."
                )
            slot[index] = (key, tensor)

        signals: dict[str, Signal] = {}
        for n, r in enumerate(rules):
            slot = found.get(n)
            if not slot:
                if r.required and not partial:
                    raise InvalidCheckpointError(
                        f"this {self.name} checkpoint lacks {r.keys[0].format(i=0)!r} (or "
                        f"its per-layer copies); it is required."
                    )
                continue

            def split(key: str, tensor: torch.Tensor, r: Rule = r) -> Sequence[torch.Tensor]:
                if r.fused_axis is not None:
                    return self._unfuse(key, tensor, r, sizes)
                if r.split is None:
                    return (tensor,)
                try:
                    parts = r.split(tensor)
                except (RuntimeError, IndexError, ValueError):
                    parts = ()
                if len(parts) != len(r.pieces):
                    raise ConfigMismatchError(
                        f"tensor {key!r} has shape {tuple(tensor.shape)}, which does not split "
                        f"into {[p.signal for p in r.pieces]}; the checkpoint does not match "
                        "its config.json."
                    )
                return parts

            if not r.per_layer:
                key, tensor = slot[None]
                parts = split(key, tensor)
                for piece, part in zip(r.pieces, parts, strict=True):
                    self._check_shape(key, piece, tuple(part.shape), sizes, layered=False)
                    signals[piece.signal] = Signal(part, piece.axes, piece.kind, piece.fan_in_axis)
                continue
            count = max(slot) + 1 if r.buffer else depth
            wanted = range(count) if layers is None or r.buffer else layers
            missing = [i for i in wanted if i not in slot]
            if missing:
                raise ConfigMismatchError(
                    f"this {self.name} checkpoint lacks {r.keys[0].format(i=missing[0])!r} "
                    f"(layers {missing} of {count} have no such tensor)."
                )
            per_piece: list[list[torch.Tensor]] = [[] for _ in r.pieces]
            for i in wanted:
                key, tensor = slot[i]
                for j, part in enumerate(split(key, tensor)):
                    piece = r.pieces[j]
                    self._check_shape(key, piece, tuple(part.shape), sizes, layered=True)
                    if per_piece[j] and part.dtype != per_piece[j][0].dtype:
                        raise InvalidCheckpointError(
                            f"tensor {key!r} is {part.dtype} but layer 0 has "
                            f"{per_piece[j][0].dtype}; one role must share one dtype."
                        )
                    per_piece[j].append(part)
            for piece, parts in zip(r.pieces, per_piece, strict=True):
                signals[piece.signal] = Signal(
                    _stack(parts), piece.axes, piece.kind, piece.fan_in_axis
                )
        signals.update(extras)
        return signals

    def _unfuse(
        self, key: str, tensor: torch.Tensor, r: Rule, sizes: Mapping[str, int]
    ) -> Sequence[torch.Tensor]:
        """A fused tensor cut into its pieces, each as wide as the config says."""
        offset = 1 if r.per_layer else 0
        widths = [sizes.get(p.axes[offset + r.fused_axis]) for p in r.pieces]
        if (
            tensor.dim() <= r.fused_axis
            or None in widths
            or sum(widths) != tensor.shape[r.fused_axis]
        ):
            raise ConfigMismatchError(
                f"tensor {key!r} has shape {tuple(tensor.shape)}, which does not split "
                f"into {[p.signal for p in r.pieces]} of widths {widths} along axis "
                f"{r.fused_axis}; the checkpoint does not match its config.json."
            )
        return tensor.split(widths, dim=r.fused_axis)

    # --- signals -> state dict -----------------------------------------------------------------

    def signal_names(self) -> tuple[str, ...]:
        """Every signal name a rule can produce (``extra:`` signals aside)."""
        return tuple(p.signal for r in self.rules for p in r.pieces)

    def unchanged_outputs(self, signal: str) -> str | None:
        if signal.startswith(EXTRA_PREFIX):
            return "whole"
        for r in self.rules:
            if any(p.signal == signal for p in r.pieces):
                if r.join is not None or r.buffer or len(r.pieces) != 1:
                    return None
                return "layers" if r.per_layer else "whole"
        return None

    def first_layers(
        self, config: Mapping[str, Any], names: Sequence[str], layers: int
    ) -> tuple[dict[str, Any], set[str]]:
        cut = dict(config)
        cut[self.layers_key] = layers
        keep = set()
        for name in names:
            t = _template(name)
            in_stack = t is not None and any(f"{stem}.{{i}}." in t[0] for stem in self.layer_stems)
            if not in_stack or t[1] < layers:
                keep.add(name)
        return cut, keep

    def _prefixed(self, config: Mapping[str, Any], signals: Collection[str]) -> bool:
        archs = config.get("architectures") or ()
        if archs:
            return archs[0] not in self.base_archs
        # No architecture recorded (a config built in memory): a task head implies the
        # task model's layout.
        return any(p.signal in signals for r in self.rules if r.scope == "top" for p in r.pieces)

    def from_signals(
        self,
        signals: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        *,
        part_of: Collection[str] | None = None,
        layers: Sequence[int] | None = None,
        legacy_norms: Collection[str] = (),
    ) -> dict[str, torch.Tensor]:
        """Rebuild a state dict in ``save_pretrained``'s checkpoint layout for ``config``.

        A head tied to the embeddings is written only when its signal is there (as in the
        source), so a round trip keeps the keys exactly; ``from_pretrained`` ties it either
        way. The base prefix follows ``config["architectures"]``. Values may be tensors or
        :class:`Signal` s. Returned tensors may share memory with ``signals``.
        ``part_of``: ``signals`` are whole groups (:meth:`group_of`) of the model whose
        signals are ``part_of``; only their tensors are built. ``layers`` (with
        ``part_of``): per-layer signals holding these layers of the target only, in order.
        ``legacy_norms``: signals written under the legacy LayerNorm names, as the source
        stores them (:meth:`legacy_norm_signals`).

        Raises:
            InvalidInputError: a required signal is missing, a name is unknown, or a shape
                does not match ``config``.
        """
        sizes = self.sizes(config)
        if layers is not None:
            if part_of is None:
                raise InvalidInputError("a subset of layers is built only with part_of.")
            sizes = {**sizes, "layers": len(layers)}
        span = range(sizes["layers"]) if layers is None else layers
        whole = signals if part_of is None else part_of
        archs = config.get("architectures") or ()
        base = "transformer" if archs and archs[0] in self.transformer_archs else self.base_prefix
        prefix = f"{base}." if self._prefixed(config, whole) else ""
        out: dict[str, torch.Tensor] = {}
        used: set[str] = set()
        rules = self.rules
        first_layer = next((n for n, r in enumerate(rules) if r.per_layer), len(rules))
        layer_rules: list[tuple[Rule, list[torch.Tensor]]] = []

        def gather(r: Rule) -> list[torch.Tensor] | None:
            names = [p.signal for p in r.pieces]
            have = [s in signals for s in names]
            if not any(have):
                if r.required and part_of is None:
                    raise InvalidInputError(
                        f"signal {names[0]!r} is missing; a {self.name} model needs it."
                    )
                return None
            if not all(have):
                raise InvalidInputError(
                    f"signals {names} come from one tensor; got only "
                    f"{[s for s, h in zip(names, have, strict=True) if h]}."
                )
            used.update(names)
            tensors = [_as_tensor(signals[s]) for s in names]
            for piece, t in zip(r.pieces, tensors, strict=True):
                want = tuple(sizes.get(a) for a in piece.axes)
                if r.buffer and r.per_layer:
                    want = (None, *want[1:])
                bad = len(want) != t.dim() or any(
                    w is not None and w != s for w, s in zip(want, t.shape, strict=True)
                )
                if bad and r.buffer:
                    return None  # transformers rebuilds it at the target's size
                if bad:
                    shown = tuple("?" if w is None else w for w in want)
                    raise InvalidInputError(
                        f"signal {piece.signal!r} has shape {tuple(t.shape)} but the target "
                        f"config needs {shown} (axes {piece.axes})."
                    )
            return tensors

        def emit(
            r: Rule, tensors: list[torch.Tensor], index: int | None, layer: int | None = None
        ) -> None:
            parts = tensors if index is None else [t[min(index, t.shape[0] - 1)] for t in tensors]
            if r.fused_axis is not None:
                value = cat(parts, dim=r.fused_axis)
            else:
                value = r.join(parts) if r.join else parts[0]
            name = r.keys[0]
            if legacy_norms and r.pieces[0].signal in legacy_norms:
                name = legacy_norm_name(name) or name
            name = name if index is None else name.format(i=layer)
            out[(prefix if r.scope == "base" else "") + name] = value.contiguous()

        after: list[tuple[Rule, list[torch.Tensor]]] = []
        if part_of is None:  # every rule: a required one without its signals is refused
            numbers: Sequence[int] = range(len(rules))
        else:  # a few groups of a model: only their rules, in the table's order
            of_signal = self._rules_of_signal()
            numbers = sorted({n for s in signals for n in of_signal.get(s, ())})
        for n in numbers:
            r = rules[n]
            tensors = gather(r)
            if tensors is None:
                continue
            if r.per_layer:
                layer_rules.append((r, tensors))
            elif n < first_layer:
                emit(r, tensors, None)
            else:
                after.append((r, tensors))
        for i, layer in enumerate(span):
            for r, tensors in layer_rules:
                emit(r, tensors, i, layer)
        for r, tensors in after:
            emit(r, tensors, None)

        unknown = [s for s in signals if s not in used and not s.startswith(EXTRA_PREFIX)]
        if unknown:
            raise InvalidInputError(
                f"signals {sorted(unknown)} are not {self.name} signals; known ones are "
                f"{', '.join(self.signal_names())}."
            )
        for s in signals:
            if s.startswith(EXTRA_PREFIX):
                out[s[len(EXTRA_PREFIX) :]] = _as_tensor(signals[s])
        return out

    # --- config ----------------------------------------------------------------------------

    def plan(self, config: Mapping[str, Any], target: TargetSize) -> Plan:
        """The validated target sizes; families with more knobs extend it."""
        sizes = self.sizes(config)
        heads = config_int(config, self.heads_key, self.name)
        return plan_target(
            self.name,
            src_hidden=sizes["hidden"],
            src_heads=heads,
            src_ffn=sizes["ffn"],
            target=target,
        )

    def write_config(self, config: dict[str, Any], plan: Plan, source: Mapping[str, Any]) -> None:
        """Write ``plan``'s sizes into ``config`` (a deep copy of ``source``)."""
        raise NotImplementedError

    def write_layer_config(
        self, config: dict[str, Any], source: Mapping[str, Any], layer_map: Sequence[int]
    ) -> None:
        """Write ``config``'s per-layer fields (a deep copy of ``source``'s, already at the
        target's sizes): target layer ``j`` takes source layer ``layer_map[j]``'s. A family
        whose configs have none writes nothing."""

    def target_config(
        self,
        config: Mapping[str, Any],
        target: TargetSize,
        layer_map: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        plan = self.plan(config, target)
        source_layers = self.sizes(config)["layers"]
        if layer_map is None:
            layer_map = layers_by_position(source_layers, plan.layers)
        elif len(layer_map) != plan.layers or not all(0 <= i < source_layers for i in layer_map):
            raise InvalidInputError(
                f"a layer map for {plan.layers} target layers of a {source_layers}-layer "
                f"source names one source layer per target layer; got {list(layer_map)}."
            )
        out = _copy_json(dict(config))
        self.write_config(out, plan, config)
        self.write_layer_config(out, config, layer_map)
        return out


def cat(parts: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """``torch.cat(parts, dim)``; shape-only (meta) parts are joined by shape, as
    :func:`_stack` stacks them: torch concatenates meta tensors through its Python
    reference, a quarter of a millisecond a call, and planning a target joins every
    fused tensor (GPT-2's q/k/v) that way once per materialization."""
    import torch

    first = parts[0]
    if first.is_meta and all(p.is_meta for p in parts):
        n = first.dim()
        axis = dim + n if -n <= dim < 0 else dim
        if 0 <= axis < n and all(
            p.dtype == first.dtype
            and p.dim() == n
            and all(
                a == b
                for i, (a, b) in enumerate(zip(p.shape, first.shape, strict=True))
                if i != axis
            )
            for p in parts
        ):
            shape = list(first.shape)
            shape[axis] = sum(p.shape[axis] for p in parts)
            return torch.empty(shape, dtype=first.dtype, device="meta")
    return torch.cat(list(parts), dim=dim)  # torch's own refusal of parts that do not join


def _stack(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(parts)``, or its values without a copy. Shape-only (meta) parts of
    one shape are stacked by shape: torch stacks meta tensors through its Python
    reference, whose first call imports torch._dynamo, a second or more added to every
    command that plans from shapes."""
    import torch

    first = parts[0]
    if first.is_meta and all(p.shape == first.shape and p.dtype == first.dtype for p in parts):
        return torch.empty((len(parts), *first.shape), dtype=first.dtype, device="meta")
    base = first._base
    if (
        base is not None
        and base.is_contiguous()
        and tuple(base.shape) == (len(parts), *first.shape)
        and all(
            p._base is base and p.is_contiguous() and p.data_ptr() == base[i].data_ptr()
            for i, p in enumerate(parts)
        )
    ):
        # The rows of one buffer, in order (a group read by zoo.api.tensors.load_tensors
        # with layer_of): the stack is that buffer, not a second copy of it.
        return base
    return torch.stack(parts)


def _copy_json(value: Any) -> Any:
    """A deep copy of a config (JSON: dicts, lists and scalars), several times faster than
    ``copy.deepcopy``, which every materialization paid twice for its target config."""
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value
