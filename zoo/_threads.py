"""One intra-op thread for the CPU kernels whose rounding depends on the thread count.

Matrix products (MKL), FFTs and float reductions split their work by torch's intra-op
thread count, and the split changes the order of additions: measured here, a DCT resize
of a 768 x 3072 matrix along its long axis, a 4 -> 6 layer resize and an fp32 mean each
gave different bits at 1, 2, 3, 4 and 8 threads. zoo promises that a derivation is
reproducible bit for bit (``zoo rederive``, learngenes stored once by content), also on a
machine with another core count or under another ``torch.set_num_threads``. So those
kernels run under :func:`one_thread`, and zoo gets its parallelism back by cutting the
work into blocks fixed by the data's shape (never by the thread count) and running the
blocks side by side (:func:`each_on_one_thread`), and by working on several tensors at
once (``zoo.api.tensors.parallel_map``). Elementwise kernels round each element on its
own and keep every thread.

``torch.set_num_threads`` is per calling thread for OpenMP and MKL; it also sets the
default that threads created meanwhile start from, which is why the previous value is
put back on exit, and a thread reads that default lazily, once, at its first parallel
kernel (:func:`set_threads` makes a fresh thread's own setting stick). CUDA tensors are
left alone (their kernels do not depend on it).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import torch

from zoo import _memory


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


def table(fn: Callable) -> Callable:
    """``functools.lru_cache`` (64 entries) for a constant table that every later transform
    of the process reuses (a DCT matrix, twiddles), built by one thread at a time, on one
    intra-op thread.

    Their ``cos`` and ``sin`` run on MKL's vector math library, whose first calls racing
    each other (two derivation workers building the same table, or the threads of one
    kernel) were seen to give one caller another code path's bits (AVX2 at reduced
    accuracy, ~3e-9 off). Cached, such a table changed every later resize of that process,
    so a derivation recorded bits that ``zoo rederive`` cannot reproduce."""
    cached = functools.lru_cache(maxsize=64)(fn)

    @functools.wraps(fn)
    def get(*args):
        with _tables, one_thread(_CPU):
            return cached(*args)

    get.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return get


def each_on_one_thread(tasks: Sequence[Callable[[], None]], like: torch.Tensor) -> None:
    """Run independent ``tasks``, each on one intra-op thread, up to the caller's torch
    thread count at a time. The same bits at any thread count, provided the tasks (the
    blocks of work) are cut from the data's shape alone."""
    workers = min(len(tasks), torch.get_num_threads(), _POOL_SIZE)
    # Inside a pool thread, run inline: waiting there on the same pool could deadlock.
    if like.device.type != "cpu" or workers <= 1 or getattr(_local, "in_pool", False):
        with one_thread(like):
            for task in tasks:
                task()
        return
    before = torch.get_num_threads()
    groups = [tasks[k::workers] for k in range(workers)]
    try:
        futures = [_pool().submit(_run_all, group) for group in groups]
        wait(futures)  # all of them, so none still writes after an error is raised
        for future in futures:
            future.result()
    finally:
        torch.set_num_threads(before)  # the default new threads start from; see module doc


def set_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` for this thread, made to stick: torch reads its
    process-wide default once per thread, lazily, at the thread's first parallel kernel,
    and would overwrite an earlier setting with whatever that default is by then."""
    torch.get_num_threads()  # the lazy read happens here
    torch.set_num_threads(n)


def _run_all(tasks: Sequence[Callable[[], None]]) -> None:
    if torch.get_num_threads() != 1:
        set_threads(1)
    _local.in_pool = True
    try:
        for task in tasks:
            task()
    finally:
        _local.in_pool = False


# One pool for the process (its threads keep their one-thread setting and their BLAS
# buffers warm; a fresh pool per call made small products slower than one thread).
# Rebuilt after a fork, whose child has the pool object but none of its threads.
_POOL_SIZE = min(os.cpu_count() or 1, 16)
_pool_state: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()
_local = threading.local()
# Reentrant: a table may be built from other tables.
_tables = threading.RLock()
_CPU = torch.empty(0)


def _pool() -> ThreadPoolExecutor:
    global _pool_state
    with _pool_lock:
        if _pool_state is None or _pool_state[0] != os.getpid():
            pool = ThreadPoolExecutor(
                _POOL_SIZE,
                thread_name_prefix="zoo-one-thread",
                initializer=set_threads,
                initargs=(1,),
            )
            _pool_state = (os.getpid(), pool)
        return _pool_state[1]


def product(mat: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    """``dst = mat @ src`` for ``(p, n, q)`` blocks, along their middle axis."""
    if src.shape[2] == 1:
        torch.matmul(src[:, :, 0], mat.T, out=dst[:, :, 0])
    else:
        torch.matmul(mat, src, out=dst)


def blockwise(
    x: torch.Tensor, axis: int, t: int, fn, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``fn(src, dst)`` on blocks of ``x`` seen as ``(p, n, q)`` with ``axis`` in the
    middle, each writing its block of a ``(p, t, q)`` output: ``out`` (contiguous) or a
    fresh huge-page hinted one.

    Matrix products round differently at different thread counts (see the module doc), so
    the blocks are cut from the shape alone and each runs on one intra-op thread, several
    side by side: the same bits at any thread count, close to multi-threaded speed.
    Whole blocks (not just their products) run in the workers, so no elementwise kernel
    of the caller competes with them for the cores.
    """
    shape = list(x.shape)
    p, n, q = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])
    shape[axis] = t
    if out is None:
        out = _memory.empty(shape, like=x)
    src, dst = x.reshape(p, n, q), out.view(p, t, q)
    if x.device.type != "cpu":  # one launch beats many; GPU kernels do not vary this way
        fn(src, dst)
        return out
    if p >= _MIN_BLOCKS or q == 1:
        rows = _block(p, t * q)
        cuts = [slice(i, i + rows) for i in range(0, p, rows)]
        tasks = [lambda r=r: fn(src[r], dst[r]) for r in cuts]
    else:  # few, wide slices (a layer axis): cut the columns
        cols = _block(q, t)
        cuts = [(i, slice(j, j + cols)) for i in range(p) for j in range(0, q, cols)]
        tasks = [lambda i=i, c=c: fn(src[i : i + 1, :, c], dst[i : i + 1, :, c]) for i, c in cuts]
    each_on_one_thread(tasks, x)
    return out


# Blocks hold about this many output elements (fixed by the shape: see blockwise).
_BLOCK_ELEMS = 1 << 19
_MIN_BLOCKS = 8


def _block(count: int, per_item: int) -> int:
    """How many of ``count`` items (``per_item`` output elements each) make one block."""
    return max(1, min(count, _BLOCK_ELEMS // max(per_item, 1)))
