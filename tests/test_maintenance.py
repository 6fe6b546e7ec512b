"""rm, gc, fsck and verify on both databases.

Learngenes and derived checkpoints are made here directly through ``zoo.db.queries``
(stored blobs, or virtual rows whose tensors exist only as hashes) so that these tests
depend on nothing but the registry's core.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from tinymodels import copies

from zoo.db import queries
from zoo.db.entities import TensorRecord
from zoo.db.models import Artifact, Edge
from zoo.errors import ConflictError, InvalidInputError, NotFoundError
from zoo.store import sha256_hex
from zoo.store.base import temp_name

DAY = 86400


def _records(prefix: str, payloads: list[bytes]) -> list[TensorRecord]:
    return [
        TensorRecord(f"{prefix}.{i}", "U8", (len(p),), len(p), sha256_hex(p))
        for i, p in enumerate(payloads)
    ]


def _add(
    reg,
    name: str,
    *,
    kind: str = "learngene",
    parent: str | None = None,
    payloads: list[bytes] = (),
    virtual: bool = False,
) -> int:
    """Register an artifact holding ``payloads`` (stored unless virtual), under ``parent``."""
    recs = _records(name, list(payloads))
    if not virtual:
        for p in payloads:
            reg.store.put(p)

    def work(session):
        row = queries.insert_artifact(
            session,
            kind=kind,
            name=name,
            family="bert",
            content_hash=sha256_hex(name.encode()),
            config=None,
            info={},
            tensors=recs,
            created_by="test",
            virtual=virtual,
        )
        if parent is not None:
            queries.add_edge(
                session,
                parent_id=queries.resolve(session, parent).id,
                child_id=row.id,
                relation="extract" if kind == "learngene" else "materialize",
                recipe={},
                zoo_version="test",
                by="test",
            )
        return row.id

    return reg.transaction(work)


def _soft_delete(reg, name: str) -> None:
    """Mark a row removed behind rm's back (rm refuses while children are kept)."""

    def work(session):
        session.scalar(select(Artifact).where(Artifact.name == name)).deleted_at = queries.now()

    reg.transaction(work)


def _age_all_blobs(reg, seconds: float) -> None:
    past = time.time() - seconds
    for digest in reg.store.digests():
        os.utime(reg.store._path(digest), (past, past))


def _own_digests(info, *others) -> list[str]:
    """Digests only ``info`` holds (zero biases and unit norms are shared across models)."""
    counts: dict[str, int] = {}
    for t in info.tensors:
        counts[t.digest] = counts.get(t.digest, 0) + 1
    shared = {t.digest for o in others for t in o.tensors}
    return sorted(d for d, n in counts.items() if n == 1 and d not in shared)


def _names(reg, *, include_deleted: bool = True) -> set[str]:
    return {i.name for i in reg.list(include_deleted=include_deleted)}


@pytest.fixture
def family(registry, tiny_dir):
    """source -> learngene (stored) -> derived (virtual), plus an unrelated source."""
    src = registry.import_checkpoint(tiny_dir("bert"), name="src")
    other = registry.import_checkpoint(tiny_dir("gpt2"), name="other")
    _add(registry, "lg", parent="src", payloads=[b"lg-0" * 64, b"lg-1" * 64])
    _add(registry, "virt", kind="derived", parent="lg", payloads=[b"never stored"], virtual=True)
    return {"src": src, "other": other}


# --- rm ------------------------------------------------------------------------------------


def test_rm_is_a_soft_delete(registry, family, run_cli):
    stored = set(registry.store.digests())
    [removed] = registry.rm("other")
    assert removed.name == "other" and removed.deleted
    assert "other" not in _names(registry, include_deleted=False)
    assert "other" in _names(registry)
    with pytest.raises(NotFoundError):
        registry.show("other")
    assert set(registry.store.digests()) == stored  # blobs go only at gc
    code, _, err = run_cli("rm", "other")
    assert code == 3 and "other" in err


def test_rm_is_refused_while_something_derived_is_kept(registry, family, run_cli):
    with pytest.raises(ConflictError, match=r"lg.*cascade=True"):
        registry.rm("src")
    code, out, err = run_cli("rm", "lg")
    assert code == 4 and out == "" and err.count("\n") == 1 and "virt" in err
    assert {"src", "lg", "virt"} <= _names(registry, include_deleted=False)
    # Once the descendants are gone, it may go.
    registry.rm("virt")
    registry.rm("lg")
    assert [i.name for i in registry.rm("src")] == ["src"]


def test_rm_cascade_removes_descendants(registry, family, run_cli):
    code, out, _ = run_cli("rm", "src", "--cascade", "--json")
    assert code == 0
    assert sorted(i["name"] for i in json.loads(out)) == ["lg", "src", "virt"]
    assert _names(registry, include_deleted=False) == {"other"}


def test_rm_keeps_checkpoints_only_declared_as_made_from_it(
    registry, family, tiny_dir, tmp_path, run_cli
):
    """A fine-tune linked to a source, or whose model card names it, is the user's own: it
    neither holds the source back nor goes with --cascade, and its lineage keeps the source,
    shown as removed, whose row gc keeps as its anchor (the source's own blobs go)."""
    linked = registry.import_checkpoint(tiny_dir("bert", seed=1), name="linked")
    registry.link("linked", "src", relation="finetune")
    registry.link("linked", "other", relation="merge")
    carded_dir = tmp_path / "carded"
    shutil.copytree(tiny_dir("bert", seed=2), carded_dir)
    (carded_dir / "README.md").write_text("---\nbase_model: src\n---\n")
    carded = registry.import_checkpoint(carded_dir, name="carded")

    # Only declared children: removed without --cascade.
    assert [i.name for i in registry.rm("other")] == ["other"]
    # What zoo made from src goes with it; what was declared stays.
    code, out, _ = run_cli("rm", "src", "--cascade", "--json")
    assert code == 0
    assert sorted(i["name"] for i in json.loads(out)) == ["lg", "src", "virt"]
    assert _names(registry, include_deleted=False) == {"linked", "carded"}
    for name, parents in (("linked", {"src", "other"}), ("carded", {"src"})):
        graph = registry.lineage(name, down=False)
        shown = {graph.nodes[e.parent_id].name: graph.nodes[e.parent_id] for e in graph.edges}
        assert set(shown) == parents and all(node.deleted for node in shown.values())
    assert "src (removed)" in run_cli("lineage", "carded")[1]

    _age_all_blobs(registry, 2 * DAY)
    report = registry.gc(grace=0)
    assert {"src", "other"} <= set(report.kept_deleted)
    assert not {"src", "other"} & set(report.hard_deleted)
    swept = {b.name for b in report.swept}
    assert set(_own_digests(family["src"], linked, carded)) <= swept
    assert registry.verify("linked").ok and registry.verify("carded").ok
    assert "src (removed)" in run_cli("lineage", "carded")[1]


def test_a_removed_artifact_is_shown_and_traced_when_asked_for(registry, family, tiny_dir, run_cli):
    """An auditor asking about a removed source (its rows stay until gc) gets its record
    and what was made from it with --all; without it, the refusal says how to ask."""
    registry.import_checkpoint(tiny_dir("bert", seed=1), name="linked")
    registry.link("linked", "src", relation="finetune")
    registry.rm("src", cascade=True)

    code, out, err = run_cli("show", "src")
    assert code == 3 and out == "" and "removed with `zoo rm`" in err and "--all" in err
    with pytest.raises(NotFoundError):
        registry.lineage("src")

    info = registry.show("src", include_deleted=True)
    assert info.name == "src" and info.deleted
    assert info.tensor_count == family["src"].tensor_count
    code, out, _ = run_cli("show", "src", "--all")
    assert code == 0 and "kind:      source (removed with `zoo rm`" in out
    code, out, _ = run_cli("show", "src", "--all", "--json")
    assert code == 0 and json.loads(out)["deleted"] is True

    graph = registry.lineage("src", up=False, include_deleted=True)
    children = {graph.nodes[e.child_id].name: graph.nodes[e.child_id] for e in graph.edges}
    # What zoo made went with it (marked); the declared fine-tune stays kept.
    assert set(children) == {"lg", "virt", "linked"}
    assert children["lg"].deleted and not children["linked"].deleted
    assert graph.nodes[graph.root].deleted
    whole = registry.lineage("src", include_deleted=True)
    code, out, _ = run_cli("lineage", "src", "--all", "--format", "json")
    assert code == 0 and json.loads(out) == json.loads(json.dumps(whole.to_json(), default=str))
    assert "src (removed)" in run_cli("lineage", "src", "--all")[1]


def test_a_declared_parent_removed_keeps_its_row_not_its_blobs(registry, family, tiny_dir):
    """A virtual checkpoint made from a linked fine-tune is re-derived from the fine-tune,
    not from the fine-tune's declared base: the removed base's blobs are swept, its row
    stays as the anchor (its name held, which the error says) and everything kept still
    re-derives."""
    ft = registry.import_checkpoint(tiny_dir("bert", seed=1), name="ft")
    registry.link("ft", "src", relation="finetune")
    small = registry.materialize("ft", layers=2, hidden=16).artifact
    assert small.virtual
    registry.rm("src", cascade=True)
    _age_all_blobs(registry, 2 * DAY)
    report = registry.gc(grace=0)
    assert "src" in report.kept_deleted
    assert set(_own_digests(family["src"], ft)) <= {b.name for b in report.swept}
    assert registry.rederive(small.name).artifact.content_hash == small.content_hash
    assert registry.fsck().ok and registry.verify().ok
    with pytest.raises(ConflictError, match="once nothing kept descends from it"):
        registry.import_checkpoint(tiny_dir("gpt2", seed=1), name="src")


def test_a_removed_stored_checkpoint_made_again_without_store_is_virtual(registry, family):
    """Its blobs may have been swept while it was removed (its row kept as a declared
    child's anchor): brought back by the same materialization without --store, it is
    virtual, so nothing kept points at blobs that are gone; with --store, stored again."""
    ask = dict(layers=2, hidden=16, method="weight-selection")
    stored = registry.materialize("src", store=True, **ask).artifact
    _add(registry, "declared", kind="source", payloads=[b"a fine-tune of it" * 4])
    registry.link("declared", stored.name, relation="finetune")
    registry.rm(stored.name)
    _age_all_blobs(registry, 2 * DAY)
    swept = {b.name for b in registry.gc(grace=0).swept}
    assert set(_own_digests(stored, family["src"])) <= swept
    again = registry.materialize("src", **ask).artifact
    assert again.id == stored.id and again.virtual and not again.deleted
    assert registry.fsck().ok and registry.verify().ok
    registry.rm(stored.name)
    kept = registry.materialize("src", store=True, **ask).artifact
    assert kept.id == stored.id and not kept.virtual
    assert all(registry.store.has(t.digest) for t in kept.tensors)
    assert registry.fsck().ok


