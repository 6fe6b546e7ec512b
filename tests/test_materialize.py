"""Learngenes, materialize, lineage and audit, end to end for every family.

import -> extract (dwt and dct) -> materialize L2S and S2L -> transformers loads the folder
-> lineage both ways -> audit of a renamed copy -> verify of a virtual checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import pywt
import torch
import transformers
from safetensors import safe_open
from tinymodels import save_tiny, with_legacy_norm_names

from zoo.errors import (
    AmbiguousNameError,
    ConflictError,
    DeviceUnavailableError,
    InvalidInputError,
    InvalidTargetError,
    NotFoundError,
)
from zoo.methods.amplitude import AMPLITUDE_VERSION
from zoo.methods.net2net import NET2NET_VERSION

FAMILY_SIZES = {  # tiny sources are 4 layers x 32 hidden (tests/tinymodels.py)
    "bert": ("num_hidden_layers", "hidden_size"),
    "roberta": ("num_hidden_layers", "hidden_size"),
    "gpt2": ("n_layer", "n_embd"),
    "vit": ("num_hidden_layers", "hidden_size"),
    "deit": ("num_hidden_layers", "hidden_size"),
    "llama": ("num_hidden_layers", "hidden_size"),
}


def _load(folder: Path):
    config = json.loads((folder / "config.json").read_text())
    arch = getattr(transformers, config["architectures"][0])
    model, info = arch.from_pretrained(folder, output_loading_info=True)
    return model, info


def _forward(model, family: str):
    with torch.no_grad():
        if family in ("vit", "deit"):
            return model(pixel_values=torch.randn(1, 3, 16, 16)).logits
        return model(input_ids=torch.tensor([[1, 5, 7, 9, 2]])).logits


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_layernorm_gamma_and_beta_names_materialize_under_the_sources_names(
    family, registry, tiny_dir, tmp_path
):
    """A BERT or RoBERTa storing its LayerNorms as ``gamma`` / ``beta`` (which transformers
    loads as their weight and bias) is extracted and materialized at every size: a
    same-size copy is the source, bit for bit and name for name, and a resized one is
    what the same source with current names gives, under the source's names."""
    plain_dir = tiny_dir(family)
    legacy_dir = with_legacy_norm_names(plain_dir, tmp_path / "legacy")
    legacy = _tensors(legacy_dir)
    assert sum(k.endswith(("LayerNorm.gamma", "LayerNorm.beta")) for k in legacy) >= 10
    source, info = _load(legacy_dir)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    logits = _forward(source, family)
    src = registry.import_checkpoint(legacy_dir)
    plain = registry.import_checkpoint(plain_dir)
    assert plain.id != src.id  # other names: a checkpoint of its own, not a copy
    registry.extract(src.name, method="dwt", wavelet="haar", levels=2)
    for method in ("weight-selection", "dwt"):
        out = tmp_path / f"same-{method}"
        registry.materialize(src.name, layers=4, hidden=32, method=method, out=out)
        same = _tensors(out)
        assert sorted(same) == sorted(legacy), method
        for k, t in legacy.items():
            assert torch.equal(same[k], t), (method, k)
        model, info = _load(out)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        assert torch.equal(_forward(model, family), logits), method
    for method, layers, hidden in (("dwt", 2, 16), ("dct", 8, 64), ("hypercloning", 8, 64)):
        outs = {}
        for name in (src.name, plain.name):
            outs[name] = tmp_path / f"{method}-{name}"
            registry.materialize(name, layers=layers, hidden=hidden, method=method, out=outs[name])
        model, info = _load(outs[src.name])
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        assert torch.isfinite(_forward(model, family)).all()
        resized, reference = _tensors(outs[src.name]), _tensors(outs[plain.name])
        renamed = _tensors(with_legacy_norm_names(outs[plain.name], tmp_path / f"{method}-r"))
        assert sorted(resized) == sorted(renamed) and sorted(resized) != sorted(reference)
        for k, t in renamed.items():
            assert torch.equal(resized[k], t), (method, k)


@pytest.mark.parametrize("family", sorted(FAMILY_SIZES))
def test_end_to_end(family, registry, tiny_dir, tmp_path):
    src = registry.import_checkpoint(tiny_dir(family))
    dwt = registry.extract(src.name, method="dwt", wavelet="haar", levels=2)
    dct = registry.extract(src.name, method="dct", keep=0.5)
    assert registry.extract(src.name, method="dwt", wavelet="haar", levels=2).id == dwt.id

    layers_key, hidden_key = FAMILY_SIZES[family]
    small = registry.materialize(dwt.name, layers=2, hidden=16, out=tmp_path / "small")
    big = registry.materialize(dct.name, layers=8, hidden=64, out=tmp_path / "big")
    for result, (layers, hidden) in ((small, (2, 16)), (big, (8, 64))):
        assert result.config[layers_key] == layers and result.config[hidden_key] == hidden
        model, info = _load(result.out)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        out = _forward(model, family)
        assert torch.isfinite(out).all()
        assert result.artifact.virtual  # recipe only, unless store=True
        card = (result.out / "README.md").read_text()
        # Imported from a folder: no Hub repository to name as its base, only in the text.
        assert card.startswith("---\nlibrary_name: transformers\n") and "base_model" not in card
        assert f"`{src.name}`" in card
        with safe_open(result.out / "model.safetensors", "pt") as f:
            meta = f.metadata()
        assert json.loads(meta["zoo.source"])["content_hash"] == src.content_hash
        assert json.loads(meta["zoo.derived"])["content_hash"] == result.artifact.content_hash

    # Lineage both ways, with recipes.
    down = registry.lineage(src.name, up=False)
    assert {
        (down.nodes[e.parent_id].name, e.relation, down.nodes[e.child_id].name) for e in down.edges
    } == {
        (src.name, "extract", dwt.name),
        (src.name, "extract", dct.name),
        (dwt.name, "materialize", small.artifact.name),
        (dct.name, "materialize", big.artifact.name),
    }
    up = registry.lineage(small.artifact.name, down=False)
    assert [up.nodes[e.child_id].name for e in up.edges] == [dwt.name, small.artifact.name]
    assert src.id in up.imports
    assert "digraph" in up.to_dot() and "graph LR" in up.to_mermaid()

    # Audit a renamed copy of the weights file; verify the virtual checkpoint.
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


@pytest.mark.filterwarnings("ignore:Level value of 1 is too high")  # 4 layers vs db2's 4 taps
def test_l2s_band_equals_pywavelets(registry, tiny_dir):
    """The derived query weights are PyWavelets' 3-D cA of the stacked source weights."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    lg = registry.extract(src.name, method="dwt", wavelet="db2", levels=1)
    state = registry.materialize(lg.name, layers=2, hidden=16, rescale="none").state_dict
    with safe_open(tiny_dir("bert") / "model.safetensors", "np") as f:
        stack = np.stack(
            [f.get_tensor(f"bert.encoder.layer.{i}.attention.self.query.weight") for i in range(4)]
        ).astype(np.float64)
    ca = pywt.wavedecn(stack, "db2", mode="periodization", level=1, axes=(0, 1, 2))[0]
    got = np.stack(
        [state[f"bert.encoder.layer.{i}.attention.self.query.weight"].numpy() for i in range(2)]
    )
    np.testing.assert_allclose(got, ca, rtol=1e-5, atol=1e-6)


def test_materialize_is_deterministic_and_virtual_checkpoints_rederive(registry, tiny_dir):
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    a = registry.materialize(src.name, layers=3, hidden=24, method="dwt", wavelet="db2")
    b = registry.materialize(src.name, layers=3, hidden=24, method="dwt", wavelet="db2")
    assert a.artifact.id == b.artifact.id
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k
    again = registry.rederive(a.artifact.name)
    assert again.artifact.content_hash == a.artifact.content_hash


def test_a_checkpoint_larger_than_memory_is_verified_as_it_was_recorded(
    registry, tiny_dir, tmp_path, monkeypatch, run_cli
):
    """`zoo materialize` records a target larger than memory, each tensor hashed and let
    go; `zoo rederive` and `zoo audit --verify` held the whole of it to verify it, so the
    same checkpoint was refused ("write it with --out") or took half its size in memory.
    They verify it as it was recorded; a program asking for the weights still gets them
    only where they fit."""
    from zoo import _memory
    from zoo.api import materialize as mat
    from zoo.api.derivation import Derivation
    from zoo.api.plan import MaterializeRequest, make_plan
    from zoo.api.tensors import KnownDigests

    src = registry.import_checkpoint(tiny_dir("llama"))
    size = dict(layers=4, hidden=64)
    m = registry.materialize(src.name, out=tmp_path / "out", **size)
    plan = make_plan(registry, src.name, MaterializeRequest(**size))
    planned = Derivation(registry, plan, torch.device("cpu"), known=KnownDigests())
    assert planned.largest_working_set < planned.target_bytes
    # Room for the largest group at once, not for the whole target.
    have = int(planned.target_bytes / mat.MEMORY_MARGIN) - 1
    monkeypatch.setattr(_memory, "available_bytes", lambda dev: have)
    with pytest.raises(InvalidTargetError, match="of weights, more than"):
        registry.rederive(m.artifact.name)
    again = registry.rederive(m.artifact.name, return_weights=False)
    assert again.state_dict is None and again.artifact.id == m.artifact.id
    code, out, err = run_cli("rederive", m.artifact.name)
    assert code == 0 and "re-derived bit for bit" in out, err
    code, out, err = run_cli("audit", str(tmp_path / "out"), "--verify")
    assert code == 0 and "verify: re-derived bit for bit" in out, err
    # Each tensor is still checked as it is let go: a recorded digest the recipe does not
    # give fails the verification.
    from sqlalchemy import select

    from zoo.db.models import ArtifactTensor

    def tamper(session):
        row = session.scalars(
            select(ArtifactTensor).where(ArtifactTensor.artifact_id == m.artifact.id)
        ).first()
        row.digest = "0" * 64

    registry.transaction(tamper)
    code, out, err = run_cli("rederive", m.artifact.name)
    assert code != 0 and "gave different tensors" in err, err


@pytest.mark.parametrize("family", sorted(FAMILY_SIZES))
@pytest.mark.parametrize("rescale", ["none", "fan"])
def test_recorded_digests_are_the_sha256_of_the_returned_tensors(
    registry, tiny_dir, family, rescale
):
    """Outputs that are stored bands unchanged reuse the bands' digests and others are
    hashed while the rest is derived; every recorded digest must still be the sha256 of
    the bytes returned (checked with hashlib here)."""
    import hashlib

    src = registry.import_checkpoint(tiny_dir(family))
    lg = registry.extract(src.name, method="dwt", wavelet="haar", levels=1)
    m = registry.materialize(lg.name, layers=2, hidden=16, rescale=rescale, store=True)
    band_digests = {t.digest for t in lg.tensors}
    reused = 0
    for rec in m.artifact.tensors:
        t = m.state_dict[rec.name]
        assert rec.digest == hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()
        assert rec.nbytes == t.numel() * t.element_size()
        assert registry.store.verify(rec.digest)
        reused += rec.digest in band_digests
    if rescale == "none":
        assert reused > 0  # e.g. the embedding bands are the outputs themselves
    assert registry.rederive(m.artifact.name).artifact.content_hash == m.artifact.content_hash


def test_raw_band_layers_use_recorded_digests_and_verify_hashes_them_itself(registry, tiny_dir):
    """A raw L2S band's layers are the target's per-layer tensors; extraction records
    their sha256 so materialize need not hash them again. The recorded digests are
    trusted by materialize (a wrong one shows up in its record) but never by verify."""
    import hashlib

    from sqlalchemy import select

    from zoo.api.tensors import load_tensors
    from zoo.db.models import Artifact
    from zoo.errors import VerificationError

    src = registry.import_checkpoint(tiny_dir("bert"))
    lg = registry.extract(src.name, method="dwt", wavelet="haar", levels=1)
    per_layer = {k: m for k, m in lg.info["signals"].items() if "layer_digests" in m}
    assert per_layer  # bert's attention and MLP matrices, stacked over depth
    bands = {t.name: t for t in lg.tensors}
    key = sorted(per_layer)[0]
    stacked = load_tensors(registry.store, [bands[f"{key}@dwt1"]])[f"{key}@dwt1"]
    assert per_layer[key]["layer_digests"]["1"] == [
        hashlib.sha256(stacked[i].contiguous().numpy().tobytes()).hexdigest()
        for i in range(stacked.shape[0])
    ]

    # Corrupt one recorded layer digest in the database.
    info = json.loads(json.dumps(lg.info))
    wrong = "0" * 64
    info["signals"][key]["layer_digests"]["1"][0] = wrong

    def corrupt(session) -> None:
        row = session.scalar(select(Artifact).where(Artifact.id == lg.id))
        row.info_json = json.dumps(info)

    registry.transaction(corrupt)
    m = registry.materialize(lg.name, layers=2, hidden=16, rescale="none")
    assert wrong in {t.digest for t in m.artifact.tensors}  # trusted, hence not rehashed
    with pytest.raises(VerificationError, match="differ"):
        registry.rederive(m.artifact.name)


def test_a_cpu_derivation_records_its_cpu_and_a_failed_check_elsewhere_names_both(
    registry, tiny_dir, run_cli
):
    """Another CPU model or instruction set may round differently: the lineage edge
    records which CPU derived a checkpoint, and a re-derivation whose bits differ on
    another CPU says so (the same CPU says nothing of it)."""
    from sqlalchemy import update

    from zoo._machine import cpu_model
    from zoo.db.models import ArtifactTensor, Edge
    from zoo.errors import VerificationError

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    m = registry.materialize(src.name, layers=3, hidden=24, method="dwt", device="cpu")
    edge = registry.lineage(m.artifact.name, down=False).edges[0]
    here = {"model": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability()}
    assert edge.recipe["device"] == "cpu" and edge.recipe["cpu"] == here

    def tamper(session) -> None:  # one recorded digest no CPU gives
        first = m.artifact.tensors[0].name
        session.execute(
            update(ArtifactTensor)
            .where(ArtifactTensor.artifact_id == m.artifact.id, ArtifactTensor.name == first)
            .values(digest="0" * 64)
        )

    registry.transaction(tamper)
    with pytest.raises(VerificationError, match="differ") as same:
        registry.rederive(m.artifact.name)
    assert "another CPU" not in str(same.value)

    elsewhere = {"model": "Other CPU 9000", "capability": "DEFAULT"}

    def recorded_elsewhere(session) -> None:
        row = session.get(Edge, edge.id)
        row.recipe_json = json.dumps({**edge.recipe, "cpu": elsewhere})

    registry.transaction(recorded_elsewhere)
    code, _, err = run_cli("rederive", m.artifact.name)
    assert code != 0 and err.count("\n") == 1
    assert "by the CPU 'Other CPU 9000' (DEFAULT), and this one is" in err
    assert f"{here['model']!r} ({here['capability']})" in err and "another CPU" in err


def test_known_digests_forget_a_tensor_changed_in_place(registry, tiny_dir):
    from zoo.api import tensors as tio

    src = registry.import_checkpoint(tiny_dir("bert"))
    known = tio.KnownDigests()
    recs = src.tensors[:2]
    loaded = tio.load_tensors(registry.store, recs, known=known)
    t = loaded[recs[0].name]
    assert known.get(t) == recs[0].digest
    assert known.get(t.clone()) is None  # equal bytes, but not the tensor that was read
    t.view(-1)[:1].add_(1.0)  # in place, through a view
    assert known.get(t) is None
    assert tio.record("x", t, known)[0].digest != recs[0].digest


def test_a_role_read_into_one_buffer_stacks_without_a_copy(registry, tiny_dir):
    """A group of one role's per-layer tensors is read into one buffer in layer order
    (whatever order the records come in), so its signal is that buffer: the same values
    as stacking separate reads, with no second copy. Groups that do not stack (layers
    of other shapes, a GPT-2 fused q/k/v cut in three) are stacked as before."""
    import random

    from zoo.api import tensors as tio
    from zoo.families import get_family

    for model, group in (("llama", ("ffn.down.weight",)), ("gpt2", None)):
        src = registry.import_checkpoint(tiny_dir(model))
        family = get_family(src.family)
        groups: dict[tuple[str, ...], list] = {}
        for r in src.tensors:
            groups.setdefault(family.group_of(r.name), []).append(r)
        if group is None:  # the fused q/k/v
            group = next(g for g in groups if len(g) == 3)
        recs = groups[group]
        random.Random(0).shuffle(recs)
        stacked = tio.load_tensors(registry.store, recs, layer_of=family.layer_index)
        separate = tio.load_tensors(registry.store, recs)
        signals = family.to_signals(stacked, src.config, partial=True)
        want = family.to_signals(separate, src.config, partial=True)
        for key in group:
            assert torch.equal(signals[key].tensor, want[key].tensor)
        first = next(t for n, t in stacked.items() if family.layer_index(n) == 0)
        shared = signals[group[0]].tensor.data_ptr() == first.data_ptr()
        assert shared == (len(group) == 1), model
    mixed = [r for r in src.tensors if family.layer_index(r.name) == 0][:2]
    assert tio._stack_rows(mixed, family.layer_index) is None  # one layer twice


def test_store_keeps_weights_and_audit_sees_modifications(registry, tiny_dir, tmp_path):
    src = registry.import_checkpoint(tiny_dir("bert"))
    m = registry.materialize(
        src.name, layers=2, hidden=16, method="weight-selection", store=True, out=tmp_path / "ws"
    )
    assert not m.artifact.virtual
    for t in m.artifact.tensors:
        assert registry.store.verify(t.digest)
    tampered = tmp_path / "tampered"
    shutil.copytree(m.out, tampered)
    from safetensors.torch import load_file, save_file

    tensors = load_file(tampered / "model.safetensors")
    victim = sorted(tensors)[3]
    tensors[victim] = tensors[victim] + 1
    save_file(tensors, tampered / "model.safetensors")
    report = registry.audit(tampered)
    assert report.status == "modified" and report.differing == [victim]
    assert report.artifact.id == m.artifact.id
    unknown = tmp_path / "unknown.safetensors"
    save_file({"w": torch.ones(3)}, unknown)
    assert registry.audit(unknown).status == "unknown"


def test_cli_audit_exit_codes(registry, tiny_dir, tmp_path, run_cli):
    """0 known, 10 unknown, modified or removed, 6 known but its recorded weights fail
    --verify."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    small = registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "small")
    assert run_cli("audit", str(small.out), "--verify")[0] == 0
    assert run_cli("audit", str(tiny_dir("bert", seed=1)))[0] == 10
    query = next(t for t in src.tensors if t.name.endswith("layer.0.attention.self.query.weight"))
    blob = registry.store._path(query.digest)
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF  # damage what re-deriving reads
    blob.write_bytes(bytes(data))
    code, out, _ = run_cli("audit", str(small.out), "--verify")
    assert code == 6 and "verify: FAILED" in out
    assert run_cli("audit", str(small.out))[0] == 0  # without --verify: identified by content
    registry.rm(src.name, cascade=True)
    for folder, artifact in ((small.out, small.artifact), (tiny_dir("bert"), src)):
        code, out, err = run_cli("audit", str(folder))
        assert code == 10 and err == "" and f"was {artifact.kind} {artifact.name}" in out
        assert "removed" in out
    # A changed copy of a removed artifact is not it: modified, saying which tensors, and
    # not told that importing it would bring the removed one back.
    from safetensors.torch import load_file, save_file

    changed = tmp_path / "changed"
    shutil.copytree(small.out, changed)
    tensors = load_file(changed / "model.safetensors")
    victim = next(n for n, t in sorted(tensors.items()) if t.dim() == 2)
    tensors[victim] = tensors[victim] + 1
    save_file(tensors, changed / "model.safetensors", metadata={"format": "pt"})
    report = registry.audit(changed)
    assert report.status == "modified" and report.differing == [victim], report.to_text()
    assert report.artifact.deleted and report.lineage is None
    code, out, _ = run_cli("audit", str(changed))
    assert code == 10 and "(removed with `zoo rm`)" in out and "brings it back" not in out
    checked = registry.audit(changed, verify=True)  # a removed recipe is not re-derived
    assert checked.verified is None and "FAILED" not in checked.to_text()


