"""The llama-shaped decoder families declared in zoo/families/decoders.py, end to end.

Each family's tiny model (tests/tinymodels.py, with its family's differences switched
on) goes through the registry on both databases: import, extract both ways, materialize
smaller and larger (transformers loads the folders strictly), an identity-size
materialization that computes the source's logits exactly, audit and lineage. The
per-family rules (head_dim kept or tied, per-layer attention types, fused projections,
(1 + w) gains) are checked against transformers' own models.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from tinymodels import DECODER_TINY, TINY, build_model

from zoo.errors import InvalidInputError, InvalidTargetError
from zoo.families import TargetSize, get_family

NEW = tuple(DECODER_TINY)
IDS = torch.tensor([[1, 5, 7, 9, 2, 4, 4, 8, 11, 3]])  # longer than the 4-token windows


def _load(folder: Path):
    config = json.loads((folder / "config.json").read_text())
    arch = getattr(transformers, config["architectures"][0])
    return arch.from_pretrained(folder, output_loading_info=True)


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


@pytest.mark.parametrize("family", NEW)
def test_decoder_end_to_end(family, registry, tiny_dir, tmp_path):
    src = registry.import_checkpoint(tiny_dir(family))
    assert src.family == family
    dwt = registry.extract(src.name, method="dwt", wavelet="haar", levels=2)
    dct = registry.extract(src.name, method="dct", keep=0.5)

    small = registry.materialize(dwt.name, layers=2, hidden=16, out=tmp_path / "small")
    big = registry.materialize(dct.name, layers=8, hidden=64, out=tmp_path / "big")
    for result, (layers, hidden) in ((small, (2, 16)), (big, (8, 64))):
        config = result.config
        assert (config["num_hidden_layers"], config["hidden_size"]) == (layers, hidden)
        model, info = _load(result.out)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
        assert model.config.num_hidden_layers == layers
        assert torch.isfinite(_logits(model)).all()

    # The same size: the source's own function, bit for bit, and its own content.
    same = registry.materialize(src.name, layers=4, hidden=32, out=tmp_path / "same")
    assert same.artifact.content_hash == src.content_hash
    source_model, _ = _load(tiny_dir(family))
    same_model, info = _load(tmp_path / "same")
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert torch.equal(_logits(same_model), _logits(source_model))

    down = registry.lineage(src.name, up=False)
    edges = {
        (down.nodes[e.parent_id].name, e.relation, down.nodes[e.child_id].name) for e in down.edges
    }
    assert {
        (src.name, "extract", dwt.name),
        (src.name, "extract", dct.name),
        (dwt.name, "materialize", small.artifact.name),
        (dct.name, "materialize", big.artifact.name),
    } <= edges
    renamed = tmp_path / "found-on-a-disk.safetensors"
    shutil.copy(small.out / "model.safetensors", renamed)
    report = registry.audit(renamed, verify=True)
    assert report.status == "known" and report.artifact.id == small.artifact.id
    assert report.verified is True
    assert {n.name for n in report.lineage.nodes.values()} == {
        src.name,
        dwt.name,
        small.artifact.name,
    }


def test_sandwich_norms_and_attention_types_keep_the_function_under_identity_depth(
    registry, tiny_dir, tmp_path
):
    """Gemma 2: its extra norms act on the zeroed residual writers of the added layers,
    and each added layer has the attention type of the layer it copies, so the deeper
    model computes the source's logits on inputs longer than the sliding window."""
    src = registry.import_checkpoint(tiny_dir("gemma2"))
    deep = registry.materialize(
        src.name, layers=6, hidden=32, method="dwt", depth="identity", out=tmp_path / "deep"
    )
    assert deep.config["layer_types"] == [
        "sliding_attention",
        "sliding_attention",
        "full_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention",
    ]
    source, _ = _load(tiny_dir("gemma2"))
    model, _ = _load(tmp_path / "deep")
    torch.testing.assert_close(_logits(model), _logits(source), rtol=1e-5, atol=1e-5)


