"""One intra-op thread for the CPU kernels whose rounding depends on the thread count.

Matrix products (MKL), FFTs and float reductions split their work by torch's intra-op
thread count, and the split changes the order of additions: measured here, a DCT resize
of a 768 x 3072 matrix along its long axis, a 4 -> 6 layer resize and an fp32 mean each
gave different bits at 1, 2, 3, 4 and 8 threads. zoo promises that a derivation is
reproducible bit for bit (``zoo rederive``, learngenes stored once by content), also on a
machine with another core count or under another ``torch.set_num_threads``. So those
kernels run under :func:`one_thread`; zoo gets its parallelism from working on several
tensors at once instead (``zoo.api.tensors.parallel_map``). Elementwise kernels round each
element on its own and keep every thread.

``torch.set_num_threads`` is per calling thread for OpenMP and MKL; it also sets the
default that threads created meanwhile start from, which is why the previous value is
put back on exit. CUDA tensors are left alone (their kernels do not depend on it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_thread(x: torch.Tensor) -> Iterator[None]:
    """Run the enclosed torch kernels on one intra-op thread when ``x`` is on the CPU."""
    if x.device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
