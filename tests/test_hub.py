"""zoo.hub: offline resolution from a real-layout HF cache, and the online path, with no network.

Every test runs with the network cut at three levels (huggingface_hub's download functions,
every ``HfApi`` method, and socket connects), so a test that reaches the Hub fails loudly. The
fake cache is laid out exactly as huggingface_hub writes it: ``models--ORG--NAME/refs/main``
holds a commit hash, ``snapshots/<commit>/<file>`` are relative symlinks to ``blobs/<etag>``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import socket
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import get_session

from zoo.checkpoint import open_checkpoint, write_safetensors
from zoo.errors import AmbiguousNameError, InvalidInputError, NotFoundError, OfflineError
from zoo.hub import ALLOW_PATTERNS, Snapshot, cache_dir_from_env, is_offline, resolve_snapshot

# The HTTP client huggingface_hub itself uses (requests, httpx or httpx2, by version): zoo
# declares none of them, so the tests take whichever came with huggingface_hub.
SESSION = type(get_session())
HTTP = importlib.import_module(SESSION.__module__.split(".")[0])

C1 = "1" * 8 + "a" * 32
C2 = "1" * 8 + "b" * 32
C3 = "2" * 40
REPO = "acme/tiny-bert"


class NetworkUsed(AssertionError):
    pass


def _refuse(*args, **kwargs):
    raise NetworkUsed(f"network used: {args!r} {kwargs!r}")


@pytest.fixture(autouse=True)
def no_network_and_private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every HF cache at tmp_path and make any attempt to reach the Hub fail."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    from huggingface_hub import _snapshot_download, file_download

    for module in (huggingface_hub, _snapshot_download, file_download):
        for name in ("snapshot_download", "hf_hub_download"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, _refuse)
    for name in dir(huggingface_hub.HfApi):
        if not name.startswith("_") and callable(getattr(huggingface_hub.HfApi, name)):
            monkeypatch.setattr(huggingface_hub.HfApi, name, _refuse)
    monkeypatch.setattr(SESSION, "send", _refuse)
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)


def make_cached_repo(
    cache: Path,
    repo_id: str,
    commit: str,
    files: dict[str, bytes],
    refs: dict[str, str] | None = None,
) -> Path:
    """Lay out one snapshot as huggingface_hub does; returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for name, content in files.items():
        etag = hashlib.sha256(content).hexdigest()
        blob = repo / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref, target in (refs or {}).items():
        ref_file = repo / "refs" / ref
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        ref_file.write_text(target)  # no trailing newline, as huggingface_hub writes it
    return snapshot


def tiny_files(tmp_path: Path, seed: int = 0) -> dict[str, bytes]:
    g = torch.Generator().manual_seed(seed)
    weights = write_safetensors(
        tmp_path / f"weights-{seed}.safetensors",
        {"embeddings.weight": torch.randn(8, 4, generator=g), "bias": torch.zeros(4)},
    )
    return {
        "config.json": b'{"model_type": "bert", "hidden_size": 4}',
        "model.safetensors": weights.read_bytes(),
        "README.md": b"# tiny",
    }


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf_home" / "hub"


# --- offline --------------------------------------------------------------------------------