def _grown_logits(registry, folder: Path, arch: str, out: Path, **ask):
    """(source's outputs, outputs of ``folder`` grown 4x32 -> 4x64 by HyperCloning), each
    model loaded as ``arch`` strictly, on :data:`IDS`."""
    src = registry.import_checkpoint(folder)
    wide = registry.materialize(
        src.name, layers=4, hidden=64, method="hypercloning", out=out, **ask
    )
    cls = getattr(transformers, arch)
    source = cls.from_pretrained(folder).eval()
    model, info = cls.from_pretrained(wide.out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    with torch.no_grad():
        return source(input_ids=IDS), model.eval()(input_ids=IDS)


def test_a_tied_head_is_found_without_an_architecture_in_the_config(registry, tiny_dir, tmp_path):
    """A config.json without ``architectures`` still loads as a causal LM; its tensors'
    base prefix (``model.``) says it is one, so its tied head keeps the source's logits."""
    folder = tmp_path / "no-arch"
    shutil.copytree(tiny_dir("qwen2"), folder)
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    source, grown = _grown_logits(registry, folder, "Qwen2ForCausalLM", tmp_path / "w")
    torch.testing.assert_close(grown.logits, source.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_a_question_answering_model_saved_under_transformer_resizes(family, registry, tmp_path):
    """transformers saves llama's and Qwen's QA models with their base model under
    ``transformer.``, not ``model.``: such a checkpoint extracts, shrinks and grows, each
    output loading strictly under that prefix, and its own size gives its span logits."""
    arch = getattr(transformers, TINY[family]["arch"].replace("CausalLM", "QuestionAnswering"))
    torch.manual_seed(0)
    source = arch(arch.config_class(**TINY[family]["config"])).eval()
    source.save_pretrained(tmp_path / "qa")
    src = registry.import_checkpoint(tmp_path / "qa")
    dwt = registry.extract(src.name, method="dwt", wavelet="haar", levels=1)
    for name, (layers, hidden) in ((dwt.name, (2, 16)), (src.name, (8, 64)), (src.name, (4, 32))):
        out = registry.materialize(name, layers=layers, hidden=hidden, out=tmp_path / f"{layers}")
        model, info = arch.from_pretrained(out.out, output_loading_info=True)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
        assert all(k.startswith(("transformer.", "qa_outputs.")) for k in model.state_dict())
        with torch.no_grad():
            start = model.eval()(input_ids=IDS).start_logits
        assert torch.isfinite(start).all()
    with torch.no_grad():
        assert torch.equal(start, source(input_ids=IDS).start_logits)


def test_bert_for_pretraining_grown_keeps_its_masked_lm_and_nsp_logits(registry, tmp_path):
    """Its MLM head's LayerNorm is read by the tied decoder alone (the NSP head reads the
    pooler), so it is divided even with the NSP head beside it."""
    config = transformers.BertConfig(**TINY["bert"]["config"])
    torch.manual_seed(0)
    transformers.BertForPreTraining(config).save_pretrained(tmp_path / "pt")
    source, grown = _grown_logits(registry, tmp_path / "pt", "BertForPreTraining", tmp_path / "w")
    for key in ("prediction_logits", "seq_relationship_logits"):
        torch.testing.assert_close(grown[key], source[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["qwen2", "gpt2"])
def test_a_tied_head_grown_with_norms_matched_to_the_source_keeps_its_logits(
    family, registry, tiny_dir, tmp_path
):
    """--norm match sets each norm to the source's moments, which undoes HyperCloning's
    division of the norm a tied head reads: the division comes after the match. (These
    tiny models' gains are all equal, so the match only shifts them.)"""
    src = registry.import_checkpoint(tiny_dir(family))
    wide = registry.materialize(
        src.name, layers=4, hidden=64, method="hypercloning", norm="match", out=tmp_path / "w"
    )
    source, _ = _load(tiny_dir(family))
    model, _ = _load(wide.out)
    torch.testing.assert_close(_logits(model), _logits(source), rtol=1e-5, atol=1e-5)


# The tensors transformers ties to another under tie_word_embeddings, as save_pretrained
# leaves them out and as many checkpoints store them anyway: copy -> the tensor it is tied to.
TIED = {
    "qwen2": {"lm_head.weight": "model.embed_tokens.weight"},
    "gpt2": {"lm_head.weight": "transformer.wte.weight"},
    "bert": {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    },
}

# Every method, growing and shrinking depth, width or both (the tiny models are 4x32).
DERIVED = [
    ("weight-selection", 4, 32),
    ("weight-selection", 2, 16),
    ("hypercloning", 4, 64),
    ("hypercloning", 8, 32),
    ("hypercloning", 8, 64),
    ("net2net", 6, 48),
    ("dwt", 2, 16),
    ("dwt", 8, 64),
    ("dct", 4, 48),
    ("dct", 2, 16),
    ("scratch", 6, 48),
]


def _with_tied_copies(folder: Path, dest: Path, family: str, *, differ: bool = False) -> Path:
    """A copy of ``folder`` whose file also holds the tensors its config ties, each the
    bytes of the one it is tied to, or (``differ``) an LM head that is not the embedding."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, dest)
    tensors = load_file(dest / "model.safetensors")
    for copy, tied in TIED[family].items():
        tensors[copy] = tensors[tied].clone()
    if differ:
        head = next(iter(TIED[family]))
        g = torch.Generator().manual_seed(3)
        tensors[head] = tensors[head] + 0.05 * torch.randn(tensors[head].shape, generator=g)
    save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def _outputs(registry, name: str, folder: Path, method: str, layers: int, hidden: int):
    """(config, tensors on disk, logits as loaded, logits once ``tie_weights()`` has run)
    of ``name`` materialized by ``method`` to ``layers`` x ``hidden`` in ``folder``."""
    from safetensors.torch import load_file

    made = registry.materialize(name, layers=layers, hidden=hidden, method=method, out=folder)
    model, info = _load(made.out)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    logits = _logits(model)
    model.tie_weights()
    return made.config, load_file(made.out / "model.safetensors"), logits, _logits(model)


@pytest.mark.parametrize("family", list(TIED))
def test_a_tied_head_saved_beside_its_embedding_is_derived_as_the_tied_head(
    family, registry, tiny_dir, tmp_path
):
    """transformers loads a tied tensor stored with the very bytes of the one it is tied
    to as that one tensor; zoo derives it so too, under every method and size: the output
    is the one the same model saved without the copy gives (tied, the copy not written,
    the norm the head reads divided), so a HyperCloning width grow keeps the source's
    logits and re-tying changes nothing."""
    plain = registry.import_checkpoint(tiny_dir(family))
    folder = _with_tied_copies(tiny_dir(family), tmp_path / "dup", family)
    dup = registry.import_checkpoint(folder)
    source, _ = _load(folder)
    for method, layers, hidden in DERIVED:
        case = f"{method}-{layers}x{hidden}"
        want = _outputs(registry, plain.name, tmp_path / f"p-{case}", method, layers, hidden)
        got = _outputs(registry, dup.name, tmp_path / f"d-{case}", method, layers, hidden)
        _same_output(got, want, family, case)
        config, _, logits, retied = got
        assert config.get("tie_word_embeddings", True) is True, case
        assert torch.equal(retied, logits), case
        if method == "hypercloning" and layers == 4:
            torch.testing.assert_close(logits, _logits(source), rtol=1e-5, atol=1e-5)
        if (layers, hidden) == (4, 32):
            assert torch.equal(logits, _logits(source)), case
    # From a learngene: the copy's band is left out alike.
    plain_lg = registry.extract(plain.name, method="dwt", wavelet="haar", levels=1)
    dup_lg = registry.extract(dup.name, method="dwt", wavelet="haar", levels=1)
    want = _outputs(registry, plain_lg.name, tmp_path / "p-lg", "dwt", 8, 64)
    got = _outputs(registry, dup_lg.name, tmp_path / "d-lg", "dwt", 8, 64)
    _same_output(got, want, family, "learngene")


@pytest.mark.parametrize("family", list(TIED))
def test_a_same_size_output_of_a_source_storing_its_tied_copies_says_it_holds_its_weights(
    family, registry, tiny_dir, tmp_path
):
    """The same-size output of a source whose file also stores its tied copies writes
    them once (so its content hash is not the source's), and every tensor it writes is
    the source's: its card says these are the source's weights, not an initialization."""
    from safetensors.torch import load_file

    folder = _with_tied_copies(tiny_dir(family), tmp_path / "dup", family)
    dup = registry.import_checkpoint(folder)
    made = registry.materialize(
        dup.name, layers=4, hidden=32, method="weight-selection", out=tmp_path / "same"
    )
    assert made.artifact.content_hash != dup.content_hash
    source, written = (
        load_file(folder / "model.safetensors"),
        load_file(made.out / "model.safetensors"),
    )
    assert written.keys() == source.keys() - TIED[family].keys()
    assert all(torch.equal(t, source[n]) for n, t in written.items())
    card = (made.out / "README.md").read_text()
    assert f"The weights are `{dup.name}`'s, bit for bit" in card, card
    assert "initialization" not in card and "these are its weights" in card
    # A smaller size is an initialization, as ever.
    small = registry.materialize(
        dup.name, layers=2, hidden=16, method="weight-selection", out=tmp_path / "small"
    )
    assert "This is an initialization, not a trained model" in (small.out / "README.md").read_text()


def test_only_tied_copies_and_buffers_left_out_keep_an_output_the_sources_weights(tiny_dir):
    """The card's claim that an output is the source's weights excuses a source tensor the
    output lacks only when transformers ties it to one the output holds with its bytes (or
    rebuilds it): a layer left out that equals another layer, or a head that is not
    tied, is a difference."""
    import hashlib
    import json

    from safetensors.torch import load_file

    from zoo.api.cards import holds_source_weights
    from zoo.db.entities import TensorRecord
    from zoo.families import get_family

    folder = tiny_dir("gpt2")
    config = json.loads((folder / "config.json").read_text())
    tensors = load_file(folder / "model.safetensors")
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"]

    def records(state) -> list:
        return [
            TensorRecord(
                n,
                "F32",
                tuple(t.shape),
                t.numel() * 4,
                hashlib.sha256(t.numpy().tobytes()).hexdigest(),
            )
            for n, t in state.items()
        ]

    family = get_family("gpt2")
    source = records(tensors)
    out = [r for r in source if r.name != "lm_head.weight"]
    assert holds_source_weights(out, source, family, config)
    untied = {**config, "tie_word_embeddings": False}
    assert not holds_source_weights(out, source, family, untied)
    copied = {
        **tensors,
        "transformer.h.1.mlp.c_fc.weight": tensors["transformer.h.0.mlp.c_fc.weight"],
    }
    source = records(copied)
    out = [r for r in source if r.name not in ("lm_head.weight", "transformer.h.1.mlp.c_fc.weight")]
    assert not holds_source_weights(out, source, family, config)


def _same_output(got, want, family: str, case: str) -> None:
    """The same config and tensors, none of them a tied copy."""
    assert got[0] == want[0], case
    assert got[1].keys() == want[1].keys() and not got[1].keys() & TIED[family], case
    for key, t in got[1].items():
        assert torch.equal(t, want[1][key]), (case, key)


@pytest.mark.parametrize("family", list(TIED))
def test_a_head_that_is_not_its_embedding_is_written_untied(family, registry, tiny_dir, tmp_path):
    """A config that says tied, and a file whose LM head differs from the embedding:
    transformers warns and does not tie them, so every output that writes that head says
    ``tie_word_embeddings: false``; the same size computes the source's logits, a
    HyperCloning width grow keeps them, and re-tying changes nothing."""
    folder = _with_tied_copies(tiny_dir(family), tmp_path / "head", family, differ=True)
    src = registry.import_checkpoint(folder)
    source, _ = _load(folder)
    for method, layers, hidden in DERIVED:
        case = f"{method}-{layers}x{hidden}"
        config, tensors, logits, retied = _outputs(
            registry, src.name, tmp_path / case, method, layers, hidden
        )
        assert config["tie_word_embeddings"] is False, case
        assert tensors.keys() >= TIED[family].keys(), case
        assert torch.equal(retied, logits), case
        if method == "hypercloning" and layers == 4:
            torch.testing.assert_close(logits, _logits(source), rtol=1e-5, atol=1e-5)
        if (layers, hidden) == (4, 32):
            assert torch.equal(logits, _logits(source)), case


def test_a_head_equal_to_its_embedding_under_a_config_silent_on_ties_follows_the_type(
    registry, tiny_dir, tmp_path
):
    """A config.json without ``tie_word_embeddings`` takes its model type's default:
    LlamaConfig's is False, so a Llama head that happens to equal the embedding is its own
    tensor, written to every output (a same-size one is the source, bit for bit); left out,
    transformers would load a random head."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "silent"
    shutil.copytree(tiny_dir("llama"), folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("tie_word_embeddings", None)
    (folder / "config.json").write_text(json.dumps(config))
    tensors = load_file(folder / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    src = registry.import_checkpoint(folder)
    source, _ = _load(folder)
    same = registry.materialize(src.name, layers=4, hidden=32, out=tmp_path / "same")
    assert same.artifact.content_hash == src.content_hash
    _, tensors, logits, _ = _outputs(registry, src.name, tmp_path / "grown", "hypercloning", 4, 64)
    assert "lm_head.weight" in tensors
    torch.testing.assert_close(logits, _logits(source), rtol=1e-5, atol=1e-5)


def _with_uneven_norm_gains(folder: Path, dest: Path) -> Path:
    """A copy of ``folder`` whose normalization gains are drawn around one, unequal, as a
    trained model's are (a fresh one's are all ones)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, dest)
    tensors = load_file(dest / "model.safetensors")
    g = torch.Generator().manual_seed(5)
    for name, t in tensors.items():
        if t.dim() == 1 and name.endswith("weight") and ("norm" in name or "ln_" in name):
            tensors[name] = 1 + 0.2 * torch.randn(t.shape, generator=g, dtype=t.dtype)
    save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_norms_matched_to_an_uneven_source_keep_a_hyperclones_logits(
    family, registry, tiny_dir, tmp_path
):
    """A tiled norm's population moments are the source's: matched over the population
    on both sides, its gains stay as HyperCloning tiled them, and the logits are the
    source's. Matched by sample stds (n-1), they were stretched around their mean and
    the logits moved by about 1e-3."""
    folder = _with_uneven_norm_gains(tiny_dir(family), tmp_path / "src")
    src = registry.import_checkpoint(folder)
    wide = registry.materialize(
        src.name, layers=4, hidden=64, method="hypercloning", norm="match", out=tmp_path / "w"
    )
    source, _ = _load(folder)
    model, _ = _load(wide.out)
    torch.testing.assert_close(_logits(model), _logits(source), rtol=1e-5, atol=1e-5)


def test_a_norm_matched_checkpoint_recorded_by_sample_stds_re_derives_by_them(
    registry, tiny_dir, tmp_path, monkeypatch
):
    """Under amplitude version 3 a norm was matched by sample stds. A virtual checkpoint
    recorded then re-derives by that rule and verifies; one recorded now keeps the tiled
    gains, where the old rule stretched them by sqrt((2n-1)/(2n-2)) for a source signal
    of n gains (4 layers of 32)."""
    import dataclasses

    from zoo.api import materialize as mat

    src = registry.import_checkpoint(_with_uneven_norm_gains(tiny_dir("gpt2"), tmp_path / "s"))
    real_plan = mat.make_plan

    def old_plan(*args, **kwargs):
        return dataclasses.replace(real_plan(*args, **kwargs), amplitude_version=3)

    monkeypatch.setattr(mat, "make_plan", old_plan)
    monkeypatch.setattr("zoo.methods.amplitude.AMPLITUDE_VERSION", "3")
    old = registry.materialize(src.name, layers=4, hidden=64, method="hypercloning", norm="match")
    monkeypatch.undo()
    now = registry.materialize(src.name, layers=4, hidden=64, method="hypercloning", norm="match")
    (edge,) = registry.lineage(old.artifact.name, down=False).edges
    assert edge.recipe["amplitude_version"] == "3"
    key = "transformer.h.0.ln_1.weight"
    stretched = old.state_dict[key] - old.state_dict[key].mean()
    kept = now.state_dict[key] - now.state_dict[key].mean()
    n = 4 * 32
    assert abs(float(stretched.norm() / kept.norm()) - ((2 * n - 1) / (2 * n - 2)) ** 0.5) < 1e-6
    again = registry.rederive(old.artifact.name)
    assert again.artifact.content_hash == old.artifact.content_hash
    assert registry.rederive(now.artifact.name).artifact.content_hash == now.artifact.content_hash


def _without_normalization(model):
    """``model`` with every LayerNorm and RMSNorm reduced to its affine part (``x * w + b``):
    what is left is linear in each unit, so a widened model whose writers and readers of
    each unit copied the same units computes its source's function exactly."""
    import types

    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.forward = types.MethodType(lambda m, x: x * m.weight + m.bias, module)
        elif type(module).__name__.endswith("RMSNorm"):
            module.forward = types.MethodType(lambda m, x: x * m.weight, module)
    return model


@pytest.mark.parametrize(
    "family", ["llama", "mistral", "qwen3", "phi3", "qwen2", "gpt2", "bert", "roberta"]
)
def test_net2net_copies_each_unit_alike_in_every_tensor(family, registry, tiny_dir, tmp_path):
    """Net2Net widens a model by random unit copies, its readers dividing by the copy
    count: every tensor takes one copy map per set of units (residual stream, FFN units,
    attention heads). Normalization averages over uneven copies, so only up to it is the
    function kept: with the norms reduced to their affine part, the logits are the
    source's. A map drawn per tensor fails this by far."""
    src = registry.import_checkpoint(tiny_dir(family))
    wide = registry.materialize(src.name, layers=4, hidden=64, method="net2net", out=tmp_path / "w")
    source = _without_normalization(_load(tiny_dir(family))[0])
    model, info = _load(wide.out)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    grown = _logits(_without_normalization(model))
    torch.testing.assert_close(grown, _logits(source), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "heads, kv_heads, seed",
    [(8, 2, 3), (8, 4, 3), (4, 4, 0), (8, 8, 2)],
)
def test_net2net_growing_heads_and_ffn_keeps_the_logits(
    heads, kv_heads, seed, registry, tiny_dir, tmp_path
):
    """A width that leaves the residual stream as it is: whole attention heads are copied
    (each query head with its key/value head, rotary pairs and per-head norms intact) and
    FFN units, and the logits are the source's, norms and all. The source has 4 query
    heads in 2 key/value groups: 8 heads in 2 groups grow each group, 8 in 4 copy groups.
    Where a key/value head serves fewer query heads than its source did (4 query heads in
    4 groups, 8 in 8), each source key/value head is copied once per query head it
    served, whatever the seed draws for the rest (seed 2 draws 6 extra copies of one
    key/value head for 8 in 8)."""
    src = registry.import_checkpoint(tiny_dir("qwen3"))
    wide = registry.materialize(
        src.name,
        layers=4,
        hidden=32,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=176,
        method="net2net",
        seed=seed,
        out=tmp_path / "w",
    )
    assert (wide.config["num_attention_heads"], wide.config["num_key_value_heads"]) == (
        heads,
        kv_heads,
    )
    source, _ = _load(tiny_dir("qwen3"))
    model, _ = _load(wide.out)
    torch.testing.assert_close(_logits(model), _logits(source), rtol=1e-5, atol=1e-5)


# --- target sizes ------------------------------------------------------------------------


def _config(family: str) -> dict:
    return build_model(family).config.to_dict()


@pytest.mark.parametrize("family", ["mistral", "qwen3", "gemma", "gemma3"])
def test_a_head_dim_set_apart_is_kept(family):
    """head_dim 16 on hidden 32 with 4 heads: targets keep head_dim, and by default the
    source's heads per hidden unit; transformers builds what zoo writes."""
    fam = get_family(family)
    source = _config(family)
    config = fam.target_config(source, TargetSize(2, 16))
    assert (config["num_attention_heads"], config["head_dim"]) == (2, 16)
    assert fam.axis_sizes(config) == {"layers": 2, "hidden": 16, "ffn": 44, "kv": 16, "attn": 32}
    # Three heads where the config class allows hidden % heads != 0, else eight.
    heads = 8 if fam.decl.heads_divide_hidden else 3
    config = fam.target_config(source, TargetSize(2, 16, heads=heads, kv_heads=1))
    assert (config["num_attention_heads"], config["head_dim"]) == (heads, 16)
    model = getattr(transformers, TINY[family]["arch"])(
        type(build_model(family).config).from_dict(config)
    )
    assert model.model.layers[0].self_attn.q_proj.weight.shape == (16 * heads, 16)
    if fam.decl.heads_divide_hidden:
        with pytest.raises(InvalidTargetError, match="not divisible by heads=3; use heads"):
            fam.target_config(source, TargetSize(2, 16, heads=3, kv_heads=1))
    with pytest.raises(InvalidTargetError) as err:
        fam.target_config(source, TargetSize(2, 20))
    assert "keeps head_dim 16" in str(err.value) and "use hidden=16 or 24" in str(err.value)
    fam.target_config(source, TargetSize(2, 32))
    # 3 heads, which the source's 2 per kv head do not divide: one kv head of 3
    config = fam.target_config(source, TargetSize(2, 24))
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (3, 1)


def test_a_query_scale_equal_to_head_dim_follows_it():
    fam = get_family("gemma2")
    source = _config("gemma2")  # head_dim 8 = hidden / heads, query_pre_attn_scalar 8
    assert fam.target_config(source, TargetSize(2, 32, heads=2))["query_pre_attn_scalar"] == 16
    assert fam.target_config(source, TargetSize(2, 16))["query_pre_attn_scalar"] == 8
    kept = fam.target_config({**source, "query_pre_attn_scalar": 6}, TargetSize(2, 32, heads=2))
    assert kept["query_pre_attn_scalar"] == 6  # not head_dim: the model's own choice


# The sources' attention types: listed in the config (Gemma 3, Qwen2), or computed by
# transformers from each layer's index (Gemma 2 alternates; Qwen3 here slides from layer 2).
ATTENTION_SOURCES = {
    "gemma3": {},
    "qwen2": {},
    "gemma2": {},
    "qwen3": dict(use_sliding_window=True, sliding_window=4, max_window_layers=2),
}

# (method, depth, layers) at the source's width (32), so a layer a method copies is the
# source layer's bit for bit: the source's own depth, selecting the first layers,
# stacking the whole stack again (whole and part-way), repeating each layer in place,
# and resampling depth.
DEPTHS = [
    ("weight-selection", None, 4),
    ("weight-selection", None, 2),
    ("hypercloning", None, 8),
    ("net2net", None, 6),
    ("net2net", None, 8),
    ("hypercloning", "identity", 6),
    ("dwt", "identity", 8),
    ("dwt", None, 8),
    ("dwt", None, 2),
    ("dct", None, 6),
    ("dct", None, 2),
]
COPIES = ("weight-selection", "hypercloning", "net2net")


def _q_proj(state: dict, layer: int) -> torch.Tensor:
    return state[f"model.layers.{layer}.self_attn.q_proj.weight"].double().flatten()


def _made_from(source: dict, target: dict, layers: int, copied: bool) -> list[int]:
    """The source layer each target layer's query weights come from: the one they equal
    where they are copied; where depth is resampled, the one under the target layer's
    centre, checked to be among those the weights are mostly made of (by least squares
    over the source's layers, on the weights as written)."""
    count = sum(k.endswith("self_attn.q_proj.weight") for k in source)
    basis = torch.stack([_q_proj(source, i) for i in range(count)], dim=1)
    made_from = []
    for j in range(layers):
        w = _q_proj(target, j)
        if copied:
            (i,) = [i for i in range(count) if torch.equal(basis[:, i], w)]
        else:
            i = int((j + 0.5) * count / layers)
            coef = torch.linalg.lstsq(basis, w[:, None]).solution.abs().flatten()
            assert coef[i] >= coef.max() / 2, (j, coef)
        made_from.append(i)
    return made_from


@pytest.mark.parametrize("family", list(ATTENTION_SOURCES))
def test_each_target_layer_attends_as_the_source_layer_it_is_made_from(family, registry, tmp_path):
    """Whatever the method and depth rule, target layer j has the attention type (sliding
    or full) of the source layer its weights come from, in the config and in the layers
    transformers builds from it; Qwen's max_window_layers says where sliding starts; the
    source's own size is the source, and a depth grown by identity layers keeps its
    logits."""
    from safetensors.torch import load_file
    from tinymodels import save_tiny

    folder = save_tiny(family, tmp_path / "src", **ATTENTION_SOURCES[family])
    config = json.loads((folder / "config.json").read_text())
    if family in ("gemma2", "qwen3"):  # transformers computes them from the index
        del config["layer_types"]
        (folder / "config.json").write_text(json.dumps(config))
    src = registry.import_checkpoint(folder)
    source_model, _ = _load(folder)
    types = source_model.config.layer_types
    assert {"sliding_attention", "full_attention"} == set(types)
    source = load_file(folder / "model.safetensors")
    for method, depth, layers in DEPTHS:
        out = tmp_path / f"{method}-{depth}-{layers}"
        rule = dict(wavelet="haar") if method == "dwt" else {}
        if method in ("dwt", "dct"):
            rule["rescale"] = "none"
        made = registry.materialize(
            src.name, layers=layers, hidden=32, method=method, depth=depth, out=out, **rule
        )
        copied = method in COPIES or depth == "identity"
        made_from = _made_from(source, load_file(out / "model.safetensors"), layers, copied)
        want = [types[i] for i in made_from]
        model, info = _load(out)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
        assert model.config.layer_types == want, (method, depth, layers)
        for layer, kind in zip(model.model.layers, want, strict=True):
            assert layer.self_attn.layer_type == kind
            assert (layer.self_attn.sliding_window is not None) == (kind == "sliding_attention")
        if family.startswith("qwen"):
            first_sliding = (
                want.index("sliding_attention") if "sliding_attention" in want else layers
            )
            assert made.config["max_window_layers"] == first_sliding
        if layers == 4:  # the source itself, its config and logits unchanged
            assert made.artifact.content_hash == src.content_hash
            assert made.config == config
            assert torch.equal(_logits(model), _logits(source_model))
        if depth == "identity":
            torch.testing.assert_close(_logits(model), _logits(source_model), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("family", "source", "layer_map", "listed"),
    [
        # Gemma 3, every other layer full by its sliding_window_pattern: stacked, the
        # pattern holds; repeated in place, it breaks and the types are listed.
        ("gemma3", dict(sliding_window_pattern=2), [0, 1, 2, 3, 0, 1], None),
        (
            "gemma3",
            dict(sliding_window_pattern=2),
            [0, 0, 1, 2, 2, 3],
            ["s", "s", "f", "s", "s", "f"],
        ),
        # Qwen2 sliding from layer 2: repeated in place, sliding starts at 4; stacked, no
        # index says where it starts and the types are listed.
        ("qwen2", dict(max_window_layers=2), [0, 0, 1, 1, 2, 2, 3, 3], None),
        ("qwen2", dict(max_window_layers=2), [0, 1, 2, 3, 0, 1], ["f", "f", "s", "s", "f", "f"]),
        ("qwen2", dict(max_window_layers=2), [0, 1], None),
        ("qwen2", dict(max_window_layers=2), [2, 3], None),
        # Sliding turned off: every layer full, whatever the map; max_window_layers moves
        # to where sliding would start if turned on, never past the target's depth.
        ("qwen2", dict(max_window_layers=2, use_sliding_window=False), [0, 1, 2, 3, 0, 1], None),
        ("qwen2", dict(max_window_layers=2, use_sliding_window=False), [0, 0, 1, 1, 2, 3], None),
        ("qwen2", dict(max_window_layers=4, use_sliding_window=False), [0, 1], None),
        ("qwen3", dict(max_window_layers=4, use_sliding_window=False), [0, 2], None),
        ("qwen3", dict(max_window_layers=28, use_sliding_window=False), [0, 1, 2, 3] * 2, None),
        # Sliding on, but from past the source's depth: no layer slides, at any depth.
        (
            "qwen3",
            dict(max_window_layers=28, use_sliding_window=True, sliding_window=4),
            [0, 1],
            None,
        ),
    ],
)
def test_attention_types_computed_from_the_index_are_listed_where_the_map_breaks_them(
    family, source, layer_map, listed
):
    """A config without layer_types has them computed by transformers from each layer's
    index. The target's follow the layer map: left to that rule where it gives them, the
    index where sliding starts moved with them (Qwen), and listed where no rule does."""
    fam = get_family(family)
    config = _config(family)
    del config["layer_types"]
    config.update(source)
    cls = type(build_model(family).config)
    types = cls.from_dict(config).layer_types
    target = fam.target_config(config, TargetSize(len(layer_map), 32), layer_map)
    want = [types[i] for i in layer_map]
    assert cls.from_dict(target).layer_types == want
    if listed:
        short = {"sliding_attention": "s", "full_attention": "f"}
        assert [short[t] for t in target["layer_types"]] == listed
    else:
        assert "layer_types" not in target
    if family.startswith("qwen"):
        # Where sliding starts (or would, turned on): the first layer made from a sliding one.
        on = cls.from_dict({**config, "use_sliding_window": True, "sliding_window": 4})
        would = [on.layer_types[i] for i in layer_map]
        first_sliding = (
            would.index("sliding_attention") if "sliding_attention" in would else len(would)
        )
        assert target["max_window_layers"] == first_sliding <= len(layer_map)


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_an_mqa_source_shrinks_below_one_query_group_without_kv_heads(family, registry, tmp_path):
    """One kv head for 4 query heads (as Gemma 2B has): a target of 2 heads was refused
    until --kv-heads was set. It keeps one kv head, by every method, and transformers
    loads each output strictly, with finite logits."""
    from tinymodels import save_tiny

    src = registry.import_checkpoint(save_tiny(family, tmp_path / "src", num_key_value_heads=1))
    for method in ("weight-selection", "dwt", "dct", "scratch"):
        out = tmp_path / method
        made = registry.materialize(src.name, layers=2, hidden=16, method=method, out=out)
        assert (made.config["num_attention_heads"], made.config["num_key_value_heads"]) == (2, 1)
        model, info = _load(out)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
        assert model.model.layers[0].self_attn.k_proj.weight.shape[0] == model.config.head_dim
        assert torch.isfinite(_logits(model)).all()


def test_a_layer_map_names_a_source_layer_for_each_target_layer():
    fam = get_family("qwen2")
    with pytest.raises(InvalidInputError, match="one source layer per target layer"):
        fam.target_config(_config("qwen2"), TargetSize(2, 32), [0, 4])
    with pytest.raises(InvalidInputError, match="one source layer per target layer"):
        fam.target_config(_config("qwen2"), TargetSize(2, 32), [0])


def test_a_checkpoint_recorded_with_attention_types_of_another_layer_re_derives_as_recorded(
    registry, tiny_dir, monkeypatch
):
    """The target config a derivation wrote is recorded on its edge and re-derived as it
    is: a checkpoint whose attention types followed another rule (the first layers' types,
    each repeated in place) verifies bit for bit, and the same request now gives the types
    of the layers it stacks, under another content hash."""
    from zoo.families.decoder import DecoderFamily

    src = registry.import_checkpoint(tiny_dir("gemma3"))

    def first_then_in_place(self, config, source, layer_map):
        types, layers = source["layer_types"], len(layer_map)
        config["layer_types"] = [types[j * len(types) // layers] for j in range(layers)]

    monkeypatch.setattr(DecoderFamily, "write_layer_config", first_then_in_place)
    old = registry.materialize(src.name, layers=8, hidden=32, method="hypercloning")
    monkeypatch.undo()
    now = registry.materialize(src.name, layers=8, hidden=32, method="hypercloning")
    assert [t[0] for t in old.config["layer_types"]] == list("ssssssff")
    assert [t[0] for t in now.config["layer_types"]] == list("sssfsssf")
    assert now.artifact.content_hash != old.artifact.content_hash
    for made in (old, now):
        again = registry.rederive(made.artifact.name)
        assert again.artifact.content_hash == made.artifact.content_hash
        assert again.config == made.config


def test_per_frequency_rope_factors_keep_head_dim():
    """Phi-3's longrope lists one factor per rotary pair: a target that changes head_dim
    is refused in one line; one that keeps it is not."""
    fam = get_family("phi3")
    source = _config("phi3")
    source["rope_parameters"] = {
        **source["rope_parameters"],
        "rope_type": "longrope",
        "short_factor": [1.0] * 4,
        "long_factor": [2.0] * 4,
        "original_max_position_embeddings": 32,
    }
    with pytest.raises(InvalidTargetError) as err:
        fam.target_config(source, TargetSize(2, 32, heads=2))
    assert "keep head_dim 8" in str(err.value) and "\n" not in str(err.value)
    config = fam.target_config(source, TargetSize(2, 16))
    transformers.Phi3Config.from_dict(config)


# --- what sets each family apart, against transformers' models -----------------------------


def test_phi3_fused_projections_split_where_transformers_splits_them():
    model = build_model("phi3")
    fam = get_family("phi3")
    signals = fam.to_signals(model.state_dict(), model.config.to_dict())
    attn, mlp = model.model.layers[2].self_attn, model.model.layers[2].mlp
    x = torch.randn(3, 32)
    with torch.no_grad():
        qkv = attn.qkv_proj(x)  # q (4 heads x 8), then k and v (2 kv heads x 8 each)
        gate, up = mlp.gate_up_proj(x).chunk(2, dim=-1)
    parts = [x @ signals[f"attn.{r}.weight"].tensor[2].T for r in "qkv"]
    torch.testing.assert_close(torch.cat(parts, dim=-1), qkv)
    assert [p.shape[-1] for p in parts] == [32, 16, 16]
    torch.testing.assert_close(x @ signals["ffn.gate.weight"].tensor[2].T, gate)
    torch.testing.assert_close(x @ signals["ffn.up.weight"].tensor[2].T, up)


@pytest.mark.parametrize("family", ["gemma", "qwen3"])
def test_a_from_scratch_init_gives_unit_gains(family):
    """Gemma stores its RMSNorm gains as w in (1 + w): scratch sets them to zero, as
    transformers' own init does; Qwen3's plain gains start at one."""
    from zoo.derive import Recipe, derive_signal

    model = build_model(family)
    fam = get_family(family)
    config = model.config.to_dict()
    signals = fam.to_signals(model.state_dict(), config)
    gen = torch.Generator().manual_seed(0)
    for key in ("attn.norm.weight", "final_norm.weight"):
        sig = signals[key]
        shape = (2, 16) if sig.tensor.dim() == 2 else (16,)
        y = derive_signal(sig.tensor, sig.spec, shape, Recipe("scratch"), generator=gen)
        fresh = build_model(family, seed=1).state_dict()
        init = fresh["model.norm.weight"]
        assert torch.equal(y, torch.full(shape, float(init[0]))), key
        assert init.unique().numel() == 1


# --- growing by HyperCloning keeps the function ---------------------------------------


@pytest.mark.parametrize(
    "family", ["llama", "mistral", "qwen3", "phi3", "qwen2", "gpt2", "bert", "roberta"]
)
def test_hypercloning_to_twice_the_width_computes_the_source_logits(
    family, registry, tiny_dir, tmp_path
):
    """Every unit repeated, every fan-in halved, an untied output head's too: the wider
    model's logits are the source's. A head tied to the embeddings (qwen2, gpt2, bert and
    roberta here) reads the embedding matrix, which a lookup table is not divided in: the
    normalization feeding it is halved instead. (Gemma's embeddings are scaled by the
    square root of the width, so no family of it keeps the function.)"""
    src = registry.import_checkpoint(tiny_dir(family))
    wide = registry.materialize(
        src.name, layers=4, hidden=64, method="hypercloning", out=tmp_path / "wide"
    )
    source, _ = _load(tiny_dir(family))
    model, info = _load(wide.out)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    torch.testing.assert_close(_logits(model), _logits(source), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "family, source_heads, target",
    [
        # key/value heads grown alone: each repeated in place, the query heads unchanged
        ("llama", (8, 2), dict(layers=4, hidden=32, kv_heads=4)),
        ("qwen2", (8, 2), dict(layers=4, hidden=32, kv_heads=8)),
        ("qwen3", (4, 2), dict(layers=4, hidden=32, kv_heads=4)),
        ("mistral", (4, 2), dict(layers=4, hidden=32, kv_heads=4)),
        ("phi3", (8, 2), dict(layers=4, hidden=32, kv_heads=4)),
        ("gemma", (4, 2), dict(layers=4, hidden=32, kv_heads=4)),
        ("gemma3", (4, 1), dict(layers=4, hidden=32, kv_heads=4)),
        # with the width: key/value heads grown by more, or by less, than query heads
        ("llama", (8, 2), dict(layers=4, hidden=64, heads=16, kv_heads=8)),
        ("llama", (8, 2), dict(layers=4, hidden=64, heads=16, kv_heads=2)),
        ("phi3", (8, 2), dict(layers=4, hidden=64, heads=16, kv_heads=2)),
        ("qwen3", (4, 1), dict(layers=4, hidden=64, kv_heads=4)),
        # multi-query attention, and identity layers for the depth
        ("llama", (4, 1), dict(layers=4, hidden=32, kv_heads=2)),
        ("llama", (8, 2), dict(layers=8, hidden=64, heads=16, kv_heads=8, depth="identity")),
    ],
)
def test_hypercloning_growing_key_value_heads_keeps_the_logits(
    family, source_heads, target, registry, tmp_path
):
    """Query head q of H reads key/value head q // (H / K) (transformers' repeat_kv). Where
    key/value heads grow by another multiple than query heads, tiling both ([k0, k1, k0,
    k1]) pairs query heads with other keys and values (logits 0.13-1.4 away from the
    source's, relative); each target key/value head now copies the one its query heads
    read, and transformers computes the source's logits from what zoo writes. (Gemma grown
    in width scales its embeddings otherwise, so only its heads are grown here.)"""
    from tinymodels import save_tiny

    heads, kv_heads = source_heads
    folder = save_tiny(
        family, tmp_path / "src", num_attention_heads=heads, num_key_value_heads=kv_heads
    )
    src = registry.import_checkpoint(folder)
    wide = registry.materialize(src.name, method="hypercloning", out=tmp_path / "w", **target)
    config = wide.config
    assert config["num_key_value_heads"] == target["kv_heads"]
    assert config["num_attention_heads"] == target.get("heads", heads * target["hidden"] // 32)
    (edge,) = registry.lineage(wide.artifact.name, down=False).edges
    assert edge.recipe["hypercloning_version"] == "2"
    source, _ = _load(folder)
    model, info = _load(wide.out)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    torch.testing.assert_close(_logits(model), _logits(source), rtol=1e-5, atol=1e-5)
