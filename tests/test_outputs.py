"""Output folders: what ``--force`` may replace, what killed writers leave and who cleans
it, sharded and typed output, and a derivation that streams instead of holding the model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch
import transformers
from safetensors import safe_open
from tinymodels import FAMILIES

from zoo.api import export
from zoo.api.export import writer_host
from zoo.errors import ConflictError, InvalidInputError


def _tree(root: Path) -> list[tuple[str, int, int]]:
    """Every path below ``root`` with its size and mtime: what "nothing touched" compares."""
    out = []
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
    return out


def _load(folder: Path):
    config = json.loads((folder / "config.json").read_text())
    arch = getattr(transformers, config["architectures"][0])
    return arch.from_pretrained(folder, output_loading_info=True)


def _track_emitted_bytes(monkeypatch) -> list[int]:
    """Count the bytes of derived tensors handed to the sink and still alive; the returned
    list's one element becomes the most ever alive at once."""
    from zoo.api.derivation import Sink

    live, peak = [0], [0]
    real = Sink.__call__

    def tracked(self, name, t):
        n = t.numel() * t.element_size()
        live[0] += n
        peak[0] = max(peak[0], live[0])

        def gone(n=n):
            live[0] -= n

        weakref.finalize(t, gone)
        real(self, name, t)

    monkeypatch.setattr(Sink, "__call__", tracked)
    return peak


def _logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor([[1, 5, 7, 9, 2]])).logits


def test_force_never_replaces_what_zoo_did_not_write(
    registry, tiny_dir, tmp_path, monkeypatch, run_cli
):
    """The registry's home, its database's folder, its blob store, a source's folder, the
    user's home folder, a folder of someone else's files, and an output of zoo's that was
    changed since: each refused with one line and exit 4, nothing touched."""
    home = Path(os.environ["ZOO_HOME"])
    home.mkdir(exist_ok=True)
    (home / "notes.txt").write_text("kept")
    src_folder = tmp_path / "src"
    import shutil

    shutil.copytree(tiny_dir("bert"), src_folder)
    src = registry.import_checkpoint(src_folder)
    user_home = tmp_path / "user"
    (user_home / "work").mkdir(parents=True)
    (user_home / "work" / "thesis.tex").write_text("mine")
    monkeypatch.setenv("HOME", str(user_home))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2")
    added, changed = tmp_path / "added", tmp_path / "changed"
    for folder in (added, changed):
        registry.materialize(src.name, layers=2, hidden=16, out=folder)
    (added / "notes.md").write_text("mine")
    with open(changed / "model.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x00\x80\x3f")  # a fine-tune in place, same size
    store = Path(registry.settings.store_url)
    db_folder = Path(registry.settings.db_url.removeprefix("sqlite:///")).parent
    targets = [home, store, src_folder, user_home, foreign, added, changed]
    if registry.settings.db_url.startswith("sqlite:"):
        targets.append(db_folder)
    before = {t: _tree(t) for t in targets}
    artifacts = len(registry.list())
    for target in targets:
        code, out, err = run_cli(
            "materialize",
            src.name,
            "--layers",
            "2",
            "--hidden",
            "16",
            "--out",
            str(target),
            "--force",
        )
        assert code == 4 and out == "" and err.count("\n") == 1, (target, err)
        assert err.startswith("zoo: error: --out "), err
    assert {t: _tree(t) for t in targets} == before
    assert len(registry.list()) == artifacts
    assert registry.fsck(grace=0).ok
    # Inside the blob store or the registry's home is refused too, even when new.
    code, _, err = run_cli(
        "materialize", src.name, "--layers", "2", "--hidden", "16", "--out", str(store / "x")
    )
    assert code == 4 and "registry uses" in err
    assert _tree(store) == before[store]


def test_an_out_under_a_file_is_refused_in_one_line(registry, tiny_dir, tmp_path, run_cli):
    """An --out below a file (a typo: `--out model/config.json/small`) is refused before
    any work, naming the file, as an --out that is a file is; it failed once the model
    was derived, with exit 11 and "File exists", as a file system's refusal."""
    src = registry.import_checkpoint(tiny_dir("bert"))
    (tmp_path / "notes.txt").write_text("mine")
    for out, under in (
        (tmp_path / "notes.txt" / "small", "notes.txt"),
        (tmp_path / "notes.txt" / "a" / "b", "notes.txt"),
    ):
        code, text, err = run_cli(
            "materialize", src.name, "--layers", "1", "--hidden", "16", "--out", str(out)
        )
        assert (code, text) == (4, ""), err
        assert (
            err == f"zoo: error: --out {out} lies under {str(tmp_path / under)!r}, which is not a "
            "folder.\n"
        )
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert registry.list(kind="derived") == []


def test_force_replaces_a_previous_output_of_zoos(registry, tiny_dir, tmp_path, run_cli):
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    out = tmp_path / "outs" / "out"
    code, _, err = run_cli(
        "materialize", src.name, "--layers", "2", "--hidden", "16", "--out", str(out)
    )
    assert code == 0, err
    marker = json.loads((out / export.MARKER).read_text())
    assert set(marker["files"]) == {
        "config.json",
        "model.safetensors",
        "README.md",
        "generation_config.json",
    }
    code, _, err = run_cli(
        "materialize", src.name, "--layers", "3", "--hidden", "32", "--out", str(out), "--force"
    )
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["n_layer"] == 3
    assert [p.name for p in out.parent.iterdir()] == ["out"]  # nothing set aside is left


_WRITER = """
import os, sys, time
import zoo
from zoo.api import export
from zoo.api.export import writer_host
real = export.OutputFolder.put
def slow(self, name, data):
    real(self, name, data)
    open(sys.argv[2], "w").close()  # a tensor is in the temporary folder
    time.sleep(60)
export.OutputFolder.put = slow
zoo.connect().materialize(sys.argv[1], layers=2, hidden=16, out=sys.argv[3])
"""


def _killed_writer(src_name: str, out: Path, tmp_path: Path) -> None:
    """Start a writer of ``out``, SIGKILL it once a tensor is written, reap it."""
    flag = tmp_path / "flag"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, src_name, str(flag), str(out)])
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the writer ended"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    flag.unlink()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".zoo-" in p.name)


def test_a_folder_written_stands_when_its_artifact_is_removed_right_after(
    registry, tiny_dir, tmp_path, run_cli, monkeypatch
):
    """Another process's `zoo rm --cascade` landing between the write of --out and the
    note on what the folder lacks: the folder is whole and the command that wrote it
    succeeds, as it would have a moment earlier (it was a not-found error, exit 3)."""
    import zoo
    from zoo.api.registry import Registry

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    shown = Registry.show

    def removed_first(self, name):
        with zoo.connect() as other:  # another process's rm
            other.rm(src.name, cascade=True)
        monkeypatch.setattr(Registry, "show", shown)
        return shown(self, name)

    monkeypatch.setattr(Registry, "show", removed_first)
    out = tmp_path / "out"
    code, text, err = run_cli(
        "materialize", src.name, "--layers", "2", "--hidden", "16", "--out", str(out)
    )
    assert code == 0 and err == "" and text.endswith(f"wrote {out}\n"), err
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert loaded.config.n_layer == 2 and loaded.config.n_embd == 16
    assert registry.list() == []  # the rm did land


