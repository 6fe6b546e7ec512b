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
from collections.abc import Callable

from .hf import LocalCheckpoint, TensorInfo
from .safetensors_format import DTYPE_ITEMSIZE

# Wider dtype -> the narrower ones that may hold every value of it (tried in this order).
NARROWER: dict[str, tuple[str, ...]] = {
    "F32": ("BF16", "F16"),
    "F64": ("F32", "BF16", "F16"),
}


def narrowed(ckpt: LocalCheckpoint) -> dict[str, dict[str, TensorInfo]]:
    """Tensor name -> {narrower dtype code -> its record}, for each float32 or float64
    tensor whose every value a narrower floating-point dtype holds exactly (NaNs and
    infinities included, bit for bit). A tensor that does not narrow is seen to in its
    first few thousand values, almost always: an unrelated float32 file costs little more
    than reading their pages."""
    out: dict[str, dict[str, TensorInfo]] = {}
    for info in ckpt.tensors:
        if info.dtype not in NARROWER:
            continue
        found = _narrowed_one(
            info, lambda begin, end, name=info.name: ckpt.read_bytes(name, begin, end)
        )
        if found:
            out[info.name] = found
    return out


# Elements cast at a time: a float32 embedding of a few GB is checked in 64 MiB pieces,
# never copied whole (or twice over, narrow and wide again). The first piece is small: a
# trained float32 tensor shows it is not a widened one within its first values.
_FIRST = 1 << 12
_CHUNK = 1 << 24


def _narrowed_one(
    info: TensorInfo, read: Callable[[int, int], memoryview]
) -> dict[str, TensorInfo]:
    """``read(begin, end)``: the tensor's bytes ``[begin, end)``. In numpy, not torch: a
    client audits without torch."""
    import numpy as np

    itemsize = DTYPE_ITEMSIZE[info.dtype]
    wide_type = {"F32": "<f4", "F64": "<f8"}[info.dtype]
    kept = {code: hashlib.sha256() for code in NARROWER[info.dtype]}
    count = info.nbytes // itemsize
    # An empty tensor is one empty piece: it narrows, as its cast copy does.
    starts = [0, *range(min(_FIRST, count), count, _CHUNK)]
    for start, stop in zip(starts, [*starts[1:], count], strict=True):
        piece = read(start * itemsize, stop * itemsize)
        wide = np.frombuffer(piece, dtype=wide_type)
        for code in list(kept):
            narrow = _narrow(wide, code)
            if narrow is None:
                del kept[code]
            else:
                kept[code].update(narrow.tobytes())
        if not kept:
            break
    return {
        code: TensorInfo(info.name, code, info.shape, count * DTYPE_ITEMSIZE[code], h.hexdigest())
        for code, h in kept.items()
    }


def _narrow(wide, code: str):
    """``wide``'s values as little-endian ``code`` (an array), or None when one of them
    is not held exactly. bfloat16 is the top half of a float32's bits: it holds a float32
    exactly when the lower half is zero (a widened bf16 NaN keeps its payload)."""
    import numpy as np

    if code == "BF16":
        if wide.dtype.itemsize == 8:
            wide = _narrow(wide, "F32")
            if wide is None:
                return None
        bits = wide.view("<u4")
        return None if np.any(bits & 0xFFFF) else (bits >> 16).astype("<u2")
    unsigned = {2: "<u2", 4: "<u4", 8: "<u8"}
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        narrow = wide.astype({"F16": "<f2", "F32": "<f4"}[code])
        back = narrow.astype(wide.dtype)
    same = np.array_equal(
        back.view(unsigned[wide.dtype.itemsize]), wide.view(unsigned[wide.dtype.itemsize])
    )
    return narrow if same else None


def as_narrowed(tensors, alternatives: dict[str, dict[str, TensorInfo]], code: str) -> list:
    """``tensors`` with each one that narrows to ``code`` replaced by that record."""
    return [alternatives.get(t.name, {}).get(code, t) for t in tensors]


def as_recorded(tensors, alternatives: dict[str, dict[str, TensorInfo]], recorded) -> list:
    """``tensors`` with each one replaced by its narrowed record where that, and not the
    file's own, has the digest and dtype ``recorded`` (name -> (digest, dtype)) gives it:
    a checkpoint that kept some tensors in float32 and others in bf16 is matched tensor
    by tensor (a tensor of zeros has the same bytes in bf16 and fp16: the recorded dtype
    says which it was)."""
    out = []
    for t in tensors:
        want = recorded.get(t.name)
        if want is not None and (t.digest, t.dtype) != want:
            t = next(
                (a for a in alternatives.get(t.name, {}).values() if (a.digest, a.dtype) == want),
                t,
            )
        out.append(t)
    return out


# Narrower dtype -> the wider recorded dtype a save may have rounded to it: transformers
# loads a float32 checkpoint with ``dtype=torch.bfloat16`` (or ``.half()``) and saves
# that. The values change, so no byte matches; the recorded values rounded as torch
# rounds them give the file's bytes exactly.
ROUNDED_FROM: dict[str, str] = {"BF16": "F32", "F16": "F32"}


def rounded_digest(data: bytes | memoryview, code: str) -> str:
    """sha256 of ``data`` (little-endian float32 values) rounded to ``code`` (``BF16`` or
    ``F16``) as torch's ``Tensor.to`` rounds on a CPU: to nearest, ties to even, past the
    range to infinity. NaNs are not matched (torch writes them as different bf16 bits
    in its scalar and vector paths), so a tensor holding one is left differing."""
    import numpy as np

    h = hashlib.sha256()
    count = len(data) // 4
    for start in range(0, count, _CHUNK):
        wide = np.frombuffer(data[start * 4 : min(count, start + _CHUNK) * 4], dtype="<f4")
        if code == "BF16":
            bits = wide.view("<u4").astype("<u8")
            narrow = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
        else:
            with np.errstate(over="ignore"):
                narrow = wide.astype("<f2")
        h.update(narrow.tobytes())
    return h.hexdigest()