# --- gc ------------------------------------------------------------------------------------


def test_gc_sweeps_only_what_nothing_kept_needs(registry, family, tiny_dir, run_cli):
    src_blobs = {t.digest for t in family["src"].tensors}
    other = family["other"]  # tensors, and the generation config stored beside them
    other_blobs = {t.digest for t in (*other.tensors, *other.files)} - src_blobs
    kept_blobs = set(registry.store.digests()) - other_blobs
    registry.rm("other")
    # A dry run reports, changes nothing.
    code, out, _ = run_cli("gc", "--dry-run", "--grace", "0", "--json")
    assert code == 0
    dry = json.loads(out)
    assert {b["name"] for b in dry["swept"]} == other_blobs and dry["hard_deleted"] == ["other"]
    assert set(registry.store.digests()) == kept_blobs | other_blobs
    assert "other" in _names(registry)
    # Fresh blobs survive the default grace period; the removed row is forgotten, and its
    # blobs are now orphans.
    report = registry.gc()
    assert report.swept == () and report.too_young == len(other_blobs)
    assert report.hard_deleted == ("other",) and "other" not in _names(registry)
    assert {o.name for o in registry.fsck().orphans} == other_blobs
    # Old enough: swept, exactly those.
    _age_all_blobs(registry, 2 * DAY)
    code, out, _ = run_cli("gc")
    assert code == 0 and f"swept {len(other_blobs)} blobs" in out
    assert set(registry.store.digests()) == kept_blobs
    assert registry.fsck().ok and registry.verify().ok
    # Nothing is left to do, and the name is free again.
    assert registry.gc(grace=0).swept == ()
    assert registry.import_checkpoint(tiny_dir("gpt2"), name="other").name == "other"


def test_gc_names_the_first_removed_rows_it_forgets_and_json_all(registry, run_cli):
    """A gc after a `zoo rm --cascade` of a wide tree printed every forgotten name on one
    line (30 KB for 1,000 rows); it names the first few, as its other reports do."""
    _add(registry, "root", kind="source", payloads=[b"root" * 16])
    names = sorted(f"kid-{i:02d}" for i in range(20))
    for name in names:
        _add(registry, name, kind="derived", parent="root", virtual=True)
    registry.rm("root", cascade=True)
    for flag in ("--dry-run", None):
        code, out, _ = run_cli("gc", *([flag] if flag else []))
        verb = "would forget" if flag else "forgot"
        assert code == 0
        assert (
            f"{verb} 21 removed artifacts: {', '.join(names[:8])} and 13 more, listed in "
            "full by --json as hard_deleted"
        ) in out
    assert not _names(registry)
    _add(registry, "root2", kind="source", payloads=[b"root" * 16])
    for name in names:
        _add(registry, name, kind="derived", parent="root2", virtual=True)
    registry.rm("root2", cascade=True)
    code, out, _ = run_cli("gc", "--json")
    assert code == 0 and json.loads(out)["hard_deleted"] == sorted(["root2", *names])


def test_gc_keeps_blobs_shared_with_kept_artifacts(registry, family):
    shared = b"lg-0" * 64  # also a tensor of lg
    _add(registry, "dup", parent="src", payloads=[shared, b"only dup" * 8])
    registry.rm("dup")
    report = registry.gc(grace=0)
    assert [b.name for b in report.swept] == [sha256_hex(b"only dup" * 8)]
    assert registry.store.has(sha256_hex(shared))
    assert registry.fsck().ok


def test_virtual_checkpoint_keeps_removed_ancestors_blobs(registry, family):
    """A kept virtual checkpoint must stay re-derivable: its ancestors' blobs stay."""
    needed = {t.digest for name in ("src", "lg") for t in registry.show(name).tensors}
    _soft_delete(registry, "lg")
    _soft_delete(registry, "src")
    report = registry.gc(grace=0)
    assert needed <= set(registry.store.digests())
    assert not needed & {b.name for b in report.swept}
    assert set(report.kept_deleted) == {"src", "lg"} and report.hard_deleted == ()
    assert registry.verify("virt").ok and registry.verify("virt").checked == len(needed)
    # Remove the virtual checkpoint too: now everything of that family can go.
    registry.rm("virt")
    report = registry.gc(grace=0)
    assert set(report.hard_deleted) == {"src", "lg", "virt"}
    other_blobs = {t.digest for t in (*family["other"].tensors, *family["other"].files)}
    assert set(registry.store.digests()) == other_blobs
    with registry.session() as s:
        assert s.scalars(select(Edge)).all() == []
    assert _names(registry) == {"other"}
    assert registry.fsck().ok


def test_stored_child_keeps_removed_parent_row_and_the_blobs_it_is_derived_from(registry, family):
    """Lineage rows stay while a kept artifact descends from them; so do the blobs a kept
    one zoo made is re-derived from, even a stored one (`zoo export` and `zoo rederive`
    derive it again). A declared parent's go (see the test above)."""
    registry.rm("virt")
    _add(registry, "real", kind="derived", parent="lg", payloads=[b"real" * 16])
    _soft_delete(registry, "lg")
    report = registry.gc(grace=0)
    lg_blobs = {sha256_hex(b"lg-0" * 64), sha256_hex(b"lg-1" * 64)}
    assert not lg_blobs & {b.name for b in report.swept}
    assert lg_blobs <= set(registry.store.digests())
    assert "lg" in report.kept_deleted and "lg" in _names(registry)
    assert "virt" in report.hard_deleted
    assert registry.fsck().ok


@pytest.fixture
def base_of_removed_task_model(registry, tiny_dir, tmp_path):
    """A llama task model (with its generation config), its base model saved on its own
    (no side files: it takes the task model's through the backbone edge), a virtual size
    materialized from the base model; then the task model removed."""
    import transformers

    task_dir = tiny_dir("llama")
    task = registry.import_checkpoint(task_dir)
    transformers.AutoModel.from_pretrained(task_dir).save_pretrained(tmp_path / "base")
    base = registry.import_checkpoint(tmp_path / "base")
    small = registry.materialize(base.name, layers=1, hidden=16).artifact
    assert base.files == () and "generation_config.json" in {f.name for f in task.files}
    registry.rm(task.name)
    return {"task": task, "base": base, "small": small, "task_dir": task_dir}


def test_gc_keeps_the_side_files_kept_artifacts_take_from_a_removed_ancestor(
    registry, base_of_removed_task_model, tmp_path
):
    """A base model saved on its own, and what is materialized from it, carry the task
    model's side files: removing the task model sweeps its own tensors, not those files,
    until nothing kept takes them any more."""
    task, base, small = (base_of_removed_task_model[k] for k in ("task", "base", "small"))
    task_dir = base_of_removed_task_model["task_dir"]
    side = {f.digest for f in task.files}
    report = registry.gc(grace=0)
    assert report.swept and not side & {b.name for b in report.swept}
    assert task.name in report.kept_deleted
    exported = registry.export(base.name, out=tmp_path / "export")
    assert (exported / "generation_config.json").read_bytes() == (
        task_dir / "generation_config.json"
    ).read_bytes()
    # And so does the size materialized from the base model, through its materialize edge.
    again = registry.rederive(small.name, out=tmp_path / "small").out
    assert (again / "generation_config.json").read_bytes() == (
        task_dir / "generation_config.json"
    ).read_bytes()
    assert registry.fsck().ok and registry.verify().ok
    # Once nothing kept takes them, they go with the rest of the task model.
    registry.rm(base.name, cascade=True)
    report = registry.gc(grace=0)
    assert side <= {b.name for b in report.swept}
    assert set(report.hard_deleted) == {task.name, base.name, small.name}
    assert list(registry.store.digests()) == []


def test_verify_and_fsck_check_the_side_files_a_kept_artifact_takes_from_a_removed_one(
    registry, base_of_removed_task_model, run_cli
):
    """A side file of a removed task model that its kept base model takes is a blob the
    base model needs: fsck and verify report it missing under the base model's name (and
    the size made from it), and `zoo verify --repair` reads it again from the task
    model's folder."""
    task, base, small = (base_of_removed_task_model[k] for k in ("task", "base", "small"))
    task_dir = base_of_removed_task_model["task_dir"]
    victim = next(f.digest for f in task.files if f.name == "generation_config.json")
    registry.store.delete(victim)
    heirs = tuple(sorted((base.name, small.name)))
    assert [(p.digest, p.problem, p.artifacts) for p in registry.fsck().problems] == [
        (victim, "missing", heirs)
    ]
    assert [(p.digest, p.problem, p.artifacts) for p in registry.verify().problems] == [
        (victim, "missing", heirs)
    ]
    assert [p.digest for p in registry.verify(base.name).problems] == [victim]
    assert [p.digest for p in registry.verify(small.name).problems] == [victim]
    code, out, _ = run_cli("verify", base.name)
    assert code == 6 and f"reads it again from {task_dir}" in out, out
    code, out, _ = run_cli("verify", "--repair")
    assert code == 0 and registry.store.verify(victim), out
    assert registry.store.get(victim) == (task_dir / "generation_config.json").read_bytes()
    assert registry.fsck().ok and task.name not in {i.name for i in registry.list()}


def test_verify_and_fsck_check_what_a_kept_checkpoint_is_derived_from_under_a_removed_source(
    registry, tiny_dir, tmp_path, run_cli
):
    """A derived checkpoint kept under a removed source (brought back by an import of its
    --out folder) is exported by deriving it again from the source's blobs, which gc
    keeps: fsck and verify report one missing under the derived checkpoint's name, `zoo
    verify NAME` too, and `zoo verify --repair` reads it again from the source's folder,
    after which the export works."""
    src_dir = tiny_dir("bert")
    registry.import_checkpoint(src_dir, name="src")
    src = registry.show("src")
    out = tmp_path / "small"
    registry.materialize("src", layers=1, hidden=16, method="dwt", out=out)
    registry.rm("src", cascade=True)
    back = registry.import_checkpoint(out)
    registry.gc(grace=0)
    assert registry.fsck().ok and registry.verify().ok
    own = {t.digest for t in back.tensors}
    victim = next(t.digest for t in src.tensors if t.digest not in own)
    registry.store.delete(victim)
    assert [(p.digest, p.problem, p.artifacts) for p in registry.fsck().problems] == [
        (victim, "missing", (back.name,))
    ]
    assert [(p.digest, p.problem, p.artifacts) for p in registry.verify().problems] == [
        (victim, "missing", (back.name,))
    ]
    code, text, _ = run_cli("verify", back.name)
    assert code == 6 and victim[:16] in text and f"reads it again from {src_dir}" in text, text
    code, text, _ = run_cli("verify", "--repair")
    assert code == 0 and registry.store.verify(victim), text
    assert registry.fsck().ok
    assert registry.audit(registry.export(back.name, out=tmp_path / "exported")).artifact.name == (
        back.name
    )