def test_offline_env_set_after_import_resolves_refs_main_without_network(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = make_cached_repo(cache, REPO, C1, tiny_files(tmp_path), {"main": C1})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # after huggingface_hub froze its constants
    snap = resolve_snapshot(REPO)
    assert snap == Snapshot(path=snapshot, repo_id=REPO, commit=C1, source="cache")
    # The symlinked snapshot opens like any folder; digests are of the blobs' bytes.
    with open_checkpoint(snap.path) as ckpt:
        assert ckpt.config == {"model_type": "bert", "hidden_size": 4}
        assert set(ckpt.files) == {"config.json", "model.safetensors"}
        assert (
            ckpt.files["model.safetensors"]
            == hashlib.sha256((snap.path / "model.safetensors").read_bytes()).hexdigest()
        )


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_offline_env_values_are_honoured(
    value: str, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_cached_repo(cache, REPO, C1, tiny_files(tmp_path), {"main": C1})
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert is_offline() and resolve_snapshot(REPO).source == "cache"


def test_transformers_offline_counts_too(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not is_offline()
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert is_offline()


def test_branches_tags_and_pr_refs_resolve(cache: Path, tmp_path: Path) -> None:
    files = tiny_files(tmp_path)
    make_cached_repo(cache, REPO, C1, files, {"main": C1})
    make_cached_repo(cache, REPO, C2, files, {"v1.0": C2, "refs/pr/3": C2})
    assert resolve_snapshot(REPO, offline=True).commit == C1
    assert resolve_snapshot(REPO, "v1.0", offline=True).commit == C2
    assert resolve_snapshot(REPO, "refs/pr/3", offline=True).commit == C2


def test_full_commit_and_unique_prefix_resolve(cache: Path, tmp_path: Path) -> None:
    files = tiny_files(tmp_path)
    make_cached_repo(cache, REPO, C1, files, {"main": C1})
    make_cached_repo(cache, REPO, C3, files)
    assert (
        resolve_snapshot(REPO, C3, offline=True).path
        == cache / f"models--acme--tiny-bert/snapshots/{C3}"
    )
    assert resolve_snapshot(REPO, C3[:7], offline=True).commit == C3


def test_ambiguous_commit_prefix_lists_the_candidates(cache: Path, tmp_path: Path) -> None:
    files = tiny_files(tmp_path)
    make_cached_repo(cache, REPO, C1, files)
    make_cached_repo(cache, REPO, C2, files)
    with pytest.raises(AmbiguousNameError) as info:
        resolve_snapshot(REPO, "11111111", offline=True)
    assert info.value.candidates == [C1, C2] and "revision=" in str(info.value)


def test_without_refs_a_single_snapshot_is_used(cache: Path, tmp_path: Path) -> None:
    make_cached_repo(cache, REPO, C2, tiny_files(tmp_path))
    assert resolve_snapshot(REPO, offline=True).commit == C2


def test_without_refs_several_snapshots_ask_for_a_revision(cache: Path, tmp_path: Path) -> None:
    files = tiny_files(tmp_path)
    make_cached_repo(cache, REPO, C1, files)
    make_cached_repo(cache, REPO, C3, files)
    with pytest.raises(AmbiguousNameError) as info:
        resolve_snapshot(REPO, offline=True)
    message = str(info.value)
    assert C1 in message and C3 in message and "revision=" in message
    assert info.value.candidates == [C1, C3]


@pytest.mark.parametrize(
    ("repo", "revision"),
    [("acme/other", None), (REPO, "v9"), (REPO, "deadbee"), (REPO, "f" * 40)],
)
def test_not_in_cache_offline_says_so(
    cache: Path, tmp_path: Path, repo: str, revision: str | None
) -> None:
    make_cached_repo(cache, REPO, C1, tiny_files(tmp_path), {"main": C1})
    with pytest.raises(OfflineError) as info:
        resolve_snapshot(repo, revision, offline=True)
    message = str(info.value)
    assert "not in the local Hugging Face cache" in message and "offline mode is on" in message
    assert repo in message and "\n" not in message


def test_ref_to_a_missing_snapshot_is_not_in_cache(cache: Path, tmp_path: Path) -> None:
    snapshot = make_cached_repo(cache, REPO, C1, tiny_files(tmp_path), {"main": C2})
    assert snapshot.is_dir()
    with pytest.raises(OfflineError, match=f"commit {C2}"):
        resolve_snapshot(REPO, offline=True)


def test_explicit_cache_dir_wins(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    make_cached_repo(elsewhere, REPO, C1, tiny_files(tmp_path), {"main": C1})
    assert resolve_snapshot(REPO, cache_dir=elsewhere, offline=True).commit == C1
    assert resolve_snapshot(REPO, cache_dir=str(elsewhere), offline=True).commit == C1


def test_cache_dir_follows_the_environment_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir_from_env() == tmp_path / "home/.cache/huggingface/hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir_from_env() == tmp_path / "xdg/huggingface/hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home2"))
    assert cache_dir_from_env() == tmp_path / "home2/hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
    assert cache_dir_from_env() == tmp_path / "hubcache"
    make_cached_repo(tmp_path / "hubcache", REPO, C1, tiny_files(tmp_path), {"main": C1})
    assert resolve_snapshot(REPO, offline=True).path.is_relative_to(tmp_path / "hubcache")


@pytest.mark.parametrize(
    "repo_id", ["", "a/b/c", "../etc", "org/", "/name", "a--b/c", "my model", "org/x..y", "x" * 97]
)
def test_malformed_repo_ids_are_refused(repo_id: str) -> None:
    with pytest.raises(InvalidInputError, match="ORG/NAME"):
        resolve_snapshot(repo_id, offline=True)


@pytest.mark.parametrize("revision", ["../../etc", "/abs", "a\\b", "", "v 1"])
def test_malformed_revisions_are_refused(revision: str) -> None:
    with pytest.raises(InvalidInputError, match="not a revision"):
        resolve_snapshot(REPO, revision, offline=True)


def test_legacy_bare_names_use_their_cache_folder(cache: Path, tmp_path: Path) -> None:
    make_cached_repo(cache, "gpt2", C1, tiny_files(tmp_path), {"main": C1})
    assert resolve_snapshot("gpt2", offline=True).path == cache / f"models--gpt2/snapshots/{C1}"


# --- online (snapshot_download replaced; nothing leaves the machine) -------------------------


@pytest.fixture
def fake_download(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []
    snapshot = make_cached_repo(cache, REPO, C1, tiny_files(tmp_path))

    def fake(repo_id: str, **kwargs) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return calls


def test_online_downloads_only_what_zoo_reads(fake_download: list[dict], cache: Path) -> None:
    snap = resolve_snapshot(REPO, "main")
    assert snap == Snapshot(
        path=cache / f"models--acme--tiny-bert/snapshots/{C1}",
        repo_id=REPO,
        commit=C1,
        source="hub",
    )
    [call] = fake_download
    assert call["repo_id"] == REPO and call["revision"] == "main"
    assert call["cache_dir"] == str(cache)  # the environment as it is now, not at import
    patterns = call["allow_patterns"]
    assert {"*.json", "*.safetensors", "*.md"} <= set(patterns) and patterns == ALLOW_PATTERNS
    assert not any(p.endswith((".bin", ".pt", ".pth")) for p in patterns)  # no pickles
    # The code an auto_map names and license files without a suffix are kept, so fetched.
    assert {"*.py", "LICENSE*", "USE_POLICY*"} <= set(patterns)
    # Every side file an import keeps is fetched (a tokenizer's bpe.codes, source.spm).
    from fnmatch import fnmatchcase

    from zoo.checkpoint.side_files import SIDE_FILES

    assert [n for n in SIDE_FILES if not any(fnmatchcase(n, p) for p in patterns)] == []


def test_online_fetches_pickles_only_when_asked(fake_download: list[dict]) -> None:
    resolve_snapshot(REPO, allow_bin=True)
    assert "*.bin" in fake_download[0]["allow_patterns"]
    assert fake_download[0]["revision"] is None


def test_offline_flag_never_calls_snapshot_download(
    fake_download: list[dict], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (cache / "models--acme--tiny-bert" / "refs").mkdir()
    (cache / "models--acme--tiny-bert" / "refs" / "main").write_text(C1)
    assert resolve_snapshot(REPO, offline=True).source == "cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_snapshot(REPO, offline=False).source == "cache"
    assert fake_download == []


def _response(status: int):
    url = "https://hub.invalid/x"
    if HTTP.__name__ == "requests":
        response = HTTP.Response()
        response.status_code, response.url = status, url
        response.request = HTTP.Request("GET", url).prepare()
        return response
    return HTTP.Response(status, request=HTTP.Request("GET", url))


def _connect_error(message: str) -> Exception:
    return (getattr(HTTP, "ConnectError", None) or HTTP.ConnectionError)(message)


@pytest.mark.parametrize(
    ("raised", "expected", "phrase"),
    [
        (_connect_error("Name or service not known"), OfflineError, "check the network"),
        (HTTP.ReadTimeout("timed out"), OfflineError, "HF_HUB_OFFLINE=1"),
        (hf_errors.LocalEntryNotFoundError("no cache\nsecond line"), OfflineError, "no cache"),
        (
            hf_errors.HfHubHTTPError("500 boom", response=_response(500)),
            OfflineError,
            "Could not fetch",
        ),
        (
            hf_errors.RepositoryNotFoundError("404", response=_response(404)),
            NotFoundError,
            "has no model acme/tiny-bert",
        ),
        (hf_errors.GatedRepoError("403", response=_response(403)), NotFoundError, "gated"),
        (
            hf_errors.RevisionNotFoundError("404", response=_response(404)),
            NotFoundError,
            "has no revision v2",
        ),
    ],
)
def test_online_errors_become_one_line_zoo_errors(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, expected: type, phrase: str
) -> None:
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(expected) as info:
        resolve_snapshot(REPO, "v2")
    assert phrase in str(info.value) and "\n" not in str(info.value)
    assert info.value.__cause__ is raised


def test_online_result_that_is_not_a_snapshot_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(tmp_path))
    with pytest.raises(OfflineError, match="not a cache snapshot folder"):
        resolve_snapshot(REPO)
