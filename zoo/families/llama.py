"""Llama-style decoder: RMSNorm, SwiGLU MLP, rotary positions (no position table) and
grouped-query attention (``num_key_value_heads`` heads for k and v).

Signals (``kv`` = num_key_value_heads * head_dim)::

    embeddings.word                 (vocab, hidden)             embedding
    attn.norm.weight                (layers, hidden)            norm (input_layernorm)
    attn.q.weight / attn.out.weight (layers, hidden, hidden)    linear
    attn.k.weight / attn.v.weight   (layers, kv, hidden)        linear
    attn.{q,k,v,out}.bias           (layers, hidden|kv)         bias, with attention_bias
    ffn.norm.weight                 (layers, hidden)            norm (post_attention_layernorm)
    ffn.gate.weight / ffn.up.weight (layers, ffn, hidden)       linear
    ffn.down.weight                 (layers, hidden, ffn)       linear
    ffn.{gate,up,down}.bias         (layers, ffn|hidden)        bias, with mlp_bias
    final_norm.weight               (hidden,)                   norm
    lm_head.weight                  (vocab, hidden)             head, optional (may be tied)
    score.weight, qa                (classes, hidden)           task heads, optional
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from zoo.errors import InvalidCheckpointError, InvalidTargetError
from zoo.families._common import (
    COPIES,
    Plan,
    Rule,
    TransformerFamily,
    closest,
    config_int,
    divisors,
    fitting_multiples_near,
    join_or,
    linear,
    norm,
    plan_target,
    rule,
)
from zoo.families.base import TargetSize
from zoo.families.bert import classification_rules


class LlamaFamily(TransformerFamily):
    name = "llama"
    model_types = ("llama",)
    base_prefix = "model"
    base_archs = frozenset({"LlamaModel"})
    layer_stems = ("layers",)
    layers_key = "num_hidden_layers"
    hidden_key = "hidden_size"
    heads_key = "num_attention_heads"

    def build_rules(self) -> list[Rule]:
        attn, mlp = "layers.{i}.self_attn", "layers.{i}.mlp"
        opt = dict(bias_required=False)
        return [
            rule("embed_tokens.weight", "embeddings.word", ("vocab", "hidden"), "embedding"),
            *norm("layers.{i}.input_layernorm", "attn.norm", bias=False),
            *linear(f"{attn}.q_proj", "attn.q", "hidden", "hidden", **opt),
            *linear(f"{attn}.k_proj", "attn.k", "kv", "hidden", **opt),
            *linear(f"{attn}.v_proj", "attn.v", "kv", "hidden", **opt),
            *linear(f"{attn}.o_proj", "attn.out", "hidden", "hidden", **opt),
            *norm("layers.{i}.post_attention_layernorm", "ffn.norm", bias=False),
            *linear(f"{mlp}.gate_proj", "ffn.gate", "ffn", "hidden", **opt),
            *linear(f"{mlp}.up_proj", "ffn.up", "ffn", "hidden", **opt),
            *linear(f"{mlp}.down_proj", "ffn.down", "hidden", "ffn", **opt),
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
            *norm("norm", "final_norm", bias=False),
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

    def _heads(self, config: Mapping[str, Any]) -> tuple[int, int, int, int]:
        """(hidden, heads, kv_heads, head_dim) of a source config, validated."""
        hidden = config_int(config, "hidden_size", self.name)
        heads = config_int(config, "num_attention_heads", self.name)
        kv_heads = config_int(config, "num_key_value_heads", self.name, default=heads)
        head_dim = config.get("head_dim") or hidden // heads
        if heads * head_dim != hidden:
            raise InvalidCheckpointError(
                f"this llama config has {heads} heads of head_dim {head_dim} for hidden size "
                f"{hidden}; zoo's llama family needs num_attention_heads * head_dim == "
                "hidden_size."
            )
        if heads % kv_heads:
            raise InvalidCheckpointError(
                f"this llama config has num_key_value_heads={kv_heads}, which does not divide "
                f"num_attention_heads={heads}."
            )
        return hidden, heads, kv_heads, head_dim

    def sizes(self, config: Mapping[str, Any]) -> dict[str, int]:
        hidden, _, kv_heads, head_dim = self._heads(config)
        return {
            "layers": config_int(config, "num_hidden_layers", self.name),
            "hidden": hidden,
            "ffn": config_int(config, "intermediate_size", self.name),
            "kv": kv_heads * head_dim,
            "vocab": config_int(config, "vocab_size", self.name),
            "rotary": head_dim // 2,
        }

    def plan(self, config: Mapping[str, Any], target: TargetSize) -> Plan:
        hidden, heads, kv_heads, _ = self._heads(config)
        group = heads // kv_heads
        kv_set = target.kv_heads
        kv_set = kv_set if isinstance(kv_set, int) and not isinstance(kv_set, bool) else None

        def fits(t_hidden: int, t_heads: int) -> bool:
            """Llama's own rules: an even head_dim (rotary), whole query groups per kv head."""
            per_kv = t_heads % kv_set == 0 if kv_set and kv_set > 0 else t_heads % group == 0
            return (t_hidden // t_heads) % 2 == 0 and per_kv

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
            options = [f"heads {join_or(closest(even, plan.heads))}"] if even else []
            options += [f"hidden {join_or(hiddens)}"] if hiddens else []
            if not options:
                src_head_dim = hidden // heads
                defaults = fitting_multiples_near(
                    plan.hidden, src_head_dim, lambda h: fits(h, h // src_head_dim)
                )
                options = [f"hidden {join_or(defaults)} with heads left unset"]
            raise InvalidTargetError(
                f"llama's rotary embeddings need an even head_dim, but hidden {plan.hidden} / "
                f"{plan.heads} heads gives {plan.head_dim}; use {', or '.join(options)}."
            )
        if target.kv_heads is not None:
            kv = target.kv_heads
            if isinstance(kv, bool) or not isinstance(kv, int) or kv < 1 or plan.heads % kv:
                raise InvalidTargetError(
                    f"kv_heads {kv!r} does not divide the target's {plan.heads} attention "
                    f"heads; use kv_heads {join_or(divisors(plan.heads))}."
                )
        else:
            if plan.heads % group:
                raise InvalidTargetError(
                    f"the target's {plan.heads} heads cannot keep the source's {group} query "
                    f"heads per kv head; set kv_heads to one of "
                    f"{join_or(divisors(plan.heads))}, or choose a size whose head count is a "
                    f"multiple of {group}."
                )
            kv = plan.heads // group
        return dataclasses.replace(plan, kv_heads=kv)

    def write_config(self, config: dict[str, Any], plan: Plan, source: Mapping[str, Any]) -> None:
        config["num_hidden_layers"] = plan.layers
        config["hidden_size"] = plan.hidden
        config["num_attention_heads"] = plan.heads
        config["num_key_value_heads"] = plan.kv_heads
        config["intermediate_size"] = plan.ffn
        config["head_dim"] = plan.head_dim