def test_a_killed_writers_folder_is_found_by_fsck_and_removed_by_repair(
    registry, tiny_dir, tmp_path, run_cli
):
    from zoo.db import queries

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    out = tmp_path / "out"
    _killed_writer(src.name, out, tmp_path)
    assert len(_leftovers(tmp_path)) == 1 and not out.exists()
    report = registry.fsck(grace=0)
    assert [Path(p).name for p in report.output_leftovers] == _leftovers(tmp_path)
    code, text, _ = run_cli("fsck")
    assert code == 13 and "unfinished --out folders" in text  # what --repair clears
    code, text, err = run_cli("fsck", "--repair")  # a dead writer's folder goes at any age
    assert code == 0, err
    assert "removed 1 unfinished --out folders of writers no longer running" in text, text
    assert "removed 0 older than 1.0d" in text, text
    assert _leftovers(tmp_path) == [] and not out.exists()
    with registry.session() as session:
        assert queries.outputs_on(session, writer_host()) == []
    assert registry.list(kind="derived") == []  # rows come after the folder


def test_a_writer_in_another_process_id_namespace_is_never_taken_for_dead(
    registry, tmp_path, run_cli
):
    """Containers of one pod share a host name, not process ids: a journal row and a
    temporary folder of a writer in another namespace (its pid means nothing here) are
    neither listed nor removed by fsck, however old."""
    import hashlib

    from zoo.db import queries

    dead = subprocess.Popen(["true"])
    dead.wait()  # no such process here, as the other namespace's writer's pid may be
    elsewhere = f"{socket.gethostname()}/pidns:1"
    assert elsewhere != writer_host()
    tag = hashlib.sha256(elsewhere.encode()).hexdigest()[:8]
    out = tmp_path / "out"
    theirs = tmp_path / f".out.zoo-tmp-{tag}-{dead.pid}-0badcafe"
    theirs.mkdir()
    (theirs / "config.json").write_text("{}")
    registry.transaction(lambda s: queries.add_output(s, str(out), elsewhere, dead.pid))
    assert registry.fsck(grace=0).output_leftovers == ()
    code, _, err = run_cli("fsck", "--repair", "--grace", "0")
    assert code == 0, err
    assert (theirs / "config.json").is_file()
    with registry.session() as session:
        assert [r[2] for r in queries.outputs_on(session, elsewhere)] == [dead.pid]


def test_the_next_write_to_a_destination_removes_a_killed_writers_folder(
    registry, tiny_dir, tmp_path
):
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    out = tmp_path / "out"
    _killed_writer(src.name, out, tmp_path)
    assert len(_leftovers(tmp_path)) == 1
    registry.materialize(src.name, layers=2, hidden=16, out=out)
    assert _leftovers(tmp_path) == [] and registry.audit(out).status == "known"