def test_audit_takes_no_shared_zeros_and_ones_for_ancestry(registry, tiny_dir, tmp_path):
    """Another random model of the same config shares only its untouched zero biases,
    unit LayerNorm gains and integer buffers (position ids) with the registered one: that
    is no evidence, so it is unknown. One real tensor copied over is evidence, and names
    the model it came from."""
    from safetensors.torch import load_file, save_file

    ids = "bert.embeddings.position_ids"
    mine_dir, other_dir = tmp_path / "mine", tmp_path / "other"
    for folder, seed in ((mine_dir, 0), (other_dir, 1)):
        shutil.copytree(tiny_dir("bert", seed=seed), folder)
        tensors = load_file(folder / "model.safetensors")
        tensors[ids] = torch.arange(64).unsqueeze(0)
        save_file(tensors, folder / "model.safetensors")
    src = registry.import_checkpoint(mine_dir)
    mine = load_file(mine_dir / "model.safetensors")
    other = load_file(other_dir / "model.safetensors")
    shared = [k for k in other if torch.equal(other[k], mine[k])]
    assert ids in shared
    assert all(set(other[k].unique().tolist()) <= {0.0, 1.0} for k in shared if k != ids)
    report = registry.audit(other_dir)
    assert report.status == "unknown" and report.artifact is None
    victim = "bert.encoder.layer.0.attention.self.query.weight"
    other[victim] = mine[victim]
    borrowed = tmp_path / "borrowed.safetensors"
    save_file(other, borrowed)
    report = registry.audit(borrowed)
    assert report.status == "modified" and report.artifact.id == src.id
    assert victim not in report.differing


def test_audit_takes_no_shared_constant_vectors_for_ancestry(registry, tiny_dir, tmp_path):
    """Vectors are often constants of any value (unit gains resized raw are all 2.0), and
    unrelated checkpoints share them: a model whose only tensors in common with the
    registered one are such vectors is unknown, not that one modified."""
    from safetensors.torch import load_file, save_file

    mine_dir, other_dir = tmp_path / "mine", tmp_path / "other"
    for folder, seed in ((mine_dir, 0), (other_dir, 1)):
        shutil.copytree(tiny_dir("gpt2", seed=seed), folder)
        tensors = load_file(folder / "model.safetensors")
        for name, value in tensors.items():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                tensors[name] = torch.full_like(value, 2.0)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    registry.import_checkpoint(mine_dir)
    mine = load_file(mine_dir / "model.safetensors")
    other = load_file(other_dir / "model.safetensors")
    shared = [k for k in other if torch.equal(other[k], mine[k])]
    assert any(other[k].unique().tolist() == [2.0] for k in shared)
    assert all(other[k].ndim == 1 for k in shared)
    report = registry.audit(other_dir)
    assert report.status == "unknown" and report.artifact is None


def test_a_family_with_many_sources_or_learngenes_is_refused_naming_a_few(
    registry, tiny_dir, monkeypatch
):
    """A family with thousands of sources or learngenes is refused in one readable line: the
    first few names, how many more, and the command that lists them all."""
    from zoo.api import plan

    monkeypatch.setattr(plan, "LISTED", 2)
    names = [registry.import_checkpoint(tiny_dir("bert", seed=s)).name for s in range(3)]
    with pytest.raises(NotFoundError) as none:
        registry.materialize("bert", layers=2, hidden=16)
    assert str(none.value).endswith(
        f"name a source: {names[0]}, {names[1]} and 1 more "
        "(`reg.list(kind='source', family='bert')`)."
    )
    assert none.value.suggestions == names[:2]
    genes = [registry.extract(n, method="dwt").name for n in names]
    with pytest.raises(AmbiguousNameError) as several:
        registry.materialize("bert", layers=2, hidden=16)
    listed = f"{genes[0]}, {genes[1]} and 1 more (`reg.list(kind='learngene', family='bert')`)"
    assert f"qualify ({listed}); name one" in str(several.value)
    assert several.value.candidates == genes[:2]
    registry.rm(genes[2])  # two left: both named, nothing more to count
    with pytest.raises(AmbiguousNameError, match=rf"qualify \({genes[0]}, {genes[1]}\); name"):
        registry.materialize("bert", layers=2, hidden=16)


def test_family_name_resolves_to_the_default_learngene(registry, tiny_dir, run_cli):
    src = registry.import_checkpoint(tiny_dir("bert"))
    # What to run, in each caller's words: the Registry call, the command.
    with pytest.raises(NotFoundError, match=re.escape(f"reg.extract({src.name!r})")):
        registry.materialize("bert", layers=2, hidden=16)
    code, _, err = run_cli("materialize", "bert", "--layers", "2", "--hidden", "16")
    assert code == NotFoundError.exit_code and f"`zoo extract {src.name}`" in err, err
    one = registry.extract(src.name, method="dwt")
    assert (
        registry.materialize("bert", layers=2, hidden=16).artifact.info["recipe"]["learngene"]
        == one.content_hash
    )
    two = registry.extract(src.name, method="dct")
    with pytest.raises(AmbiguousNameError) as err:
        registry.materialize("bert", layers=2, hidden=16)
    assert set(err.value.candidates) == {one.name, two.name}
    registry.set_default("bert", two.name)
    assert (
        registry.materialize("bert", layers=2, hidden=16).artifact.info["recipe"]["learngene"]
        == two.content_hash
    )
    # A family in any case, as set_default and listings take it.
    assert (
        registry.materialize("BERT", layers=2, hidden=16).artifact.info["recipe"]["learngene"]
        == two.content_hash
    )
    gpt = registry.extract(registry.import_checkpoint(tiny_dir("gpt2")).name)
    with pytest.raises(InvalidInputError, match="gpt2 learngene"):
        registry.set_default("bert", gpt.name)
    # An artifact named like the family (a Hub checkpoint imported as "bert") does not
    # hide the default that `zoo default` set; without a default, the name is the artifact.
    registry.tag(src.name, "bert")
    by_family = registry.materialize("bert", layers=2, hidden=16).artifact
    assert by_family.info["recipe"]["learngene"] == two.content_hash
    registry.tag(gpt.name, "gpt2")
    assert (
        registry.materialize("gpt2", layers=2, hidden=16).artifact.info["recipe"]["learngene"]
        == gpt.content_hash
    )
    with pytest.raises(InvalidInputError, match=f"or name the source {src.name}."):
        registry.materialize("bert", layers=2, hidden=16, method="dwt")


def test_a_source_named_like_its_family_is_reached_by_its_hash_once_a_default_is_set(
    registry, tiny_dir, run_cli
):
    """`zoo default` makes the family name mean the default, also where a source has that
    name (a folder imported as `gpt2`): it says so, and an error that names the source
    gives its hash prefix, which reaches it, not the name that now means the default."""
    src = registry.import_checkpoint(tiny_dir("gpt2"), name="gpt2")
    dct = registry.extract(src.name, method="dct")
    code, out, err = run_cli("default", "gpt2", dct.name)
    assert code == 0 and out == f"gpt2 -> {dct.name}\n", err
    assert err == (
        f"note: `zoo materialize gpt2` means {dct.name} now; the source gpt2 is "
        f"`zoo materialize {src.content_hash[:12]}`\n"
    )
    with pytest.raises(InvalidInputError, match=f"or name the source {src.content_hash[:12]}."):
        registry.materialize("gpt2", layers=2, hidden=16, method="dwt")
    kept = registry.materialize(src.content_hash[:12], layers=2, hidden=16, method="dwt")
    assert kept.artifact.info["recipe"]["learngene"] is None
    assert run_cli("default", "gpt2", dct.name)[2].startswith("note:")  # every time


def test_an_alias_named_like_a_family_with_a_default_says_what_materialize_reaches(
    registry, tiny_dir, run_cli
):
    """`zoo tag SOURCE bert` where bert has a default: `zoo materialize bert` goes on meaning
    the default, so the tag says so, and which name reaches the tagged one. `zoo default
    FAMILY` alone prints the default set, as materialize reads it."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    dwt = registry.extract(src.name, method="dwt")
    code, out, err = run_cli("default", "bert")
    assert (code, out, err) == (0, "bert: no default set\n", "")
    assert run_cli("default", "Bert", dwt.name)[0] == 0
    code, out, err = run_cli("default", "BERT", "--json")
    assert code == 0 and json.loads(out)["learngene"]["name"] == dwt.name, err
    assert json.loads(out)["family"] == "bert"
    code, out, err = run_cli("tag", src.name, "bert")
    assert (code, out) == (0, f"bert -> {src.name}\n"), err
    assert err == (
        f"note: `zoo materialize bert` means the family's default, {dwt.name} "
        f"(`zoo default`); {src.name} is `zoo materialize {src.name}`\n"
    )
    made = registry.materialize("bert", layers=2, hidden=16).artifact
    assert made.info["recipe"]["learngene"] == dwt.content_hash  # what the note said
    assert run_cli("tag", dwt.name, "bert")[2] == ""  # the default itself: nothing to say
    assert run_cli("tag", src.name, "BERT")[2] == ""  # not the family's name as it is read
    registry.rm(dwt.name, cascade=True)
    assert registry.family_default("bert") is None  # removed: materialize no longer uses it
    assert run_cli("tag", src.name, "bert")[2] == ""


def test_a_default_takes_its_family_in_any_case(registry, tiny_dir, run_cli):
    """`zoo default BERT` sets bert's default, as `zoo ls --family BERT` lists bert's
    checkpoints: it says so under the family's own name, which `zoo materialize` takes."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    dwt = registry.extract(src.name, method="dwt")
    dct = registry.extract(src.name, method="dct")
    code, out, err = run_cli("default", "BERT", dct.name)
    assert (code, out) == (0, f"bert -> {dct.name}\n"), err
    made = registry.materialize("bert", layers=2, hidden=16).artifact
    assert made.info["recipe"]["learngene"] == dct.content_hash
    assert registry.set_default("Bert", dwt.name).name == dwt.name
    made = registry.materialize("bert", layers=2, hidden=8).artifact
    assert made.info["recipe"]["learngene"] == dwt.content_hash


def test_lineage_marks_removed_artifacts(registry, tiny_dir):
    src = registry.import_checkpoint(tiny_dir("bert"))
    small = registry.materialize(src.name, layers=2, hidden=16).artifact
    registry.rm(small.name)
    graph = registry.lineage(src.name)
    assert f"--materialize--> {small.name} (removed)" in graph.to_text()
    assert f"{small.name} (removed) (derived)" in graph.to_mermaid()
    assert f"{src.name} (removed)" not in graph.to_text() + graph.to_dot()


def test_lineage_text_tells_seeds_and_dtypes_apart(registry, tiny_dir):
    """Two seeds of a method that draws, or two dtypes, are two different edges."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    made = [
        registry.materialize(src.name, layers=6, hidden=48, method="net2net", seed=s).artifact
        for s in (1, 2)
    ]
    made += [
        registry.materialize(src.name, layers=2, hidden=16, dtype=d).artifact
        for d in ("bfloat16", "float16")
    ]
    lines = {
        line.split("--> ")[1].split()[0]: line
        for line in registry.lineage(src.name, up=False).to_text().splitlines()
        if "-->" in line
    }
    assert "[method=net2net, seed=1," in lines[made[0].name]
    assert "[method=net2net, seed=2," in lines[made[1].name]
    assert "dtype=bfloat16, device=cpu]" in lines[made[2].name]
    assert "dtype=float16, device=cpu]" in lines[made[3].name]
    assert "seed=" not in lines[made[2].name]  # weight selection draws nothing


def _materialize_by_tiled_heads(registry, monkeypatch, name: str, **request):
    """``registry.materialize(name, **request)`` as a zoo recorded it before HyperCloning
    kept each query head's key/value head: derived by that rule (hypercloning_version 1),
    its edge naming no version."""
    import dataclasses

    from zoo.api import materialize as mat
    from zoo.api import record

    real_plan, real_recipe = mat.make_plan, record.edge_recipe

    def unversioned(*a, **k):
        recipe = real_recipe(*a, **k)
        del recipe["hypercloning_version"]
        return recipe

    with monkeypatch.context() as m:
        m.setattr(
            mat,
            "make_plan",
            lambda *a, **k: dataclasses.replace(real_plan(*a, **k), hypercloning_version=1),
        )
        m.setattr(record, "edge_recipe", unversioned)
        return registry.materialize(name, **request)


def test_lineage_text_names_the_earlier_rule_a_checkpoint_was_recorded_by(
    registry, tmp_path, monkeypatch
):
    """A HyperCloning checkpoint recorded before its edges named a version (key/value
    heads tiled), beside the one the same request makes now: the text named both
    `[method=hypercloning, rescale=none, device=cpu]`, two children of one parent that
    nothing told apart. The earlier one names its rule, hypercloning_version=1; the
    current one, by this zoo's rule, names none."""
    folder = save_tiny("llama", tmp_path / "src", num_attention_heads=8, num_key_value_heads=2)
    src = registry.import_checkpoint(folder)
    request = dict(layers=4, hidden=32, kv_heads=4, method="hypercloning")
    old = _materialize_by_tiled_heads(registry, monkeypatch, src.name, **request).artifact
    now = registry.materialize(src.name, **request).artifact
    assert now.content_hash != old.content_hash
    lines = {
        line.split("--> ")[1].split()[0]: line
        for line in registry.lineage(src.name, up=False).to_text().splitlines()
        if "-->" in line
    }
    assert lines[old.name].endswith(
        "[method=hypercloning, rescale=none, hypercloning_version=1, device=cpu]"
    )
    assert lines[now.name].endswith("[method=hypercloning, rescale=none, device=cpu]")


