"""DCT, inverse DCT and DCT resize against scipy.fft (norm="ortho")."""

from __future__ import annotations

import importlib
import threading
import time

import numpy as np
import pytest
import scipy.fft as sfft
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from livememory import peak_live_bytes

from zoo.errors import TransformError
from zoo.transforms import dct, dct_resize, idct

dct_mod = importlib.import_module("zoo.transforms.dct")  # the module, not the function

TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 5e-2}


def _scipy_resize(x: np.ndarray, shape) -> np.ndarray:
    c = sfft.dctn(x, norm="ortho")
    out = np.zeros(shape)
    keep = tuple(slice(0, min(a, b)) for a, b in zip(x.shape, shape, strict=True))
    out[keep] = c[keep]
    return sfft.idctn(out, norm="ortho")


shapes = st.lists(st.integers(1, 20), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None)
@given(shapes, st.data())
def test_dct_and_idct_match_scipy(shape, data):
    x = torch.randn(shape, dtype=torch.float64)
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True))
    ref = sfft.dctn(x.numpy(), norm="ortho", axes=axes)
    np.testing.assert_allclose(dct(x, axes=axes).numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(
        idct(torch.from_numpy(ref), axes=axes).numpy(), x.numpy(), atol=1e-10
    )


@settings(max_examples=40, deadline=None)
@given(shapes, st.data())
def test_dct_resize_matches_scipy(shape, data):
    target = [data.draw(st.integers(1, 24)) for _ in shape]
    x = torch.randn(shape, dtype=torch.float64)
    np.testing.assert_allclose(
        dct_resize(x, target).numpy(), _scipy_resize(x.numpy(), target), atol=1e-10
    )


@pytest.mark.parametrize(("n", "t"), [(1500, 700), (1100, 2049), (2048, 1024), (1025, 1025)])
def test_long_axes_use_fft_path_and_match_scipy(n, t):
    x = torch.randn(3, n, dtype=torch.float64)
    np.testing.assert_allclose(
        dct_resize(x, (3, t)).numpy(), _scipy_resize(x.numpy(), (3, t)), atol=1e-9
    )
    np.testing.assert_allclose(
        dct(x, axes=(1,)).numpy(), sfft.dct(x.numpy(), norm="ortho"), atol=1e-9
    )
    xt = torch.randn(n, 2, dtype=torch.float64)  # long axis not last
    np.testing.assert_allclose(
        idct(xt, axes=(0,)).numpy(), sfft.idct(xt.numpy(), norm="ortho", axis=0), atol=1e-9
    )


def test_down_up_is_projection_and_up_down_is_identity():
    x = torch.randn(12, 30, dtype=torch.float64)
    down = (9, 17)

    def proj(v):
        return dct_resize(dct_resize(v, down), x.shape)

    p = proj(x)
    torch.testing.assert_close(proj(p), p, atol=1e-10, rtol=0)
    torch.testing.assert_close(dct_resize(dct_resize(p, (20, 40)), x.shape), p, atol=1e-10, rtol=0)


def test_smooth_signal_scales_by_sqrt_ratio():
    x = torch.full((6, 8), 2.0, dtype=torch.float64)
    y = dct_resize(x, (3, 32))
    torch.testing.assert_close(y, torch.full_like(y, 2.0 * (6 / 3 * 8 / 32) ** 0.5))


@pytest.mark.parametrize("dtype", list(TOL))
def test_dtypes(dtype):
    x = torch.randn(6, 40).to(dtype)
    y = dct_resize(x, (4, 50))
    assert y.dtype == dtype
    np.testing.assert_allclose(
        y.double().numpy(), _scipy_resize(x.double().numpy(), (4, 50)), atol=TOL[dtype] * 10
    )


def test_unchanged_axes_untouched_and_deterministic():
    x = torch.randn(5, 7, 9)
    y = dct_resize(x, (5, 7, 9))
    assert torch.equal(y, x)
    assert torch.equal(dct_resize(x, (3, 7, 12)), dct_resize(x, (3, 7, 12)))


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda: dct_resize(torch.randn(4, 4), (4, 0)), "shape"),
        (lambda: dct_resize(torch.randn(4, 4), (4,)), "shape"),
        (lambda: dct_resize(torch.ones(4, dtype=torch.int32), (2,)), "x"),
        (lambda: dct(torch.randn(4), axes=(1,)), "axes"),
        (lambda: idct(torch.tensor(1.0), axes=(0,)), "x"),
    ],
)
def test_bad_arguments(call, word):
    with pytest.raises(TransformError, match=f"`{word}`"):
        call()


