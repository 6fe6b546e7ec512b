"""The registry core end to end: import, ls, show, tag, provenance, dedup, bad input.

Database-backed tests run on SQLite and PostgreSQL (see conftest's ``registry``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from safetensors import safe_open
from tinymodels import copies

from zoo.errors import BlobCorruptError, ConflictError, InvalidInputError, InvalidNameError


def _blob_files(store_root: Path) -> list[Path]:
    return sorted(p for p in store_root.rglob("*") if p.is_file())


def test_import_records_config_tensors_and_provenance(registry, tiny_dir):
    folder = tiny_dir("bert")
    info = registry.import_checkpoint(folder)
    assert info.kind == "source" and info.family == "bert" and info.name == folder.name
    assert info.config == json.loads((folder / "config.json").read_text())
    with safe_open(folder / "model.safetensors", "np") as f:
        expected = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert {t.name for t in info.tensors} == set(expected)
    for t in info.tensors:
        array = expected[t.name]
        assert t.shape == array.shape
        assert t.digest == hashlib.sha256(array.tobytes()).hexdigest()
    (imp,) = info.imports
    assert imp.origin == str(folder.resolve()) and imp.revision == ""
    assert (
        imp.files["model.safetensors"]
        == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    )


def test_import_twice_stores_nothing_new_and_returns_the_same_record(registry, tiny_dir, tmp_path):
    folder = tiny_dir("gpt2")
    first = registry.import_checkpoint(folder)
    blobs = _blob_files(Path(registry.settings.store_url))
    copy = tmp_path / "renamed-copy"
    shutil.copytree(folder, copy)
    second = registry.import_checkpoint(copy, name="gpt2-copy")
    assert second.id == first.id and second.content_hash == first.content_hash
    assert _blob_files(Path(registry.settings.store_url)) == blobs
    assert "gpt2-copy" in second.aliases
    assert len(second.imports) == 2  # both places it was found are kept as provenance
    assert len(registry.list()) == 1


def test_a_file_changed_while_it_is_imported_stores_and_records_nothing_under_its_hash(
    registry, tiny_dir, tmp_path, monkeypatch, run_cli
):
    """A file is hashed, then read again to be stored: one changed in between (a trainer
    saving over it) is refused in one line, no row is written, and no blob holds bytes
    other than those its name hashes (a later import of the true bytes would reuse it)."""
    folder = tmp_path / "src"
    shutil.copytree(tiny_dir("bert"), folder)
    weights = folder / "model.safetensors"
    keep = type(registry.store).keep
    scribbled = []

    def scribble_then_keep(store, digest, size=None):
        if not scribbled:  # after the hashing, before the first blob is read to be stored
            with open(weights, "r+b") as f:
                f.seek(-4096, os.SEEK_END)
                f.write(bytes(range(256)) * 16)
            scribbled.append(digest)
        return keep(store, digest, size)

    monkeypatch.setattr(type(registry.store), "keep", scribble_then_keep)
    code, _, err = run_cli("import", str(folder))
    assert code == 2 and err.count("\n") == 1, err
    assert f"{folder} changed while zoo imported it" in err and "nothing was recorded" in err
    assert scribbled and registry.list() == []
    root = Path(registry.settings.store_url)
    for blob in root.glob("??/*"):
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob


@pytest.mark.parametrize("size", ["tiny", "threaded"])
def test_weights_saved_over_while_imported_are_refused_when_nothing_is_read_again(
    registry, tmp_path, monkeypatch, run_cli, size
):
    """A trainer saves a new version over the weights (truncate, then write) after zoo
    hashed their tensors and before it hashes the whole file. The registry holds every
    blob already, so no tensor is read again to be stored, and no read comes up short:
    only the file's own state says it changed. The import is refused in one line, exit 2,
    and the checkpoint keeps the one import it had, not one recording another file's
    digest. "threaded": the whole file is hashed in the background, as the tensors are
    stored."""
    from tinymodels import save_tiny

    import zoo.checkpoint.hf as hf

    extra = {"vocab_size": 20000} if size == "threaded" else {}
    first = save_tiny("bert", tmp_path / "first", **extra)
    newer = save_tiny("bert", tmp_path / "newer", seed=1, **extra)
    weights = first / "model.safetensors"
    assert weights.stat().st_size == (newer / "model.safetensors").stat().st_size
    known = registry.import_checkpoint(first)
    folder = tmp_path / "copy"
    shutil.copytree(first, folder)
    hash_tensors, hash_file = hf._FileReader._hash_tensors, hf._FileReader._hash_file
    hashed: list[str] = []
    all_hashed = threading.Event()
    saved = []

    def hash_tensors_and_count(reader, fname, entries):
        digests = hash_tensors(reader, fname, entries)
        hashed.extend(digests)
        if len(hashed) == len(known.tensors):
            all_hashed.set()
        return digests

    def save_over_then_hash(reader, fname, header, counter):
        # Once every tensor is hashed (on other threads, "threaded"): truncating the file
        # earlier would cut a tensor's read short, which zoo refuses for that reason.
        assert all_hashed.wait(60)
        with open(folder / fname, "wb") as f:  # what save_file does: truncate, then write
            f.write((newer / fname).read_bytes())
        saved.append(fname)
        return hash_file(reader, fname, header, counter)

    monkeypatch.setattr(hf._FileReader, "_hash_tensors", hash_tensors_and_count)
    monkeypatch.setattr(hf._FileReader, "_hash_file", save_over_then_hash)
    code, out, err = run_cli("import", str(folder))
    assert saved == ["model.safetensors"]
    assert code == 2 and err.count("\n") == 1, out + err
    assert f"{folder} changed while zoo imported it" in err and "nothing was recorded" in err
    assert "model.safetensors" in err, err
    (kept,) = registry.list()
    assert [i.origin for i in registry.show(kept.name).imports] == [str(first.resolve())]
    assert kept.id == known.id


# The CLI in a process of its own (a SIGBUS kills the process that reads): the weights
# are cut short (as ``save_pretrained`` saving over them truncates them first) either
# while they are hashed (once zoo has opened them and checked their size) or once the
# checkpoint is open, before its tensors are read again (to be stored, or to audit them).
_CUT_SHORT_CLI = """
import os, sys
import zoo.checkpoint, zoo.checkpoint.hf as hf

when, argv = sys.argv[1], sys.argv[2:]

def cut(root):
    for f in sorted(os.listdir(root)):
        if f.endswith(".safetensors"):
            os.truncate(os.path.join(root, f), 1000)

if when == "hashing":
    in_file_order, root = hf._in_file_order, argv[-1]
    if not os.path.isdir(root):
        root = os.path.dirname(root)

    def cut_then_order(header):
        cut(root)
        return in_file_order(header)

    hf._in_file_order = cut_then_order
else:
    open_checkpoint = zoo.checkpoint.open_checkpoint

    def open_then_cut(path, **kw):
        ckpt = open_checkpoint(path, **kw)
        cut(ckpt.root)
        return ckpt

    zoo.checkpoint.open_checkpoint = open_then_cut

from zoo_cli.main import main
main(argv)
"""


@pytest.mark.parametrize("when", ["hashing", "opened"])
@pytest.mark.parametrize("size", ["tiny", "threaded"])
@pytest.mark.parametrize("command", ["import", "audit"])
def test_weights_cut_short_while_read_are_one_line_and_nothing_is_recorded(
    registry, tmp_path, when, size, command
):
    """No SIGBUS ("Bus error", exit 135): a file cut short under zoo is refused in one
    line, exit 2, at any moment of the read, with no row and no blob written. "threaded":
    over the size hashed on the calling thread, so worker threads read the files, and the
    whole-file hashes go on in the background once the checkpoint is open."""
    from tinymodels import save_tiny

    folder = tmp_path / "src"
    extra = {"vocab_size": 20000} if size == "threaded" else {}
    save_tiny("bert", folder, **extra)
    assert ((folder / "model.safetensors").stat().st_size > 1 << 20) == (size == "threaded")
    target = folder if command == "import" else folder / "model.safetensors"
    done = subprocess.run(
        [sys.executable, "-c", _CUT_SHORT_CLI, when, command, str(target)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = done.stderr
    assert done.returncode == 2, (done.returncode, err)
    assert err.startswith("zoo: error: ") and err.count("\n") == 1, err
    if command == "import":
        assert f"{folder} changed while zoo imported it" in err, err
        assert "nothing was recorded" in err, err
    else:
        assert f"{target} changed while zoo read it" in err, err
    assert registry.list() == []
    assert [p for p in Path(registry.settings.store_url).glob("??/*")] == []


def test_a_new_sqlite_registry_takes_the_umask_as_zoos_other_files_do(tmp_path):
    """A team's registry in a group folder (umask 002): SQLite alone would make the
    database 0644, and every other member's write would be refused as read-only."""
    code = (
        "import os, stat, sys; os.umask(0o002); import zoo; "
        "zoo.connect(home=sys.argv[1]).list(); "
        "print(oct(stat.S_IMODE(os.stat(os.path.join(sys.argv[1], 'zoo.db')).st_mode)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "home")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0o664"], done.stdout
    for name in ("zoo.db-wal", "zoo.db-shm"):
        wal = tmp_path / "home" / name
        assert not wal.exists() or oct(wal.stat().st_mode & 0o777) == "0o664", name