def test_gc_never_deletes_a_referenced_blob(registry, family):
    _age_all_blobs(registry, 30 * DAY)
    before = set(registry.store.digests())
    report = registry.gc(grace=0)
    assert report.swept == () and set(registry.store.digests()) == before


@pytest.mark.parametrize(("age_s", "grace"), [(2 * DAY, "1h"), (45 * 60, "30m")])
def test_gc_leaves_a_blob_a_writer_is_reusing(registry, tiny_dir, monkeypatch, age_s, grace):
    """The collector runs between a writer's blobs and its row: nothing it needs goes,
    whatever the grace, a blob last written 45 minutes ago under a 30-minute grace
    included (a reused blob's time was once refreshed only past an hour)."""
    info = registry.import_checkpoint(tiny_dir("gpt2"))
    registry.rm(info.name)
    registry.gc(grace="1000d")  # the row is forgotten; its blobs are old orphans now
    _age_all_blobs(registry, age_s)
    transaction, ran = registry.transaction, []

    def collect_first(work, **kwargs):
        if not ran:
            ran.append(None)  # gc's own transaction must not collect again
            ran[0] = registry.gc(grace=grace)
        return transaction(work, **kwargs)

    monkeypatch.setattr(registry, "transaction", collect_first)
    registry.import_checkpoint(tiny_dir("gpt2"))  # reuses the blobs, then writes its row
    monkeypatch.undo()
    assert ran and ran[0].swept == ()
    assert registry.fsck().ok and registry.verify().ok


@pytest.mark.parametrize("first", ["gc", "import"])
def test_gc_forgetting_a_row_an_import_brings_back_keeps_it_whole(
    registry, tiny_dir, monkeypatch, tmp_path, first
):
    """`zoo gc` forgets a removed row while an import of the same content brings it back.
    Whichever locks the row first, the artifact ends whole: all its tensors' records and
    blobs (on PostgreSQL the import once revived the row between gc's deletion of its
    tensor records and of the row itself, leaving a kept artifact with no tensors)."""
    import threading

    import zoo
    from zoo.api import catalog, maintenance

    # Weights and config only, brought back from another folder (a new import record):
    # bringing the row back then touches no row gc deletes, so nothing but the row's own
    # lock orders the two.
    folder, again = tmp_path / "first" / "m0", tmp_path / "copy" / "m0"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dir("gpt2") / name, folder / name)
    shutil.copytree(folder, again)
    tensors = len(registry.import_checkpoint(folder, name="m0").tensors)
    registry.rm("m0")
    inside, go_on = threading.Event(), threading.Event()
    if first == "gc":  # gc holds the row, and waits after deleting its tensor records
        real = maintenance.queries.record_alias_removals

        def held(*args, **kwargs):
            inside.set()
            go_on.wait(2)  # the import is then waiting for the row (or, unfixed, done)
            return real(*args, **kwargs)

        monkeypatch.setattr(maintenance.queries, "record_alias_removals", held)
    else:  # the import holds the row it brings back, and waits before its commit
        real = catalog._record

        def held(*args, **kwargs):
            inside.set()
            go_on.wait(2)
            return real(*args, **kwargs)

        monkeypatch.setattr(catalog, "_record", held)
    errors = []

    def collect():
        try:
            other = zoo.connect()
            other.gc(grace="1h")
            other.close()
        except Exception as exc:  # reported below
            errors.append(exc)

    def bring_back():
        try:
            registry.import_checkpoint(again, name="m0")
        except Exception as exc:
            errors.append(exc)

    one, two = (collect, bring_back) if first == "gc" else (bring_back, collect)
    a, b = threading.Thread(target=one), threading.Thread(target=two)
    a.start()
    assert inside.wait(60)
    b.start()
    b.join(3)  # blocked on the row lock until the first lets go
    go_on.set()
    a.join(60)
    b.join(60)
    monkeypatch.undo()
    assert errors == []
    info = registry.show("m0")
    assert not info.deleted and len(info.tensors) == tensors
    assert registry.fsck().ok and registry.verify().ok
    out = registry.export("m0", out=tmp_path / "m0")
    assert (out / "model.safetensors").stat().st_size > 1000


@pytest.mark.parametrize("forgotten", [False, True], ids=["removed", "forgotten"])
@pytest.mark.parametrize("out", [False, True], ids=["virtual", "out"])
def test_a_materialization_whose_parent_goes_meanwhile_records_nothing(
    registry, tiny_dir, tmp_path, monkeypatch, forgotten, out
):
    """`zoo rm` (and `zoo gc` forgetting the row) while a size is derived from it: the
    record is refused in zoo's words (it hung under a removed parent, or failed on the
    edge's foreign key as 'database error'), and no --out folder is written."""
    import zoo
    from zoo.api import materialize as mat

    src = registry.import_checkpoint(tiny_dir("bert"), name="src")
    lg = registry.extract(src.name, method="dwt", wavelet="haar", levels=1)
    hook = "derived_name" if out else "record_derived"
    real = getattr(mat, hook)

    def removed_first(*args, **kwargs):
        other = zoo.connect()
        other.rm(src.name, cascade=True)
        if forgotten:
            other.gc(grace="0s")
        other.close()
        return real(*args, **kwargs)

    monkeypatch.setattr(mat, hook, removed_first)
    target = tmp_path / "small" if out else None
    with pytest.raises(ConflictError, match=f"{lg.name} was removed while this materialization"):
        registry.materialize(lg.name, layers=2, hidden=16, device="cpu", out=target)
    monkeypatch.undo()
    assert registry.list(kind="derived", include_deleted=True) == []
    assert target is None or not target.exists()
    assert registry.fsck().ok


def test_rm_waits_for_a_record_under_way_and_then_keeps_its_parent(registry, tiny_dir, monkeypatch):
    """The record holds its parent's row from its start: an `rm` arriving meanwhile waits,
    then sees the new child and refuses (it removed the parent beneath it). The general
    path's record, paused inside its transaction; the driver's one-statement record
    (tests/test_derived_rows.py) takes the same lock."""
    import threading

    import zoo
    from zoo.db import derived_rows, queries

    monkeypatch.setattr(
        derived_rows, "insert_derived", lambda *a, **k: (derived_rows.Outcome.GENERAL, None)
    )

    src = registry.import_checkpoint(tiny_dir("bert"), name="src")
    inside, go_on = threading.Event(), threading.Event()
    real = queries.live_and_held  # the record's look at its parent, which locks its row

    def held(*args, **kwargs):
        found = real(*args, **kwargs)
        inside.set()
        go_on.wait(3)
        return found

    errors: list[Exception] = []

    def remove():
        other = zoo.connect()
        try:
            other.rm(src.name)
        except Exception as exc:  # the refusal, checked below
            errors.append(exc)
        finally:
            other.close()

    queries.live_and_held = held
    try:
        made = threading.Thread(
            target=lambda: registry.materialize(src.name, layers=2, hidden=16, device="cpu")
        )
        made.start()
        assert inside.wait(60)
        rm = threading.Thread(target=remove)
        rm.start()
        rm.join(1)  # waiting for the row
        go_on.set()
        made.join(60)
        rm.join(60)
    finally:
        queries.live_and_held = real
    assert [type(e) for e in errors] == [ConflictError], errors
    assert "derived from it" in str(errors[0])
    (child,) = registry.list(kind="derived")
    assert not registry.show(src.name).deleted and not child.deleted


def test_rm_of_a_row_another_rm_and_gc_took_meanwhile_is_one_line(registry, tiny_dir, monkeypatch):
    """Two `zoo rm` of one artifact, a gc forgetting it between the second's look-up and
    its write: the second says the artifact was removed, as if it had come later (it
    once ended in SQLAlchemy's StaleDataError, a traceback)."""
    import threading

    import zoo
    from zoo.api import maintenance

    if registry.engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's (SQLite runs the two one after the other)")
    registry.import_checkpoint(tiny_dir("gpt2"), name="m0")
    real, done = maintenance.queries.resolve, []

    def resolve_then_lose_it(session, query):
        row = real(session, query)
        if not done:  # the other rm and gc (not patched again), committed before this write
            done.append(True)
            other, errors = zoo.connect(), []

            def rm_and_gc():
                try:
                    other.rm("m0")
                    done.append(other.gc(grace="1h").hard_deleted)
                except Exception as exc:  # reported below
                    errors.append(exc)

            worker = threading.Thread(target=rm_and_gc)
            worker.start()
            worker.join(60)
            other.close()
            assert errors == []
        return row

    monkeypatch.setattr(maintenance.queries, "resolve", resolve_then_lose_it)
    with pytest.raises(NotFoundError, match="No artifact named 'm0'"):
        registry.rm("m0")
    assert done == [True, ("m0",)] and registry.fsck().ok


def test_gc_bad_grace_is_refused(registry, run_cli):
    with pytest.raises(InvalidInputError):
        registry.gc(grace="tomorrow")
    code, _, err = run_cli("gc", "--grace", "-5h")
    assert code == 2 and "duration" in err


# --- fsck ----------------------------------------------------------------------------------


