"""GPT-2: pre-LayerNorm decoder whose projections are Conv1D layers storing ``(in, out)``.

Every Conv1D weight is transposed to ``(out, in)``; the fused ``c_attn`` (hidden,
3*hidden) is cut into separate ``attn.q``, ``attn.k`` and ``attn.v`` signals (and its bias
into three), and :meth:`GPT2Family.from_signals` fuses and transposes them back.

Signals::

    embeddings.word            (vocab, hidden)            embedding (wte)
    embeddings.position        (positions, hidden)        embedding (wpe)
    attn.norm.{weight,bias}    (layers, hidden)           norm (ln_1)
    attn.{q,k,v,out}.weight    (layers, hidden, hidden)   linear (c_attn split, c_proj)
    attn.{q,k,v,out}.bias      (layers, hidden)           bias
    ffn.norm.{weight,bias}     (layers, hidden)           norm (ln_2)
    ffn.in.weight / .bias      (layers, ffn, hidden) / (layers, ffn)      (mlp.c_fc)
    ffn.out.weight / .bias     (layers, hidden, ffn) / (layers, hidden)   (mlp.c_proj)
    final_norm.{weight,bias}   (hidden,)                  norm (ln_f)
    lm_head.weight             (vocab, hidden)            head, optional (tied to wte)
    score.weight, classifier, qa   (classes, hidden)      task heads, optional
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zoo.families._common import (
    COPIES,
    Piece,
    Plan,
    Rule,
    TransformerFamily,
    cat,
    config_int,
    head_dim_of,
    norm,
    rule,
)
from zoo.families.bert import classification_rules

if TYPE_CHECKING:
    import torch


def _transpose(t: torch.Tensor) -> tuple[torch.Tensor]:
    return (t.t(),)


def _untranspose(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    return parts[0].t()


def _split_qkv_weight(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(p.t() for p in t.chunk(3, dim=1))


def _join_qkv_weight(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    return cat([p.t() for p in parts], dim=1)


def _split_qkv_bias(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.chunk(3))


def _join_qkv_bias(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    return cat(list(parts))


def conv1d(key: str, name: str, out: str, in_: str) -> list[Rule]:
    """Rules for a Conv1D ``<key>.weight`` (in, out) and ``<key>.bias`` (out,)."""
    weight = Piece(f"{name}.weight", ("layers", out, in_), "linear", 2)
    return [
        Rule((f"{key}.weight",), (weight,), split=_transpose, join=_untranspose),
        rule(f"{key}.bias", f"{name}.bias", ("layers", out), "bias"),
    ]


class GPT2Family(TransformerFamily):
    name = "gpt2"
    model_types = ("gpt2",)
    base_prefix = "transformer"
    base_archs = frozenset({"GPT2Model"})
    layer_stems = ("h",)
    layers_key = "n_layer"
    hidden_key = "n_embd"
    heads_key = "n_head"
    lm_head_inputs = ("final_norm.weight", "final_norm.bias")  # ln_f
    tied_signals = (("lm_head.weight", "embeddings.word"),)  # lm_head to wte

    def build_rules(self) -> list[Rule]:
        layer = "h.{i}"
        qkv_w = tuple(
            Piece(f"attn.{r}.weight", ("layers", "hidden", "hidden"), "linear", 2) for r in "qkv"
        )
        qkv_b = tuple(Piece(f"attn.{r}.bias", ("layers", "hidden"), "bias") for r in "qkv")
        return [
            rule("wte.weight", "embeddings.word", ("vocab", "hidden"), "embedding"),
            rule("wpe.weight", "embeddings.position", ("positions", "hidden"), "embedding"),
            *norm(f"{layer}.ln_1", "attn.norm"),
            Rule(
                (f"{layer}.attn.c_attn.weight",),
                qkv_w,
                split=_split_qkv_weight,
                join=_join_qkv_weight,
            ),
            Rule((f"{layer}.attn.c_attn.bias",), qkv_b, split=_split_qkv_bias, join=_join_qkv_bias),
            *conv1d(f"{layer}.attn.c_proj", "attn.out", "hidden", "hidden"),
            *norm(f"{layer}.ln_2", "ffn.norm"),
            *conv1d(f"{layer}.mlp.c_fc", "ffn.in", "ffn", "hidden"),
            *conv1d(f"{layer}.mlp.c_proj", "ffn.out", "hidden", "ffn"),
            # Causal-mask buffers older transformers saved in every layer; transformers
            # rebuilds and ignores them, zoo passes them through unchanged.
            rule(
                f"{layer}.attn.bias",
                "buffers.attn.bias",
                (COPIES, "one", "one", "positions", "positions"),
                "embedding",
                required=False,
                buffer=True,
            ),
            rule(
                f"{layer}.attn.masked_bias",
                "buffers.attn.masked_bias",
                (COPIES,),
                "embedding",
                required=False,
                buffer=True,
            ),
            *norm("ln_f", "final_norm"),
            # Tied to wte: save_pretrained omits it, a model's own state_dict has it.
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

    def sizes(self, config: Mapping[str, Any]) -> dict[str, int]:
        hidden = config_int(config, "n_embd", self.name)
        head_dim_of(hidden, config_int(config, "n_head", self.name), self.name)
        return {
            "layers": config_int(config, "n_layer", self.name),
            "hidden": hidden,
            "ffn": config_int(config, "n_inner", self.name, default=4 * hidden),
            "vocab": config_int(config, "vocab_size", self.name),
            "positions": config_int(config, "n_positions", self.name),
            "one": 1,
        }

    def write_config(self, config: dict[str, Any], plan: Plan, source: Mapping[str, Any]) -> None:
        config["n_layer"] = plan.layers
        config["n_embd"] = plan.hidden
        config["n_head"] = plan.heads
        # n_inner None means 4 * n_embd; keep it None while that still holds.
        keep_none = source.get("n_inner") is None and plan.ffn == 4 * plan.hidden
        config["n_inner"] = None if keep_none else plan.ffn
