"""BERT: post-LayerNorm encoder with learned position and token-type embeddings.

Signals (``L`` layers; ``q``, ``k``, ``v``, ``out`` are the attention projections)::

    embeddings.word             (vocab, hidden)         embedding
    embeddings.position         (positions, hidden)     embedding
    embeddings.token_type       (types, hidden)         embedding
    embeddings.norm.{weight,bias}  (hidden,)            norm
    attn.{q,k,v,out}.weight     (layers, hidden, hidden)  linear
    attn.{q,k,v,out}.bias       (layers, hidden)        bias
    attn.norm.{weight,bias}     (layers, hidden)        norm
    ffn.in.weight / .bias       (layers, ffn, hidden) / (layers, ffn)
    ffn.out.weight / .bias      (layers, hidden, ffn) / (layers, hidden)
    ffn.norm.{weight,bias}      (layers, hidden)        norm
    pooler.{weight,bias}        (hidden, hidden) / (hidden,)       optional
    mlm.transform, mlm.norm, mlm.bias (vocab,), mlm.decoder.weight (vocab, hidden),
    mlm.decoder.bias, nsp (classes, hidden), classifier (classes, hidden),
    qa (classes, hidden)        task heads, each optional

A LayerNorm stored as ``LayerNorm.gamma`` / ``.beta`` (BERTs converted from TensorFlow)
makes the same ``norm`` signals and is written back under those names
(:func:`zoo.families._common.legacy_norm_name`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zoo.families._common import (
    Plan,
    Rule,
    TransformerFamily,
    config_int,
    head_dim_of,
    linear,
    norm,
    rule,
)


def encoder_layer_rules() -> list[Rule]:
    """The per-layer tensors BERT and RoBERTa share (``encoder.layer.{i}...``)."""
    layer = "encoder.layer.{i}"
    return [
        *linear(f"{layer}.attention.self.query", "attn.q", "hidden", "hidden"),
        *linear(f"{layer}.attention.self.key", "attn.k", "hidden", "hidden"),
        *linear(f"{layer}.attention.self.value", "attn.v", "hidden", "hidden"),
        *linear(f"{layer}.attention.output.dense", "attn.out", "hidden", "hidden"),
        *norm(f"{layer}.attention.output.LayerNorm", "attn.norm"),
        *linear(f"{layer}.intermediate.dense", "ffn.in", "ffn", "hidden"),
        *linear(f"{layer}.output.dense", "ffn.out", "hidden", "ffn"),
        *norm(f"{layer}.output.LayerNorm", "ffn.norm"),
    ]


def embedding_rules() -> list[Rule]:
    """Word, position and token-type embeddings, their LayerNorm, and legacy id buffers."""
    return [
        rule(
            "embeddings.word_embeddings.weight", "embeddings.word", ("vocab", "hidden"), "embedding"
        ),
        rule(
            "embeddings.position_embeddings.weight",
            "embeddings.position",
            ("positions", "hidden"),
            "embedding",
        ),
        rule(
            "embeddings.token_type_embeddings.weight",
            "embeddings.token_type",
            ("types", "hidden"),
            "embedding",
        ),
        *norm("embeddings.LayerNorm", "embeddings.norm"),
        # Older transformers saved these non-persistent buffers; they pass through.
        rule(
            "embeddings.position_ids",
            "buffers.position_ids",
            ("one", "positions"),
            "embedding",
            required=False,
            buffer=True,
        ),
        rule(
            "embeddings.token_type_ids",
            "buffers.token_type_ids",
            ("one", "positions"),
            "embedding",
            required=False,
            buffer=True,
        ),
    ]


def classification_rules() -> list[Rule]:
    """Heads on the pooled or token outputs (sequence/token classification, QA)."""
    return [
        *linear(
            "classifier",
            "classifier",
            "classes",
            "hidden",
            scope="top",
            required=False,
            kind="head",
        ),
        *linear("qa_outputs", "qa", "classes", "hidden", scope="top", required=False, kind="head"),
    ]


class BertFamily(TransformerFamily):
    name = "bert"
    model_types = ("bert",)
    base_prefix = "bert"
    base_archs = frozenset({"BertModel"})
    layer_stems = ("encoder.layer",)
    layers_key = "num_hidden_layers"
    hidden_key = "hidden_size"
    heads_key = "num_attention_heads"
    lm_head_inputs = ("mlm.norm.weight", "mlm.norm.bias")  # the MLM head's own LayerNorm
    lm_head_signal = "mlm.decoder.weight"
    lm_head_inputs_shared = False  # the NSP head reads the pooler, not the MLM head
    tied_signals = (("mlm.decoder.weight", "embeddings.word"), ("mlm.decoder.bias", "mlm.bias"))

    def mlm_rules(self) -> list[Rule]:
        """The masked-LM head (``cls.predictions``) and the next-sentence head."""
        top = dict(scope="top", required=False)
        return [
            *linear("cls.predictions.transform.dense", "mlm.transform", "hidden", "hidden", **top),
            *norm("cls.predictions.transform.LayerNorm", "mlm.norm", **top),
            rule("cls.predictions.bias", "mlm.bias", ("vocab",), "bias", **top),
            # Tied to embeddings.word / mlm.bias: save_pretrained omits them, a model's own
            # state_dict has them; either way they round-trip as they came.
            rule(
                "cls.predictions.decoder.weight",
                "mlm.decoder.weight",
                ("vocab", "hidden"),
                "head",
                **top,
            ),
            rule("cls.predictions.decoder.bias", "mlm.decoder.bias", ("vocab",), "bias", **top),
            *linear("cls.seq_relationship", "nsp", "classes", "hidden", kind="head", **top),
        ]

    def build_rules(self) -> list[Rule]:
        return [
            *embedding_rules(),
            *encoder_layer_rules(),
            *linear("pooler.dense", "pooler", "hidden", "hidden", required=False),
            *self.mlm_rules(),
            *classification_rules(),
        ]

    def sizes(self, config: Mapping[str, Any]) -> dict[str, int]:
        hidden = config_int(config, "hidden_size", self.name)
        heads = config_int(config, "num_attention_heads", self.name)
        head_dim_of(hidden, heads, self.name)
        return {
            "layers": config_int(config, "num_hidden_layers", self.name),
            "hidden": hidden,
            "ffn": config_int(config, "intermediate_size", self.name),
            "vocab": config_int(config, "vocab_size", self.name),
            "positions": config_int(config, "max_position_embeddings", self.name),
            "types": config_int(config, "type_vocab_size", self.name, default=2),
            "one": 1,
        }

    def write_config(self, config: dict[str, Any], plan: Plan, source: Mapping[str, Any]) -> None:
        config["num_hidden_layers"] = plan.layers
        config["hidden_size"] = plan.hidden
        config["num_attention_heads"] = plan.heads
        config["intermediate_size"] = plan.ffn
