"""Moving tensors between the blob store and torch, with their content hashes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
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
    return parallel_map(lambda n: record(n, state[n])[0], sorted(state))


def parallel_map(fn, items: list) -> list:
    """``[fn(x) for x in items]`` on a few threads, in order.

    sha256 and torch kernels release the GIL, so hashing and transforming independent
    tensors overlap; results are identical to the sequential loop.
    """
    workers = min(len(items), os.cpu_count() or 1, 8)
    if workers <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def store_tensors(store, state: Mapping[str, torch.Tensor]) -> list[TensorRecord]:
    """Put every tensor's bytes in the store (once); returns their records."""

    def put(name: str) -> TensorRecord:
        rec, data = record(name, state[name])
        store.put(data, rec.digest)  # also refreshes a reused blob so gc keeps it
        return rec

    return parallel_map(put, sorted(state))


def load_tensors(store, recs: Iterable[TensorRecord], *, device=None) -> dict[str, torch.Tensor]:
    """Read (and verify) tensors from the store, onto ``device``."""
    from zoo.checkpoint import tensor_from_bytes

    def load(r: TensorRecord):
        t = tensor_from_bytes(store.get(r.digest), r.dtype, r.shape)
        return t if device is None or str(device) == "cpu" else t.to(device)

    recs = list(recs)
    return dict(zip([r.name for r in recs], parallel_map(load, recs), strict=True))
