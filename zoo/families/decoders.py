"""The llama-shaped decoder families zoo resizes, one declaration each.

Adding such a family is one :class:`~zoo.families.decoder.Decoder` here, its ``CLOSEST``
entry in zoo/defaults.py and its tiny model in tests/tinymodels.py; no transform and no
engine code changes. Variants with mixture-of-experts layers (``qwen2_moe``,
``qwen3_moe``, ``mixtral``) are not declared: they are catalogued, not resized.
"""

from __future__ import annotations

from zoo.families.decoder import Decoder

LLAMA = Decoder(
    "llama",
    ("llama",),
    frozenset({"LlamaModel"}),
    heads_divide_hidden=True,
    transformer_archs=frozenset({"LlamaForQuestionAnswering"}),
)

# Mistral 7B is llama's layout with a sliding attention window (a config value);
# Mistral NeMo sets head_dim apart from hidden / heads.
MISTRAL = Decoder("mistral", ("mistral",), frozenset({"MistralModel"}))

# Qwen2 and Qwen2.5: biases on q, k and v (not on o_proj); small ones tie the LM head.
QWEN2 = Decoder(
    "qwen2",
    ("qwen2",),
    frozenset({"Qwen2Model"}),
    qkv_bias=True,
    sliding_from=("max_window_layers", 28),
    transformer_archs=frozenset({"Qwen2ForQuestionAnswering"}),
)

# Qwen3 (dense): no q/k/v biases, an RMSNorm over head_dim on queries and keys, and a
# head_dim set apart from hidden / heads (128 at every size).
QWEN3 = Decoder(
    "qwen3",
    ("qwen3",),
    frozenset({"Qwen3Model"}),
    qk_norm=True,
    sliding_from=("max_window_layers", 28),
    transformer_archs=frozenset({"Qwen3ForQuestionAnswering"}),
)

# Gemma: RMSNorm gains stored as w in (1 + w); embeddings scaled by sqrt(hidden_size),
# which transformers computes from the target's config, so nothing is stored for it.
GEMMA = Decoder("gemma", ("gemma",), frozenset({"GemmaModel"}), gain_offset=True)

# Gemma 2: Gemma plus norms on attention's and the MLP's outputs, attention and final
# logit soft-caps and alternating sliding/full attention (config values), and a query
# scale query_pre_attn_scalar that equals head_dim in every released size but 27B's.
GEMMA2 = Decoder(
    "gemma2",
    ("gemma2",),
    frozenset({"Gemma2Model"}),
    gain_offset=True,
    sandwich_norms=True,
    follow_head_dim=("query_pre_attn_scalar",),
    full_every=(None, 2),
    heads_divide_hidden=True,
)

# Gemma 3's text model (Gemma3ForCausalLM; the multimodal gemma3 checkpoints are
# catalogued only): Gemma 2 plus q/k norms, five sliding layers to one full.
GEMMA3 = Decoder(
    "gemma3",
    ("gemma3_text",),
    frozenset({"Gemma3TextModel"}),
    gain_offset=True,
    sandwich_norms=True,
    qk_norm=True,
    follow_head_dim=("query_pre_attn_scalar",),
    full_every=("sliding_window_pattern", 6),
    heads_divide_hidden=True,
)

# Phi-3: q, k and v in one qkv_proj, gate and up in one gate_up_proj.
PHI3 = Decoder("phi3", ("phi3",), frozenset({"Phi3Model"}), fused_qkv=True, fused_gate_up=True)

#: every declaration, in the order zoo lists its families
DECODERS = (LLAMA, MISTRAL, QWEN2, QWEN3, GEMMA, GEMMA2, GEMMA3, PHI3)
