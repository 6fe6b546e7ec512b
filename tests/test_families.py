"""zoo.families: HF names <-> signals, and configs rewritten for a target size.

Every family is checked against real tiny transformers models (tests/tinymodels.py): exact
round trips, shapes per axis role, target configs that transformers builds and loads.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tinymodels import DECODERS, FAMILIES, TINY, build_model, legacy_norm_names, save_tiny

from zoo.errors import (
    InvalidCheckpointError,
    InvalidInputError,
    InvalidTargetError,
    UnknownFamilyError,
)
from zoo.families import (
    FAMILY_NAMES,
    Family,
    Signal,
    TargetSize,
    family_for_config,
    get_family,
)

CHANGING = ("layers", "hidden", "ffn", "kv", "attn")

# Targets from the 4-layer, 32-wide tiny sources: smaller, larger, and not a power of two.
TARGETS = {
    "L2S": TargetSize(layers=2, hidden=16),
    "S2L": TargetSize(layers=8, hidden=64),
    "mixed": TargetSize(layers=6, hidden=48),
}


@dataclass
class Tiny:
    family: str
    folder: Path
    config: dict[str, Any]  # config.json as saved
    disk: dict[str, torch.Tensor]  # model.safetensors as saved (tied heads omitted)
    memory: dict[str, torch.Tensor]  # the model's own state_dict (tied heads present)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Tiny]:
    from safetensors.torch import load_file

    root = tmp_path_factory.mktemp("families")
    out = {}
    for name in FAMILIES:
        folder = save_tiny(name, root / name)
        out[name] = Tiny(
            family=name,
            folder=folder,
            config=json.loads((folder / "config.json").read_text()),
            disk=load_file(folder / "model.safetensors"),
            memory=build_model(name).state_dict(),
        )
    return out


def arch_class(config: dict[str, Any]):
    import transformers

    return getattr(transformers, config["architectures"][0])


def build(config: dict[str, Any]) -> torch.nn.Module:
    arch = arch_class(config)
    torch.manual_seed(0)
    return arch(arch.config_class.from_dict(config)).eval()


# transformers 5 renamed ViT's modules but save_pretrained writes the original names, and
# from_pretrained renames them on load in this order (transformers' conversion_mapping).
_VIT_RENAMES = (
    ("encoder.layer.", "layers."),
    ("attention.query", "q_proj"),
    ("attention.key", "k_proj"),
    ("attention.value", "v_proj"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
)


def module_layout(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict:
    """``state`` in checkpoint layout renamed to ``model``'s own parameter names."""
    own = model.state_dict()
    if all(k in own for k in state):
        return state
    out = {}
    for key, value in state.items():
        for old, new in _VIT_RENAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