def test_an_interrupted_swap_puts_the_previous_output_back(tmp_path):
    """Killed between setting the previous output aside and renaming the new one in: the
    cleanup restores the previous one, and drops the unfinished new one."""
    done = subprocess.run(["true"], check=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    del done
    out = tmp_path / "out"
    tag = f"{export._host_tag()}-{dead.pid}-abcd1234"
    old = tmp_path / f".out.zoo-old-{tag}"
    old.mkdir()
    (old / "config.json").write_text("{}")
    temp = tmp_path / f".out.zoo-tmp-{tag}"
    temp.mkdir()
    (temp / "model.safetensors").write_bytes(b"partial")
    live = tmp_path / f".out.zoo-tmp-{export._host_tag()}-{os.getpid()}-ffff0000"
    live.mkdir()  # a live writer's folder (this process) is never touched
    other = tmp_path / f".other.zoo-tmp-{tag}"
    other.mkdir()  # another destination's
    assert export.clean_leftovers(out) == [(old, True), (temp, False)]  # put back, removed
    assert (out / "config.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name, other.name])


def test_a_finished_swap_never_brings_back_the_previous_output(tmp_path):
    """Killed after the new output was renamed in, before the previous one (set aside)
    was removed: the previous one is dropped, even once the user has deleted the new
    output; a command that then refuses leaves nothing at ``out``."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "out"
    tag = f"{export._host_tag()}-{dead.pid}-abcd1234"
    old = tmp_path / f".out.zoo-old-{tag}"
    old.mkdir()
    (old / "config.json").write_text('{"model_type": "gpt2"}')
    # The new output was renamed in (no temporary folder of that tag), then deleted.
    assert export.clean_leftovers(out) == [(old, False)]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_replaced_output_stays_aside_until_its_replacement_is_recorded(
    registry, tiny_dir, tmp_path, monkeypatch
):
    """--force sets the previous output aside and removes it only once the new one's
    record is written: a process killed in between leaves it beside the new output (it was
    gone), and `zoo fsck --repair` of a swap killed before the rename puts it back and
    says so."""
    from zoo.api import materialize as mat

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    out = tmp_path / "out"
    registry.materialize(src.name, layers=1, hidden=16, out=out)
    seen = []
    real = mat.record_derived

    def recorded(*args, **kwargs):
        seen.append(sorted(p.name for p in tmp_path.iterdir() if ".zoo-old-" in p.name))
        return real(*args, **kwargs)

    monkeypatch.setattr(mat, "record_derived", recorded)
    registry.materialize(src.name, layers=2, hidden=16, out=out, force=True)
    assert len(seen) == 1 and len(seen[0]) == 1  # aside while the record was written
    assert not [p for p in tmp_path.iterdir() if ".zoo-old-" in p.name]  # removed after


@pytest.mark.parametrize("force", [False, True])
def test_an_output_whose_record_fails_is_taken_back(
    registry, tiny_dir, tmp_path, monkeypatch, force
):
    """The record is written after the folder is renamed into place; when that write
    fails (the database's disk is full), the new folder goes and the output it replaced
    comes back, byte for byte and still known: the folder and its row appear together
    or not at all (the new folder stayed, unknown to `zoo audit`, and the replaced one
    was deleted)."""
    from sqlalchemy.exc import OperationalError

    from zoo.api import materialize as mat

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    out = tmp_path / "out"
    before = {}
    if force:
        registry.materialize(src.name, layers=1, hidden=16, out=out)
        before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(*args, **kwargs):
        raise OperationalError("INSERT", {}, Exception("database or disk is full"))

    monkeypatch.setattr(mat, "record_derived", full)
    with pytest.raises(OperationalError):
        registry.materialize(src.name, layers=2, hidden=16, out=out, force=force)
    assert [p.name for p in tmp_path.iterdir() if "out" in p.name] == (["out"] if force else [])
    if force:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert registry.audit(out).status == "known"
    assert len(registry.list(kind="derived")) == int(force)


def test_fsck_names_the_out_folder_it_put_back_after_a_killed_swap(
    registry, tiny_dir, tmp_path, run_cli
):
    """A --force killed between setting the previous output aside and renaming the new one
    in: `zoo fsck --repair` puts the previous one back and names it by its --out, where it
    is now, not by the hidden name it had aside."""
    from zoo.db import queries

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    out = tmp_path / "out"
    registry.materialize(src.name, layers=1, hidden=16, out=out)
    dead = subprocess.Popen(["true"])
    dead.wait()
    tag = f"{export._host_tag()}-{dead.pid}-0badcafe"
    aside, temp = tmp_path / f".out.zoo-old-{tag}", tmp_path / f".out.zoo-tmp-{tag}"
    out.rename(aside)
    temp.mkdir()
    registry.transaction(lambda s: queries.add_output(s, str(out), writer_host(), dead.pid))
    code, text, err = run_cli("fsck", "--repair")
    assert code == 0, err
    (put_back,) = [line for line in text.splitlines() if line.startswith("put back")]
    assert put_back.endswith(f"set aside: {out}"), text
    assert registry.audit(out).status == "known" and not aside.exists() and not temp.exists()


@pytest.mark.parametrize("force", [False, True])
def test_a_folder_that_appears_at_out_while_zoo_writes_is_never_replaced(
    registry, tiny_dir, tmp_path, monkeypatch, force
):
    """--out is judged again when the finished folder is renamed into place: a folder
    someone made there meanwhile (the user, or another writer) stays as it is, and
    nothing is recorded, with --force too; an output of zoo's changed meanwhile the same."""
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    out = tmp_path / "outputs" / "out"
    out.parent.mkdir()
    if force:  # an output of zoo's, which --force may replace at the start
        registry.materialize(src.name, layers=1, hidden=16, out=out)
    derived = {a.name for a in registry.list(kind="derived")}
    write_marker = export._write_marker

    def meanwhile(folder, **kw):  # the last step before the rename
        out.mkdir(exist_ok=True)
        (out / "notes.txt").write_text("mine")
        return write_marker(folder, **kw)

    monkeypatch.setattr(export, "_write_marker", meanwhile)
    with pytest.raises(ConflictError, match="while zoo wrote it"):
        registry.materialize(src.name, layers=2, hidden=16, out=out, force=force)
    assert (out / "notes.txt").read_text() == "mine"
    assert {a.name for a in registry.list(kind="derived")} == derived
    assert [p.name for p in out.parent.iterdir()] == ["out"]  # no temporary folder left
    # Nothing in the way: the rename is as before.
    monkeypatch.setattr(export, "_write_marker", write_marker)
    (out / "notes.txt").unlink()
    if not force:
        out.rmdir()
    made = registry.materialize(src.name, layers=2, hidden=16, out=out, force=force)
    assert made.out == out and (out / "model.safetensors").exists()


def test_a_sharded_output_loads_strictly_and_keeps_its_identity(registry, tiny_dir, tmp_path):
    """A tiny --max-shard-size splits the weights into HF shards with an index; transformers
    loads them strictly with the logits of a single-file output, and the manifest (hence
    the derived checkpoint) is the same: identity covers tensors, not files."""
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    one = registry.materialize(src.name, layers=3, hidden=48, out=tmp_path / "one")
    many = registry.materialize(
        src.name, layers=3, hidden=48, out=tmp_path / "many", max_shard_size="20KB"
    )
    assert many.artifact.content_hash == one.artifact.content_hash
    index = json.loads((tmp_path / "many" / export.INDEX_FILE).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    total = 0
    for shard in shards:
        data = 0
        with safe_open(tmp_path / "many" / shard, "pt") as f:
            assert (
                json.loads(f.metadata()["zoo.derived"])["content_hash"]
                == many.artifact.content_hash
            )
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                assert index["weight_map"][name] == shard
                t = f.get_tensor(name)
                data += t.numel() * t.element_size()
            # A shard holds at most the limit, or one tensor larger than it.
            assert data <= 20_000 or len(f.keys()) == 1
        total += data
    assert index["metadata"]["total_size"] == total
    assert not (tmp_path / "one" / export.INDEX_FILE).exists()
    umask = os.umask(0)
    os.umask(umask)
    for folder in ("one", "many"):  # created as any file is: not executable
        for f in (tmp_path / folder).iterdir():
            assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f
    (m1, _), (m2, info2) = _load(tmp_path / "one"), _load(tmp_path / "many")
    assert not info2["missing_keys"] and not info2["unexpected_keys"]
    torch.testing.assert_close(_logits(m2), _logits(m1), rtol=0, atol=0)
    assert registry.audit(tmp_path / "many").status == "known"
    again = registry.rederive(many.artifact.name, out=tmp_path / "again", max_shard_size="30KB")
    assert again.artifact.content_hash == many.artifact.content_hash


def test_dtype_writes_the_floating_tensors_in_it_and_is_part_of_the_recipe(
    registry, tiny_dir, tmp_path, run_cli
):
    src = registry.import_checkpoint(tiny_dir("llama"))
    code, out, err = run_cli(
        "materialize",
        src.name,
        "--layers",
        "2",
        "--hidden",
        "32",
        "--dtype",
        "bfloat16",
        "--out",
        str(tmp_path / "bf16"),
        "--json",
    )
    assert code == 0, err
    artifact = json.loads(out)["artifact"]
    with safe_open(tmp_path / "bf16" / "model.safetensors", "pt") as f:
        dtypes = {f.get_tensor(n).dtype for n in f.keys()}  # noqa: SIM118
    assert dtypes == {torch.bfloat16}
    model, info = _load(tmp_path / "bf16")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    # The config says it, so transformers loads it in bfloat16 and saves it back so: the
    # folder saved again is still the derived checkpoint.
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    auto = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert auto.dtype == torch.bfloat16
    auto.save_pretrained(tmp_path / "saved")
    assert registry.audit(tmp_path / "saved").artifact.content_hash == artifact["content_hash"]
    full = registry.materialize(src.name, layers=2, hidden=32)
    assert full.artifact.content_hash != artifact["content_hash"]
    for name, t in model.state_dict().items():
        if name in full.state_dict:
            assert torch.equal(t, full.state_dict[name].to(torch.bfloat16)), name
    lineage = registry.lineage(artifact["name"], down=False)
    assert any(e.recipe.get("dtype") == "bfloat16" for e in lineage.edges)
    assert "dtype" not in full.artifact.info["recipe"]  # auto: recipes keep their JSON
    assert registry.rederive(artifact["name"]).artifact.content_hash == artifact["content_hash"]
    code, _, err = run_cli(
        "materialize", src.name, "--layers", "2", "--hidden", "32", "--dtype", "int8"
    )
    assert code == 2 and err.count("\n") == 1


def test_bad_output_options_are_refused_before_any_work(registry, tiny_dir, tmp_path, run_cli):
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    outs = tmp_path / "outs"
    outs.mkdir()
    for args, phrase in (
        (["--max-shard-size", "5GB"], "applies to --out"),
        (["--out", str(outs / "o"), "--max-shard-size", "lots"], "is not a size"),
        (["--out", str(outs / "o"), "--max-shard-size", "0"], "at least 1 byte"),
        # A path that names no folder, or goes up out of one that is not there (zoo would
        # create it and leave it behind).
        (["--out", f"{outs}/missing/.."], "ends in '..'"),
        (["--out", f"{outs}/x/y/../z"], "goes up out of"),
    ):
        code, out, err = run_cli("materialize", src.name, "--layers", "2", "--hidden", "16", *args)
        assert code == 2 and out == "" and phrase in err and err.count("\n") == 1, err
    for path in (f"{outs}/missing/..", f"{outs}/x/y/../z"):
        code, out, err = run_cli("export", src.name, "--out", path)
        assert code == 2 and out == "" and err.count("\n") == 1, err
    assert registry.list(kind="derived") == [] and list(outs.iterdir()) == []
    # Up out of a folder that is there: the folder beside it, as the user meant.
    (outs / "x").mkdir()
    code, _, err = run_cli("export", src.name, "--out", f"{outs}/x/../y")
    assert code == 0, err
    assert sorted(p.name for p in outs.iterdir()) == ["x", "y"] and registry.audit(outs / "y")


def test_an_output_without_room_on_its_disk_is_refused_before_any_byte(
    registry, tiny_dir, tmp_path, run_cli, monkeypatch
):
    """`materialize --out`, `export` and `rederive --out` compare what they will write
    with the free space where it goes: one line, exit 11, nothing written or recorded."""
    import shutil
    from collections import namedtuple

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    virtual = registry.materialize(src.name, layers=2, hidden=16).artifact
    outs = tmp_path / "outs"
    outs.mkdir()
    usage = namedtuple("usage", "total used free")
    real = shutil.disk_usage

    def full(path):  # the file system of the outputs has 1 kB left
        return usage(10**12, 10**12 - 1000, 1000) if Path(path) == outs else real(path)

    monkeypatch.setattr(export.shutil, "disk_usage", full)
    for args in (
        ["materialize", src.name, "--layers", "2", "--hidden", "24", "--out", str(outs / "m")],
        ["export", src.name, "--out", str(outs / "e")],
        ["rederive", virtual.name, "--out", str(outs / "r")],
    ):
        code, out, err = run_cli(*args)
        assert code == 11 and out == "" and err.count("\n") == 1, (args, err)
        assert "KB free; free some space" in err, err  # a tiny disk, in a unit that shows it
    assert list(outs.iterdir()) == []
    assert [a.name for a in registry.list(kind="derived")] == [virtual.name]
    monkeypatch.setattr(export.shutil, "disk_usage", real)
    code, _, err = run_cli("export", src.name, "--out", str(outs / "e"))
    assert code == 0, err


@pytest.mark.parametrize(
    ("method", "rescale", "two_pass"),
    [("dwt", "fan", True), ("dct", "std", True), ("dwt", "exact", False), ("dwt", "none", False)],
)
def test_a_resize_that_keeps_the_depth_goes_a_layer_at_a_time_with_the_bits_of_a_whole_one(
    registry, tiny_dir, tmp_path, monkeypatch, method, rescale, two_pass
):
    """dwt and dct resize each layer on its own when the depth is kept, so a role's
    layers are read, derived and written one at a time; a rule that scales by the
    result's std takes it in a first pass over the layers. The bytes equal those of the
    role derived whole."""
    from zoo.api import derivation
    from zoo.api import tensors as tio
    from zoo.api.derivation import Derivation

    monkeypatch.setattr(derivation, "_LAYOUTS", derivation._Recent(0))  # planned each time
    src = registry.import_checkpoint(tiny_dir("llama"))
    layers = src.config["num_hidden_layers"]
    ask = dict(layers=layers, hidden=48, method=method, rescale=rescale, device="cpu")
    calls = {"layers": 0, "two_pass": 0}
    real_layers, real_two_pass = Derivation._emit_layers, Derivation._emit_two_pass

    def by_layer(self, *args):
        calls["layers"] += 1
        return real_layers(self, *args)

    def in_two_passes(self, *args):
        calls["two_pass"] += 1
        return real_two_pass(self, *args)

    monkeypatch.setattr(Derivation, "_emit_layers", by_layer)
    monkeypatch.setattr(Derivation, "_emit_two_pass", in_two_passes)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    peak = _track_emitted_bytes(monkeypatch)
    roles = ("mlp.down_proj.weight", "mlp.up_proj.weight", "self_attn.q_proj.weight")
    layers_read: list[int] = []  # per read of the source: the most layers of one role
    load = tio.load_tensors

    def reading(store, records, **kw):
        records = list(records)
        layers_read.append(max(sum(r.name.endswith(s) for r in records) for s in roles))
        return load(store, records, **kw)

    monkeypatch.setattr(tio, "load_tensors", reading)
    streamed = registry.materialize(src.name, out=tmp_path / "streamed", **ask)
    role = max(
        sum(r.nbytes for r in streamed.artifact.tensors if r.name.endswith(suffix))
        for suffix in roles
    )
    assert (calls["two_pass"] > 0) == two_pass and (calls["layers"] > 0) != two_pass, calls
    # One worker: one layer of one role in flight, against the whole role at once; the
    # source is read a layer at a time, by both passes.
    assert 0 < peak[0] <= role // layers, (peak[0], role)
    assert max(layers_read) == 1, layers_read
    monkeypatch.setattr(Derivation, "_layer_chunks", lambda self, *a: ((), False))
    peak[0] = 0
    layers_read.clear()
    whole = registry.materialize(src.name, out=tmp_path / "whole", **ask)
    assert peak[0] >= role and max(layers_read) == layers
    assert whole.artifact.content_hash == streamed.artifact.content_hash
    for f in (tmp_path / "whole").glob("*.safetensors"):
        assert f.read_bytes() == (tmp_path / "streamed" / f.name).read_bytes()


def test_two_pass_roles_run_one_at_a_time_with_their_layers_side_by_side(
    registry, tiny_dir, tmp_path, monkeypatch
):
    """Each two-pass role spreads its layers over the workers, so two such roles at once
    would hold twice the layers in flight: they run one after the other."""
    import threading
    import time

    from zoo.api import derivation
    from zoo.api import tensors as tio

    src = registry.import_checkpoint(tiny_dir("llama"))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    real_map = tio.parallel_map  # threads even for a tiny model's little work
    monkeypatch.setattr(
        tio, "parallel_map", lambda fn, items, **kw: real_map(fn, items, **{**kw, "min_cost": 0})
    )
    running, most, lock = [0], [0], threading.Lock()
    real = derivation.Derivation._emit_two_pass

    def counted(self, *args):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.05)  # long enough for a second role to start, were it allowed
            return real(self, *args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(derivation.Derivation, "_emit_two_pass", counted)
    layers = src.config["num_hidden_layers"]
    m = registry.materialize(
        src.name, layers=layers, hidden=48, method="dwt", rescale="fan", out=tmp_path / "o"
    )
    assert most[0] == 1 and m.artifact.tensors


def test_a_small_two_pass_role_runs_on_the_calling_thread(registry, tiny_dir, monkeypatch):
    """A tiny model's two-pass layers cost less than starting threads for them: they run
    on the calling thread, with the bits the threads give."""
    import threading

    from zoo.api import tensors as tio

    src = registry.import_checkpoint(tiny_dir("llama"))
    layers = src.config["num_hidden_layers"]
    ask = dict(layers=layers, hidden=48, method="dwt", rescale="fan", device="cpu")
    started: list[str] = []
    real_start = threading.Thread.start

    def start(self):
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    inline = registry.materialize(src.name, **ask)
    assert started == []
    real_map = tio.parallel_map  # threads even for little work
    monkeypatch.setattr(
        tio, "parallel_map", lambda fn, items, **kw: real_map(fn, items, **{**kw, "min_cost": 0})
    )
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    threaded = registry.materialize(src.name, **ask)  # derived again, on threads
    assert started and threaded.artifact.content_hash == inline.artifact.content_hash


def test_a_signal_derived_by_rows_is_planned_at_its_whole_bytes_and_one_block(
    registry, tiny_dir, monkeypatch
):
    """The working set zoo plans for (and refuses a target by) counts, for an embedding
    derived a block of rows at a time, its source and result whole in their dtype and one
    block's float32 work: not the float32 copies of the whole signal."""
    from zoo.api import derivation
    from zoo.api.plan import MaterializeRequest, make_plan
    from zoo.api.tensors import KnownDigests

    monkeypatch.setattr(derivation, "_LAYOUTS", derivation._Recent(0))  # planned each time
    src = registry.import_checkpoint(tiny_dir("llama"))
    monkeypatch.setattr(derivation, "_ROW_CHUNK_BYTES", 4 * 48 * 8)  # blocks of 8 rows
    layers = src.config["num_hidden_layers"]
    plan = make_plan(registry, src.name, MaterializeRequest(layers=layers, hidden=48))
    d = derivation.Derivation(registry, plan, torch.device("cpu"), known=KnownDigests())
    (embedding,) = [g for g in d.groups if "embed_tokens" in " ".join(g.source_names)]
    n_in, n_out = embedding.source_elements, embedding.target_elements
    whole = 4 * (n_in + n_out)  # float32, both whole
    assert embedding.by_rows and whole < embedding.working_set < 8 * n_in + 12 * n_out
    monkeypatch.setattr(derivation.Derivation, "_row_chunk", lambda self, *a, **k: 0)
    d = derivation.Derivation(registry, plan, torch.device("cpu"), known=KnownDigests())
    (embedding,) = [g for g in d.groups if "embed_tokens" in " ".join(g.source_names)]
    assert not embedding.by_rows and embedding.working_set == 8 * n_in + 12 * n_out


@pytest.mark.parametrize(
    ("method", "rescale", "deeper"),
    [("dwt", "fan", False), ("dct", "std", False), ("dwt", "exact", False), ("dwt", "fan", True)],
)
def test_an_embedding_resized_in_width_goes_a_block_of_rows_at_a_time_with_the_same_bits(
    registry, tiny_dir, tmp_path, monkeypatch, method, rescale, deeper
):
    """A signal whose first axis keeps its size and is not transformed (an embedding's
    vocabulary; a role's layers when identity copies make the depth) is derived a block of
    rows at a time, the std rules' std taken over every block first; the bytes equal those
    of the signal derived whole."""
    from zoo.api import derivation

    src = registry.import_checkpoint(tiny_dir("llama"))
    layers = src.config["num_hidden_layers"]
    ask = dict(hidden=48, method=method, rescale=rescale, device="cpu")
    ask |= dict(layers=2 * layers, depth="identity") if deeper else dict(layers=layers - 1)
    # Blocks of 8 rows at the target width, so a tiny vocabulary makes several.
    monkeypatch.setattr(derivation, "_ROW_CHUNK_BYTES", 4 * 48 * 8)
    blocks: list[int] = []
    real = derivation._row_blocks

    def by_rows(x, *args):
        blocks.append(x.shape[0])
        return real(x, *args)

    monkeypatch.setattr(derivation, "_row_blocks", by_rows)
    rows = registry.materialize(src.name, out=tmp_path / "rows", **ask)
    assert blocks and max(blocks) >= 16, blocks  # the embedding and the head at least
    assert (blocks.count(layers) > 0) == deeper, blocks  # the roles, under identity depth
    monkeypatch.setattr(derivation.Derivation, "_row_chunk", lambda self, *a, **k: 0)
    whole = registry.materialize(src.name, out=tmp_path / "whole", **ask)
    assert whole.artifact.content_hash == rows.artifact.content_hash


@pytest.mark.parametrize(
    ("method", "size"),
    [
        ("hypercloning", dict(layers=8, hidden=64)),
        ("weight-selection", dict(layers=3, hidden=16)),
        ("dwt", dict(layers=4, hidden=48)),
    ],
)
def test_an_embedding_and_a_head_are_written_a_block_of_rows_at_a_time(
    registry, tiny_dir, tmp_path, monkeypatch, method, size
):
    """With --out, a tensor that is one signal written as it is (the embedding, the LM
    head) is derived and written a block of rows at a time, never whole: no tensor of its
    name reaches the sink, its blocks arrive in order, and the folder holds the bytes (and
    the content hash) of the same recipe derived in memory; transformers loads it
    strictly with the in-memory model's logits."""
    from zoo.api import derivation

    src = registry.import_checkpoint(tiny_dir("llama"))
    monkeypatch.setattr(derivation, "_ROW_CHUNK_BYTES", 4 * 64 * 8)  # a few rows a block
    blocks: dict[str, list[int]] = {}
    whole: list[str] = []
    real_write, real_call = derivation.RowWriter.write, derivation.Sink.__call__

    def write(self, block):
        blocks.setdefault(self.name, []).append(block.shape[0])
        real_write(self, block)

    def call(self, name, t):
        whole.append(name)
        real_call(self, name, t)

    monkeypatch.setattr(derivation.RowWriter, "write", write)
    monkeypatch.setattr(derivation.Sink, "__call__", call)
    out = tmp_path / "o"
    written = registry.materialize(src.name, method=method, out=out, device="cpu", **size)
    assert sorted(blocks) == ["lm_head.weight", "model.embed_tokens.weight"], sorted(blocks)
    assert all(len(b) >= 2 and sum(b) == 96 for b in blocks.values()), blocks
    assert not set(blocks) & set(whole)
    # Recorded without --out (`zoo materialize`'s virtual record): hashed by rows the same.
    by_rows = dict(blocks)
    blocks.clear()
    whole.clear()
    recorded = registry.materialize(
        src.name, method=method, device="cpu", return_weights=False, **size
    )
    assert blocks == by_rows and not set(blocks) & set(whole)
    assert recorded.artifact.content_hash == written.artifact.content_hash
    in_memory = registry.materialize(src.name, method=method, device="cpu", **size)
    assert written.artifact.content_hash == in_memory.artifact.content_hash
    model, info = _load(out)
    assert not any(info.values()), info
    state = model.state_dict()
    for name in blocks:
        assert torch.equal(state[name], in_memory.state_dict[name]), name
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**model.config.to_dict()))
    reference.load_state_dict(in_memory.state_dict, strict=True)
    assert torch.equal(_logits(model.eval()), _logits(reference.eval()))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_writes_its_embeddings_by_rows_with_the_bits_of_memory(
    tiny_dir, tmp_path, monkeypatch, family
):
    """In every family, the tensors written a block of rows at a time (word and position
    embeddings, untied heads; none in the vision families) give, under each method that
    goes by rows, the content hash of the same recipe derived in memory. (The arithmetic
    does not touch the database: one back end suffices.)"""
    import zoo
    from zoo.api import derivation

    registry = zoo.connect(home=tmp_path / "home")
    src = registry.import_checkpoint(tiny_dir(family))
    monkeypatch.setattr(derivation, "_ROW_CHUNK_BYTES", 4 * 64 * 4)  # a few rows a block
    streamed: dict[str, int] = {}
    real_write = derivation.RowWriter.write

    def write(self, block):
        streamed[self.name] = streamed.get(self.name, 0) + 1
        real_write(self, block)

    monkeypatch.setattr(derivation.RowWriter, "write", write)
    layers = src.config.get("num_hidden_layers", src.config.get("n_layer"))
    for method, size in (
        ("hypercloning", dict(layers=8, hidden=64)),
        ("weight-selection", dict(layers=3, hidden=16)),
        ("dwt", dict(layers=layers, hidden=48)),
        ("dct", dict(layers=layers - 1, hidden=48)),
    ):
        streamed.clear()
        out = tmp_path / method
        written = registry.materialize(src.name, method=method, out=out, device="cpu", **size)
        in_memory = registry.materialize(src.name, method=method, device="cpu", **size)
        assert written.artifact.content_hash == in_memory.artifact.content_hash, method
        assert (family in ("vit", "deit")) == (not streamed), (method, streamed)
        assert all(n >= 2 for n in streamed.values()), (method, streamed)
        with safe_open(out / "model.safetensors", "pt") as f:  # the bytes on disk too
            for name in streamed:
                assert torch.equal(f.get_tensor(name), in_memory.state_dict[name]), name


def test_a_tensor_written_in_parts_counts_only_once_every_byte_has_come(tmp_path):
    """A part past a tensor's end is refused; a tensor with a part missing stops the
    commit, and the folder being written is removed."""
    layout = {"a": ("F32", (4, 2), 32)}
    out = tmp_path / "out"
    with (
        pytest.raises(AssertionError, match="never written"),
        export.OutputFolder(out, layout, force=False) as folder,
    ):
        folder.put_part("a", 0, bytes(16))
        with pytest.raises(AssertionError, match="slot of 32"):
            folder.put_part("a", 24, bytes(16))
        folder.commit(config={}, metadata={}, card="")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with export.OutputFolder(out, layout, force=False) as folder:
        folder.put_part("a", 16, bytes(range(16)))
        folder.put_part("a", 0, bytes(range(16, 32)))
        folder.commit(config={}, metadata={}, card="")
    with safe_open(out / "model.safetensors", "pt") as f:
        got = f.get_tensor("a")
    assert got.view(torch.uint8).flatten().tolist() == [*range(16, 32), *range(16)]


def test_a_streamed_derivation_never_holds_the_whole_target(
    registry, tiny_dir, tmp_path, monkeypatch
):
    """Each finished tensor is written and let go: the bytes of derived tensors alive at
    once stay those of the groups in flight (they would reach the whole target if it were
    collected before writing), and the output is the same as a derivation in memory."""
    src = registry.import_checkpoint(tiny_dir("llama"))
    peak = _track_emitted_bytes(monkeypatch)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # two groups in flight at most
    streamed = registry.materialize(
        src.name, layers=16, hidden=32, method="dwt", out=tmp_path / "deep", device="cpu"
    )
    target = sum(r.nbytes for r in streamed.artifact.tensors)
    assert streamed.state_dict is None
    assert 0 < peak[0] < target / 2, (peak[0], target)
    kept = registry.materialize(src.name, layers=16, hidden=32, method="dwt")
    assert kept.artifact.content_hash == streamed.artifact.content_hash
    assert peak[0] >= target  # kept in memory: every tensor stays alive


def test_the_cli_records_a_target_larger_than_memory_one_group_at_a_time(
    registry, tiny_dir, monkeypatch, run_cli
):
    """`zoo materialize` prints a record, so it never keeps the weights: a target whose
    weights would not fit the memory zoo may use is derived, hashed and stored a group at
    a time, where the API asked for the weights refuses it before any work."""
    from zoo import _memory
    from zoo.api.materialize import MEMORY_MARGIN
    from zoo.errors import InvalidTargetError

    src = registry.import_checkpoint(tiny_dir("llama"))
    size = dict(layers=16, hidden=32, method="hypercloning", device="cpu")
    probe = registry.materialize(src.name, return_weights=False, **size)
    assert probe.state_dict is None
    target = sum(r.nbytes for r in probe.artifact.tensors)
    # Room for half the target: a group fits, the whole target does not.
    monkeypatch.setattr(_memory, "available_bytes", lambda dev: int(target / 2 / MEMORY_MARGIN))
    with pytest.raises(InvalidTargetError, match="with out="):
        registry.materialize(src.name, **size)
    peak = _track_emitted_bytes(monkeypatch)
    code, out, err = run_cli(
        "materialize", src.name, "--layers", "16", "--hidden", "32", "--method",
        "hypercloning", "--device", "cpu", "--store", "--json",
    )  # fmt: skip
    assert code == 0, err
    made = registry.show(json.loads(out)["artifact"]["name"])
    assert made.content_hash == probe.artifact.content_hash and not made.virtual
    assert 0 < peak[0] < target / 2, (peak[0], target)
    assert all(registry.store.verify(t.digest) for t in made.tensors)


def test_extraction_reads_the_source_one_group_at_a_time(registry, tiny_dir, monkeypatch):
    """extract reads one group of source tensors (a role's per-layer tensors), bands it,
    stores the bands and moves on: never the whole source at once, except for a unit
    order, which is chosen from every layer."""
    from zoo.api import tensors as tio

    src = registry.import_checkpoint(tiny_dir("llama"))
    reads: list[int] = []
    load = tio.load_tensors

    def counting(store, records, **kw):
        records = list(records)
        reads.append(len(records))
        return load(store, records, **kw)

    monkeypatch.setattr(tio, "load_tensors", counting)
    registry.extract(src.name, method="dwt", wavelet="haar", levels=1)
    layers = src.config["num_hidden_layers"]
    assert sum(reads) == len(src.tensors) and max(reads) == layers
    reads.clear()
    registry.extract(src.name, method="dwt", wavelet="haar", levels=1, order="similar")
    assert reads == [len(src.tensors)]


def test_export_writes_a_source_with_its_files_and_a_derived_checkpoint_re_derived(
    registry, tiny_dir, tmp_path, run_cli
):
    """A source streams from the store with the files imported beside it (its own card
    included); a virtual derived checkpoint is re-derived and verified as it is written.
    Both audit as themselves."""
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    code, out, err = run_cli("export", src.name, "--out", str(tmp_path / "src"))
    assert code == 0 and "wrote" in out, err
    files = {p.name for p in (tmp_path / "src").iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json"} <= files
    assert registry.audit(tmp_path / "src").artifact.name == src.name
    m = registry.materialize(src.name, layers=2, hidden=16)
    code, _, err = run_cli(
        "export", m.artifact.name, "--out", str(tmp_path / "small"), "--max-shard-size", "8KB"
    )
    assert code == 0, err
    assert (tmp_path / "small" / export.INDEX_FILE).exists()
    report = registry.audit(tmp_path / "small")
    assert report.status == "known" and report.artifact.name == m.artifact.name
    code, _, err = run_cli("export", src.name, "--out", str(tmp_path / "src"))
    assert code == 4 and "--force" in err  # a previous output: only with --force


def test_a_folder_re_split_is_the_folder_zoo_writes_at_that_shard_size(
    registry, tiny_dir, tmp_path, monkeypatch
):
    """What a client does with a server's files for --max-shard-size: re-splitting one
    output of zoo's gives, byte for byte, the output zoo writes at the new size (weights,
    index, config, card, side files), and back again; each tensor is copied a block at a
    time, blocks smaller than the tensors here."""
    monkeypatch.setattr(export, "_COPY_BLOCK", 100)
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    registry.export(src.name, out=tmp_path / "one")
    registry.export(src.name, out=tmp_path / "many", max_shard_size="8KB")

    def files(folder: Path) -> dict[str, bytes]:  # but the marker, which lists file times
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != export.MARKER}

    assert len(files(tmp_path / "many")) > len(files(tmp_path / "one")) + 2
    export.resharded(tmp_path / "one", tmp_path / "split", force=False, max_shard_size=8000)
    assert files(tmp_path / "split") == files(tmp_path / "many")
    export.resharded(tmp_path / "split", tmp_path / "joined", force=False, max_shard_size=10**9)
    assert files(tmp_path / "joined") == files(tmp_path / "one")
    assert registry.audit(tmp_path / "joined").artifact.name == src.name
    # Its output is zoo's like any other: replaced only with force.
    with pytest.raises(export.ConflictError):
        export.resharded(tmp_path / "one", tmp_path / "split", force=False, max_shard_size=8000)
    export.resharded(tmp_path / "one", tmp_path / "split", force=True, max_shard_size=4000)
    assert len(files(tmp_path / "split")) > len(files(tmp_path / "many"))
    # A folder naming a tensor twice is refused, not re-split with one copy dropped.
    shard = next((tmp_path / "many").glob("model-00001-*"))
    (tmp_path / "many" / "extra.safetensors").write_bytes(shard.read_bytes())
    with pytest.raises(export.InvalidInputError, match="in two files"):
        export.resharded(tmp_path / "many", tmp_path / "twice", force=False, max_shard_size=8000)
    assert not (tmp_path / "twice").exists()


def test_a_mount_point_as_out_is_refused_in_one_line(
    registry, tiny_dir, tmp_path, run_cli, monkeypatch
):
    """The finished folder is renamed into place, which a mount point cannot be (EBUSY)."""
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    mounted = tmp_path / "mnt"
    mounted.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == mounted or real(p))
    code, out, err = run_cli(
        "materialize", src.name, "--layers", "2", "--hidden", "16", "--out", str(mounted)
    )
    assert code == 2 and out == "" and "mount point" in err and err.count("\n") == 1
    assert list(mounted.iterdir()) == [] and registry.list(kind="derived") == []


def _whole_groups(monkeypatch):
    """Derive every group whole, as methods that are not layer-local are."""
    from zoo.api.derivation import Derivation

    monkeypatch.setattr(Derivation, "_layer_chunks", lambda self, *a: ((), False))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "method, size",
    [("hypercloning", dict(layers=8, hidden=64)), ("weight-selection", dict(layers=3, hidden=16))],
)
def test_layer_local_methods_derive_a_layer_at_a_time_with_the_same_bits(
    tiny_dir, tmp_path, monkeypatch, family, method, size
):
    """Weight selection and HyperCloning make each target layer from one source layer, so
    zoo derives their per-layer groups a layer at a time; every tensor is the one the
    whole-group derivation gives, bit for bit, and the manifest hash is the same. (The
    arithmetic does not touch the database: one back end suffices.)"""
    import zoo
    from zoo.api.derivation import Derivation

    registry = zoo.connect(home=tmp_path / "home")
    src = registry.import_checkpoint(tiny_dir(family))
    chunked = []
    real = Derivation._emit_layers

    def counted(self, group, source_layer, layers, emit):
        chunked.append((group.signals, source_layer, layers))
        real(self, group, source_layer, layers, emit)

    monkeypatch.setattr(Derivation, "_emit_layers", counted)
    by_layer = registry.materialize(src.name, method=method, device="cpu", **size)
    assert chunked, "no group was derived a layer at a time"
    # HyperCloning stacks the source again (target layer j from source layer j % S);
    # weight selection keeps the first layers.
    source_layers = src.config.get("num_hidden_layers", src.config.get("n_layer"))
    for _, i, layers in chunked:
        assert all((j % source_layers if method == "hypercloning" else j) == i for j in layers)
    _whole_groups(monkeypatch)
    whole = registry.materialize(src.name, method=method, device="cpu", **size)
    assert by_layer.artifact.content_hash == whole.artifact.content_hash
    assert by_layer.state_dict.keys() == whole.state_dict.keys()
    for name, t in whole.state_dict.items():
        assert torch.equal(by_layer.state_dict[name], t), name