def test_a_registry_held_open_refuses_its_sqlite_file_replaced_or_removed_on_disk(
    tiny_dir, tmp_path
):
    """A long-lived handle (a server's) on a SQLite registry whose file is replaced (a
    backup restored by rename) or removed neither writes to the file no longer there (its
    writes were acknowledged and lost) nor reads the new one beside the old file's
    write-ahead log (SQLite would apply it to the new file): it refuses, naming the file."""
    import sqlite3

    import zoo
    from zoo.errors import DatabaseUnavailableError

    db = tmp_path / "zoo.db"
    url, store = f"sqlite:///{db}", str(tmp_path / "blobs")
    reg = zoo.connect(db_url=url, store_url=store)
    kept = reg.import_checkpoint(tiny_dir("bert"))
    with sqlite3.connect(db) as live, sqlite3.connect(tmp_path / "backup.db") as backup:
        live.backup(backup)
    reg.import_checkpoint(tiny_dir("gpt2"))
    assert len(reg.list()) == 2
    os.replace(tmp_path / "backup.db", db)
    for call in (reg.list, lambda: reg.tag(kept.name, "after-restore")):
        with pytest.raises(DatabaseUnavailableError, match="was replaced while this process"):
            call()
    other = tmp_path / "other.db"
    gone = zoo.connect(db_url=f"sqlite:///{other}", store_url=str(tmp_path / "other-blobs"))
    assert gone.list() == []
    other.unlink()
    with pytest.raises(DatabaseUnavailableError, match="was removed while this process"):
        gone.list()
    assert not other.exists()


OLDER_IMPLICIT = ("add_cross_attention", "is_decoder")


def _as_older_transformers_saved(folder: Path) -> Path:
    """A BERT saved as transformers 4 wrote it: position ids saved with the weights, the
    dtype as ``torch_dtype``, ``tie_word_embeddings`` left at its default."""
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    config = transformers.BertConfig(
        vocab_size=96,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    saved = json.loads((folder / "config.json").read_text())
    # And the keys transformers 4 left implicit at their defaults, which 5 writes out.
    for key in ("dtype", "tie_word_embeddings", *OLDER_IMPLICIT):
        saved.pop(key, None)
    saved.update(torch_dtype="float32", transformers_version="4.39.0")
    (folder / "config.json").write_text(json.dumps(saved))
    return folder


def test_a_save_pretrained_copy_is_imported_as_the_checkpoint_it_was_loaded_from(
    registry, tmp_path, run_cli
):
    """Loaded and saved again by transformers, a checkpoint's config gains what every save
    writes (transformers' version, the dtype key, tie_word_embeddings, and the defaults an
    older transformers left implicit) and its rebuilt
    buffers are dropped; its weights are the same. Importing the copy records that import
    on the checkpoint (as importing the same content from another folder does), so an
    audit of the copy still names it and its ancestry. A copy whose weights or model
    config changed is a checkpoint of its own."""
    import torch
    import transformers

    ml = registry.import_checkpoint(_as_older_transformers_saved(tmp_path / "ml"))
    transformers.AutoModel.from_pretrained(tmp_path / "ml").save_pretrained(tmp_path / "cp" / "sp")
    copy = tmp_path / "cp" / "sp"
    before, after = (json.loads((f / "config.json").read_text()) for f in (tmp_path / "ml", copy))
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    saved_keys = {"dtype", "torch_dtype", "tie_word_embeddings", "transformers_version"}
    assert changed == saved_keys | set(OLDER_IMPLICIT)
    with safe_open(copy / "model.safetensors", "pt") as f:
        assert "embeddings.position_ids" not in f.keys()  # noqa: SIM118
    code, out, _ = run_cli("import", str(copy))
    assert code == 0 and out.startswith(f"ml  source  bert  {ml.content_hash[:12]}"), out
    assert [a.name for a in registry.list()] == ["ml"]
    assert [i.origin for i in registry.show("ml").imports] == [
        str((tmp_path / "ml").resolve()),
        str(copy.resolve()),
    ]
    report = registry.audit(copy)
    assert (report.status, report.artifact.id) == ("known", ml.id)
    assert {n.name for n in report.lineage.nodes.values()} == {"ml"}
    # Many folders at once: the same.
    shutil.copytree(copy, tmp_path / "again")
    (again,) = registry.import_checkpoints([tmp_path / "again"])
    assert again.id == ml.id
    # A key that is not its default, a model key changed, or a weight: another checkpoint.
    shutil.copytree(copy, tmp_path / "decoder")
    (tmp_path / "decoder" / "config.json").write_text(json.dumps({**after, "is_decoder": True}))
    assert registry.import_checkpoint(tmp_path / "decoder").id != ml.id
    config = {**after, "hidden_dropout_prob": 0.3}
    shutil.copytree(copy, tmp_path / "other-config")
    (tmp_path / "other-config" / "config.json").write_text(json.dumps(config))
    assert registry.import_checkpoint(tmp_path / "other-config").id != ml.id
    tuned = transformers.AutoModel.from_pretrained(copy)
    with torch.no_grad():
        tuned.encoder.layer[0].output.dense.weight.add_(1)
    tuned.save_pretrained(tmp_path / "tuned")
    assert registry.import_checkpoint(tmp_path / "tuned").id != ml.id


def test_a_copy_lacking_an_untied_head_is_neither_the_checkpoint_nor_its_copy(
    registry, tiny_dir, tmp_path
):
    """A Llama config ties nothing unless it says so (LlamaConfig's default): a copy that
    lacks its LM head, equal though the head is to the embedding, loads with a random
    head. The audit says the head is missing, and an import of it is a source of its own."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "untied"
    shutil.copytree(tiny_dir("llama"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config))
    tensors = load_file(folder / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    src = registry.import_checkpoint(folder)
    headless = tmp_path / "headless"
    shutil.copytree(folder, headless)
    del tensors["lm_head.weight"]
    save_file(tensors, headless / "model.safetensors", metadata={"format": "pt"})
    (headless / "config.json").write_text(json.dumps({**config, "transformers_version": "4.44.0"}))
    report = registry.audit(headless)
    assert (report.status, report.missing) == ("modified", ["lm_head.weight"]), report.to_text()
    assert registry.import_checkpoint(headless).id != src.id


def test_a_copy_saved_by_transformers_4_48_is_imported_as_the_checkpoint(registry, tmp_path):
    """transformers 4.48 writes ``_attn_implementation_autoset`` into every config it saves
    (it chose the attention implementation itself): a copy carrying it is still a copy."""
    import transformers

    ml = registry.import_checkpoint(_as_older_transformers_saved(tmp_path / "ml"))
    copy = tmp_path / "copy448"
    transformers.AutoModel.from_pretrained(tmp_path / "ml").save_pretrained(copy)
    config = json.loads((copy / "config.json").read_text())
    config.update(_attn_implementation_autoset=True, transformers_version="4.48.0")
    (copy / "config.json").write_text(json.dumps(config))
    assert registry.import_checkpoint(copy).id == ml.id
    assert [a.name for a in registry.list()] == ["ml"]


def _quantized(folder: Path, qweight, extra=None) -> Path:
    """A GPTQ-style checkpoint of a model type zoo has no family for: integer weights
    beside float32 and fp16 tensors."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tensors = {
        "transformer.wte.weight": torch.randn(64, 32),
        "transformer.h.0.attn.c_attn.qweight": qweight,
        "transformer.h.0.attn.c_attn.scales": torch.rand(1, 96, dtype=torch.float16),
        "transformer.h.0.attn.c_attn.bias": torch.randn(96),
        **(extra or {}),
    }
    folder.mkdir(parents=True)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    config = {
        "model_type": "gpt_bigcode",
        "architectures": ["GPTBigCodeForCausalLM"],
        "n_embd": 32,
        "n_layer": 1,
        "n_head": 2,
        "vocab_size": 64,
        "quantization_config": {"quant_method": "gptq", "bits": 8, "group_size": 32},
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _digests(folder: Path) -> dict[str, str]:
    with safe_open(folder / "model.safetensors", "np") as f:
        return {k: hashlib.sha256(f.get_tensor(k).tobytes()).hexdigest() for k in f.keys()}  # noqa: SIM118


@pytest.mark.parametrize("dtype", ["int32", "int8"])
def test_integer_weights_that_differ_are_a_checkpoint_of_their_own(registry, tmp_path, dtype):
    """A quantized checkpoint whose integer weights differ from a registered one's (its
    float tensors the same) is modified, and imports as a source of its own whose export
    gives its own weights; an integer tensor it adds is a difference too. A head written
    beside the embedding it is tied to (transformers' tie table for this class) is not."""
    import torch
    from safetensors.torch import load_file, save_file

    def draw(seed: int):
        generator = torch.Generator().manual_seed(seed)
        q = torch.randint(-128, 127, (32, 96), dtype=torch.int32, generator=generator)
        return q.to(getattr(torch, dtype))

    first = registry.import_checkpoint(_quantized(tmp_path / "q1", draw(1)), name="quant")
    second = _quantized(tmp_path / "q2", draw(2))
    mine, theirs = _digests(second), _digests(tmp_path / "q1")
    differ = sorted(n for n in mine if mine[n] != theirs[n])
    assert differ == ["transformer.h.0.attn.c_attn.qweight"]
    report = registry.audit(second)
    assert (report.status, report.artifact.id) == ("modified", first.id), report.to_text()
    assert report.differing == differ and not report.not_compared
    other = registry.import_checkpoint(second, name="other")
    assert other.id != first.id
    registry.export("other", out=tmp_path / "exported")
    assert _digests(tmp_path / "exported") == mine

    g_idx = {"transformer.h.0.attn.c_attn.g_idx": torch.arange(32, dtype=torch.int32)}
    added = _quantized(tmp_path / "q3", draw(1), extra=g_idx)
    report = registry.audit(added)
    assert (report.status, report.extra) == ("modified", list(g_idx)), report.to_text()

    tensors = load_file(tmp_path / "q1" / "model.safetensors")
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].clone()
    save_file(tensors, tmp_path / "q1" / "model.safetensors", metadata={"format": "pt"})
    report = registry.audit(tmp_path / "q1")
    assert report.status == "known" and report.not_compared == ["lm_head.weight"]
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1
    save_file(tensors, tmp_path / "q1" / "model.safetensors", metadata={"format": "pt"})
    assert registry.audit(tmp_path / "q1").extra == ["lm_head.weight"]


