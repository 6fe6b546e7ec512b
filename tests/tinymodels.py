"""Tiny real models in Hugging Face layout, built from transformers' config classes.

Random weights with a fixed seed, saved with ``save_pretrained`` exactly as a real
checkpoint is (config.json + model.safetensors, or shards with an index). No network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# ViT and DeiT share one configuration: 16 patches of 4x4.
VISION = dict(
    image_size=16,
    patch_size=4,
    num_channels=3,
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=64,
    num_labels=5,
)

# Small enough for fast tests, big enough that every axis can halve twice.
TINY = {
    "bert": dict(
        arch="BertForMaskedLM",
        config=dict(
            vocab_size=96,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            type_vocab_size=2,
        ),
    ),
    "roberta": dict(
        arch="RobertaForMaskedLM",
        config=dict(
            vocab_size=96,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=66,
            type_vocab_size=1,
            pad_token_id=1,
        ),
    ),
    "gpt2": dict(
        arch="GPT2LMHeadModel",
        config=dict(
            vocab_size=96,
            n_embd=32,
            n_layer=4,
            n_head=4,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        ),
    ),
    "vit": dict(arch="ViTForImageClassification", config=VISION),
    # Distilled DeiT (model_type deit): ViT plus a distillation token and a second head.
    "deit": dict(arch="DeiTForImageClassificationWithTeacher", config=VISION),
    "llama": dict(
        arch="LlamaForCausalLM",
        config=dict(
            vocab_size=96,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=88,
            max_position_embeddings=64,
            tie_word_embeddings=False,
        ),
    ),
}

# The llama-shaped decoders (zoo/families/decoders.py): llama's sizes, each with what
# sets its family apart switched on, so the tests see every declared difference. Sliding
# windows of 4 tokens are shorter than the tests' inputs, so they change the logits.
_DECODER = dict(TINY["llama"]["config"])
DECODER_TINY = {
    # head_dim set apart from hidden / heads, as in Mistral NeMo
    "mistral": ("MistralForCausalLM", dict(head_dim=16, sliding_window=4)),
    # q/k/v biases, a tied head, full attention in the first two layers then sliding
    "qwen2": (
        "Qwen2ForCausalLM",
        dict(
            tie_word_embeddings=True, use_sliding_window=True, sliding_window=4, max_window_layers=2
        ),
    ),
    # q/k norms over a head_dim set apart
    "qwen3": ("Qwen3ForCausalLM", dict(head_dim=16)),
    # (1 + w) gains, embeddings scaled by sqrt(hidden), a tied head
    "gemma": ("GemmaForCausalLM", dict(head_dim=16, tie_word_embeddings=True)),
    # norms around both blocks, soft-caps, alternating sliding/full attention
    "gemma2": (
        "Gemma2ForCausalLM",
        dict(
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=4,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            tie_word_embeddings=True,
        ),
    ),
    # Gemma 2 plus q/k norms; three sliding layers, then one full
    "gemma3": (
        "Gemma3ForCausalLM",
        dict(
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=4,
            layer_types=["sliding_attention"] * 3 + ["full_attention"],
            tie_word_embeddings=True,
        ),
    ),
    # fused qkv_proj and gate_up_proj (grouped kv heads make the split uneven)
    "phi3": ("Phi3ForCausalLM", dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)),
}
for _name, (_arch, _extra) in DECODER_TINY.items():
    TINY[_name] = dict(arch=_arch, config={**_DECODER, **_extra})

#: every llama-shaped decoder family, llama included
DECODERS = ("llama", *DECODER_TINY)

FAMILIES = tuple(TINY)


def build_model(family: str, *, seed: int = 0, **overrides):
    """Return a freshly initialized tiny transformers model of ``family``."""
    import torch
    import transformers

    spec = TINY[family]
    arch = getattr(transformers, spec["arch"])
    config = arch.config_class(**{**spec["config"], **overrides})
    torch.manual_seed(seed)
    model = arch(config)
    model.eval()
    return model


def save_tiny(
    family: str, folder: Path, *, seed: int = 0, max_shard_size: str | None = None, **overrides
) -> Path:
    """Build a tiny ``family`` model and save it in HF layout under ``folder``."""
    model = build_model(family, seed=seed, **overrides)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = {"safe_serialization": True}
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(folder, **kwargs)
    return folder


def legacy_norm_names(state: dict) -> dict:
    """``state`` as BERTs converted from TensorFlow store it: every ``LayerNorm``'s weight
    and bias under ``gamma`` and ``beta`` (the names transformers renames on load)."""
    import re

    def legacy(name: str) -> str:
        name = re.sub(r"LayerNorm\.bias$", "LayerNorm.beta", name)
        return re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", name)

    return {legacy(k): v for k, v in state.items()}


def with_legacy_norm_names(folder: Path, dest: Path) -> Path:
    """A copy of ``folder`` whose LayerNorm gains and biases are named as BERTs converted
    from TensorFlow name them (:func:`legacy_norm_names`)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, dest)
    tensors = load_file(dest / "model.safetensors")
    save_file(legacy_norm_names(tensors), dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def copies(base: Path, root: Path, n: int, start: int = 0) -> list[Path]:
    """``n`` distinct checkpoints sharing ``base``'s weights (hard links), each config
    naming its copy: a library of fine-tune configs, artifacts that share every tensor."""
    config = json.loads((base / "config.json").read_text())
    out = []
    for i in range(start, start + n):
        folder = root / f"{base.name}-copy-{i}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({**config, "copy": i}))
        os.link(base / "model.safetensors", folder / "model.safetensors")
        out.append(folder)
    return out