def test_layers_copied_from_one_source_layer_are_derived_and_hashed_once(
    tiny_dir, tmp_path, monkeypatch
):
    """A HyperCloning grow from S to 3S layers makes target layers j, j + S and j + 2S
    from the same source layer: zoo derives them once and hashes their bytes once, and
    still writes every layer, each equal to the copy it stands for, with the manifest
    hash of the whole-group derivation."""
    import zoo
    from zoo.api import tensors as tio

    registry = zoo.connect(home=tmp_path / "home")
    src = registry.import_checkpoint(tiny_dir("llama"))
    S = src.config["num_hidden_layers"]
    hashed: list[str] = []
    real = tio.record

    def counted(name, t, known=None):
        rec, data = real(name, t, known)
        if data is not None:
            hashed.append(name)
        return rec, data

    monkeypatch.setattr(tio, "record", counted)
    out = tmp_path / "grown"
    m = registry.materialize(
        src.name, layers=3 * S, hidden=64, method="hypercloning", out=out, device="cpu"
    )
    per_layer = [r.name for r in m.artifact.tensors if ".layers." in r.name]
    hashed_layers = [n for n in hashed if ".layers." in n]
    assert len(per_layer) == 3 * len(hashed_layers)
    assert {int(n.split(".layers.")[1].split(".")[0]) for n in hashed_layers} == set(range(S))
    model, info = _load(out)
    assert not any(info.values()), info
    weights = model.state_dict()
    for name in per_layer:
        j = int(name.split(".layers.")[1].split(".")[0])
        twin = name.replace(f".layers.{j}.", f".layers.{j % S}.")
        assert torch.equal(weights[name], weights[twin]), name
    _whole_groups(monkeypatch)
    whole = registry.materialize(src.name, layers=3 * S, hidden=64, method="hypercloning")
    assert whole.artifact.content_hash == m.artifact.content_hash


