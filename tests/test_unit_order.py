"""Unit orders (zoo.unit_order): a permutation of units that changes no output.

The reference is transformers itself: the reordered state dict, loaded into the
family's own model class, must compute the source's logits.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers
from tinymodels import FAMILIES, build_model

from zoo.families import family_for_config, get_family
from zoo.unit_order import chain, chained_order, cosine_gram, residual_axes


def _inputs(family: str) -> dict:
    g = torch.Generator().manual_seed(3)
    if family in ("vit", "deit"):
        return {"pixel_values": torch.randn(2, 3, 16, 16, generator=g)}
    return {"input_ids": torch.randint(3, 96, (2, 9), generator=g)}


def _logits(model, family: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**_inputs(family)).logits


def _trained_like(family: str, **overrides):
    """A tiny model whose norms and biases are not at their init values, so a permutation
    that missed one of them would show in the logits."""
    model = build_model(family, **overrides)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _reordered_copy(model, folder, order="similar"):
    """Save ``model`` as HF saves it, reorder its units through its family's signals,
    and load both folders back with transformers."""
    import shutil

    from safetensors.torch import load_file, save_file

    model.save_pretrained(folder / "src")
    config = json.loads((folder / "src" / "config.json").read_text())
    fam = family_for_config(config)
    state = load_file(folder / "src" / "model.safetensors")
    reordered, perms = chained_order(fam.to_signals(state, config), order)
    (folder / "new").mkdir()
    shutil.copy(folder / "src" / "config.json", folder / "new")
    new_state = fam.from_signals({k: s.tensor for k, s in reordered.items()}, config)
    save_file(
        {k: v.contiguous() for k, v in new_state.items()},
        folder / "new" / "model.safetensors",
        metadata={"format": "pt"},
    )
    arch = getattr(transformers, config["architectures"][0])
    return arch.from_pretrained(folder / "src"), arch.from_pretrained(folder / "new"), perms


@pytest.mark.parametrize("family", FAMILIES)
def test_similar_order_keeps_every_familys_function(family, tmp_path):
    source, reordered, perms = _reordered_copy(_trained_like(family), tmp_path)
    # The residual and FFN orders really change (else this test would prove nothing).
    hidden = source.config.hidden_size
    assert perms["hidden"] != list(range(hidden)) and sorted(perms["hidden"]) == list(range(hidden))
    assert len(perms["ffn"]) == 4 and any(p != sorted(p) for p in perms["ffn"])
    torch.testing.assert_close(
        _logits(reordered, family), _logits(source, family), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_dissimilar_order_keeps_the_function_too(family, tmp_path):
    source, reordered, perms = _reordered_copy(_trained_like(family), tmp_path, "dissimilar")
    assert perms["hidden"] != list(range(source.config.hidden_size))
    torch.testing.assert_close(
        _logits(reordered, family), _logits(source, family), rtol=1e-5, atol=1e-5
    )


def test_llama_with_biases_and_grouped_kv_keeps_its_function(tmp_path):
    model = _trained_like("llama", mlp_bias=True, attention_bias=True)
    source, reordered, _ = _reordered_copy(model, tmp_path)
    torch.testing.assert_close(_logits(reordered, "llama"), _logits(source, "llama"))


def test_attention_inner_axes_are_not_residual():
    model = build_model("gpt2")
    sigs = get_family("gpt2").to_signals(dict(model.state_dict()), model.config.to_dict())
    assert residual_axes("attn.q.weight", sigs["attn.q.weight"]) == [2]
    assert residual_axes("attn.out.weight", sigs["attn.out.weight"]) == [1]
    assert residual_axes("embeddings.word", sigs["embeddings.word"]) == [1]


def test_ordering_leaves_the_callers_tensors_alone():
    """Even float64 CPU tensors, which the gram reads without a copy, are not scaled in
    place; and the same signals give the same order twice."""
    model = build_model("gpt2").double()
    fam = get_family("gpt2")
    signals = fam.to_signals(dict(model.state_dict()), model.config.to_dict())
    before = {k: s.tensor.clone() for k, s in signals.items()}
    _, first = chained_order(signals)
    for key, sig in signals.items():
        assert torch.equal(sig.tensor, before[key]), key
    assert chained_order(signals)[1] == first


def test_chain_recovers_points_shuffled_along_an_arc():
    """Units on a quarter circle, shuffled: the chain visits them in angle order (either
    way round); that is the order a sort by angle gives."""
    n = 40
    angles = torch.linspace(0, math.pi / 2, n, dtype=torch.float64)
    points = torch.stack([angles.cos(), angles.sin()], dim=1)
    shuffle = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    order = chain(cosine_gram([points[shuffle]], n))
    by_angle = angles[shuffle][order]
    assert torch.all(by_angle.diff() > 0) or torch.all(by_angle.diff() < 0)
    assert sorted(order.tolist()) == list(range(n))


def test_order_brings_similar_units_next_to_each_other():
    """The residual units' neighbours become more alike (the mean cosine of adjacent
    units), more than under any of 50 random orders: what the wavelet's low band and
    weight selection's "every other unit" rely on. The dissimilar order does the
    opposite."""
    fam = get_family("gpt2")
    model = build_model("gpt2", n_embd=64, n_head=4)
    signals = fam.to_signals(dict(model.state_dict()), model.config.to_dict())
    blocks = [
        s.tensor.movedim(a, 0).reshape(s.tensor.shape[a], -1)
        for k, s in signals.items()
        for a in residual_axes(k, s)
    ]
    gram = cosine_gram(blocks, 64)
    _, perms = chained_order(signals)
    p = torch.tensor(perms["hidden"])

    def adjacent(perm):
        return gram[perm][:, perm].diagonal(1).mean()

    g = torch.Generator().manual_seed(0)
    randoms = [adjacent(torch.randperm(64, generator=g)) for _ in range(50)]
    assert adjacent(p) > max(randoms) > 0
    # dissimilar: the other way round, below every random order.
    _, perms = chained_order(signals, "dissimilar")
    assert adjacent(torch.tensor(perms["hidden"])) < min(randoms)


# --- through the registry ----------------------------------------------------------


def _load(folder):
    config = json.loads((folder / "config.json").read_text())
    return getattr(transformers, config["architectures"][0]).from_pretrained(folder)


def test_materialize_at_the_sources_size_in_similar_order_keeps_the_function(
    registry, tiny_dir, tmp_path
):
    """Weight selection at the source's own size selects everything: in similar order the
    result is the reordered source, which transformers runs to the source's logits."""
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    m = registry.materialize(
        src.name,
        layers=4,
        hidden=32,
        method="weight-selection",
        order="similar",
        out=tmp_path / "same",
    )
    assert m.artifact.info["recipe"]["order"] == "similar"
    assert m.artifact.content_hash != src.content_hash  # units did move
    source, same = _load(tiny_dir("gpt2")), _load(tmp_path / "same")
    torch.testing.assert_close(_logits(same, "gpt2"), _logits(source, "gpt2"))
    assert "order=similar" in registry.lineage(m.artifact.name, down=False).to_text()
    assert "unit order `similar`" in (tmp_path / "same" / "README.md").read_text()
    again = registry.rederive(m.artifact.name)  # virtual: re-derived and verified
    assert again.artifact.content_hash == m.artifact.content_hash


