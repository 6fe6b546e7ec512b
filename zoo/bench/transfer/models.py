"""The benchmark's models: one model class per family, small configs for sources trained
here, and loading a derived state into a model.

Masked LM for ``bert`` (BertForMaskedLM), causal LM for ``gpt2`` (GPT2LMHeadModel) and
``llama`` (LlamaForCausalLM). A real checkpoint often lacks the LM head (a sentence encoder
saves BertModel): that head is the model class's own initialization, drawn from the run's
seed, so it is the same for every method.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch

from zoo.errors import InvalidInputError

from . import data as bdata

FAMILIES = ("gpt2", "bert", "llama")
CAUSAL = ("gpt2", "llama")
HEAD_DIM = 32
ARCH = {"gpt2": "GPT2LMHeadModel", "bert": "BertForMaskedLM", "llama": "LlamaForCausalLM"}
# Tied tensors save_pretrained leaves out; load_state_dict may miss exactly these.
TIED = {
    "gpt2": {"lm_head.weight"},
    "bert": {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"},
    "llama": set(),  # its own lm_head, as LlamaConfig has by default
}
# The LM head of each model class: a source without any of it gets the class's own init.
LM_HEAD = {"gpt2": "lm_head.", "bert": "cls.predictions.", "llama": "lm_head."}
# Tensors of a real checkpoint that the benchmark's model class has no place for.
UNUSED = {"gpt2": (), "bert": ("pooler.", "embeddings.position_ids"), "llama": ()}
# Dropout off for every run: the comparison is of initializations, on the same batches.
NO_DROPOUT = {
    "gpt2": {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "bert": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "llama": {"attention_dropout": 0.0},
}


def parse_size(text: str | Sequence[int]) -> tuple[int, int]:
    """``"4x128"`` -> (layers, hidden)."""
    if not isinstance(text, str):
        layers, hidden = text
        return int(layers), int(hidden)
    m = re.fullmatch(r"\s*(\d+)\s*[xX/]\s*(\d+)\s*", text)
    if not m:
        raise InvalidInputError(f"size {text!r} must look like LAYERSxHIDDEN, e.g. 4x128")
    return int(m.group(1)), int(m.group(2))


def source_config(family: str, layers: int, hidden: int, seq: int) -> dict[str, Any]:
    """A small config of ``family`` for byte tokens, no dropout, head_dim 32."""
    heads = max(1, hidden // HEAD_DIM)
    if family == "gpt2":
        return dict(
            vocab_size=bdata.VOCAB,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=seq,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=bdata.SEP,
            eos_token_id=bdata.SEP,
            tie_word_embeddings=True,
        )
    if family == "bert":
        return dict(
            vocab_size=bdata.VOCAB,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=seq,
            type_vocab_size=2,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            pad_token_id=bdata.PAD,
        )
    if family == "llama":
        # SwiGLU width 3x hidden (Llama's is 8/3x; 3x keeps it dyadic), full multi-head
        # attention, RMSNorm, rotary positions, no biases, untied head.
        return dict(
            vocab_size=bdata.VOCAB,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=3 * hidden,
            max_position_embeddings=seq,
            bos_token_id=bdata.SEP,
            eos_token_id=bdata.SEP,
            tie_word_embeddings=False,
        )
    raise InvalidInputError(f"family {family!r} not benchmarked; choose one of {FAMILIES}")


def build_model(family: str, config: dict[str, Any], *, seed: int | None = None):
    """The family's LM class at ``config``, dropout off. With ``seed``, the class's own
    initialization is drawn from it (what a head the source lacks keeps)."""
    import transformers

    arch = getattr(transformers, ARCH[family])
    skip = ("architectures", "transformers_version", "_name_or_path")
    cfg = arch.config_class(
        **{**{k: v for k, v in config.items() if k not in skip}, **NO_DROPOUT[family]}
    )
    if seed is None:
        return arch(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return arch(cfg)


def load_state(model, family: str, state: dict[str, torch.Tensor]) -> list[str]:
    """Load a derived state (HF tensor names, with or without the base model's prefix)
    into ``model``; returns the LM-head tensors the state lacks, which keep the model's
    own initialization. Anything else missing or left over is an error."""
    own = set(model.state_dict())
    prefix = model.base_model_prefix + "."
    fitted = {}
    for key, value in state.items():
        if key.startswith(UNUSED[family]) or key.removeprefix(prefix).startswith(UNUSED[family]):
            continue
        fitted[key if key in own or prefix + key not in own else prefix + key] = value
    result = model.load_state_dict(fitted, strict=False)
    head = LM_HEAD[family]
    has_head = any(k.startswith(head) for k in fitted)
    kept = [] if has_head else [k for k in result.missing_keys if k.startswith(head)]
    missing = set(result.missing_keys) - TIED[family] - set(kept)
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"state does not fit the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]}"
        )
    model.tie_weights()
    return sorted(set(kept) - TIED[family])


def default_lr(hidden: int) -> float:
    """Peak AdamW learning rate per size (fixed per size, the same for every method)."""
    return round(2e-3 * math.sqrt(128 / hidden), 6)