def test_fsck_clean_registry(registry, family, run_cli):
    code, out, _ = run_cli("fsck", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["problems"] == []
    assert report["orphans"] == [] and report["temp_files"] == []


def test_fsck_finds_missing_and_wrong_size_blobs(registry, family, run_cli):
    gone, short = _own_digests(family["src"], family["other"])[:2]
    registry.store.delete(gone)
    path = registry.store._path(short)
    path.write_bytes(path.read_bytes()[:-1])
    report = registry.fsck()
    assert not report.ok
    problems = {p.digest: p for p in report.problems}
    assert problems[gone].problem == "missing" and problems[gone].artifacts == ("src",)
    assert problems[short].problem == "wrong-size"
    code, out, _ = run_cli("fsck")
    assert code == 6 and "missing" in out and "src" in out
    # Repair never touches data rows need.
    registry.fsck(repair=True, grace=0)
    assert not registry.fsck().ok and registry.store.has(short)


def test_an_artifact_deleted_by_hand_is_found_by_fsck_and_refused_by_lineage(
    registry, family, run_cli
):
    """SQLite's own shell does not enforce foreign keys: an artifact row deleted there
    leaves its tensors, imports and edges naming it. fsck says so (exit 6) and lineage
    refuses in one line, where it stopped with a traceback."""
    import sqlite3

    from zoo.errors import VerificationError

    url = registry.settings.db_url
    if not url.startswith("sqlite"):
        pytest.skip("PostgreSQL enforces foreign keys whoever deletes")
    with registry.session() as session:
        assert queries.dangling_rows(session) == []
    (src_id,) = [i.id for i in registry.list() if i.name == "src"]
    with sqlite3.connect(url.split("///", 1)[1]) as db:  # foreign keys off, as the shell has
        db.execute("DELETE FROM artifacts WHERE id = ?", (src_id,))
    report = registry.fsck()
    assert not report.ok
    assert any(
        d.endswith("of artifact_tensors name a row of artifacts that is not there")
        for d in report.dangling
    ), report.dangling
    assert "1 row of edges names a row of artifacts that is not there" in report.dangling
    code, out, _ = run_cli("fsck")
    assert code == 6 and "database: 1 row of edges names a row of artifacts" in out
    code, out, _ = run_cli("fsck", "--json")
    assert (
        code == 6
        and "1 row of edges names a row of artifacts that is not there"
        in (json.loads(out)["dangling"])
    )
    with pytest.raises(VerificationError, match=f"edges name artifact id {src_id}, which"):
        registry.lineage("lg")
    code, _, err = run_cli("lineage", "lg")
    assert code == 6 and err.count("\n") == 1 and "zoo fsck" in err


def test_gc_keeps_the_blobs_of_rows_whose_artifact_was_deleted_by_hand(registry, family, run_cli):
    """fsck counted the tensor rows of an artifact deleted with SQLite's shell as
    references while gc's dry run listed their blobs (20 of them) to sweep, and gc swept
    them: the backup that restores the row needs them. Both now keep them, and the dry
    run lists what gc then sweeps: the orphans fsck lists."""
    import sqlite3

    url = registry.settings.db_url
    if not url.startswith("sqlite"):
        pytest.skip("PostgreSQL enforces foreign keys whoever deletes")
    orphan, _ = registry.store.put(b"nobody points at me")
    with sqlite3.connect(url.split("///", 1)[1]) as db:  # foreign keys off, as the shell has
        db.execute("DELETE FROM artifacts WHERE id = ?", (family["other"].id,))
    before = set(registry.store.digests())
    assert {t.digest for t in family["other"].tensors} <= before
    fsck = registry.fsck()
    assert [o.name for o in fsck.orphans] == [orphan]
    code, out, _ = run_cli("gc", "--dry-run", "--grace", "0", "--json")
    assert code == 0 and [s["name"] for s in json.loads(out)["swept"]] == [orphan]
    assert [s.name for s in registry.gc(grace=0).swept] == [orphan]
    assert set(registry.store.digests()) == before - {orphan}


def test_fsck_ignores_virtual_and_removed_rows(registry, family):
    # virt's tensors were never stored: not a problem. Nor is a removed row's missing blob.
    registry.rm("other")
    for t in family["other"].tensors:
        if t.digest not in {t.digest for t in family["src"].tensors}:
            registry.store.delete(t.digest)
    assert registry.fsck().ok


def test_fsck_repair_removes_old_leftovers_and_orphans_only(registry, family, run_cli):
    """Leftovers are no damage (exit 6), but fsck exited 0 for them as for a clean
    store; it exits 13 while some remain for --repair or gc to clear."""
    orphan, _ = registry.store.put(b"nobody points at me")
    temp = registry.store._path(orphan).parent / temp_name(orphan)
    temp.write_bytes(b"partial")
    report = registry.fsck()
    assert report.ok  # leftovers are harmless
    assert [o.name for o in report.orphans] == [orphan] and len(report.temp_files) == 1
    referenced = set(registry.store.digests()) - {orphan}
    code, out, _ = run_cli("fsck")  # a full disk's leftovers: how to sweep them at once
    assert code == 13 and "`zoo gc --grace 0` sweeps them at once when no writer" in out
    code, out, _ = run_cli("fsck", "--json")
    assert code == 13 and json.loads(out)["left"] == 2
    # Younger than the grace period: kept (a writer may still be between blob and row).
    assert registry.fsck(repair=True).removed == ()
    assert registry.store.has(orphan) and temp.exists()
    code, out, _ = run_cli("fsck", "--repair")
    assert code == 13 and "removed 0 older than 1.0d; kept 2 younger ones" in out
    assert "run `zoo fsck --repair`" not in out
    code, out, _ = run_cli("fsck", "--repair", "--grace", "0", "--json")
    assert code == 0 and len(json.loads(out)["removed"]) == 2 and json.loads(out)["left"] == 0
    assert not registry.store.has(orphan) and not temp.exists()
    assert set(registry.store.digests()) == referenced
    assert run_cli("fsck")[0] == 0


# --- verify --------------------------------------------------------------------------------


def test_verify_finds_changed_bytes(registry, family, run_cli):
    code, out, _ = run_cli("verify")
    assert code == 0 and "all intact" in out
    victim = _own_digests(family["src"], family["other"])[0]
    path = registry.store._path(victim)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    report = registry.verify()
    assert [(p.digest, p.problem, p.artifacts) for p in report.problems] == [
        (victim, "corrupt", ("src",))
    ]
    intact = {e.digest: e.size for e in registry.store.entries()}
    assert report.checked_bytes == sum(intact.values())  # the damaged blob's bytes too
    assert registry.verify("other").ok  # one artifact's blobs only
    code, out, _ = run_cli("verify", "src", "--json")
    assert code == 6 and json.loads(out)["problems"][0]["digest"] == victim
    registry.store.delete(_own_digests(family["other"], family["src"])[0])
    assert {p.problem for p in registry.verify().problems} == {"corrupt", "missing"}


def test_verify_checks_every_blob_and_names_each_it_could_not_read(
    registry, family, run_cli, monkeypatch
):
    """A blob this user may not read stopped `zoo verify` at the first, exit 11, the
    other blobs unchecked. Every blob is checked now: each unreadable one is listed (and
    left alone by --repair), and the exit code is the worst finding's: 6 for damage,
    else 11."""
    locked = _own_digests(family["src"], family["other"])[:2]
    victim = _own_digests(family["other"], family["src"])[0]
    path = registry.store._path(victim)
    good = path.read_bytes()
    path.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])
    paths = {str(registry.store._path(d)) for d in locked}
    if os.geteuid() == 0:  # root reads whatever the mode: the kernel's refusal, emulated
        real_open = os.open

        def refused(target, flags, *args, **kw):
            if str(target) in paths:
                raise PermissionError(13, "Permission denied", str(target))
            return real_open(target, flags, *args, **kw)

        monkeypatch.setattr(os, "open", refused)
    else:
        for p in paths:
            os.chmod(p, 0)
    try:
        code, out, _ = run_cli("verify", "--json")
        report = json.loads(out)
        assert code == 6, out
        assert sorted((p["digest"], p["problem"]) for p in report["problems"]) == sorted(
            [(d, "unreadable") for d in locked] + [(victim, "corrupt")]
        )
        code, out, _ = run_cli("verify", "--repair")
        assert code == 11 and "0 damaged, 2 unreadable" in out, out
        assert registry.store.verify(victim)  # the damage was repaired all the same
        assert [(p.digest, p.problem) for p in registry.verify().problems] == [
            (d, "unreadable") for d in sorted(locked)
        ]
    finally:
        monkeypatch.undo()
        for p in paths:
            os.chmod(p, 0o644)
    assert all(registry.store.verify(d) for d in locked)  # left as they were


def test_verify_of_a_blob_many_sources_share_reads_their_imports_at_once(
    registry, tiny_dir, tmp_path, run_cli
):
    """A damaged blob held by thousands of sources: verify named its holders with a
    query per holder and a scan of those found so far for each (16 s for 3,334 holders,
    minutes for 10,000); its queries no longer grow with the holders."""
    from sqlalchemy import event

    folders = copies(tiny_dir("bert"), tmp_path / "copies", 60)
    infos = registry.import_checkpoints(folders)
    shared = sorted({t.digest for t in infos[0].tensors})[0]
    registry.store.delete(shared)
    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    def problems(name: str):
        statements.clear()
        event.listen(registry.engine, "before_cursor_execute", seen)
        try:
            report = registry.verify(name)
        finally:
            event.remove(registry.engine, "before_cursor_execute", seen)
        return report.problems, len(statements)

    [problem], few = problems(infos[0].name)
    assert problem.problem == "missing"
    assert problem.artifacts == tuple(sorted(i.name for i in infos))
    assert problem.fix == f"`zoo verify --repair` reads it again from {folders[0]}"
    # A report's line names the first few holders, --json every one.
    names = sorted(i.name for i in infos)
    held = f"held by {', '.join(names[:8])} and 52 more, listed in full by --json as artifacts"
    for command in ("verify", "fsck"):
        code, out, _ = run_cli(command)
        assert code == 6 and held in out and names[8] not in out
        code, out, _ = run_cli(command, "--json")
        assert json.loads(out)["problems"][0]["artifacts"] == names
    # No more statements than with a tenth of the holders kept: none per holder.
    for info in infos[6:]:
        registry.rm(info.name)
    [problem], fewer = problems(infos[0].name)
    assert problem.artifacts == tuple(sorted(i.name for i in infos[:6]))
    assert few <= fewer


def test_a_folder_at_a_blobs_name_is_reported_and_left_where_it_is(registry, family, run_cli):
    """A folder is not a blob zoo wrote: verify names it (not a traceback that hides every
    other problem), repair and gc leave it and what it holds, and gc never counts a
    folder under an unneeded blob's name as something to sweep."""
    victim = _own_digests(family["src"], family["other"])[0]
    path = registry.store._path(victim)
    path.unlink()
    path.mkdir()
    (path / "mine.txt").write_text("not zoo's")
    corrupt = _own_digests(family["other"], family["src"])[0]
    other_path = registry.store._path(corrupt)
    other_path.write_bytes(b"x" + other_path.read_bytes()[1:])
    stray = registry.store._path(sha256_hex(b"unneeded"))
    stray.mkdir(parents=True)
    (stray / "notes").write_text("mine too")
    past = time.time() - 3 * DAY
    os.utime(stray, (past, past))

    report = registry.verify()
    assert {(p.digest, p.problem) for p in report.problems} == {
        (victim, "not a file"),
        (corrupt, "corrupt"),
    }
    code, out, _ = run_cli("verify")
    assert code == 6 and "move what is at its name away, then:" in out, out
    assert [(p.digest, p.problem) for p in registry.fsck().problems] == [(victim, "not a file")]
    code, out, _ = run_cli("verify", "--repair")
    assert code == 6 and "is a folder, not a file" in out, out
    assert registry.store.verify(corrupt)  # the other damage was repaired all the same
    for args in (("gc", "--dry-run", "--grace", "0s"), ("gc", "--grace", "0s")):
        code, out, err = run_cli(*args)
        assert code == 0 and "sweep 0 blobs" in out.replace("swept 0", "sweep 0"), out + err
    assert (path / "mine.txt").read_text() == "not zoo's"
    assert (stray / "notes").read_text() == "mine too"
    # Moved away, the blob is restored like any missing one.
    shutil.move(path, path.parent / "moved-away")
    code, out, _ = run_cli("verify", "--repair")
    assert code == 0 and registry.store.verify(victim), out


