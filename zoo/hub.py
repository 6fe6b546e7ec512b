"""The Hugging Face Hub, offline-aware: the only module of zoo that imports huggingface_hub.

:func:`resolve_snapshot` turns ``ORG/NAME`` (and a revision) into a local snapshot folder:

- **Offline** (``offline=True``, or ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set when
  the function is called): zoo reads the local HF cache itself and never calls
  huggingface_hub, so no request can leave the machine. The cache layout is huggingface_hub's:
  ``models--ORG--NAME/refs/<branch or tag>`` holds a commit hash, and
  ``models--ORG--NAME/snapshots/<commit>/`` holds the files (symlinks into ``blobs/``).
- **Online**: ``huggingface_hub.snapshot_download`` fetches only what zoo reads (configs,
  safetensors, tokenizer files, model cards), never pickle weights unless asked.

Environment variables are read at call time (huggingface_hub's own constants freeze them at
import), so a test or a CLI flag that sets them later is honoured.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from zoo.errors import (
    AmbiguousNameError,
    InvalidCheckpointError,
    InvalidInputError,
    NotFoundError,
    OfflineError,
)

__all__ = ["ALLOW_PATTERNS", "Snapshot", "cache_dir_from_env", "is_offline", "resolve_snapshot"]

#: Files fetched from the Hub: what zoo imports and what an exported model needs to run.
_IMPORT_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def names_a_repo(text: str) -> bool:
    """Whether `zoo import` reads ``text``, which names no existing path, as a Hub
    repository: ORG/NAME, never a path (./x, /x)."""
    return _IMPORT_ID.fullmatch(text) is not None and not text.startswith((".", "/"))


def not_a_source(text: str) -> InvalidCheckpointError:
    """What `zoo import` says of a path that does not exist and is no repository id
    (locally and from a client alike)."""
    from zoo.text import printable

    return InvalidCheckpointError(
        f"{printable(text)} is neither an existing folder nor a Hub repository id (ORG/NAME).",
        path=text,
    )


ALLOW_PATTERNS = [
    "*.json",  # config.json, model.safetensors.index.json, tokenizer and generation configs
    "*.safetensors",
    "*.md",
    "*.txt",  # vocab.txt, merges.txt
    "*.model",  # sentencepiece: tokenizer.model, spiece.model
    "*.spm",  # sentencepiece (marian): source.spm, target.spm
    "*.codes",  # fastBPE merges: bpe.codes
    "*.tokenizer",  # prophetnet.tokenizer
    "*.tiktoken",
    "*.jinja",  # chat_template.jinja
    "*.py",  # the code a config's auto_map names (trust_remote_code)
    "LICENSE*",  # license files: LICENSE, LICENSE.txt, LICENSE-MIT
    "LICENCE*",
    "NOTICE*",
    "COPYING*",
    "USE_POLICY*",
]
_PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth"]

_TRUE = {"1", "ON", "YES", "TRUE"}
_COMMIT = re.compile(r"[0-9a-f]{40}")
_HEX_PREFIX = re.compile(r"[0-9a-f]{7,40}")
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Snapshot:
    """A repository revision available as a local folder.

    Attributes:
        path: the snapshot folder (``.../snapshots/<commit>``), ready for ``open_checkpoint``.
        repo_id: ``ORG/NAME`` as given.
        commit: the 40-hex commit the revision resolved to.
        source: ``"cache"`` when read from the local cache offline, ``"hub"`` when fetched.
    """

    path: Path
    repo_id: str
    commit: str
    source: Literal["cache", "hub"]


def source_text(source) -> str:
    """``source`` (a folder path or ``ORG/NAME``) as text, refused in one line when it is
    not one: checked by a local import and by a client before any upload."""
    if not isinstance(source, (str, os.PathLike)) or isinstance(source, bytes):
        raise InvalidInputError(
            f"A checkpoint is a folder path or ORG/NAME, not a {type(source).__name__}."
        )
    text = os.fspath(source)
    if not text.strip() or "\x00" in text:  # "" would read the current folder
        raise InvalidInputError(f"{text!r} names no folder and no Hub repository.")
    return text


def batch_sources(sources, batch) -> list:
    """The checkpoints :meth:`zoo.Registry.import_checkpoints` takes, as a list, refused
    in one line when ``sources`` is not a collection of them or ``batch`` not a count:
    checked by a local import and by a client's."""
    if type(batch) is not int or batch < 1:
        raise InvalidInputError(f"batch is a whole number of at least 1 (got {batch!r}).")
    if isinstance(sources, (str, bytes, os.PathLike)):  # one folder, not its characters
        raise InvalidInputError(
            f"import_checkpoints takes a list of folders, not one ({sources!r:.80}); "
            "import_checkpoint imports one."
        )
    try:
        sources = list(sources)
    except TypeError:  # None, a number: nothing to iterate
        raise InvalidInputError(
            f"import_checkpoints takes a list of folders, not {sources!r:.80}."
        ) from None
    for source in sources:  # every one before the first is read
        source_text(source)
    return sources