def test_a_learngene_keeps_its_order_and_its_materializations_follow_it(registry, tiny_dir):
    src = registry.import_checkpoint(tiny_dir("bert"))
    stored = registry.extract(src.name, method="dwt", wavelet="haar", levels=1)
    similar = registry.extract(src.name, method="dwt", wavelet="haar", levels=1, order="similar")
    assert "order" not in stored.info and similar.info["order"] == "similar"
    assert similar.content_hash != stored.content_hash and similar.name.endswith("-similar")
    assert registry.extract(src.name, wavelet="haar", levels=1, order="similar") == similar
    other = registry.extract(src.name, wavelet="haar", levels=1, order="dissimilar")
    assert other.info["order"] == "dissimilar" and other.name.endswith("-dissimilar")
    assert other.content_hash not in (stored.content_hash, similar.content_hash)
    m = registry.materialize(similar.name, layers=2, hidden=16)
    assert m.artifact.info["recipe"]["order"] == "similar"
    # Bands taken in similar order = the source's signals reordered, then transformed.
    direct = registry.materialize(
        src.name,
        layers=2,
        hidden=16,
        method="dwt",
        wavelet="haar",
        order="similar",
        rescale=m.artifact.info["recipe"]["rescale"],
    )
    for name, t in m.state_dict.items():
        torch.testing.assert_close(direct.state_dict[name], t, rtol=1e-5, atol=1e-6)
    plain = registry.materialize(stored.name, layers=2, hidden=16)
    assert "order" not in plain.artifact.info["recipe"]
    assert not torch.equal(
        plain.state_dict["bert.embeddings.word_embeddings.weight"],
        m.state_dict["bert.embeddings.word_embeddings.weight"],
    )


def test_bad_orders_are_refused_with_one_line(registry, tiny_dir, run_cli):
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    lg = registry.extract(src.name, method="dwt", wavelet="haar", levels=1, order="similar")
    for args in (
        ["materialize", lg.name, "--layers", "2", "--hidden", "16", "--order", "stored"],
        [
            "materialize",
            src.name,
            "--layers",
            "2",
            "--hidden",
            "16",
            "--method",
            "scratch",
            "--order",
            "similar",
        ],
    ):
        code, out, err = run_cli(*args)
        assert code == 2 and out == "" and err.count("\n") == 1 and "order" in err, (args, err)
    code, _, err = run_cli("extract", src.name, "--order", "random")
    assert code != 0 and "random" in err