def test_importing_again_under_a_new_name_says_it_became_an_alias(registry, tiny_dir, run_cli):
    first = registry.import_checkpoint(tiny_dir("gpt2"))
    code, out, err = run_cli("import", str(tiny_dir("gpt2")), "--name", "my-gpt2")
    assert code == 0, err
    assert out.startswith(first.name) and "aliases: my-gpt2" in out


def test_shared_tensors_are_stored_once(registry, tiny_dir, tmp_path):
    folder = tiny_dir("bert")
    registry.import_checkpoint(folder)
    before = len(_blob_files(Path(registry.settings.store_url)))
    # A "fine-tune" that changed one tensor and the config.
    from tinymodels import build_model

    model = build_model("bert")
    import torch

    with torch.no_grad():
        model.bert.pooler.dense.bias.add_(1.0) if hasattr(
            model.bert, "pooler"
        ) and model.bert.pooler is not None else model.cls.predictions.bias.add_(1.0)
    tuned = tmp_path / "tuned"
    model.save_pretrained(tuned)
    info = registry.import_checkpoint(tuned)
    assert info.name == "tuned"
    assert len(_blob_files(Path(registry.settings.store_url))) == before + 1


def test_sharded_checkpoint_imports_like_a_single_file(registry, tiny_dir):
    single = registry.import_checkpoint(tiny_dir("bert"))
    sharded = registry.import_checkpoint(tiny_dir("bert", sharded=True))
    assert {t.digest for t in sharded.tensors} == {t.digest for t in single.tensors}
    assert sharded.id == single.id  # same config and tensors: the same checkpoint


def test_default_name_collision_gets_a_hash_suffix(registry, tiny_dir, tmp_path):
    a, b = tmp_path / "a" / "model", tmp_path / "b" / "model"
    shutil.copytree(tiny_dir("bert"), a)
    shutil.copytree(tiny_dir("bert", seed=1), b)
    first = registry.import_checkpoint(a)
    second = registry.import_checkpoint(b)
    assert first.name == "model"
    assert second.name == f"model-{second.content_hash[:8]}"
    with pytest.raises(ConflictError):
        registry.import_checkpoint(tiny_dir("gpt2"), name="model")
    # A removed artifact keeps its name until gc: the refusals say so.
    registry.rm(first.name)
    with pytest.raises(ConflictError, match=r"removed source .*`reg\.gc\(\)` frees the name"):
        registry.import_checkpoint(tiny_dir("gpt2"), name="model")
    with pytest.raises(ConflictError, match="removed source"):
        registry.tag(second.name, "model")
    registry.gc(grace=0)
    assert registry.import_checkpoint(tiny_dir("gpt2"), name="model").name == "model"


def test_show_resolves_name_alias_and_hash_prefix(registry, tiny_dir):
    info = registry.import_checkpoint(tiny_dir("vit"))
    registry.tag(info.name, "prod")
    assert registry.show("prod").id == info.id
    assert registry.show(info.content_hash[:10]).id == info.id
    with pytest.raises(InvalidNameError):
        registry.tag(info.name, "bad/alias")


def test_tag_moves_an_alias(registry, tiny_dir):
    a = registry.import_checkpoint(tiny_dir("bert"))
    b = registry.import_checkpoint(tiny_dir("gpt2"))
    registry.tag(a.name, "latest")
    registry.tag(b.name, "latest")
    assert registry.show("latest").id == b.id
    assert "latest" not in registry.show(a.name).aliases
    assert registry.tag(b.name, "latest").aliases == ("latest",)  # again: nothing moves
    with pytest.raises(ConflictError, match="is the registry name of an artifact"):
        registry.tag(b.name, a.name)
    assert registry.show(a.name).id == a.id and registry.show(b.name).aliases == ("latest",)


def test_an_alias_keeps_where_it_pointed_after_the_artifacts_are_gone(registry, tiny_dir, run_cli):
    from zoo.errors import NotFoundError

    a = registry.import_checkpoint(tiny_dir("bert"))
    b = registry.import_checkpoint(tiny_dir("gpt2"))
    assert run_cli("tag", a.name, "prod") == (0, f"prod -> {a.name}\n", "")
    assert run_cli("tag", b.name, "prod") == (0, f"prod -> {b.name} (was {a.name})\n", "")
    registry.tag(b.name, "prod")  # points there already: no new setting
    code, out, _ = run_cli("tag", a.name, "prod", "--json")
    assert code == 0 and json.loads(out)["previous"] == b.name
    history = registry.alias_history("prod")
    assert [(s.artifact_name, s.kind, s.content_hash) for s in history] == [
        (a.name, "source", a.content_hash),
        (b.name, "source", b.content_hash),
        (a.name, "source", a.content_hash),
    ]
    assert {s.set_by for s in history} == {registry.user}
    assert history[0].set_at >= history[1].set_at >= history[2].set_at
    assert history[0].set_at.tzinfo is not None

    # An alias an import adds (the same content under another name) is a setting too.
    registry.import_checkpoint(tiny_dir("gpt2"), name="gpt2-copy")
    assert [s.artifact_name for s in registry.alias_history("gpt2-copy")] == [b.name]

    # Removed and forgotten, the artifact takes the alias with it; the history keeps
    # where the alias pointed, and says when it went.
    registry.rm(a.name)
    code, out, err = run_cli("show", "prod")  # removed, not yet forgotten: said so
    assert code == 3 and err.count("\n") == 1 and "Did you mean" not in err
    assert f"'prod' names the source {a.name} ({a.content_hash[:12]}), removed" in err
    registry.gc(grace=0)
    with pytest.raises(NotFoundError):
        registry.show(a.name)
    gone, *before = registry.alias_history("prod")
    assert before == history
    assert (gone.artifact_name, gone.kind, gone.content_hash) == (None, None, None)
    assert gone.set_by == registry.user and gone.set_at >= history[0].set_at
    code, out, _ = run_cli("alias-history", "prod", "--json")
    names = [s["artifact_name"] for s in json.loads(out)["history"]]
    assert code == 0 and names == [None, a.name, b.name, a.name]
    code, out, _ = run_cli("alias-history", "prod")
    lines = out.splitlines()
    assert code == 0 and lines[0].endswith("prod gone with the artifact it named (zoo gc)")
    assert lines[1].endswith(f"{registry.user}  prod -> {a.name} (source {a.content_hash[:12]})")
    # Set again, it says nothing of a previous target (there is none).
    assert run_cli("tag", b.name, "prod") == (0, f"prod -> {b.name}\n", "")

    code, out, err = run_cli("alias-history", "never-set")
    assert code == 3 and out == "" and "No alias 'never-set' was ever set" in err
    code, _, err = run_cli("alias-history", b.name)
    assert code == 3 and "registry name, not an alias" in err