@pytest.mark.parametrize("kind", ["fifo", "link loop", "link to nothing"])
def test_a_fifo_or_a_broken_link_at_a_blobs_name_is_reported_and_left_where_it_is(
    registry, family, run_cli, kind
):
    """A FIFO at a blob's name would block a reader for ever (SIGTERM does not end a
    thread blocked in open), and a link in a loop or to nothing holds no blob: verify
    names each as not a file, in one line, and repair and gc leave it as it is."""
    victim = _own_digests(family["src"], family["other"])[0]
    path = registry.store._path(victim)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
        what = "a FIFO (named pipe)"
    elif kind == "link loop":
        path.symlink_to(path.name)
        what = "a symbolic link in a loop"
    else:
        path.symlink_to(path.parent / "nowhere")
        what = f"a symbolic link to {path.parent / 'nowhere'}, which does not exist"
    stop = threading.Event()

    def release_a_blocked_reader() -> None:
        # A writer that opens and closes the FIFO ends a read blocked on it (at EOF), so
        # a store that opens the FIFO fails the test rather than hang it.
        while not stop.wait(0.05):
            with contextlib.suppress(OSError):  # no reader (ENXIO), or not a FIFO
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    watchdog = threading.Thread(target=release_a_blocked_reader, daemon=True)
    watchdog.start()
    try:
        assert [(p.digest, p.problem) for p in registry.verify().problems] == [
            (victim, "not a file")
        ]
        assert [(p.digest, p.problem) for p in registry.fsck().problems] == [(victim, "not a file")]
        code, out, err = run_cli("verify")
        assert code == 6 and "move what is at its name away, then:" in out, out + err
        code, out, err = run_cli("verify", "--repair")
        assert code == 6 and f"in {registry.store.url} is {what}, not a file" in out, out + err
        code, out, err = run_cli("gc", "--grace", "0s")
        assert code == 0, out + err
    finally:
        stop.set()
        watchdog.join()
    assert os.path.islink(path) or path.is_fifo()
    path.unlink()
    code, out, _ = run_cli("verify", "--repair")
    assert code == 0 and registry.store.verify(victim), out


def test_an_unneeded_blob_of_the_wrong_size_is_written_again_not_reused(registry, tiny_dir):
    """A truncated blob no row needs (left for gc) is not taken as the content an import
    brings: the import writes it again, so the new row never points at damaged bytes."""
    src = registry.import_checkpoint(tiny_dir("gpt2"), name="tg")
    big = max(src.tensors, key=lambda t: t.nbytes)
    registry.rm("tg")
    registry.gc(grace="0s")
    path = registry.store._path(big.digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"abc")
    registry.import_checkpoint(tiny_dir("gpt2"), name="tg-again")
    assert registry.store.verify(big.digest) and registry.verify("tg-again").ok
    # Bytes that are not the blob's were not zoo's writing: set aside, not written over.
    [kept] = (registry.store.root / "quarantine").iterdir()
    assert kept.name.startswith(big.digest) and kept.read_bytes() == b"abc"


# --- a store shared by two registries --------------------------------------------------------


def test_gc_and_fsck_repair_refuse_a_store_another_registry_uses(
    registry, tiny_dir, tmp_path, monkeypatch, run_cli
):
    """Registry B, pointed at A's store, sees A's blobs as orphans: sweeping them would
    destroy A. A's id is recorded in the store; B's gc and fsck --repair refuse, and B,
    having only looked or been refused, records none (A's own gc would refuse it)."""
    import zoo

    a = registry
    src = a.import_checkpoint(tiny_dir("gpt2"))
    b = zoo.connect(db_url=f"sqlite:///{tmp_path / 'b.db'}", store_url=a.settings.store_url)
    assert a.registry_id != b.registry_id
    own = {t.digest for t in (*src.tensors, *src.files)}  # tensors, generation config
    assert len(b.fsck().orphans) == len(own)  # A's, seen from B
    # Looks (fsck, verify, a refused dry run) make B no owner: A's gc stays A's.
    assert b.verify().ok
    with pytest.raises(ConflictError, match="also used by 1 other registry"):
        b.gc(grace=0, dry_run=True)
    assert b.store.claims() == [a.registry_id] and a.gc(grace=0, dry_run=True).swept == ()
    for refused in (lambda: b.gc(grace=0), lambda: b.fsck(repair=True, grace=0)):
        with pytest.raises(ConflictError, match="also used by 1 other registry"):
            refused()
    assert b.store.claims() == [a.registry_id]  # refused, so no owner either
    assert a.gc(grace=0).swept == ()  # A's gc stays A's
    with pytest.raises(ConflictError, match="would delete blobs they need"):
        b.fsck(repair=True, grace=0)
    # A dry run says what gc would do: refuse (it listed A's blobs as ones it would
    # sweep). fsck is the look: it says whose the blobs may be, and points at no sweep.
    with pytest.raises(ConflictError, match="also used by 1 other registry"):
        b.gc(grace=0, dry_run=True)
    assert b.fsck().shared_with == 1
    monkeypatch.setenv("ZOO_DB_URL", f"sqlite:///{tmp_path / 'b.db'}")
    for args in (("gc", "--grace", "0"), ("gc", "--dry-run")):
        code, out, err = run_cli(*args)
        assert code == 4 and out == "" and err.count("\n") == 1, (args, err)
    code, out, err = run_cli("fsck")
    assert code == 0 and "1 other registry uses this store and may need them" in out, out
    assert "`zoo gc` sweeps them" not in out and "run `zoo fsck --repair`" not in out
    assert a.verify().ok and b.store.claims() == [a.registry_id]  # nothing of A's touched
    b.close()


def test_a_claim_is_released_only_once_the_database_it_names_is_gone(
    tiny_dir, tmp_path, shared_store_url, monkeypatch, run_cli
):
    """A registry's gc refuses while another registry's claim is in its store, and points
    at `zoo release-claim`, never at deleting the claim by hand: removed while the other
    registry lives, its gc would sweep every blob of the other's. The command removes a
    claim once the database it names is gone from its path, and, where zoo cannot look
    (another host, a claim that names no database), once a person says it is retired."""
    import zoo
    from zoo.store import open_store

    store = shared_store_url
    b_db = tmp_path / "b" / "zoo.db"
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    a = zoo.connect(db_url=f"sqlite:///{tmp_path / 'a' / 'zoo.db'}", store_url=store)
    b = zoo.connect(db_url=f"sqlite:///{b_db}", store_url=store)
    a.import_checkpoint(tiny_dir("gpt2"))
    b.import_checkpoint(tiny_dir("bert"))
    b_id = b.registry_id
    monkeypatch.setenv("ZOO_STORE_URL", store)
    monkeypatch.setenv("ZOO_DB_URL", f"sqlite:///{tmp_path / 'a' / 'zoo.db'}")
    code, _, err = run_cli("gc", "--grace", "0")
    assert code == 4 and f"zoo release-claim {b_id[:8]}" in err, err
    assert "delete registries/" not in err
    with pytest.raises(ConflictError) as refused:  # a Python caller reads the call
        a.gc(grace=0)
    assert f"`reg.release_claim({b_id[:8]!r})` removes its claim" in str(refused.value)
    assert "zoo gc" not in str(refused.value) and "zoo release-claim" not in str(refused.value)
    # B lives: its claim stands, from the API and the CLI (one line, exit 4).
    with pytest.raises(ConflictError, match=f"registry {b_id} in {b_db} is there"):
        a.release_claim(b_id[:8], retired=True)
    code, out, err = run_cli("release-claim", b_id[:8])
    assert code == 4 and out == "" and err.count("\n") == 1 and str(b_db) in err, err
    assert a.store.claims() == sorted([a.registry_id, b_id]) and b.verify().ok
    # B retired (its database removed): its claim goes, and A sweeps B's blobs.
    b.close()
    shutil.rmtree(b_db.parent)
    code, out, err = run_cli("release-claim", b_id[:8])
    assert code == 0 and err == "" and f"removed the claim of registry {b_id}" in out, err
    assert a.store.claims() == [a.registry_id]
    assert len(a.gc(grace=0).swept) > 0 and a.verify().ok

    # Where zoo cannot look, the claim goes only once a person says the database is retired.
    for named in (f"elsewhere.example:{b_db}", ""):  # another host's; a PostgreSQL one's
        open_store(store)._write_claim(b_id, named)
        with pytest.raises(ConflictError, match="run again with retired=True"):
            a.release_claim(b_id)
        code, out, err = run_cli("release-claim", b_id)
        assert code == 4 and err.endswith("run again with --retired.\n"), err
        assert a.store.claims() == sorted([a.registry_id, b_id])
        released = a.release_claim(b_id, retired=True)
        assert released.outcome == "removed" and a.store.claims() == [a.registry_id]
    with pytest.raises(NotFoundError, match=f"holds no claim of a registry {b_id[:8]}"):
        a.release_claim(b_id[:8])
    code, out, err = run_cli("release-claim", b_id, "--json")
    assert code == 3 and out == "" and err.count("\n") == 1, err
    # It runs where the database is, never through a server.
    monkeypatch.setenv("ZOO_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("ZOO_DB_URL")
    code, out, err = run_cli("release-claim", a.registry_id)
    assert code == 2 and out == "" and "where the database is" in err, err
    a.close()


def _backup(live: Path, to: Path) -> None:
    """Copy a registry's database as `sqlite3 zoo.db .backup` copies one in use."""
    import sqlite3

    to.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(live) as source, sqlite3.connect(to) as backup:
        source.backup(backup)


def _mv(source: Path, target: Path) -> None:
    subprocess.run(["mv", str(source), str(target)], check=True)


def _claim_of(store_url: str, registry_id: str) -> dict:
    """The database a store's claim names (read through the store's own listing), less the
    store it was written in."""
    from zoo.store import open_store

    claim = json.loads(open_store(store_url)._read_claim(registry_id))
    claim.pop("store", None)
    return claim


def _identity(path: Path) -> dict:
    st = os.stat(path)
    return {
        "host": socket.gethostname(),
        "file": str(path.resolve()),
        "device": st.st_dev,
        "inode": st.st_ino,
    }


def _intact(reg) -> set[str]:
    """The digests of every stored blob of ``reg``'s kept rows, each read back from the
    store and hashed again (hashlib): what a sweep must never take."""
    digests = set()
    for summary in reg.list():
        shown = reg.show(summary.name)
        digests |= {t.digest for t in (*shown.tensors, *shown.files)}
    for digest in digests:
        assert hashlib.sha256(reg.store.get(digest)).hexdigest() == digest
    return digests


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.s3)])
def shared_store_url(request, tmp_path):
    """A store that a registry and copies of its database are pointed at."""
    if request.param == "folder":
        return str(tmp_path / "shared-store")
    return request.getfixturevalue("s3_store_url")