def test_a_deep_layer_local_target_is_derived_with_one_layer_in_memory(
    registry, tiny_dir, tmp_path, monkeypatch
):
    """A 32-layer HyperCloning grow with --out holds about one layer of each group at a
    time, not a group's 32 layers: the derived bytes alive at once stay below a quarter of
    the largest group's, and the folder loads strictly."""
    src = registry.import_checkpoint(tiny_dir("llama"))
    peak = _track_emitted_bytes(monkeypatch)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    out = tmp_path / "deep"
    m = registry.materialize(
        src.name, layers=32, hidden=64, method="hypercloning", out=out, device="cpu"
    )
    records = m.artifact.tensors
    per_layer_group: dict[str, int] = {}
    for r in records:
        if ".layers." in r.name:
            role = r.name.split(".layers.")[1].split(".", 1)[1]
            per_layer_group[role] = per_layer_group.get(role, 0) + r.nbytes
    largest = max(per_layer_group.values())
    assert 0 < peak[0] < largest / 4, (peak[0], largest)
    _, info = _load(out)
    assert not any(info.values()), info


def test_an_output_without_room_says_how_much_in_units_that_show_it(tmp_path, monkeypatch):
    """A small output and a nearly full disk both read as "0.0 GB" in gigabytes alone."""
    from collections import namedtuple

    from zoo.errors import StorageError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(export.shutil, "disk_usage", lambda _: usage(10**9, 10**9, 350_000))
    with pytest.raises(StorageError, match=r"needs 1\.2 MB and its file system has 350\.0 KB"):
        export.check_room(tmp_path / "x", 1_234_567)


