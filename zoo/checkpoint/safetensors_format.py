"""A strict, independent reader of the safetensors format, and an atomic writer.

zoo does not trust a ``.safetensors`` file: the header is parsed here, by our own code, and
every rule of the format is checked before a single tensor byte is used. Each broken rule
raises its own :class:`~zoo.errors.InvalidCheckpointError` naming the file and the tensor.

The format (https://github.com/huggingface/safetensors): 8 bytes little-endian ``N``, then
``N`` bytes of UTF-8 JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}``, then the data buffer. Offsets are relative to the start of the
buffer; the tensors must cover the buffer exactly, without overlaps or holes.

Nothing here imports torch at module level: reading headers and bytes needs none.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.checkpoint.files import cannot_read, open_regular
from zoo.errors import InvalidCheckpointError, InvalidInputError, ZooError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DTYPE_ITEMSIZE",
    "MAX_HEADER_SIZE",
    "MAX_TENSORS",
    "Header",
    "TensorEntry",
    "dtype_code",
    "read_header",
    "tensor_from_bytes",
    "torch_dtype",
    "write_safetensors",
]

#: Bytes per element of every dtype code zoo accepts (the safetensors spelling).
DTYPE_ITEMSIZE: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
}

#: The same cap the safetensors library uses: a header this large is an attack, not a model.
MAX_HEADER_SIZE = 100_000_000

#: Tensors in one checkpoint (all shards together). The largest published checkpoints,
#: mixtures of hundreds of experts with a scale tensor per weight, hold under 150,000;
#: every tensor costs a registry row, so a header naming millions is refused.
MAX_TENSORS = 500_000

#: Axes of one tensor: real checkpoints use at most 5 (3-D convolutions).
MAX_NDIM = 16

#: Characters of a tensor name: what a registry row holds (``artifact_tensors.name``).
MAX_TENSOR_NAME = 512

#: torch (and numpy) count elements and bytes in signed 64-bit integers.
_MAX_BYTES = 2**63 - 1

# dtype code -> name of the torch dtype attribute. Strings, so this module needs no torch.
_TORCH_NAMES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as a safetensors header describes it, after validation.

    Attributes:
        name: the tensor's name in the header.
        dtype: its dtype code (``"F32"``, ``"BF16"``...), a key of :data:`DTYPE_ITEMSIZE`.
        shape: its shape.
        begin: absolute offset of its first byte in the file.
        end: absolute offset one past its last byte in the file.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        """Length of the tensor's raw bytes."""
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    """A validated safetensors header.

    Attributes:
        path: the file it was read from.
        tensors: name -> :class:`TensorEntry`, sorted by name.
        metadata: the ``__metadata__`` mapping (empty when absent).
        data_start: absolute offset of the data buffer (``8 + header length``).
        file_size: size of the file in bytes.
    """

    path: Path
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str] = field(default_factory=dict)
    data_start: int = 8
    file_size: int = 8


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and validate the header of a safetensors file; no tensor data is read.

    Args:
        path: a ``.safetensors`` file.

    Returns:
        The validated :class:`Header`, with absolute file offsets.

    Raises:
        InvalidCheckpointError: the file breaks a rule of the format (each rule has its own
            message, naming the file).

    Example:
        >>> header = read_header("model.safetensors")  # doctest: +SKIP
        >>> header.tensors["bert.embeddings.word_embeddings.weight"].shape  # doctest: +SKIP
        (96, 32)
    """
    path = Path(path)
    try:
        with open_regular(path) as f:
            file_size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _bad(
                    path,
                    f"is {len(prefix)} bytes long, too short to hold a safetensors "
                    "header; the file is truncated or not safetensors",
                )
            (header_len,) = struct.unpack("<Q", prefix)
            _check_header_len(path, header_len, file_size)
            raw = f.read(header_len)
    except OSError as exc:
        if isinstance(exc, ZooError):
            raise
        raise cannot_read(path, exc) from exc
    if len(raw) != header_len:
        raise _bad(path, "changed size while being read; read it again once nothing writes it")
    return parse_header(raw, path=path, file_size=file_size)


def _check_header_len(path: Path, header_len: int, file_size: int) -> None:
    if header_len > MAX_HEADER_SIZE:
        raise _bad(
            path,
            f"declares a header of {header_len} bytes, more than the "
            f"{MAX_HEADER_SIZE}-byte limit; the file is corrupt or not safetensors",
        )
    if 8 + header_len > file_size:
        raise _bad(
            path,
            f"declares a header of {header_len} bytes but the file has only "
            f"{file_size - 8} bytes after the length field; the file is truncated "
            "or not safetensors",
        )


def parse_header(raw: bytes, *, path: str | os.PathLike[str], file_size: int) -> Header:
    """Validate header bytes ``raw`` of a file of ``file_size`` bytes (see :func:`read_header`).

    Exposed for tests and for readers that already hold the bytes; ``path`` names the file in
    error messages only.
    """
    path = Path(path)
    _check_header_len(path, len(raw), file_size)
    data_start = 8 + len(raw)
    data_len = file_size - data_start
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(
            path,
            f"has a header that is not valid UTF-8 (byte {exc.start}); the file "
            "is corrupt or not safetensors",
        ) from exc
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKey as exc:
        raise _bad(
            path, f"has a header that names {exc.args[0]!r} twice; the file is corrupt"
        ) from exc
    except RecursionError as exc:  # a header is two levels deep; thousands is an attack
        raise _bad(
            path, "has a header nested thousands of levels deep; the file is corrupt or forged"
        ) from exc
    except ValueError as exc:
        raise _bad(
            path,
            f"has a header that is not valid JSON ({exc}); the file is corrupt or not safetensors",
        ) from exc
    if not isinstance(obj, dict):
        raise _bad(
            path,
            f"has a header that is a JSON {type(obj).__name__}, not an object; "
            "the file is corrupt or not safetensors",
        )

    metadata = obj.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _bad(
            path,
            "has a __metadata__ entry that is not a string -> string mapping; "
            "re-save the file with string metadata values",
        )

    if len(obj) > MAX_TENSORS:
        raise _bad(
            path,
            f"names {len(obj)} tensors, more than the {MAX_TENSORS} zoo accepts in one "
            "checkpoint (no real model has that many); the file is corrupt or forged",
        )
    entries = [_parse_entry(path, name, spec, data_start, data_len) for name, spec in obj.items()]
    _check_coverage(path, entries, data_start, data_len)
    tensors = {e.name: e for e in sorted(entries, key=lambda e: e.name)}
    return Header(
        path=path,
        tensors=tensors,
        metadata=dict(metadata),
        data_start=data_start,
        file_size=file_size,
    )


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_entry(
    path: Path, name: str, spec: object, data_start: int, data_len: int
) -> TensorEntry:
    if len(name) > MAX_TENSOR_NAME:
        raise _bad(
            path,
            f"names a tensor {name[:40]!r}... of {len(name)} characters, more than the "
            f"{MAX_TENSOR_NAME} a registry holds; the file is corrupt or forged",
        )
    if not isinstance(spec, dict):
        raise _bad(
            path,
            f"describes tensor {name!r} with a JSON {type(spec).__name__} instead "
            "of an object; the file is corrupt",
        )
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in spec]
    if missing:
        raise _bad(
            path, f"describes tensor {name!r} without {', '.join(missing)}; the file is corrupt"
        )
    dtype = spec["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPE_ITEMSIZE:
        raise _bad(
            path,
            f"gives tensor {name!r} the unknown dtype {dtype!r}; zoo reads "
            f"{', '.join(DTYPE_ITEMSIZE)} only, so convert the tensor first",
        )
    shape = spec["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _bad(
            path,
            f"gives tensor {name!r} the shape {str(shape)[:80]}, which is not a list of "
            "non-negative integers; the file is corrupt",
        )
    if len(shape) > MAX_NDIM:
        raise _bad(
            path,
            f"gives tensor {name!r} {len(shape)} axes, more than the {MAX_NDIM} zoo reads; "
            "the file is corrupt or forged",
        )
    # Zero-size tensors included: torch multiplies every axis and refuses an overflow.
    if math.prod(d for d in shape if d) * DTYPE_ITEMSIZE[dtype] > _MAX_BYTES:
        raise _bad(
            path,
            f"gives tensor {name!r} the shape {tuple(shape)}, whose size overflows 64 bits; "
            "the file is corrupt or forged",
        )
    offsets = spec["data_offsets"]
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(_is_int(o) and o >= 0 for o in offsets)
    ):
        raise _bad(
            path,
            f"gives tensor {name!r} the data_offsets {offsets!r}, which is not a "
            "pair of non-negative integers; the file is corrupt",
        )
    begin, end = offsets
    if begin > end:
        raise _bad(
            path,
            f"gives tensor {name!r} data_offsets [{begin}, {end}] that end before "
            "they begin; the file is corrupt",
        )
    if end > data_len:
        raise _bad(
            path,
            f"places tensor {name!r} at bytes [{begin}, {end}) of a data section "
            f"that has only {data_len} bytes; the file is truncated",
        )
    expected = math.prod(shape) * DTYPE_ITEMSIZE[dtype]
    if end - begin != expected:
        raise _bad(
            path,
            f"gives tensor {name!r} {end - begin} bytes but {dtype} x "
            f"{tuple(shape)} needs {expected}; the file is corrupt",
        )
    return TensorEntry(name, dtype, tuple(shape), data_start + begin, data_start + end)


def _check_coverage(
    path: Path, entries: Sequence[TensorEntry], data_start: int, data_len: int
) -> None:
    # The spec requires the tensors to tile the buffer exactly: sorted by offset, each one
    # starts where the previous one ended and the last one ends at the end of the file.
    at = data_start
    previous: TensorEntry | None = None
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin < at:
            other = previous.name if previous is not None else "?"
            raise _bad(
                path,
                f"has tensors {other!r} and {e.name!r} whose data overlap; the "
                "file is corrupt or forged",
            )
        if e.begin > at:
            raise _bad(
                path,
                f"has {e.begin - at} bytes at data offset {at - data_start} that "
                "belong to no tensor; the file is corrupt or forged",
            )
        at = e.end
        previous = e
    if at != data_start + data_len:
        raise _bad(
            path,
            f"has {data_start + data_len - at} bytes after the last tensor that "
            "belong to no tensor; the file is corrupt or forged",
        )


def _bad(path: Path, what: str) -> InvalidCheckpointError:
    return InvalidCheckpointError(f"{path} {what}.", path=str(path))


# --- torch bridges (torch imported inside the functions) ------------------------------------


def torch_dtype(code: str) -> torch.dtype:
    """Return the torch dtype of a safetensors dtype code (``"BF16"`` -> ``torch.bfloat16``).

    Raises:
        InvalidInputError: the code is unknown, or this torch build lacks the dtype.
    """
    import torch

    name = _TORCH_NAMES.get(code)
    dt = getattr(torch, name, None) if name else None
    if dt is None:
        raise InvalidInputError(
            f"dtype {code!r} is not one zoo can load with this torch; use one of "
            f"{', '.join(DTYPE_ITEMSIZE)}."
        )
    return dt


@functools.cache  # every tensor hashed or written asks, and the answer never changes
def dtype_code(dtype: torch.dtype) -> str:
    """Return the safetensors dtype code of a torch dtype (``torch.float16`` -> ``"F16"``).

    Raises:
        InvalidInputError: safetensors has no code zoo supports for ``dtype``.
    """
    import torch

    for code, name in _TORCH_NAMES.items():
        if getattr(torch, name, None) == dtype:
            return code
    raise InvalidInputError(
        f"torch dtype {dtype} has no safetensors code zoo supports; cast the tensor to one "
        "of float32, float16, bfloat16, float64 or an integer type first."
    )


def tensor_from_bytes(
    data: bytes | bytearray | memoryview, dtype: str, shape: Iterable[int]
) -> torch.Tensor:
    """Build a CPU tensor from little-endian raw bytes, as a copy that owns its memory.

    Args:
        data: the tensor's raw bytes (e.g. from a memory map; they are copied once).
        dtype: a safetensors dtype code.
        shape: the tensor's shape; ``prod(shape) * itemsize`` must equal ``len(data)``.

    Returns:
        A new tensor; changing it never changes ``data`` and it outlives ``data``.

    Example:
        >>> tensor_from_bytes(b"\\x00\\x3c\\x00\\x40", "F16", [2]).tolist()
        [1.0, 2.0]
    """
    import torch

    shape = tuple(int(d) for d in shape)
    dt = torch_dtype(dtype)
    view = memoryview(data).cast("B")
    expected = math.prod(shape) * DTYPE_ITEMSIZE[dtype]
    if view.nbytes != expected:
        raise InvalidInputError(
            f"got {view.nbytes} bytes for a {dtype} tensor of shape {shape}, which needs "
            f"{expected}; pass the tensor's exact bytes."
        )
    if expected == 0:
        return torch.empty(shape, dtype=dt)
    # bytearray copies the bytes once; frombuffer then shares that private, writable copy
    # (and keeps it alive), so the result owns its memory without a second copy.
    raw = torch.frombuffer(bytearray(view), dtype=torch.uint8)
    if dt == torch.bool and bool((raw > 1).any()):
        raise InvalidInputError(
            "a BOOL tensor holds bytes other than 0 and 1; the data is corrupt."
        )
    return raw.view(dt).reshape(shape)


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` to ``path`` as safetensors, atomically.

    The bytes go to a unique temporary file in the same folder, which is flushed to disk and
    then renamed over ``path``: a crash leaves either the old file or the new one, never a
    half-written one, and the temporary file is removed when anything fails. The same
    tensors and metadata always give the same bytes (header keys in a fixed order), and
    the file gets the permissions of any file the user creates (umask applied).

    Args:
        path: the destination file.
        tensors: name -> tensor; any device, layout or storage sharing (copied as needed).
        metadata: optional ``__metadata__``, string -> string (store JSON as a string).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> write_safetensors("w.safetensors", {"w": torch.ones(2)})  # doctest: +SKIP
    """
    path = Path(path)
    if metadata is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InvalidInputError(
            f"metadata for {path} must map strings to strings; encode other values as JSON strings."
        )
    prepared = _prepare(tensors)
    header = _header(prepared, metadata)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    # os.open with 0o666 applies the umask, as creating any file does (mkstemp gives 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(header)))
            f.write(header)
            for _, t in _in_file_order(prepared):
                f.write(tensor_bytes(t))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _in_file_order(prepared: Mapping[str, torch.Tensor]):
    # Wider dtypes first, then by name (as the safetensors library orders them): every
    # tensor starts at a multiple of its item size, so readers can map it in place.
    return sorted(prepared.items(), key=lambda kv: (-kv[1].element_size(), kv[0]))


def _header(prepared: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None) -> bytes:
    """The JSON header, keys in a fixed order, padded with spaces to a multiple of 8."""
    entries: dict[str, Any] = {}
    if metadata:
        entries["__metadata__"] = dict(sorted(metadata.items()))
    offset = 0
    for name, t in _in_file_order(prepared):
        end = offset + t.numel() * t.element_size()
        entries[name] = {
            "dtype": dtype_code(t.dtype),
            "shape": list(t.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    raw = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)


def _prepare(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import torch

    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise InvalidInputError(
                f"write_safetensors needs str -> torch.Tensor, got {name!r} -> "
                f"{type(t).__name__}; pass tensors by name."
            )
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        out[name] = t.contiguous()  # tied weights are simply written twice
    return out


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every OS/filesystem (Windows), where
    # the rename is still atomic, only its durability is best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of a contiguous CPU tensor, as the safetensors layout stores them."""
    import torch

    flat = t.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")
