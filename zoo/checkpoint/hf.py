"""Opening a checkpoint in Hugging Face layout, and hashing every tensor in it.

``open_checkpoint`` accepts what ``save_pretrained`` writes and what an auditor finds:

- a folder with ``config.json`` and ``model.safetensors``;
- a folder with ``config.json``, ``model.safetensors.index.json`` and the shards it names;
- a single ``.safetensors`` file (no config);
- pickle weights (``pytorch_model.bin``, its index and shards, ``*.pt``) only when the caller
  opted in with ``allow_bin=True``; they are then loaded with ``torch.load(weights_only=True)``.

Every safetensors header is validated by :mod:`zoo.checkpoint.safetensors_format`. The
per-tensor hashes (content addressing) and the whole-file hash (provenance) stream from
reads at file offsets into small buffers, on worker threads (hashlib releases the GIL), so
a multi-GB checkpoint hashes at disk or SHA-256 speed. Files are never memory-mapped: a
file cut short while it is read (a trainer saving over it) is then a one-line
:class:`~zoo.errors.ChangedWhileReadError`, never a SIGBUS that kills the process. So is
a file written to between zoo's first read of it and the end of its hashing, which the
file's state tells (:class:`~zoo.checkpoint.files.Watch`) where no read came up short.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

from zoo.checkpoint.bin_format import PICKLE_SUFFIXES
from zoo.checkpoint.files import Watch, cannot_read, is_regular, not_a_file, open_regular, what_is
from zoo.checkpoint.safetensors_format import (
    MAX_TENSORS,
    Header,
    read_header,
    tensor_from_bytes,
)
from zoo.errors import (
    ChangedWhileReadError,
    InvalidCheckpointError,
    NotFoundError,
    UnsafeFormatError,
    ZooError,
)

# Checkpoints up to this size are hashed on the calling thread.
_INLINE_HASH_BYTES = 1 << 20

if TYPE_CHECKING:
    import torch

__all__ = [
    "CONFIG_NAME",
    "SAFE_INDEX_NAME",
    "SAFE_WEIGHTS_NAME",
    "LocalCheckpoint",
    "Progress",
    "TensorInfo",
    "open_checkpoint",
]

CONFIG_NAME = "config.json"
#: what marks a PEFT adapter's folder, which holds no config.json
ADAPTER_CONFIG_NAME = "adapter_config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
BIN_WEIGHTS_NAME = "pytorch_model.bin"
BIN_INDEX_NAME = "pytorch_model.bin.index.json"

#: ``progress(done_bytes, total_bytes)``; may be called from worker threads, never concurrently.
Progress = Callable[[int, int], None]

# Bytes read and hashed at a time: the buffer stays in the CPU's cache between the read
# and the hash, and hashlib releases the GIL for each.
_CHUNK = 1 << 20

# Positional reads, which threads sharing one file need (all but Windows have them).
_PREADV = hasattr(os, "preadv")

#: config.json and index files larger than this are refused unread. Label maps of tens of
#: thousands of classes make the largest real configs a few MB; an index lists one line per
#: tensor (see MAX_TENSORS).
MAX_JSON_BYTES = 64 << 20

#: Nesting of a config.json: real ones nest a handful of levels (a multimodal model's
#: text_config.rope_scaling...); thousands would exhaust the recursion of every reader.
MAX_CONFIG_DEPTH = 64


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint and the content hash of its bytes.

    Attributes:
        name: the parameter name (``bert.encoder.layer.0.attention.self.query.weight``).
        dtype: safetensors dtype code (``"F32"``, ``"BF16"``...).
        shape: the tensor's shape.
        nbytes: length of its raw bytes.
        digest: sha256 hex of its raw little-endian bytes, exactly as safetensors stores them.
        file: the file (relative to the checkpoint's root) that holds it; not part of
            equality, so the same tensor in a differently sharded copy compares equal.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    digest: str
    file: str = field(default="", compare=False)


class LocalCheckpoint:
    """A validated, hashed checkpoint on disk; a context manager that closes its files.

    Create it with :func:`open_checkpoint`. Attributes:

    - ``path``: what was opened; ``root``: the folder its file names are relative to.
    - ``config``: the parsed ``config.json`` (``None`` for a lone weights file).
    - ``tensors``: :class:`TensorInfo` of every tensor, sorted by name.
    - ``files``: relative file name -> sha256 of the whole file (config, index, weights).
    - ``metadata``: the safetensors ``__metadata__`` of all files merged (first file in
      name order wins a clash); empty for pickle weights.
    - ``format``: ``"safetensors"`` or ``"pickle"`` (loaded with ``weights_only=True``).
    """

    def __init__(
        self,
        *,
        path: Path,
        root: Path,
        config: dict[str, Any] | None,
        tensors: list[TensorInfo],
        files: dict[str, str] | Callable[[], dict[str, str]],
        metadata: dict[str, str],
        format: str,
        reader: _Reader,
        watch: Watch,
    ) -> None:
        self.path = path
        self.root = root
        self.config = config
        self.tensors = tensors
        self._files = files
        self.metadata = metadata
        self.format = format
        self._by_name = {t.name: t for t in tensors}
        self._reader = reader
        self._watch = watch

    def __enter__(self) -> LocalCheckpoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Leaving on an error (Ctrl-C included) does not wait for hashing nobody will read.
        self._reader.close(finish=exc_type is None)

    def __repr__(self) -> str:
        return f"<LocalCheckpoint {self.path} ({self.format}, {len(self.tensors)} tensors)>"

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def close(self) -> None:
        """Close the files once they are hashed; what :meth:`read_bytes` returned stays
        readable."""
        self._reader.close()

    @property
    def files(self) -> dict[str, str]:
        """Relative file name -> sha256 of the whole file. The weight files may still be
        hashing in the background (their digests are needed only to record an import);
        reading this waits for them.

        Raises:
            ChangedWhileReadError: a file was cut short, or written to, between zoo's
                first read of it and the end of its hashing: the digests (and the
                tensors' hashes) may mix two versions of it.
        """
        if callable(self._files):
            files = self._files()
            _check_unchanged(self.root, self._watch)
            self._files = files
        return self._files

    @property
    def nbytes(self) -> int:
        """Total bytes of all tensors."""
        return sum(t.nbytes for t in self.tensors)

    def info(self, name: str) -> TensorInfo:
        """The :class:`TensorInfo` of tensor ``name`` (``NotFoundError`` when absent)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise NotFoundError(
                f"{self.path} has no tensor named {name!r}; list its tensors with "
                "checkpoint.tensors.",
                query=name,
            ) from None

    def read_bytes(self, name: str, begin: int = 0, end: int | None = None) -> memoryview:
        """The raw bytes of tensor ``name`` (its bytes ``[begin, end)`` when given), read
        from the file now into memory of their own, as a read-only view.

        Raises:
            ChangedWhileReadError: the file was cut short since it was opened.
        """
        info = self.info(name)
        end = info.nbytes if end is None else end
        if not 0 <= begin <= end <= info.nbytes:
            raise ValueError(
                f"bytes {begin}-{end} are not within tensor {name!r} ({info.nbytes} bytes)."
            )
        return self._reader.read(info, begin, end)

    def pieces(self, name: str) -> Iterator[memoryview]:
        """The raw bytes of tensor ``name``, read from the file now, in successive pieces
        of one small buffer (each valid until the next is asked for): storing a tensor
        this way takes no memory of its size, which a first touch makes dearer than the
        read itself.

        Raises:
            ChangedWhileReadError: the file was cut short since it was opened.
        """
        return self._reader.pieces(self.info(name))

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as a new CPU tensor that owns its memory."""
        info = self.info(name)
        return tensor_from_bytes(self._reader.read(info, 0, info.nbytes), info.dtype, info.shape)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor, by name (a copy of each; for tiny models and tests)."""
        return {t.name: self.tensor(t.name) for t in self.tensors}

    def manifest_hash(self) -> str:
        """The checkpoint's identity; see :func:`zoo.checkpoint.manifest.manifest_hash`."""
        from zoo.checkpoint.manifest import manifest_hash

        return manifest_hash(self.config, self.tensors)


def open_checkpoint(
    path: str | os.PathLike[str], *, allow_bin: bool = False, progress: Progress | None = None
) -> LocalCheckpoint:
    """Validate and hash a checkpoint in Hugging Face layout, or a lone weights file.

    Args:
        path: a folder saved by ``save_pretrained`` (``config.json`` + safetensors weights,
            single or sharded), or one ``.safetensors`` file (then ``config`` is ``None``).
        allow_bin: also accept pickle weights (``pytorch_model.bin``, its shards, ``*.pt``),
            loaded with ``torch.load(weights_only=True)``, never a full unpickle.
        progress: called as ``progress(done_bytes, total_bytes)`` while files are hashed.

    Returns:
        An open :class:`LocalCheckpoint`; use it as a context manager.

    Raises:
        InvalidCheckpointError: missing or malformed config, index, shard or safetensors file.
        UnsafeFormatError: only pickle weights were found and ``allow_bin`` is false.

    Example:
        >>> with open_checkpoint("tiny-bert") as ckpt:  # doctest: +SKIP
        ...     print(ckpt.manifest_hash(), len(ckpt.tensors))
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise InvalidCheckpointError(
            f"{path} does not exist; pass a checkpoint folder or a .safetensors file.",
            path=str(path),
        )
    watch = Watch()
    if path.is_dir():
        return _open_folder(path, allow_bin=allow_bin, progress=progress, watch=watch)
    what = what_is(path)
    if what is not None:
        raise InvalidCheckpointError(
            f"{path} is {what}, neither a file nor a folder; pass a checkpoint folder or a "
            ".safetensors file.",
            path=str(path),
        )
    return _open_file(path, allow_bin=allow_bin, progress=progress, watch=watch)


# --- layouts ------------------------------------------------------------------------------


def needs_a_folder(path: Path) -> InvalidCheckpointError:
    """What an import of the file ``path`` is told, locally and through a server: a
    checkpoint is registered with its config, so from a folder."""
    what = "a bare .safetensors file" if path.suffix == ".safetensors" else "a file"
    return InvalidCheckpointError(
        f"{path} is {what}; import needs a checkpoint folder with config.json.", path=str(path)
    )


def _open_file(
    path: Path, *, allow_bin: bool, progress: Progress | None, watch: Watch
) -> LocalCheckpoint:
    root = path.parent
    # The Hugging Face cache keeps each file under its hash, without a suffix: a file
    # that starts as safetensors does (a header length, then a JSON object) is read so.
    if path.suffix == ".safetensors" or _starts_as_safetensors(path):
        return _open_safetensors(path, root, None, [path.name], {}, [], progress, watch)
    if path.suffix in PICKLE_SUFFIXES:
        if not allow_bin:
            raise _refuse_pickle(path, [path.name])
        return _open_pickle(path, root, None, [path.name], [], progress, watch)
    raise InvalidCheckpointError(
        f"{path} is not a .safetensors file; pass a .safetensors file or a checkpoint folder.",
        path=str(path),
    )


def _starts_as_safetensors(path: Path) -> bool:
    """Whether ``path``'s first bytes are a safetensors header's start: its length, under
    the limit, then ``{``."""
    import struct

    from zoo.checkpoint.safetensors_format import MAX_HEADER_SIZE

    try:
        with open_regular(path) as f:
            head = f.read(9)
    except (OSError, ZooError):
        return False  # not read: the error that follows says what it is not
    if len(head) < 9:
        return False
    return 2 <= struct.unpack("<Q", head[:8])[0] <= MAX_HEADER_SIZE and head[8:] == b"{"


def _open_folder(
    root: Path, *, allow_bin: bool, progress: Progress | None, watch: Watch
) -> LocalCheckpoint:
    watch.see(root / CONFIG_NAME)
    config = read_config(root)
    for name in (SAFE_WEIGHTS_NAME, SAFE_INDEX_NAME):
        if os.path.lexists(root / name) and not is_regular(root / name):
            raise not_a_file(root / name)
    if (root / SAFE_WEIGHTS_NAME).is_file():
        return _open_safetensors(
            root, root, config, [SAFE_WEIGHTS_NAME], {}, [CONFIG_NAME], progress, watch
        )
    if (root / SAFE_INDEX_NAME).is_file():
        watch.see(root / SAFE_INDEX_NAME)
        weight_map = _read_index(root, SAFE_INDEX_NAME)
        shards = sorted(set(weight_map.values()))
        side = [CONFIG_NAME, SAFE_INDEX_NAME]
        return _open_safetensors(root, root, config, shards, weight_map, side, progress, watch)

    pickles = sorted(p.name for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if (root / BIN_INDEX_NAME).is_file():
        if not allow_bin:
            raise _refuse_pickle(root, [BIN_INDEX_NAME])
        watch.see(root / BIN_INDEX_NAME)
        weight_map = _read_index(root, BIN_INDEX_NAME)
        return _open_pickle(
            root,
            root,
            config,
            sorted(set(weight_map.values())),
            [CONFIG_NAME, BIN_INDEX_NAME],
            progress,
            watch,
            weight_map=weight_map,
        )
    if pickles:
        if not allow_bin:
            raise _refuse_pickle(root, pickles)
        if BIN_WEIGHTS_NAME in pickles:
            chosen = BIN_WEIGHTS_NAME
        else:
            # training_args.bin, optimizer.pt... are not weights; only a lone file is certain.
            weights = [p for p in pickles if p != "training_args.bin"]
            if len(weights) != 1:
                raise InvalidCheckpointError(
                    f"{root} holds no {BIN_WEIGHTS_NAME} and no single other weights file "
                    f"({', '.join(pickles)}); rename the model's weights {BIN_WEIGHTS_NAME} "
                    "to import the folder (`zoo audit --convert-bin` also reads one file).",
                    path=str(root),
                )
            chosen = weights[0]
        return _open_pickle(root, root, config, [chosen], [CONFIG_NAME], progress, watch)

    # An HF cache snapshot whose blob is gone, a link copied without it, a FIFO...
    special = sorted(p for p in root.glob("*.safetensors") if not is_regular(p))
    if special:
        raise not_a_file(special[0])
    others = sorted(p.name for p in root.glob("*.safetensors"))
    if others:
        raise InvalidCheckpointError(
            f"{root} has neither {SAFE_WEIGHTS_NAME} nor {SAFE_INDEX_NAME} but holds "
            f"{', '.join(others)}; rename the model's weights {SAFE_WEIGHTS_NAME} to import "
            "the folder (`zoo audit` also reads a lone .safetensors file).",
            path=str(root),
        )
    raise InvalidCheckpointError(
        f"{root} holds no weights ({SAFE_WEIGHTS_NAME} or {SAFE_INDEX_NAME}); pass a folder "
        "saved with save_pretrained(safe_serialization=True).",
        path=str(root),
    )


def read_config(root: Path) -> dict[str, Any]:
    """The folder ``root``'s config.json, refused as an import refuses it (missing, not a
    file, not JSON, too large or too deep)."""
    cfg = root / CONFIG_NAME
    if os.path.lexists(cfg) and not is_regular(cfg):
        raise not_a_file(cfg)
    if not cfg.is_file():
        adapter = _peft_adapter(root)
        if adapter is not None:
            raise InvalidCheckpointError(adapter, path=str(root / ADAPTER_CONFIG_NAME))
        raise InvalidCheckpointError(
            f"{root} has no {CONFIG_NAME}; pass a folder saved with save_pretrained "
            "(`zoo audit` also reads a lone .safetensors file).",
            path=str(cfg),
        )
    obj = _read_json(cfg)
    check_config(obj, str(cfg))
    return obj


def _peft_adapter(root: Path) -> str | None:
    """The refusal of a PEFT adapter's folder (adapter_config.json and the adapter's
    weights, no config.json), or None for any other folder. An adapter holds low-rank
    deltas for its base's layers, not a model: zoo does not resize or audit it, and says
    how to make the model it describes."""
    path = root / ADAPTER_CONFIG_NAME
    if not is_regular(path):
        return None
    try:
        base = _read_json(path).get("base_model_name_or_path")
    except (InvalidCheckpointError, AttributeError):
        base = None  # not a readable adapter config: still named as an adapter's
    if not isinstance(base, str) or not base.strip():
        of = ""
    elif base.isprintable() and len(base) <= 200:
        of = f" of {base}"
    else:  # the refusal stays one readable line
        of = f" of {base[:200]!r}"
    return (
        f"{root} is a PEFT adapter{of} ({ADAPTER_CONFIG_NAME}, no {CONFIG_NAME}), not a "
        "model; merge it into its base with peft (PeftModel.from_pretrained(base, "
        "folder).merge_and_unload(), then save_pretrained) and import the merged folder."
    )


def check_config(obj: Any, where: str) -> None:
    """Refuse a config no real checkpoint has: nested past MAX_CONFIG_DEPTH, or not an
    object."""
    if _depth(obj) > MAX_CONFIG_DEPTH:
        raise InvalidCheckpointError(
            f"{where} nests more than {MAX_CONFIG_DEPTH} levels deep, which no real config "
            "does; restore the config.json that save_pretrained wrote.",
            path=where,
        )
    if not isinstance(obj, dict):
        raise InvalidCheckpointError(
            f"{where} holds a JSON {type(obj).__name__}, not an object; restore the "
            "config.json that save_pretrained wrote.",
            path=where,
        )
    key = _non_finite_key(obj)
    if key is not None:
        # Python's json reads NaN and Infinity, but the content hash is canonical JSON,
        # which has no such numbers.
        raise InvalidCheckpointError(
            f"{where} gives {key!r} a value that is not a finite number (NaN or an infinity), "
            "which a content hash cannot hold; write it as a finite number or null.",
            path=where,
        )


def config_from_text(text: str, where: str = CONFIG_NAME) -> dict[str, Any]:
    """A config.json's text read as zoo reads the file (as Python's json reads it: 10000.0
    stays a float, which the content hash tells from 10000), with the same checks."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise InvalidCheckpointError(
            f"{where} is not valid JSON ({exc}); restore the file that save_pretrained wrote.",
            path=where,
        ) from exc
    except RecursionError as exc:
        raise InvalidCheckpointError(
            f"{where} nests thousands of levels deep, which no real file does; restore the "
            "file that save_pretrained wrote.",
            path=where,
        ) from exc
    check_config(obj, where)
    return obj