def test_an_output_that_cannot_be_written_names_the_out_folder(tmp_path, monkeypatch):
    """zoo assembles an output in a hidden folder beside it; a read-only file system is
    reported for the folder the user named, in one line, with exit 11."""
    import errno

    from zoo.errors import StorageError

    real = Path.mkdir

    def read_only(self, *args, **kwargs):
        if ".zoo-tmp-" in self.name:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(StorageError) as caught, export.staged(tmp_path / "out", force=False):
        pass
    message = str(caught.value)
    assert message.startswith(f"Cannot write out={str(tmp_path / 'out')!r}: Read-only file system")
    assert ".zoo-tmp-" not in message and "\n" not in message
    assert caught.value.exit_code == 11


def test_an_output_keeps_the_mode_owner_and_group_of_the_empty_folder_it_replaces(
    registry, tiny_dir, tmp_path, run_cli
):
    """A folder made private for the output stays private: the finished folder renamed
    over it takes its mode and, where the process may (as root), its owner and group."""
    import stat

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    out = tmp_path / "private"
    out.mkdir()
    out.chmod(0o700)
    owner = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(out, *owner)
    code, _, err = run_cli("export", src.name, "--out", str(out))
    assert code == 0, err
    st = out.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700 and (st.st_uid, st.st_gid) == owner
    assert registry.audit(out).artifact.name == src.name
    # A folder made for the output alone has the mode any new folder gets.
    code, _, err = run_cli("export", src.name, "--out", str(tmp_path / "new"))
    assert code == 0, err
    probe = tmp_path / "probe"
    probe.mkdir()
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == stat.S_IMODE(probe.stat().st_mode)


