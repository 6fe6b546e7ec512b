"""Derivations give the same bits at any torch thread count (zoo/_threads.py).

Without ``one_thread``, each case below gave different bits at 1 and 2 (or 3) intra-op
threads on this project's 2-core CI machine: MKL's product of a 4-row matrix with a wide
one, the FFT path of the DCT resize, and a float64 mean over two million elements. A
re-derive or a second extraction on a machine with another core count would then not
match what was recorded.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from zoo._threads import one_thread
from zoo.derive import signal_stats
from zoo.methods import resize
from zoo.transforms.dct import resize_axis
from zoo.transforms.front import front_extract

THREADS = (1, 2, 3, 4)


@contextlib.contextmanager
def threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _front(x: torch.Tensor) -> torch.Tensor:
    fb = front_extract(x, keep=0.5, layer_axis=None)  # one mean and std over all
    return torch.cat([fb.block.flatten(), fb.means, fb.stds])


CASES = {
    # A layer axis 4 -> 6 is a (6 x 4) matrix times every column: MKL splits the wide side.
    "dct resize of a short layer axis": lambda: resize_axis(_randn(4, 128, 1024), 0, 6),
    # Axes over 1024 go through torch.fft, which batches rows per thread.
    "dct resize through the FFT path": lambda: resize_axis(_randn(4, 256, 2048), 2, 1536),
    "dwt resize to a non-dyadic size, std-matched": lambda: resize(
        _randn(4, 64, 256), (6, 96, 384), method="dwt", wavelet="db2", rescale="std"
    ),
    "front_extract block and statistics": lambda: _front(_randn(4, 256, 2048)),
    "float64 signal statistics": lambda: torch.tensor(
        signal_stats(_randn(4, 256, 2048)), dtype=torch.float64
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_bits_at_any_thread_count(case):
    results = []
    for n in THREADS:
        with threads(n):
            results.append(CASES[case]())
    for n, got in zip(THREADS[1:], results[1:], strict=True):
        assert torch.equal(got, results[0]), f"{case}: {n} threads differ from 1"


def test_materialize_and_extract_are_independent_of_the_thread_count(registry, tiny_dir):
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    seen = set()
    for n in THREADS:
        with threads(n):
            lg = registry.extract(src.name, method="dct", keep=0.5)
            grown = registry.materialize(src.name, layers=6, hidden=48, method="dct")
            shrunk = registry.materialize(lg.name, layers=3, hidden=24, rescale="std")
        seen.add((lg.content_hash, grown.artifact.content_hash, shrunk.artifact.content_hash))
    assert len(seen) == 1, seen


def test_one_thread_restores_the_callers_setting():
    x = torch.zeros(1)
    with threads(3):
        with one_thread(x):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3
        with pytest.raises(RuntimeError), one_thread(x):
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 3
    with threads(1), one_thread(x):
        assert torch.get_num_threads() == 1


def test_one_thread_leaves_other_devices_alone():
    meta = torch.empty(1, device="meta")  # CUDA takes the same branch
    with threads(3), one_thread(meta):
        assert torch.get_num_threads() == 3


def _count_after_default_changes(setter) -> int:
    """In a fresh thread: ``setter(1)``, then another thread changes torch's default,
    then read this thread's own count."""
    import threading

    ready, changed, seen = threading.Event(), threading.Event(), []

    def worker():
        setter(1)
        ready.set()
        changed.wait()
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=worker)
    with threads(2):
        t.start()
        ready.wait()
        torch.set_num_threads(3)  # what a caller restoring its own setting does
        changed.set()
        t.join()
    return seen[0]


def test_a_pool_threads_setting_survives_a_later_change_of_the_default():
    from zoo._threads import set_threads

    # With torch.set_num_threads alone (torch 2.13) the thread's lazy first read of the
    # default overwrote its setting: pool threads ran MKL on several threads now and then.
    assert _count_after_default_changes(set_threads) == 1


def test_an_error_in_a_block_is_raised_once_no_block_runs_any_more():
    import time

    from zoo._threads import each_on_one_thread

    done = []

    def fails():
        raise ValueError("block 0")

    def slow(i):
        time.sleep(0.05)
        done.append(i)

    tasks = [fails] + [lambda i=i: slow(i) for i in range(5)]
    with threads(2), pytest.raises(ValueError, match="block 0"):
        each_on_one_thread(tasks, torch.zeros(1))
    seen = list(done)
    assert seen  # the other worker's blocks ran
    time.sleep(0.3)
    assert done == seen  # and none was still running when the error came out


def test_small_work_runs_on_the_calling_thread_and_large_or_remote_work_on_threads(
    monkeypatch,
):
    """Starting threads for a few small tensors costs more than it saves, so work whose
    bytes add up to less than ``SMALL_WORK`` runs on the caller's thread; larger work,
    and work that waits on a remote store's round trips whatever its size, is spread
    over threads. Either way the results come back in order."""
    import os
    import threading

    from zoo.api.tensors import SMALL_WORK, parallel_map

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    barrier = threading.Barrier(2, timeout=10)

    def ident(x):
        return x, threading.get_ident()

    def meet(x):  # two items that each wait for the other can only finish on two threads
        barrier.wait()
        return x, threading.get_ident()

    caller = threading.get_ident()
    small = parallel_map(ident, [1, 2, 3], cost=[10, 10, 10])
    assert small == [(1, caller), (2, caller), (3, caller)]
    large = parallel_map(meet, [1, 2], cost=[SMALL_WORK, SMALL_WORK])
    assert [x for x, _ in large] == [1, 2] and caller not in {t for _, t in large}
    barrier.reset()
    remote = parallel_map(meet, [1, 2], cost=[10, 10], min_cost=0)
    assert [x for x, _ in remote] == [1, 2] and caller not in {t for _, t in remote}


def test_a_budget_keeps_large_items_apart_and_lets_small_ones_run_beside_them(monkeypatch):
    """Under a budget, the costs in flight never exceed it (an item larger than the
    budget runs alone): two large items run one after the other while small ones fill
    the other threads; results come back in order, and a failure stops what has not
    started and is raised."""
    import os
    import threading
    import time

    from zoo.api.tensors import parallel_map

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    cost = {"big1": 10, "big2": 10, "huge": 40, **{f"s{i}": 1 for i in range(6)}}
    lock, flight, most, beside_big = threading.Lock(), [0], [0], [0]

    def run(name):
        with lock:
            flight[0] += cost[name]
            most[0] = max(most[0], flight[0])
            if flight[0] > cost[name] and name.startswith("s") and flight[0] >= 10:
                beside_big[0] += 1
        time.sleep(0.01 if name.startswith("s") else 0.1)
        with lock:
            flight[0] -= cost[name]
        return name

    names = list(cost)
    got = parallel_map(run, names, cost=[cost[n] for n in names], workers=3, budget=15, min_cost=0)
    assert got == names
    assert most[0] == 40  # the huge one, alone
    assert beside_big[0] > 0  # small items ran while a big one did
    flight[0] = most[0] = 0
    names = ["big1", "big2", "s0", "s1"]
    assert (
        parallel_map(run, names, cost=[cost[n] for n in names], workers=2, budget=15, min_cost=0)
        == names
    )
    assert most[0] <= 15

    started = []

    def fail(name):
        started.append(name)
        if name == "big1":
            raise ValueError("no")
        time.sleep(0.05)
        return name

    with pytest.raises(ValueError, match="no"):
        parallel_map(fail, ["big1", "big2"], cost=[10, 10], workers=2, budget=15, min_cost=0)
    assert started == ["big1"]
