"""zoo.checkpoint: strict safetensors parsing, HF layouts, hashing, manifests and names.

Real tiny checkpoints come from ``tests/tinymodels.py`` (built once per module). Corrupt
files are crafted from a real file's bytes: its header is decoded, edited and packed again
with ``struct``, so each test breaks exactly one rule of the format.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from zoo.checkpoint import (
    DTYPE_ITEMSIZE,
    canonical_json,
    dtype_code,
    manifest_hash,
    open_checkpoint,
    read_header,
    tensor_from_bytes,
    torch_dtype,
    validate_name,
    write_safetensors,
)
from zoo.checkpoint.hf import TensorInfo
from zoo.errors import (
    InvalidCheckpointError,
    InvalidInputError,
    InvalidNameError,
    NotFoundError,
    UnsafeFormatError,
)

sys.path.insert(0, str(Path(__file__).parent))
from tinymodels import build_model, save_tiny

ROOT = Path(__file__).resolve().parents[1]


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("models")
    return {
        "bert": save_tiny("bert", base / "bert"),
        "bert_sharded": save_tiny("bert", base / "bert_sharded", max_shard_size="20KB"),
        "llama_sharded": save_tiny("llama", base / "llama_sharded", max_shard_size="20KB"),
    }


@pytest.fixture
def bert(models: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the single-file bert checkpoint, free to corrupt."""
    return Path(shutil.copytree(models["bert"], tmp_path / "bert"))