def test_link_declares_finetune_edges(registry, tiny_dir, run_cli):
    base = registry.import_checkpoint(tiny_dir("bert"))
    tuned = registry.import_checkpoint(tiny_dir("bert", seed=1), name="bert-tuned")
    code, _, err = run_cli("link", "bert-tuned", "--from", base.name, "--relation", "finetune")
    assert code == 0, err
    code, out, _ = run_cli("lineage", tuned.name, "--up", "--format", "json")
    edges = json.loads(out)["edges"]
    assert [(e["parent"], e["relation"]) for e in edges] == [(base.name, "finetune")]
    # --up and --down together: ancestors and descendants, as with neither flag.
    for flags, parents in [(("--down",), []), (("--up", "--down"), [base.name]), ((), [base.name])]:
        code, out, _ = run_cli("lineage", tuned.name, *flags, "--format", "json")
        assert [e["parent"] for e in json.loads(out)["edges"]] == parents, flags
    code, _, err = run_cli("link", base.name, "--from", "bert-tuned")
    assert code == 2 and "cycle" in err


def test_hypercloning_asks_a_whole_multiple_of_the_layers_unless_they_are_identities(
    registry, tiny_dir
):
    """As README and docs/transforms.md say: HyperCloning stacks the whole source again,
    so --method hypercloning refuses 4 -> 6 layers as it refuses any size that is not a
    whole multiple; --depth identity adds the 2 layers as identities (any count) and
    tiles the width; left to the defaults, 4x32 -> 6x64 takes the best dwt recipe."""
    src = registry.import_checkpoint(tiny_dir("llama"))
    with pytest.raises(InvalidTargetError, match="not layers 4 -> 6"):
        registry.materialize(src.name, layers=6, hidden=64, method="hypercloning")
    deep = registry.materialize(
        src.name, layers=6, hidden=64, method="hypercloning", depth="identity"
    )
    assert deep.config["num_hidden_layers"] == 6
    (edge,) = registry.lineage(
        registry.materialize(src.name, layers=6, hidden=64).artifact.name, down=False
    ).edges
    assert edge.recipe["method"] == "dwt"


def test_a_function_keeping_method_warns_where_the_target_regroups_the_heads(
    registry, tiny_dir, tmp_path, run_cli
):
    """--heads and --kv-heads that change head_dim (8 heads of 4 from 4 of 8 at hidden 32,
    or 4 heads of 16 at hidden 64) regroup the attention matrices' rows into other heads,
    which no method undoes. HyperCloning and net2net, documented as keeping the source's
    function, say so in one line on stderr, exit 0 (and in --json's warnings); transformers
    confirms the logits move. Heads copied whole (key/value heads grown alone) and the
    methods that promise no function (dwt) are not warned about."""
    import json

    src = registry.import_checkpoint(tiny_dir("llama"))  # 4 heads of 8, 2 key/value heads
    regroup = ("--layers", "4", "--hidden", "32", "--heads", "8", "--kv-heads", "4")
    code, out, err = run_cli("materialize", src.name, *regroup, "--method", "hypercloning")
    assert code == 0 and out.count("\n") == 1, err
    assert err == (
        "warning: 8 attention heads of 4 from the source's 4 of 8 regroup the attention "
        "matrices' rows into other heads: this hypercloning result will not compute the "
        "source's function (heads of 8 would: --heads 4)\n"
    )
    code, out, err = run_cli("materialize", src.name, *regroup, "--method", "net2net", "--json")
    assert code == 0 and err.count("\n") == 1 and "this net2net result" in err, err
    assert json.loads(out)["warnings"] == [err.removeprefix("warning: ").rstrip("\n")]
    for quiet in (("--method", "dwt"), ("--method", "hypercloning", "--kv-heads", "4")):
        args = regroup[:4] if "--kv-heads" in quiet else regroup
        code, out, err = run_cli("materialize", src.name, *args, *quiet, "--json")
        assert code == 0 and err == "" and json.loads(out)["warnings"] == [], (quiet, err)

    wide = registry.materialize(
        src.name,
        layers=4,
        hidden=64,
        heads=4,
        kv_heads=2,
        method="hypercloning",
        out=tmp_path / "wide",
    )
    assert wide.warnings == (
        "4 attention heads of 16 from the source's 4 of 8 regroup the attention matrices' "
        "rows into other heads: this hypercloning result will not compute the source's "
        "function (heads of 8 would: heads=8)",
    )
    ids = torch.tensor([[1, 5, 7, 9, 2, 4, 4, 8, 11, 3]])
    with torch.no_grad():
        before = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir("llama"))(ids).logits
        after = transformers.AutoModelForCausalLM.from_pretrained(wide.out)(ids).logits
    assert float((after - before).abs().max() / before.abs().max()) > 0.1


def test_bad_requests_fail_cleanly(registry, tiny_dir, tmp_path, run_cli):
    src = registry.import_checkpoint(tiny_dir("bert"))
    with pytest.raises(InvalidTargetError, match="dwt, dct, hypercloning or net2net"):
        registry.materialize(src.name, layers=8, hidden=64, method="weight-selection")
    with pytest.raises(InvalidTargetError, match="integer multipliers"):
        registry.materialize(src.name, layers=4, hidden=48, method="hypercloning")
    with pytest.raises(InvalidTargetError):
        registry.materialize(src.name, layers=0, hidden=16)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError):
            registry.materialize(src.name, layers=2, hidden=16, device="cuda")
        code, out, err = run_cli(
            "materialize", src.name, "--layers", "2", "--hidden", "16", "--device", "cuda"
        )
        assert code == 7 and out == "" and err.count("\n") == 1
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ConflictError, match="force=True"):
        registry.materialize(src.name, layers=2, hidden=16, out=full)
    with pytest.raises(ConflictError, match="not written by zoo"):
        registry.materialize(src.name, layers=2, hidden=16, out=full, force=True)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    assert (full / "keep.txt").read_text() == "mine"
    mine = tmp_path / "mine"
    registry.materialize(src.name, layers=2, hidden=16, out=mine)
    registry.materialize(src.name, layers=2, hidden=32, out=mine, force=True)
    assert json.loads((mine / "config.json").read_text())["hidden_size"] == 32
    code, out, err = run_cli("materialize", src.name, "--layers", "2", "--hidden", "16", "--force")
    assert code == 2 and out == "" and "give --out" in err and err.count("\n") == 1
    code, _, err = run_cli("materialize", "bret", "--layers", "2", "--hidden", "16")
    assert code == 3 and "bert" in err


def test_a_virtual_checkpoint_is_rederived_to_serve_as_a_parent(
    registry, tiny_dir, tmp_path, run_cli
):
    """Materializing from a virtual checkpoint re-derives its weights (verified) first.
    Reference: the same recipe run in a second registry on the checkpoint's written files."""
    from zoo import Registry
    from zoo.config import load_settings

    src = registry.import_checkpoint(tiny_dir("bert"))  # 4 x 32
    # Another size than the source, so none of its tensors is one of the source's blobs.
    mid = registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "mid")
    assert mid.artifact.virtual
    kw = dict(layers=4, hidden=32, method="dwt", wavelet="db2", rescale="fan")
    small = registry.materialize(mid.artifact.name, **kw)
    up = registry.lineage(small.artifact.name, down=False)
    assert {(up.nodes[e.parent_id].name, up.nodes[e.child_id].name) for e in up.edges} == {
        (src.name, mid.artifact.name),
        (mid.artifact.name, small.artifact.name),
    }

    db = f"sqlite:///{tmp_path / 'other.db'}"
    other = Registry(load_settings(db_url=db, store_url=str(tmp_path / "other-blobs")))
    copy = other.import_checkpoint(tmp_path / "mid")
    want = other.materialize(copy.name, **kw)
    assert small.artifact.content_hash == want.artifact.content_hash
    # Re-deriving the grandchild re-derives mid on the way. It needs the source's blobs
    # only: verify checks those (not mid's, which were never stored) and gc keeps them.
    assert (
        registry.rederive(small.artifact.name).artifact.content_hash == want.artifact.content_hash
    )
    code, out, err = run_cli("verify", small.artifact.name, "--json")
    assert code == 0, err
    assert json.loads(out)["checked"] == len({t.digest for t in src.tensors})
    code, _, err = run_cli("gc", "--grace", "0s")
    assert code == 0, err
    assert (
        registry.rederive(small.artifact.name).artifact.content_hash == want.artifact.content_hash
    )
    # A learngene can be extracted from it too (its weights re-derived and verified
    # first): the same bands as from its written files in the other registry.
    code, out, err = run_cli("extract", mid.artifact.name, "--wavelet", "haar", "--json")
    assert code == 0, err
    lg = registry.show(json.loads(out)["name"])
    want_lg = other.extract(copy.name, wavelet="haar")
    bands = {t.name: t.digest for t in lg.tensors}
    assert bands == {t.name: t.digest for t in want_lg.tensors} and len(bands) > 10
    grand = registry.materialize(lg.name, layers=1, hidden=8)
    want_grand = other.materialize(want_lg.name, layers=1, hidden=8)
    assert grand.artifact.content_hash == want_grand.artifact.content_hash


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_virtual_parent_recorded_on_an_absent_device_is_explained(
    registry, tiny_dir, run_cli, tmp_path
):
    """Its bits exist only on its recorded device: the error names it and the way out
    (not "use --device cpu" to a user who did)."""
    from sqlalchemy import select

    from zoo.db.models import Edge

    src = registry.import_checkpoint(tiny_dir("bert"))
    mid = registry.materialize(src.name, layers=2, hidden=16).artifact

    def made_on_a_gpu(session) -> None:
        edge = session.scalar(select(Edge).where(Edge.child_id == mid.id))
        edge.recipe_json = json.dumps({**json.loads(edge.recipe_json), "device": "cuda"})

    registry.transaction(made_on_a_gpu)
    args = ["materialize", mid.name, "--layers", "1", "--hidden", "8", "--device", "cpu"]
    code, out, err = run_cli(*args)
    assert code == 7 and out == "" and err.count("\n") == 1, err
    assert mid.name in err and "derived on cuda" in err and "--store" in err, err
    code, out, err = run_cli("extract", mid.name)  # the same for extracting from it
    assert code == 7 and out == "" and "derived on cuda" in err and "--store" in err, err
    code, _, err = run_cli("rederive", mid.name)
    assert code == 7 and "derived on cuda" in err and "--device cpu" in err, err
    # An export takes no device: it names the call that does (it said "pass device='cpu'"
    # to reg.export, and "--device cpu" to `zoo export`, which has no such option).
    out = tmp_path / "out"
    with pytest.raises(DeviceUnavailableError) as refused:
        registry.export(mid.name, out=out)
    said = f"or here with `reg.rederive({mid.name!r}, device='cpu')`, with out= to write it"
    assert said in str(refused.value), refused.value
    code, _, err = run_cli("export", mid.name, "--out", str(out))
    said = f"or here with `zoo rederive {mid.name} --device cpu`, with --out to write it"
    assert code == 7 and said in err and err.count("\n") == 1, err
    # What it names does it.
    code, _, err = run_cli("rederive", mid.name, "--device", "cpu", "--out", str(out))
    assert code == 0 and (out / "config.json").is_file(), err
    assert registry.rederive(mid.name, device="cpu").artifact.name == mid.name


def _outputs_journal(registry):
    from zoo.db import queries

    with registry.session() as session:
        return queries.outputs_on(session, socket.gethostname())


def test_interrupted_materialization_leaves_no_partial_folder_and_no_row(
    registry, tiny_dir, tmp_path, monkeypatch
):
    """Ctrl-C while tensors stream into the folder: no folder, no temporary folder, no
    derived row, no journal entry."""
    from zoo.api import export

    src = registry.import_checkpoint(tiny_dir("bert"))
    real, calls = export.OutputFolder.put, []

    def interrupted_after_the_first_tensor(self, name, data):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(self, name, data)

    monkeypatch.setattr(export.OutputFolder, "put", interrupted_after_the_first_tensor)
    with pytest.raises(KeyboardInterrupt):
        registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "out")
    # Interrupted while writing tensor data: the other workers stop after their tensor.
    assert 2 <= len(calls) < len(registry.show(src.name).tensors)
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == []
    assert registry.list(kind="derived") == []
    assert _outputs_journal(registry) == []


def _signal_after_commit(monkeypatch, signum: int) -> None:
    """Send this process ``signum`` the moment an output folder is renamed into place,
    before its row is written: the late interrupt the rename and its row hold back."""
    from zoo.api import export

    real = export.OutputFolder.commit

    def commit_then_signal(self, **kwargs):
        path = real(self, **kwargs)
        os.kill(os.getpid(), signum)
        return path

    monkeypatch.setattr(export.OutputFolder, "commit", commit_then_signal)


def test_a_late_ctrl_c_gives_the_folder_and_its_row_together(
    registry, tiny_dir, tmp_path, monkeypatch, run_cli
):
    """A SIGINT that arrives while the finished folder is renamed into place is acted on
    once its row is written too: both exist, or (earlier) neither; and the command says
    what it kept, not just "aborted"."""
    from zoo.errors import InterruptedAfterWriting

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    _signal_after_commit(monkeypatch, signal.SIGINT)
    out = tmp_path / "out"
    with pytest.raises(InterruptedAfterWriting):
        registry.materialize(src.name, layers=2, hidden=16, out=out)
    (derived,) = registry.list(kind="derived")
    meta = json.loads(safe_open(out / "model.safetensors", "pt").metadata()["zoo.derived"])
    assert meta == {"name": derived.name, "content_hash": derived.content_hash}
    assert _outputs_journal(registry) == []
    code, out_text, err = run_cli(
        "materialize", src.name, "--layers", "1", "--hidden", "16", "--out", str(tmp_path / "o")
    )
    assert (code, out_text) == (130, "")
    assert err.strip() == (  # after the line click ends the terminal's "^C" with
        "zoo: interrupted after the output folder and its record were complete: both are kept"
    )
    assert (tmp_path / "o" / "model.safetensors").is_file()


def test_a_late_sigterm_is_held_back_as_ctrl_c_is(registry, tiny_dir, tmp_path, monkeypatch):
    """The `zoo` process ends on SIGTERM as on Ctrl-C, and one that arrives while the
    finished folder is renamed into place waits, as Ctrl-C does, until its row is written:
    the folder and its record both exist."""
    from zoo_cli import main as cli_main

    from zoo.errors import InterruptedAfterWriting

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    _signal_after_commit(monkeypatch, signal.SIGTERM)
    monkeypatch.setattr(cli_main, "_terminated", [])
    previous = signal.signal(signal.SIGTERM, cli_main._terminate)  # as `command()` sets it
    try:
        with pytest.raises(InterruptedAfterWriting):
            registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "out")
    finally:
        signal.signal(signal.SIGTERM, previous)
    (derived,) = registry.list(kind="derived")
    meta = json.loads(
        safe_open(tmp_path / "out" / "model.safetensors", "pt").metadata()["zoo.derived"]
    )
    assert meta == {"name": derived.name, "content_hash": derived.content_hash}
    assert _outputs_journal(registry) == []