def is_offline(offline: bool | None = None) -> bool:
    """True when ``offline`` is true or ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set now."""
    if offline:
        return True
    return any(
        os.environ.get(k, "").strip().upper() in _TRUE
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def cache_dir_from_env() -> Path:
    """The HF hub cache folder as huggingface_hub computes it, from the environment now.

    ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
    ``~/.cache/huggingface/hub``.
    """
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return _expand(env["HF_HUB_CACHE"])
    if env.get("HF_HOME"):
        return _expand(env["HF_HOME"]) / "hub"
    base = env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return _expand(base) / "huggingface" / "hub"


def _expand(p: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(p)))


def resolve_snapshot(
    repo_id: str,
    revision: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    allow_bin: bool = False,
) -> Snapshot:
    """Find (offline) or fetch (online) a model repository's snapshot folder.

    Args:
        repo_id: ``ORG/NAME`` (a legacy bare ``NAME`` such as ``gpt2`` is accepted too).
        revision: branch, tag, full commit or a unique commit prefix of 7+ hex digits;
            ``None`` means ``main``.
        cache_dir: the HF hub cache; ``None`` reads the environment (see
            :func:`cache_dir_from_env`).
        offline: ``True`` never touches the network; ``None`` follows ``HF_HUB_OFFLINE``.
            (``False`` does not override an offline environment.)
        allow_bin: online only: also download pickle weights (``*.bin``, ``*.pt``), for
            ``--convert-bin``.

    Returns:
        A :class:`Snapshot`.

    Raises:
        InvalidInputError: ``repo_id`` or ``revision`` is malformed.
        OfflineError: offline and not in the cache, or the Hub cannot be reached.
        NotFoundError: the Hub has no such repository or revision (or it is gated).
        AmbiguousNameError: offline, no revision given, no ``refs/main``, several snapshots.

    Example:
        >>> snap = resolve_snapshot("google-bert/bert-base-uncased", offline=True)  # doctest: +SKIP
        >>> snap.source, snap.commit[:7]  # doctest: +SKIP
        ('cache', '86b5e09')
    """
    _validate_repo_id(repo_id)
    if revision is not None:
        _validate_revision(revision)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else cache_dir_from_env()
    if is_offline(offline):
        return _resolve_in_cache(repo_id, revision, cache)
    return _download(repo_id, revision, cache, allow_bin=allow_bin)


def is_repo_id(text: str) -> bool:
    """Whether ``text`` is a Hub model id as zoo imports one (``ORG/NAME`` or a legacy
    ``NAME``)."""
    try:
        _validate_repo_id(text)
    except InvalidInputError:
        return False
    return True


def _validate_repo_id(repo_id: object) -> None:
    bad = InvalidInputError(
        f"{repo_id!r} is not a Hub model id; write it as ORG/NAME (e.g. "
        "google-bert/bert-base-uncased), using letters, digits, '-', '_' and '.'."
    )
    if not isinstance(repo_id, str) or not 0 < len(repo_id) <= 96:
        raise bad
    parts = repo_id.split("/")
    if len(parts) > 2 or not all(_REPO_PART.fullmatch(p) for p in parts):
        raise bad
    if "--" in repo_id or ".." in repo_id or repo_id.endswith((".", "-")):
        raise bad


def _validate_revision(revision: object) -> None:
    if (
        not isinstance(revision, str)
        or not revision
        or revision.startswith("/")
        or "\\" in revision
        or ".." in revision.split("/")
        or any(not ch.isprintable() or ch.isspace() for ch in revision)
    ):
        raise InvalidInputError(
            f"{revision!r} is not a revision; give a branch, tag or commit hash."
        )


