"""ViT (and DeiT checkpoints published as ``model_type: vit``): a pre-LayerNorm encoder on
image patches. Distilled DeiT (``model_type: deit``) is :mod:`zoo.families.deit`.

transformers 5 renamed ViT's modules (``layers.{i}.attention.q_proj``...) but
``save_pretrained`` still writes the original names (``encoder.layer.{i}.attention.
attention.query``...), which every transformers version loads. Both are read;
:meth:`ViTFamily.from_signals` writes the original, portable names.

Signals::

    embeddings.cls_token        (one, one, hidden)          embedding
    embeddings.mask_token       (one, one, hidden)          embedding, optional
    embeddings.position         (one, positions, hidden)    embedding; positions = patches + 1
    embeddings.patch.weight     (hidden, channels, patch, patch)  linear, fan-in axes 1..3
    embeddings.patch.bias       (hidden,)                   bias
    attn.{q,k,v,out}.weight     (layers, hidden, hidden)    linear
    attn.{q,k,v,out}.bias       (layers, hidden)            bias (q/k/v only with qkv_bias)
    attn.norm.{weight,bias}     (layers, hidden)            norm (layernorm_before)
    ffn.in / ffn.out            (layers, ffn, hidden) / (layers, hidden, ffn)  linear + bias
    ffn.norm.{weight,bias}      (layers, hidden)            norm (layernorm_after)
    final_norm.{weight,bias}    (hidden,)                   norm
    pooler.{weight,bias}        (hidden, hidden)            linear, optional (ViTModel)
    classifier.{weight,bias}    (classes, hidden)           head, optional
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zoo.errors import InvalidCheckpointError
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


def _pair(value: Any, key: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return int(value[0]), int(value[1])
    raise InvalidCheckpointError(
        f"config.json of this vit checkpoint has {key}={value!r}; expected an integer or a "
        "pair of integers."
    )


class ViTFamily(TransformerFamily):
    name = "vit"
    model_types = ("vit",)
    base_prefix = "vit"
    base_archs = frozenset({"ViTModel"})
    layer_stems = ("encoder.layer", "layers")
    layers_key = "num_hidden_layers"
    hidden_key = "hidden_size"
    heads_key = "num_attention_heads"

    #: tokens prepended to the patches (cls; DeiT adds a distillation token)
    extra_tokens = 1

    def build_rules(self) -> list[Rule]:
        return [*self.encoder_rules(), *self.head_rules()]

    def head_rules(self) -> list[Rule]:
        top = dict(scope="top", required=False, kind="head")
        return [*linear("classifier", "classifier", "classes", "hidden", **top)]

    def encoder_rules(self) -> list[Rule]:
        old, new = "encoder.layer.{i}", "layers.{i}"

        def both(old_rest: str, new_rest: str) -> tuple[str, str]:
            return f"{old}.{old_rest}", f"{new}.{new_rest}"

        token = ("one", "one", "hidden")
        return [
            rule("embeddings.cls_token", "embeddings.cls_token", token, "embedding"),
            rule(
                "embeddings.mask_token", "embeddings.mask_token", token, "embedding", required=False
            ),
            rule(
                "embeddings.position_embeddings",
                "embeddings.position",
                ("one", "positions", "hidden"),
                "embedding",
            ),
            rule(
                "embeddings.patch_embeddings.projection.weight",
                "embeddings.patch.weight",
                ("hidden", "channels", "patch", "patch"),
                "linear",
                fan_in_axis=1,
            ),
            rule(
                "embeddings.patch_embeddings.projection.bias",
                "embeddings.patch.bias",
                ("hidden",),
                "bias",
            ),
            *linear(
                both("attention.attention.query", "attention.q_proj"),
                "attn.q",
                "hidden",
                "hidden",
                bias_required=False,
            ),
            *linear(
                both("attention.attention.key", "attention.k_proj"),
                "attn.k",
                "hidden",
                "hidden",
                bias_required=False,
            ),
            *linear(
                both("attention.attention.value", "attention.v_proj"),
                "attn.v",
                "hidden",
                "hidden",
                bias_required=False,
            ),
            *linear(
                both("attention.output.dense", "attention.o_proj"), "attn.out", "hidden", "hidden"
            ),
            *norm(both("layernorm_before", "layernorm_before"), "attn.norm"),
            *linear(both("intermediate.dense", "mlp.fc1"), "ffn.in", "ffn", "hidden"),
            *linear(both("output.dense", "mlp.fc2"), "ffn.out", "hidden", "ffn"),
            *norm(both("layernorm_after", "layernorm_after"), "ffn.norm"),
            *norm("layernorm", "final_norm"),
            # ViTModel's pooler maps hidden -> pooler_output_size, which defaults to hidden.
            *linear("pooler.dense", "pooler", "hidden", "hidden", required=False),
        ]

    def sizes(self, config: Mapping[str, Any]) -> dict[str, int]:
        hidden = config_int(config, "hidden_size", self.name)
        head_dim_of(hidden, config_int(config, "num_attention_heads", self.name), self.name)
        image = _pair(config.get("image_size", 224), "image_size")
        patch = _pair(config.get("patch_size", 16), "patch_size")
        if patch[0] != patch[1]:
            raise InvalidCheckpointError(
                f"this vit config has a non-square patch_size {patch}; zoo supports square "
                "patches only."
            )
        patches = (image[0] // patch[0]) * (image[1] // patch[1])
        return {
            "layers": config_int(config, "num_hidden_layers", self.name),
            "hidden": hidden,
            "ffn": config_int(config, "intermediate_size", self.name),
            "channels": config_int(config, "num_channels", self.name, default=3),
            "patch": patch[0],
            "positions": patches + self.extra_tokens,
            "one": 1,
        }

    def write_config(self, config: dict[str, Any], plan: Plan, source: Mapping[str, Any]) -> None:
        config["num_hidden_layers"] = plan.layers
        config["hidden_size"] = plan.hidden
        config["num_attention_heads"] = plan.heads
        config["intermediate_size"] = plan.ffn
        # The pooler's width follows hidden when it did in the source (the default).
        if source.get("pooler_output_size") == source.get("hidden_size"):
            config["pooler_output_size"] = plan.hidden
