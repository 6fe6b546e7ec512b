"""Decoders shaped like llama, declared as data.

Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3 and Phi-3 share one body: token
embeddings, a stack of pre-norm layers of grouped-query attention with rotary positions
and a gated MLP, a final RMSNorm and an LM head (often tied to the embeddings). What sets
them apart is named in a :class:`Decoder` declaration (biases on q/k/v, RMSNorms on
queries and keys, extra norms around each block, fused projections, gains stored as
``1 + w``, config keys that follow head_dim or the depth); :class:`DecoderFamily` turns
any declaration into a family. Soft-caps and the sliding window's width are config values
a resize keeps as they are. Which layers slide is per layer: each target layer takes the
attention type of the source layer it is made from (:meth:`DecoderFamily.write_layer_config`).

Signals (``attn`` = heads * head_dim, ``kv`` = kv_heads * head_dim; ``attn`` equals
``hidden`` unless the config sets head_dim apart)::

    embeddings.word                   (vocab, hidden)          embedding (embed_tokens)
    attn.norm.weight                  (layers, hidden)         norm (input_layernorm)
    attn.q.weight                     (layers, attn, hidden)   linear (q_proj; Phi-3: part
                                                               of qkv_proj, as k and v)
    attn.k.weight / attn.v.weight     (layers, kv, hidden)     linear (k_proj, v_proj)
    attn.{q,k,v}.bias                 (layers, attn|kv)        bias (always in qwen2)
    attn.{q,k}_norm.weight            (layers, head_dim)       norm, with qk_norm
    attn.out.weight / .bias           (layers, hidden, attn)   linear (o_proj)
    attn.post_norm.weight             (layers, hidden)         norm, with sandwich_norms
    ffn.norm.weight                   (layers, hidden)         norm (post_attention_layernorm,
                                                               or pre_feedforward_layernorm)
    ffn.gate.weight / ffn.up.weight   (layers, ffn, hidden)    linear (gate_proj, up_proj;
                                                               Phi-3: gate_up_proj)
    ffn.down.weight                   (layers, hidden, ffn)    linear (down_proj)
    ffn.{gate,up,down}.bias           (layers, ffn|hidden)     bias (mlp_bias)
    ffn.post_norm.weight              (layers, hidden)         norm, with sandwich_norms
    final_norm.weight                 (hidden,)                norm
    lm_head.weight                    (vocab, hidden)          head, optional (may be tied)
    score.weight, qa                  (classes, hidden)        task heads, optional

Target sizes: a source whose head_dim is hidden / heads (llama, Mistral 7B, Phi-3) keeps
that tie, as bert and gpt2 do: the default keeps head_dim, ``--heads`` changes it. A
source that sets head_dim apart, or has q/k norms over it, keeps head_dim always: the
default keeps the source's heads per hidden unit, ``--heads`` sets the count.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zoo.errors import InvalidCheckpointError, InvalidTargetError
from zoo.families._common import (
    COPIES,
    Plan,
    Rule,
    TransformerFamily,
    _depth,
    _positive,
    closest,
    config_int,
    divisors,
    fitting_multiples_near,
    fused,
    join_or,
    linear,
    norm,
    plan_target,
    round_ratio,
    rule,
)
from zoo.families.base import SignalKind, TargetSize
from zoo.families.bert import classification_rules


@dataclass(frozen=True)
class Decoder:
    """What one llama-shaped decoder family is: names and config keys, no code.

    Attributes:
        name: the registry name (``zoo materialize NAME``, ``zoo ls --family NAME``).
        model_types: the config.json ``model_type`` values it reads.
        base_archs: architectures saved without the ``model.`` prefix (the bare model).
        transformer_archs: task architectures saved with ``transformer.`` instead of
            ``model.`` before the base model's names (transformers' QA models of llama,
            Qwen2 and Qwen3).
        qkv_bias: q, k and v always carry biases (Qwen2). Otherwise every projection's
            bias is read when the checkpoint has it (``attention_bias``, ``mlp_bias``).
        qk_norm: an RMSNorm over head_dim on queries and on keys in every layer (Qwen3,
            Gemma 3); head_dim is then kept by every target.
        sandwich_norms: attention's and the MLP's outputs are normalized too (Gemma 2
            and 3: ``post_attention_layernorm`` after attention, ``pre_feedforward`` and
            ``post_feedforward_layernorm`` around the MLP).
        fused_qkv: one ``qkv_proj`` holds q, k and v stacked (Phi-3).
        fused_gate_up: one ``gate_up_proj`` holds gate and up stacked (Phi-3).
        gain_offset: RMSNorm gains are stored as ``w`` in ``1 + w`` (Gemma), so they are
            zero-centred (a from-scratch init sets them to zero).
        follow_head_dim: config keys that equal head_dim in the source and must follow it
            (Gemma 2 and 3's ``query_pre_attn_scalar``); a different value is kept.
        per_layer_keys: config lists with one entry per layer (``layer_types``: sliding or
            full attention); target layer ``j`` takes the entry of the source layer it is
            made from.
        full_every: how transformers fills ``layer_types`` when a config has none: every
            n-th layer full, the others sliding, n read from the config key when it has
            it, else the default (Gemma 2: ``(None, 2)``; Gemma 3:
            ``("sliding_window_pattern", 6)``).
        sliding_from: the same for a config that says where sliding starts: with
            ``use_sliding_window``, the layers from the key's value on slide, the first
            ones are full (Qwen2 and Qwen3: ``("max_window_layers", 28)``).
        heads_divide_hidden: transformers' config class refuses a hidden size that the
            head count does not divide, even where head_dim is set apart (llama, Gemma 2
            and 3), so targets keep to it.
    """

    name: str
    model_types: tuple[str, ...]
    base_archs: frozenset[str]
    qkv_bias: bool = False
    qk_norm: bool = False
    sandwich_norms: bool = False
    fused_qkv: bool = False
    fused_gate_up: bool = False
    gain_offset: bool = False
    follow_head_dim: tuple[str, ...] = ()
    per_layer_keys: tuple[str, ...] = ("layer_types",)
    full_every: tuple[str | None, int] | None = None
    sliding_from: tuple[str, int] | None = None
    heads_divide_hidden: bool = False
    transformer_archs: frozenset[str] = frozenset()


#: transformers' names of the two attention types in ``layer_types``
SLIDING, FULL = "sliding_attention", "full_attention"


class DecoderFamily(TransformerFamily):
    """The family a :class:`Decoder` declaration describes."""

    base_prefix = "model"
    layer_stems = ("layers",)
    layers_key = "num_hidden_layers"
    hidden_key = "hidden_size"
    heads_key = "num_attention_heads"
    tied_signals = (("lm_head.weight", "embeddings.word"),)  # lm_head to embed_tokens

    def __init__(self, decl: Decoder) -> None:
        self.decl = decl
        self.name = decl.name
        self.model_types = decl.model_types
        self.base_archs = decl.base_archs
        self.transformer_archs = decl.transformer_archs
        # A gain stored as 1 + w (Gemma) is not divided by dividing what is stored.
        self.lm_head_inputs = () if decl.gain_offset else ("final_norm.weight",)

    def __repr__(self) -> str:
        return f"<DecoderFamily {self.name}>"

    # --- names ---------------------------------------------------------------------------

    def build_rules(self) -> list[Rule]:
        d = self.decl
        attn, mlp, layer = "layers.{i}.self_attn", "layers.{i}.mlp", "layers.{i}"
        gain: SignalKind = "norm_bias" if d.gain_offset else "norm_weight"
        opt = dict(bias_required=False)
        rules = [
            rule("embed_tokens.weight", "embeddings.word", ("vocab", "hidden"), "embedding"),
            *norm(f"{layer}.input_layernorm", "attn.norm", bias=False, gain=gain),
        ]
        if d.fused_qkv:
            rules.append(
                fused(
                    f"{attn}.qkv_proj.weight",
                    [
                        ("attn.q.weight", ("layers", "attn", "hidden"), "linear"),
                        ("attn.k.weight", ("layers", "kv", "hidden"), "linear"),
                        ("attn.v.weight", ("layers", "kv", "hidden"), "linear"),
                    ],
                )
            )
        else:
            qkv = dict(bias_required=d.qkv_bias)
            rules += [
                *linear(f"{attn}.q_proj", "attn.q", "attn", "hidden", **qkv),
                *linear(f"{attn}.k_proj", "attn.k", "kv", "hidden", **qkv),
                *linear(f"{attn}.v_proj", "attn.v", "kv", "hidden", **qkv),
            ]
        if d.qk_norm:
            rules += [
                *norm(f"{attn}.q_norm", "attn.q_norm", bias=False, axis="head_dim", gain=gain),
                *norm(f"{attn}.k_norm", "attn.k_norm", bias=False, axis="head_dim", gain=gain),
            ]
        rules += linear(f"{attn}.o_proj", "attn.out", "hidden", "attn", **opt)
        if d.sandwich_norms:
            rules += [
                *norm(f"{layer}.post_attention_layernorm", "attn.post_norm", bias=False, gain=gain),
                *norm(f"{layer}.pre_feedforward_layernorm", "ffn.norm", bias=False, gain=gain),
                *norm(
                    f"{layer}.post_feedforward_layernorm", "ffn.post_norm", bias=False, gain=gain
                ),
            ]
        else:
            rules += norm(f"{layer}.post_attention_layernorm", "ffn.norm", bias=False, gain=gain)
        if d.fused_gate_up:
            rules.append(
                fused(
                    f"{mlp}.gate_up_proj.weight",
                    [
                        ("ffn.gate.weight", ("layers", "ffn", "hidden"), "linear"),
                        ("ffn.up.weight", ("layers", "ffn", "hidden"), "linear"),
                    ],
                )
            )
        else:
            rules += [
                *linear(f"{mlp}.gate_proj", "ffn.gate", "ffn", "hidden", **opt),
                *linear(f"{mlp}.up_proj", "ffn.up", "ffn", "hidden", **opt),
            ]
        rules += linear(f"{mlp}.down_proj", "ffn.down", "hidden", "ffn", **opt)
        rules += [
            # Rotary inverse frequencies older transformers saved; rebuilt from the config,
            # so they pass through while head_dim holds and are dropped when it changes.
            rule(
                f"{attn}.rotary_emb.inv_freq",
                "buffers.layer_inv_freq",
                (COPIES, "rotary"),
                "embedding",
                required=False,
                buffer=True,
            ),
            rule(
                "rotary_emb.inv_freq",
                "buffers.inv_freq",
                ("rotary",),
                "embedding",
                required=False,
                buffer=True,
            ),
            *norm("norm", "final_norm", bias=False, gain=gain),
            # May be tied to embed_tokens (tie_word_embeddings): save_pretrained then omits
            # it; present or absent, it round-trips as it came.
            rule(
                "lm_head.weight",
                "lm_head.weight",
                ("vocab", "hidden"),
                "head",
                scope="top",
                required=False,
            ),
            rule(
                "score.weight",
                "score.weight",
                ("classes", "hidden"),
                "head",
                scope="top",
                required=False,
            ),
            *classification_rules(),
        ]
        return rules

    # --- sizes ---------------------------------------------------------------------------

    def _heads(self, config: Mapping[str, Any]) -> tuple[int, int, int, int]:
        """(hidden, heads, kv_heads, head_dim) of a source config, validated."""
        hidden = config_int(config, "hidden_size", self.name)
        heads = config_int(config, "num_attention_heads", self.name)
        kv_heads = config_int(config, "num_key_value_heads", self.name, default=heads)
        if config.get("head_dim") is None and hidden % heads:
            raise InvalidCheckpointError(
                f"this {self.name} config has hidden size {hidden} not divisible by {heads} "
                "attention heads and no head_dim; it cannot be a valid checkpoint."
            )
        head_dim = config_int(config, "head_dim", self.name, default=hidden // heads)
        if heads % kv_heads:
            raise InvalidCheckpointError(
                f"this {self.name} config has num_key_value_heads={kv_heads}, which does not "
                f"divide num_attention_heads={heads}."
            )
        return hidden, heads, kv_heads, head_dim

    def attention_heads(self, config: Mapping[str, Any]) -> tuple[int, int] | None:
        _, heads, kv_heads, _ = self._heads(config)
        return heads, kv_heads

    def keeps_head_dim(self, config: Mapping[str, Any]) -> bool:
        """Whether every target keeps the source's head_dim (see the module doc)."""
        hidden, heads, _, head_dim = self._heads(config)
        return self.decl.qk_norm or heads * head_dim != hidden

    def sizes(self, config: Mapping[str, Any]) -> dict[str, int]:
        hidden, heads, kv_heads, head_dim = self._heads(config)
        return {
            "layers": config_int(config, "num_hidden_layers", self.name),
            "hidden": hidden,
            "ffn": config_int(config, "intermediate_size", self.name),
            "attn": heads * head_dim,
            "kv": kv_heads * head_dim,
            "vocab": config_int(config, "vocab_size", self.name),
            "head_dim": head_dim,
            "rotary": int(head_dim * _partial_rotary(config)) // 2,
        }

    # --- targets -------------------------------------------------------------------------

    def plan(self, config: Mapping[str, Any], target: TargetSize) -> Plan:
        _, heads, kv_heads, head_dim = self._heads(config)
        group = heads // kv_heads
        kv_set = target.kv_heads
        kv_set = kv_set if isinstance(kv_set, int) and not isinstance(kv_set, bool) else None

        def whole_groups(t_heads: int) -> bool:
            # Left unset, kv_heads is zoo's to choose (_kv_heads), for any head count.
            return t_heads % kv_set == 0 if kv_set and kv_set > 0 else True

        if self.keeps_head_dim(config):
            plan = self._plan_kept_head_dim(config, target, whole_groups)
        else:
            plan = self._plan_tied_head_dim(config, target, whole_groups)
        _check_rope_lists(self.name, config, head_dim, plan.head_dim)
        return dataclasses.replace(plan, kv_heads=self._kv_heads(plan, target, group))

    def _plan_tied_head_dim(self, config, target: TargetSize, whole_groups) -> Plan:
        """head_dim = hidden / heads, as in the source: bert's and gpt2's rules, plus an
        even head_dim (rotary pairs) and whole query groups per kv head set."""
        hidden, heads, _, _ = self._heads(config)

        def fits(t_hidden: int, t_heads: int) -> bool:
            return (t_hidden // t_heads) % 2 == 0 and whole_groups(t_heads)

        plan = plan_target(
            self.name,
            src_hidden=hidden,
            src_heads=heads,
            src_ffn=self.sizes(config)["ffn"],
            target=target,
            gqa=True,
            fits=fits,
        )
        if plan.head_dim % 2:
            even = [h for h in divisors(plan.hidden) if fits(plan.hidden, h)]
            hiddens = fitting_multiples_near(plan.hidden, plan.heads, lambda h: fits(h, plan.heads))
            options = [f"heads={join_or(closest(even, plan.heads))}"] if even else []
            options += [f"hidden={join_or(hiddens)}"] if hiddens else []
            if not options:
                src_head_dim = hidden // heads
                defaults = fitting_multiples_near(
                    plan.hidden, src_head_dim, lambda h: fits(h, h // src_head_dim)
                )
                options = [f"hidden={join_or(defaults)} with heads= left unset"]
            raise InvalidTargetError(
                f"{self.name}'s rotary embeddings need an even head_dim, but hidden="
                f"{plan.hidden} / heads={plan.heads} gives {plan.head_dim}; use "
                f"{', or '.join(options)}.",
                params=["hidden", "heads"],
            )
        return plan

    def _plan_kept_head_dim(self, config, target: TargetSize, whole_groups) -> Plan:
        """The source's head_dim; heads by default in the source's proportion to hidden."""
        hidden, heads, _, head_dim = self._heads(config)
        layers = _depth(target.layers)
        t_hidden = _positive("hidden", target.hidden)
        if target.heads is None:
            step = hidden // math.gcd(hidden, heads)  # hidden units per head, in lowest terms
            t_heads = t_hidden * heads // hidden
            if t_hidden % step or not whole_groups(t_heads):
                hiddens = fitting_multiples_near(
                    t_hidden, step, lambda h: whole_groups(h * heads // hidden)
                )
                use = f"use hidden={join_or(hiddens)}, or set heads=" if hiddens else "set heads="
                if t_hidden % step == 0:
                    # Whole heads, but not whole groups of the kv heads set: other kv
                    # counts fit them.
                    use += f", or set kv_heads= to {join_or(divisors(t_heads))}"
                    what = f"{t_heads} heads, which kv_heads={target.kv_heads} does not divide"
                else:
                    what = "no whole number of heads"
                raise InvalidTargetError(
                    f"{self.name} keeps head_dim {head_dim}, and by default the source's "
                    f"{heads} heads per {hidden} hidden units, which at hidden={t_hidden} gives "
                    f"{what}; {use}.",
                    params=["hidden", "heads", "kv_heads"],
                )
        else:
            t_heads = _positive("heads", target.heads)
            if self.decl.heads_divide_hidden and t_hidden % t_heads:
                ok = [h for h in divisors(t_hidden) if whole_groups(h)]
                options = [f"heads={join_or(closest(ok, t_heads))}"] if ok else []
                if whole_groups(t_heads):  # another hidden size keeps these heads
                    hiddens = fitting_multiples_near(t_hidden, t_heads, lambda h: True)
                    options.append(f"hidden={join_or(hiddens)}")
                if not options:  # no head count keeps the groups: fewer heads per kv head
                    near = min(divisors(t_hidden), key=lambda h: (abs(h - t_heads), h))
                    options.append(f"heads={near} with kv_heads={join_or(divisors(near))}")
                raise InvalidTargetError(
                    f"{self.name} needs a hidden size that its head count divides, and hidden="
                    f"{t_hidden} is not divisible by heads={t_heads}; use "
                    f"{', or '.join(options)}.",
                    params=["hidden", "heads", "kv_heads"],
                )
        if target.intermediate is None:
            ffn = round_ratio(t_hidden, self.sizes(config)["ffn"], hidden)
            if ffn < 1:
                raise InvalidTargetError(
                    f"the source's intermediate/hidden ratio gives an intermediate size of 0 "
                    f"for hidden={t_hidden}; set intermediate= explicitly.",
                    params=["hidden", "intermediate"],
                )
        else:
            ffn = _positive("intermediate", target.intermediate)
        return Plan(layers, t_hidden, t_heads, head_dim, ffn)

    def _kv_heads(self, plan: Plan, target: TargetSize, group: int) -> int:
        if target.kv_heads is not None:
            kv = target.kv_heads
            if isinstance(kv, bool) or not isinstance(kv, int) or kv < 1 or plan.heads % kv:
                raise InvalidTargetError(
                    f"kv_heads={kv!r} does not divide the target's {plan.heads} attention "
                    f"heads; use kv_heads={join_or(divisors(plan.heads))}.",
                    params=["kv_heads"],
                )
            return kv
        # The most kv heads that keep at least the source's query heads per kv head:
        # the source's grouping wherever the head count allows it (8 heads from 4 of 2
        # per kv head: 4), else larger groups, never more kv heads per query head than
        # the source has (2 heads from an MQA source of 4: still one kv head).
        return max(kv for kv in divisors(plan.heads) if kv == 1 or kv * group <= plan.heads)

    def write_config(self, config: dict[str, Any], plan: Plan, source: Mapping[str, Any]) -> None:
        src_head_dim = self._heads(source)[3]
        config["num_hidden_layers"] = plan.layers
        config["hidden_size"] = plan.hidden
        config["num_attention_heads"] = plan.heads
        config["num_key_value_heads"] = plan.kv_heads
        config["intermediate_size"] = plan.ffn
        if source.get("head_dim") is not None or plan.head_dim * plan.heads != plan.hidden:
            config["head_dim"] = plan.head_dim  # else transformers takes hidden / heads
        for key in self.decl.follow_head_dim:
            if source.get(key) == src_head_dim:
                config[key] = plan.head_dim

    def write_layer_config(
        self, config: dict[str, Any], source: Mapping[str, Any], layer_map: Sequence[int]
    ) -> None:
        """Each target layer attends as the source layer ``layer_map`` makes it from: the
        per-layer lists take that layer's entry; attention types that transformers
        computes from each layer's index (a config that lists none) are listed where the
        map breaks that rule; and where sliding starts (Qwen's ``max_window_layers``)
        moves to where the target's starts (:meth:`_write_sliding_start`)."""
        src_layers = config_int(source, "num_hidden_layers", self.name)
        for key in self.decl.per_layer_keys:
            values = source.get(key)
            if isinstance(values, list) and len(values) == src_layers:
                config[key] = [values[i] for i in layer_map]
        listed = isinstance(source.get("layer_types"), list)
        types = self._computed_layer_types(source, src_layers)
        if listed or types is None:
            types = config.get("layer_types")
        else:
            types = [types[i] for i in layer_map]
        if not isinstance(types, list) or len(types) != len(layer_map):
            types = None
        if self.decl.sliding_from:
            self._write_sliding_start(config, source, layer_map, types)
        if types is None:
            return
        if not listed and self._computed_layer_types(config, len(types)) != types:
            config["layer_types"] = types

    def _write_sliding_start(
        self,
        config: dict[str, Any],
        source: Mapping[str, Any],
        layer_map: Sequence[int],
        types: list[str] | None,
    ) -> None:
        """Where sliding starts (Qwen's ``max_window_layers``) moved to the target's first
        sliding layer (``types``), or to its depth when none slides. Exact where the
        target's full layers come first (a depth grown in place); otherwise no index says
        it, and ``layer_types`` does, which transformers reads instead. With sliding
        turned off, transformers ignores it, but a value past the target's depth (a Qwen3
        of 4 layers shrunk to 2 saying 4) is wrong for the file's size: it moves to the
        first target layer made from a source layer at or past the source's start, where
        sliding would start if turned on. A target made of the source's own layers in
        order keeps the source's config, as it keeps its weights."""
        key, default = self.decl.sliding_from
        start = source.get(key, default)
        if isinstance(start, bool) or not isinstance(start, int):
            return
        if list(layer_map) == list(range(config_int(source, self.layers_key, self.name))):
            return
        layers = len(layer_map)
        if _slides(config) and types is not None:
            slides = [t != FULL for t in types]
        else:
            slides = [i >= start for i in layer_map]
        if slides != [j >= start for j in range(layers)] or start > layers:
            config[key] = slides.index(True) if any(slides) else layers

    def _computed_layer_types(self, config: Mapping[str, Any], layers: int) -> list[str] | None:
        """The attention types transformers gives a config that lists none (the rule of
        its config class: all full where sliding is off), or None where the family has no
        such rule or the config's value is not a layer count."""
        if self.decl.full_every is not None:
            key, default = self.decl.full_every
            every = config.get(key, default) if key else default
            if isinstance(every, bool) or not isinstance(every, int) or every < 1:
                return None
            return [SLIDING if (j + 1) % every else FULL for j in range(layers)]
        if self.decl.sliding_from is not None:
            key, default = self.decl.sliding_from
            start = config.get(key, default)
            if isinstance(start, bool) or not isinstance(start, int):
                return None
            slides = _slides(config)
            return [SLIDING if slides and j >= start else FULL for j in range(layers)]
        return None


def _slides(config: Mapping[str, Any]) -> bool:
    """Whether a config that says where sliding starts (Qwen2's) has sliding layers at all:
    transformers drops the window unless ``use_sliding_window`` is set."""
    return bool(config.get("use_sliding_window")) and config.get("sliding_window") is not None


def _partial_rotary(config: Mapping[str, Any]) -> float:
    """The fraction of head_dim that rotary embeddings turn (Phi-3's partial rotary)."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    factor = rope.get("partial_rotary_factor") if isinstance(rope, Mapping) else None
    factor = factor or config.get("partial_rotary_factor") or 1.0
    return float(factor) if isinstance(factor, (int, float)) and 0 < factor <= 1 else 1.0


def _check_rope_lists(name: str, config: Mapping[str, Any], src: int, target: int) -> None:
    """Per-frequency rope factors (Phi-3's longrope short/long factors) list one number
    per rotary pair of the source's head_dim; zoo cannot invent factors for another."""
    if src == target:
        return
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    lists = [k for k, v in rope.items() if isinstance(v, list)] if isinstance(rope, Mapping) else []
    if lists:
        raise InvalidTargetError(
            f"this {name} config lists rope {' and '.join(sorted(lists))} per rotary "
            f"frequency of head_dim {src}, so the target must keep head_dim {src} (it would "
            f"be {target}); leave heads= unset, or use heads= hidden / {src}.",
            params=["heads"],
        )