def test_out_folders_a_rename_cannot_swap_are_refused_in_one_line(
    registry, tiny_dir, tmp_path, monkeypatch, run_cli
):
    src = registry.import_checkpoint(tiny_dir("bert"))
    here = tmp_path / "work" / "empty"
    here.mkdir(parents=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "full")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    monkeypatch.chdir(here)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for out, phrase in (
        (".", "current folder"),
        ("..", "current folder or one above"),
        (str(tmp_path / "link"), "symbolic link"),
        (str(tmp_path / "dangling"), "symbolic link"),
    ):
        code, stdout, err = run_cli(
            "materialize", src.name, "--layers", "2", "--hidden", "16", "--out", out, "--force"
        )
        assert code == 2 and stdout == "" and phrase in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing left behind
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("family", ["gpt2", "bert"])
@pytest.mark.parametrize(("layers", "hidden"), [(2, 16), (8, 64)])
def test_unspecified_settings_take_the_measured_defaults(
    registry, tiny_dir, family, layers, hidden
):
    from zoo.defaults import default_recipe

    src = registry.import_checkpoint(tiny_dir(family))
    m = registry.materialize(src.name, layers=layers, hidden=hidden)
    source_sizes = {"layers": 4, "hidden": 32}
    want = default_recipe(family, source_sizes, {"layers": layers, "hidden": hidden})
    recipe = m.artifact.info["recipe"]
    got = (recipe["method"], recipe["wavelet"], recipe["rescale"], recipe.get("norm", "method"))
    assert got == want[:4]
    deeper = layers > source_sizes["layers"]
    assert recipe.get("depth", "method") == (want.depth if deeper else "method")
    # The paper-faithful setting stays one flag away.
    raw = registry.materialize(src.name, layers=layers, hidden=hidden, method="dwt", rescale="none")
    assert raw.artifact.info["recipe"]["rescale"] == "none"
    # --method dwt where the table's method is not dwt: extract's wavelet, db2.
    assert raw.artifact.info["recipe"]["wavelet"] == "db2"
    assert m.artifact.info["recipe"]["device"] == "cpu"  # ZOO_DEVICE=cpu (conftest)


def test_a_method_asked_alone_takes_its_best_measured_recipe(registry, tiny_dir):
    """The default grow is HyperCloning; --method dwt alone gets dwt's best measured grow
    recipe (zoo/defaults.py BY_METHOD), not raw coefficients, and a size HyperCloning
    cannot make (no integer multiple) gets the same dwt recipe."""
    src = registry.import_checkpoint(tiny_dir("bert"))  # 4 x 32
    plain = registry.materialize(src.name, layers=8, hidden=64).artifact.info["recipe"]
    assert plain["method"] == "hypercloning"
    for kw in ({"method": "dwt"}, {}):
        size = {"layers": 8, "hidden": 64} if kw else {"layers": 6, "hidden": 48}
        recipe = registry.materialize(src.name, **size, **kw).artifact.info["recipe"]
        got = (recipe["method"], recipe["wavelet"], recipe["rescale"], recipe.get("depth"))
        assert got == ("dwt", "db2", "fan", "identity"), kw


def test_the_gpu_is_the_default_device_when_there_is_one(monkeypatch):
    from zoo.api.tensors import resolve_device

    monkeypatch.delenv("ZOO_DEVICE")
    if not torch.cuda.is_available():
        assert resolve_device(None, prefer_gpu=True).type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None, prefer_gpu=True).type == "cuda"
    assert resolve_device(None).type == "cpu"  # extract keeps the CPU: one learngene per source
    assert resolve_device("cpu", prefer_gpu=True).type == "cpu"
    monkeypatch.setenv("ZOO_DEVICE", "cpu")  # pins the default on a GPU machine
    assert resolve_device(None, prefer_gpu=True).type == "cpu"
    assert resolve_device("cuda", prefer_gpu=True).type == "cuda"  # an explicit device wins