def resized(signals: dict[str, Signal], sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    """Stand-in for a transform: each signal at the target's size along its changing axes;
    signals with no changing axis are left as they are."""
    out = {}
    for name, s in signals.items():
        if not set(s.axes) & set(CHANGING):
            out[name] = s.tensor.clone()
            continue
        shape = [
            sizes[a] if a in CHANGING else n for a, n in zip(s.axes, s.tensor.shape, strict=True)
        ]
        out[name] = (torch.randn(shape) * 0.02).to(s.tensor.dtype)
    return out


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


# --- the registry ---------------------------------------------------------------------------


def test_importing_families_does_not_import_torch():
    code = (
        "import sys, zoo.families; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1]
    )
    assert done.returncode == 0, done.stderr


def test_registry_names_and_lookup(tiny):
    assert set(FAMILY_NAMES) == {"bert", "roberta", "gpt2", "vit", "deit", *DECODERS}
    for name in FAMILY_NAMES:
        family = get_family(name)
        assert isinstance(family, Family)
        assert family.name == name
        assert get_family(name.upper()) is family
    for name, t in tiny.items():
        assert family_for_config(t.config).name == name


@pytest.mark.parametrize("config", [{"model_type": "t5"}, {}, {"model_type": None}])
def test_unknown_or_missing_model_type_is_refused(config):
    with pytest.raises(UnknownFamilyError) as err:
        family_for_config(config)
    message = str(err.value)
    for model_type in ("bert", "roberta", "gpt2", "vit", "deit", "llama"):
        assert model_type in message
    assert message.count(".") >= 1 and "\n" not in message


def test_unknown_family_name_is_refused():
    with pytest.raises(UnknownFamilyError, match="bert, roberta, gpt2, vit, deit, llama"):
        get_family("t5")


# --- source round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_checkpoint_round_trip_is_exact(tiny, name):
    t = tiny[name]
    family = family_for_config(t.config)
    signals = family.to_signals(t.disk, t.config)
    back = family.from_signals({k: s.tensor for k, s in signals.items()}, t.config)
    assert_same_state(back, t.disk)


@pytest.mark.parametrize("name", FAMILIES)
def test_in_memory_round_trip_is_exact(tiny, name):
    """A model's own state_dict (tied heads present, ViT's new names) comes back whole."""
    t = tiny[name]
    family = family_for_config(t.config)
    model = build(t.config)
    back = family.from_signals(family.to_signals(t.memory, t.config), t.config)
    assert_same_state(module_layout(back, model), t.memory)


@pytest.mark.parametrize("name", FAMILIES)
def test_unchanged_outputs_are_views_of_their_signals(tiny, name):
    """What a family says it passes through uncopied is what from_signals returns."""
    t = tiny[name]
    family = get_family(name)
    signals = {k: s.tensor.contiguous() for k, s in family.to_signals(t.disk, t.config).items()}
    back = family.from_signals(signals, t.config)
    outputs = {(v.data_ptr(), tuple(v.shape)) for v in back.values()}
    said = {k: family.unchanged_outputs(k) for k in signals}
    assert any(v == "layers" for v in said.values()) and any(v == "whole" for v in said.values())
    for key, layout in said.items():
        parts = {"whole": [signals[key]], "layers": list(signals[key].unbind(0)), None: []}
        for p in parts[layout]:
            assert (p.data_ptr(), tuple(p.shape)) in outputs, (key, layout)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("source", ["disk", "memory"])
def test_every_tensor_lands_in_exactly_one_signal(tiny, name, source):
    t = tiny[name]
    state = getattr(t, source)
    signals = get_family(name).to_signals(state, t.config)
    assert sum(s.tensor.numel() for s in signals.values()) == sum(v.numel() for v in state.values())
    # and no two signals share a value (a tensor counted twice would)
    assert len({id(s.tensor) for s in signals.values()}) == len(signals)


@pytest.mark.parametrize("name", FAMILIES)
def test_signal_shapes_follow_axis_roles(tiny, name):
    t = tiny[name]
    family = get_family(name)
    sizes = family.axis_sizes(t.config)
    assert sizes["layers"] == 4 and sizes["hidden"] == 32
    for sname, s in family.to_signals(t.disk, t.config).items():
        assert len(s.axes) == s.tensor.dim(), sname
        assert (s.spec.axes, s.spec.kind, s.spec.fan_in_axis) == (s.axes, s.kind, s.fan_in_axis)
        for axis, n in zip(s.axes, s.tensor.shape, strict=True):
            if axis in sizes:
                assert n == sizes[axis], (sname, axis)
        if s.kind in ("linear", "head"):
            assert s.fan_in_axis is not None and s.axes[s.fan_in_axis] in (
                "hidden",
                "ffn",
                "attn",
                "channels",
            ), sname
        else:
            assert s.fan_in_axis is None, sname


def shape_table(name: str) -> dict[str, tuple[tuple[str, ...], tuple[int, ...], str]]:
    L, H, V = 4, 32, 96
    F = TINY[name]["config"].get("intermediate_size", 4 * H)
    table = {
        "embeddings.word": (("vocab", "hidden"), (V, H), "embedding"),
        "attn.q.weight": (("layers", "hidden", "hidden"), (L, H, H), "linear"),
        "attn.out.weight": (("layers", "hidden", "hidden"), (L, H, H), "linear"),
        "attn.norm.weight": (("layers", "hidden"), (L, H), "norm_weight"),
    }
    if name in DECODERS:
        config = TINY[name]["config"]
        D = config.get("head_dim", H // 4)
        A, KV = 4 * D, 2 * D  # 4 heads, 2 kv heads
        gain = "norm_bias" if name.startswith("gemma") else "norm_weight"  # (1 + w)
        table |= {
            "attn.q.weight": (("layers", "attn", "hidden"), (L, A, H), "linear"),
            "attn.out.weight": (("layers", "hidden", "attn"), (L, H, A), "linear"),
            "attn.norm.weight": (("layers", "hidden"), (L, H), gain),
            "attn.k.weight": (("layers", "kv", "hidden"), (L, KV, H), "linear"),
            "attn.v.weight": (("layers", "kv", "hidden"), (L, KV, H), "linear"),
            "ffn.norm.weight": (("layers", "hidden"), (L, H), gain),
            "ffn.gate.weight": (("layers", "ffn", "hidden"), (L, F, H), "linear"),
            "ffn.up.weight": (("layers", "ffn", "hidden"), (L, F, H), "linear"),
            "ffn.down.weight": (("layers", "hidden", "ffn"), (L, H, F), "linear"),
            "final_norm.weight": (("hidden",), (H,), gain),
            "lm_head.weight": (("vocab", "hidden"), (V, H), "head"),
        }
        if name == "qwen2":
            table["attn.q.bias"] = (("layers", "attn"), (L, A), "bias")
            table["attn.k.bias"] = (("layers", "kv"), (L, KV), "bias")
        if name in ("qwen3", "gemma3"):
            table["attn.q_norm.weight"] = (("layers", "head_dim"), (L, D), gain)
        if name in ("gemma2", "gemma3"):
            table["attn.post_norm.weight"] = (("layers", "hidden"), (L, H), gain)
            table["ffn.post_norm.weight"] = (("layers", "hidden"), (L, H), gain)
        return table
    table |= {
        "attn.k.weight": (("layers", "hidden", "hidden"), (L, H, H), "linear"),
        "attn.q.bias": (("layers", "hidden"), (L, H), "bias"),
        "attn.norm.bias": (("layers", "hidden"), (L, H), "norm_bias"),
        "ffn.in.weight": (("layers", "ffn", "hidden"), (L, F, H), "linear"),
        "ffn.in.bias": (("layers", "ffn"), (L, F), "bias"),
        "ffn.out.weight": (("layers", "hidden", "ffn"), (L, H, F), "linear"),
    }
    if name in ("bert", "roberta"):
        P = TINY[name]["config"]["max_position_embeddings"]
        table |= {
            "embeddings.position": (("positions", "hidden"), (P, H), "embedding"),
            "embeddings.token_type": (
                ("types", "hidden"),
                (TINY[name]["config"]["type_vocab_size"], H),
                "embedding",
            ),
            "mlm.bias": (("vocab",), (V,), "bias"),
            "mlm.transform.weight": (("hidden", "hidden"), (H, H), "linear"),
        }
    if name == "gpt2":
        table |= {"embeddings.position": (("positions", "hidden"), (64, H), "embedding")}
    if name in ("vit", "deit"):
        del table["embeddings.word"]
        tokens = 2 if name == "deit" else 1  # cls (and distillation)
        table |= {
            "embeddings.cls_token": (("one", "one", "hidden"), (1, 1, H), "embedding"),
            "embeddings.position": (
                ("one", "positions", "hidden"),
                (1, 16 + tokens, H),
                "embedding",
            ),
            "embeddings.patch.weight": (
                ("hidden", "channels", "patch", "patch"),
                (H, 3, 4, 4),
                "linear",
            ),
        }
        heads = ["cls_classifier", "distillation_classifier"] if name == "deit" else ["classifier"]
        table |= {f"{h}.weight": (("classes", "hidden"), (5, H), "head") for h in heads}
    if name == "deit":
        table["embeddings.distillation"] = (("one", "one", "hidden"), (1, 1, H), "embedding")
    return table


@pytest.mark.parametrize("name", FAMILIES)
def test_named_signals_have_documented_shapes(tiny, name):
    t = tiny[name]
    signals = get_family(name).to_signals(t.memory, t.config)
    for sname, (axes, shape, kind) in shape_table(name).items():
        s = signals[sname]
        assert (s.axes, tuple(s.tensor.shape), s.kind) == (axes, shape, kind), sname


def test_bert_signals_stack_layers_in_order(tiny):
    t = tiny["bert"]
    signals = get_family("bert").to_signals(t.disk, t.config)
    for i in range(4):
        layer = f"bert.encoder.layer.{i}"
        assert torch.equal(
            signals["attn.q.weight"].tensor[i], t.disk[f"{layer}.attention.self.query.weight"]
        )
        assert torch.equal(
            signals["ffn.out.weight"].tensor[i], t.disk[f"{layer}.output.dense.weight"]
        )
        assert torch.equal(
            signals["ffn.norm.bias"].tensor[i], t.disk[f"{layer}.output.LayerNorm.bias"]
        )


def test_gpt2_splits_fused_qkv_and_transposes_conv1d(tiny):
    t = tiny["gpt2"]
    signals = get_family("gpt2").to_signals(t.disk, t.config)
    H = 32
    assert "transformer.h.0.attn.c_attn.weight" in t.disk
    for i in range(4):
        w = t.disk[f"transformer.h.{i}.attn.c_attn.weight"]  # (in, 3 * out)
        b = t.disk[f"transformer.h.{i}.attn.c_attn.bias"]
        assert w.shape == (H, 3 * H)
        for j, role in enumerate("qkv"):
            assert torch.equal(
                signals[f"attn.{role}.weight"].tensor[i], w[:, j * H : (j + 1) * H].T
            )
            assert torch.equal(signals[f"attn.{role}.bias"].tensor[i], b[j * H : (j + 1) * H])
        assert torch.equal(
            signals["attn.out.weight"].tensor[i], t.disk[f"transformer.h.{i}.attn.c_proj.weight"].T
        )
        assert torch.equal(
            signals["ffn.in.weight"].tensor[i], t.disk[f"transformer.h.{i}.mlp.c_fc.weight"].T
        )
        assert torch.equal(
            signals["ffn.out.weight"].tensor[i], t.disk[f"transformer.h.{i}.mlp.c_proj.weight"].T
        )
    assert signals["ffn.in.weight"].tensor.shape == (4, 4 * H, H)


def test_gpt2_fused_qkv_matches_the_model_function(tiny):
    """Signals cut from c_attn compute what the model's own attention computes."""
    t = tiny["gpt2"]
    signals = get_family("gpt2").to_signals(t.memory, t.config)
    model = build_model("gpt2")
    x = torch.randn(3, 32)
    fused = model.transformer.h[1].attn.c_attn(x)
    q = x @ signals["attn.q.weight"].tensor[1].T + signals["attn.q.bias"].tensor[1]
    v = x @ signals["attn.v.weight"].tensor[1].T + signals["attn.v.bias"].tensor[1]
    torch.testing.assert_close(q, fused[:, :32])
    torch.testing.assert_close(v, fused[:, 64:])


# --- tied heads -------------------------------------------------------------------------------

TIED = {
    "bert": ("cls.predictions.decoder.weight", "mlm.decoder.weight"),
    "roberta": ("lm_head.decoder.weight", "mlm.decoder.weight"),
    "gpt2": ("lm_head.weight", "lm_head.weight"),
}


@pytest.mark.parametrize("name", sorted(TIED))
def test_tied_head_round_trips_present_or_absent(tiny, name):
    t = tiny[name]
    key, signal = TIED[name]
    family = get_family(name)
    assert key not in t.disk and key in t.memory  # what transformers saves and holds
    absent = family.to_signals(t.disk, t.config)
    present = family.to_signals(t.memory, t.config)
    assert signal not in absent
    assert torch.equal(present[signal].tensor, present["embeddings.word"].tensor)
    assert key not in family.from_signals(absent, t.config)
    assert key in family.from_signals(present, t.config)


def test_untied_llama_head_is_kept(tiny):
    t = tiny["llama"]
    assert t.config["tie_word_embeddings"] is False and "lm_head.weight" in t.disk
    signals = get_family("llama").to_signals(t.disk, t.config)
    assert torch.equal(signals["lm_head.weight"].tensor, t.disk["lm_head.weight"])


def _records(state: dict[str, torch.Tensor]) -> list:
    """What the registry records of each tensor: name, dtype, shape and sha256."""
    import hashlib
    from types import SimpleNamespace

    from zoo.checkpoint import dtype_code

    return [
        SimpleNamespace(
            name=n,
            dtype=dtype_code(t.dtype),
            shape=tuple(t.shape),
            digest=hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest(),
        )
        for n, t in state.items()
    ]


def test_tied_copies_follow_transformers_pair_by_pair(tiny):
    """A tied tensor held with the bytes of the one it is tied to is that tensor; with other
    values the file is untied, unless it lacks a copy (transformers ties that one, so no
    config says both); a config that says untied ties nothing."""
    t = tiny["bert"]
    family = get_family("bert")
    weight, bias = "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"
    both = {k: v.clone() for k, v in t.memory.items() if k in t.disk or k in (weight, bias)}
    assert family.tied_copies(t.config, _records(t.disk)).copies == {}
    ties = family.tied_copies(t.config, _records(both))
    assert (dict(ties.copies), ties.untie) == (
        {weight: "mlm.decoder.weight", bias: "mlm.decoder.bias"},
        False,
    )
    changed = {**both, weight: both[weight] + 1}
    ties = family.tied_copies(t.config, _records(changed))
    assert (dict(ties.copies), ties.untie) == ({}, True)
    no_weight = {k: v for k, v in changed.items() if k != weight}
    no_weight[bias] = no_weight[bias] + 1
    ties = family.tied_copies(t.config, _records(no_weight))
    assert (dict(ties.copies), ties.untie) == ({}, False)
    untied = {**t.config, "tie_word_embeddings": False}
    assert family.tied_copies(untied, _records(both)) == family.tied_copies(untied, [])


# --- unknown and malformed tensors -----------------------------------------------------------


def test_unknown_tensor_with_fixed_sizes_passes_through(tiny):
    t = tiny["bert"]
    family = get_family("bert")
    state = dict(t.disk)
    state["bert.embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    state["cls.some_counter"] = torch.tensor([3.0, 5.0, 7.0])
    signals = family.to_signals(state, t.config)
    extra = signals["extra:cls.some_counter"]
    assert extra.axes == ("fixed",) and not set(extra.axes) & set(CHANGING)
    assert signals["buffers.position_ids"].axes == ("one", "positions")
    assert_same_state(family.from_signals(signals, t.config), state)
    # ...and into a target of another size, unchanged
    target = family.target_config(t.config, TARGETS["L2S"])
    out = family.from_signals(resized(signals, family.axis_sizes(target)), target)
    assert torch.equal(out["cls.some_counter"], state["cls.some_counter"])
    assert torch.equal(out["bert.embeddings.position_ids"], state["bert.embeddings.position_ids"])


@pytest.mark.parametrize(
    "key, shape, words",
    [
        ("cls.adapter.weight", (32, 5), "(32 equals the source's hidden size)"),
        ("cls.adapter.up", (5, 64), "(64 equals the source's intermediate size)"),
        ("bert.encoder.layer.2.adapter.scale", (3,), "per-layer"),
    ],
)
def test_unknown_tensor_that_could_change_is_refused(tiny, key, shape, words):
    t = tiny["bert"]
    state = dict(t.disk)
    state[key] = torch.zeros(shape)
    with pytest.raises(InvalidCheckpointError) as err:
        get_family("bert").to_signals(state, t.config)
    assert key in str(err.value) and words in str(err.value)


def test_an_unknown_tensor_sized_as_the_vocabulary_is_not_named_by_an_axis_it_may_not_have():
    """A tensor no rule knows is known only to share a size with one the target changes:
    a vocabulary of 96 beside an intermediate size of 96 is not called the ffn axis."""
    model = build_model("bert", intermediate_size=96)
    config = model.config.to_dict()
    assert config["vocab_size"] == config["intermediate_size"] == 96
    state = {**model.state_dict(), "cls.vocab_gate": torch.zeros(96, 5)}
    with pytest.raises(InvalidCheckpointError) as err:
        get_family("bert").to_signals(state, config)
    message = str(err.value)
    assert "'cls.vocab_gate' with shape (96, 5)" in message
    assert "(96 equals the source's intermediate size)" in message
    assert "ffn" not in message and "\n" not in message


def test_gpt2_legacy_causal_mask_buffers_pass_through(tiny):
    t = tiny["gpt2"]
    family = get_family("gpt2")
    state = dict(t.disk)
    mask = torch.tril(torch.ones(64, 64, dtype=torch.bool)).view(1, 1, 64, 64)
    for i in range(4):
        state[f"transformer.h.{i}.attn.bias"] = mask
    signals = family.to_signals(state, t.config)
    assert not set(signals["buffers.attn.bias"].axes) & set(CHANGING)
    assert_same_state(family.from_signals(signals, t.config), state)
    target = family.target_config(t.config, TARGETS["S2L"])
    out = family.from_signals(resized(signals, family.axis_sizes(target)), target)
    assert [k for k in out if k.endswith(".attn.bias")] == [
        f"transformer.h.{i}.attn.bias" for i in range(8)
    ]


@pytest.mark.parametrize("name", FAMILIES)
def test_missing_required_tensor_is_named(tiny, name):
    t = tiny[name]
    key = next(k for k in t.disk if ".1." in k and k.endswith("weight"))
    state = {k: v for k, v in t.disk.items() if k != key}
    with pytest.raises(InvalidCheckpointError, match="lacks"):
        get_family(name).to_signals(state, t.config)


def test_mis_shaped_tensor_is_refused_with_its_name(tiny):
    t = tiny["llama"]
    state = dict(t.disk)
    key = "model.layers.1.self_attn.k_proj.weight"
    state[key] = torch.zeros(32, 32)  # a kv projection sized for hidden
    with pytest.raises(InvalidCheckpointError, match=key.replace(".", r"\.")):
        get_family("llama").to_signals(state, t.config)


def test_gpt2_c_attn_of_wrong_width_is_refused(tiny):
    t = tiny["gpt2"]
    state = dict(t.disk)
    state["transformer.h.0.attn.c_attn.weight"] = torch.zeros(32, 95)
    with pytest.raises(InvalidCheckpointError, match="c_attn"):
        get_family("gpt2").to_signals(state, t.config)


def test_from_signals_refuses_wrong_sizes_and_unknown_names(tiny):
    t = tiny["bert"]
    family = get_family("bert")
    signals = {k: s.tensor for k, s in family.to_signals(t.disk, t.config).items()}
    target = family.target_config(t.config, TARGETS["L2S"])
    with pytest.raises(InvalidInputError, match=r"has shape \(96, 32\) but the target"):
        family.from_signals(signals, target)  # still at the source's size
    with pytest.raises(InvalidInputError, match="nonsense"):
        family.from_signals({**signals, "nonsense": torch.zeros(1)}, t.config)
    del signals["ffn.in.weight"]
    with pytest.raises(InvalidInputError, match=r"ffn\.in\.weight"):
        family.from_signals(signals, t.config)


# --- LayerNorm gains and biases under TensorFlow-era names -------------------------------------


@pytest.mark.parametrize("name", ["bert", "roberta"])
def test_layernorm_gamma_and_beta_are_the_weight_and_bias_and_written_back_so(tiny, name):
    """transformers loads ``LayerNorm.gamma`` / ``.beta`` as the LayerNorm's weight and
    bias: they make the same signals, and the state dict comes back under the source's
    names, whatever the target's size."""
    t = tiny[name]
    family = get_family(name)
    legacy = legacy_norm_names(t.disk)
    assert sum(k.endswith(("gamma", "beta")) for k in legacy) >= 10
    plain = family.to_signals(t.disk, t.config)
    signals = family.to_signals(legacy, t.config)
    assert signals.keys() == plain.keys()
    for k, s in plain.items():
        assert torch.equal(signals[k].tensor, s.tensor), k
    tensors = {k: s.tensor for k, s in signals.items()}
    forms = family.legacy_norm_signals(legacy)
    assert forms and not family.legacy_norm_signals(t.disk)
    assert_same_state(family.from_signals(tensors, t.config, legacy_norms=forms), legacy)
    assert_same_state(family.from_signals(tensors, t.config), t.disk)  # current names
    target = family.target_config(t.config, TARGETS["S2L"])
    values = resized(signals, family.axis_sizes(target))
    grown = family.from_signals(values, target)
    grown_legacy = family.from_signals(values, target, legacy_norms=forms)
    assert_same_state(grown_legacy, legacy_norm_names(grown))


def test_a_layernorm_under_both_of_its_names_is_refused(tiny):
    t = tiny["bert"]
    key = "bert.embeddings.LayerNorm.weight"
    state = {**t.disk, "bert.embeddings.LayerNorm.gamma": t.disk[key].clone()}
    with pytest.raises(InvalidCheckpointError, match="two layouts"):
        get_family("bert").to_signals(state, t.config)


# --- base models (no prefix, pooler) -----------------------------------------------------------


@pytest.mark.parametrize(
    "name, arch",
    [
        ("bert", "BertModel"),
        ("vit", "ViTModel"),
        ("deit", "DeiTModel"),
        ("gpt2", "GPT2Model"),
        ("llama", "LlamaModel"),
    ],
)
def test_bare_base_model_round_trips(tiny, name, arch):
    import transformers

    t = tiny[name]
    config = {**t.config, "architectures": [arch]}
    model = build(config)
    state = model.state_dict()
    assert not any(k.startswith(get_family(name).base_prefix + ".") for k in state)
    family = get_family(name)
    signals = family.to_signals(state, config)
    assert_same_state(module_layout(family.from_signals(signals, config), model), state)
    # without an architectures entry, a base model (no task head) is assumed
    bare = {k: v for k, v in config.items() if k != "architectures"}
    assert_same_state(module_layout(family.from_signals(signals, bare), model), state)
    assert isinstance(model, getattr(transformers, arch))


# --- targets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_target_builds_and_loads_strictly(tiny, name, kind):
    t = tiny[name]
    family = get_family(name)
    target = TARGETS[kind]
    config = family.target_config(t.config, target)
    sizes = family.axis_sizes(config)
    assert (sizes["layers"], sizes["hidden"]) == (target.layers, target.hidden)
    model = build(config)
    own = model.state_dict()

    # 1. The source's signals brought to the target's sizes rebuild exactly the target's
    #    parameters: same keys, same shapes (a loadable initialization).
    source = family.to_signals(t.memory, t.config)
    state = module_layout(family.from_signals(resized(source, sizes), config), model)
    assert sorted(state) == sorted(own)
    for k in own:
        assert state[k].shape == own[k].shape, k
    model.load_state_dict(state, strict=True)

    # 2. The target model's own state splits into signals at exactly the expected sizes and
    #    comes back whole.
    fresh = build(config)
    signals = family.to_signals(fresh.state_dict(), config)
    for sname, s in signals.items():
        assert s.axes == source[sname].axes, sname
        want = [sizes.get(a, n) for a, n in zip(s.axes, source[sname].tensor.shape, strict=True)]
        assert list(s.tensor.shape) == want, sname
    back = module_layout(family.from_signals(signals, config), fresh)
    fresh.load_state_dict(back, strict=True)
    assert_same_state(back, fresh.state_dict())


def _inputs(name: str) -> dict[str, torch.Tensor]:
    if name in ("vit", "deit"):
        return {"pixel_values": torch.randn(2, 3, 16, 16)}
    return {"input_ids": torch.randint(0, 96, (2, 7))}


@pytest.mark.parametrize("name", FAMILIES)
def test_target_saves_and_loads_with_from_pretrained(tiny, tmp_path, name):
    from safetensors.torch import save_file

    t = tiny[name]
    family = get_family(name)
    config = family.target_config(t.config, TARGETS["mixed"])
    source = family.to_signals(t.disk, t.config)  # tied heads absent, as on disk
    state = family.from_signals(resized(source, family.axis_sizes(config)), config)
    save_file(
        {k: v.clone().contiguous() for k, v in state.items()},
        tmp_path / "model.safetensors",
        metadata={"format": "pt"},
    )
    (tmp_path / "config.json").write_text(json.dumps(config))

    model, info = arch_class(config).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    loaded = model.state_dict()
    for key, value in state.items():
        own = module_layout({key: value}, model)
        ((mkey, mvalue),) = own.items()
        assert torch.equal(loaded[mkey], mvalue), key
    if config.get("tie_word_embeddings"):
        word = next(
            v
            for k, v in loaded.items()
            if any(w in k for w in ("word_embeddings", "wte", "embed_tokens"))
        )
        head = next(
            v for k, v in loaded.items() if k.endswith(("decoder.weight", "lm_head.weight"))
        )
        assert torch.equal(word, head)
    with torch.no_grad():
        out = model.eval()(**_inputs(name))
    assert torch.isfinite(out.logits).all()


def test_target_defaults_keep_head_dim_and_ffn_ratio(tiny):
    bert = tiny["bert"].config
    config = get_family("bert").target_config(bert, TargetSize(layers=6, hidden=48))
    assert (config["num_hidden_layers"], config["hidden_size"]) == (6, 48)
    assert config["num_attention_heads"] == 6  # head_dim 8 kept
    assert config["intermediate_size"] == 96  # ratio 2 kept
    untouched = {
        k
        for k in bert
        if k not in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
    }
    assert {k: config[k] for k in untouched} == {k: bert[k] for k in untouched}
    assert bert["hidden_size"] == 32  # the source is not modified

    # ratio 37/32 at hidden 16 is 18.5: rounded half up
    odd = {**bert, "intermediate_size": 37}
    assert get_family("bert").target_config(odd, TargetSize(2, 16))["intermediate_size"] == 19
    explicit = TargetSize(2, 16, heads=1, intermediate=10)
    config = get_family("bert").target_config(bert, explicit)
    assert (config["num_attention_heads"], config["intermediate_size"]) == (1, 10)


def test_gpt2_target_config_uses_its_own_keys(tiny):
    gpt2 = tiny["gpt2"].config
    assert gpt2["n_inner"] is None
    config = get_family("gpt2").target_config(gpt2, TargetSize(layers=2, hidden=16))
    assert (config["n_layer"], config["n_embd"], config["n_head"]) == (2, 16, 2)
    assert config["n_inner"] is None  # still 4 * n_embd
    assert "num_hidden_layers" not in config and "hidden_size" not in config
    config = get_family("gpt2").target_config(gpt2, TargetSize(2, 16, intermediate=40))
    assert config["n_inner"] == 40
    config = get_family("gpt2").target_config({**gpt2, "n_inner": 96}, TargetSize(2, 64))
    assert config["n_inner"] == 192


def test_llama_target_config_keeps_group_ratio_and_head_dim(tiny):
    llama = tiny["llama"].config
    family = get_family("llama")
    config = family.target_config(llama, TargetSize(layers=6, hidden=64))
    assert config["num_attention_heads"] == 8
    assert config["num_key_value_heads"] == 4  # 2 query heads per kv head, as in the source
    assert config["head_dim"] == 8
    assert config["intermediate_size"] == 176  # 88/32 = 2.75
    assert family.axis_sizes(config) == {
        "layers": 6,
        "hidden": 64,
        "ffn": 176,
        "kv": 32,
        "attn": 64,
    }
    config = family.target_config(llama, TargetSize(2, 32, heads=2, kv_heads=1))
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (
        2,
        1,
        16,
    )
    model = build(config)
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (16, 32)


@pytest.mark.parametrize(
    "family, source_kv, target, heads, kv_heads",
    [
        # The source's grouping wherever the head count allows it, as before.
        ("llama", 2, TargetSize(2, 64), 8, 4),
        ("llama", 1, TargetSize(2, 64), 8, 2),
        ("gemma3", 2, TargetSize(2, 16), 2, 1),
        # Fewer heads than one of the source's groups, or not a multiple of it: the
        # most kv heads that keep at least the source's query heads per kv head.
        ("llama", 1, TargetSize(2, 16), 2, 1),  # MQA stays MQA
        ("llama", 1, TargetSize(2, 32, heads=2), 2, 1),
        ("llama", 1, TargetSize(2, 48), 6, 1),
        ("llama", 2, TargetSize(2, 24), 3, 1),
        ("llama", 2, TargetSize(2, 40), 5, 1),
        ("llama", 2, TargetSize(2, 8), 1, 1),
        ("gemma3", 1, TargetSize(2, 16), 2, 1),  # head_dim kept apart from hidden / heads
        ("gemma3", 2, TargetSize(2, 24), 3, 1),
        ("qwen3", 1, TargetSize(2, 48), 6, 1),
    ],
)
def test_kv_heads_left_unset_are_chosen_for_any_head_count(
    family, source_kv, target, heads, kv_heads
):
    """A target whose heads do not divide into the source's query groups was refused
    until --kv-heads was set (an MQA source of 4 heads could not shrink to 2); zoo now
    picks kv_heads as it picks the other sizes, and transformers builds the config."""
    arch = arch_class({"architectures": [TINY[family]["arch"]]})
    config = {**TINY[family]["config"], "num_key_value_heads": source_kv}
    config["model_type"] = arch.config_class.model_type
    out = get_family(family).target_config(config, target)
    assert (out["num_attention_heads"], out["num_key_value_heads"]) == (heads, kv_heads)
    attention = arch(arch.config_class(**out)).model.layers[0].self_attn
    assert attention.k_proj.weight.shape == (kv_heads * attention.head_dim, target.hidden)


def test_vit_target_config_follows_pooler_width(tiny):
    vit = tiny["vit"].config
    assert vit["pooler_output_size"] == vit["hidden_size"]
    config = get_family("vit").target_config(vit, TargetSize(2, 16))
    assert config["pooler_output_size"] == 16
    assert (config["image_size"], config["patch_size"]) == (16, 4)


BAD_TARGETS = [
    # family, target, words the message must hold, a suggestion that must then work
    ("bert", TargetSize(0, 32), ["layers", "positive"], None),
    ("bert", TargetSize(2, 0), ["hidden", "positive"], None),
    ("bert", TargetSize(True, 32), ["layers"], None),
    ("bert", TargetSize(2, 50), ["head_dim 8", "hidden=48 or 56"], TargetSize(2, 48)),
    (
        "bert",
        TargetSize(2, 32, heads=3),
        ["heads=3", "heads=1, 2, 4 or 8", "hidden=30 or 33"],
        TargetSize(2, 33, heads=3),
    ),
    ("bert", TargetSize(2, 32, heads=0), ["heads", "positive"], None),
    ("bert", TargetSize(2, 32, intermediate=0), ["intermediate", "positive"], None),
    (
        "bert",
        TargetSize(2, 32, kv_heads=2),
        ["grouped-query", "kv_heads= unset"],
        TargetSize(2, 32),
    ),
    ("gpt2", TargetSize(2, 20), ["head_dim 8", "hidden=16 or 24"], TargetSize(2, 24)),
    ("vit", TargetSize(-1, 32), ["layers"], None),
    (
        "llama",
        TargetSize(2, 32, kv_heads=3),
        ["kv_heads=3", "1, 2 or 4"],
        TargetSize(2, 32, kv_heads=4),
    ),
    (
        "gemma3",
        TargetSize(2, 24, kv_heads=2),
        ["keeps head_dim 16", "3 heads, which kv_heads=2 does not divide", "1 or 3"],
        TargetSize(2, 24, kv_heads=3),
    ),
    ("gemma3", TargetSize(2, 20), ["no whole number of heads", "hidden=16 or 24"], None),
    (
        "llama",
        TargetSize(2, 40, heads=8),
        ["even head_dim", "gives 5", "heads=2, 4, 5 or 10, or hidden=32 or 48"],
        TargetSize(2, 40, heads=10),
    ),
    ("llama", TargetSize(2, 16, heads=2, kv_heads=0), ["kv_heads=0"], None),
]


@pytest.mark.parametrize("name, target, words, fix", BAD_TARGETS)
def test_bad_target_is_refused_with_what_works(tiny, name, target, words, fix):
    family = get_family(name)
    with pytest.raises(InvalidTargetError) as err:
        family.target_config(tiny[name].config, target)
    message = str(err.value)
    for word in words:
        assert word in message, message
    assert "\n" not in message
    if fix is not None:
        family.target_config(tiny[name].config, fix)


def test_source_config_errors_are_clear(tiny):
    bert = dict(tiny["bert"].config)
    del bert["hidden_size"]
    with pytest.raises(InvalidCheckpointError, match="hidden_size"):
        get_family("bert").axis_sizes(bert)
    llama = {**tiny["llama"].config, "num_key_value_heads": 3}
    with pytest.raises(InvalidCheckpointError, match="num_key_value_heads=3"):
        get_family("llama").target_config(llama, TargetSize(2, 16))


def _suggested_targets(message: str, target: TargetSize) -> list[TargetSize]:
    """Every alternative a size refusal proposes, as targets (kv_heads kept)."""

    def numbers(text: str) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", text)]

    out = []
    kv = target.kv_heads
    for heads, part in re.findall(r"heads=(\d+) with kv_heads=([\d, or]+)", message):
        out += [
            TargetSize(target.layers, target.hidden, int(heads), kv_heads=k) for k in numbers(part)
        ]
    message = re.sub(r"heads=\d+ with kv_heads=[\d, or]+", "", message)
    for part in re.findall(r"hidden=([\d, or]+) with heads= left unset", message):
        out += [TargetSize(target.layers, h, None, kv_heads=kv) for h in numbers(part)]
    message = re.sub(r"hidden=[\d, or]+ with heads= left unset", "", message)
    for part in re.findall(r"use hidden=([\d, or]+)", message):
        out += [TargetSize(target.layers, h, target.heads, kv_heads=kv) for h in numbers(part)]
    for part in re.findall(r"set heads= to one that divides \d+ \(([\d, or]+)\)", message):
        out += [TargetSize(target.layers, target.hidden, n, kv_heads=kv) for n in numbers(part)]
    for part in re.findall(r"use heads=([\d, or]+)", message):
        out += [TargetSize(target.layers, target.hidden, n, kv_heads=kv) for n in numbers(part)]
    for part in re.findall(r"(?:set|use) kv_heads=(?: to (?:one of )?)?([\d, or]+)", message):
        out += [
            TargetSize(target.layers, target.hidden, target.heads, kv_heads=k)
            for k in numbers(part)
        ]
    for part in re.findall(r", or hidden=([\d, or]+)", message):
        out += [TargetSize(target.layers, h, target.heads, kv_heads=kv) for h in numbers(part)]
    return out


@pytest.mark.parametrize("family", ["llama", "bert", "gemma3"])
# (heads, kv heads) at hidden 128; (2, 1): one kv head, as Gemma 2B and Gemma 3 1B have
@pytest.mark.parametrize("source_heads", [(4, 2), (8, 4), (2, 1)])
def test_every_size_a_refusal_suggests_is_accepted(family, source_heads):
    """Sweep hidden sizes and head counts; every refusal names alternatives, and each of
    them plans (llama's even head_dim, whole kv groups, and gemma3's head_dim kept apart
    from hidden / heads included)."""
    fam = get_family(family)
    heads, kv = source_heads
    config = dict(TINY[family]["config"])
    config.update({fam.hidden_key: 128, fam.heads_key: heads})
    if family != "bert":
        config.update(num_key_value_heads=kv, intermediate_size=344)
    refused = 0
    for hidden in range(8, 400, 3):
        for t_heads in (None, 3, 5, 6, 8):
            target = TargetSize(2, hidden, t_heads)
            try:
                fam.plan(config, target)
                continue
            except InvalidTargetError as exc:
                message = str(exc)
            refused += 1
            suggested = _suggested_targets(message, target)
            assert suggested, message
            for alternative in suggested:
                fam.plan(config, alternative)  # raises if a suggestion is refused
    assert refused > 100


def test_the_tie_default_of_each_model_type_is_transformers_own():
    """zoo derives without importing transformers, so it keeps transformers' default of
    ``tie_word_embeddings`` per model type; each is read here from transformers itself."""
    import transformers

    from zoo.families._common import TIED_BY_DEFAULT

    for model_type, tied in TIED_BY_DEFAULT.items():
        config = transformers.AutoConfig.for_model(model_type)
        assert config.tie_word_embeddings is tied, model_type
