"""What CPU this process runs on: results files name their machine, and a derivation on
the CPU records it (another CPU model may round differently)."""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path


@functools.cache  # a process's CPU does not change; every derived record asks
def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform reports."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu() -> dict[str, str]:
    """This CPU as a derivation records it: its model and the instruction set torch's CPU
    kernels dispatch to (e.g. AVX2, AVX512), which decide how their sums round."""
    import torch

    return {"model": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability()}