def test_a_float16_target_whose_values_pass_its_range_is_refused(registry, tmp_path, run_cli):
    """float16 holds up to 65504: a weight past it would be written as inf. Refused in one
    line naming the tensor, nothing recorded and no folder; bfloat16 holds it."""
    from safetensors.torch import load_file, save_file

    folder = save_tiny("gpt2", tmp_path / "src")
    tensors = load_file(folder / "model.safetensors")
    key = "transformer.h.0.mlp.c_fc.weight"
    tensors[key][0, 0] = 1e6
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    src = registry.import_checkpoint(folder)
    for out in (None, tmp_path / "f16"):
        with pytest.raises(InvalidTargetError, match=f"{key} holds values past float16"):
            registry.materialize(src.name, layers=2, hidden=16, dtype="float16", out=out)
    assert not (tmp_path / "f16").exists() and registry.list(kind="derived") == []
    size = ("materialize", src.name, "--layers", "2", "--hidden", "16")
    code, out, err = run_cli(*size, "--dtype", "float16", "--out", str(tmp_path / "f16"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "bfloat16" in err
    made = registry.materialize(src.name, layers=2, hidden=16, dtype="bfloat16")
    assert torch.isfinite(made.state_dict[key]).all()
    # A float16 source: its own dtype (auto) is float16 too, and a learngene's bands grow
    # a smooth signal's values (sqrt(2) per halved axis): both refused, not stored as inf.
    tensors = {n: t.half() for n, t in load_file(folder / "model.safetensors").items()}
    for name in tensors:  # every layer's, so that a band over layers passes the range too
        if name.endswith("mlp.c_fc.weight"):
            tensors[name] = torch.full_like(tensors[name], 40000.0)
    half = tmp_path / "half"
    shutil.copytree(folder, half)
    save_file(tensors, half / "model.safetensors", metadata={"format": "pt"})
    src16 = registry.import_checkpoint(half)
    with pytest.raises(InvalidInputError, match=r"band of .* passes float16.s range"):
        registry.extract(src16.name, method="dwt", wavelet="haar", levels=1)
    hidden = src16.config["n_embd"] // 2  # a raw shrink grows values by sqrt(2) per axis
    with pytest.raises(InvalidTargetError, match=r"mlp\.c_fc\.weight holds values past float16"):
        registry.materialize(src16.name, layers=2, hidden=hidden, method="dwt", rescale="none")
    assert registry.list(kind="learngene") == []
    assert [a.name for a in registry.list(kind="derived")] == [made.artifact.name]
    # A source's own inf is its own: a size keeping that tensor whole is not refused.
    bias = "transformer.h.0.attn.c_attn.bias"
    tensors = {n: t.half() for n, t in load_file(folder / "model.safetensors").items()}
    tensors[bias][3] = float("inf")
    inf_dir = tmp_path / "inf"
    shutil.copytree(folder, inf_dir)
    save_file(tensors, inf_dir / "model.safetensors", metadata={"format": "pt"})
    src_inf = registry.import_checkpoint(inf_dir)
    layers, width = src_inf.config["n_layer"], src_inf.config["n_embd"]
    same = registry.materialize(src_inf.name, layers=layers, hidden=width)
    assert torch.isinf(same.state_dict[bias]).any()


def test_a_device_error_names_where_the_device_came_from(monkeypatch):
    """$ZOO_DEVICE is set once and forgotten: an error caused by it says so."""
    from zoo.api.tensors import resolve_device

    monkeypatch.setenv("ZOO_DEVICE", "tpu")
    with pytest.raises(InvalidInputError, match=r"^\$ZOO_DEVICE 'tpu' is not a torch device"):
        resolve_device(None)
    with pytest.raises(InvalidInputError, match=r"^'bogus' is not a torch device"):
        resolve_device("bogus")  # an explicit device is what was given
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ZOO_DEVICE", "cuda")
    with pytest.raises(DeviceUnavailableError, match=r"\$ZOO_DEVICE 'cuda' was requested"):
        resolve_device(None)


def test_a_default_norm_rule_goes_only_with_its_recipe(registry, tiny_dir, monkeypatch):
    from zoo import defaults

    table = dict(defaults.DEFAULTS)
    table[("gpt2", "l2s")] = defaults.Default("dwt", "db2", "none", "match")
    monkeypatch.setattr(defaults, "DEFAULTS", table)
    src = registry.import_checkpoint(tiny_dir("gpt2"))

    def recipe(**kw):
        m = registry.materialize(src.name, layers=2, hidden=16, **kw)
        return m.artifact.info["recipe"]

    assert recipe()["norm"] == "match"  # the default recipe, with its norm rule
    assert "norm" not in recipe(rescale="fan")  # another recipe: the method's own rule
    assert "norm" not in recipe(method="weight-selection")
    assert "norm" not in recipe(norm="method")  # asked for explicitly


def test_rescaled_l2s_from_bands_matches_the_source_path(registry, tiny_dir):
    """With std/fan/exact amplitude, a learngene's stored band gives what resizing the
    source gives (the band is used; the source is not re-read)."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    lg = registry.extract(src.name, method="dwt", wavelet="haar", levels=1)
    for rescale in ("std", "fan", "exact"):
        a = registry.materialize(lg.name, layers=2, hidden=16, rescale=rescale).state_dict
        b = registry.materialize(
            src.name, layers=2, hidden=16, method="dwt", wavelet="haar", rescale=rescale
        ).state_dict
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_a_dct_learngene_applies_the_requested_amplitude(registry, tiny_dir):
    """--rescale std / fan / fan-sqrt on a FRONT learngene: every matrix signal comes out
    with the source signal's std (std), divided by its fan-in multiplier (fan) or by its
    square root (fan-sqrt); each rule is its own derived checkpoint. The source's
    statistics are computed here from its file."""
    from safetensors.torch import load_file

    from zoo.families import get_family

    src = registry.import_checkpoint(tiny_dir("bert"))  # 4 x 32
    lg = registry.extract(src.name, method="dct", keep=0.5)
    family = get_family("bert")
    config = json.loads((tiny_dir("bert") / "config.json").read_text())
    source = family.to_signals(load_file(tiny_dir("bert") / "model.safetensors"), config)
    results = {
        rescale: registry.materialize(lg.name, layers=8, hidden=64, rescale=rescale)
        for rescale in ("none", "std", "fan", "fan-sqrt")
    }
    assert len({r.artifact.id for r in results.values()}) == 4
    signals = {k: family.to_signals(r.state_dict, r.config) for k, r in results.items()}
    key = "attn.q.weight"  # (layers, hidden out, hidden in); fan-in grows x2
    assert source[key].kind == "linear"
    want = source[key].tensor.double().std(correction=0)
    got = {k: s[key].tensor.double().std(correction=0) for k, s in signals.items()}
    assert abs(got["none"] / want - 1) > 0.2  # the raw block is off: rescaling matters
    torch.testing.assert_close(got["std"], want, rtol=1e-3, atol=0)
    torch.testing.assert_close(got["fan"], want / 2, rtol=1e-3, atol=0)
    torch.testing.assert_close(got["fan-sqrt"], want / 2**0.5, rtol=1e-3, atol=0)


def test_a_dct_checkpoint_recorded_under_the_old_amplitude_rule_still_re_derives(
    registry, tiny_dir, monkeypatch
):
    """zoo's FRONT rule once applied --rescale std/fan to norm layers only, under the same
    transform version as today's. A virtual checkpoint recorded then still
    re-derives and verifies (the old rule is tried when the current one gives other
    bytes, and kept only if it gives the recorded ones), and still serves as a parent."""
    import dataclasses

    from zoo.api import materialize as mat
    from zoo.api.plan import Plan
    from zoo.transforms import TRANSFORM_VERSION

    src = registry.import_checkpoint(tiny_dir("bert"))
    lg = registry.extract(src.name, method="dct", keep=0.5)
    real_plan = mat.make_plan

    def old_plan(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        return dataclasses.replace(plan, legacy_front_amplitude=True, legacy_whole_moments=True)

    # What the old code derived and recorded, under transform version 3.
    monkeypatch.setattr(mat, "make_plan", old_plan)
    monkeypatch.setattr("zoo.transforms.TRANSFORM_VERSION", "3")
    old = registry.materialize(lg.name, layers=8, hidden=64, rescale="std")
    monkeypatch.setattr(mat, "make_plan", real_plan)
    monkeypatch.setattr("zoo.transforms.TRANSFORM_VERSION", TRANSFORM_VERSION)
    assert old.artifact.virtual
    # Another seed (unused by dct) so the recipe is not the recorded one.
    now = registry.materialize(lg.name, layers=8, hidden=64, rescale="std")
    assert now.artifact.content_hash != old.artifact.content_hash  # the rules differ
    again = registry.rederive(old.artifact.name)
    assert again.artifact.content_hash == old.artifact.content_hash
    for name, t in old.state_dict.items():
        assert torch.equal(again.state_dict[name], t), name
    child = registry.materialize(old.artifact.name, layers=8, hidden=64, method="weight-selection")
    assert child.config["num_hidden_layers"] == 8
    # The current rule re-derives as before; raw blocks never had two rules.
    assert registry.rederive(now.artifact.name).artifact.content_hash == now.artifact.content_hash
    assert not mat._maybe_legacy_front(
        Plan(lg, src, lg, mat.Recipe(method="dct"), {}), {"transform_version": "3"}
    )


def _grown_under_amplitude_version(registry, monkeypatch, name: str, version: int, **recipe):
    """``name`` grown 4 layers x 64 (by HyperCloning, or ``recipe``) and recorded as zoo
    recorded it under amplitude version ``version``."""
    import dataclasses

    from zoo.api import materialize as mat

    real_plan = mat.make_plan

    def old_plan(*args, **kwargs):
        return dataclasses.replace(real_plan(*args, **kwargs), amplitude_version=version)

    monkeypatch.setattr(mat, "make_plan", old_plan)
    monkeypatch.setattr("zoo.methods.amplitude.AMPLITUDE_VERSION", str(version))
    try:
        return registry.materialize(
            name, layers=4, hidden=64, **{"method": "hypercloning", **recipe}
        )
    finally:
        monkeypatch.undo()


def test_a_checkpoint_recorded_before_heads_had_a_fan_in_re_derives_by_that_rule(
    registry, tiny_dir, monkeypatch
):
    """Under amplitude version 1 an untied output head's input width was no fan-in (a
    grown head doubled the logits). A virtual checkpoint recorded then re-derives by that
    rule (its edge has no amplitude version) and verifies; one recorded now divides."""
    src = registry.import_checkpoint(tiny_dir("llama"))
    old = _grown_under_amplitude_version(registry, monkeypatch, src.name, 1)
    graph = registry.lineage(old.artifact.name, down=False)
    (edge,) = graph.edges
    assert edge.recipe["amplitude_version"] == "1"
    now = registry.materialize(src.name, layers=4, hidden=64, method="hypercloning")
    assert now.artifact.content_hash != old.artifact.content_hash
    assert torch.equal(old.state_dict["lm_head.weight"], 2 * now.state_dict["lm_head.weight"])
    again = registry.rederive(old.artifact.name)
    assert again.artifact.content_hash == old.artifact.content_hash
    assert registry.rederive(now.artifact.name).artifact.content_hash == now.artifact.content_hash


def test_a_tied_head_checkpoint_recorded_before_its_norm_had_a_fan_in_re_derives_by_that_rule(
    registry, tiny_dir, monkeypatch
):
    """Under amplitude version 2 the final norm of a model whose head is tied to the
    embeddings was tiled undivided (HyperCloning doubled its logits). A virtual checkpoint
    recorded then re-derives by that rule and verifies; one recorded now halves ln_f."""
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    old = _grown_under_amplitude_version(registry, monkeypatch, src.name, 2)
    (edge,) = registry.lineage(old.artifact.name, down=False).edges
    assert edge.recipe["amplitude_version"] == "2"
    now = registry.materialize(src.name, layers=4, hidden=64, method="hypercloning")
    (edge,) = registry.lineage(now.artifact.name, down=False).edges
    assert edge.recipe["amplitude_version"] == AMPLITUDE_VERSION
    for key in ("transformer.ln_f.weight", "transformer.ln_f.bias"):
        assert torch.equal(old.state_dict[key], 2 * now.state_dict[key]), key
    assert torch.equal(
        old.state_dict["transformer.wte.weight"], now.state_dict["transformer.wte.weight"]
    )
    again = registry.rederive(old.artifact.name)
    assert again.artifact.content_hash == old.artifact.content_hash
    assert registry.rederive(now.artifact.name).artifact.content_hash == now.artifact.content_hash


def test_a_tied_copy_checkpoint_recorded_before_copies_were_read_as_tied_re_derives_by_that_rule(
    registry, tiny_dir, tmp_path, monkeypatch
):
    """Under amplitude version 5 an LM head stored beside its tied embedding with the same
    bytes was derived as an untied head (halved by HyperCloning, under a config that still
    said tied). A virtual checkpoint recorded then re-derives by that rule and verifies;
    one recorded now is tied: no head, the final norm halved instead."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "dup"
    shutil.copytree(tiny_dir("qwen2"), folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    src = registry.import_checkpoint(folder)
    old = _grown_under_amplitude_version(registry, monkeypatch, src.name, 5)
    now = registry.materialize(src.name, layers=4, hidden=64, method="hypercloning")
    assert "lm_head.weight" in old.state_dict and "lm_head.weight" not in now.state_dict
    assert torch.equal(old.state_dict["model.norm.weight"], 2 * now.state_dict["model.norm.weight"])
    again = registry.rederive(old.artifact.name)
    assert again.artifact.content_hash == old.artifact.content_hash
    assert registry.rederive(now.artifact.name).artifact.content_hash == now.artifact.content_hash


@pytest.mark.parametrize(
    "rescale, divided", [("fan", 2.0), ("exact", 2.0), ("fan-sqrt", 2**0.5), ("std", 1.0)]
)
def test_the_norm_a_tied_head_reads_is_divided_as_the_rule_divides_linear_layers(
    registry, tiny_dir, monkeypatch, rescale, divided
):
    """GPT-2's final norm feeds a head tied to the embeddings: grown 2x wider, it is
    divided by what the rule divides a linear layer's fan-in by (fan and exact: 2,
    fan-sqrt: its root, std: nothing, so it keeps the source's moments as the docs say).
    Under amplitude version 4 it was halved whatever the rule; such a record re-derives
    by that rule and verifies."""
    from safetensors.torch import load_file

    from zoo.transforms.moments import mean_std

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    kw = dict(method="dwt", wavelet="haar", rescale=rescale)
    now = registry.materialize(src.name, layers=4, hidden=64, **kw)
    gain = now.state_dict["transformer.ln_f.weight"]
    reference = load_file(tiny_dir("gpt2") / "model.safetensors")["transformer.ln_f.weight"]
    mean, std = mean_std(gain, correction=0)
    want_mean, want_std = mean_std(reference, correction=0)
    assert mean == pytest.approx(want_mean / divided, rel=1e-5)
    assert std == pytest.approx(want_std / divided, rel=1e-4)
    old = _grown_under_amplitude_version(registry, monkeypatch, src.name, 4, **kw)
    if rescale not in ("fan", "exact"):
        assert old.artifact.content_hash != now.artifact.content_hash
        assert mean_std(old.state_dict["transformer.ln_f.weight"], correction=0)[0] == (
            pytest.approx(want_mean / 2, rel=1e-5)
        )
    assert registry.rederive(old.artifact.name).artifact.content_hash == old.artifact.content_hash


def test_the_std_rule_gives_the_sources_population_std_as_resize_does(registry, tiny_dir):
    """`--rescale std` gives each resized signal the source's population std, as
    zoo.methods.resize documents and computes: materialize gave the sample std, larger by
    sqrt(n/(n-1)), most visibly on a small matrix (BERT's 2 x hidden token types)."""
    from safetensors.torch import load_file

    from zoo.methods import resize

    src = registry.import_checkpoint(tiny_dir("bert"))
    key = "bert.embeddings.token_type_embeddings.weight"
    x = load_file(tiny_dir("bert") / "model.safetensors")[key]
    hidden = x.shape[1] * 2
    made = registry.materialize(
        src.name, layers=4, hidden=hidden, method="dwt", wavelet="db2", rescale="std"
    )
    y = made.state_dict[key]
    expected = resize(x, (x.shape[0], hidden), method="dwt", wavelet="db2", rescale="std")
    assert float(y.std(correction=0)) == pytest.approx(float(x.std(correction=0)), rel=1e-5)
    assert torch.allclose(y, expected, rtol=1e-5, atol=1e-7)


def test_a_net2net_checkpoint_recorded_with_a_copy_map_per_tensor_re_derives_by_that_rule(
    registry, tiny_dir, monkeypatch
):
    """Net2net version 1 drew a fresh copy map for each tensor (a unit's writers and
    readers copied different units). A virtual checkpoint recorded then re-derives by that
    rule and verifies; one recorded now shares one map per set of units, so every tensor
    reading the residual stream copies the embedding's columns."""
    import dataclasses

    from zoo.api import materialize as mat

    src = registry.import_checkpoint(tiny_dir("llama"))
    real_plan = mat.make_plan
    monkeypatch.setattr(
        mat, "make_plan", lambda *a, **k: dataclasses.replace(real_plan(*a, **k), net2net_version=1)
    )
    monkeypatch.setattr("zoo.methods.net2net.NET2NET_VERSION", "1")
    old = registry.materialize(src.name, layers=4, hidden=64, method="net2net")
    monkeypatch.undo()
    now = registry.materialize(src.name, layers=4, hidden=64, method="net2net")
    (edge,) = registry.lineage(now.artifact.name, down=False).edges
    assert edge.recipe["net2net_version"] == NET2NET_VERSION
    assert now.artifact.content_hash != old.artifact.content_hash

    from safetensors.torch import load_file

    source = load_file(tiny_dir("llama") / "model.safetensors")

    def copied(sd, key):
        """The source column each column of ``key`` copies (up to a division): the most
        parallel one, over the source's own rows (a copy's extra rows come after them)."""
        s = torch.nn.functional.normalize(source[key].float(), dim=0)
        t = torch.nn.functional.normalize(sd[key].float()[: s.shape[0]], dim=0)
        return (t.t() @ s).argmax(dim=1).tolist()

    embed, query = "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"
    assert copied(now.state_dict, embed) == copied(now.state_dict, query)
    assert copied(old.state_dict, embed) != copied(old.state_dict, query)
    assert registry.rederive(old.artifact.name).artifact.content_hash == old.artifact.content_hash
    assert registry.rederive(now.artifact.name).artifact.content_hash == now.artifact.content_hash


def test_a_net2net_checkpoint_recorded_with_random_key_value_copies_re_derives_by_that_rule(
    registry, tiny_dir, monkeypatch
):
    """Net2net version 2 gave each extra key/value head a random source, so key/value heads
    grown alone (2 -> 4 under 4 query heads) left query heads reading another head's keys.
    A virtual checkpoint recorded then re-derives by that rule and verifies; one recorded
    now copies each key/value head beside itself, the query heads in place."""
    import dataclasses

    from zoo.api import materialize as mat

    src = registry.import_checkpoint(tiny_dir("llama"))  # 4 query heads, 2 key/value heads
    real_plan = mat.make_plan
    monkeypatch.setattr(
        mat, "make_plan", lambda *a, **k: dataclasses.replace(real_plan(*a, **k), net2net_version=2)
    )
    monkeypatch.setattr("zoo.methods.net2net.NET2NET_VERSION", "2")
    old = registry.materialize(src.name, layers=4, hidden=32, kv_heads=4, method="net2net")
    monkeypatch.undo()
    now = registry.materialize(src.name, layers=4, hidden=32, kv_heads=4, method="net2net")
    (edge,) = registry.lineage(old.artifact.name, down=False).edges
    assert edge.recipe["net2net_version"] == "2"
    assert now.artifact.content_hash != old.artifact.content_hash
    from safetensors.torch import load_file

    key = "model.layers.0.self_attn.k_proj.weight"
    source_heads = load_file(tiny_dir("llama") / "model.safetensors")[key].reshape(2, -1, 32)
    now_heads = now.state_dict[key].reshape(4, -1, 32)
    assert all(torch.equal(now_heads[h], source_heads[h // 2]) for h in range(4))
    assert registry.rederive(old.artifact.name).artifact.content_hash == old.artifact.content_hash
    assert registry.rederive(now.artifact.name).artifact.content_hash == now.artifact.content_hash


def test_a_hypercloning_checkpoint_recorded_with_tiled_key_value_heads_re_derives_by_that_rule(
    registry, tmp_path, monkeypatch
):
    """HyperCloning recorded before its edges named a version tiled every attention axis,
    so key/value heads grown alone (2 -> 4 under 8 query heads) came out k0 k1 k0 k1 and
    query heads read another head's keys. A virtual checkpoint recorded then (its edge
    naming no hypercloning_version) re-derives by that rule and verifies; one recorded
    now repeats each key/value head in place (k0 k0 k1 k1), and records version 2."""
    from safetensors.torch import load_file

    folder = save_tiny("llama", tmp_path / "src", num_attention_heads=8, num_key_value_heads=2)
    src = registry.import_checkpoint(folder)
    request = dict(layers=4, hidden=32, kv_heads=4, method="hypercloning")
    old = _materialize_by_tiled_heads(registry, monkeypatch, src.name, **request)
    now = registry.materialize(src.name, **request)
    (edge,) = registry.lineage(old.artifact.name, down=False).edges
    assert "hypercloning_version" not in edge.recipe
    (edge,) = registry.lineage(now.artifact.name, down=False).edges
    assert edge.recipe["hypercloning_version"] == "2"
    assert now.artifact.content_hash != old.artifact.content_hash

    key = "model.layers.0.self_attn.k_proj.weight"
    source_heads = load_file(folder / "model.safetensors")[key].reshape(2, -1, 32)
    old_heads = old.state_dict[key].reshape(4, -1, 32)
    now_heads = now.state_dict[key].reshape(4, -1, 32)
    assert all(torch.equal(old_heads[h], source_heads[h % 2]) for h in range(4))
    assert all(torch.equal(now_heads[h], source_heads[h // 2]) for h in range(4))
    query = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(now.state_dict[query], load_file(folder / "model.safetensors")[query])
    assert registry.rederive(old.artifact.name).artifact.content_hash == old.artifact.content_hash
    assert registry.rederive(now.artifact.name).artifact.content_hash == now.artifact.content_hash


def test_a_checkpoint_recorded_with_whole_tensor_statistics_re_derives_by_that_rule(
    registry, tiny_dir, monkeypatch
):
    """Until transform version 4 the std and fan rules read a signal's statistics over one
    float64 copy of it. A checkpoint recorded then re-derives by that rule (its recorded
    version says so) and verifies; one recorded now uses the blocked rule."""
    import dataclasses

    import zoo.derive
    from zoo.api import materialize as mat
    from zoo.transforms import TRANSFORM_VERSION

    src = registry.import_checkpoint(tiny_dir("llama"))
    real_plan, real_stats = mat.make_plan, zoo.derive.signal_stats

    def old_plan(*args, **kwargs):
        return dataclasses.replace(real_plan(*args, **kwargs), legacy_whole_moments=True)

    monkeypatch.setattr(mat, "make_plan", old_plan)
    monkeypatch.setattr("zoo.transforms.TRANSFORM_VERSION", "3")
    ask = dict(layers=3, hidden=48, method="dwt", rescale="fan")
    old = registry.materialize(src.name, **ask)
    monkeypatch.setattr(mat, "make_plan", real_plan)
    monkeypatch.setattr("zoo.transforms.TRANSFORM_VERSION", TRANSFORM_VERSION)
    now = registry.materialize(src.name, **{**ask, "hidden": 64})

    rules: list[bool] = []

    def stats(x, *, whole=False):
        rules.append(whole)
        return real_stats(x, whole=whole)

    monkeypatch.setattr(zoo.derive, "signal_stats", stats)
    for info, whole in ((old.artifact, True), (now.artifact, False)):
        rules.clear()
        plan = mat._recorded_plan(registry, info, None, as_parent=False)[0]
        assert plan.legacy_whole_moments == whole
        again = registry.rederive(info.name)
        assert again.artifact.content_hash == info.content_hash
        assert rules and set(rules) == {whole}


def test_a_dct_learngene_keeps_the_sources_own_signals_where_their_size_is_kept(
    registry, tiny_dir, monkeypatch
):
    """FRONT's low-frequency block brought back at the source's own size is a smoothed
    copy; zoo gives the source's exact signal wherever the size does not change (as every
    other method and dwt learngenes do), and low-passes only what is resized. Checkpoints
    recorded under the earlier rule (everything low-passed) still re-derive."""
    import dataclasses

    from safetensors.torch import load_file

    from zoo.api import materialize as mat

    src = registry.import_checkpoint(tiny_dir("bert"))
    lg = registry.extract(src.name, method="dct", keep=0.5)
    source = load_file(tiny_dir("bert") / "model.safetensors")
    same = registry.materialize(lg.name, layers=4, hidden=32)
    assert set(same.state_dict) == set(source)
    for name, t in same.state_dict.items():
        assert torch.equal(t, source[name]), name
    wider_ffn = registry.materialize(lg.name, layers=4, hidden=32, intermediate=128)
    for name, t in wider_ffn.state_dict.items():
        if "attention" in name or "embeddings" in name:
            assert torch.equal(t, source[name]), name
        elif "intermediate.dense.weight" in name:
            assert t.shape == (128, 32)
    real_plan = mat.make_plan

    def old_plan(*args, **kwargs):
        return dataclasses.replace(real_plan(*args, **kwargs), legacy_dct_unchanged=True)

    monkeypatch.setattr(mat, "make_plan", old_plan)  # what the earlier rule recorded
    old = registry.materialize(lg.name, layers=4, hidden=32)
    monkeypatch.setattr(mat, "make_plan", real_plan)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(old.state_dict[name], source[name])  # low-passed
    again = registry.rederive(old.artifact.name)
    assert again.artifact.content_hash == old.artifact.content_hash


def test_extracting_a_removed_learngene_again_brings_it_back(registry, tiny_dir):
    src = registry.import_checkpoint(tiny_dir("bert"))
    lg = registry.extract(src.name, method="dwt")
    registry.rm(lg.name)
    with pytest.raises(NotFoundError):
        registry.show(lg.name)
    again = registry.extract(src.name, method="dwt")
    assert again.id == lg.id and not again.deleted
    assert registry.show(lg.name).id == lg.id


def test_extracting_again_under_another_name_makes_that_name_an_alias(registry, tiny_dir, run_cli):
    """As an import of content already registered: the learngene answers to the name
    asked for, and a name that another artifact holds is refused in one line."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    lg = registry.extract(src.name, method="dwt")
    again = registry.extract(src.name, method="dwt", name="bert-genes")
    assert again.id == lg.id and "bert-genes" in again.aliases
    assert registry.show("bert-genes").id == lg.id
    code, out, err = run_cli("extract", src.name, "--name", src.name)
    assert code != 0 and out == "" and err.count("\n") == 1 and "already names" in err
    assert registry.show(src.name).kind == "source"


def test_extract_refuses_a_taken_name_before_storing_any_band(registry, tiny_dir, run_cli):
    """A --name another artifact holds (the source, another model's learngene, an alias
    of a learngene of other settings) is refused in one line before any band is
    computed, so the store gains no blob; the learngene's own name or alias still
    answers, as an extraction found again."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    other = registry.import_checkpoint(tiny_dir("gpt2"))
    registry.extract(other.name, method="dwt", name="gpt2-genes")
    lg = registry.extract(src.name, method="dwt", wavelet="haar", levels=1, name="bert-genes")
    registry.tag(lg.name, "genes")
    store = Path(registry.settings.store_url)
    blobs = sorted(p.name for p in store.rglob("*") if p.is_file())
    for taken in (src.name, "gpt2-genes", "genes"):
        code, out, err = run_cli("extract", src.name, "--wavelet", "db2", "--name", taken)
        assert (code, out, err) == (
            4,
            "",
            f"zoo: error: The name {taken!r} is already taken; choose another --name.\n",
        )
        assert sorted(p.name for p in store.rglob("*") if p.is_file()) == blobs
    registry.rm(lg.name)
    again = registry.extract(src.name, method="dwt", wavelet="haar", levels=1, name="genes")
    assert again.id == lg.id and not again.deleted


@pytest.mark.parametrize("method", ["dwt", "dct"])
def test_extract_refuses_a_source_whose_largest_role_does_not_fit_before_any_work(
    registry, tiny_dir, monkeypatch, run_cli, method
):
    """A role (one weight over every layer) is read and banded whole: a source whose
    largest role does not fit the memory there is is refused in one line, exit 2, before
    any tensor is read or any band stored, as a materialization is; past it the kernel
    killed the process with nothing said (a 70B Llama's FFN role alone is 38 GB in bf16)."""
    import re

    from safetensors.torch import load_file

    from zoo import _memory
    from zoo.api import tensors as tio
    from zoo.api.materialize import MEMORY_MARGIN

    folder = tiny_dir("llama")
    src = registry.import_checkpoint(folder)
    roles: dict[str, int] = {}
    for f in folder.glob("*.safetensors"):
        for name, t in load_file(f).items():
            role = re.sub(r"\.\d+\.", ".*.", name)
            roles[role] = roles.get(role, 0) + t.nbytes
    largest = max(roles.values())
    store = Path(registry.settings.store_url)
    blobs = sorted(p.name for p in store.rglob("*") if p.is_file())
    reads: list[int] = []
    load = tio.load_tensors
    monkeypatch.setattr(tio, "load_tensors", lambda *a, **kw: reads.append(1) or load(*a, **kw))
    have = int(largest / MEMORY_MARGIN)  # room for the role itself, none to band it
    monkeypatch.setattr(_memory, "available_bytes", lambda dev: have)
    code, out, err = run_cli("extract", src.name, "--method", method)
    assert (code, out) == (2, ""), err
    assert err.startswith(f"zoo: error: A {method} learngene of {src.name} needs ") and (
        err.endswith("available on cpu; extract it on a machine with more memory.\n")
    ), err
    assert err.count("\n") == 1
    assert reads == [] and sorted(p.name for p in store.rglob("*") if p.is_file()) == blobs
    assert registry.list(kind="learngene") == []
    monkeypatch.setattr(_memory, "available_bytes", lambda dev: 10 * have)
    assert registry.extract(src.name, method=method).kind == "learngene"


def test_extract_names_the_groups_a_dwt_learngene_holds_no_band_for(registry, tmp_path, run_cli):
    """A band halves every resizable axis of its group, so a source of 3 layers gets no
    band for any per-layer group: extract says so on stderr (which groups, why, and that
    materialize computes them from the source), as `zoo show` does, and --json lists them
    as short_bands. Which tensors the learngene holds is the independent check."""
    src = registry.import_checkpoint(save_tiny("llama", tmp_path / "llama3", num_hidden_layers=3))
    code, out, err = run_cli("extract", src.name, "--json")
    assert code == 0
    info = json.loads(out)
    held = {t.name for t in registry.show(info["name"]).tensors}
    signals = info["info"]["signals"]
    bandless = sorted(k for k in signals if not any(n.startswith(f"{k}@") for n in held))
    assert bandless and all("final_norm" not in k and "embed" not in k for k in bandless)
    assert [e["signal"] for e in info["short_bands"]] == bandless
    assert all(e["levels"] == [] and e["limits"] == {"layers": 3} for e in info["short_bands"])
    note = err.strip()
    assert err.count("\n") == 1 and note.startswith(f"note: {info['name']}: ")
    assert f"{len(bandless)} of {len(signals)} parameter groups hold no band" in note
    assert "layers 3 does not halve" in note and f"from the source {src.name}" in note
    code, shown, _ = run_cli("show", info["name"])
    line = next(x for x in shown.splitlines() if x.startswith("bands:"))
    assert all(k in line for k in bandless) and "layers 3 does not halve" in line
    code, shown, _ = run_cli("show", info["name"], "--json")
    assert json.loads(shown)["short_bands"] == info["short_bands"]
    # What materialize does with it: those groups from the source, as the source's own dwt.
    kw = dict(layers=3, hidden=16, method="dwt", wavelet="db2", rescale="none")
    from_lg = registry.materialize(info["name"], **kw).artifact
    assert from_lg.content_hash == registry.materialize(src.name, **kw).artifact.content_hash

    # Levels past what the layers allow: the per-layer groups stop at level 2.
    four = registry.import_checkpoint(save_tiny("llama", tmp_path / "llama4"))
    code, out, err = run_cli("extract", four.name, "--levels", "3", "--json")
    short = json.loads(out)["short_bands"]
    assert short and all(e["levels"] == [1, 2] and e["limits"] == {"layers": 4} for e in short)
    assert "hold levels 1-2 only, not 1-3, as layers 4 halves 2 times" in err
    code, out, err = run_cli("extract", four.name, "--json")  # every band it asked for
    assert json.loads(out)["short_bands"] == [] and err == ""


def test_audit_takes_no_rotary_frequencies_for_ancestry(registry, tiny_dir, tmp_path):
    """Llama checkpoints saved by older transformers carry each layer's rotary inv_freq, a
    function of the config alone: two unrelated models share it, and that is no evidence."""
    from safetensors.torch import load_file, save_file

    config = json.loads((tiny_dir("llama") / "config.json").read_text())
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    folders = []
    for seed in (0, 1):
        folder = tmp_path / f"llama-{seed}"
        shutil.copytree(tiny_dir("llama", seed=seed), folder)
        tensors = load_file(folder / "model.safetensors")
        for layer in range(config["num_hidden_layers"]):
            tensors[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
        save_file(tensors, folder / "model.safetensors")
        folders.append(folder)
    registry.import_checkpoint(folders[0])
    assert registry.audit(folders[1]).status == "unknown"
    assert registry.audit(folders[0]).status == "known"


def test_importing_a_materialized_folder_keeps_it_one_artifact_with_its_lineage(
    registry, tiny_dir, tmp_path, run_cli
):
    src = registry.import_checkpoint(tiny_dir("bert"))
    small = registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "small")
    assert small.artifact.virtual
    again = registry.import_checkpoint(tmp_path / "small", name="small-copy")
    assert again.id == small.artifact.id and again.kind == "derived"
    assert not again.virtual and "small-copy" in again.aliases  # its weights are stored now
    assert registry.verify(again.name).ok
    report = registry.audit(tmp_path / "small")
    assert report.status == "known" and report.artifact.id == small.artifact.id
    assert src.name in {n.name for n in report.lineage.nodes.values()}
    assert [a.kind for a in registry.list()].count("source") == 1
    # An identity recipe from it gives it back, with no edge from itself to itself.
    twice = registry.materialize(again.name, layers=2, hidden=16, method="weight-selection")
    assert twice.artifact.id == again.id
    edges = registry.lineage(again.name).edges
    assert all(e.parent_id != e.child_id for e in edges), edges


def test_a_content_hash_names_one_artifact_when_kinds_share_the_content(registry, tiny_dir):
    """A same-size materialize reproduces its source bit for bit: the hash (or a prefix)
    names the first registration of that content, the source."""
    src = registry.import_checkpoint(tiny_dir("gpt2"))  # 4 x 32
    same = registry.materialize(src.name, layers=4, hidden=32, method="weight-selection")
    assert same.artifact.content_hash == src.content_hash and same.artifact.id != src.id
    for query in (src.content_hash, src.content_hash[:8]):
        assert registry.show(query).id == src.id
    # A command that takes derived checkpoints only means the derived one.
    assert registry.rederive(src.content_hash[:12]).artifact.id == same.artifact.id
    registry.rm(src.name, cascade=True)
    with pytest.raises(NotFoundError):
        registry.show(src.content_hash[:8])


def test_learngene_names_of_a_long_source_stay_valid(registry, tiny_dir):
    from zoo.checkpoint import validate_name
    from zoo.checkpoint.names import MAX_NAME_LENGTH

    src = registry.import_checkpoint(tiny_dir("gpt2"), name="P" * MAX_NAME_LENGTH)
    registry.tag(src.name, "P" * 108 + "-dwt-db2-l2")  # takes dwt's default name
    names = [
        registry.extract(src.name, method="dwt").name,
        registry.extract(src.name, method="dct").name,
    ]
    assert names[0].endswith("-dwt-db2-l2-" + registry.show(names[0]).content_hash[:8])
    assert names[1].endswith("-dct-k0.5")
    for name in names:
        assert validate_name(name) and len(name) <= MAX_NAME_LENGTH


def test_levels_beyond_every_axis_are_refused_before_anything_is_stored(
    registry, tiny_dir, tmp_path, run_cli
):
    src = registry.import_checkpoint(tiny_dir("bert"))  # hidden 32: halves 5 times at most
    blobs = sorted(p.name for p in (tmp_path / "blobs").rglob("*"))
    with pytest.raises(InvalidInputError, match="at most 5 times"):
        registry.extract(src.name, method="dwt", wavelet="haar", levels=6)
    code, out, err = run_cli("extract", src.name, "--levels", "9")
    assert code == 2 and out == "" and "ask for 5 or fewer" in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "blobs").rglob("*")) == blobs
    assert [a.kind for a in registry.list()] == ["source"]
    lg = registry.extract(src.name, method="dwt", wavelet="haar", levels=5)
    embeddings = registry.show(lg.name).info["signals"]["embeddings.word"]
    assert embeddings["levels"] == [1, 2, 3, 4, 5]
    # Levels past any axis are refused as fast: the count stops at the first that fails.
    for levels in ("1000000000", "99999999999999999999999"):
        code, out, err = run_cli("extract", src.name, "--levels", levels)
        assert code == 2 and "ask for 5 or fewer" in err and err.count("\n") == 1, err
    with pytest.raises(InvalidInputError, match="whole number"):
        registry.extract(src.name, levels="3")
    # A device is checked whether or not the learngene exists already.
    with pytest.raises(InvalidInputError, match="not a torch device"):
        registry.extract(src.name, method="dwt", wavelet="haar", levels=5, device="bogus")


def test_dwt_levels_stop_at_the_first_level_an_axis_does_not_halve_at():
    from zoo.api.learngene_format import dwt_levels

    assert dwt_levels((48, 64), (0, 1), 10**12) == [1, 2, 3, 4]
    assert dwt_levels((64, 3), (0,), 10**12) == [1, 2, 3, 4, 5, 6]
    assert dwt_levels((64, 3), (0, 1), 5) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["dwt", "dct"])
def test_cuda_materialize_matches_cpu_and_rederives_on_cuda(registry, tiny_dir, method):
    src = registry.import_checkpoint(tiny_dir("bert"))
    kw = dict(layers=6, hidden=48, method=method)  # non-dyadic: products and resamples
    cpu = registry.materialize(src.name, device="cpu", **kw)
    gpu = registry.materialize(src.name, device="cuda", **kw)
    assert {t.device.type for t in gpu.state_dict.values()} == {"cuda"}
    for k, v in cpu.state_dict.items():
        torch.testing.assert_close(gpu.state_dict[k].cpu(), v, rtol=1e-4, atol=1e-5)
    again = registry.materialize(src.name, device="cuda", **kw)
    assert again.artifact.content_hash == gpu.artifact.content_hash
    assert registry.rederive(gpu.artifact.name).artifact.content_hash == gpu.artifact.content_hash


def test_a_learngene_whose_bands_do_not_fit_reads_its_source(registry, tiny_dir):
    # 4x32 -> 6x48 is no whole wavelet level, so the bands cannot serve and zoo reads the
    # source through the learngene's extract edge: the same tensors as asking the source.
    src = registry.import_checkpoint(tiny_dir("bert"))
    lg = registry.extract(src.name, method="dwt", wavelet="db2", levels=1)
    kw = dict(layers=6, hidden=48, method="dwt", wavelet="db2", rescale="fan")
    via_learngene = registry.materialize(lg.name, **kw)
    via_source = registry.materialize(src.name, **kw)
    assert via_learngene.artifact.content_hash == via_source.artifact.content_hash
    for k, v in via_source.state_dict.items():
        assert torch.equal(via_learngene.state_dict[k], v), k


@pytest.mark.filterwarnings("ignore:Level value of 1 is too high")  # 4 layers vs db2's 4 taps
def test_a_wavelet_other_than_the_bands_is_computed_not_read(registry, tiny_dir):
    """--wavelet W on a learngene of another wavelet gives W's result (from the source),
    never the stored bands relabeled; an unknown wavelet is refused even where a stored
    band would have fit the size."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    db2 = registry.extract(src.name, method="dwt", wavelet="db2", levels=1)
    haar = registry.extract(src.name, method="dwt", wavelet="haar", levels=1)
    kw = dict(layers=2, hidden=16, method="dwt", rescale="none")
    from_db2 = registry.materialize(db2.name, wavelet="haar", **kw)
    from_haar = registry.materialize(haar.name, wavelet="haar", **kw)
    own = registry.materialize(db2.name, **kw)  # the learngene's own wavelet
    # Computed from the source axis by axis vs. read from a jointly computed band: the
    # same numbers up to float rounding.
    for k, v in from_haar.state_dict.items():
        torch.testing.assert_close(from_db2.state_dict[k], v, rtol=1e-5, atol=1e-6)
    differs = [
        k for k, v in own.state_dict.items() if not torch.allclose(v, from_haar.state_dict[k])
    ]
    assert any("query.weight" in k for k in differs)
    # The db2 bands played no part: the lineage names the source as the parent (as for a
    # baseline asked of a learngene), the result is the source's own, and the learngene
    # can be removed.
    edges = registry.lineage(from_db2.artifact.name, up=True, down=False).edges
    assert [(e.parent_id, e.recipe["wavelet"], e.recipe["learngene"]) for e in edges] == [
        (src.id, "haar", None)
    ]
    from_src = registry.materialize(src.name, wavelet="haar", **kw).artifact
    assert from_src.content_hash == from_db2.artifact.content_hash
    registry.rm(own.artifact.name)  # the one derived from its bands
    registry.rm(db2.name)
    with pytest.raises(InvalidInputError, match="Unknown wavelet 'nosuch'"):
        registry.materialize(haar.name, wavelet="nosuch", **kw)
    with pytest.raises(InvalidInputError, match="Unknown wavelet ''"):
        registry.extract(src.name, method="dwt", wavelet="")


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_a_target_bigger_than_memory_is_refused_before_any_work(
    registry, tiny_dir, tmp_path, monkeypatch, run_cli, family
):
    from zoo import _memory
    from zoo.api import materialize as mat
    from zoo.api.derivation import Derivation
    from zoo.api.plan import MaterializeRequest, make_plan
    from zoo.api.tensors import KnownDigests

    src = registry.import_checkpoint(tiny_dir(family))
    lg = registry.extract(src.name, method="dwt", wavelet="haar", levels=1)
    for parent, size in ((src.name, (6, 48)), (lg.name, (2, 16))):
        m = registry.materialize(parent, layers=size[0], hidden=size[1], method="dwt")
        real = sum(v.numel() * v.element_size() for v in m.state_dict.values())
        request = MaterializeRequest(*size, method="dwt")
        plan = make_plan(registry, parent, request)
        planned = Derivation(registry, plan, torch.device("cpu"), known=KnownDigests())
        # The size estimate, from shapes alone, is the state dict's real size on both paths;
        # a target kept in memory needs it plus the working set of the groups in flight.
        assert planned.target_bytes == real
        need = (real + planned.largest_working_set) / mat.MEMORY_MARGIN
        monkeypatch.setattr(_memory, "available_bytes", lambda dev, n=need: int(n) - 1)
        with pytest.raises(InvalidTargetError, match="GB of weights and needs"):
            registry.materialize(parent, layers=size[0], hidden=size[1], method="dwt")
        monkeypatch.setattr(_memory, "available_bytes", lambda dev, n=need: int(n) + 1)
        registry.materialize(parent, layers=size[0], hidden=size[1], method="dwt")
    before = len(registry.list())
    monkeypatch.setattr(_memory, "available_bytes", lambda dev: 10**9)
    # dwt mixes layers, so each group is derived whole: 20000 layers of one role do not
    # fit in 1 GB (their tensors are under the count zoo accepts). A layer-local method
    # would stream it a layer at a time.
    code, out, err = run_cli(
        "materialize",
        src.name,
        "--method",
        "dwt",
        "--layers",
        "20000",
        "--hidden",
        "64",
        "--out",
        str(tmp_path / "huge"),
    )
    assert code == 2 and out == "" and err.count("\n") == 1 and "1.0 GB available" in err
    assert not (tmp_path / "huge").exists() and len(registry.list()) == before


def test_the_size_from_signal_shapes_never_exceeds_the_planned_size(registry, tiny_dir):
    """The early refusal of a target too large for the disk or memory reads the signals'
    target shapes only: for every family, from a source and from a learngene, smaller and
    larger, that is at most (here: exactly) what planning every tensor gives."""
    from tinymodels import DECODERS, FAMILIES

    from zoo.api.derivation import Derivation
    from zoo.api.plan import MaterializeRequest, make_plan
    from zoo.api.tensors import KnownDigests

    for family in sorted({*FAMILIES, *DECODERS}):
        src = registry.import_checkpoint(tiny_dir(family))
        lg = registry.extract(src.name, method="dct")
        for parent in (src.name, lg.name):
            for request in (
                MaterializeRequest(2, 32),
                MaterializeRequest(6, 64, method="scratch", dtype="float16"),
            ):
                plan = make_plan(registry, parent, request)
                d = Derivation(registry, plan, torch.device("cpu"), known=KnownDigests())
                least = d.least_target_bytes
                assert least == d.target_bytes, (family, parent, request)


def test_a_mistyped_size_is_refused_for_disk_or_memory_before_its_tensors_are_planned(
    registry, tiny_dir, tmp_path, monkeypatch, run_cli
):
    """Planning each tensor of 40000 layers takes half a minute (a server's size revision
    would wait as long): what the signals alone rule out is refused first."""
    from zoo.api.derivation import Derivation

    src = registry.import_checkpoint(tiny_dir("gpt2"))

    def planned(self, *args):
        raise AssertionError("a tensor was planned")

    monkeypatch.setattr(Derivation, "_group", planned)
    size = ["--layers", "40000", "--hidden", "16384"]
    code, out, err = run_cli("materialize", src.name, *size, "--out", str(tmp_path / "m"))
    assert code == 11 and out == "" and err.count("\n") == 1, err
    assert "TB and its file system has" in err, err
    with pytest.raises(InvalidTargetError, match=r"holds \d+\.\d TB of weights, more than"):
        registry.materialize(src.name, layers=40000, hidden=16384)
    assert not (tmp_path / "m").exists() and registry.list(kind="derived") == []


def test_a_target_with_more_tensors_than_zoo_imports_is_refused(
    registry, tiny_dir, tmp_path, run_cli
):
    """A layer-local method streams any depth in bounded memory, so a mistyped --layers
    would write a checkpoint of millions of tensors that zoo could not import back."""
    from zoo.checkpoint.safetensors_format import MAX_TENSORS

    src = registry.import_checkpoint(tiny_dir("bert"))
    per_layer = sum(1 for t in src.tensors if ".layer." in t.name) // src.layers
    # HyperCloning deepens by whole multiples of the source's depth.
    layers = (MAX_TENSORS // per_layer // src.layers + 1) * src.layers
    before = len(registry.list())
    args = ["materialize", src.name, "--method", "hypercloning", "--hidden", "32"]
    code, out, err = run_cli(*args, "--layers", str(layers), "--out", str(tmp_path / "deep"))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"more than the {MAX_TENSORS:,} zoo accepts" in err
    assert not (tmp_path / "deep").exists() and len(registry.list()) == before
    # The largest depth under the cap is planned as usual (checked without deriving it),
    # and the count expected from the source's names is the count planned.
    from zoo.api import materialize as mat
    from zoo.api.derivation import Derivation
    from zoo.api.plan import MaterializeRequest, make_plan
    from zoo.api.tensors import KnownDigests

    others = src.tensor_count - per_layer * src.layers
    fewer = (MAX_TENSORS - others) // per_layer // src.layers * src.layers
    plan = make_plan(registry, src.name, MaterializeRequest(fewer, 32, method="hypercloning"))
    planned = Derivation(registry, plan, torch.device("cpu"), known=KnownDigests())
    count = sum(len(g.outputs) for g in planned.groups)
    assert mat._expected_tensors(registry, plan) == count == others + per_layer * fewer
    mat.check_tensor_count(plan, count)


@pytest.mark.parametrize(
    ("size", "words"),
    [
        ({"layers": 10**10, "hidden": 64}, "layers=10000000000 is more than 500,000"),
        ({"layers": 4, "hidden": 10**12}, "hidden=1000000000000 is more than 1,048,576"),
        ({"layers": 4, "hidden": 64, "intermediate": 2**21}, "intermediate=2097152"),
    ],
)
def test_a_size_beyond_any_model_is_refused_before_any_arithmetic_on_it(
    registry, tiny_dir, size, words
):
    """Sizes past what a checkpoint can hold are typos: refused in one line before a list
    of per-layer settings or a divisor search is built from them (a decoder's config has
    one entry per layer)."""
    src = registry.import_checkpoint(tiny_dir("gemma2"))
    with pytest.raises(InvalidTargetError, match=words):
        registry.materialize(src.name, method="weight-selection", **size)


def test_a_mistyped_depth_is_refused_before_its_tensors_are_planned(
    registry, tiny_dir, monkeypatch
):
    """Planning each of a hundred thousand layers' tensors takes minutes: the count comes
    from the source's names first."""
    from zoo.api import materialize as mat

    def no_plan(*_, **__):
        raise AssertionError("the target's tensors were planned")

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    monkeypatch.setattr(mat, "Derivation", no_plan)
    with pytest.raises(InvalidTargetError, match="ask for fewer layers"):
        registry.materialize(src.name, layers=100_000, hidden=64, method="hypercloning")


def test_available_memory_is_a_plausible_reading():
    import os

    from zoo import _memory

    have = _memory.available_bytes(torch.device("cpu"))
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert have is not None and 0 < have <= total


def test_rescale_is_refused_for_methods_it_does_not_apply_to(registry, tiny_dir, run_cli):
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    for method in ("weight-selection", "scratch"):
        with pytest.raises(InvalidInputError, match="rescale= applies to method=dwt or dct"):
            registry.materialize(src.name, layers=1, hidden=16, method=method, rescale="fan")
    registry.materialize(src.name, layers=1, hidden=16, method="weight-selection", rescale="none")
    code, out, err = run_cli(
        "materialize",
        src.name,
        "--layers",
        "1",
        "--hidden",
        "16",
        "--method",
        "weight-selection",
        "--rescale",
        "std",
    )
    assert code == 2 and out == "" and err.count("\n") == 1


@pytest.mark.parametrize("family", sorted(FAMILY_SIZES))
def test_weight_selection_reads_only_the_layers_it_keeps(registry, tiny_dir, family, monkeypatch):
    from zoo.api import derivation
    from zoo.api import tensors as tio

    src = registry.import_checkpoint(tiny_dir(family))
    # Each materialization below plans its groups again, under the patches it runs with.
    monkeypatch.setattr(derivation, "_LAYOUTS", derivation._Recent(0))
    read: list[str] = []
    load = tio.load_tensors

    def counting_load(store, records, **kw):
        read.extend(r.name for r in records)
        return load(store, records, **kw)

    monkeypatch.setattr(tio, "load_tensors", counting_load)
    cut = registry.materialize(src.name, layers=2, hidden=16, method="weight-selection")
    assert read and not any(".2." in n or ".3." in n for n in read), read  # layers 2, 3
    read_cut = len(read)
    read.clear()
    what_to_read = derivation._what_to_read
    monkeypatch.setattr(derivation, "_what_to_read", lambda plan, recs: (recs, plan.source.config))
    # Derived a layer at a time, each group reads only the layers it keeps anyway.
    registry.materialize(src.name, layers=2, hidden=16, method="weight-selection")
    assert len(read) == read_cut
    read.clear()
    # Derived whole, every layer of the source is read.
    monkeypatch.setattr(derivation.Derivation, "_layer_chunks", lambda self, *a: ((), False))
    whole = registry.materialize(src.name, layers=2, hidden=16, method="weight-selection")
    assert len(read) > read_cut
    assert whole.artifact.content_hash == cut.artifact.content_hash
    for k, v in whole.state_dict.items():
        assert torch.equal(cut.state_dict[k], v), k
    # Norms matched to the source's statistics need every layer: nothing is cut then.
    monkeypatch.setattr(derivation, "_what_to_read", what_to_read)
    read.clear()
    registry.materialize(src.name, layers=2, hidden=16, method="weight-selection", norm="match")
    assert len(read) == len(src.tensors)


def test_cli_show_summarizes_a_learngenes_signals(registry, tiny_dir, run_cli):
    """Per-signal axes, statistics and layer digests are for --json, not the terminal."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    lg = registry.extract(src.name, method="dwt", wavelet="haar", levels=1)
    code, out, _ = run_cli("show", lg.name)
    assert code == 0 and f"{len(lg.info['signals'])} parameter groups" in out
    assert "layer_digests" not in out and len(out.splitlines()) < 20
    code, out, _ = run_cli("show", lg.name, "--json")
    assert code == 0 and json.loads(out)["info"]["signals"] == lg.info["signals"]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("layers", [8, 6])
def test_identity_depth_keeps_a_pre_norm_models_function(
    registry, tiny_dir, tmp_path, family, layers
):
    """--depth identity: each source layer, then copies of it whose residual writers are
    zero. At the source's width the deeper model computes the same logits (transformers
    runs both); 4 -> 6 is not an integer ratio: layers 0 and 2 get one repeat each."""
    src = registry.import_checkpoint(tiny_dir(family))
    m = registry.materialize(
        src.name, layers=layers, hidden=32, method="dwt", depth="identity", out=tmp_path / "deep"
    )
    assert m.artifact.info["recipe"]["depth"] == "identity"
    source, _ = _load(tiny_dir(family))
    deep, info = _load(tmp_path / "deep")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = torch.tensor([[1, 5, 7, 9, 2, 4, 4, 8]])
    with torch.no_grad():
        want, got = source(input_ids=ids).logits, deep(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Which target layer copies which source layer, and which start as identities.
    stem = "transformer.h" if family == "gpt2" else "model.layers"
    writer = "attn.c_proj.weight" if family == "gpt2" else "self_attn.o_proj.weight"
    reader = "attn.c_attn.weight" if family == "gpt2" else "self_attn.q_proj.weight"
    copies = [0, 0, 1, 1, 2, 2, 3, 3] if layers == 8 else [0, 0, 1, 2, 2, 3]
    from safetensors.torch import load_file

    state, src_state = load_file(tmp_path / "deep" / "model.safetensors"), source.state_dict()
    for j, i in enumerate(copies):
        assert torch.equal(state[f"{stem}.{j}.{reader}"], src_state[f"{stem}.{i}.{reader}"])
        repeat = j > 0 and copies[j - 1] == i
        if repeat:
            assert not state[f"{stem}.{j}.{writer}"].any()
        else:
            assert torch.equal(state[f"{stem}.{j}.{writer}"], src_state[f"{stem}.{i}.{writer}"])
    again = registry.rederive(m.artifact.name)
    assert again.artifact.content_hash == m.artifact.content_hash
    # The rule is shown wherever the recipe is: lineage, the model card.
    assert "depth=identity" in registry.lineage(m.artifact.name, down=False).to_text()
    assert "depth `identity`" in (tmp_path / "deep" / "README.md").read_text()


def test_identity_depth_zeroes_biases_of_the_residual_writers_too(registry, tmp_path):
    """llama with MLP and attention biases: a repeat's o_proj and down_proj biases must be
    zero as well, or the deeper model computes something else (transformers' logits)."""
    from tinymodels import save_tiny

    folder = save_tiny("llama", tmp_path / "src", mlp_bias=True, attention_bias=True)
    source, _ = _load(folder)
    with torch.no_grad():
        for name, p in source.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    source.save_pretrained(folder)
    src = registry.import_checkpoint(folder)
    registry.materialize(src.name, layers=8, hidden=32, depth="identity", out=tmp_path / "deep")
    deep, _ = _load(tmp_path / "deep")
    ids = torch.tensor([[1, 5, 7, 9, 2, 4]])
    with torch.no_grad():
        torch.testing.assert_close(
            deep(input_ids=ids).logits, source(input_ids=ids).logits, rtol=1e-5, atol=1e-5
        )


def test_identity_depth_equals_the_benchmarks_rule_after_a_width_transfer(registry, tiny_dir):
    """zoo's --depth identity = the method at the source's depth, then the transfer
    benchmark's +dz rule (checked against transformers' logits in its own tests)."""
    from zoo.bench.transfer import depth_by_rule

    src = registry.import_checkpoint(tiny_dir("gpt2"))  # 4 x 32
    kw = dict(method="dwt", wavelet="db2", rescale="fan")
    got = registry.materialize(src.name, layers=8, hidden=64, depth="identity", **kw)
    wide = registry.materialize(src.name, layers=4, hidden=64, **kw)
    want, config = depth_by_rule("gpt2", dict(wide.state_dict), wide.config, 8, "identity")
    assert got.config["n_layer"] == config["n_layer"] == 8
    assert set(got.state_dict) == set(want)
    for name, value in want.items():
        assert torch.equal(got.state_dict[name], value), name
    # hypercloning's integer-multiplier check sees the source's depth: 4 -> 6 is fine.
    hc = registry.materialize(
        src.name, layers=6, hidden=64, method="hypercloning", depth="identity"
    )
    assert hc.config["n_layer"] == 6


def test_norm_match_is_refused_for_a_method_that_transfers_nothing(registry, tiny_dir, run_cli):
    """scratch draws fresh weights: --norm match would be silently ignored (the same
    weights as without it), so it is refused with one line and exit 2; methods that
    transfer take it."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    args = ["--layers", "2", "--hidden", "16", "--norm", "match"]
    code, out, err = run_cli("materialize", src.name, *args, "--method", "scratch")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "--norm match" in err and "scratch" in err
    for method in ("weight-selection", "dwt"):
        m = registry.materialize(src.name, layers=2, hidden=16, method=method, norm="match")
        assert m.artifact.info["recipe"]["norm"] == "match"


def test_a_seed_is_refused_for_a_method_that_draws_nothing(registry, tiny_dir, run_cli):
    """A seed would change nothing of hypercloning's or dwt's weights and record a second
    recipe for them: refused with one line and exit 2 (0 included: it was asked for);
    the methods that draw take it, and without it draw from seed 0."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    for method in ("hypercloning", "dwt", "weight-selection"):
        size = ["--layers", "4", "--hidden", "64" if method == "hypercloning" else "16"]
        code, out, err = run_cli("materialize", src.name, *size, "--method", method, "--seed", "0")
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert "--seed" in err and method in err and "scratch" in err
    assert registry.list(kind="derived") == []
    drawn = registry.materialize(src.name, layers=2, hidden=16, method="scratch", seed=7)
    assert drawn.artifact.info["recipe"]["seed"] == 7
    unseeded = registry.materialize(src.name, layers=4, hidden=48, method="net2net")
    assert unseeded.artifact.info["recipe"]["seed"] == 0
    again = registry.materialize(src.name, layers=4, hidden=48, method="net2net", seed=0)
    assert again.artifact.content_hash == unseeded.artifact.content_hash


def test_a_seed_a_generator_cannot_take_and_arguments_of_the_wrong_type_are_one_line(
    registry, tiny_dir, run_cli, tmp_path
):
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    size = ["--layers", "2", "--hidden", "16", "--method", "scratch"]
    for seed in ("99999999999999999999", "-99999999999999999999"):
        code, out, err = run_cli(
            "materialize", src.name, *size, "--seed", seed, "--out", str(tmp_path / "o")
        )
        assert code == 2 and out == "" and "--seed is a whole number" in err, err
        assert err.count("\n") == 1
    for seed in (2**64, -(2**63) - 1, "x", 1.5, True):
        with pytest.raises(InvalidInputError, match=r"^seed= "):
            registry.materialize(src.name, layers=2, hidden=16, method="scratch", seed=seed)
    # The ends of the range are seeds like any other.
    for seed in (2**64 - 1, -(2**63)):
        drawn = registry.materialize(src.name, layers=2, hidden=16, method="scratch", seed=seed)
        assert drawn.artifact.info["recipe"]["seed"] == seed
    for name in (None, 123, b"tiny"):
        with pytest.raises(InvalidInputError, match="The name is text"):
            registry.materialize(name, layers=2, hidden=16)
        with pytest.raises(InvalidInputError, match="The name is text"):
            registry.show(name)
    with pytest.raises(InvalidInputError, match="out= is a folder's path"):
        registry.materialize(src.name, layers=2, hidden=16, out=123)
    assert not (tmp_path / "o").exists()


def test_identity_depth_is_refused_where_it_cannot_apply(registry, tiny_dir, run_cli):
    src = registry.import_checkpoint(tiny_dir("bert"))
    for args in (
        ["--layers", "2", "--hidden", "16", "--depth", "identity"],  # no layers added
        ["--layers", "8", "--hidden", "64", "--method", "scratch", "--depth", "identity"],
    ):
        code, out, err = run_cli("materialize", src.name, *args)
        assert code == 2 and out == "" and err.count("\n") == 1 and "identity" in err, err
    # Without added layers the default rule is "method": the recipe does not name one.
    wider = registry.materialize(src.name, layers=4, hidden=64)
    assert "depth" not in wider.artifact.info["recipe"]
    # The measured depth rule goes with the measured recipe only (for bert, dwt's best
    # grow: db2 fan; the default grow, HyperCloning, keeps the method's depth).
    deeper = registry.materialize(src.name, layers=8, hidden=64, method="dwt")
    assert deeper.artifact.info["recipe"]["depth"] == "identity"
    haar = registry.materialize(src.name, layers=8, hidden=64, method="dwt", wavelet="haar")
    assert "depth" not in haar.artifact.info["recipe"]
    default = registry.materialize(src.name, layers=8, hidden=64).artifact.info["recipe"]
    assert default["method"] == "hypercloning" and "depth" not in default


def test_scratch_reads_nothing_of_the_source_but_its_shapes(registry, tiny_dir, monkeypatch):
    """A fresh initialization needs the source's shapes only: no blob is read (a 70B
    source would otherwise be read and verified for a 1B scratch baseline), and the
    numbers are those drawn when the source's signals are read and handed over."""
    from zoo.api import tensors as tio
    from zoo.methods.scratch import Scratch

    src = registry.import_checkpoint(tiny_dir("llama"))
    reads: list[str] = []
    real = tio.read_tensor

    def read(store, r, **kw):
        reads.append(r.name)
        return real(store, r, **kw)

    monkeypatch.setattr(tio, "read_tensor", read)
    ask = dict(layers=2, hidden=48, method="scratch", seed=3, device="cpu")
    shapes_only = registry.materialize(src.name, **ask)
    assert reads == []
    monkeypatch.setattr(Scratch, "reads_source", True)  # every signal here changes shape
    read_whole = registry.materialize(src.name, **ask)
    assert reads  # the source was read this time
    assert shapes_only.artifact.content_hash == read_whole.artifact.content_hash
    for name, t in read_whole.state_dict.items():
        assert torch.equal(shapes_only.state_dict[name], t), name


def test_a_request_derives_the_same_bits_whatever_the_process_derived_before(
    registry, tiny_dir, monkeypatch
):
    """A plan's groups are kept by source, target and recipe (its seed aside): requests of
    other sizes, seeds, dtypes and methods made before give each request the content it
    has in a process that made none."""
    from zoo.api import derivation

    asks = [
        dict(layers=2, hidden=16, method="scratch", seed=0),
        dict(layers=2, hidden=16, method="scratch", seed=1),
        dict(layers=2, hidden=16, method="scratch", seed=1, dtype="bfloat16"),
        dict(layers=1, hidden=16, method="scratch", seed=1),
        dict(layers=6, hidden=16, method="scratch", seed=2),
        dict(layers=2, hidden=16, method="weight-selection"),
        dict(layers=3, hidden=16, method="weight-selection"),
        dict(layers=2, hidden=16, method="dwt"),
        dict(layers=2, hidden=16, method="dwt", dtype="bfloat16"),
        dict(layers=6, hidden=48, method="net2net", seed=1),
        dict(layers=4, hidden=64, method="hypercloning"),
    ]
    for family in ("bert", "gpt2", "llama"):
        src = registry.import_checkpoint(tiny_dir(family))
        alone = []
        for ask in asks:
            with monkeypatch.context() as m:
                m.setattr(derivation, "_LAYOUTS", derivation._Recent(0))  # keeps nothing
                made = registry.materialize(src.name, **ask, device="cpu", return_weights=False)
            alone.append(made.artifact.content_hash)
        for ask, content in reversed(list(zip(asks, alone, strict=True))):
            made = registry.materialize(src.name, **ask, device="cpu", return_weights=False)
            assert made.artifact.content_hash == content, (family, ask)


def test_random_methods_build_their_groups_together_or_apart_alike(registry, tiny_dir, monkeypatch):
    """Scratch and net2net build the tensors of their finished groups together, up to a
    batch: a batch of one group gives the same records, deeper targets included."""
    from zoo.api import derivation

    asks = [
        dict(layers=2, hidden=16, method="scratch", seed=4),
        dict(layers=6, hidden=64, method="scratch", seed=5, dtype="bfloat16"),
        dict(layers=6, hidden=48, method="net2net", seed=6),
        dict(layers=8, hidden=64, method="net2net", seed=7, depth="identity"),
    ]
    for family in ("bert", "gpt2", "llama"):
        src = registry.import_checkpoint(tiny_dir(family))
        for ask in asks:
            together = registry.materialize(src.name, **ask, device="cpu")
            with monkeypatch.context() as m:
                m.setattr(derivation, "_BATCH_ELEMENTS", 1)  # each group on its own
                apart = registry.materialize(src.name, **ask, device="cpu")
            assert apart.artifact.id == together.artifact.id, (family, ask)
            assert apart.artifact.tensors == together.artifact.tensors
            assert apart.state_dict.keys() == together.state_dict.keys()
            for name, t in apart.state_dict.items():
                assert torch.equal(together.state_dict[name], t), (family, ask, name)


def test_scratch_passes_the_integer_buffers_a_checkpoint_stores_through(
    registry, tiny_dir, tmp_path
):
    """A BERT saved with its position ids (as all-MiniLM-L6-v2 and older transformers
    saved them, int64) is initialized from scratch at any size: the ids are no weight
    to draw, and pass through as transformers would build them; the folder loads with no
    key missing or unexpected."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "with-ids"
    shutil.copytree(tiny_dir("bert"), folder)
    tensors = load_file(folder / "model.safetensors")
    positions = json.loads((folder / "config.json").read_text())["max_position_embeddings"]
    ids = torch.arange(positions).unsqueeze(0)
    tensors["bert.embeddings.position_ids"] = ids
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    src = registry.import_checkpoint(folder)
    for layers, hidden in ((2, 16), (4, 32)):
        out = tmp_path / f"scratch-{layers}x{hidden}"
        made = registry.materialize(
            src.name, layers=layers, hidden=hidden, method="scratch", seed=1, out=out
        )
        written = load_file(out / "model.safetensors")
        assert torch.equal(written["bert.embeddings.position_ids"], ids)
        model, info = transformers.BertForMaskedLM.from_pretrained(out, output_loading_info=True)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
        assert made.artifact.config["hidden_size"] == hidden
        with torch.no_grad():
            assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


@pytest.mark.parametrize("family", sorted(FAMILY_SIZES))
def test_planned_groups_are_each_group_built_alone_in_one_pass(
    family, registry, tiny_dir, monkeypatch
):
    """Planning builds every group's target tensors in one pass of the family's builder
    over shape-only signals, with no meta concatenation (torch's Python reference), and
    gives each group what building it alone gives: the same names, dtypes, shapes and
    order. Those are the tensors a materialization then writes."""
    from unittest import mock

    from zoo.api import derivation as dv
    from zoo.api import tensors as tio
    from zoo.api.plan import MaterializeRequest, make_plan
    from zoo.derive import target_shape

    src = registry.import_checkpoint(tiny_dir(family))
    monkeypatch.setattr(dv, "_LAYOUTS", dv._Recent(32))  # a plan this process has not made
    plan = make_plan(registry, src.name, MaterializeRequest(layers=3, hidden=16, method="dwt"))
    derivation = dv.Derivation(
        registry, plan, torch.device("cpu"), known=tio.KnownDigests(), read_virtual=None
    )
    builder, torch_cat = plan.family.from_signals, torch.cat
    meta_cats: list[tuple] = []

    def cat(parts, *args, **kwargs):
        if any(p.is_meta for p in parts):
            meta_cats.append(tuple(p.shape for p in parts))
        return torch_cat(parts, *args, **kwargs)

    with (
        mock.patch.object(plan.family, "from_signals", wraps=builder) as built,
        mock.patch.object(torch, "cat", cat),
    ):
        groups = derivation.groups
    assert built.call_count == 1 and meta_cats == []
    metas = derivation.metas
    for g in groups:
        alone = {
            k: torch.empty(
                target_shape(metas[k].axes, metas[k].shape, plan.target_sizes),
                dtype=metas[k].dtype,
                device="meta",
            )
            for k in g.signals
        }
        want = builder(alone, plan.target_config, part_of=derivation.metas)
        assert list(g.outputs) == list(want), g.signals
        for name, t in want.items():
            assert g.outputs[name] == (t.dtype, tuple(t.shape)), name
    made = registry.materialize(src.name, layers=3, hidden=16, method="dwt", device="cpu")
    assert {n: (t.dtype, tuple(t.shape)) for n, t in made.state_dict.items()} == {
        n: o for g in groups for n, o in g.outputs.items()
    }


def test_joining_shape_only_tensors_gives_torch_cat_shapes():
    """zoo.families._common.cat joins meta tensors by shape as torch.cat joins real ones,
    and refuses what torch.cat refuses."""
    from zoo.families._common import cat

    for shapes, dim in (
        ([(2, 3), (2, 5)], 1),
        ([(2, 3), (4, 3), (1, 3)], 0),
        ([(2, 3, 4), (2, 3, 1)], -1),
        ([(6,), (6,), (6,)], 0),
    ):
        real = torch.cat([torch.zeros(s, dtype=torch.bfloat16) for s in shapes], dim=dim)
        joined = cat([torch.empty(s, dtype=torch.bfloat16, device="meta") for s in shapes], dim)
        assert joined.is_meta and (joined.shape, joined.dtype) == (real.shape, real.dtype)
    with pytest.raises(RuntimeError):
        torch.cat([torch.zeros(2, 3), torch.zeros(3, 3)], dim=1)
    with pytest.raises(RuntimeError):
        cat([torch.empty(2, 3, device="meta"), torch.empty(3, 3, device="meta")], dim=1)


def test_a_new_derived_record_is_one_statement_on_postgresql(registry, tiny_dir, monkeypatch):
    """Recording a new derived checkpoint takes its parent's row (locked), checks its
    content is not registered, and inserts its row, its tensor rows and its edge: in one
    statement on PostgreSQL, and in one transaction of four statements on SQLite (the
    tensor rows one batch), on the driver's connection; nothing through SQLAlchemy."""
    from sqlalchemy import event

    from zoo.api import materialize as mat

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    by_sqlalchemy: list[str] = []
    by_driver: list[str] = []
    real_record, real_connection = mat.record_derived, registry.engine.raw_connection

    def seen(_conn, _cursor, statement, *_):
        by_sqlalchemy.append(" ".join(statement.split()))

    def recorded(*args, **kwargs):
        event.listen(registry.engine, "before_cursor_execute", seen)
        monkeypatch.setattr(registry.engine, "raw_connection", lambda: _Traced(real_connection()))
        try:
            return real_record(*args, **kwargs)
        finally:
            event.remove(registry.engine, "before_cursor_execute", seen)
            monkeypatch.setattr(registry.engine, "raw_connection", real_connection)

    class _Traced:
        def __init__(self, wrapped):
            self._wrapped = wrapped
            self.driver_connection = _TracedDriver(wrapped.driver_connection)

        def __getattr__(self, name):
            return getattr(self._wrapped, name)

    class _TracedDriver:
        def __init__(self, driver):
            object.__setattr__(self, "_driver", driver)

        def __getattr__(self, name):
            return getattr(self._driver, name)

        def __setattr__(self, name, value):
            setattr(self._driver, name, value)

        def execute(self, sql, *args):
            by_driver.append(" ".join(sql.split()))
            return self._driver.execute(sql, *args)

        def cursor(self):
            cursor = self._driver.cursor()

            class Cursor:
                def execute(self, sql, *args):
                    by_driver.append(" ".join(sql.split()))
                    return cursor.execute(sql, *args)

                def executemany(self, sql, *args):
                    by_driver.append(" ".join(sql.split()))
                    return cursor.executemany(sql, *args)

                def close(self):
                    cursor.close()

            return Cursor()

    monkeypatch.setattr(mat, "record_derived", recorded)
    made = registry.materialize(src.name, layers=1, hidden=16, method="scratch", device="cpu")
    assert by_sqlalchemy == []
    if registry.engine.dialect.name == "postgresql":
        assert [s.split()[0] for s in by_driver] == ["WITH"], by_driver
        assert "FOR UPDATE" in by_driver[0]
    else:
        work = by_driver[1:-1]
        assert [by_driver[0], by_driver[-1]] == ["BEGIN IMMEDIATE", "COMMIT"], by_driver
        assert [s.split()[0] for s in work] == ["SELECT", "INSERT", "INSERT", "INSERT"], work
        assert "config_json" not in work[0]
    assert registry.show(made.artifact.name).tensors == made.artifact.tensors
    assert [e.parent_id for e in registry.lineage(made.artifact.name).edges] == [src.id]


def test_a_materialization_matches_each_tensor_name_against_the_rules_once(
    registry, tiny_dir, monkeypatch
):
    """The ties, the layer indexes and the groups of one materialization all ask which rule
    a tensor name follows: the rule table is searched once per name, not once per question."""
    from collections import Counter

    from zoo.families import _common, get_family

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    family = get_family(src.family)
    family.__dict__.pop("_match_cache", None)
    searched: Counter[str] = Counter()
    real = _common._template

    def template(name):
        searched[name] += 1
        return real(name)

    monkeypatch.setattr(_common, "_template", template)
    made = registry.materialize(src.name, layers=1, hidden=16, method="scratch", device="cpu")
    assert searched and max(searched.values()) == 1, searched
    assert len(made.artifact.tensors) == len(made.state_dict)


def _bf16_decoder(folder: Path, family: str = "qwen2") -> Path:
    """A tiny ``family`` decoder saved in bfloat16, as most decoders are published."""
    from tinymodels import build_model

    build_model(family).to(torch.bfloat16).save_pretrained(folder)
    return folder


def test_a_wider_dtype_than_the_sources_is_computed_in_and_rounded_once(registry, tmp_path):
    """HyperCloning 3x from a bfloat16 decoder, asked for in float32, keeps the source's
    float32 logits: its divisions by 3 are made in float32, not rounded to bfloat16 and
    then widened (that was off by the bfloat16 rounding of every divided weight)."""
    from safetensors.torch import load_file

    folder = _bf16_decoder(tmp_path / "bf16")
    src = registry.import_checkpoint(folder)
    hidden = src.config["hidden_size"]
    out = tmp_path / "hc3"
    registry.materialize(
        src.name, layers=4, hidden=3 * hidden, method="hypercloning", dtype="float32", out=out
    )
    ids = torch.tensor([[1, 5, 7, 9, 2, 11, 4]])

    def logits(path: Path) -> torch.Tensor:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        with torch.no_grad():
            return model.eval()(input_ids=ids).logits

    torch.testing.assert_close(logits(out), logits(folder), rtol=0, atol=1e-5)
    key = "model.layers.0.mlp.down_proj.weight"
    x = load_file(folder / "model.safetensors")[key].float()
    y = load_file(out / "model.safetensors")[key]
    assert y.dtype == torch.float32
    assert torch.equal(y[: x.shape[0], : x.shape[1]], x / 3)


def test_a_checkpoint_recorded_before_wider_dtypes_were_computed_in_re_derives_by_that_rule(
    registry, tmp_path, monkeypatch
):
    """Under dtype version 1 every signal was derived in its source's dtype and the result
    cast to the one asked for: HyperCloning's divisions of a bfloat16 source, rounded to
    bfloat16. A virtual checkpoint recorded then re-derives by that rule (its edge has no
    dtype version) and verifies; one recorded now divides in float32. A request in the
    source's own dtype, or with none, is the same under both rules."""
    import dataclasses

    from safetensors.torch import load_file

    from zoo.api import materialize as mat
    from zoo.derive import DTYPE_VERSION

    src = registry.import_checkpoint(_bf16_decoder(tmp_path / "bf16"))
    grow = dict(layers=4, hidden=3 * src.config["hidden_size"], method="hypercloning")
    real_plan = mat.make_plan

    def under_version_1(**kw):
        monkeypatch.setattr(
            mat,
            "make_plan",
            lambda *a, **k: dataclasses.replace(real_plan(*a, **k), dtype_version=1),
        )
        monkeypatch.setattr("zoo.derive.DTYPE_VERSION", "1")
        try:
            return registry.materialize(src.name, **grow, **kw)
        finally:
            monkeypatch.undo()

    old = under_version_1(dtype="float32")
    (edge,) = registry.lineage(old.artifact.name, down=False).edges
    assert edge.recipe["dtype_version"] == "1"
    now = registry.materialize(src.name, **grow, dtype="float32")
    (edge,) = registry.lineage(now.artifact.name, down=False).edges
    assert edge.recipe["dtype_version"] == DTYPE_VERSION
    assert now.artifact.content_hash != old.artifact.content_hash
    key = "model.layers.1.self_attn.o_proj.weight"
    x = load_file(tmp_path / "bf16" / "model.safetensors")[key].float()
    block = (slice(0, x.shape[0]), slice(0, x.shape[1]))
    assert torch.equal(now.state_dict[key][block], x / 3)
    assert torch.equal(old.state_dict[key][block], (x / 3).to(torch.bfloat16).float())
    for made in (old, now):
        again = registry.rederive(made.artifact.name)
        assert again.artifact.content_hash == made.artifact.content_hash
    for dtype in ("bfloat16", "auto"):
        same = registry.materialize(src.name, **grow, dtype=dtype)
        assert under_version_1(dtype=dtype).artifact.content_hash == same.artifact.content_hash


def test_a_materialized_result_shows_what_was_made_not_every_tensor(registry, tiny_dir, tmp_path):
    """A notebook prints a call's result: one short line naming the recorded checkpoint,
    how many tensors are held and where, and the folder written; never the tensors'
    values, which ran to thousands of characters for a model of 42 tensors."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    made = registry.materialize(src.name, layers=2, hidden=16)
    assert repr(made) == (
        f"Materialized(artifact={made.artifact.name!r}, "
        f"state_dict=<{len(made.state_dict)} tensors, on cpu>, out=None)"
    )
    written = registry.materialize(src.name, layers=2, hidden=16, out=tmp_path / "o")
    assert repr(written) == (
        f"Materialized(artifact={made.artifact.name!r}, state_dict=None, out={tmp_path / 'o'!r})"
    )