def test_a_copy_never_sweeps_the_store_of_its_original_wherever_it_moved(
    tiny_dir, tmp_path, shared_store_url, monkeypatch, run_cli
):
    """A backup or staging copy of a registry's database carries its id: pointed at the
    original's store, its gc would sweep what the original wrote since the copy. The
    claim names the original's file by its identity too, so the copy is refused while the
    original is at its path, and still once the original was moved (`mv`) elsewhere on the
    file system: the moved original goes on sweeping with no step. A copy takes the claim
    over only through `zoo release-claim`, once the original is gone from where the claim
    says (deleted for good), or a person says the one on another host is retired."""
    import zoo

    store = shared_store_url
    prod_db, copy_db = tmp_path / "prod" / "zoo.db", tmp_path / "staging" / "zoo.db"
    prod_db.parent.mkdir()
    with zoo.connect(db_url=f"sqlite:///{prod_db}", store_url=store) as prod:
        prod.import_checkpoint(tiny_dir("gpt2"))  # its first write records where it is
        registry_id = prod.registry_id
        _backup(prod_db, copy_db)
        newer = prod.import_checkpoint(tiny_dir("bert"))
    assert _claim_of(store, registry_id) == _identity(prod_db)
    copy = zoo.connect(db_url=f"sqlite:///{copy_db}", store_url=store)
    assert copy.registry_id == registry_id
    for sweep in (
        lambda: copy.gc(grace=0),
        lambda: copy.gc(grace=0, dry_run=True),
        lambda: copy.fsck(repair=True, grace=0),
    ):
        with pytest.raises(ConflictError, match="carries its id: a copy of it"):
            sweep()

    # The original moved on its file system: the copy is still refused, from the API and
    # the CLI (one line, exit 4), and the original's blobs are all there.
    _mv(prod_db.parent, tmp_path / "prod-moved")
    moved_db = tmp_path / "prod-moved" / "zoo.db"
    with pytest.raises(ConflictError, match="is another file carrying its id: a copy"):
        copy.gc(grace=0)
    monkeypatch.setenv("ZOO_STORE_URL", store)
    monkeypatch.setenv("ZOO_DB_URL", f"sqlite:///{copy_db}")
    for args in (("gc", "--grace", "0"), ("fsck", "--repair")):
        code, out, err = run_cli(*args)
        assert code == 4 and out == "" and err.count("\n") == 1, (args, err)
        assert f"`zoo release-claim {registry_id}` hands the claim over" in err
    moved = zoo.connect(db_url=f"sqlite:///{moved_db}", store_url=store)
    kept = _intact(moved)
    assert {t.digest for t in newer.tensors} <= kept
    # ... and the moved original sweeps with no step, recording where it is now.
    assert moved.gc(grace=0).swept == () and moved.fsck(repair=True, grace=0).problems == ()
    assert _claim_of(store, registry_id) == _identity(moved_db)
    assert _intact(moved) == kept and moved.verify().ok
    with pytest.raises(ConflictError, match="carries its id: a copy of it"):
        copy.gc(grace=0)
    with pytest.raises(ConflictError, match=f"registry {registry_id} in {moved_db} is there"):
        copy.release_claim(registry_id)
    assert _claim_of(store, registry_id) == _identity(moved_db)

    # A copy put where the original was is not it either.
    (tmp_path / "prod").mkdir()
    _backup(copy_db, prod_db)
    at_old_path = zoo.connect(db_url=f"sqlite:///{prod_db}", store_url=store)
    with pytest.raises(ConflictError, match="carries its id: a copy of it"):
        at_old_path.gc(grace=0)
    shutil.rmtree(tmp_path / "prod")

    # The original deleted for good: the copy is refused until the claim is handed over.
    shutil.rmtree(tmp_path / "prod-moved")
    with pytest.raises(ConflictError, match="if it was deleted for good"):
        copy.gc(grace=0)
    assert copy.release_claim(registry_id).outcome == "handed over"
    assert _claim_of(store, registry_id) == _identity(copy_db)
    assert copy.gc(grace=0).swept  # what only the deleted original needed
    assert _intact(copy) and copy.verify().ok
    assert copy.release_claim(registry_id).outcome == "already this database's"

    # A claim from another host: this one cannot look at that file, so it does not sweep,
    # and takes the claim over only once a person says the registry there is retired.
    copy.store._write_claim(registry_id, f"elsewhere.example:{copy_db}")
    with pytest.raises(ConflictError, match=r"on elsewhere\.example, which carries this one's id"):
        copy.gc(grace=0)
    with pytest.raises(ConflictError, match="run again with retired=True"):
        copy.release_claim(registry_id)
    assert copy.release_claim(registry_id, retired=True).outcome == "handed over"
    assert _claim_of(store, registry_id) == _identity(copy_db)
    assert copy.gc(grace=0).swept == ()
    copy.close()


def test_a_copy_sharing_its_originals_store_writes_nothing_there(
    tiny_dir, tmp_path, shared_store_url, monkeypatch, run_cli
):
    """A staging copy of a registry's database, on the original's store: what it wrote
    there would be an orphan to the original, whose gc would sweep it once past its grace,
    leaving the copy's rows pointing at nothing. The copy's writes are refused as its
    sweeps are, before any work and in one line (exit 4), while its reads go on; the
    original reads its claim once per handle, not once per blob."""
    import zoo
    from zoo.store import open_store

    store = shared_store_url
    prod_db, copy_db = tmp_path / "prod" / "zoo.db", tmp_path / "staging" / "zoo.db"
    prod_db.parent.mkdir()
    with zoo.connect(db_url=f"sqlite:///{prod_db}", store_url=store) as prod:
        source = prod.import_checkpoint(tiny_dir("bert"))
        _backup(prod_db, copy_db)
    stored = set(open_store(store).digests())
    copy = zoo.connect(db_url=f"sqlite:///{copy_db}", store_url=store)
    refused = rf"registry in {prod_db}, and this one \({copy_db}\) .* a copy of it sharing its"
    for write in (
        lambda: copy.import_checkpoint(tiny_dir("gpt2")),
        lambda: copy.extract(source.name, method="dwt", device="cpu"),
        lambda: copy.materialize(source.name, layers=2, hidden=16, device="cpu", store=True),
    ):
        with pytest.raises(ConflictError, match=refused):
            write()
    assert set(open_store(store).digests()) == stored
    assert [a.name for a in copy.list()] == [source.name]
    monkeypatch.setenv("ZOO_STORE_URL", store)
    monkeypatch.setenv("ZOO_DB_URL", f"sqlite:///{copy_db}")
    code, out, err = run_cli("import", str(tiny_dir("gpt2")))
    assert code == 4 and out == "" and err.count("\n") == 1, err
    assert "Give the copy a store of its own (ZOO_STORE_URL)" in err
    # Reads go on; the original sweeps nothing the copy needs.
    assert copy.verify().ok and copy.export(source.name, out=tmp_path / "out").is_dir()
    with zoo.connect(db_url=f"sqlite:///{prod_db}", store_url=store) as prod:
        assert prod.gc(grace=0).swept == ()
        reads = []
        read_claim = prod.store._read_claim
        prod.store._read_claim = lambda registry_id: reads.append(1) or read_claim(registry_id)
        written = prod.import_checkpoint(tiny_dir("gpt2"))
        prod.import_checkpoint(tiny_dir("bert", seed=1))
    assert len(written.tensors) > 10 and len(reads) <= 2
    assert _intact(copy) == {t.digest for t in (*source.tensors, *source.files)}
    registry_id = copy.registry_id
    copy.close()

    # A claim from another host naming this file's path and inode: one file on a file
    # system both hosts mount, which writes from either and sweeps from the claiming one.
    # Another inode at that path there is another file: a copy.
    this = _identity(copy_db)
    for inode, writes in ((this["inode"], True), (this["inode"] + 1, False)):
        elsewhere = json.dumps({**this, "host": "elsewhere.example", "inode": inode})
        open_store(store)._write_claim(registry_id, elsewhere)
        with zoo.connect(db_url=f"sqlite:///{copy_db}", store_url=store) as reg:
            if writes:
                reg.import_checkpoint(tiny_dir("llama"))
            else:
                with pytest.raises(ConflictError, match=r"on elsewhere\.example, which carries"):
                    reg.import_checkpoint(tiny_dir("llama"), name="again")
            with pytest.raises(ConflictError, match=r"on elsewhere\.example, which carries"):
                reg.gc(grace=0)


