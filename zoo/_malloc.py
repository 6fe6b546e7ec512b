"""glibc's malloc, set for the processes zoo owns (the ``zoo`` command, ``zoo serve``).

glibc serves a large allocation with its own mapping, unmapped when freed, only above a
threshold that it raises each time such a block is freed (from 128 KiB up to 32 MiB on
64-bit). Once raised, a streamed materialize's per-layer tensors and their temporaries (a
few MiB to a few tens of MiB each) come from its arenas, and their memory stays in the
process after they are freed. A fixed threshold hands every block of 4 MiB or more back
when it is freed. Measured with the scale benchmark's HyperCloning grow of a 1.1B bf16
Llama to 44x4096 (8.0B parameters) on a 2-core Intel Xeon: peak RSS 0.95-1.00 GB
without, 0.885 GB with, and the same time (17.5-19.0 s either way).

The library never sets it: a fixed threshold is process-wide, and a program that calls
zoo may want glibc to keep its own loop's large temporaries warm.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

THRESHOLD = 4 << 20
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_ENV = "MALLOC_MMAP_THRESHOLD_"


def give_back_large_frees(threshold: int = THRESHOLD) -> bool:
    """Serve allocations of ``threshold`` bytes or more with their own mappings, handed
    back to the system when freed, in this process; whether it was set. Not on other C
    libraries, and not where the user chose a threshold (``MALLOC_MMAP_THRESHOLD_``)."""
    if not sys.platform.startswith("linux") or _ENV in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # not glibc: other C libraries number their options otherwise
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, threshold) == 1