def test_an_alias_history_comes_a_page_at_a_time_newest_first(registry, run_cli, tiny_dir):
    """Seven settings, three a page: each once, newest first, the last page without a
    cursor, on each back end; the command line prints the command of the next page."""
    import shlex

    names = [
        registry.import_checkpoint(tiny_dir("gpt2", seed=s), name=f"gpt2-{s}").name
        for s in range(7)
    ]
    for name in names:
        registry.tag(name, "prod")
    newest_first = names[::-1]
    whole = registry.alias_history("prod")  # no limit: every setting, as before pages
    assert [s.artifact_name for s in whole] == newest_first and whole.next is None

    pages, after = [], None
    while True:
        page = registry.alias_history("prod", limit=3, after=after)
        pages.append([s.artifact_name for s in page])
        assert len(pages) <= 3, pages  # a cursor that moves on
        if page.next is None:
            break
        after = page.next
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]

    # The command line: each page names the command of the next one, on stderr.
    seen, command = [], ["alias-history", "prod", "--limit", "3"]
    while command:
        code, out, err = run_cli(*command)
        assert code == 0, err
        seen += [line.split(" -> ")[1].split(" (")[0] for line in out.splitlines()]
        assert len(seen) <= 7, seen
        told = err.rpartition("older ones: ")[2].strip()
        command = shlex.split(told)[1:] if told else None
        assert not command or err.startswith("3 settings shown;")
    assert seen == newest_first
    code, out, _ = run_cli("alias-history", "prod", "--limit", "3", "--json")
    body = json.loads(out)
    assert code == 0 and [s["artifact_name"] for s in body["history"]] == newest_first[:3]
    code, out, _ = run_cli("alias-history", "prod", "--limit", "3", "--after", body["next"])
    assert code == 0 and len(out.splitlines()) == 3
    assert run_cli("alias-history", "prod")[1].count("\n") == 7  # under the default page

    # Past the last setting: an empty page; a cursor past 32 bits is read, not refused.
    assert registry.alias_history("prod", after="1") == []
    assert run_cli("alias-history", "prod", "--after", "1") == (
        0,
        "(no more settings after this cursor)\n",
        "",
    )
    assert len(registry.alias_history("prod", limit=2, after=str(2**40))) == 2

    # A cursor no page gave, or a page of no setting: one line, exit 2.
    for bad in ({"after": "abc"}, {"after": "-3"}, {"limit": 0}, {"limit": True}):
        with pytest.raises(InvalidInputError):
            registry.alias_history("prod", **bad)
    code, out, err = run_cli("alias-history", "prod", "--after", "abc")
    assert (code, out) == (2, "") and err.count("\n") == 1 and "not a listing cursor" in err
    code, _, err = run_cli("alias-history", "never-set", "--after", "5")
    assert code == 3 and "No alias 'never-set' was ever set" in err


def test_show_reads_imports_aliases_and_files_as_their_tables_hold_them(
    registry, tiny_dir, tmp_path
):
    """An artifact's imports, aliases and files come back from one query over the three
    tables: each part equals a plain read of its own table, in its order (imports oldest
    first, aliases and files by name), with its types (times, sizes)."""
    from datetime import datetime

    from sqlalchemy import select

    from zoo.db.models import Alias, ArtifactFile, ImportRecord

    folder = tmp_path / "gpt2"  # a copy: the cached tiny folder is every test's
    shutil.copytree(tiny_dir("gpt2"), folder)
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 8}')
    first = registry.import_checkpoint(folder)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    registry.import_checkpoint(copy, name="gpt2-b")
    for alias in ("zeta", "alpha", "mid"):
        registry.tag(first.name, alias)
    bare = registry.import_checkpoint(tiny_dir("bert"))
    info = registry.show(first.name)
    with registry.session() as session:
        key = first.id
        imports = session.scalars(
            select(ImportRecord).where(ImportRecord.artifact_id == key).order_by(ImportRecord.id)
        ).all()
        aliases = session.scalars(select(Alias.name).where(Alias.artifact_id == key)).all()
        files = session.scalars(select(ArtifactFile).where(ArtifactFile.artifact_id == key)).all()
    assert [(i.origin, i.files) for i in info.imports] == [
        (i.origin, json.loads(i.files_json)) for i in imports
    ]
    assert [i.origin for i in info.imports] == [str(folder.resolve()), str(copy.resolve())]
    assert all(isinstance(i.imported_at, datetime) and i.imported_at.tzinfo for i in info.imports)
    assert info.aliases == tuple(sorted(aliases)) == ("alpha", "gpt2-b", "mid", "zeta")
    assert [(f.name, f.role, f.nbytes, f.digest) for f in info.files] == sorted(
        (f.name, f.role, f.nbytes, f.digest) for f in files
    )
    assert {f.name for f in info.files} >= {"generation_config.json", "tokenizer_config.json"}
    assert all(isinstance(f.nbytes, int) and f.nbytes > 0 for f in info.files)
    assert registry.show(bare.name).aliases == ()


def test_declaring_a_link_again_returns_the_edge_recorded_first(registry, tiny_dir):
    """A link that is there already is given back as it was recorded (its note, its
    time), not added a second time."""
    base = registry.import_checkpoint(tiny_dir("bert"))
    tuned = registry.import_checkpoint(tiny_dir("bert", seed=1), name="bert-tuned")
    first = registry.link(tuned.name, base.name, relation="finetune", note="first")
    again = registry.link(tuned.name, base.name, relation="finetune", note="second")
    assert again == first and first.recipe["note"] == "first"
    other = registry.link(tuned.name, base.name, relation="distill")
    assert other.id != first.id
    edges = registry.lineage(tuned.name, down=False).edges
    assert sorted(e.id for e in edges) == sorted([first.id, other.id])


def test_lineage_text_counts_a_parents_children_past_the_first_twenty(
    registry, tiny_dir, tmp_path, run_cli
):
    """A base model with ten thousand declared fine-tunes printed 10,001 lines of text
    lineage; the text names a parent's first 20 children by a relation and counts the
    rest, json (and dot and mermaid, for tools) every edge."""
    parent, *tunes = registry.import_checkpoints(copies(tiny_dir("bert"), tmp_path, 26))
    for t in tunes:
        registry.link(t.name, parent.name, relation="finetune")
    registry.link(tunes[0].name, parent.name, relation="distill")
    code, out, _ = run_cli("lineage", parent.name, "--down")
    assert code == 0
    lines = out.splitlines()
    assert lines[:20] == [f"{parent.name} --finetune--> {t.name}" for t in tunes[:20]]
    assert lines[20:] == [
        f"{parent.name} --distill--> {tunes[0].name}",
        f"{parent.name} --finetune--> 5 more (--format json lists every edge; "
        f"`zoo ls --derived-from {parent.name}` pages through its descendants)",
    ]
    code, out, _ = run_cli("lineage", parent.name, "--down", "--format", "json")
    edges = json.loads(out)["edges"]
    assert len(edges) == 26 and {e["child"] for e in edges} == {t.name for t in tunes}
    assert run_cli("lineage", parent.name, "--format", "dot")[1].count(" -> n") == 27


def test_a_link_between_two_named_artifacts_is_one_statement(registry, tiny_dir):
    """Two aliases or registry names of live artifacts: the names, the cycle check and the
    insert are one statement after the lineage lock (what a library's writes cost); any
    other way to name an artifact still resolves as every command resolves it."""
    from sqlalchemy import event, select

    from zoo.db.models import Edge
    from zoo.errors import NotFoundError

    base = registry.import_checkpoint(tiny_dir("bert"))
    tuned = registry.import_checkpoint(tiny_dir("bert", seed=1), name="bert-tuned")
    other = registry.import_checkpoint(tiny_dir("bert", seed=2), name="bert-other")
    registry.tag(base.name, "prod")
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_):
        statements.append(" ".join(statement.split()))

    event.listen(registry.engine, "before_cursor_execute", seen)
    try:
        edge = registry.link("bert-tuned", "prod", relation="finetune")
    finally:
        event.remove(registry.engine, "before_cursor_execute", seen)
    assert (edge.parent_id, edge.child_id) == (base.id, tuned.id)
    work = [s for s in statements if not s.startswith(("BEGIN", "SELECT pg_advisory_xact_lock"))]
    assert len(work) == 1 and "INSERT INTO edges" in work[0], statements

    # A content-hash prefix, an edge already there, one artifact twice, a removed one.
    by_hash = registry.link("bert-other", base.content_hash[:12], relation="distill")
    assert (by_hash.parent_id, by_hash.child_id) == (base.id, other.id)
    assert registry.link(other.name, "prod", relation="distill") == by_hash
    with pytest.raises(InvalidInputError, match="its own parent"):
        registry.link("prod", base.name)
    with pytest.raises(InvalidInputError, match="would make a cycle"):
        registry.link("prod", "bert-tuned")
    registry.rm(other.name)
    with pytest.raises(NotFoundError, match="bert-other"):
        registry.link(other.name, "bert-tuned")
    with pytest.raises(NotFoundError, match=r"bert-tunde.*Did you mean bert-tuned"):
        registry.link("bert-tunde", "prod")
    with registry.session() as session:  # the refusals added nothing
        rows = session.execute(select(Edge.parent_id, Edge.child_id, Edge.relation)).all()
    assert sorted(rows) == [(base.id, tuned.id, "finetune"), (base.id, other.id, "distill")]


def test_did_you_mean_folds_case_and_compares_the_names_sorted_next_to_the_query(
    registry, tiny_dir, monkeypatch
):
    """A name not found is answered with registered names and aliases like it, compared
    case-folded (case twins both come back), chosen among the names next to it in the
    name index's order: what a library of 100,000 answers in milliseconds."""
    import difflib

    from zoo.db import queries
    from zoo.errors import NotFoundError

    registry.import_checkpoint(tiny_dir("bert"), name="bert-tuned")
    registry.tag("bert-tuned", "Prod")
    registry.tag("bert-tuned", "prod")
    with pytest.raises(NotFoundError, match=r"'BERT-TUNED'\. Did you mean bert-tuned\?"):
        registry.show("BERT-TUNED")
    with pytest.raises(NotFoundError) as twins:
        registry.show("PROD")
    assert twins.value.suggestions == ["Prod", "prod"]

    for i in range(40):
        registry.tag("bert-tuned", f"team-{i:02d}")
    compared: list[list[str]] = []

    def spy(word, possibilities, *args, **kwargs):
        compared.append(sorted(possibilities))
        return real(word, possibilities, *args, **kwargs)

    real = difflib.get_close_matches
    monkeypatch.setattr(queries, "NEAR_NAMES", 4)
    monkeypatch.setattr(queries.difflib, "get_close_matches", spy)
    with pytest.raises(NotFoundError) as typo:
        registry.show("team-21x")
    assert typo.value.suggestions[0] == "team-21"
    # Four on each side among aliases; the one artifact name sorts before.
    assert compared == [["bert-tuned"] + [f"team-{i}" for i in range(18, 26)]]