def test_a_failed_output_removes_the_folders_it_created_above_it_and_names_out(
    registry, tiny_dir, tmp_path, run_cli, monkeypatch
):
    """A disk that fills while the weights are written: one line naming --out, exit 11,
    and of the folders above --out only those zoo created, and nothing else, are gone."""
    import errno

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    outs = tmp_path / "outs"
    kept = outs / "kept"
    kept.mkdir(parents=True)
    (outs / "beside").mkdir()
    out = kept / "p1" / "p2" / "e1"

    def full(fd, data, offset):  # as a full disk answers a write: no file name
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patched:
        patched.setattr(os, "pwrite", full)
        code, text, err = run_cli("export", src.name, "--out", str(out))
    assert (code, text) == (11, "")
    assert err == (
        f"zoo: error: Cannot write --out {out}: No space left on device (nothing of it was kept).\n"
    )
    assert sorted(p.name for p in outs.iterdir()) == ["beside", "kept"]
    assert list(kept.iterdir()) == []
    # A name longer than its file system takes: refused before any folder is made.
    long = kept / "p1" / ("o" * 256)
    code, _, err = run_cli("export", src.name, "--out", str(long))
    assert code == 2 and err == (
        f"zoo: error: --out {long} has a name of 256 bytes, more than the 255 its file "
        "system takes; give a shorter one.\n"
    )
    assert list(kept.iterdir()) == []


