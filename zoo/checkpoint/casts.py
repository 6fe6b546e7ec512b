"""A checkpoint's tensors as they were before a lossless widening cast.

transformers loads a bf16 checkpoint as float32 when asked (``dtype=torch.float32``, or
``model.float()`` before training) and saves it so: every byte changes, no value does. An
audit that matches tensors by the sha256 of their bytes would call such a file unknown.
Casting each float32 tensor back down, and keeping the result only when casting it up
again gives the same bits, recovers the bytes the narrower checkpoint held: exactly those
values, so a match on them is the same evidence a match on the original bytes is.
"""

from __future__ import annotations

import hashlib

import torch

from .hf import LocalCheckpoint, TensorInfo
from .safetensors_format import DTYPE_ITEMSIZE, dtype_code, tensor_bytes, tensor_from_bytes

# Wider dtype -> the narrower ones it holds every value of (tried in this order).
NARROWER: dict[str, tuple[torch.dtype, ...]] = {
    "F32": (torch.bfloat16, torch.float16),
    "F64": (torch.float32, torch.bfloat16, torch.float16),
}
_BITS = {torch.float32: torch.int32, torch.float64: torch.int64}


# A widened checkpoint narrows every matrix: when none of the first few does, the file was
# trained or saved in the wider dtype, and reading the rest would only cost time.
_GIVE_UP_AFTER = 3


def narrowed(ckpt: LocalCheckpoint) -> dict[str, dict[str, TensorInfo]]:
    """Tensor name -> {narrower dtype code -> its record}, for each float32 or float64
    tensor whose every value a narrower floating-point dtype holds exactly (NaNs and
    infinities included, bit for bit). Reads each such tensor once; {} as soon as the
    first matrices show the file is not a widened one."""
    out: dict[str, dict[str, TensorInfo]] = {}
    matrices = {True: 0, False: 0}  # matrices read, by whether they narrowed
    for info in ckpt.tensors:
        if info.dtype not in NARROWER:
            continue
        if matrices[False] >= _GIVE_UP_AFTER and not matrices[True]:
            return {}
        found = _narrowed_one(info, ckpt.read_bytes(info.name))
        ckpt.release(info.name)
        if found:
            out[info.name] = found
        if len(info.shape) >= 2:
            matrices[bool(found)] += 1
    return out


# Elements cast at a time: a float32 embedding of a few GB is checked in 64 MiB pieces,
# never held whole (or three times over, wide, narrow and wide again).
_CHUNK = 1 << 24


def _narrowed_one(info: TensorInfo, data: memoryview) -> dict[str, TensorInfo]:
    itemsize = DTYPE_ITEMSIZE[info.dtype]
    kept = {dtype: hashlib.sha256() for dtype in NARROWER[info.dtype]}
    count = info.nbytes // itemsize
    for start in range(0, count, _CHUNK):
        piece = data[start * itemsize : min(count, start + _CHUNK) * itemsize]
        wide = tensor_from_bytes(piece, info.dtype, (len(piece) // itemsize,))
        bits = _BITS[wide.dtype]
        for dtype in list(kept):
            narrow = wide.to(dtype)
            if torch.equal(narrow.to(wide.dtype).view(bits), wide.view(bits)):
                kept[dtype].update(tensor_bytes(narrow))
            else:
                del kept[dtype]
        if not kept:
            break
    out = {}
    for dtype, h in kept.items():
        code = dtype_code(dtype)
        nbytes = count * DTYPE_ITEMSIZE[code]
        out[code] = TensorInfo(info.name, code, info.shape, nbytes, h.hexdigest())
    return out


def as_narrowed(tensors, alternatives: dict[str, dict[str, TensorInfo]], code: str) -> list:
    """``tensors`` with each one that narrows to ``code`` replaced by that record."""
    return [alternatives.get(t.name, {}).get(code, t) for t in tensors]


def as_recorded(tensors, alternatives: dict[str, dict[str, TensorInfo]], recorded) -> list:
    """``tensors`` with each one replaced by its narrowed record where that, and not the
    file's own, has the digest ``recorded`` (name -> digest) gives it: a checkpoint that
    kept some tensors in float32 and others in bf16 is matched tensor by tensor."""
    out = []
    for t in tensors:
        want = recorded.get(t.name)
        if want is not None and t.digest != want:
            t = next((a for a in alternatives.get(t.name, {}).values() if a.digest == want), t)
        out.append(t)
    return out