def test_registries_on_one_database_share_its_connections(registry, tiny_dir):
    """A process opens one engine per database: a second registry there, or one opened
    after the first is closed, opens no new connection and builds no new session factory
    (a page costs what its query costs, not a connection's set-up)."""
    from sqlalchemy import event

    import zoo

    registry.import_checkpoint(tiny_dir("bert"))
    registry.search(limit=5)
    engine = registry.engine
    opened: list[object] = []

    def on_connect(*_):
        opened.append(1)

    event.listen(engine, "connect", on_connect)
    try:
        again = zoo.connect()
        assert again.engine is engine
        # ...and its session factories, which take longer to build than a page to read
        assert again._sessions is registry._sessions
        assert again._write_sessions is registry._write_sessions
        assert again.search(limit=5).total == 1
        registry.close()
        assert zoo.connect().search(limit=5).total == 1
    finally:
        event.remove(engine, "connect", on_connect)
    assert opened == []


def _close_pooled_connections(registry) -> int:
    """Terminate, from a connection of its own, every other session on the registry's
    PostgreSQL database (what a server restart or an idle timeout does to the pool), and
    wait until they are gone; returns how many there were."""
    import time

    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    outside = create_engine(registry.engine.url, poolclass=NullPool)
    try:
        with outside.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            killed = connection.exec_driver_sql(
                f"SELECT count(pg_terminate_backend(pid)) {others}"
            ).scalar()
            deadline = time.monotonic() + 10
            while connection.exec_driver_sql(f"SELECT count(*) {others}").scalar():
                assert time.monotonic() < deadline, "the sessions did not end"
                time.sleep(0.05)
    finally:
        outside.dispose()
    return killed


def test_a_pooled_connection_is_pinged_only_after_sitting_idle(registry, tiny_dir, monkeypatch):
    """On PostgreSQL a connection back in the pool for less than PING_AFTER_IDLE_S goes
    straight to work (a page is one round trip, not two); one idle longer is pinged at
    checkout, and one the server closed meanwhile is replaced without the caller seeing
    it. A connection closed under a caller within that time costs that one call an
    error, and the next call reconnects."""
    from sqlalchemy.exc import OperationalError

    from zoo.db import engine as db_engine

    if registry.engine.dialect.name != "postgresql":
        pytest.skip("SQLite files have no connection to lose")
    registry.import_checkpoint(tiny_dir("bert"))
    dialect = registry.engine.dialect
    pings: list[int] = []
    ping = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda c: pings.append(1) or ping(c))

    monkeypatch.setattr(db_engine, "PING_AFTER_IDLE_S", 60.0)
    for _ in range(10):
        assert registry.search(limit=5).total == 1
    assert pings == []  # back in the pool for less than a minute: no ping

    monkeypatch.setattr(db_engine, "PING_AFTER_IDLE_S", 0.0)  # every one has sat idle
    assert _close_pooled_connections(registry) >= 1
    assert registry.search(limit=5).total == 1  # the dead one was pinged and replaced
    assert pings
    pings.clear()
    for _ in range(3):
        assert registry.search(limit=5).total == 1
    assert len(pings) == 3

    monkeypatch.setattr(db_engine, "PING_AFTER_IDLE_S", 60.0)
    assert _close_pooled_connections(registry) >= 1
    with pytest.raises(OperationalError):
        registry.search(limit=5)
    assert registry.search(limit=5).total == 1


def test_a_database_file_made_again_at_its_path_is_opened_anew(tmp_path, tiny_dir, monkeypatch):
    """The shared engine is the file's, not the path's: a registry moved away and a new
    one made at the same path is a new database, never read through the old file's
    pooled connections."""
    import zoo

    url = f"sqlite:///{tmp_path / 'zoo.db'}"
    monkeypatch.setenv("ZOO_DB_URL", url)
    monkeypatch.setenv("ZOO_STORE_URL", str(tmp_path / "blobs"))
    first = zoo.connect()
    first.import_checkpoint(tiny_dir("bert"))
    assert first.search(limit=5).total == 1
    (tmp_path / "zoo.db").rename(tmp_path / "old.db")
    for suffix in ("-wal", "-shm"):
        if (tmp_path / f"zoo.db{suffix}").exists():
            (tmp_path / f"zoo.db{suffix}").rename(tmp_path / f"old.db{suffix}")
    second = zoo.connect()
    assert second.search(limit=5).total == 0
    assert second.engine is not first.engine


def test_a_forked_child_opens_its_own_connections(registry, tiny_dir):
    """A child forked after its parent used the registry leaves the parent's pooled
    connections alone (they are the parent's sockets and locks): it opens its own, and the
    parent's connection is the same one afterwards."""
    import zoo

    registry.import_checkpoint(tiny_dir("bert"))
    postgres = registry.engine.dialect.name == "postgresql"
    ask = "SELECT pg_backend_pid()" if postgres else "SELECT 1"

    def backend() -> int:
        with registry.engine.connect() as connection:
            return connection.exec_driver_sql(ask).scalar()

    before = backend()
    pid = os.fork()
    if pid == 0:  # the child: list, then exit as a process does (closing what it holds)
        code = 1
        try:
            child = zoo.connect()
            code = 4 if child.engine is registry.engine else 0
            code = code or (0 if child.search(limit=5).total == 1 else 3)
            from zoo.db.engine import dispose_shared

            dispose_shared()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend() == before
    assert registry.search(limit=5).total == 1


def _names_and_tags(reg, alias: str) -> list[str]:
    """What a worker of a process pool does with the registry it was handed."""
    reg.tag(reg.list()[0].name, alias)
    return [a.name for a in reg.list()]


def test_a_registry_used_already_is_handed_to_a_process_pool(registry, tiny_dir):
    """A process pool's argument is pickled even when its workers are forked: a registry
    this process has used goes as its settings and is opened anew in the worker, which
    reads and writes the same registry (as a new handle does), not the parent's pooled
    connections. A client's handle goes as its endpoint and token."""
    import multiprocessing
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    import zoo
    from zoo.errors import ServerUnavailableError

    registry.import_checkpoint(tiny_dir("bert"))
    names = [a.name for a in registry.list()]
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))
    with pool:
        done = list(pool.map(_names_and_tags, [registry, registry], ["w1", "w2"]))
    assert done == [names, names]
    assert registry.show("w1").name == registry.show("w2").name == names[0]
    again = pickle.loads(pickle.dumps(registry))
    assert again.settings == registry.settings and again.engine is registry.engine
    remote = zoo.connect(endpoint="http://127.0.0.1:9", token="zoo_secret")
    with pytest.raises(ServerUnavailableError):
        remote.list()  # its HTTP connection is made: a handle that cannot be pickled
    copy = pickle.loads(pickle.dumps(remote))
    assert (copy.endpoint, copy.token) == (remote.endpoint, remote.token)


def test_a_read_session_commits_nothing(registry, tiny_dir):
    """Reads run outside a transaction on PostgreSQL (each statement reads its own
    snapshot there anyway), so a read session refuses writes rather than commit them; on
    SQLite its transaction is rolled back."""
    import contextlib

    from sqlalchemy import select, update

    from zoo.db.models import Artifact

    src = registry.import_checkpoint(tiny_dir("bert"))
    postgres = registry.engine.dialect.name == "postgresql"

    def refused():
        if postgres:
            return pytest.raises(RuntimeError, match="cannot write")
        return contextlib.nullcontext()

    with refused(), registry.session() as session:
        session.execute(update(Artifact).where(Artifact.id == src.id).values(name="renamed"))
    with refused(), registry.session() as session:
        session.scalar(select(Artifact).where(Artifact.id == src.id)).name = "renamed"
        session.flush()
    assert registry.show(src.name).name == src.name
    assert [i.name for i in registry.list()] == [src.name]


def test_cli_ls_show_tag_json(registry, tiny_dir, run_cli):
    code, out, _ = run_cli("import", str(tiny_dir("llama")), "--json")
    assert code == 0
    imported = json.loads(out)
    assert imported["family"] == "llama"
    code, out, _ = run_cli("tag", imported["name"], "base", "--json")
    assert code == 0 and json.loads(out)["alias"] == "base"
    code, out, _ = run_cli("ls", "--json")
    page = json.loads(out)
    rows = page["artifacts"]
    assert [r["name"] for r in rows] == [imported["name"]] and rows[0]["aliases"] == ["base"]
    assert page["total"] == 1 and page["next"] is None
    assert rows[0]["tensor_count"] == imported["tensor_count"] and rows[0]["nbytes"] > 0
    code, out, _ = run_cli("show", "base", "--json", "--tensors")
    shown = json.loads(out)
    assert shown["content_hash"] == imported["content_hash"]
    assert len(shown["tensors"]) == imported["tensor_count"]
    code, out, _ = run_cli("ls")
    assert imported["name"] in out and "base" in out