def _read_json(path: Path) -> Any:
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_JSON_BYTES:
            raise InvalidCheckpointError(
                f"{path} is {size} bytes, more than the {MAX_JSON_BYTES} zoo reads (no real "
                "config or index is that large); restore the file that save_pretrained wrote.",
                path=str(path),
            )
        try:
            raw = f.read(MAX_JSON_BYTES + 1)
        except OSError as exc:
            raise cannot_read(path, exc) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCheckpointError(
            f"{path} cannot be read as UTF-8 text ({exc}); restore the file.", path=str(path)
        ) from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidCheckpointError(
            f"{path} is not valid JSON ({exc}); restore the file that save_pretrained wrote.",
            path=str(path),
        ) from exc
    except RecursionError as exc:
        raise InvalidCheckpointError(
            f"{path} nests thousands of levels deep, which no real file does; restore the "
            "file that save_pretrained wrote.",
            path=str(path),
        ) from exc


def _depth(obj: Any) -> int:
    """How deeply ``obj`` nests lists and objects (iteratively: no recursion to exhaust)."""
    deepest = 0
    todo = [(obj, 1)]
    while todo:
        value, level = todo.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, level)
            todo.extend((v, level + 1) for v in value)
    return deepest


def _non_finite_key(obj: Any) -> str | None:
    """Where ``obj`` first holds a NaN or an infinity (``rope_scaling.factor``,
    ``eps[1]``), or None; iteratively, as :func:`_depth` walks."""
    todo: list[tuple[Any, str]] = [(obj, "")]
    while todo:
        value, key = todo.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return key
        if isinstance(value, dict):
            todo.extend((v, f"{key}.{k}" if key else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            todo.extend((v, f"{key}[{i}]") for i, v in enumerate(value))
    return None


def weight_files_read(root: Path, *, strict: bool = False) -> set[str]:
    """The safetensors files (relative names) an import of the folder ``root`` reads, as
    :func:`open_checkpoint` chooses them: ``model.safetensors``, else the shards its index
    names; none where neither is readable (the import itself says why), or, ``strict``,
    the import's refusal of an index or shard it cannot read."""
    if (root / SAFE_WEIGHTS_NAME).is_file():
        return {SAFE_WEIGHTS_NAME}
    if strict and not (root / SAFE_INDEX_NAME).exists():
        return set()
    try:
        return set(_read_index(root, SAFE_INDEX_NAME).values())
    except (InvalidCheckpointError, OSError):
        if strict:
            raise
        return set()


def _read_index(root: Path, index_name: str) -> dict[str, str]:
    index = root / index_name
    obj = _read_json(index)
    weight_map = obj.get("weight_map") if isinstance(obj, dict) else None
    if (
        not isinstance(weight_map, dict)
        or not weight_map
        or not all(isinstance(v, str) for v in weight_map.values())
    ):
        raise InvalidCheckpointError(
            f"{index} has no non-empty weight_map of tensor -> shard file names; restore the "
            "index that save_pretrained wrote.",
            path=str(index),
        )
    if len(weight_map) > MAX_TENSORS:
        raise _too_many(index, len(weight_map))
    suffixes = (".safetensors",) if index_name == SAFE_INDEX_NAME else tuple(PICKLE_SUFFIXES)
    for shard in set(weight_map.values()):
        parts = PurePosixPath(shard).parts
        if not parts or shard.startswith("/") or "\\" in shard or ".." in parts:
            raise InvalidCheckpointError(
                f"{index} names the shard {shard!r}, which is not a file inside the "
                "checkpoint folder; the index is corrupt or forged.",
                path=str(index),
            )
        if not shard.endswith(suffixes):
            raise InvalidCheckpointError(
                f"{index} names {shard!r} as a shard, which is not a {' or '.join(suffixes)} "
                "file; the index is corrupt or forged.",
                path=str(index),
            )
        if os.path.lexists(root / shard) and not is_regular(root / shard):
            raise not_a_file(root / shard)
        if not (root / shard).is_file():
            raise InvalidCheckpointError(
                f"{index} names the shard {shard} but {root / shard} does not exist; restore "
                "the missing shard.",
                path=str(root / shard),
            )
    return weight_map


def _too_many(where: Path, count: int) -> InvalidCheckpointError:
    return InvalidCheckpointError(
        f"{where} names {count} tensors, more than the {MAX_TENSORS} zoo accepts in one "
        "checkpoint (no real model has that many); the checkpoint is corrupt or forged.",
        path=str(where),
    )


def _refuse_pickle(where: Path, names: list[str]) -> UnsafeFormatError:
    return UnsafeFormatError(
        f"{where} holds only pickle weights ({', '.join(names)}) and zoo reads safetensors "
        "only; re-run with --convert-bin to load them with torch.load(weights_only=True) "
        "and convert them.",
        path=str(where),
    )


def _check_weight_map(
    root: Path, index_name: str, weight_map: dict[str, str], found: dict[str, str]
) -> None:
    """Check that the index and the shards' own contents (``found``) agree exactly."""
    index = root / index_name
    for name, shard in sorted(weight_map.items()):
        if found.get(name) != shard:
            where = f"; it is in {found[name]}" if name in found else ""
            raise InvalidCheckpointError(
                f"{index} places tensor {name!r} in {shard} but that shard does not hold "
                f"it{where}; restore the shard or the index that save_pretrained wrote.",
                path=str(root / shard),
            )
    extra = sorted(set(found) - set(weight_map))
    if extra:
        raise InvalidCheckpointError(
            f"{root / found[extra[0]]} holds tensor {extra[0]!r}, which {index} does not "
            "list; restore the index that save_pretrained wrote.",
            path=str(root / found[extra[0]]),
        )


def _claim(root: Path, found: dict[str, str], name: str, shard: str) -> None:
    if name in found:
        raise InvalidCheckpointError(
            f"Tensor {name!r} appears in both {root / found[name]} and {root / shard}; keep "
            "it in one shard only.",
            path=str(root / shard),
        )
    found[name] = shard


# --- safetensors --------------------------------------------------------------------------


def _read_headers(root: Path, weight_files: list[str], weight_map: dict[str, str]) -> dict:
    """Each weight file's header, refused as an import refuses it: a format rule broken,
    too many tensors, a tensor in two files, an index naming what the files do not hold."""
    headers = {name: read_header(root / name) for name in weight_files}
    count = sum(len(h.tensors) for h in headers.values())
    if count > MAX_TENSORS:
        raise _too_many(root, count)
    found: dict[str, str] = {}
    for fname, header in headers.items():
        for tname in header.tensors:
            _claim(root, found, tname, fname)
    if weight_map:
        _check_weight_map(root, SAFE_INDEX_NAME, weight_map, found)
    return headers


def check_folder(root: Path) -> None:
    """Refuse what an import of the safetensors folder ``root`` refuses before it reads a
    weight: its config, its index, each weight file's header. No tensor is read."""
    read_config(root)
    if (root / SAFE_WEIGHTS_NAME).is_file():
        _read_headers(root, [SAFE_WEIGHTS_NAME], {})
    elif (root / SAFE_INDEX_NAME).is_file():
        weight_map = _read_index(root, SAFE_INDEX_NAME)
        _read_headers(root, sorted(set(weight_map.values())), weight_map)


def _open_safetensors(
    path: Path,
    root: Path,
    config: dict[str, Any] | None,
    weight_files: list[str],
    weight_map: dict[str, str],
    side_files: list[str],
    progress: Progress | None,
    watch: Watch,
) -> LocalCheckpoint:
    for name in weight_files:
        watch.see(root / name)
    headers = _read_headers(root, weight_files, weight_map)

    reader = _FileReader(root)
    try:
        digests, file_digests = reader.hash_all(headers, side_files, progress)
    except BaseException:
        reader.close()
        raise
    tensors = sorted(
        (
            TensorInfo(e.name, e.dtype, e.shape, e.nbytes, digests[e.name], fname)
            for fname, header in headers.items()
            for e in header.tensors.values()
        ),
        key=lambda t: t.name,
    )
    metadata: dict[str, str] = {}
    for fname in sorted(headers):
        for key, value in headers[fname].metadata.items():
            metadata.setdefault(key, value)
    return LocalCheckpoint(
        path=path,
        root=root,
        config=config,
        tensors=tensors,
        files=file_digests,
        metadata=metadata,
        format="safetensors",
        reader=reader,
        watch=watch,
    )


class _Reader:
    def read(self, info: TensorInfo, begin: int, end: int) -> memoryview:
        raise NotImplementedError

    def pieces(self, info: TensorInfo) -> Iterator[memoryview]:
        yield self.read(info, 0, info.nbytes)

    def close(self, finish: bool = True) -> None:
        pass


class _FileReader(_Reader):
    """Reads each weight file by offset (``pread``) into memory of its own; never maps it.

    A file map cannot survive its file being cut short: touching a page past the new end
    raises SIGBUS, which kills the process (a Python signal handler never runs, since the
    faulting load repeats for ever, and ``MADV_POPULATE_READ`` before each read still
    leaves the window between it and the read). ``save_pretrained`` and safetensors'
    ``save_file`` truncate the file they save over, so a trainer saving while zoo reads
    does exactly that. A read past the end instead returns short, which is reported as
    :class:`ChangedWhileReadError`, at any moment of the read. The cost is one copy of
    each byte into a buffer that stays in the CPU's cache while it is hashed.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, BinaryIO] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.spans: dict[str, tuple[int, int]] = {}
        self.closed = False
        self.pool: ThreadPoolExecutor | None = None

    def hash_all(
        self, headers: dict[str, Header], side_files: list[str], progress: Progress | None
    ) -> tuple[dict[str, str], Callable[[], dict[str, str]]]:
        """(each tensor's digest, a function giving each file's digest).

        The tensors' digests (content addressing) are computed before this returns, spread
        over every core. The weight files' own digests (provenance, needed only when an
        import is recorded) are computed next, in the background, while the caller stores
        the tensors: the second sha256 pass then overlaps the store's writes instead of
        preceding them.
        """
        for fname, header in headers.items():
            self.files[fname] = self._open(fname, header)
            self.locks[fname] = threading.Lock()
            for e in header.tensors.values():
                self.spans[e.name] = (e.begin, e.end)
        total = sum(h.file_size for h in headers.values())
        counter = _Counter(total, progress)
        digests: dict[str, str] = {}
        file_digests: dict[str, str] = {}
        for name in side_files:
            file_digests[name] = _sha256_file(self.root / name)
        if total <= _INLINE_HASH_BYTES:
            # Starting threads costs more than hashing a tiny checkpoint.
            for fname, header in headers.items():
                digests.update(self._hash_tensors(fname, _in_file_order(header)))
                file_digests[fname] = self._hash_file(fname, header, counter)
            done = dict(sorted(file_digests.items()))
            return digests, lambda: done
        workers = max(1, min(os.cpu_count() or 1, 16))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zoo-hash")
        # Each file's tensors in ``workers`` runs of about equal bytes, so one large shard
        # uses every core; each run reads its part of the file front to back.
        tensor_jobs = [
            self.pool.submit(self._hash_tensors, fname, run)
            for fname, header in headers.items()
            for run in _runs(_in_file_order(header), workers)
        ]
        # Queued after every tensor job: they start as the tensor jobs finish.
        file_jobs = {
            fname: self.pool.submit(self._hash_file, fname, header, counter)
            for fname, header in headers.items()
        }
        try:
            for job in tensor_jobs:
                digests.update(job.result())
        except BaseException:
            self.pool.shutdown(wait=True, cancel_futures=True)
            raise

        def files() -> dict[str, str]:
            out = dict(file_digests)
            for fname, job in file_jobs.items():
                if job.cancelled():
                    raise ValueError(
                        f"the checkpoint was closed on an error before {fname} was hashed."
                    )
                out[fname] = job.result()
            return dict(sorted(out.items()))

        return digests, files

    def _open(self, fname: str, header: Header) -> BinaryIO:
        path = self.root / fname
        f = open_regular(path)
        if os.fstat(f.fileno()).st_size != header.file_size:
            f.close()
            raise InvalidCheckpointError(
                f"{path} changed size while being read; open it again once nothing writes it.",
                path=str(path),
            )
        return f

    def _read_into(self, fname: str, offset: int, view: memoryview) -> None:
        """Fill ``view`` with the bytes of ``fname`` from ``offset``.

        Raises:
            ChangedWhileReadError: the file now ends before them (cut short meanwhile).
        """
        f = self.files[fname]
        done = 0
        try:
            while done < view.nbytes:
                if _PREADV:
                    n = os.preadv(f.fileno(), [view[done:]], offset + done)
                else:  # no positional read on this OS: seek and read, one thread at a time
                    with self.locks[fname]:
                        f.seek(offset + done)
                        n = f.readinto(view[done:])
                if not n:
                    raise _cut_short(self.root / fname, offset + view.nbytes)
                done += n
        except OSError as exc:
            if isinstance(exc, ZooError):
                raise
            raise cannot_read(self.root / fname, exc) from exc

    def _chunks(self, fname: str, begin: int, end: int) -> Iterator[memoryview]:
        """The bytes ``[begin, end)`` of ``fname``, as successive views of one buffer
        (each valid until the next is asked for)."""
        buf = memoryview(bytearray(min(_CHUNK, max(end - begin, 0))))
        for start in range(begin, end, _CHUNK):
            chunk = buf[: min(_CHUNK, end - start)]
            self._read_into(fname, start, chunk)
            yield chunk

    def _hash_file(self, fname: str, header: Header, counter: _Counter) -> str:
        h = hashlib.sha256()
        for chunk in self._chunks(fname, 0, header.file_size):
            h.update(chunk)
            counter.add(chunk.nbytes)
        return h.hexdigest()

    def _hash_tensors(self, fname: str, entries: list) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in entries:
            h = hashlib.sha256()
            for chunk in self._chunks(fname, e.begin, e.end):
                h.update(chunk)
            out[e.name] = h.hexdigest()
        return out

    def read(self, info: TensorInfo, begin: int, end: int) -> memoryview:
        import numpy as np  # uninitialised memory: the read writes every byte of it

        data = memoryview(np.empty(end - begin, dtype=np.uint8)).cast("B")
        self._read_into(info.file, self._start(info) + begin, data)
        return data.toreadonly()

    def pieces(self, info: TensorInfo) -> Iterator[memoryview]:
        start = self._start(info)
        return self._chunks(info.file, start, start + info.nbytes)

    def _start(self, info: TensorInfo) -> int:
        if self.closed:
            raise ValueError(
                f"the checkpoint holding {info.name!r} is closed; read it inside the with block."
            )
        return self.spans[info.name][0]

    def close(self, finish: bool = True) -> None:
        if self.pool is not None:
            # Background file hashing reads the files: it ends before they close, finished
            # (so ``files`` stays readable) unless the caller is leaving on an error.
            self.pool.shutdown(wait=True, cancel_futures=not finish)
        self.closed = True
        for f in self.files.values():
            f.close()
        self.files.clear()


def _in_file_order(header: Header) -> list:
    """A file's tensors in the order they lie in it, so a cold file is read front to back."""
    return sorted(header.tensors.values(), key=lambda e: e.begin)


def _runs(entries: list, n: int) -> list[list]:
    """``entries`` cut into at most ``n`` consecutive runs of about equal bytes."""
    total = sum(e.end - e.begin for e in entries)
    runs: list[list] = [[]]
    size = 0
    for e in entries:
        if runs[-1] and len(runs) < n and size >= total * len(runs) / n:
            runs.append([])
        runs[-1].append(e)
        size += e.end - e.begin
    return [r for r in runs if r]


def _cut_short(path: Path, needed: int) -> ChangedWhileReadError:
    return ChangedWhileReadError(
        f"{path} changed while zoo read it: it now ends before byte {needed}, inside the "
        "tensor data its header describes (saving over a file truncates it first); read it "
        "again once whatever writes it is done."
    )


def _check_unchanged(root: Path, watch: Watch) -> None:
    """Refuse the digests just made if a file they cover was written to since zoo first
    read it (its last hash done): they may mix its two versions.

    Raises:
        ChangedWhileReadError: naming the files.
    """
    changed = watch.changed()
    if not changed:
        return
    names = ", ".join(
        str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in changed
    )
    one = len(changed) == 1
    why = f"{names} {'was' if one else 'were'} written to as zoo read {'it' if one else 'them'}"
    raise ChangedWhileReadError(
        f"{changed[0] if one else root} changed while zoo read it: {why}, so what zoo hashed "
        "may mix two versions (saving over a file truncates it, then writes it anew); read "
        "it again once whatever writes it is done.",
        why=why,
    )


class _Counter:
    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        if self.progress is None:
            return
        with self.lock:
            self.done += n
            self.progress(self.done, self.total)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# --- pickle (opt-in) ----------------------------------------------------------------------


def _open_pickle(
    path: Path,
    root: Path,
    config: dict[str, Any] | None,
    files: list[str],
    side_files: list[str],
    progress: Progress | None,
    watch: Watch,
    *,
    weight_map: dict[str, str] | None = None,
) -> LocalCheckpoint:
    from zoo.checkpoint.bin_format import load_weights_only
    from zoo.checkpoint.safetensors_format import dtype_code, tensor_bytes

    found: dict[str, str] = {}
    loaded: dict[str, torch.Tensor] = {}
    for fname in files:
        watch.see(root / fname)
        for name, t in load_weights_only(root / fname).items():
            _claim(root, found, name, fname)
            loaded[name] = t
    if weight_map:
        _check_weight_map(root, BIN_INDEX_NAME, weight_map, found)
    file_digests = {name: _sha256_file(root / name) for name in [*side_files, *files]}
    _check_unchanged(root, watch)
    if progress is not None:
        total = sum((root / f).stat().st_size for f in files)
        progress(total, total)
    tensors = sorted(
        (
            TensorInfo(
                name,
                dtype_code(t.dtype),
                tuple(t.shape),
                t.numel() * t.element_size(),
                hashlib.sha256(tensor_bytes(t)).hexdigest(),
                found[name],
            )
            for name, t in loaded.items()
        ),
        key=lambda t: t.name,
    )
    return LocalCheckpoint(
        path=path,
        root=root,
        config=config,
        tensors=tensors,
        files=dict(sorted(file_digests.items())),
        metadata={},
        format="pickle",
        reader=_TensorReader(loaded),
        watch=watch,
    )


class _TensorReader(_Reader):
    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def read(self, info: TensorInfo, begin: int, end: int) -> memoryview:
        from zoo.checkpoint.safetensors_format import tensor_bytes

        if info.name not in self.tensors:
            raise ValueError(
                f"the checkpoint holding {info.name!r} is closed; read it inside the with block."
            )
        return tensor_bytes(self.tensors[info.name])[begin:end]

    def close(self, finish: bool = True) -> None:
        self.tensors = {}