@pytest.mark.parametrize("name", ["o" * 240, "é" * 127, "o" * 255])
def test_an_out_name_as_long_as_the_file_system_takes_is_written(
    registry, tiny_dir, tmp_path, run_cli, name
):
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    (tmp_path / "outs").mkdir()
    out = tmp_path / "outs" / name
    code, _, err = run_cli("export", src.name, "--out", str(out))
    assert code == 0, err
    assert registry.audit(out).artifact.name == src.name
    assert [p.name for p in out.parent.iterdir()] == [name]  # no temporary folder left


def test_an_out_name_longer_than_the_file_system_takes_is_refused_in_an_existing_folder(
    registry, tiny_dir, tmp_path, run_cli
):
    """A name of 256 bytes in a folder that exists: every look at the path fails with
    "File name too long", so the name is checked first, for every writer and the API."""
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    (tmp_path / "outs").mkdir()
    out = tmp_path / "outs" / ("b" * 256)
    said = f"--out {out} has a name of 256 bytes, more than the 255 its file system takes"
    for args in (
        ("export", src.name),
        ("materialize", src.name, "--layers", "1", "--hidden", "16"),
    ):
        code, _, err = run_cli(*args, "--out", str(out))
        assert code == 2 and err == f"zoo: error: {said}; give a shorter one.\n", err
    with pytest.raises(InvalidInputError, match="has a name of 256 bytes"):
        registry.export(src.name, out=out)
    assert list((tmp_path / "outs").iterdir()) == []


def test_a_killed_writers_folder_for_a_long_name_is_recognized_by_that_name_alone(
    tmp_path, monkeypatch
):
    """A temporary folder whose name was shortened to fit is still found and removed by
    the next write to its destination (and by fsck, which asks the same), never by a
    write to another long name that begins alike."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    out, other = tmp_path / ("o" * 240 + "a"), tmp_path / ("o" * 240 + "b")
    with monkeypatch.context() as patched:
        patched.setattr(os, "getpid", lambda: dead.pid)
        temp, _, _ = export._new_temp(out)
    assert len(os.fsencode(temp.name)) <= 255 and ".zoo-tmp-" in temp.name
    assert export.leftovers(other) == []
    assert export.leftovers(out) == [temp]
    assert export.clean_leftovers(out) == [(temp, False)] and list(tmp_path.iterdir()) == []


def test_an_out_path_that_is_not_utf8_is_refused_before_any_work(
    registry, tiny_dir, tmp_path, run_cli, monkeypatch
):
    """The journal of outputs records where zoo writes; a folder whose name is not UTF-8
    (an old Latin-1 disk's), met through the current folder, is named escaped, exit 2."""
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    latin = tmp_path / os.fsdecode(b"caf\xe9")
    latin.mkdir()
    monkeypatch.chdir(latin)
    code, text, err = run_cli(
        "materialize", src.name, "--layers", "1", "--hidden", "16", "--heads", "2", "--out", "o"
    )
    assert (code, text) == (2, "")
    assert err == (
        f"zoo: error: --out {str(latin / 'o')!a} is not UTF-8 text; zoo records where it "
        "writes, so give a folder whose path is.\n"
    )
    assert list(latin.iterdir()) == [] and registry.list(kind="derived") == []


def test_a_path_starting_with_a_tilde_is_the_users_home_in_every_call(
    registry, tiny_dir, tmp_path, monkeypatch
):
    """``out`` and an audit's path take ``~`` as the user's home, as an import's source and
    ``connect(home=...)`` do (os.path.expanduser): a program's ``out="~/models/x"`` is
    written there, not to a folder named ``~`` made in the current one, and ``out="~"`` is
    the home folder, which zoo never replaces."""
    user_home = tmp_path / "user"
    user_home.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    src = registry.import_checkpoint(tiny_dir("bert"))
    made = registry.materialize(src.name, layers=2, hidden=16, out="~/models/small")
    assert made.out == Path(os.path.expanduser("~/models/small")) == user_home / "models/small"
    assert registry.audit("~/models/small").artifact.name == made.artifact.name
    assert registry.audit(Path("~/models/small/model.safetensors")).status == "known"
    assert registry.export(src.name, out=Path("~/src-copy")) == user_home / "src-copy"
    again = registry.rederive(made.artifact.name, out="~/again")
    assert again.out == user_home / "again"
    assert sorted(p.name for p in user_home.iterdir()) == ["again", "models", "src-copy"]
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(ConflictError, match="home"):
        registry.materialize(src.name, layers=2, hidden=16, out="~", force=True)


@pytest.mark.parametrize("refusal", ["torch", "python"])
def test_memory_that_runs_out_is_one_line_and_leaves_no_output(
    registry, tiny_dir, tmp_path, run_cli, monkeypatch, refusal
):
    """Under a memory limit zoo does not plan for (`ulimit -v`, a container's), an
    allocation the system refuses ended a materialize --out with the allocator's
    traceback, exit 1; it is one line, exit 7, and the output folder is not left."""
    import torch

    from zoo import _memory

    src = registry.import_checkpoint(tiny_dir("llama"))
    out = tmp_path / "outs" / "small"
    empty = _memory.empty

    def refused(shape, **kw):
        if refusal == "python":
            raise MemoryError
        return torch.empty(1 << 46, dtype=torch.uint8)  # the allocator's own refusal

    monkeypatch.setattr(_memory, "empty", refused)
    code, text, err = run_cli(
        "materialize", src.name, "--layers", "2", "--hidden", "16", "--method", "dct",
        "--out", str(out),
    )  # fmt: skip
    asked = " (an allocation of 70.4 TB was refused)" if refusal == "torch" else ""
    assert (code, text, err) == (
        7,
        "",
        f"zoo: error: out of memory{asked}; free memory or raise the limit, or ask for a "
        "smaller size.\n",
    )
    assert not (tmp_path / "outs").exists()  # nor the hidden folder, nor the one above
    monkeypatch.setattr(_memory, "empty", empty)
    code, _, err = run_cli(
        "materialize", src.name, "--layers", "2", "--hidden", "16", "--method", "dct",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