def test_modified_blob_is_detected_on_read(registry, tiny_dir):
    info = registry.import_checkpoint(tiny_dir("bert"))
    victim = max(info.tensors, key=lambda t: t.nbytes)
    path = Path(registry.settings.store_url) / victim.digest[:2] / victim.digest
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BlobCorruptError, match=victim.digest[:12]):
        registry.store.get(victim.digest)


def test_import_from_the_offline_hf_cache(registry, tiny_dir, tmp_path, monkeypatch, run_cli):
    """`zoo import ORG/NAME` with HF_HUB_OFFLINE=1 reads the local cache, never the Hub."""
    import huggingface_hub

    def refuse(*a, **k):
        raise AssertionError("network used")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    cache = Path(os.environ["HF_HUB_CACHE"])
    commit = "c" * 40
    snap = cache / "models--acme--tiny-bert" / "snapshots" / commit
    shutil.copytree(tiny_dir("bert"), snap)
    (cache / "models--acme--tiny-bert" / "refs").mkdir()
    (cache / "models--acme--tiny-bert" / "refs" / "main").write_text(commit)
    code, out, err = run_cli("import", "acme/tiny-bert", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["name"] == "tiny-bert"
    assert info["imports"][0]["origin"] == "hf://acme/tiny-bert"
    assert info["imports"][0]["revision"] == commit
    # The snapshot folder itself, named by its commit: named after the repository, since
    # a hex name would read as a content-hash prefix.
    config = json.loads((snap / "config.json").read_text())
    (snap / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.3}))
    assert registry.import_checkpoint(snap).name == "tiny-bert-cccccccc"


# --- bad input: one clear line, non-zero exit, nothing written --------------------------