def test_a_middle_axis_is_resized_in_column_blocks_with_the_bits_of_whole_slabs(monkeypatch):
    """One layer of a large role along its middle axis: its slab along the first axis is the
    whole layer, and the FFT's temporaries were several times its size. It is cut into
    blocks of columns instead: the same rows, so the same bits, and the temporaries stay
    a small part of the result."""
    x = torch.randn(1, 1200, 256, generator=torch.Generator().manual_seed(0))
    whole = dct_mod.resize_axis(x, 1, 1800)  # one slab of 1.2 MB: under the 2 MiB limit
    monkeypatch.setattr(dct_mod, "_SLAB_BYTES", 64 << 10)
    got, peak = peak_live_bytes(lambda: dct_mod.resize_axis(x, 1, 1800), x)
    assert torch.equal(got, whole)
    result = got.nbytes
    assert peak < result + 0.5 * result, (peak, result)
    for shape, axis, t in (((3, 300, 40), 1, 450), ((300, 7, 5), 0, 200), ((2, 5, 300, 9), 2, 160)):
        y = torch.randn(shape)
        monkeypatch.setattr(dct_mod, "_SLAB_BYTES", 1 << 30)  # slabs along the lead axis
        lead = dct_mod.resize_axis(y, axis, t)
        monkeypatch.setattr(dct_mod, "_SLAB_BYTES", 1 << 10)  # blocks of columns
        assert torch.equal(dct_mod.resize_axis(y, axis, t), lead), (shape, axis)


def test_tables_built_by_racing_workers_give_every_worker_the_bits_of_one_built_alone(
    monkeypatch,
):
    """MKL's vector cos, first called by two threads at once (two derivation workers
    missing the same cached DCT matrix, or the threads of one kernel), gave one of them an
    AVX2 reduced-accuracy kernel's bits; cached, that matrix changed every later resize of
    the process, and a derivation recorded bits ``zoo rederive`` could not reproduce.
    Tables are built one at a time on one intra-op thread: here a cos that goes wrong
    whenever calls overlap or run on several threads still never reaches a result."""
    from zoo._threads import set_threads

    tables = (dct_mod._dct_matrix64, dct_mod._split_resize_matrices, dct_mod.resize_matrix)
    x = torch.randn(3, 768, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for t in tables:
        t.cache_clear()
    alone = dct_mod.resize_axis(x, 1, 640)
    np.testing.assert_allclose(alone.numpy(), _scipy_resize(x.numpy(), (3, 640)), atol=1e-10)

    cos, lock, busy = torch.cos, threading.Lock(), [0]

    def racy_cos(a, *args, **kwargs):
        with lock:
            busy[0] += 1
        time.sleep(0.05)  # long enough for a racing caller to arrive
        with lock:
            overlap = busy[0] > 1
        y = cos(a, *args, **kwargs)
        with lock:
            busy[0] -= 1
        return y + 1e-9 if overlap or torch.get_num_threads() > 1 else y

    monkeypatch.setattr(torch, "cos", racy_cos)
    for t in tables:
        t.cache_clear()
    start, got = threading.Barrier(3), [None] * 3

    def worker(i: int) -> None:
        set_threads(2)
        start.wait()
        got[i] = dct_mod.resize_axis(x, 1, 640)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in tables:
        t.cache_clear()  # nothing built with the stand-in outlives the test
    for y in got:
        assert torch.equal(y, alone)