def test_a_copy_of_a_whole_home_is_told_its_store_is_a_copy_too(
    tiny_dir, tmp_path, monkeypatch, run_cli
):
    """`cp -a` of a whole home copies the database and its store, whose claim names the
    original's database: the copy's gc and writes are refused until the claim is handed
    over, and the refusal says that the store is a copy of the original's (which the
    original goes on using), not that the copy shares it. `zoo release-claim` then hands
    the copied store's claim to the copy while the original lives; a copy of the database
    alone, on the original's store, still may not take it."""
    import zoo

    home, copy_home = tmp_path / "home", tmp_path / "home-copy"
    home.mkdir()

    def connect(folder: Path):
        return zoo.connect(db_url=f"sqlite:///{folder / 'zoo.db'}", store_url=str(folder / "blobs"))

    with connect(home) as original:
        original.import_checkpoint(tiny_dir("gpt2"))
        gone = original.import_checkpoint(tiny_dir("bert"))
        original.rm(gone.name)
        registry_id = original.registry_id
    subprocess.run(["cp", "-a", str(home), str(copy_home)], check=True)
    copy = connect(copy_home)
    said = (
        f"The store {copy_home / 'blobs'} is a copy of the store {home / 'blobs'} of the "
        f"registry in {home / 'zoo.db'}"
    )
    for refused in (lambda: copy.gc(grace=0), lambda: copy.import_checkpoint(tiny_dir("llama"))):
        with pytest.raises(ConflictError) as raised:
            refused()
        assert str(raised.value).startswith(said), raised.value
        assert f"`reg.release_claim({registry_id!r})` hands" in str(raised.value)
        assert "ZOO_STORE_URL" not in str(raised.value)
    monkeypatch.setenv("ZOO_DB_URL", f"sqlite:///{copy_home / 'zoo.db'}")
    monkeypatch.setenv("ZOO_STORE_URL", str(copy_home / "blobs"))
    code, out, err = run_cli("gc", "--grace", "0")
    assert code == 4 and out == "" and err.count("\n") == 1 and said in err, err

    # A copy of the database alone, on the original's store, shares it: not handed over.
    _backup(home / "zoo.db", tmp_path / "staging" / "zoo.db")
    staging = zoo.connect(
        db_url=f"sqlite:///{tmp_path / 'staging' / 'zoo.db'}", store_url=str(home / "blobs")
    )
    with pytest.raises(ConflictError, match=f"registry {registry_id} in {home / 'zoo.db'} is"):
        staging.release_claim(registry_id)
    staging.close()

    code, out, err = run_cli("release-claim", registry_id)
    assert code == 0 and f"over to {copy_home / 'zoo.db'}" in out, err
    assert _claim_of(str(copy_home / "blobs"), registry_id) == _identity(copy_home / "zoo.db")
    assert _claim_of(str(home / "blobs"), registry_id) == _identity(home / "zoo.db")
    only_removed = {t.digest for t in (*gone.tensors, *gone.files)} - _intact(copy)
    assert {item.name for item in copy.gc(grace=0).swept} == only_removed
    copy.import_checkpoint(tiny_dir("llama"))
    assert copy.verify().ok
    copy.close()
    with connect(home) as original:
        assert {item.name for item in original.gc(grace=0).swept} == only_removed
        original.import_checkpoint(tiny_dir("llama"))
        assert original.verify().ok


def test_a_registry_moved_with_a_link_left_behind_is_not_its_own_copy(
    tiny_dir, tmp_path, monkeypatch, run_cli
):
    """A registry moved (to a bigger disk, say) with a symbolic link left at its old path
    is the same file through the link: its next write records where the file is, and gc
    and fsck --repair run, through the link and through its real path."""
    import zoo

    home = tmp_path / "zoohome"
    home.mkdir()
    store = str(tmp_path / "store")
    with zoo.connect(db_url=f"sqlite:///{home / 'zoo.db'}", store_url=store) as reg:
        reg.import_checkpoint(tiny_dir("gpt2"))
        registry_id = reg.registry_id
    (tmp_path / "data").mkdir()
    _mv(home, tmp_path / "data" / "zoohome")
    home.symlink_to(tmp_path / "data" / "zoohome")
    moved = tmp_path / "data" / "zoohome" / "zoo.db"
    # Its next write, through the link, records where the file is now.
    with zoo.connect(db_url=f"sqlite:///{home / 'zoo.db'}", store_url=store) as reg:
        reg.import_checkpoint(tiny_dir("bert"))
    assert _claim_of(store, registry_id) == _identity(moved)
    monkeypatch.setenv("ZOO_STORE_URL", store)
    for db in (home / "zoo.db", moved):
        monkeypatch.setenv("ZOO_DB_URL", f"sqlite:///{db}")
        for args in (("gc", "--grace", "0"), ("fsck", "--repair")):
            code, _, err = run_cli(*args)
            assert code == 0 and err == "", (db, args, err)
    assert _claim_of(store, registry_id) == _identity(moved)


def test_a_claim_without_identity_is_read_and_written_anew(tiny_dir, tmp_path):
    """A claim written as ``HOST:FILE`` (without the file's identity) names its file by
    path, links followed: that file sweeps and writes, and records its identity; another
    file with the registry's id never takes it over, even once the named path is gone."""
    import zoo

    store = str(tmp_path / "store")
    real, link = tmp_path / "real" / "zoo.db", tmp_path / "link"
    real.parent.mkdir()
    link.symlink_to(real.parent)
    with zoo.connect(db_url=f"sqlite:///{real}", store_url=store) as reg:
        reg.import_checkpoint(tiny_dir("gpt2"))
        registry_id = reg.registry_id
    claim = Path(store) / "registries" / registry_id
    # Named through the link: a write records the file as it is, identity included.
    claim.write_text(f"{socket.gethostname()}:{link / 'zoo.db'}")
    with zoo.connect(db_url=f"sqlite:///{real}", store_url=store) as reg:
        reg.import_checkpoint(tiny_dir("bert"))
    assert _claim_of(store, registry_id) == _identity(real)
    # And a sweep does as much.
    claim.write_text(f"{socket.gethostname()}:{link / 'zoo.db'}")
    with zoo.connect(db_url=f"sqlite:///{real}", store_url=store) as reg:
        assert reg.gc(grace=0).swept == ()
    assert _claim_of(store, registry_id) == _identity(real)
    # A copy, the named path gone: no identity says the copy is the original moved.
    _backup(real, tmp_path / "copy" / "zoo.db")
    claim.write_text(f"{socket.gethostname()}:{tmp_path / 'gone' / 'zoo.db'}")
    for db in (real, tmp_path / "copy" / "zoo.db"):
        with zoo.connect(db_url=f"sqlite:///{db}", store_url=store) as reg:
            for refused in (
                lambda: reg.import_checkpoint(tiny_dir("llama"), name="again"),
                lambda: reg.gc(grace=0),
            ):
                with pytest.raises(ConflictError, match="another file carrying its id"):
                    refused()
    assert claim.read_text() == f"{socket.gethostname()}:{tmp_path / 'gone' / 'zoo.db'}"
    claim.write_text("{not a claim")
    with (
        zoo.connect(db_url=f"sqlite:///{real}", store_url=store) as reg,
        pytest.raises(ConflictError, match=r"holds a claim registries/\S+ zoo cannot read"),
    ):
        reg.gc(grace=0)


def test_a_copy_put_at_the_claimed_path_is_not_the_file_that_claimed(tiny_dir, tmp_path):
    """The original moved away and a copy put at its path before the original swept
    again: the path is the claim's, the file is not. The copy is refused; the original,
    found by its identity, sweeps and records where it is."""
    import zoo

    store = str(tmp_path / "store")
    (tmp_path / "home").mkdir()
    db = tmp_path / "home" / "zoo.db"
    with zoo.connect(db_url=f"sqlite:///{db}", store_url=store) as reg:
        reg.import_checkpoint(tiny_dir("gpt2"))
        registry_id = reg.registry_id
    _mv(tmp_path / "home", tmp_path / "home-old")
    _backup(tmp_path / "home-old" / "zoo.db", db)
    with (
        zoo.connect(db_url=f"sqlite:///{db}", store_url=store) as copy,
        pytest.raises(ConflictError, match="the file there now is another one carrying its id"),
    ):
        copy.gc(grace=0)
    with zoo.connect(
        db_url=f"sqlite:///{tmp_path / 'home-old' / 'zoo.db'}", store_url=store
    ) as reg:
        assert reg.gc(grace=0).swept == () and reg.verify().ok
    assert _claim_of(store, registry_id) == _identity(tmp_path / "home-old" / "zoo.db")


def test_a_backup_restored_at_the_claimed_path_takes_the_claim_only_with_retired(
    tiny_dir, tmp_path, monkeypatch, run_cli
):
    """A registry moved away (`mv`, no step needed) and a backup restored at its old path:
    the file there carries the id but is not the claimed one, and zoo cannot tell whether
    the claimed file was deleted or moved elsewhere and lives. `zoo release-claim` refuses
    (one line, exit 4) to hand the claim to the backup, since its gc would sweep every
    blob the moved original wrote since the backup; `--retired`, a person's word that the
    original no longer exists anywhere, hands it over. The live original at the path (its
    own inode) keeps its claim; a claim's unreadable text is quoted escaped, and cut."""
    import zoo

    home, moved = tmp_path / "home", tmp_path / "moved"
    home.mkdir()
    db, store = home / "zoo.db", str(tmp_path / "store")
    with zoo.connect(db_url=f"sqlite:///{db}", store_url=store) as reg:
        reg.import_checkpoint(tiny_dir("gpt2"))
        registry_id = reg.registry_id
        _backup(db, tmp_path / "backup" / "zoo.db")
        newer = reg.import_checkpoint(tiny_dir("bert"))
    monkeypatch.setenv("ZOO_STORE_URL", store)
    monkeypatch.setenv("ZOO_DB_URL", f"sqlite:///{db}")
    # The live original at its path: already this database's.
    code, out, err = run_cli("release-claim", registry_id)
    assert code == 0 and "names this database" in out, err
    # A copy elsewhere while the original is at its path: the claim stands.
    with (
        zoo.connect(db_url=f"sqlite:///{tmp_path / 'backup' / 'zoo.db'}", store_url=store) as copy,
        pytest.raises(ConflictError, match=f"registry {registry_id} in {db} is there"),
    ):
        copy.release_claim(registry_id, retired=True)

    _mv(home, moved)
    _backup(tmp_path / "backup" / "zoo.db", db)
    for args in (("release-claim", registry_id), ("release-claim", registry_id[:8])):
        code, out, err = run_cli(*args)
        assert code == 4 and out == "" and err.count("\n") == 1, (args, err)
        assert "may have been moved elsewhere" in err and "since the copy" in err, err
        assert f"`zoo release-claim {registry_id} --retired` hands the claim over" in err
    code, out, err = run_cli("gc", "--grace", "0")
    assert code == 4 and out == "" and err.count("\n") == 1, err
    assert f"`zoo release-claim {registry_id} --retired`" in err, err
    assert _claim_of(store, registry_id)["file"] == str(db.resolve())
    with zoo.connect(db_url=f"sqlite:///{moved / 'zoo.db'}", store_url=store) as original:
        assert {t.digest for t in newer.tensors} <= _intact(original)
        assert original.verify().ok

    # A person's word that the original no longer exists anywhere hands the claim over.
    shutil.rmtree(moved)
    code, out, err = run_cli("release-claim", registry_id, "--retired")
    assert code == 0 and err == "" and f"over to {db.resolve()} (it named {db.resolve()})" in out
    assert _claim_of(store, registry_id) == _identity(db)
    with zoo.connect(db_url=f"sqlite:///{db}", store_url=store) as backup:
        only_newer = {t.digest for t in (*newer.tensors, *newer.files)} - _intact(backup)
        assert only_newer and {i.name for i in backup.gc(grace=0).swept} == only_newer
        assert backup.verify().ok

    # A claim zoo cannot read is quoted escaped, on one line, and cut.
    claims = tmp_path / "store" / "registries"
    (claims / "11111111-1111-1111-1111-111111111111").write_text("garbage{\n\x1b[2J" + "x" * 5000)
    code, out, err = run_cli("release-claim", "1111", "--retired")
    assert code == 0 and err == "" and out.count("\n") == 1, (out, err)
    assert "(it named garbage{\\n\\x1b[2J" in out and "x" * 300 not in out, out
    assert out.rstrip().endswith("...)") and claims.is_dir()
    assert {p.name for p in claims.iterdir()} == {registry_id}
    # One that is not UTF-8 too.
    (claims / "22222222-2222-2222-2222-222222222222").write_bytes(b"bad\xff\xfe")
    code, out, err = run_cli("release-claim", "2222", "--retired")
    assert code == 0 and err == "" and "(it named bad\ufffd\ufffd)" in out, (out, err)