def _corrupt_cases(src: Path, root: Path) -> dict[str, Path]:
    """Folders each broken in one way, made from a real tiny checkpoint."""
    cases: dict[str, Path] = {}

    def clone(name: str) -> Path:
        dst = root / name
        shutil.copytree(src, dst)
        return dst

    d = clone("no-config")
    (d / "config.json").unlink()
    cases["no config.json"] = d

    # A model_type no family reads is not bad input: such checkpoints are catalogued
    # (tests/test_catalogue.py).

    d = clone("truncated")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases["truncated"] = d

    d = clone("header-past-end")
    data = bytearray((d / "model.safetensors").read_bytes())
    data[:8] = struct.pack("<Q", len(data) * 4)
    (d / "model.safetensors").write_bytes(bytes(data))
    cases["after the length field"] = d

    d = clone("header-not-json")
    data = bytearray((d / "model.safetensors").read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    data[8 : 8 + n] = b"{" * n
    (d / "model.safetensors").write_bytes(bytes(data))
    cases["JSON"] = d

    # Weights that contradict config.json: a layer count the weights lack, or a width
    # they do not have. Caught at import, before any blob is written.
    d = clone("more-layers-than-weights")
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_hidden_layers"] += 2
    (d / "config.json").write_text(json.dumps(cfg))
    cases["lacks"] = d

    d = clone("wider-than-weights")
    cfg = json.loads((src / "config.json").read_text())
    cfg["hidden_size"] *= 2
    (d / "config.json").write_text(json.dumps(cfg))
    cases["config.json"] = d

    d = clone("pickle")
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    cases["--convert-bin"] = d
    return cases


def test_bad_input_gives_one_line_nonzero_and_writes_nothing(registry, tiny_dir, tmp_path, run_cli):
    store_root = Path(registry.settings.store_url)
    for needle, folder in _corrupt_cases(tiny_dir("bert"), tmp_path / "bad").items():
        code, out, err = run_cli("import", str(folder))
        assert code != 0, needle
        assert out == "", needle
        assert err.startswith("zoo: error: ") and err.count("\n") == 1, (needle, err)
        assert needle.lower() in err.lower(), (needle, err)
    for bad_name in ("a/b", "a\\b", "x\x07y"):
        code, _, err = run_cli("import", str(tiny_dir("bert")), "--name", bad_name)
        assert code == 2 and err.count("\n") == 1, bad_name
    assert registry.list() == []
    assert _blob_files(store_root) == []


def test_a_peft_adapter_is_refused_as_one_naming_its_base_and_the_merge(
    registry, tmp_path, run_cli
):
    """A PEFT adapter's folder (adapter_config.json and the adapter's low-rank weights, no
    config.json) is not a model: import and audit say what it is, of which base, and how
    to make the model it describes, in one line, exit 2, nothing recorded or stored."""
    import torch
    from safetensors.torch import save_file

    store_root = Path(registry.settings.store_url)
    adapter = tmp_path / "lora"
    adapter.mkdir()
    lora = "base_model.model.model.layers.0.self_attn.q_proj.lora_{}.weight"
    save_file(
        {lora.format("A"): torch.zeros(8, 32), lora.format("B"): torch.zeros(32, 8)},
        adapter / "adapter_model.safetensors",
    )
    settings = {"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]}
    for base, named in (
        ("Qwen/Qwen2.5-0.5B", "a PEFT adapter of Qwen/Qwen2.5-0.5B ("),
        (None, "a PEFT adapter ("),
        ("evil\nbase", "a PEFT adapter of 'evil\\nbase' ("),
    ):
        config = {**settings, "base_model_name_or_path": base}
        (adapter / "adapter_config.json").write_text(json.dumps(config))
        for command in ("import", "audit"):
            code, out, err = run_cli(command, str(adapter))
            assert code == 2 and out == "", (command, err)
            assert err.startswith("zoo: error: ") and err.count("\n") == 1, (command, err)
            assert f"{adapter} is {named}adapter_config.json, no config.json)" in err, err
            assert "merge_and_unload()" in err and "save_pretrained" in err, err
            assert "import the merged folder" in err, err
    assert registry.list() == []
    assert _blob_files(store_root) == []
    (adapter / "adapter_config.json").unlink()  # weights alone: the usual refusal
    code, _, err = run_cli("import", str(adapter))
    assert code == 2 and "PEFT" not in err and "has no config.json" in err, err


def test_environment_errors_are_one_line_with_their_own_exit_code(
    registry, tiny_dir, tmp_path, run_cli, monkeypatch
):
    """A file where a folder should be, a revision that does not exist, a database that
    cannot be reached: one line on stderr, no traceback, a documented exit code."""
    src = registry.import_checkpoint(tiny_dir("gpt2")).name
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    code, out, err = run_cli(
        "materialize", src, "--layers", "1", "--hidden", "16", "--out", str(a_file / "x")
    )
    # Refused before any work, as an --out that is itself a file is: a conflict (exit 4).
    assert code == 4 and out == "" and err.count("\n") == 1, err
    assert err.startswith("zoo: error: ") and str(a_file) in err and "Errno" not in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    code, out, err = run_cli("db", "downgrade", "nosuchrev")
    assert code == 2 and err.count("\n") == 1 and "nosuchrev" in err, err
    # Every table, every record: not without saying so.
    code, out, err = run_cli("db", "downgrade", "base")
    assert code == 4 and err.count("\n") == 1 and "--drop-data" in err, err
    assert [a.name for a in registry.list()] == [src]
    monkeypatch.setenv("ZOO_DB_URL", f"sqlite:///{a_file}/registry.db")
    code, out, err = run_cli("ls")
    assert code == 11 and err.count("\n") == 1 and str(a_file) in err, err
    pytest.importorskip("psycopg")
    monkeypatch.setenv("ZOO_DB_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    # `zoo db` opens the database at any schema: refused in the same words, through the
    # API as zoo's own error, not the driver's (its class name, no database named).
    for args in (
        ("ls",),
        ("db", "current"),
        ("db", "upgrade", "--json"),
        ("db", "downgrade", "base"),
    ):
        code, out, err = run_cli(*args)
        assert code == 9 and out == "" and err.count("\n") == 1, (args, err)
        assert err.startswith("zoo: error: Cannot open the database postgresql"), (args, err)
    from zoo.api import Registry
    from zoo.errors import DatabaseUnavailableError

    with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1/none"):
        Registry(check_schema=False).db_current()


@pytest.mark.parametrize(
    "args",
    [
        ("materialize", "x", "--layers", "2.5", "--hidden", "16"),
        ("materialize",),
        ("no-such-command",),
        ("materialize", "x", "--layers", "2", "--hidden", "16", "--rescale", "bogus"),
    ],
)
def test_usage_errors_are_one_line_too(run_cli, args):
    code, out, err = run_cli(*args)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("zoo: error: ") and "--help" in err and "Usage" not in err


def test_a_bare_group_prints_its_help(run_cli):
    for args in ((), ("db",)):
        code, _, err = run_cli(*args)
        assert code == 2 and "Usage:" in err and "zoo: error" not in err and "Commands:" in err


def test_every_option_of_every_command_says_what_it_does(run_cli):
    """`zoo X --help` is where a script's author reads what an option means: an option
    listed with its type alone (`--kind [source|...]`, `--port INTEGER RANGE`) leaves them
    guessing."""
    import click
    from zoo_cli.main import cli

    def commands(group, path):
        for name, command in group.commands.items():
            yield (*path, name), command
            if isinstance(command, click.Group):
                yield from commands(command, (*path, name))

    silent = []
    for path, command in commands(cli, ()):
        if not command.help:
            silent.append(" ".join(path))
        for option in command.params:
            if isinstance(option, click.Option) and not option.help:
                silent.append(f"{' '.join(path)} {option.opts[0]}")
        code, out, _ = run_cli(*path, "--help")
        assert code == 0 and out.startswith(f"Usage: zoo {' '.join(path)} [OPTIONS]"), out
    assert silent == []


def test_which_errors_count_as_the_environments():
    import errno

    from zoo_cli.main import _is_storage_error, _storage_message

    fake = type("NoCredentialsError", (Exception,), {"__module__": "botocore.exceptions"})
    assert _is_storage_error(fake("Unable to locate credentials"))
    assert _storage_message(fake("Unable to locate credentials")).startswith("object store: ")
    full = OSError(errno.ENOSPC, "No space left on device", "/data/x")
    assert _is_storage_error(full)
    assert _storage_message(full) == "No space left on device: /data/x"
    # Anything else is unexpected: it keeps its traceback for the bug report.
    assert not _is_storage_error(OSError("Can't load the model"))
    assert not _is_storage_error(ValueError("x"))


def test_tensors_the_family_does_not_know_still_import(registry, tiny_dir, tmp_path):
    """Only a contradiction with config.json is refused at import; an adapter or custom
    head the family has no rule for imports as before (deriving from it is refused later)."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "with-adapter"
    shutil.copytree(tiny_dir("bert"), folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["bert.encoder.layer.0.attention.output.adapter.down.weight"] = torch.ones(8, 32)
    tensors["custom_head.weight"] = torch.ones(3, 32)
    save_file(tensors, folder / "model.safetensors")
    info = registry.import_checkpoint(folder)
    assert "custom_head.weight" in {t.name for t in info.tensors}


def test_unknown_name_suggests_near_matches(registry, tiny_dir, run_cli):
    registry.import_checkpoint(tiny_dir("bert"), name="bert-base")
    code, out, err = run_cli("show", "bert-bsae")
    assert code == 3 and out == ""
    assert "bert-base" in err and err.count("\n") == 1


def test_a_name_of_the_wrong_kind_says_what_it_is(registry, tiny_dir, run_cli):
    src = registry.import_checkpoint(tiny_dir("bert"), name="bert-base")
    lg = registry.extract(src.name, method="dwt")
    code, out, err = run_cli("extract", lg.name)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"'{lg.name}' is a learngene; this command needs a source or derived" in err
    code, _, err = run_cli("rederive", src.name)
    assert code == 2 and "is a source; this command needs a derived checkpoint" in err
    code, _, err = run_cli("show", src.content_hash[:6])
    assert code == 3 and "give at least 8 hex digits" in err


def _in_a_fresh_interpreter(code: str, *, not_imported: tuple[str, ...]) -> None:
    """Run ``code`` in a new Python, then check it imported none of ``not_imported``."""
    check = f"\nbad = [m for m in {not_imported!r} if m in sys.modules]\nassert not bad, bad"
    subprocess.run([sys.executable, "-c", code + check], check=True, capture_output=True)


def test_help_does_not_import_torch_or_sqlalchemy():
    _in_a_fresh_interpreter(
        "import sys; from zoo_cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass",
        not_imported=("torch", "sqlalchemy", "transformers"),
    )


def test_the_lazy_names_are_listed_without_being_imported():
    """dir(zoo) and tab completion find connect and Registry; listing them imports
    neither SQLAlchemy nor torch."""
    _in_a_fresh_interpreter(
        "import sys, zoo\n"
        "assert {'connect', 'Registry', 'load_settings', '__version__'} <= set(dir(zoo))",
        not_imported=("torch", "sqlalchemy"),
    )


def test_commands_that_plan_from_shapes_do_not_import_torch_dynamo(tiny_dir, tmp_path):
    """import, extract and materialize read a checkpoint's layout as shape-only tensors;
    torch stacks those through a Python reference whose first call imports torch._dynamo,
    over a second added to each such command."""
    src = tiny_dir("llama", sharded=True)
    code = (
        "import sys; from zoo_cli.main import main\n"
        "def run(*args):\n"
        "    try:\n        main(list(args))\n"
        "    except SystemExit as exc:\n        assert not exc.code, (args, exc.code)\n"
        f"run('import', {str(src)!r}, '--name', 'src')\n"
        "run('extract', 'src', '--method', 'dwt')\n"
        f"run('materialize', 'src', '--layers', '1', '--hidden', '16', '--out', "
        f"{str(tmp_path / 'small')!r})\n"
        "assert 'torch' in sys.modules and 'torch._dynamo' not in sys.modules\n"
    )
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home")}
    env.pop("ZOO_DB_URL", None)
    env.pop("ZOO_STORE_URL", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]


def test_pickle_checkpoint_is_refused_unless_converted(registry, tiny_dir, tmp_path, run_cli):
    import torch
    from tinymodels import build_model

    folder = tmp_path / "bin-bert"
    folder.mkdir()
    shutil.copy(tiny_dir("bert") / "config.json", folder / "config.json")
    # The legacy pickle layout, as older transformers wrote it.
    torch.save(build_model("bert").state_dict(), folder / "pytorch_model.bin")
    code, out, err = run_cli("import", str(folder))
    assert code == 2 and out == "" and "--convert-bin" in err
    assert registry.list() == []
    info = registry.import_checkpoint(folder, convert_bin=True)
    reference = registry.import_checkpoint(tiny_dir("bert"))
    # Same weights, read through weights_only loading: the shared tensors hash the same.
    shared = {t.name: t.digest for t in reference.tensors}
    assert all(shared[t.name] == t.digest for t in info.tensors if t.name in shared)
    assert len(set(shared) & {t.name for t in info.tensors}) >= len(shared) - 1
    # audit reads the folder as import does: refused, then with --convert-bin, known.
    code, _, err = run_cli("audit", str(folder))
    assert code == 2 and "--convert-bin" in err
    code, out, err = run_cli("audit", str(folder), "--convert-bin", "--json")
    assert code == 0, err
    assert json.loads(out)["artifact"]["content_hash"] == info.content_hash


def test_every_error_class_carries_the_documented_exit_code_and_http_status():
    """The README's exit-code table, read from the classes themselves: a subclass inherits
    its parent's code, so renaming or adding a class cannot silently change one."""
    from zoo import errors

    documented = {
        errors.InvalidInputError: (2, 400),
        errors.InvalidNameError: (2, 400),
        errors.UnknownFamilyError: (2, 400),
        errors.InvalidTargetError: (2, 400),
        errors.InvalidCheckpointError: (2, 422),
        errors.UnsafeFormatError: (2, 422),
        errors.ConfigMismatchError: (2, 422),
        errors.ChangedWhileReadError: (2, 400),
        errors.TransformError: (2, 400),
        errors.NotFoundError: (3, 404),
        errors.AmbiguousNameError: (3, 409),
        errors.ConflictError: (4, 409),
        errors.StorageError: (11, 507),
        errors.NoRoomError: (11, 507),
        errors.UnreadableError: (11, 500),
        errors.StoreUnavailableError: (11, 503),
        errors.SchemaOutdatedError: (5, 503),
        errors.BlobMissingError: (6, 500),
        errors.BlobNotAFileError: (6, 500),
        errors.BlobCorruptError: (6, 500),
        errors.VerificationError: (6, 500),
        errors.DeviceUnavailableError: (7, 503),
        errors.OfflineError: (8, 503),
        errors.DatabaseUnavailableError: (9, 503),
        errors.ServerUnavailableError: (9, 502),
        errors.NoSuchRouteError: (9, 404),
        errors.AuthenticationError: (12, 401),
        errors.PermissionDeniedError: (12, 403),
        errors.PayloadTooLargeError: (2, 413),
        errors.ClientGoneError: (130, 499),
        errors.ZooError: (1, 500),
    }
    for cls, (code, status) in documented.items():
        assert (cls.exit_code, cls.http_status) == (code, status), cls.__name__
    every = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert set(every) == set(documented)  # a new class gets its row here too


def test_the_python_api_refuses_values_no_database_or_method_takes_with_zoos_errors(
    registry, tiny_dir, tmp_path
):
    """What a caller can pass that no name, path, filter or duration is: each is one of
    zoo's errors, raised before any statement or file, never a driver's, pathlib's or
    torch's exception (PostgreSQL refuses NUL in text, every driver a lone surrogate), and
    nothing is recorded."""
    import math
    from datetime import date

    import zoo
    from zoo.errors import DeviceUnavailableError, NotFoundError

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    other = registry.import_checkpoint(tiny_dir("gpt2", seed=1))
    for call in (
        lambda: registry.show("a\x00b"),
        lambda: registry.alias_history("a\x00b"),
        lambda: registry.revoke_token("a\x00b"),
        lambda: registry.lineage("a\x00b"),
        lambda: registry.link("a\x00b", src.name),
    ):
        with pytest.raises(NotFoundError):
            call()
    refused = [
        lambda: registry.show("\ud800"),
        lambda: registry.rm(b"x"),
        lambda: registry.search(family=0),
        lambda: registry.search(name=[1]),
        lambda: registry.search(after=0),
        lambda: registry.search(created_after=5),
        lambda: registry.search(created_by="\ud800"),
        lambda: registry.link(other.name, src.name, note=math.nan),
        lambda: registry.link(other.name, src.name, relation="import"),
        lambda: registry.link(other.name, src.name, relation=5),
        lambda: registry.import_checkpoints(str(tiny_dir("bert"))),
        lambda: registry.import_checkpoints([tiny_dir("bert")], batch=1.5),
        lambda: registry.import_checkpoint(None),
        lambda: registry.import_checkpoint(b"/tmp"),
        lambda: registry.import_checkpoint(""),
        lambda: registry.import_checkpoint("x" * 5000),
        lambda: registry.materialize(src.name, layers=1, hidden=16, out="a\x00b"),
        lambda: registry.materialize(src.name, layers=1, hidden=16, method=["scratch"]),
        lambda: registry.materialize(src.name, layers=1, hidden=16, device=""),
        lambda: registry.extract(src.name, device=10**30),
        lambda: registry.extract(src.name, method="dct", keep="0.5"),
        lambda: registry.export(src.name, out=None),
        lambda: registry.audit(5),
        lambda: registry.audit(b"/tmp"),
        lambda: registry.gc(grace=None),
        lambda: registry.gc(grace=math.nan),
        lambda: zoo.connect(endpoint=5),
        lambda: zoo.connect(home=5),
    ]
    for i, call in enumerate(refused):
        with pytest.raises(InvalidInputError):
            call()
        assert {a.name for a in registry.list()} == {src.name, other.name}, i
    assert registry.lineage(other.name).edges == []
    # A date is its midnight (UTC); a GPU's index is a GPU, not "no device given".
    assert registry.search(created_after=date(2000, 1, 1)).total == 2
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError):
            registry.materialize(src.name, layers=1, hidden=16, device=0)
    assert registry.check_token(None) is None
    assert [registry.active_token(t) for t in (10**30, "1", True, 1.0)] == [None] * 4


def test_the_cli_prints_what_a_terminal_can_show_and_says_what_it_did_not_redo(
    registry, tiny_dir, run_cli, db_url, tmp_path
):
    """A Latin-1 terminal gets escapes for what it cannot show, not a UnicodeEncodeError
    in place of the output; a closed stdout is an error before any work (a tag's JSON
    would be lost); a link declared again keeps its note and says so; a tag that does
    not move its alias says so in its JSON; alias-history prints ISO times."""
    a = registry.import_checkpoint(tiny_dir("gpt2"))
    b = registry.import_checkpoint(tiny_dir("gpt2", seed=1))
    assert run_cli("link", b.name, "--from", a.name, "--note", "ok \u2713")[0] == 0
    code, _, err = run_cli("link", b.name, "--from", a.name, "--note", "second")
    assert code == 0 and err == (
        f"note: {a.name} --finetune--> {b.name} was declared before; its note stays 'ok \u2713'\n"
    )
    run_cli("tag", a.name, "prod")
    code, out, _ = run_cli("tag", a.name, "prod", "--json")
    assert code == 0 and json.loads(out)["moved"] is False
    assert json.loads(run_cli("tag", b.name, "prod", "--json")[1])["moved"] is True
    line = run_cli("alias-history", "prod")[1].splitlines()[0]
    assert line[10] == "T" and line[19:25] == "+00:00", line
    env = {**os.environ, "ZOO_DB_URL": db_url, "PYTHONIOENCODING": "latin-1"}
    zoo = [sys.executable, "-m", "zoo_cli.main"]
    shown = subprocess.run([*zoo, "lineage", b.name, "--up"], env=env, capture_output=True)
    assert shown.returncode == 0 and b"ok \\u2713" in shown.stdout, shown.stderr
    closed = subprocess.run(
        [*zoo, "tag", a.name, "staging"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.close(1),
    )
    assert closed.returncode == 2 and b"standard output is closed" in closed.stderr
    assert "staging" not in registry.show(a.name).aliases  # refused before any work


# --- tokens that expire ------------------------------------------------------------------


def _utc(*args):
    from datetime import datetime, timezone

    return datetime(*args, tzinfo=timezone.utc)


def test_a_token_that_expires_is_refused_from_its_end_saying_when(registry, monkeypatch, run_cli):
    """A token made to last 30 days is accepted until its last second and refused from its
    end in one line naming when (the clock moved, not waited for); one made without an
    end stays valid. Both list with their end, and whether it has passed."""
    from datetime import timedelta

    from zoo.api import tokens
    from zoo.errors import AuthenticationError

    start = _utc(2027, 3, 1, 12, 0)
    monkeypatch.setattr(tokens, "clock", lambda: start)
    info, secret = registry.create_token("ci", role="write", expires="30d")
    assert info.expires_at == _utc(2027, 3, 31, 12, 0) and info.active and not info.expired
    forever = registry.create_token("ops", role="read")[1]
    monkeypatch.setattr(tokens, "clock", lambda: start + timedelta(days=30, seconds=-1))
    assert registry.check_token(secret).allows("write")
    assert registry.active_token(info.id).name == "ci"
    monkeypatch.setattr(tokens, "clock", lambda: start + timedelta(days=30))
    said = r"^The token 'ci' expired at 2027-03-31T12:00:00\+00:00; an admin can create a new"
    with pytest.raises(AuthenticationError, match=said):
        registry.check_token(secret)
    with pytest.raises(AuthenticationError, match="'ci' this download link was made for expired"):
        registry.active_token(info.id)
    assert registry.check_token(forever).name == "ops"

    listed = {t.name: t for t in registry.list_tokens()}
    assert listed["ci"].expired and not listed["ci"].active
    assert listed["ops"].expires_at is None and listed["ops"].active
    code, out, err = run_cli("token", "list")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "EXPIRES" in lines["NAME"]
    assert "2027-03-31T12:00:00+00:00 (expired)" in lines["ci"]
    assert lines["ops"].split()[4] == "never"
    code, out, err = run_cli("token", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert (rows["ci"]["expires_at"], rows["ci"]["expired"], rows["ci"]["active"]) == (
        "2027-03-31T12:00:00+00:00",
        True,
        False,
    )
    assert (rows["ops"]["expires_at"], rows["ops"]["expired"], rows["ops"]["active"]) == (
        None,
        False,
        True,
    )

    # An expired token's name may be given to a new one; revoking the name ends both.
    again = registry.create_token("ci", role="write", expires="2027-06-01")[0]
    assert again.expires_at == _utc(2027, 6, 1)
    with pytest.raises(ConflictError, match="already named 'ci'"):
        registry.create_token("ci", role="write")
    assert len(registry.revoke_token("ci")) == 2


@pytest.mark.parametrize(
    ("expires", "end"),
    [
        ("30d", _utc(2027, 3, 31, 12)),
        ("12h", _utc(2027, 3, 2, 0)),
        ("90m", _utc(2027, 3, 1, 13, 30)),
        ("2w", _utc(2027, 3, 15, 12)),
        ("2027-04-01", _utc(2027, 4, 1)),
        ("2027-04-01T18:00", _utc(2027, 4, 1, 18)),
        ("2027-04-01T18:00Z", _utc(2027, 4, 1, 18)),
        ("2027-04-01T18:00+02:00", _utc(2027, 4, 1, 16)),
        (None, None),
    ],
)
def test_a_tokens_end_is_read_in_utc(expires, end):
    from zoo.api.tokens import parse_expiry

    assert parse_expiry(expires, at=_utc(2027, 3, 1, 12)) == end


@pytest.mark.parametrize(
    ("expires", "said"),
    [
        ("2027-02-01", "ends at 2027-02-01T00:00:00+00:00, not after now"),
        ("0d", "not after now"),
        ("soon", "is not a duration or a date"),
        ("3600", "is not a duration or a date"),  # seconds or a year: said with its unit
        ("", "is not a duration or a date"),
        ("99999999w", "ends after the year 9999"),
        ("-1d", "is not a duration or a date"),
        # Ending as a duration ends (d, w): said as every other, naming the argument.
        ("30days", "is not a duration or a date"),
        ("tomorrow", "is not a duration or a date"),
        (30, "An expiry is text such as 30d"),
    ],
)
def test_an_end_that_is_not_one_is_refused_in_one_line(
    registry, run_cli, monkeypatch, expires, said
):
    from zoo.api import tokens

    monkeypatch.setattr(tokens, "clock", lambda: _utc(2027, 3, 1, 12))
    with pytest.raises(InvalidInputError, match=re.escape(said)) as refused:
        registry.create_token("ci", expires=expires)
    if isinstance(expires, str):
        # Each caller's words: the parameter from Python, the option from the CLI.
        assert "--expires" not in str(refused.value)
        code, out, err = run_cli("token", "create", "--name", "ci", "--expires", expires)
        assert (code, out, err.count("\n")) == (2, "", 1) and said in err, err
        assert "expires=" in str(refused.value)
        assert f"--expires {expires}" in err and "expires=" not in err, err
    assert registry.list_tokens(include_revoked=True) == []
