"""Moving tensors between the blob store and torch, with their content hashes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from zoo.db.entities import TensorRecord
from zoo.errors import DeviceUnavailableError, InvalidInputError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | None):
    """A torch device; a clear error (not a traceback) when it is not available."""
    import torch

    name = device or "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"{name!r} is not a torch device (try cpu or cuda).") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"--device {name} was requested but no CUDA GPU is available here; use --device cpu."
        )
    if dev.type not in ("cpu", "cuda"):
        raise InvalidInputError(f"Device {name!r} is not supported; use cpu or cuda.")
    return dev


def raw_bytes(t: torch.Tensor) -> memoryview:
    """The tensor's bytes as safetensors lays them out (CPU, contiguous, little-endian)."""
    from zoo.checkpoint.bin_format import tensor_bytes

    return tensor_bytes(t.detach().to("cpu").contiguous())


def record(name: str, t: torch.Tensor) -> tuple[TensorRecord, memoryview]:
    """(TensorRecord with sha256, raw bytes) for one tensor."""
    from zoo.checkpoint import dtype_code

    data = raw_bytes(t)
    digest = hashlib.sha256(data).hexdigest()
    return TensorRecord(name, dtype_code(t.dtype), tuple(t.shape), data.nbytes, digest), data


def records(state: Mapping[str, torch.Tensor]) -> list[TensorRecord]:
    """Tensor records (names sorted) of a state dict, without storing anything."""
    return [record(n, state[n])[0] for n in sorted(state)]


def store_tensors(store, state: Mapping[str, torch.Tensor]) -> list[TensorRecord]:
    """Put every tensor's bytes in the store (once); returns their records."""
    out = []
    for name in sorted(state):
        rec, data = record(name, state[name])
        if not store.has(rec.digest):
            store.put(data, rec.digest)
        out.append(rec)
    return out


def load_tensors(store, recs: Iterable[TensorRecord], *, device=None) -> dict[str, torch.Tensor]:
    """Read (and verify) tensors from the store, onto ``device``."""
    from zoo.checkpoint import tensor_from_bytes

    out = {}
    for r in recs:
        t = tensor_from_bytes(store.get(r.digest), r.dtype, r.shape)
        out[r.name] = t if device is None or str(device) == "cpu" else t.to(device)
    return out