def _repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / "--".join(["models", *repo_id.split("/")])


def _resolve_in_cache(repo_id: str, revision: str | None, cache: Path) -> Snapshot:
    folder = _repo_folder(cache, repo_id)
    snapshots = folder / "snapshots"
    cached = sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []
    cached = [c for c in cached if _COMMIT.fullmatch(c) and (snapshots / c).is_dir()]
    wanted = revision or "main"

    def not_cached(what: str) -> OfflineError:
        return OfflineError(
            f"{repo_id}{what} is not in the local Hugging Face cache ({cache}) and offline "
            "mode is on; download it once online (unset HF_HUB_OFFLINE), or point HF_HUB_CACHE "
            "at the cache that holds it."
        )

    commit: str | None = None
    ref = folder / "refs" / wanted
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        if not _COMMIT.fullmatch(commit):
            raise OfflineError(
                f"{ref} does not hold a commit hash; delete it and download {repo_id} again."
            )
    elif revision is not None and _HEX_PREFIX.fullmatch(revision):
        matches = [c for c in cached if c.startswith(revision)]
        if len(matches) > 1:
            raise AmbiguousNameError(
                f"Revision {revision} of {repo_id} matches several cached commits "
                f"({', '.join(matches)}); give more digits with revision=.",
                candidates=matches,
                params=["revision"],
            )
        commit = matches[0] if matches else None
    elif revision is None:
        # No refs/main (e.g. a cache filled by commit hash): a lone snapshot is unambiguous.
        if len(cached) > 1:
            raise AmbiguousNameError(
                f"{repo_id} has several snapshots in {cache} ({', '.join(cached)}) and no "
                "refs/main; choose one with revision=.",
                candidates=cached,
                params=["revision"],
            )
        commit = cached[0] if cached else None

    if commit is None:
        raise not_cached("" if revision is None else f" revision {revision}")
    path = snapshots / commit
    if not path.is_dir():
        raise not_cached(f" revision {wanted} (commit {commit})")
    return Snapshot(path=path, repo_id=repo_id, commit=commit, source="cache")


def _download(repo_id: str, revision: str | None, cache: Path, *, allow_bin: bool) -> Snapshot:
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    patterns = ALLOW_PATTERNS + (_PICKLE_PATTERNS if allow_bin else [])
    where = f"{repo_id}" + (f" at revision {revision}" if revision else "")
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, cache_dir=str(cache), allow_patterns=patterns
        )
    except hf_errors.GatedRepoError as exc:
        raise NotFoundError(
            f"{repo_id} is gated on the Hub; accept its terms on huggingface.co and log in "
            "with `hf auth login`.",
            query=repo_id,
        ) from exc
    except hf_errors.RepositoryNotFoundError as exc:
        raise NotFoundError(
            f"The Hub has no model {repo_id} (or it is private); check the id, or log in with "
            "`hf auth login`.",
            query=repo_id,
        ) from exc
    except hf_errors.RevisionNotFoundError as exc:
        raise NotFoundError(
            f"{repo_id} has no revision {revision}; check the branch, tag or commit.",
            query=revision,
        ) from exc
    except Exception as exc:
        if isinstance(exc, _network_errors()):
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise OfflineError(
                f"Could not fetch {where} from the Hub ({type(exc).__name__}"
                f"{': ' + detail[:200] if detail else ''}); check the network, or set "
                "HF_HUB_OFFLINE=1 to use the local cache."
            ) from exc
        raise
    path = Path(folder)
    commit = path.name
    if not _COMMIT.fullmatch(commit):
        raise OfflineError(
            f"huggingface_hub returned {path} for {where}, which is not a cache snapshot "
            "folder; check HF_HUB_CACHE."
        )
    return Snapshot(path=path, repo_id=repo_id, commit=commit, source="hub")


def _network_errors() -> tuple[type[BaseException], ...]:
    # OSError covers huggingface_hub's HTTP errors, OfflineModeIsEnabled and
    # LocalEntryNotFoundError; the HTTP client's own transport errors are separate classes.
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx", "requests"):
        mod = sys.modules.get(module)  # a client that raised is imported already
        if mod is None:
            continue
        for attr in ("HTTPError", "RequestException"):
            cls = getattr(mod, attr, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                errors.append(cls)
    return tuple(errors)