def test_a_claimed_file_on_a_file_system_mounted_again_is_still_the_claimed_one(tmp_path):
    """A network or mapped disk's device number is given at mount time: the claimed file
    at its path with its inode is the claimed one under another device number; another
    inode at that path, or the same numbers for another file elsewhere, is not."""
    from zoo.api.store_claim import Place, Standing, here, standing

    db = tmp_path / "zoo.db"
    db.write_bytes(b"")
    this = here(db)
    assert this == Place(**_identity(db))
    remounted = Place(this.host, this.file, this.device + 1, this.inode)
    assert standing(remounted, this) is Standing.MOVED
    assert standing(Place(this.host, this.file, this.device, this.inode + 1), this) is (
        Standing.REPLACED
    )
    other = tmp_path / "other.db"
    other.write_bytes(b"")
    assert standing(this, here(other)) is Standing.OTHER
    assert standing(Place("elsewhere.example", this.file), this) is Standing.ANOTHER_HOST


def test_a_store_from_before_registry_ids_is_not_swept_until_a_person_says(
    registry, tiny_dir, tmp_path
):
    """Blobs written before registries recorded their ids may be another registry's: the
    first claim on such a store marks them unclaimed, and gc refuses until the marker is
    deleted. Stray files beside the claims are no registry."""
    import shutil

    import zoo

    registry.import_checkpoint(tiny_dir("gpt2"))
    root = tmp_path / "blobs"
    shutil.rmtree(root / "registries")  # as a store written by zoo before schema 0002
    again = zoo.connect(db_url=registry.settings.db_url, store_url=str(root))
    (root / "registries").mkdir(exist_ok=True)
    (root / "registries" / ".DS_Store").write_bytes(b"")
    # A look claims nothing, and already counts the blobs as unclaimed.
    assert again.store.claims() == [] and again.fsck().shared_with == 1
    # The dry run names no file to delete that is not there: the first sweep writes it.
    with pytest.raises(ConflictError, match=r"without dry_run=True once \(it records the marker"):
        again.gc(grace=0, dry_run=True)
    assert again.store.claims() == []
    with pytest.raises(ConflictError, match="delete registries/unclaimed in it and run again"):
        again.gc(grace=0)
    # The marker a person deletes is written, with this registry's claim beside it.
    assert again.store.claims() == sorted(["unclaimed", again.registry_id])
    (root / "registries" / "unclaimed").unlink()
    assert again.gc(grace=0).swept == ()  # its own store again: nothing to sweep
    again.close()


# --- bytes zoo did not write ---------------------------------------------------------------


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.s3)])
def any_store_url(request, tmp_path):
    """A folder store, and an S3 one on the test server."""
    if request.param == "folder":
        return str(tmp_path / "blobs")
    return request.getfixturevalue("s3_store_url")


def _put_raw(store, digest: str, data: bytes) -> None:
    """Put ``data`` at the blob's name as a user would, not through zoo's writes."""
    if store.remote:
        store.fs.pipe_file(store._path(digest), data)
    else:
        store._path(digest).parent.mkdir(parents=True, exist_ok=True)
        store._path(digest).write_bytes(data)


def _read_raw(store, digest: str) -> bytes:
    return (
        store.fs.cat_file(store._path(digest)) if store.remote else store._path(digest).read_bytes()
    )


def _quarantined(store) -> dict[str, bytes]:
    """name -> bytes of every file in the store's quarantine folder."""
    if store.remote:
        folder = f"{store.root}/{store.QUARANTINE}"
        store.fs.invalidate_cache(folder)
        try:
            return {
                p.rsplit("/", 1)[1]: store.fs.cat_file(p) for p in store.fs.ls(folder, detail=False)
            }
        except FileNotFoundError:
            return {}
    folder = store.root / store.QUARANTINE
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def test_bytes_zoo_did_not_write_at_a_blobs_name_are_moved_aside_never_deleted(
    db_url, any_store_url, tiny_dir, monkeypatch, run_cli
):
    """A file a user put in the store under a blob's name, with other bytes, was taken for
    a damaged blob: zoo gc and zoo fsck --repair deleted it, and verify --repair wrote
    over a needed blob's damaged bytes. Each now moves such bytes into the store's
    quarantine folder (named by the digest, a time and a random part) and says where;
    the dry run lists what gc then moves."""
    import zoo

    monkeypatch.setenv("ZOO_DB_URL", db_url)
    monkeypatch.setenv("ZOO_STORE_URL", any_store_url)
    reg = zoo.connect()
    try:
        src = reg.import_checkpoint(tiny_dir("bert"), name="src")
        store = reg.store
        theirs, also = sha256_hex(b"a name I chose"), sha256_hex(b"another")
        _put_raw(store, theirs, b"my notes, not a blob")
        victim = _own_digests(src)[0]
        good = _read_raw(store, victim)
        damaged = bytes([good[0] ^ 0xFF]) + good[1:]
        _put_raw(store, victim, damaged)
        time.sleep(1.1)  # older than --grace 0 wherever times are whole seconds (S3)

        problems = {p.digest: p for p in reg.verify().problems}
        assert problems[theirs].problem == "corrupt" and "quarantine" in problems[theirs].fix
        assert problems[victim].problem == "corrupt"
        code, out, _ = run_cli("gc", "--dry-run", "--grace", "0", "--json")
        dry = json.loads(out)
        assert (
            code == 0 and dry["swept"] == [] and [q["name"] for q in dry["quarantined"]] == [theirs]
        )
        assert _quarantined(store) == {}
        code, out, _ = run_cli("gc", "--grace", "0")
        assert code == 0 and "moved 1 files" in out and f"{store.QUARANTINE}: {theirs[:16]}" in out
        [(name, data)] = _quarantined(store).items()
        assert name.startswith(f"{theirs}.") and data == b"my notes, not a blob"
        assert not store.has(theirs)

        _put_raw(store, also, b"more of mine")
        time.sleep(1.1)
        code, out, _ = run_cli("fsck", "--repair", "--grace", "0", "--json")
        report = json.loads(out)
        assert report["removed"] == [] and report["quarantined"] == [also], out
        assert report["quarantine"] == store.quarantine_url

        code, out, _ = run_cli("verify", "--repair")
        assert code == 0 and "restored 1 damaged blobs" in out and "moved 1 files" in out, out
        assert hashlib.sha256(_read_raw(store, victim)).hexdigest() == victim
        assert sorted(_quarantined(store).values()) == sorted(
            [b"my notes, not a blob", b"more of mine", damaged]
        )
    finally:
        reg.close()


def test_a_sweep_tells_zoos_blobs_from_other_bytes_without_reading_what_zoo_marked(
    db_url, any_store_url, monkeypatch
):
    """gc and fsck --repair hashed every blob they swept, so that bytes zoo did not write
    are moved aside rather than deleted: on S3 a gc of 20 orphans of 200 MB downloaded
    all 4 GB, its dry run too. An object zoo writes on S3 now carries its name as
    metadata, which any other PUT at that key replaces: a sweep reads that mark with one
    HEAD and downloads only what lacks it. Whatever was not zoo's writing is still moved
    aside on both stores: bytes put under a blob's name, a zoo blob's object copied onto
    another blob's name (the mark names the other), a blob overwritten, even after a
    refresh of its time (which keeps the mark only on the object zoo wrote)."""
    import zoo

    monkeypatch.setenv("ZOO_DB_URL", db_url)
    monkeypatch.setenv("ZOO_STORE_URL", any_store_url)
    reg = zoo.connect()
    try:
        store = reg.store
        small = os.urandom(10)
        ours = [store.put(small)[0], store.put(os.urandom(40 << 20))[0]]  # a PUT; multipart
        refreshed = store.put(b"kept a while")[0]
        store._touch(refreshed)  # a later write reused it: its time is refreshed
        theirs = sha256_hex(b"theirs")
        _put_raw(store, theirs, b"not the bytes of that name")
        copied = sha256_hex(b"copied")
        overwritten = store.put(b"zoo wrote this")[0]
        if store.remote:
            store.fs.copy(store._path(ours[0]), store._path(copied))  # metadata and all
        else:
            _put_raw(store, copied, small)
        _put_raw(store, overwritten, b"then someone wrote this")
        store._touch(overwritten)  # refreshed too: that must not make it zoo's
        before_marks = sha256_hex(b"before marks")
        _put_raw(store, before_marks, b"before marks")  # a blob from before zoo marked
        foreign = {theirs, copied, overwritten}
        time.sleep(1.1)  # older than grace 0 wherever times are whole seconds (S3)

        read = []
        real_pieces = type(store)._pieces
        monkeypatch.setattr(
            type(store), "_pieces", lambda self, d: read.append(d) or real_pieces(self, d)
        )
        dry = reg.gc(grace=0, dry_run=True)
        assert {q.name for q in dry.quarantined} == foreign
        assert {s.name for s in dry.swept} == {*ours, refreshed, before_marks}
        # On S3, zoo's marked blobs are never downloaded; a folder store reads each.
        expected_reads = foreign | {before_marks}
        if not store.remote:
            expected_reads |= {*ours, refreshed}
        assert set(read) == expected_reads, read
        read.clear()
        report = reg.gc(grace=0)
        assert {s.name for s in report.swept} == {*ours, refreshed, before_marks}
        assert set(read) == expected_reads
        assert sorted(_quarantined(store).values()) == sorted(
            [b"not the bytes of that name", small, b"then someone wrote this"]
        )
        assert not any(store.has(d) for d in {*ours, refreshed, before_marks, *foreign})
    finally:
        reg.close()
