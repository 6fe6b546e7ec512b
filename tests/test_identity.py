"""Identity is content: what an audit names, what content shared between artifacts means,
what a learngene's hash covers, and how damaged blobs are restored.

Round trips use transformers itself (``from_pretrained`` then ``save_pretrained``), as a
user does with every output; sources carry the buffers older transformers saved.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tinymodels import FAMILIES, TINY, save_tiny, with_legacy_norm_names

import zoo
from zoo.checkpoint import open_checkpoint


@pytest.fixture
def reg():
    """A registry in the test's own ZOO_HOME (SQLite): what is tested here does not
    depend on the database."""
    with zoo.connect() as registry:
        yield registry


def _names(folder: Path) -> set[str]:
    names: set[str] = set()
    for file in folder.glob("*.safetensors"):
        with safe_open(file, "pt") as f:
            names.update(f.keys())
    return names


def _with_saved_buffers(family: str, folder: Path) -> set[str]:
    """Add the buffers older transformers saved with the weights (current versions
    rebuild them from the config and leave them out); returns their names."""
    cfg = json.loads((folder / "config.json").read_text())
    tensors = load_file(folder / "model.safetensors")
    added: dict[str, torch.Tensor] = {}
    if family in ("bert", "roberta"):
        positions = cfg["max_position_embeddings"]
        added[f"{family}.embeddings.position_ids"] = torch.arange(positions).unsqueeze(0)
    elif family == "gpt2":
        n = cfg["n_positions"]
        mask = torch.tril(torch.ones(n, n, dtype=torch.bool)).view(1, 1, n, n)
        for i in range(cfg["n_layer"]):
            added[f"transformer.h.{i}.attn.bias"] = mask.clone()
            added[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    elif family == "llama":
        head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
        inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
        for i in range(cfg["num_hidden_layers"]):
            added[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    save_file({**tensors, **added}, folder / "model.safetensors", metadata={"format": "pt"})
    return set(added)


def _resave(folder: Path, dest: Path, **kwargs) -> Path:
    """Load with transformers and save again, as a user does with an output."""
    import transformers

    arch = json.loads((folder / "config.json").read_text())["architectures"][0]
    model = getattr(transformers, arch).from_pretrained(folder)
    model.save_pretrained(dest, **kwargs)
    return dest


@pytest.mark.parametrize("family", FAMILIES)
def test_an_output_saved_again_by_transformers_audits_as_known(reg, family, tmp_path):
    src_dir = save_tiny(family, tmp_path / "src")
    buffers = _with_saved_buffers(family, src_dir)
    src = reg.import_checkpoint(src_dir)
    lg = reg.extract(src.name, method="dwt", wavelet="haar", levels=1)
    m = reg.materialize(lg.name, layers=2, hidden=16, device="cpu", out=tmp_path / "out")
    written = _names(m.out)
    assert not buffers or written & buffers  # the output passes the old buffers on

    resaved = _resave(m.out, tmp_path / "resaved")
    resharded = _resave(m.out, tmp_path / "resharded", max_shard_size="10KB")
    assert len(list(resharded.glob("*.safetensors"))) > 1
    for folder in (resaved, resharded):
        dropped = written - _names(folder)
        assert bool(dropped) == bool(buffers), dropped  # transformers leaves them out
        report = reg.audit(folder)
        assert report.status == "known", report.to_text()
        assert report.artifact.id == m.artifact.id
        assert report.missing == report.extra == report.differing == []
        assert dropped <= set(report.not_compared)

    # Saved by another transformers version: config.json differs, the weights do not.
    cfg = json.loads((resaved / "config.json").read_text())
    (resaved / "config.json").write_text(json.dumps({**cfg, "transformers_version": "4.30.0"}))
    report = reg.audit(resaved)
    assert report.status == "known" and report.config_differs
    assert report.artifact.id == m.artifact.id

    # The source, saved again the same way, is still the source.
    report = reg.audit(_resave(src_dir, tmp_path / "src-resaved"))
    assert report.status == "known" and report.artifact.id == src.id

    # What is no evidence is only that: a changed weight in a re-saved copy still shows.
    tensors = load_file(resaved / "model.safetensors")
    victim = next(n for n, t in sorted(tensors.items()) if t.is_floating_point() and t.dim() == 2)
    tensors[victim] = tensors[victim] + 1
    save_file(tensors, resaved / "model.safetensors", metadata={"format": "pt"})
    report = reg.audit(resaved)
    assert report.status == "modified" and report.differing == [victim]
    assert report.artifact.id == m.artifact.id


def test_a_removed_weight_is_missing_even_when_buffers_are_not_compared(reg, tmp_path):
    src_dir = save_tiny("bert", tmp_path / "src")
    _with_saved_buffers("bert", src_dir)
    src = reg.import_checkpoint(src_dir)
    tensors = load_file(src_dir / "model.safetensors")
    del tensors["bert.embeddings.position_ids"]
    save_file(tensors, src_dir / "model.safetensors", metadata={"format": "pt"})
    assert reg.audit(src_dir).status == "known"
    del tensors["bert.encoder.layer.0.output.dense.weight"]
    save_file(tensors, src_dir / "model.safetensors", metadata={"format": "pt"})
    report = reg.audit(src_dir)
    assert report.status == "modified" and report.artifact.id == src.id
    assert report.missing == ["bert.encoder.layer.0.output.dense.weight"]


def test_a_renamed_tensor_is_a_difference_and_a_tie_written_twice_is_not(reg, tmp_path):
    """A tensor under a new name is missing under its own and extra under the new one, not
    a 'tied copy' of itself, and an identical config is not said to differ. A tied head
    saved twice stays known, its config unblamed."""
    src_dir = save_tiny("llama", tmp_path / "src")
    src = reg.import_checkpoint(src_dir)
    renamed = tmp_path / "renamed"
    shutil.copytree(src_dir, renamed)
    tensors = load_file(src_dir / "model.safetensors")
    name = "model.layers.0.mlp.down_proj.weight"
    tensors[f"{name}_renamed"] = tensors.pop(name)
    save_file(tensors, renamed / "model.safetensors", metadata={"format": "pt"})
    report = reg.audit(renamed)
    assert (report.status, report.artifact.id) == ("modified", src.id)
    assert (report.missing, report.extra) == ([name], [f"{name}_renamed"])
    gpt2 = save_tiny("gpt2", tmp_path / "gpt2")
    reg.import_checkpoint(gpt2)
    twice = load_file(gpt2 / "model.safetensors")
    assert "lm_head.weight" not in twice  # tied: written once
    twice["lm_head.weight"] = twice["transformer.wte.weight"].clone()
    save_file(twice, gpt2 / "model.safetensors", metadata={"format": "pt"})
    report = reg.audit(gpt2)
    assert report.status == "known" and not report.config_differs
    assert report.not_compared == ["lm_head.weight"]
    assert "config.json differs" not in report.to_text()


def _base_model(folder: Path, dest: Path) -> Path:
    """``folder``'s base model saved on its own, as ``AutoModel`` (and sentence-transformers,
    through it) loads and saves a task model: the names lose the base-model prefix."""
    import transformers

    transformers.AutoModel.from_pretrained(folder).save_pretrained(dest)
    return dest


def test_a_base_model_saved_under_another_config_is_a_backbone_whatever_came_first(reg, tmp_path):
    """A task model's base model saved twice, under two configs (a dropout changed): each
    is a source of its own with a ``backbone`` edge from the task model, also the one
    imported after the other, whose weights it holds (the config of a base model saved
    alone is not compared)."""
    src_dir = save_tiny("bert", tmp_path / "lm")
    src = reg.import_checkpoint(src_dir)
    base = _base_model(src_dir, tmp_path / "base")
    other = tmp_path / "base-other"
    shutil.copytree(base, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.3}))
    first, second = reg.import_checkpoint(base), reg.import_checkpoint(other)
    assert len({src.id, first.id, second.id}) == 3
    for info in (first, second):
        (edge,) = _edges_into(reg, info.name)
        assert (edge.parent_id, edge.relation) == (src.id, "backbone"), info.name


def test_a_base_model_saved_on_its_own_in_bf16_is_its_float32_checkpoint_rounded(reg, tmp_path):
    """The two ways a copy's names and bytes change, at once: a float32 masked LM's BERT
    loaded as bf16 and saved through AutoModel (no ``bert.`` prefix, no head, every value
    rounded) is found by its records under the prefixed names, rounded."""
    import transformers

    src_dir = save_tiny("bert", tmp_path / "ml")
    src = reg.import_checkpoint(src_dir)
    model = transformers.AutoModel.from_pretrained(src_dir, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "base-bf16")
    report = reg.audit(tmp_path / "base-bf16")
    assert (report.status, report.artifact.id) == ("modified", src.id), report.to_text()
    assert (report.prefix_dropped, report.head_dropped) == ("bert.", True), report.to_text()
    assert report.rounded_to == ["BF16"] and report.differing == [], report.to_text()


def test_a_base_model_saved_on_its_own_is_a_part_of_its_checkpoint_without_the_head(
    reg, tmp_path, run_cli
):
    """A masked LM's BERT saved through AutoModel holds its tensors without the ``bert.``
    prefix and lacks the MLM head (and adds a pooler the masked LM does not have): the
    audit names the masked LM, compares under its names, and says the head was dropped."""
    src_dir = save_tiny("bert", tmp_path / "ml")
    src = reg.import_checkpoint(src_dir)
    folder = _base_model(src_dir, tmp_path / "backbone")
    recorded, held = set(load_file(src_dir / "model.safetensors")), _names(folder)
    head = sorted(n for n in recorded if not n.startswith("bert."))
    added = sorted(n for n in held if f"bert.{n}" not in recorded)
    assert head and added == ["pooler.dense.bias", "pooler.dense.weight"]
    report = reg.audit(folder)
    assert (report.status, report.artifact.id) == ("modified", src.id)
    assert (report.differing, report.missing, report.extra) == ([], head, added)
    assert (report.prefix_dropped, report.prefix_added, report.head_dropped) == (
        "bert.",
        None,
        True,
    )
    code, out, _ = run_cli("audit", str(folder))
    assert code == 10
    lines = out.splitlines()
    assert lines[0] == (
        f"{folder}: MODIFIED: a PART of source ml ({src.content_hash[:12]}): its base model, "
        "saved without its head: every tensor of the artifact it holds is unchanged; "
        f"{len(head)} missing (the head), 2 extra (layers the base model adds, not the "
        "artifact's)"
    )
    assert "  names: the artifact's without the prefix 'bert.' (its base model saved on its " in (
        out
    )
    data = json.loads(run_cli("audit", str(folder), "--json")[1])
    assert (data["prefix_dropped"], data["head_dropped"], data["missing"]) == ("bert.", True, head)


def test_a_copy_under_the_other_layernorm_names_is_its_checkpoint(reg, tmp_path, run_cli):
    """transformers loads ``LayerNorm.gamma`` / ``.beta`` as the LayerNorm's ``weight`` /
    ``bias``, and a model's own state dict (or a transformers that writes the current
    names) holds them so: the audit compares names as transformers loads them, and
    says so; a tensor changed is named as the artifact names it."""
    import transformers

    plain_dir = save_tiny("bert", tmp_path / "plain")
    legacy_dir = with_legacy_norm_names(plain_dir, tmp_path / "legacy")
    a = transformers.BertForMaskedLM.from_pretrained(legacy_dir).state_dict()
    b = transformers.BertForMaskedLM.from_pretrained(plain_dir).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # one model
    src = reg.import_checkpoint(legacy_dir)
    report = reg.audit(plain_dir)
    assert (report.status, report.artifact.id) == ("known", src.id), report.to_text()
    assert report.norm_names_differ and report.not_compared == []
    code, out, _ = run_cli("audit", str(plain_dir))
    assert code == 0 and out.splitlines()[1] == (
        "  names: LayerNorm gains and biases under the other of the names transformers "
        "loads them by (weight/bias for gamma/beta, or the reverse)"
    )
    # Its base model's own state dict: no prefix, no head, current names.
    base = transformers.AutoModel.from_pretrained(legacy_dir)
    base.config.save_pretrained(tmp_path / "base")
    state = {k: v.contiguous() for k, v in base.state_dict().items()}
    save_file(state, tmp_path / "base/model.safetensors", metadata={"format": "pt"})
    report = reg.audit(tmp_path / "base")
    assert (report.artifact.id, report.prefix_dropped, report.head_dropped) == (
        src.id,
        "bert.",
        True,
    ), report.to_text()
    assert report.norm_names_differ and report.differing == []
    # One LayerNorm changed: named as the artifact has it.
    changed = load_file(plain_dir / "model.safetensors")
    changed["bert.encoder.layer.1.output.LayerNorm.weight"] += 1
    shutil.copytree(plain_dir, tmp_path / "changed")
    save_file(changed, tmp_path / "changed/model.safetensors", metadata={"format": "pt"})
    report = reg.audit(tmp_path / "changed")
    assert (report.status, report.artifact.id) == ("modified", src.id)
    assert report.differing == ["bert.encoder.layer.1.output.LayerNorm.gamma"]
    assert report.missing == report.extra == []


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_decoders_base_model_saved_on_its_own_is_its_checkpoint_less_the_head(
    family, reg, tmp_path
):
    """A causal LM's base model holds every tensor under ``model.``-less names: an untied
    head is what it lacks; a tied one is no tensor of its own, so nothing is missing."""
    src_dir = save_tiny(family, tmp_path / "lm")
    src = reg.import_checkpoint(src_dir)
    report = reg.audit(_base_model(src_dir, tmp_path / "base"))
    assert report.artifact.id == src.id and report.prefix_dropped == "model."
    assert report.differing == report.extra == []
    if family == "llama":  # untied
        assert (report.status, report.missing, report.head_dropped) == (
            "modified",
            ["lm_head.weight"],
            True,
        )
    else:
        assert (report.status, report.missing, report.head_dropped) == ("known", [], False)


def test_a_base_model_saved_on_its_own_names_its_own_size(reg, tmp_path):
    """A 4x64 size and a 2x64 one made of its first layers share tensors; the 4x64 one's
    base model saved on its own is the 4x64 size, not the smaller one."""
    src = reg.import_checkpoint(save_tiny("bert", tmp_path / "ml"))
    wide = reg.materialize(src.name, layers=4, hidden=64, out=tmp_path / "wide")
    reg.materialize(wide.artifact.name, layers=2, hidden=64, method="weight-selection")
    report = reg.audit(_base_model(wide.out, tmp_path / "base"))
    assert report.artifact.id == wide.artifact.id and report.head_dropped


def _edges_into(reg, name: str) -> list:
    """The edges whose child is ``name``, but its imports."""
    graph = reg.lineage(name, up=True, down=False, depth=1)
    child = next(n.id for n in graph.nodes.values() if n.name == name)
    return [e for e in graph.edges if e.child_id == child]


@pytest.mark.parametrize(
    ("family", "prefix"), [("bert", "bert."), ("llama", "model."), ("qwen2", "model.")]
)
def test_a_base_model_saved_on_its_own_imports_as_a_source_made_of_its_task_model(
    family, prefix, reg, tmp_path, run_cli
):
    """AutoModel's save of a registered task model is a new source (other tensors, other
    architecture) with a ``backbone`` edge from the task model, which names the prefix the
    names lost, the head left behind (none for a tied decoder) and the layers the base
    model adds (BERT's pooler), as the two files' tensor names say."""
    src_dir = save_tiny(family, tmp_path / "lm")
    src = reg.import_checkpoint(src_dir)
    folder = _base_model(src_dir, tmp_path / "base")
    recorded, held = set(load_file(src_dir / "model.safetensors")), _names(folder)
    head = sorted(n for n in recorded if not n.startswith(prefix))
    added = sorted(n for n in held if f"{prefix}{n}" not in recorded)
    base = reg.import_checkpoint(folder)
    assert base.kind == "source" and base.id != src.id
    (edge,) = _edges_into(reg, base.name)
    assert (edge.parent_id, edge.relation) == (src.id, "backbone")
    assert (edge.recipe["prefix"], edge.recipe["head"], edge.recipe["added"]) == (
        prefix,
        head,
        added,
    )
    down = reg.lineage(src.name, up=False, down=True)
    assert base.id in {e.child_id for e in down.edges if e.relation == "backbone"}
    # The edge is the import's: once, however often the folder is imported again.
    reg.import_checkpoint(folder, name=f"{family}-again")
    assert len(_edges_into(reg, base.name)) == 1
    code, out, _ = run_cli("lineage", base.name, "--up")
    assert code == 0 and f"lm --backbone--> {base.name}" in out, out


def test_a_base_model_changed_or_cast_or_cut_is_no_backbone_of_its_task_model(reg, tmp_path):
    """Only the task model's own tensors, every one, unchanged, make a backbone: a base
    model fine-tuned in one matrix, cast to bf16, or cut to its first layer is a source
    with no edge (an audit still says what it shares)."""
    import transformers

    src_dir = save_tiny("bert", tmp_path / "ml")
    reg.import_checkpoint(src_dir)
    tuned = _base_model(src_dir, tmp_path / "tuned")
    tensors = load_file(tuned / "model.safetensors")
    tensors["encoder.layer.0.attention.self.query.weight"] += 1e-3
    save_file(tensors, tuned / "model.safetensors", metadata={"format": "pt"})
    model = transformers.AutoModel.from_pretrained(src_dir, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    cut = _base_model(src_dir, tmp_path / "cut")
    tensors = load_file(cut / "model.safetensors")
    kept = {n: t for n, t in tensors.items() if not n.startswith("encoder.layer.")}
    kept.update({n: t for n, t in tensors.items() if n.startswith("encoder.layer.0.")})
    assert len(kept) < len(tensors)
    save_file(kept, cut / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((cut / "config.json").read_text())
    (cut / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    for folder in (tuned, tmp_path / "bf16", cut):
        info = reg.import_checkpoint(folder)
        assert _edges_into(reg, info.name) == [], folder.name
        assert reg.audit(folder).status == "known"  # its own artifact now


def test_a_base_model_of_a_removed_task_model_has_no_edge_to_it(reg, tmp_path):
    """A task model removed with `zoo rm` is no parent of what is imported after."""
    src_dir = save_tiny("bert", tmp_path / "ml")
    src = reg.import_checkpoint(src_dir)
    reg.rm(src.name)
    base = reg.import_checkpoint(_base_model(src_dir, tmp_path / "base"))
    assert _edges_into(reg, base.name) == []


def test_a_task_model_built_on_a_registered_base_model_is_named_under_its_prefix(reg, tmp_path):
    """A masked LM loaded from a bare BERT adds the ``bert.`` prefix and a new head: the
    audit names the bare BERT, and the head is extra."""
    import transformers

    bare = _base_model(save_tiny("bert", tmp_path / "ml"), tmp_path / "bare")
    base = reg.import_checkpoint(bare)
    transformers.BertForMaskedLM.from_pretrained(bare).save_pretrained(tmp_path / "mlm")
    report = reg.audit(tmp_path / "mlm")
    assert (report.status, report.artifact.id) == ("modified", base.id)
    assert (report.prefix_dropped, report.prefix_added) == (None, "bert.")
    assert report.differing == [] and report.extra
    assert all(n.startswith("cls.") for n in report.extra)


def test_one_shard_audits_as_a_part_and_a_changed_tensor_as_a_difference(reg, tmp_path):
    """A shard alone holds that artifact's tensors, unchanged, and lacks the rest: the
    report says it is a part; a changed tensor is a difference from the artifact."""
    folder = save_tiny("gpt2", tmp_path / "src", max_shard_size="20KB")
    src = reg.import_checkpoint(folder, name="sharded")
    shards = sorted(folder.glob("model-*.safetensors"))
    part = reg.audit(shards[-1])
    assert (part.status, part.artifact.id, part.differing) == ("modified", src.id, [])
    held = set(load_file(shards[-1]))
    elsewhere = {name for s in shards[:-1] for name in load_file(s)}
    assert part.missing and set(part.missing) <= elsewhere
    # Norm gains of ones missing from the shard are missing: equal to a gain the shard
    # holds, they are not ties of it.
    assert set(part.missing) == elsewhere - held - set(part.not_compared)
    assert not [n for n in part.not_compared if n.endswith(("ln_1.weight", "ln_2.weight"))]
    assert part.to_text().splitlines()[0] == (
        f"{shards[-1]}: MODIFIED: a PART of source sharded ({src.content_hash[:12]}): every "
        f"tensor it holds is that artifact's, unchanged; {len(part.missing)} missing (one "
        "shard of it, or a cut-down copy)"
    )
    changed = {k: v + 1 if k == min(held) else v for k, v in load_file(shards[-1]).items()}
    save_file(changed, tmp_path / "changed.safetensors")
    report = reg.audit(tmp_path / "changed.safetensors")
    assert report.differing == [min(held)]
    assert report.to_text().startswith(f"{tmp_path / 'changed.safetensors'}: MODIFIED from source")


def test_metadata_naming_another_artifact_does_not_outweigh_the_tensors_held(reg, tmp_path):
    """A zoo output's metadata is the file's own word: on a fine-tune of a source whose
    metadata names a derived checkpoint (copied over, or forged), the audit names the
    source whose tensors it holds, the one changed tensor differing; a file that changed
    every tensor of the output its metadata names is still that output, modified."""
    src = reg.import_checkpoint(save_tiny("bert", tmp_path / "src"))
    small = reg.materialize(src.name, layers=2, hidden=16, device="cpu", out=tmp_path / "small")
    with safe_open(small.out / "model.safetensors", "pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["zoo.derived"])["name"] == small.artifact.name

    tensors = load_file(tmp_path / "src" / "model.safetensors")
    changed = "bert.encoder.layer.0.attention.self.query.weight"
    tensors[changed] = tensors[changed] + 0.01
    forged = shutil.copytree(tmp_path / "src", tmp_path / "forged")
    save_file(tensors, forged / "model.safetensors", metadata=metadata)
    report = reg.audit(forged)
    assert (report.status, report.artifact.id) == ("modified", src.id)
    assert (report.differing, report.missing, report.extra) == ([changed], [], [])
    assert not report.named_by_file

    every = {k: v + 0.01 for k, v in load_file(small.out / "model.safetensors").items()}
    tuned = shutil.copytree(small.out, tmp_path / "tuned")
    save_file(every, tuned / "model.safetensors", metadata=metadata)
    report = reg.audit(tuned)
    assert (report.status, report.artifact.id) == ("modified", small.artifact.id)
    assert report.named_by_file and not (report.missing or report.extra)


def test_a_changed_copy_names_the_checkpoint_without_tensors_extra_to_it(reg, tmp_path):
    """Two sources share every matrix, one adding a vector (a norm gain another variant
    of the architecture adds): a copy of that one with a matrix changed is it, one tensor
    differing, not the other with the vector extra."""
    base = reg.import_checkpoint(save_tiny("bert", tmp_path / "base"))
    tensors = load_file(tmp_path / "base" / "model.safetensors")
    added = "bert.encoder.layer.0.attention.self.scale"
    tensors[added] = torch.linspace(0.5, 1.5, 32)
    plus = shutil.copytree(tmp_path / "base", tmp_path / "plus")
    save_file(tensors, plus / "model.safetensors", metadata={"format": "pt"})
    plus = reg.import_checkpoint(plus)
    assert plus.id != base.id

    changed = "bert.encoder.layer.0.attention.self.query.weight"
    tensors[changed] = tensors[changed] + 0.01
    tuned = shutil.copytree(tmp_path / "base", tmp_path / "tuned")
    save_file(tensors, tuned / "model.safetensors", metadata={"format": "pt"})
    report = reg.audit(tuned)
    assert (report.status, report.artifact.id) == ("modified", plus.id)
    assert (report.differing, report.missing, report.extra) == ([changed], [], [])
    assert report.to_text().splitlines()[0] == (
        f"{tuned}: MODIFIED from source {plus.name} ({plus.content_hash[:12]}): 1 tensor differs"
    )


def test_a_hub_cache_blob_named_by_its_hash_audits_as_its_checkpoint(reg, tmp_path, run_cli):
    """The Hugging Face cache keeps a snapshot's files in blobs/ under their hashes, with
    no suffix: such a blob that safetensors reads is audited as the file it is; a file of
    another format under such a name is still refused in one line."""
    src = reg.import_checkpoint(save_tiny("bert", tmp_path / "src"))
    blob = tmp_path / "blobs" / ("a" * 64)
    blob.parent.mkdir()
    shutil.copyfile(tmp_path / "src" / "model.safetensors", blob)
    assert set(load_file(blob)) == set(load_file(tmp_path / "src" / "model.safetensors"))
    report = reg.audit(blob)
    assert (report.status, report.artifact.id) == ("known", src.id)
    config = tmp_path / "blobs" / ("b" * 64)
    shutil.copyfile(tmp_path / "src" / "config.json", config)
    code, out, err = run_cli("audit", str(config))
    assert code == 2 and not out
    assert err.strip() == (
        f"zoo: error: {config} is not a .safetensors file; pass a .safetensors file or a "
        "checkpoint folder."
    )


def test_content_shared_by_a_source_and_a_derived_checkpoint_names_both(reg, tmp_path, run_cli):
    """A dwt learngene materialized at its source's own size gives the source back, byte
    for byte: one content, registered as a source and as a derived checkpoint. Both
    records stay (each with its lineage); show and audit list both and say which they
    name: the one the file's metadata names, else the first registered."""
    size = TINY["bert"]["config"]
    src_dir = save_tiny("bert", tmp_path / "src")
    src = reg.import_checkpoint(src_dir)
    lg = reg.extract(src.name, method="dwt", wavelet="haar", levels=1)
    same = reg.materialize(
        lg.name,
        layers=size["num_hidden_layers"],
        hidden=size["hidden_size"],
        device="cpu",
        out=tmp_path / "same",
    )
    derived = same.artifact
    assert derived.content_hash == src.content_hash and derived.id != src.id

    for query, named in ((src.content_hash[:12], src), (derived.name, derived)):
        code, out, _ = run_cli("show", query)
        other = src if named is derived else derived
        assert code == 0 and f"name:      {named.name}" in out
        assert f"same content: {other.kind} {other.name}" in out
        data = json.loads(run_cli("show", query, "--json")[1])
        assert data["same_content"] == [{"kind": other.kind, "name": other.name}]

    report = reg.audit(same.out)  # the output's metadata names the derived checkpoint
    assert report.status == "known" and report.artifact.id == derived.id
    assert report.named_by_file and report.artifact.same_content == (("source", src.name),)
    code, out, _ = run_cli("audit", str(same.out))
    assert code == 0 and f"same content: source {src.name}" in out
    assert "the file's metadata names it" in out
    assert lg.name in out  # the ancestry is the derived checkpoint's

    for folder in (src_dir, _resave(same.out, tmp_path / "resaved")):  # no zoo metadata
        report = reg.audit(folder)
        assert report.status == "known" and report.artifact.id == src.id
        assert not report.named_by_file
        assert report.artifact.same_content == (("derived", derived.name),)
        assert "first registration" in report.to_text()


def test_a_learngenes_hash_is_its_content_not_its_sources_name(tmp_path):
    """The same checkpoint imported under two names, into two registries, gives one
    learngene hash; the name is kept for display only."""
    folder = save_tiny("gpt2", tmp_path / "gpt2")
    hashes = []
    for name in ("alpha", "beta"):
        home = tmp_path / name
        with zoo.connect(home=home) as reg:
            reg.import_checkpoint(folder, name=name)
            lg = reg.extract(name, method="dwt", wavelet="haar", levels=1)
            assert lg.info["source_name"] == name
            hashes.append(lg.content_hash)
    assert hashes[0] == hashes[1]


def test_a_learngene_recorded_under_the_earlier_hash_is_found_not_duplicated(reg, tmp_path):
    """Learngenes registered while the hash covered the source's name keep that hash (the
    recipes of derived checkpoints and the metadata of written folders cite it). Extracting
    again finds them, by the edge from their source or by their content."""
    from zoo.checkpoint import manifest_hash

    src = reg.import_checkpoint(save_tiny("gpt2", tmp_path / "gpt2"))
    lg = reg.extract(src.name, method="dwt", wavelet="haar", levels=1)
    earlier = manifest_hash({"learngene": lg.info}, lg.tensors)  # with source_name
    assert earlier != lg.content_hash
    db = Path(reg.settings.db_url.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as c:
        c.execute("UPDATE artifacts SET content_hash = ? WHERE id = ?", (earlier, lg.id))
    reg.close()

    with zoo.connect() as again:
        assert again.extract(src.name, method="dwt", wavelet="haar", levels=1).id == lg.id
        again.rm(src.name, cascade=True)  # its edge now leads from a removed source
        again.import_checkpoint(tmp_path / "gpt2")  # brings the source back
        found = again.extract(src.name, method="dwt", wavelet="haar", levels=1)
        assert found.id == lg.id and found.content_hash == earlier and not found.deleted
        assert [a.id for a in again.list(kind="learngene")] == [lg.id]


def _damage(store, digest: str, *, remove: bool = False) -> None:
    path = store._path(digest)
    if remove:
        path.unlink()
        return
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_sources_side_file_is_restored_from_its_folder(reg, tmp_path, run_cli):
    """A model card (like a tokenizer or a config) is part of what an import stores:
    verify names the folder it is read again from, and --repair reads it."""
    src_dir = save_tiny("gpt2", tmp_path / "src")
    (src_dir / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    src = reg.import_checkpoint(src_dir)
    card = next(f for f in src.files if f.name == "README.md")
    _damage(reg.store, card.digest, remove=True)
    code, out, _ = run_cli("verify")
    assert code == 6 and f"reads it again from {src_dir}" in out, out
    code, out, _ = run_cli("verify", "--repair")
    assert code == 0 and "restored 1 damaged blob" in out, out
    assert reg.store.verify(card.digest) and reg.fsck().ok


def test_damaged_blobs_are_restored_and_every_hint_says_how(reg, tmp_path, run_cli):
    src_dir = save_tiny("bert", tmp_path / "src")
    src = reg.import_checkpoint(src_dir)
    lg = reg.extract(src.name, method="dwt", wavelet="haar", levels=1)
    own = sorted({t.digest for t in lg.tensors} - {t.digest for t in src.tensors})
    assert len(own) >= 2
    store = reg.store

    # Damaged and missing learngene blobs: every message says what restores them.
    _damage(store, own[0])
    _damage(store, own[1], remove=True)
    code, _, err = run_cli("materialize", lg.name, "--layers", "2", "--hidden", "16")
    assert code == 6 and err.count("\n") == 1 and "zoo verify --repair" in err, err
    code, out, _ = run_cli("fsck")
    assert code == 6 and "zoo verify --repair" in out
    code, out, _ = run_cli("verify")
    assert code == 6 and out.count(f"fix: `zoo verify --repair` extracts learngene {lg.name}") == 2
    # Extracting again restores them.
    code, _, err = run_cli("extract", src.name, "--wavelet", "haar", "--levels", "1")
    assert code == 0 and all(store.verify(d) for d in own), err
    assert run_cli("verify")[0] == 0

    # So does `zoo verify --repair`, for a learngene's, a stored derived checkpoint's and a
    # source's blobs (read again from the folder it was imported from).
    m = reg.materialize(lg.name, layers=2, hidden=16, device="cpu", store=True)
    derived_own = sorted({t.digest for t in m.artifact.tensors} - {t.digest for t in lg.tensors})
    src_own = sorted({t.digest for t in src.tensors} - {t.digest for t in lg.tensors})
    damaged = [own[0], derived_own[0], src_own[0]]
    for d in damaged:
        _damage(store, d)
    code, out, _ = run_cli("verify", "--repair")
    assert code == 0 and "restored 3 damaged blobs" in out, out
    assert all(store.verify(d) for d in damaged)
    assert reg.rederive(m.artifact.name).artifact.id == m.artifact.id

    # A source's blob whose folder is gone: verify says to import it again, which works.
    _damage(store, src_own[0])
    moved = shutil.move(src_dir, tmp_path / "moved")
    code, out, _ = run_cli("verify", "--repair")
    assert code == 6 and f"from its folder, {src_dir}, no longer on this machine" in out, out
    code, _, err = run_cli("import", str(moved))
    assert code == 0 and store.verify(src_own[0]), err
    # Imported from two folders, the first since gone: repair reads the one still there.
    _damage(store, src_own[0])
    code, out, _ = run_cli("verify", "--repair")
    assert code == 0 and "restored 1 damaged blob" in out and store.verify(src_own[0]), out


def test_a_blob_shared_with_a_lost_source_is_not_promised_by_rederiving(reg, tmp_path, run_cli):
    """A weight-selection size keeping whole layers shares its source's tensors: with the
    source's folder gone, re-deriving would read the very blob that is damaged, so verify
    names the folder to bring back rather than a repair that cannot work."""
    src_dir = save_tiny("bert", tmp_path / "src")
    src = reg.import_checkpoint(src_dir)
    hidden = src.config["hidden_size"]
    m = reg.materialize(
        src.name, layers=1, hidden=hidden, method="weight-selection", device="cpu", store=True
    )
    matrices = {t.digest for t in src.tensors if len(t.shape) == 2}
    shared = sorted(matrices & {t.digest for t in m.artifact.tensors})
    assert shared, "a kept layer is its source's, tensor for tensor"
    _damage(reg.store, shared[0])
    code, out, _ = run_cli("verify")
    assert code == 6 and f"reads it again from {src_dir}" in out, out
    shutil.move(src_dir, tmp_path / "moved")
    code, out, _ = run_cli("verify")
    assert code == 6 and "re-derives" not in out, out
    assert f"import {src.name} again from its folder, {src_dir}, no longer on this machine" in out
    # Every holder is still named: the stored size is as damaged as its source.
    (problem,) = reg.verify(m.artifact.name).problems
    assert sorted(problem.artifacts) == sorted([src.name, m.artifact.name])


def test_a_damaged_card_whose_folder_holds_it_changed_is_not_promised_from_that_folder(
    reg, tmp_path, run_cli
):
    """The source's folder is there but its card was edited since the import: verify
    does not promise to read the damaged card blob again from it (repair could not); it
    says which file changed and the two ways out, and the second one works."""
    folder = save_tiny("bert", tmp_path / "src")
    (folder / "README.md").write_text("# card v1\n")
    src = reg.import_checkpoint(folder)
    (card,) = [f for f in src.files if f.name == "README.md"]
    (folder / "README.md").write_text("# card v2, edited after the import\n")
    _damage(reg.store, card.digest)
    code, out, _ = run_cli("verify")
    changed = f"{folder / 'README.md'} has changed since {src.name} was imported"
    assert code == 6 and changed in out and "reads it again" not in out, out
    code, out, _ = run_cli("verify", "--repair")
    assert code == 6 and changed in out, out
    assert run_cli("import", str(folder))[0] == 0  # the changed card becomes the card
    code, out, _ = run_cli("verify")
    assert (
        "no kept artifact holds it: `zoo gc` moves the file into the store's quarantine" in out
    ), out  # the old card's
    assert "has changed" not in out, out


def _as(folder: Path, dest: Path, dtype: torch.dtype, keep=lambda name, t: False) -> Path:
    """A copy of ``folder`` with every floating-point tensor cast to ``dtype`` (those
    ``keep(name, tensor)`` spares stay as they are), as a float32 load and save makes."""
    shutil.copytree(folder, dest)
    for file in dest.glob("*.safetensors"):
        tensors = {
            n: t if not t.is_floating_point() or keep(n, t) else t.to(dtype)
            for n, t in load_file(file).items()
        }
        save_file(tensors, file, metadata={"format": "pt"})
    return dest


@pytest.mark.parametrize("stored", ["bfloat16", "float16"])
def test_an_output_loaded_as_float32_and_saved_again_audits_as_known(reg, tmp_path, stored):
    import transformers

    src = reg.import_checkpoint(save_tiny("llama", tmp_path / "src"))
    m = reg.materialize(src.name, layers=2, hidden=16, dtype=stored, out=tmp_path / "out")
    model = transformers.LlamaForCausalLM.from_pretrained(m.out, dtype=torch.float32)
    model.save_pretrained(tmp_path / "f32")
    saved = load_file(tmp_path / "f32" / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.float32}
    report = reg.audit(tmp_path / "f32")
    assert report.status == "known" and report.artifact.id == m.artifact.id, report.to_text()
    code = {"bfloat16": "BF16", "float16": "F16"}[stored]
    assert report.cast_from == [code] and report.config_differs  # config says float32
    assert f"recorded {code} values exactly" in report.to_text()
    assert reg.audit(m.out).cast_from == []  # the output itself needs no cast

    # A float32 fine-tune of it: the changed matrix differs, every other one is found.
    tensors = load_file(tmp_path / "f32" / "model.safetensors")
    victim = "model.layers.0.mlp.down_proj.weight"
    tensors[victim] = tensors[victim] * (1 + 1e-6)  # values no bf16 or fp16 holds
    save_file(tensors, tmp_path / "f32" / "model.safetensors", metadata={"format": "pt"})
    report = reg.audit(tmp_path / "f32")
    assert report.status == "modified" and report.differing == [victim], report.to_text()
    assert report.artifact.id == m.artifact.id and report.cast_from == [code]


def test_an_audit_names_the_checkpoint_the_file_is_not_one_holding_its_tensors_and_more(
    reg, tmp_path
):
    """A depth grow that repeats its source's layers holds every tensor of the source
    under the same names, and the source every tensor of a layers-only shrink: a file not
    matched whole by content (re-saved in float32, a config edited) is the checkpoint
    whose recorded tensors it holds with none left over, not the first that holds them."""
    import transformers

    src_dir = save_tiny("llama", tmp_path / "src")
    src = reg.import_checkpoint(_as(src_dir, tmp_path / "bf16", torch.bfloat16))
    layers, hidden = src.config["num_hidden_layers"], src.config["hidden_size"]
    shallow = reg.materialize(
        src.name, layers=layers // 2, hidden=hidden, method="weight-selection", out=tmp_path / "s"
    )
    reg.materialize(src.name, layers=layers * 2, hidden=hidden, method="hypercloning")
    for folder, expected in ((tmp_path / "bf16", src), (shallow.out, shallow.artifact)):
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        model.save_pretrained(tmp_path / f"{folder.name}-f32")
        report = reg.audit(tmp_path / f"{folder.name}-f32")
        assert report.status == "known", report.to_text()
        assert report.artifact.id == expected.id, report.to_text()
        # And without a cast: the same tensors under an edited config.
        edited = tmp_path / f"{folder.name}-edited"
        shutil.copytree(folder, edited)
        config = json.loads((edited / "config.json").read_text())
        (edited / "config.json").write_text(json.dumps({**config, "use_cache": False}))
        report = reg.audit(edited)
        assert report.status == "known" and report.artifact.id == expected.id, report.to_text()
        assert report.config_differs


def test_a_tensor_read_with_another_dtype_or_shape_is_not_the_recorded_one(reg, tmp_path):
    """The same bytes under another dtype or shape are another tensor (safetensors loads
    them so, an import records them so): such a file is modified, naming them, not the
    registered checkpoint bit for bit."""
    import struct

    folder = save_tiny("bert", tmp_path / "src")
    src = reg.import_checkpoint(folder)
    raw = (folder / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    matrix = next(
        k for k, v in sorted(header.items()) if k != "__metadata__" and len(v["shape"]) == 2
    )
    vector = next(k for k, v in sorted(header.items()) if k.endswith("LayerNorm.bias"))
    header[matrix]["shape"] = header[matrix]["shape"][::-1]
    header[vector]["dtype"] = "I32"
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    changed = tmp_path / "changed"
    changed.mkdir()
    shutil.copy(folder / "config.json", changed)
    (changed / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    report = reg.audit(changed)
    assert report.status == "modified" and report.artifact.id == src.id, report.to_text()
    assert matrix in report.differing, report.to_text()


def test_a_cast_note_names_the_dtype_the_artifact_recorded(reg, tmp_path):
    """An fp16 checkpoint's zero tensors have the same bytes in bf16: its float32 re-save
    holds the recorded F16 values, and the note says F16 alone."""
    folder = save_tiny("llama", tmp_path / "src")
    half = _as(folder, tmp_path / "f16", torch.float16)
    tensors = load_file(half / "model.safetensors")
    zero = next(n for n in sorted(tensors) if n.endswith("down_proj.weight"))
    tensors[zero] = torch.zeros_like(tensors[zero])
    save_file(tensors, half / "model.safetensors", metadata={"format": "pt"})
    src = reg.import_checkpoint(half)
    report = reg.audit(_as(half, tmp_path / "f32", torch.float32))
    assert report.status == "known" and report.artifact.id == src.id, report.to_text()
    assert report.cast_from == ["F16"], report.cast_from


def test_a_float32_model_no_narrower_dtype_holds_stays_unknown(reg, tmp_path):
    """Widening is recognized only where it lost nothing: a float32 checkpoint whose
    values no bf16 holds is not its bf16 rounding, which is registered."""
    folder = save_tiny("llama", tmp_path / "f32")
    other = save_tiny("llama", tmp_path / "other", seed=1)  # shares nothing with the above
    rounded = reg.import_checkpoint(_as(other, tmp_path / "bf16", torch.bfloat16))
    report = reg.audit(folder)
    assert report.status == "unknown" and report.cast_from == [], rounded.name


def test_tensors_recorded_in_float32_are_matched_as_recorded_beside_widened_ones(reg, tmp_path):
    """A checkpoint that keeps its norm gains in float32 and its matrices in bf16, saved
    all in float32: the gains match as they are (they would narrow, all ones, but were
    recorded wide), the matrices as their bf16 records."""
    folder = save_tiny("llama", tmp_path / "src")
    mixed = _as(folder, tmp_path / "mixed", torch.bfloat16, keep=lambda n, t: t.dim() == 1)
    src = reg.import_checkpoint(mixed)
    widened = _as(mixed, tmp_path / "widened", torch.float32)
    report = reg.audit(widened)
    assert report.status == "known" and report.artifact.id == src.id, report.to_text()
    assert report.cast_from == ["BF16"]


def test_a_widened_checkpoint_holding_an_empty_tensor_is_matched(reg, tmp_path):
    """An empty float32 tensor (a 0-row buffer) narrows as its bf16 cast does, to no
    bytes: a bf16 checkpoint holding one, saved as float32, is known, and a float32 one
    nothing registered shares is unknown."""
    folder = save_tiny("llama", tmp_path / "src")
    tensors = load_file(folder / "model.safetensors")
    tensors["model.empty"] = torch.zeros(0, 4)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    src = reg.import_checkpoint(_as(folder, tmp_path / "bf16", torch.bfloat16))
    report = reg.audit(_as(tmp_path / "bf16", tmp_path / "widened", torch.float32))
    assert report.status == "known" and report.artifact.id == src.id, report.to_text()
    assert report.cast_from == ["BF16"]
    assert reg.audit(folder).status == "unknown"


def test_a_checkpoint_whose_first_matrices_stayed_float32_is_matched_past_them(reg, tmp_path):
    """Matrices kept in float32 (the embeddings, the head, a whole layer) before those
    stored as bf16, all saved as float32: each is matched as recorded, however many come
    first. A float32 fine-tune of the bf16 one that changed those same matrices is that
    checkpoint, modified in them."""
    folder = save_tiny("llama", tmp_path / "src")
    kept = {"lm_head.weight", "model.embed_tokens.weight"}
    kept |= {n for n in load_file(folder / "model.safetensors") if ".layers.0." in n}

    def keep(name, t):
        return name in kept

    src = reg.import_checkpoint(_as(folder, tmp_path / "mixed", torch.bfloat16, keep))
    report = reg.audit(_as(tmp_path / "mixed", tmp_path / "widened", torch.float32))
    assert report.status == "known" and report.artifact.id == src.id, report.to_text()
    assert report.cast_from == ["BF16"]

    other = save_tiny("llama", tmp_path / "other", seed=1)  # shares nothing with the above
    rounded = reg.import_checkpoint(_as(other, tmp_path / "bf16", torch.bfloat16))
    tuned = _as(tmp_path / "bf16", tmp_path / "tuned", torch.float32)
    tensors = load_file(tuned / "model.safetensors")
    for name in kept:
        tensors[name] = tensors[name] * (1 + 1e-6)
    save_file(tensors, tuned / "model.safetensors", metadata={"format": "pt"})
    report = reg.audit(tuned)
    assert report.status == "modified" and report.artifact.id == rounded.id, report.to_text()
    assert set(report.differing) == kept


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_float32_checkpoint_loaded_narrower_and_saved_audits_as_its_rounding(
    reg, tmp_path, dtype
):
    """transformers loads a float32 checkpoint as bf16 or fp16 and saves it: every value
    is rounded, no byte matches. The audit finds the float32 artifact whose values,
    rounded as torch rounds, are the file's, and says so; a fine-tune of that copy is
    modified in the matrix it changed, also when that is the smallest one; an unrelated
    model of the same shapes in that dtype stays unknown."""
    import transformers

    src = reg.import_checkpoint(save_tiny("llama", tmp_path / "src"))
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "src", dtype=dtype)
    model.save_pretrained(tmp_path / "narrow")
    saved = load_file(tmp_path / "narrow" / "model.safetensors")
    assert {t.dtype for t in saved.values() if t.is_floating_point()} == {dtype}
    report = reg.audit(tmp_path / "narrow")
    assert report.status == "known" and report.artifact.id == src.id, report.to_text()
    code = {torch.bfloat16: "BF16", torch.float16: "F16"}[dtype]
    assert report.rounded_to == [code] and report.cast_from == []
    assert report.config_differs  # its config says the narrower dtype
    assert f"its {code} tensors are the recorded float32 values rounded" in report.to_text()
    assert reg.audit(tmp_path / "src").rounded_to == []  # the source needs no cast

    smallest = min(
        (n for n, t in saved.items() if t.dim() == 2), key=lambda n: (saved[n].numel(), n)
    )
    tuned = dict(saved)
    tuned[smallest] = saved[smallest] * 2 + 1
    save_file(tuned, tmp_path / "narrow" / "model.safetensors", metadata={"format": "pt"})
    report = reg.audit(tmp_path / "narrow")
    assert report.status == "modified" and report.artifact.id == src.id, report.to_text()
    assert report.differing == [smallest] and report.rounded_to == [code]
    assert f"cast: its {code} tensors, but those that differ, are the recorded" in report.to_text()

    save_tiny("llama", tmp_path / "other", seed=1)
    other = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "other", dtype=dtype)
    other.save_pretrained(tmp_path / "other-narrow")
    report = reg.audit(tmp_path / "other-narrow")
    assert report.status == "unknown" and report.rounded_to == [], report.to_text()


def test_a_rounded_copy_names_its_own_checkpoint_not_one_holding_its_tensors_and_more(
    reg, tmp_path
):
    """A depth grow that repeats a float32 source's layers records every tensor of the
    source: a bf16 copy of the source is the source, found by names and shapes."""
    src = reg.import_checkpoint(save_tiny("llama", tmp_path / "src"))
    layers = src.config["num_hidden_layers"]
    grown = reg.materialize(
        src.name, layers=2 * layers, hidden=src.config["hidden_size"], method="hypercloning"
    )
    assert {t.digest for t in src.tensors} <= {t.digest for t in grown.artifact.tensors}
    report = reg.audit(_as(tmp_path / "src", tmp_path / "bf16", torch.bfloat16))
    assert report.status == "known" and report.artifact.id == src.id, report.to_text()


def test_a_rounded_copy_is_its_checkpoint_not_one_sharing_a_matrix_under_other_names(reg, tmp_path):
    """An unrelated bf16 checkpoint that happens to hold two of the copy's bf16 matrices
    byte for byte, under its own names (a frozen embedding copied across models), is
    weaker evidence than the float32 checkpoint the copy rounds under the copy's names."""
    src = reg.import_checkpoint(save_tiny("bert", tmp_path / "src"))
    copy = _as(tmp_path / "src", tmp_path / "bf16", torch.bfloat16)
    shared = load_file(copy / "model.safetensors")
    matrices = sorted(n for n, t in shared.items() if t.dim() == 2 and t.shape[0] == t.shape[1])
    other = _as(
        save_tiny("llama", tmp_path / "llama-f32", seed=3), tmp_path / "llama", torch.bfloat16
    )
    weights = load_file(other / "model.safetensors")
    slots = sorted(n for n, t in weights.items() if t.shape == shared[matrices[0]].shape)
    for slot, name in zip(slots, matrices[:2], strict=False):
        weights[slot] = shared[name]  # the copy's bytes, under the llama's names
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    unrelated = reg.import_checkpoint(other)
    with open_checkpoint(copy) as ckpt:
        planted = {t.digest for t in ckpt.tensors if t.name in matrices[:2]}
    assert len(planted) == 2 and planted <= {t.digest for t in unrelated.tensors}
    report = reg.audit(copy)
    assert report.status == "known" and report.artifact.id == src.id, report.to_text()
    assert report.rounded_to == ["BF16"]


def _one_weights_under_24_configs(reg, tmp_path: Path):
    """A tiny BERT (its folder and config) and 24 imports of its weights, ``copy-0`` ..
    ``copy-23``, each under its config with a ``library_index`` of its own."""
    base = save_tiny("bert", tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    infos = []
    for i in range(24):
        folder = tmp_path / f"copy-{i}"
        shutil.copytree(base, folder)
        (folder / "config.json").write_text(json.dumps({**config, "library_index": i}))
        infos.append(reg.import_checkpoint(folder))
    return base, config, infos


def test_an_audit_beside_many_artifacts_sharing_its_weights_compares_a_bounded_few(
    reg, tmp_path, monkeypatch
):
    """One base's weights under 24 configs (or a frozen embedding many fine-tunes share):
    an import or audit compares the file with a bounded number of them, the oldest of
    those holding the most of its matrices, and finds what comparing all of them finds."""
    from zoo.api import audit
    from zoo.db import queries

    base, _, infos = _one_weights_under_24_configs(reg, tmp_path)
    names = [i.name for i in infos]
    read = []
    records = queries.tensor_records
    monkeypatch.setattr(queries, "tensor_records", lambda s, i: read.append(i) or records(s, i))
    report = reg.audit(tmp_path / "copy-23")
    assert report.status == "known" and report.artifact.name == names[23], report.to_text()
    read.clear()
    report = reg.audit(base)  # every copy holds its weights: the oldest is named
    assert report.artifact.name == names[0], report.to_text()
    assert 0 < len(set(read)) <= audit._CANDIDATES < 24, read


def test_an_import_among_many_artifacts_sharing_its_weights_looks_them_up_by_key(
    reg, tmp_path, monkeypatch
):
    """One base's weights under 24 configs: an import finds the artifact a
    ``save_pretrained`` copy is made of by its keys, not by comparing it with the
    artifacts holding its matrices (the oldest of which has another config), also past
    the first 16 of them, and an audit of the copy names it too; a new config over the
    same weights is a new source without any comparison."""
    from sqlalchemy import select

    from zoo.api import audit
    from zoo.checkpoint.manifest import weights_key
    from zoo.db.models import Artifact

    base, config, infos = _one_weights_under_24_configs(reg, tmp_path)
    assert len({i.content_hash for i in infos}) == 24
    with reg.session() as session:
        keys = set(session.scalars(select(Artifact.weights_key)))
    assert keys == {weights_key(infos[0].tensors)}

    compared = []
    identify = audit._identify
    monkeypatch.setattr(
        audit, "_identify", lambda *a, **k: compared.append(k.get("among")) or identify(*a, **k)
    )
    for i in (5, 20):  # saved again by another transformers release, under its own name
        resaved = tmp_path / f"resaved-{i}"
        shutil.copytree(tmp_path / f"copy-{i}", resaved)
        saved = {**config, "library_index": i, "transformers_version": "4.99.0"}
        (resaved / "config.json").write_text(json.dumps({**saved, "_name_or_path": "x"}))
        again = reg.import_checkpoint(resaved)
        assert again.id == infos[i].id and compared == [infos[i].id], (i, compared)
        compared.clear()
        report = reg.audit(resaved)  # the audit names what the import recorded it on
        assert report.status == "known" and report.artifact.id == infos[i].id, report.to_text()
        compared.clear()
    fresh = tmp_path / "fresh"
    shutil.copytree(base, fresh)
    (fresh / "config.json").write_text(json.dumps({**config, "library_index": 99}))
    new = reg.import_checkpoint(fresh)
    assert new.id not in {i.id for i in infos} and compared == []


def test_a_quantized_layers_integer_bias_is_a_weight_not_a_buffer(reg, tmp_path):
    """An int32 ``bias`` (a quantized layer's) in a model zoo has no rules for is a weight:
    a folder differing from a registered one only there, its config saved again, is a
    source of its own (its bias stored, so gc keeps it), and an audit compares it. Only
    bool or uint8 tensors under that name are the causal masks transformers rebuilds."""
    from safetensors.torch import save_file

    def save(folder, bias, mask_dtype, **config):
        folder.mkdir()
        g = torch.Generator().manual_seed(0)
        save_file(
            {
                "emb.weight": torch.randn(8, 4, generator=g),
                "l.weight": torch.randint(-8, 8, (4, 4), generator=g, dtype=torch.int8),
                "l.bias": torch.tensor(bias, dtype=torch.int32),
                "h.attn.bias": torch.ones(4, 4, dtype=mask_dtype).tril(),
            },
            folder / "model.safetensors",
        )
        (folder / "config.json").write_text(json.dumps({"model_type": "myquant", **config}))
        return folder

    first = reg.import_checkpoint(save(tmp_path / "q1", [1, 2, 3, 4], torch.bool))
    other = save(tmp_path / "q2", [5, 6, 7, 8], torch.bool, _name_or_path="q1")
    second = reg.import_checkpoint(other)
    assert second.id != first.id
    report = reg.audit(other)
    assert report.status == "known" and report.artifact.id == second.id, report.to_text()
    # The mask saved as uint8 by an older release is the same model's.
    resaved = save(tmp_path / "q1-u8", [1, 2, 3, 4], torch.uint8, _name_or_path="q1")
    assert reg.import_checkpoint(resaved).id == first.id


def test_rounding_to_bf16_and_fp16_gives_the_bytes_torch_gives():
    """Round to nearest, ties to even, overflow to infinity, subnormals: the sha256 of
    the rounded bytes is that of torch's own cast, over values spanning float32's range."""
    import hashlib

    from zoo.checkpoint.casts import rounded_digest

    g = torch.Generator().manual_seed(0)
    values = torch.randn(50_000, generator=g) * torch.logspace(-45, 39, 50_000, base=2.0)
    edges = [0.0, -0.0, float("inf"), -float("inf"), 3.4e38, 65504.0, 65520.0, 65519.99]
    edges += [1e-45, 6e-8, 2.9e-8, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-11, 1 + 3 * 2**-11]
    values = torch.cat([values, torch.tensor(edges)])
    for dtype, code in ((torch.bfloat16, "BF16"), (torch.float16, "F16")):
        for n in (len(values), 3, 0):
            part = values[-n:] if n else values[:0]
            expected = hashlib.sha256(part.to(dtype).view(torch.int16).numpy().tobytes())
            assert rounded_digest(part.numpy().tobytes(), code) == expected.hexdigest(), n


def test_narrowing_recovers_the_narrow_bytes_chunk_by_chunk(tmp_path, monkeypatch):
    """The narrowed record of a widened tensor is the sha256 of the narrow tensor's own
    bytes, computed in pieces; a tensor with one value the narrow dtype lacks has none."""
    import hashlib

    from zoo.checkpoint import casts, open_checkpoint

    monkeypatch.setattr(casts, "_FIRST", 5)  # pieces that end mid-row
    monkeypatch.setattr(casts, "_CHUNK", 7)
    g = torch.Generator().manual_seed(0)
    narrow = torch.randn(5, 9, generator=g).to(torch.bfloat16)
    narrow[0, :4] = torch.tensor([float("inf"), float("-inf"), 1e30, -0.0])  # 1e30: no fp16
    narrow.view(torch.int16)[0, 4] = 0x7FC1  # a NaN with a payload of its own, kept
    half = torch.randn(3, 4, generator=g).to(torch.float16)
    wide_only = narrow.float()
    wide_only[4, 8] = 1 + 2**-20  # one value past bf16's and fp16's precision
    save_file(
        {"a": narrow.float(), "h": half.float(), "w": wide_only, "d": half.double()},
        tmp_path / "m.safetensors",
    )

    def digest(t):
        return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()

    with open_checkpoint(tmp_path / "m.safetensors") as ckpt:
        found = casts.narrowed(ckpt)
    assert set(found) == {"a", "h", "d"}
    assert set(found["a"]) == {"BF16"} and found["a"]["BF16"].digest == digest(narrow)
    assert found["a"]["BF16"].nbytes == narrow.numel() * 2
    assert found["h"]["F16"].digest == digest(half)
    assert found["d"]["F16"].digest == digest(half)
    assert found["d"]["F32"].digest == digest(half.float())


def _layer_names(tensors, i: int) -> list[str]:
    return sorted(n for n in tensors if f".layer.{i}." in n)


def test_a_layer_deleted_or_appended_as_a_copy_is_a_difference_not_a_tie(reg, tmp_path):
    """Only the pairs transformers ties (a head beside its word embedding) may be written
    once or twice. A layer deleted from a depth grow, whose tensors' bytes the other
    layers hold, is missing (transformers loads it at random); a layer appended as a copy
    of another is extra; a norm gain of ones deleted from a bf16 cast is missing."""
    import transformers

    src_dir = save_tiny("bert", tmp_path / "src", num_hidden_layers=2)
    src = reg.import_checkpoint(src_dir)
    grown = reg.materialize(src.name, layers=4, hidden=32, out=tmp_path / "grown")
    tensors = load_file(grown.out / "model.safetensors")
    gone = _layer_names(tensors, 3)
    rest = {n: t for n, t in tensors.items() if n not in gone}
    assert all(any(torch.equal(tensors[n], t) for t in rest.values()) for n in gone)
    save_file(rest, grown.out / "model.safetensors", metadata={"format": "pt"})
    (grown.out / ".zoo-output.json").unlink(missing_ok=True)
    _, info = transformers.BertForMaskedLM.from_pretrained(grown.out, output_loading_info=True)
    report = reg.audit(grown.out)
    assert (report.status, report.artifact.id) == ("modified", grown.artifact.id)
    assert report.missing == sorted(info["missing_keys"]) == gone, report.to_text()

    tensors = load_file(src_dir / "model.safetensors")
    appended = {
        n.replace(".layer.1.", ".layer.2."): t.clone()
        for n, t in tensors.items()
        if ".layer.1." in n
    }
    # A head written beside the embedding it is tied to is still no difference.
    head = {
        "cls.predictions.decoder.weight": tensors["bert.embeddings.word_embeddings.weight"].clone()
    }
    assert not set(head) & set(tensors)
    shutil.copytree(src_dir, tmp_path / "deeper")
    save_file({**tensors, **appended, **head}, tmp_path / "deeper" / "model.safetensors")
    config = json.loads((src_dir / "config.json").read_text())
    (tmp_path / "deeper" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    report = reg.audit(tmp_path / "deeper")
    assert (report.status, report.artifact.id) == ("modified", src.id), report.to_text()
    assert report.extra == sorted(appended) and report.not_compared == sorted(head)

    cast = _as(src_dir, tmp_path / "cast", torch.bfloat16)
    tensors = load_file(cast / "model.safetensors")
    ones = min(
        n for n, t in tensors.items() if n.endswith("LayerNorm.weight") and bool((t == 1).all())
    )
    del tensors[ones]
    # Its tied head written too, in bf16 as the embedding it is tied to: no difference.
    tensors.update({n: tensors["bert.embeddings.word_embeddings.weight"].clone() for n in head})
    save_file(tensors, cast / "model.safetensors", metadata={"format": "pt"})
    report = reg.audit(cast)
    assert (report.status, report.artifact.id) == ("modified", src.id), report.to_text()
    assert report.missing == [ones] and report.rounded_to == ["BF16"]
    assert report.not_compared == sorted(head)


def test_a_rounded_fine_tune_that_kept_its_bases_smallest_matrices_is_the_fine_tune(reg, tmp_path):
    """A fine-tune that changed one layer records its base's smallest matrices, which the
    rounding search screens: a bf16 cast of it is the fine-tune, known, not its base
    modified; a bf16 cast of the base is still the base."""
    import transformers

    base_dir = save_tiny("bert", tmp_path / "base", num_hidden_layers=2)
    base = reg.import_checkpoint(base_dir)
    model = transformers.BertForMaskedLM.from_pretrained(base_dir)
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.self.query.weight.add_(0.5)
    model.save_pretrained(tmp_path / "tuned")
    tuned = reg.import_checkpoint(tmp_path / "tuned")
    model.to(torch.bfloat16).save_pretrained(tmp_path / "tuned-bf16")
    report = reg.audit(tmp_path / "tuned-bf16")
    assert (report.status, report.artifact.id) == ("known", tuned.id), report.to_text()
    assert report.rounded_to == ["BF16"]
    report = reg.audit(_as(base_dir, tmp_path / "base-bf16", torch.bfloat16))
    assert (report.status, report.artifact.id) == ("known", base.id), report.to_text()


def test_the_rounding_search_screens_the_newest_records_first(reg, tmp_path, monkeypatch):
    """Past its bound of records a matrix, the search for the float32 checkpoint a bf16
    file rounds reads the newest: a cast of the latest import is found."""
    from zoo.api import audit

    monkeypatch.setattr(audit, "_ROUNDING_SCREENS", 2)
    made = [
        reg.import_checkpoint(save_tiny("bert", tmp_path / f"m{i}", seed=i, num_hidden_layers=1))
        for i in range(3)
    ]
    report = reg.audit(_as(tmp_path / "m2", tmp_path / "newest-bf16", torch.bfloat16))
    assert (report.status, report.artifact.id) == ("known", made[-1].id), report.to_text()


def _wrapped_state_dict(folder: Path, dest: Path, wrap) -> Path:
    """``folder``'s model loaded by transformers, wrapped by ``wrap`` (torch's own
    wrappers name the prefixes) and its state dict saved as it is, beside the config."""
    import transformers

    arch = json.loads((folder / "config.json").read_text())["architectures"][0]
    model = getattr(transformers, arch).from_pretrained(folder)
    dest.mkdir(parents=True)
    shutil.copy(folder / "config.json", dest / "config.json")
    state = {k: v.detach().contiguous().clone() for k, v in wrap(model).state_dict().items()}
    save_file(state, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


@pytest.mark.parametrize(
    ("wrap", "prefix"),
    [
        (torch.compile, "_orig_mod."),
        (torch.nn.DataParallel, "module."),
        (lambda m: torch.nn.DataParallel(torch.compile(m)), "module._orig_mod."),
    ],
)
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_a_state_dict_saved_from_inside_a_training_wrapper_is_named_under_the_wrappers_prefix(
    family, wrap, prefix, reg, tmp_path, run_cli
):
    """torch.compile and DDP prefix every name of the state dict they hold: the audit names
    the checkpoint whose tensors those are, says which prefix, and a tensor changed after
    is a difference under the artifact's name."""
    folder = save_tiny(family, tmp_path / "src")
    src = reg.import_checkpoint(folder)
    wrapped = _wrapped_state_dict(folder, tmp_path / "wrapped", wrap)
    assert all(n.startswith(prefix) for n in _names(wrapped))
    report = reg.audit(wrapped)
    assert (report.status, report.artifact.id) == ("known", src.id), report.to_text()
    assert (report.wrapper_prefix, report.prefix_dropped, report.prefix_added) == (
        prefix,
        None,
        None,
    )
    code, out, _ = run_cli("audit", str(wrapped))
    assert code == 0 and f"under the prefix {prefix!r}" in out, out

    tensors = load_file(wrapped / "model.safetensors")
    changed = sorted(n for n, t in tensors.items() if t.dim() == 2)[0]
    tensors[changed] = tensors[changed] + 1
    save_file(tensors, wrapped / "model.safetensors", metadata={"format": "pt"})
    report = reg.audit(wrapped)
    assert (report.status, report.artifact.id) == ("modified", src.id), report.to_text()
    assert (report.differing, report.missing, report.extra) == ([changed[len(prefix) :]], [], [])


def test_a_wrapped_state_dict_imported_is_no_base_model_of_the_plain_checkpoint(reg, tmp_path):
    """A folder of torch.compile'd names imported first is its own source; the same
    model's state dict saved unwrapped and imported after is not its base model (no
    prefix was dropped: a wrapper's was never there), and audits as itself."""
    folder = save_tiny("gpt2", tmp_path / "src")
    wrapped = reg.import_checkpoint(
        _wrapped_state_dict(folder, tmp_path / "wrapped", torch.compile), name="wrapped"
    )
    unwrapped = _wrapped_state_dict(folder, tmp_path / "plain", lambda m: m)
    plain = reg.import_checkpoint(unwrapped, name="plain")
    assert plain.id != wrapped.id
    assert _edges_into(reg, "plain") == []
    report = reg.audit(unwrapped)
    assert (report.status, report.artifact.id, report.prefix_dropped) == ("known", plain.id, None)
    assert reg.audit(tmp_path / "wrapped").artifact.id == wrapped.id


@pytest.mark.parametrize("inner", ["task model", "base model"])
def test_a_model_saved_inside_a_users_own_module_is_named_by_the_bytes_it_holds(
    inner, reg, tmp_path
):
    """A checkpoint saved as a module of the user's own (every name under its attribute,
    a new head beside it) shares no name with any artifact: the one holding the most of
    its matrices is named, not the one with the fewest tensors."""
    import transformers

    folder = save_tiny("bert", tmp_path / "mlm")
    mlm = reg.import_checkpoint(folder, name="mlm")
    model = transformers.BertForMaskedLM.from_pretrained(folder)
    model.bert.save_pretrained(tmp_path / "base")
    base = reg.import_checkpoint(tmp_path / "base", name="base")

    class Classifier(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder, self.head = encoder, torch.nn.Linear(32, 3)

    wrapped = Classifier(model if inner == "task model" else model.bert)
    (tmp_path / "mine").mkdir()
    shutil.copy(folder / "config.json", tmp_path / "mine" / "config.json")
    state = {k: v.detach().contiguous().clone() for k, v in wrapped.state_dict().items()}
    save_file(state, tmp_path / "mine" / "model.safetensors", metadata={"format": "pt"})
    report = reg.audit(tmp_path / "mine")
    expected = mlm if inner == "task model" else base
    assert (report.status, report.artifact.id) == ("modified", expected.id), report.to_text()