@pytest.fixture
def sharded(models: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the sharded llama checkpoint, free to corrupt."""
    return Path(shutil.copytree(models["llama_sharded"], tmp_path / "llama"))


def sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def split(path: Path) -> tuple[dict, bytes]:
    """A real safetensors file as (header dict, data buffer)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def pack(path: Path, header: dict | bytes, data: bytes) -> Path:
    """Write a header (dict or raw bytes) and a data buffer as a safetensors file."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def small_file(path: Path) -> Path:
    """A small real file, written by the safetensors library: a (F32, 2x3) and b (I64, 4)."""
    save_file(
        {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.arange(4)}, str(path)
    )
    return path


def expect_bad(path: Path, *phrases: str) -> InvalidCheckpointError:
    with pytest.raises(InvalidCheckpointError) as info:
        read_header(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for phrase in phrases:
        assert phrase in message, message
    assert info.value.path == str(path)
    return info.value


# --- import hygiene -------------------------------------------------------------------------


def test_importing_checkpoint_and_hub_imports_neither_torch_nor_huggingface_hub() -> None:
    code = (
        "import sys, zoo.checkpoint, zoo.checkpoint.hf, zoo.hub; "
        "bad = [m for m in ('torch', 'safetensors', 'huggingface_hub', 'transformers') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- reading real checkpoints ---------------------------------------------------------------


def test_single_file_tensors_and_digests_match_safe_open(models: dict[str, Path]) -> None:
    folder = models["bert"]
    with open_checkpoint(folder) as ckpt, safe_open(folder / "model.safetensors", "np") as f:
        assert ckpt.config == json.loads((folder / "config.json").read_text())
        assert ckpt.format == "safetensors"
        assert [t.name for t in ckpt.tensors] == sorted(f.keys())
        for info in ckpt.tensors:
            array = f.get_tensor(info.name)
            assert info.digest == sha(array.tobytes())
            assert info.shape == array.shape
            assert info.nbytes == array.nbytes
            assert torch_dtype(info.dtype) == torch.from_numpy(array).dtype
            assert info.file == "model.safetensors"
        assert ckpt.metadata == f.metadata()


def test_sharded_checkpoint_reads_every_shard_of_the_index(models: dict[str, Path]) -> None:
    folder = models["llama_sharded"]
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) > 2  # really sharded
    with open_checkpoint(folder) as ckpt:
        assert {t.name: t.file for t in ckpt.tensors} == index
        for info in ckpt.tensors:
            with safe_open(folder / info.file, "np") as f:
                assert info.digest == sha(f.get_tensor(info.name).tobytes())
        expected_files = {"config.json", "model.safetensors.index.json", *index.values()}
        assert ckpt.files == {n: sha((folder / n).read_bytes()) for n in sorted(expected_files)}


def test_tensor_equals_what_safetensors_loads_and_owns_its_memory(
    models: dict[str, Path],
) -> None:
    folder = models["bert"]
    reference = load_file(folder / "model.safetensors")
    with open_checkpoint(folder) as ckpt:
        loaded = {t.name: ckpt.tensor(t.name) for t in ckpt.tensors}
        raw = ckpt.read_bytes("bert.embeddings.word_embeddings.weight")
        begin = (
            read_header(folder / "model.safetensors")
            .tensors["bert.embeddings.word_embeddings.weight"]
            .begin
        )
        assert bytes(raw) == (folder / "model.safetensors").read_bytes()[begin : begin + len(raw)]
    assert loaded.keys() == reference.keys()
    for name, t in loaded.items():
        assert torch.equal(t, reference[name]), name
    # Owned copies: usable after close, and writing to one changes nothing else.
    loaded["bert.embeddings.word_embeddings.weight"].add_(1)
    assert not torch.equal(
        loaded["bert.embeddings.word_embeddings.weight"],
        reference["bert.embeddings.word_embeddings.weight"],
    )


def test_every_dtype_round_trips_with_correct_bytes(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, generator=g)
    tensors = {
        "bf16": x.to(torch.bfloat16),
        "f16": x.to(torch.float16),
        "f64": x.to(torch.float64),
        "f8": x.to(torch.float8_e4m3fn),
        "i8": torch.randint(-128, 127, (7,), dtype=torch.int8, generator=g),
        "i64": torch.randint(-(2**40), 2**40, (2, 2), generator=g),
        "u8": torch.randint(0, 255, (4,), dtype=torch.uint8, generator=g),
        "flag": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }
    path = write_safetensors(tmp_path / "mixed.safetensors", tensors, {"k": "v"})
    with open_checkpoint(path) as ckpt, safe_open(path, "pt") as f:
        assert ckpt.config is None and ckpt.metadata == {"k": "v"}
        for info in ckpt.tensors:
            ref = f.get_tensor(info.name)
            assert info.dtype == dtype_code(ref.dtype)
            assert info.digest == sha(ref.reshape(-1).view(torch.uint8).numpy().tobytes())
            got = ckpt.tensor(info.name)
            assert got.dtype == ref.dtype and got.shape == ref.shape
            assert torch.equal(got.reshape(-1).view(torch.uint8), ref.reshape(-1).view(torch.uint8))


def test_a_lone_safetensors_file_has_no_config(models: dict[str, Path]) -> None:
    file = models["bert"] / "model.safetensors"
    with open_checkpoint(file) as lone, open_checkpoint(models["bert"]) as folder:
        assert lone.config is None
        assert lone.files == {"model.safetensors": sha(file.read_bytes())}
        assert lone.tensors == folder.tensors
        assert lone.manifest_hash() != folder.manifest_hash()  # the config is part of identity


def test_progress_reports_every_byte(models: dict[str, Path]) -> None:
    calls: list[tuple[int, int]] = []
    with open_checkpoint(models["llama_sharded"], progress=lambda d, t: calls.append((d, t))):
        pass
    total = sum(p.stat().st_size for p in models["llama_sharded"].glob("*.safetensors"))
    assert calls and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_closed_checkpoint_refuses_reads_and_unknown_names_are_not_found(bert: Path) -> None:
    ckpt = open_checkpoint(bert)
    with pytest.raises(NotFoundError, match="no tensor named 'nope'"):
        ckpt.tensor("nope")
    view = ckpt.read_bytes(ckpt.tensors[0].name)
    ckpt.close()  # a live view must not make close() fail
    assert len(bytes(view)) == ckpt.tensors[0].nbytes
    with pytest.raises(ValueError, match="closed"):
        ckpt.read_bytes(ckpt.tensors[0].name)


# --- manifest -------------------------------------------------------------------------------


def test_manifest_is_the_documented_canonical_json(bert: Path) -> None:
    with open_checkpoint(bert) as ckpt:
        doc = {
            "config": ckpt.config,
            "tensors": [[t.name, t.dtype, list(t.shape), t.digest] for t in ckpt.tensors],
        }
        expected = sha(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
        assert ckpt.manifest_hash() == expected
        assert manifest_hash(ckpt.config, reversed(ckpt.tensors)) == expected


def test_manifest_survives_copy_rename_and_resharding(
    models: dict[str, Path], tmp_path: Path
) -> None:
    copy = shutil.copytree(models["bert"], tmp_path / "renamed-elsewhere")
    with (
        open_checkpoint(models["bert"]) as a,
        open_checkpoint(copy) as b,
        open_checkpoint(models["bert_sharded"]) as c,
    ):
        assert a.manifest_hash() == b.manifest_hash() == c.manifest_hash()
        assert a.tensors == c.tensors  # same content, different files
        assert a.files != c.files


def test_manifest_changes_with_one_tensor_byte(bert: Path) -> None:
    with open_checkpoint(bert) as ckpt:
        before = ckpt.manifest_hash()
        digests = {t.name: t.digest for t in ckpt.tensors}
        target = ckpt.tensors[5]
        offset = read_header(bert / "model.safetensors").tensors[target.name].begin
    raw = bytearray((bert / "model.safetensors").read_bytes())
    raw[offset] ^= 0x01
    (bert / "model.safetensors").write_bytes(raw)
    with open_checkpoint(bert) as ckpt:
        assert ckpt.manifest_hash() != before
        changed = [t.name for t in ckpt.tensors if t.digest != digests[t.name]]
        assert changed == [target.name]


def test_manifest_changes_with_one_config_value(bert: Path) -> None:
    with open_checkpoint(bert) as ckpt:
        before = ckpt.manifest_hash()
    config = json.loads((bert / "config.json").read_text())
    config["layer_norm_eps"] = config["layer_norm_eps"] * 2
    (bert / "config.json").write_text(json.dumps(config, indent=7))
    with open_checkpoint(bert) as ckpt:
        assert ckpt.manifest_hash() != before


def test_manifest_refuses_duplicate_tensor_names() -> None:
    t = TensorInfo("w", "F32", (1,), 4, "0" * 64)
    with pytest.raises(InvalidInputError, match="'w' is listed twice"):
        manifest_hash(None, [t, t])


def test_canonical_json_is_sorted_compact_ascii_and_finite() -> None:
    assert canonical_json({"b": 1, "a": ["é", 0.5]}) == '{"a":["\\u00e9",0.5],"b":1}'
    with pytest.raises(InvalidInputError):
        canonical_json({"x": float("nan")})


# --- layouts that must be refused -------------------------------------------------------------


def test_folder_without_config_is_refused(bert: Path) -> None:
    (bert / "config.json").unlink()
    with pytest.raises(InvalidCheckpointError, match=r"has no config\.json") as info:
        open_checkpoint(bert)
    assert info.value.path == str(bert / "config.json")


@pytest.mark.parametrize("text", ["[1, 2]", '"bert"', "{not json"])
def test_config_that_is_not_a_json_object_is_refused(bert: Path, text: str) -> None:
    (bert / "config.json").write_text(text)
    with pytest.raises(InvalidCheckpointError, match=r"config\.json (holds a JSON|is not valid)"):
        open_checkpoint(bert)


def test_folder_without_weights_is_refused(bert: Path) -> None:
    (bert / "model.safetensors").unlink()
    with pytest.raises(InvalidCheckpointError, match="holds no weights"):
        open_checkpoint(bert)


def test_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidCheckpointError, match="does not exist"):
        open_checkpoint(tmp_path / "nowhere")


def test_index_naming_a_missing_shard_is_refused(sharded: Path) -> None:
    shard = json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    victim = sorted(set(shard.values()))[1]
    (sharded / victim).unlink()
    with pytest.raises(InvalidCheckpointError, match=f"names the shard {victim} but") as info:
        open_checkpoint(sharded)
    assert info.value.path == str(sharded / victim)


def edit_index(folder: Path, edit) -> None:
    path = folder / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    edit(index["weight_map"])
    path.write_text(json.dumps(index))


def test_index_naming_a_tensor_absent_from_its_shard_is_refused(sharded: Path) -> None:
    edit_index(sharded, lambda m: m.__setitem__("ghost.weight", sorted(m.values())[0]))
    with pytest.raises(InvalidCheckpointError, match=r"'ghost\.weight' in .* does not hold it"):
        open_checkpoint(sharded)


def crowded(weight_map: dict[str, str]) -> str:
    """A tensor whose shard holds other tensors too (so the shard stays in the index)."""
    shards = list(weight_map.values())
    return next(n for n in sorted(weight_map) if shards.count(weight_map[n]) > 1)


def test_index_placing_a_tensor_in_the_wrong_shard_is_refused(sharded: Path) -> None:
    def move(m: dict[str, str]) -> None:
        name = crowded(m)
        m[name] = next(s for s in sorted(m.values()) if s != m[name])

    edit_index(sharded, move)
    with pytest.raises(InvalidCheckpointError, match="does not hold it; it is in"):
        open_checkpoint(sharded)


def test_tensor_in_two_shards_is_refused(sharded: Path) -> None:
    weight_map = json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    first, second = sorted(set(weight_map.values()))[:2]
    tensors = load_file(sharded / second)
    tensors.update(load_file(sharded / first))  # second now also holds first's tensors
    save_file(tensors, str(sharded / second))
    with pytest.raises(InvalidCheckpointError, match="appears in both"):
        open_checkpoint(sharded)


def test_shard_tensor_missing_from_index_is_refused(sharded: Path) -> None:
    edit_index(sharded, lambda m: m.pop(crowded(m)))
    with pytest.raises(InvalidCheckpointError, match="does not list"):
        open_checkpoint(sharded)


def test_index_escaping_the_folder_is_refused(sharded: Path) -> None:
    edit_index(sharded, lambda m: m.__setitem__(sorted(m)[0], "../model.safetensors"))
    with pytest.raises(InvalidCheckpointError, match="not a file inside"):
        open_checkpoint(sharded)


# --- the safetensors format itself: one broken rule per test ---------------------------------


def test_truncated_in_the_header(bert: Path) -> None:
    file = bert / "model.safetensors"
    raw = file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    file.write_bytes(raw[: 8 + n // 2])
    expect_bad(file, "header of", "truncated")
    file.write_bytes(raw[:5])
    expect_bad(file, "too short")


def test_truncated_in_the_data(bert: Path) -> None:
    file = bert / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-10])
    expect_bad(file, "truncated")
    with pytest.raises(InvalidCheckpointError, match="truncated"):
        open_checkpoint(bert)


def test_header_length_past_the_end_of_the_file(tmp_path: Path) -> None:
    file = small_file(tmp_path / "x.safetensors")
    raw = file.read_bytes()
    file.write_bytes(struct.pack("<Q", len(raw)) + raw[8:])
    expect_bad(file, f"only {len(raw) - 8} bytes after the length field")


def test_header_length_over_the_limit(tmp_path: Path) -> None:
    file = small_file(tmp_path / "x.safetensors")
    file.write_bytes(struct.pack("<Q", 2**63) + file.read_bytes()[8:])
    expect_bad(file, "limit")


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"{nope", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b'{"a": 1, "a": 2}', "names 'a' twice"),
    ],
)
def test_header_that_is_not_a_json_object(tmp_path: Path, raw: bytes, phrase: str) -> None:
    expect_bad(pack(tmp_path / "x.safetensors", raw, b""), phrase)


def forge(tmp_path: Path, edit) -> Path:
    """A real file with its header edited by ``edit(header, data) -> data``."""
    header, data = split(small_file(tmp_path / "real.safetensors"))
    result = edit(header, data)
    data = result if isinstance(result, bytes) else data
    return pack(tmp_path / "forged.safetensors", header, data)


def layout(h: dict) -> tuple[str, str, int]:
    """Names of the first and second tensor in the buffer, and where the second starts."""
    first, second = sorted(["a", "b"], key=lambda n: h[n]["data_offsets"][0])
    return first, second, h[second]["data_offsets"][0]


def test_overlapping_data_offsets(tmp_path: Path) -> None:
    names: list[str] = []

    def edit(h: dict, data: bytes) -> bytes:
        first, second, at = layout(h)
        names.extend([first, second])
        size = h[second]["data_offsets"][1] - at
        h[second]["data_offsets"] = [at - 8, at - 8 + size]  # 8 bytes into the first
        return data[: at - 8 + size]

    file = forge(tmp_path, edit)
    expect_bad(file, f"{names[0]!r} and {names[1]!r}", "overlap")


def test_a_hole_in_the_data(tmp_path: Path) -> None:
    def edit(h: dict, data: bytes) -> bytes:
        _, second, at = layout(h)
        size = h[second]["data_offsets"][1] - at
        h[second]["data_offsets"] = [at + 8, at + 8 + size]
        return data[:at] + b"\0" * 8 + data[at:]

    file = forge(tmp_path, edit)
    offset = layout(split(file)[0])[2] - 8
    expect_bad(file, f"8 bytes at data offset {offset}", "belong to no tensor")


def test_bytes_after_the_last_tensor(tmp_path: Path) -> None:
    expect_bad(forge(tmp_path, lambda h, data: data + b"junk"), "4 bytes after the last tensor")


def test_byte_length_that_does_not_match_dtype_and_shape(tmp_path: Path) -> None:
    def edit(h: dict, data: bytes) -> None:
        h["a"]["shape"] = [2, 2]

    expect_bad(forge(tmp_path, edit), "gives tensor 'a' 24 bytes but F32 x (2, 2) needs 16")


def test_unknown_dtype(tmp_path: Path) -> None:
    expect_bad(forge(tmp_path, lambda h, d: h["a"].update(dtype="F128")), "unknown dtype 'F128'")


@pytest.mark.parametrize(
    ("edit", "phrase"),
    [
        (lambda h: h["a"].update(shape=[2, -3]), "not a list of non-negative integers"),
        (lambda h: h["a"].update(shape=[2, True]), "not a list of non-negative integers"),
        (lambda h: h["a"].update(data_offsets=[24, 0]), "end before they begin"),
        (lambda h: h["a"].update(data_offsets=[0]), "not a pair"),
        (lambda h: h["a"].pop("dtype"), "without dtype"),
        (lambda h: h.update(c=[1]), "JSON list instead of an object"),
        (lambda h: h.update(__metadata__={"k": 1}), "not a string -> string mapping"),
    ],
)
def test_malformed_entries(tmp_path: Path, edit, phrase: str) -> None:
    expect_bad(forge(tmp_path, lambda h, d: edit(h)), phrase)


def test_header_only_file_with_no_tensors_is_valid(tmp_path: Path) -> None:
    header = read_header(pack(tmp_path / "empty.safetensors", b'{"__metadata__":{"a":"b"}}', b""))
    assert header.tensors == {} and header.metadata == {"a": "b"}


def test_open_checkpoint_reports_the_shard_that_is_corrupt(sharded: Path) -> None:
    shard = sorted(sharded.glob("model-*.safetensors"))[3]
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(InvalidCheckpointError, match=shard.name) as info:
        open_checkpoint(sharded)
    assert info.value.path == str(shard)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files_are_refused_cleanly_or_agree_with_safetensors(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    raw = bytearray(small_file(folder / "real.safetensors").read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    file = folder / "mutated.safetensors"
    file.write_bytes(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))
    try:
        header = read_header(file)
    except InvalidCheckpointError:
        return  # refused with our error, never a crash of another kind
    reference = load_file(file)  # whatever we accept, the reference library accepts
    assert set(header.tensors) == set(reference)
    content = file.read_bytes()
    for name, entry in header.tensors.items():
        ref = reference[name]
        assert entry.shape == tuple(ref.shape) and entry.dtype == dtype_code(ref.dtype)
        assert (
            content[entry.begin : entry.end] == ref.reshape(-1).view(torch.uint8).numpy().tobytes()
        )


# --- pickle weights -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bin_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("bin")
    model = build_model("bert")
    model.config.save_pretrained(folder)
    state = model.state_dict()
    torch.save(state, folder / "pytorch_model.bin")
    return folder, state


def test_pickle_only_folder_is_refused_by_default(bin_folder: tuple[Path, dict]) -> None:
    folder, _ = bin_folder
    with pytest.raises(UnsafeFormatError) as info:
        open_checkpoint(folder)
    message = str(info.value)
    assert "safetensors only" in message and "--convert-bin" in message
    assert "weights_only=True" in message and "pytorch_model.bin" in message
    with pytest.raises(UnsafeFormatError):
        open_checkpoint(folder / "pytorch_model.bin")


def test_pickle_loads_with_weights_only_when_allowed(
    bin_folder: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, state = bin_folder
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    with open_checkpoint(folder, allow_bin=True) as ckpt:
        assert calls == [True]
        assert ckpt.format == "pickle" and ckpt.config["model_type"] == "bert"
        assert [t.name for t in ckpt.tensors] == sorted(state)
        for info in ckpt.tensors:
            ref = state[info.name]
            assert info.digest == sha(ref.contiguous().numpy().tobytes())
            assert torch.equal(ckpt.tensor(info.name), ref)
            assert bytes(ckpt.read_bytes(info.name)) == ref.contiguous().numpy().tobytes()
        assert set(ckpt.files) == {"config.json", "pytorch_model.bin"}


def test_pickle_and_safetensors_copies_hash_alike(
    bin_folder: tuple[Path, dict], models: dict[str, Path]
) -> None:
    with open_checkpoint(bin_folder[0], allow_bin=True) as p, open_checkpoint(models["bert"]) as s:
        by_name = {t.name: t for t in p.tensors}
        assert all(by_name[t.name] == t for t in s.tensors)


def test_sharded_pickles_follow_their_index(bin_folder: tuple[Path, dict], tmp_path: Path) -> None:
    _, state = bin_folder
    names = sorted(state)
    halves = {
        "pytorch_model-00001-of-00002.bin": names[:10],
        "pytorch_model-00002-of-00002.bin": names[10:],
    }
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    for shard, keys in halves.items():
        torch.save({k: state[k] for k in keys}, tmp_path / shard)
    weight_map = {k: shard for shard, keys in halves.items() for k in keys}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(UnsafeFormatError, match="--convert-bin"):
        open_checkpoint(tmp_path)
    with open_checkpoint(tmp_path, allow_bin=True) as ckpt:
        assert {t.name: t.file for t in ckpt.tensors} == weight_map
        assert set(ckpt.files) == {"config.json", "pytorch_model.bin.index.json", *halves}


def test_safetensors_win_over_pickles_in_the_same_folder(bert: Path) -> None:
    torch.save({"x": torch.zeros(1)}, bert / "pytorch_model.bin")
    torch.save({"lr": 0.1}, bert / "training_args.bin")
    with open_checkpoint(bert) as ckpt:
        assert ckpt.format == "safetensors" and "x" not in ckpt
        assert set(ckpt.files) == {"config.json", "model.safetensors"}


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    torch.save({"w": torch.zeros(2), "payload": Evil(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafeFormatError, match="weights_only=True") as info:
        open_checkpoint(tmp_path, allow_bin=True)
    assert "system" in str(info.value)  # names what it refused
    assert "weights_only=False" not in str(info.value)  # never suggests the unsafe way
    assert not marker.exists()


def test_pickle_that_is_not_a_flat_state_dict_is_refused(tmp_path: Path) -> None:
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "weights.pt")
    with pytest.raises(InvalidCheckpointError, match="flat name -> tensor"):
        open_checkpoint(tmp_path / "weights.pt", allow_bin=True)


# --- write_safetensors ----------------------------------------------------------------------


def test_write_safetensors_output_reads_back_everywhere(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = {"w": base, "tied": base, "t": base.t(), "h": base.half()}
    path = write_safetensors(tmp_path / "out.safetensors", tensors, {"lineage": '{"a": 1}'})
    loaded = load_file(path)
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    header = read_header(path)
    assert header.metadata == {"lineage": '{"a": 1}'}
    assert sorted(header.tensors) == sorted(tensors)
    assert os.listdir(tmp_path) == ["out.safetensors"]


def test_write_safetensors_refuses_non_string_metadata(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="strings to strings"):
        write_safetensors(tmp_path / "x.safetensors", {"w": torch.ones(1)}, {"n": 1})
    assert os.listdir(tmp_path) == []


def test_failure_mid_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zoo.checkpoint import safetensors_format

    real = safetensors_format.tensor_bytes
    calls = []

    def disk_full_on_second(t):
        calls.append(t)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(t)

    monkeypatch.setattr(safetensors_format, "tensor_bytes", disk_full_on_second)
    with pytest.raises(OSError, match="disk full"):
        write_safetensors(tmp_path / "x.safetensors", {"a": torch.ones(3), "b": torch.ones(2)})
    assert len(calls) == 2 and os.listdir(tmp_path) == []


def test_write_safetensors_bytes_depend_on_content_only(tmp_path: Path) -> None:
    """Same tensors and metadata, given in any order: the same bytes (content addressing
    of output files depends on it), readable by the safetensors library."""
    g = torch.Generator().manual_seed(0)
    tensors = {f"t{i}": torch.randn(i + 1, 3, generator=g) for i in range(6)}
    tensors["ids"] = torch.arange(5)
    tensors["half"] = torch.ones(7, dtype=torch.float16)
    meta = {f"key{i}": f"value {i} \u00e9" for i in range(8)}
    a = write_safetensors(tmp_path / "a.safetensors", tensors, meta)
    b = write_safetensors(
        tmp_path / "b.safetensors",
        dict(reversed(tensors.items())),
        dict(reversed(meta.items())),
    )
    assert a.read_bytes() == b.read_bytes()
    with safe_open(a, "pt") as f:
        assert f.metadata() == meta
        for name, t in tensors.items():
            assert torch.equal(f.get_tensor(name), t), name
    header_len = int.from_bytes(a.read_bytes()[:8], "little")
    assert header_len % 8 == 0
    for info in read_header(a).tensors.values():  # each tensor aligned to its item size
        assert (info.begin - 8 - header_len) % DTYPE_ITEMSIZE[info.dtype] == 0


def test_write_safetensors_applies_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_safetensors(tmp_path / "x.safetensors", {"w": torch.ones(3)})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_failure_before_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_safetensors(tmp_path / "x.safetensors", {"w": torch.ones(3)})
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="I/O error"):
        write_safetensors(path, {"w": torch.zeros(3)})
    assert os.listdir(tmp_path) == ["x.safetensors"]
    assert path.read_bytes() == before


# --- dtypes and raw bytes -------------------------------------------------------------------


def test_dtype_tables_agree() -> None:
    for code, size in DTYPE_ITEMSIZE.items():
        dt = torch_dtype(code)
        assert dtype_code(dt) == code
        assert torch.empty((), dtype=dt).element_size() == size
    with pytest.raises(InvalidInputError):
        dtype_code(torch.complex64)
    with pytest.raises(InvalidInputError):
        torch_dtype("F128")


CODES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"]


@settings(max_examples=60, deadline=None)
@given(
    code=st.sampled_from(CODES),
    shape=st.lists(st.integers(0, 4), max_size=3),
    seed=st.integers(0, 2**16),
)
def test_tensor_from_bytes_round_trips(code: str, shape: list[int], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    dt = torch_dtype(code)
    if dt.is_floating_point:
        t = torch.randn(shape, generator=g).to(dt)
    elif dt == torch.bool:
        t = torch.randint(0, 2, shape, generator=g).bool()
    else:
        t = torch.randint(-100 if dt != torch.uint8 else 0, 100, shape, generator=g).to(dt)
    source = bytearray(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    got = tensor_from_bytes(memoryview(source), code, shape)
    assert got.dtype == dt and tuple(got.shape) == tuple(shape)
    assert torch.equal(got.reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))
    source[:] = b"\xff" * len(source)  # the result owns its memory
    assert torch.equal(got.reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))


def test_tensor_from_bytes_refuses_wrong_length() -> None:
    with pytest.raises(InvalidInputError, match="got 3 bytes"):
        tensor_from_bytes(b"abc", "F16", [2])


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["bert", "bert-base.v2", "_x", "A1", "x" * 128, "llama_3-8b", "cafe", "deadbeef-2"]
)
def test_valid_names_pass_unchanged(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("org/bert", "'/' at position 3, a path separator"),
        ("org\\bert", "'\\\\' at position 3, a path separator"),
        ("be\x00rt", "'\\x00' at position 2, a control character"),
        ("be\x1brt", "'\\x1b' at position 2, a control character"),
        ("bert\n", "'\\n' at position 4, whitespace"),
        ("my bert", "' ' at position 2, whitespace"),
        ("bért", "'\\xe9' at position 1, which is not ASCII; use ASCII letters"),
        ("naïve", "'\\xef' at position 2, which is not ASCII"),
        ("a:b", "':' at position 1"),
        (".hidden", "starts with '.'"),
        ("..", "starts with '.'"),
        ("-rf", "starts with '-'"),
        ("", "empty"),
        ("x" * 129, "129 characters"),
        ("a" * 64, "content hash"),
        ("eeff2bf3", "prefix of one"),  # would shadow `zoo show eeff2bf3`
        ("DEADBEEF00", "prefix of one"),
    ],
)
def test_invalid_names_are_refused_naming_the_problem(name: str, phrase: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_name(name, "alias")
    assert phrase in str(info.value) and "alias" in str(info.value)
    assert "\n" not in str(info.value)


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux's /proc")
def test_hashing_holds_little_of_a_checkpoint_and_a_read_tensor_leaves_memory_when_dropped(
    tmp_path,
):
    """Hashing reads a checkpoint through small buffers, so opening a large one leaves
    little of it in the process's memory; a tensor's bytes are read into memory of their
    own (the bytes safetensors reads back), which goes when they are dropped."""
    big = torch.arange(16 << 20, dtype=torch.float32)  # 64 MiB
    save_file({"big": big, "small": torch.ones(3)}, tmp_path / "w.safetensors")
    expected = hashlib.sha256(load_file(tmp_path / "w.safetensors")["big"].numpy()).hexdigest()
    before = _resident_bytes()
    with open_checkpoint(tmp_path / "w.safetensors") as ckpt:
        assert ckpt.files  # the file's own hashing (in the background) has ended
        opened = _resident_bytes()
        data = ckpt.read_bytes("big")
        held = _resident_bytes()
        assert hashlib.sha256(data).hexdigest() == ckpt.info("big").digest == expected
        del data
        dropped = _resident_bytes()
    assert opened - before < 16 << 20, "hashing kept the checkpoint's bytes resident"
    assert held - opened > 48 << 20, "the tensor was not read into memory of its own"
    assert held - dropped > 48 << 20, "a dropped tensor's bytes stayed resident"


def test_a_large_shard_is_hashed_in_runs_and_gives_each_tensor_and_file_its_digest(tmp_path):
    """Above the inline size, a shard's tensors are hashed in runs on several threads and
    the files' own digests follow in the background; every digest equals hashlib's over
    the bytes safetensors reads back, and the file digests are there after close."""
    g = torch.Generator().manual_seed(0)
    sizes = [(300, 700), (5,), (1024, 257), (3, 3), (200, 1000), (1,), (640, 333)]
    tensors = {f"t{i}": torch.randn(s, generator=g) for i, s in enumerate(sizes)}
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "unknown"}))
    assert (tmp_path / "model.safetensors").stat().st_size > 3 << 20  # over the inline size
    with open_checkpoint(tmp_path) as ckpt:
        digests = {t.name: t.digest for t in ckpt.tensors}
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        for name in tensors:
            raw = f.get_tensor(name).contiguous().view(torch.uint8).numpy().tobytes()
            assert digests[name] == hashlib.sha256(raw).hexdigest(), name
    assert ckpt.files == {
        name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        for name in ("config.json", "model.safetensors")
    }


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=40), st.integers(1, 8))
def test_runs_cover_every_tensor_in_order_in_at_most_n_balanced_runs(sizes, n):
    from types import SimpleNamespace

    from zoo.checkpoint.hf import _runs

    entries, begin = [], 0
    for k, size in enumerate(sizes):
        entries.append(SimpleNamespace(name=str(k), begin=begin, end=begin + size))
        begin += size
    runs = _runs(entries, n)
    assert [e for run in runs for e in run] == entries  # every tensor once, in file order
    assert 1 <= len(runs) <= n and all(runs)
    # No run holds more than an equal share plus the one tensor that crossed into it.
    share, largest = sum(sizes) / n, max(sizes)
    assert all(sum(e.end - e.begin for e in run) <= share + largest for run in runs)


def test_file_digests_survive_a_close_right_after_opening(tmp_path):
    """A checkpoint closed normally finishes hashing its files in the background, so
    ``files`` still answers after ``close``: here six shards, more than the workers that
    hash them, so some file jobs are still queued when the checkpoint closes."""
    g = torch.Generator().manual_seed(1)
    weight_map = {}
    for k in range(6):
        name = f"model-{k + 1:05d}-of-00006.safetensors"
        save_file({f"w{k}": torch.randn(1024, 1024, generator=g)}, tmp_path / name)
        weight_map[f"w{k}"] = name
    index = {"metadata": {}, "weight_map": weight_map}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "unknown"}))
    ckpt = open_checkpoint(tmp_path)
    ckpt.close()
    assert ckpt.files == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in tmp_path.iterdir()
        if p.suffix in (".json", ".safetensors")
    }
