"""Output allocation for large CPU tensors, with transparent huge pages where Linux has them.

A fresh large CPU tensor is mmap'd by the C allocator and its pages are faulted in on
first write, 4 KiB at a time; on a VM that costs far more than the write itself (a
113 MB fp32 stack: ~120 ms of faults against ~15 ms to copy it into warm memory).
NumPy (and so PyWavelets and SciPy) asks the kernel for transparent huge pages on every
allocation of 4 MiB or more (``madvise(MADV_HUGEPAGE)``); torch's CPU allocator does not
unless ``THP_MEM_ALLOC_ENABLE=1`` is set before torch starts. :func:`empty` gives zoo's
own large buffers (transform outputs, tensors read from the blob store) the same hint, on
their 2 MiB-aligned interior, before anything is written. It is only a hint about this one
buffer: values, strides and lifetime are those of ``torch.empty``; elsewhere (other OSes,
CUDA, THP off) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

import torch

_MIN_BYTES = 4 << 20  # same threshold as NumPy
_HUGE = 2 << 20
_MADV_HUGEPAGE = 14


@functools.cache
def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def advise_huge(t: torch.Tensor) -> None:
    """Hint that ``t``'s (not yet written) CPU storage should use transparent huge pages."""
    if t.device.type != "cpu" or t.nbytes < _MIN_BYTES:
        return
    fn = _madvise()
    if fn is None:
        return
    start = (t.data_ptr() + _HUGE - 1) & ~(_HUGE - 1)
    end = (t.data_ptr() + t.nbytes) & ~(_HUGE - 1)
    if end > start:
        fn(start, end - start, _MADV_HUGEPAGE)  # failure only loses the hint


def empty(shape, *, like: torch.Tensor | None = None, dtype=None, device=None) -> torch.Tensor:
    """``torch.empty(shape)`` with ``like``'s dtype and device (or the ones given),
    huge-page hinted if large."""
    if like is not None:
        dtype = dtype or like.dtype
        device = device or like.device
    t = torch.empty(shape, dtype=dtype, device=device or "cpu")
    advise_huge(t)
    return t


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can still get on ``device`` (None when unknown): free GPU
    memory plus what torch holds cached but unused; on the CPU the kernel's MemAvailable
    (free plus reclaimable cache), capped by a cgroup v2 memory limit when one is set."""
    import torch

    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    have = None
    try:
        # Read whole, as bytes: every materialization asks, and decoding line by line
        # costs more than the read.
        with open("/proc/meminfo", "rb") as f:
            text = f.read()
        at = text.find(b"MemAvailable:")
        if at >= 0:
            have = int(text[at:].split(maxsplit=2)[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if have is None:
        try:
            have = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    limit = _cgroup_room()
    return have if limit is None else min(have, limit)


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup v2 memory limit, if it has one."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            return max(int(limit) - int(f.read().strip()), 0)
    except (OSError, ValueError):
        return None
