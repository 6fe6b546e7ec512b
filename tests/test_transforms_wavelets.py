"""Wavelet transforms against PyWavelets (mode="periodization"), the independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo.errors import TransformError
from zoo.transforms import dwt_approx, idwt_zero, wavedec, waverec
from zoo.transforms import wavelets as wv

WAVELETS = ["haar", "db2", "coif3", "sym8", "bior6.8", "rbio3.3", "dmey"]
ORTHOGONAL = ["haar", "db2", "coif3", "sym8"]
BIORTHOGONAL = ["bior6.8", "rbio3.3"]
# Per-dtype tolerance relative to the signal's scale (inputs are standard normal).
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 3e-2}

pytestmark = pytest.mark.filterwarnings("ignore:Level value:UserWarning")


def _ref(x: torch.Tensor, wavelet: str, level: int, axes) -> list:
    return pywt.wavedecn(x.double().numpy(), wavelet, mode="periodization", level=level, axes=axes)


@st.composite
def cases(draw, wavelets=WAVELETS):
    level = draw(st.integers(1, 2))
    ndim = draw(st.integers(1, 3))
    shape = [
        draw(st.integers(1, 3)) * 2**level * draw(st.sampled_from([1, 2])) for _ in range(ndim)
    ]
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    wavelet = draw(st.sampled_from(wavelets))
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, tuple(axes), level, wavelet


settings.register_profile("zoo", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("zoo")


@settings(max_examples=25)
@given(cases())
def test_wavedec_and_approx_match_pywt(case):
    x, axes, level, wavelet = case
    ref = _ref(x, wavelet, level, axes)
    ca, details = wavedec(x, axes=axes, level=level, wavelet=wavelet)
    np.testing.assert_allclose(ca.numpy(), ref[0], atol=1e-10)
    approx = dwt_approx(x, axes=axes, level=level, wavelet=wavelet)
    np.testing.assert_allclose(approx.numpy(), ref[0], atol=1e-10)
    assert len(details) == level
    for ours, theirs in zip(details, ref[1:], strict=True):
        assert set(ours) == set(theirs)
        for k in theirs:
            np.testing.assert_allclose(ours[k].numpy(), theirs[k], atol=1e-10)


@settings(max_examples=25)
@given(cases())
def test_waverec_and_idwt_zero_match_pywt(case):
    x, axes, level, wavelet = case
    ref = _ref(x, wavelet, level, axes)
    ca = torch.from_numpy(ref[0])
    details = [{k: torch.from_numpy(v) for k, v in d.items()} for d in ref[1:]]
    expect = pywt.waverecn(ref, wavelet, mode="periodization", axes=axes)
    np.testing.assert_allclose(
        waverec(ca, details, axes=axes, wavelet=wavelet).numpy(), expect, atol=1e-10
    )
    zeros = [ref[0]] + [{k: np.zeros_like(v) for k, v in d.items()} for d in ref[1:]]
    expect0 = pywt.waverecn(zeros, wavelet, mode="periodization", axes=axes)
    got0 = idwt_zero(ca, axes=axes, level=level, wavelet=wavelet)
    np.testing.assert_allclose(got0.numpy(), expect0, atol=1e-10)
    # None and missing bands count as zero
    none = [dict.fromkeys(d) for d in details]
    np.testing.assert_allclose(
        waverec(ca, none, axes=axes, wavelet=wavelet).numpy(), expect0, atol=1e-10
    )


@settings(max_examples=20)
@given(cases(wavelets=ORTHOGONAL + BIORTHOGONAL))
def test_perfect_reconstruction(case):
    x, axes, level, wavelet = case
    ca, details = wavedec(x, axes=axes, level=level, wavelet=wavelet)
    np.testing.assert_allclose(
        waverec(ca, details, axes=axes, wavelet=wavelet).numpy(), x.numpy(), atol=1e-10
    )


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("wavelet", ["haar", "db2", "bior6.8"])
def test_dtypes_keep_dtype_and_match_within_tolerance(dtype, wavelet):
    x = torch.randn(8, 16, 32, generator=torch.Generator().manual_seed(1)).to(dtype)
    ref = _ref(x, wavelet, 1, (0, 1, 2))[0]
    ca = dwt_approx(x, axes=(0, 1, 2), wavelet=wavelet)
    assert ca.dtype == dtype
    np.testing.assert_allclose(ca.double().numpy(), ref, atol=TOL[dtype] * 8)
    up = idwt_zero(ca, axes=(0, 1, 2), wavelet=wavelet)
    assert up.dtype == dtype and up.shape == x.shape


@pytest.mark.parametrize("wavelet", ORTHOGONAL + BIORTHOGONAL)
def test_down_then_up_is_idempotent(wavelet):
    # P = S A with A S = I (perfect reconstruction) is a projection for both families.
    x = torch.randn(8, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def proj(v):
        return idwt_zero(dwt_approx(v, axes=(0, 1), wavelet=wavelet), axes=(0, 1), wavelet=wavelet)

    p = proj(x)
    assert not torch.allclose(p, x)
    torch.testing.assert_close(proj(p), p, atol=1e-10, rtol=0)


def _gram(wavelet):
    eye = torch.eye(32, dtype=torch.float64)
    return idwt_zero(dwt_approx(eye, axes=(1,), wavelet=wavelet), axes=(1,), wavelet=wavelet)


@pytest.mark.parametrize("wavelet", ORTHOGONAL)
def test_orthogonal_projection_is_self_adjoint(wavelet):
    p = _gram(wavelet)
    torch.testing.assert_close(p, p.T, atol=1e-10, rtol=0)


@pytest.mark.parametrize("wavelet", BIORTHOGONAL)
def test_biorthogonal_projection_is_oblique(wavelet):
    # What does not hold for biorthogonal wavelets: the projection is not self-adjoint.
    p = _gram(wavelet)
    assert (p - p.T).abs().max() > 1e-3


@pytest.mark.parametrize("wavelet", ["haar", "db2", "bior6.8"])
@pytest.mark.parametrize("n_axes", [1, 2, 3])
def test_amplitude_scaling_facts(wavelet, n_axes):
    x = torch.full((8, 8, 8), 3.0, dtype=torch.float64)
    axes = tuple(range(n_axes))
    ca = dwt_approx(x, axes=axes, level=2, wavelet=wavelet)
    torch.testing.assert_close(ca, torch.full_like(ca, 3.0 * 2 ** (n_axes * 2 / 2)))
    up = idwt_zero(x, axes=axes, level=1, wavelet=wavelet)
    torch.testing.assert_close(up, torch.full_like(up, 3.0 * 2 ** (-n_axes / 2)))


def test_haar_fast_paths_equal_general_filter_path():
    x = torch.randn(4, 6, 8, dtype=torch.float64)
    from zoo.transforms import _filters, _periodic

    lo = _periodic.analysis_taps(_filters.bank("haar")[0])
    general = x
    for a in (0, 2):
        general = _periodic.apply(general, a, lo, up=False)
    torch.testing.assert_close(wv._haar_down(x, [0, 2], 1), general, atol=1e-12, rtol=0)
    rec = _periodic.synthesis_taps(_filters.bank("haar")[2])
    up = general
    for a in (0, 2):
        up = _periodic.apply(up, a, rec, up=True)
    torch.testing.assert_close(wv._haar_up(general, [0, 2], 1), up, atol=1e-12, rtol=0)


def test_long_axis_blocked_path_matches_pywt():
    x = torch.randn(2, 600, dtype=torch.float64)  # 300 outputs: blocked, not dense
    for w in ["db2", "coif3", "dmey"]:
        ref = _ref(x, w, 1, (1,))
        np.testing.assert_allclose(dwt_approx(x, axes=(1,), wavelet=w).numpy(), ref[0], atol=1e-10)
        up = idwt_zero(torch.from_numpy(ref[0]), axes=(1,), wavelet=w)
        zeros = [ref[0], {"d": np.zeros_like(ref[0])}]
        np.testing.assert_allclose(
            up.numpy(), pywt.waverecn(zeros, w, mode="periodization", axes=(1,)), atol=1e-10
        )


def test_deterministic():
    x = torch.randn(12, 64, 96)
    for w in ["haar", "db2"]:
        assert torch.equal(
            dwt_approx(x, axes=(0, 1, 2), wavelet=w), dwt_approx(x, axes=(0, 1, 2), wavelet=w)
        )


LOW_PRECISION_CASES = [
    # (shape, axes, level, wavelet): the layer axis with others (the slab path), a layer
    # axis that is kept (slabs along it), a single axis, a level that halves twice, haar.
    ((6, 96, 64), (0, 1, 2), 1, "db2"),
    ((8, 64, 96), (0, 1, 2), 2, "db2"),
    ((4, 64, 200), (1, 2), 1, "sym4"),
    ((8, 40, 48), (0, 2), 1, "coif1"),
    ((96, 64), (0, 1), 2, "db3"),
    ((64, 96), (0,), 1, "db2"),
    ((8, 64, 96), (0, 1, 2), 2, "haar"),
    ((48,), (0,), 2, "haar"),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", LOW_PRECISION_CASES, ids=str)
def test_low_precision_input_converted_slab_by_slab_gives_the_bits_of_a_whole_copy(dtype, case):
    shape, axes, level, wavelet = case
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    got = dwt_approx(x, axes=axes, level=level, wavelet=wavelet)
    whole = dwt_approx(x.float(), axes=axes, level=level, wavelet=wavelet).to(dtype)
    assert got.dtype == dtype and torch.equal(got, whole)


def test_a_low_precision_signal_is_never_converted_whole():
    """A bf16 signal's float32 copy would be twice its size (2 GB for one role of a 1B
    model): every allocation the transform makes stays below the input's own bytes."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                storage = t.untyped_storage() if isinstance(t, torch.Tensor) else None
                if storage is not None and storage.data_ptr() != x.untyped_storage().data_ptr():
                    Largest.largest = max(Largest.largest, storage.nbytes())  # not a view of x
            return out

    x = torch.randn(8, 1024, 1024).to(torch.bfloat16)  # 16 MiB: several slabs
    for wavelet in ("db2", "haar"):
        Largest.largest = 0
        with Largest():
            y = dwt_approx(x, axes=(0, 1, 2), wavelet=wavelet)
        assert y.shape == (4, 512, 512)
        assert 0 < Largest.largest < x.nbytes, (wavelet, Largest.largest, x.nbytes)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        (dict(x=torch.randn(12, 8), axes=(0,), level=3), "level"),
        (dict(x=torch.randn(7, 8), axes=(0,), level=1), "level"),
        (dict(x=torch.randn(8, 8), axes=(0,), level=-1), "level"),
        (dict(x=torch.randn(8, 8), axes=(0,), wavelet="nope"), "wavelet"),
        (dict(x=torch.randn(8, 8), axes=(0,), wavelet="morl"), "wavelet"),
        (dict(x=torch.ones(8, 8, dtype=torch.int64), axes=(0,)), "x"),
        (dict(x=torch.randn(8, 8), axes=(2,)), "axes"),
        (dict(x=torch.randn(8, 8), axes=(0, 0)), "axes"),
        (dict(x=torch.randn(8, 8), axes=()), "axes"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, word):
    with pytest.raises(TransformError, match=f"`{word}`"):
        dwt_approx(**kwargs)


def test_waverec_rejects_mismatched_detail_shape():
    ca = torch.randn(4, 4)
    with pytest.raises(TransformError, match="details"):
        waverec(ca, [{"ad": torch.randn(3, 4)}], axes=(0, 1), wavelet="haar")
    with pytest.raises(TransformError, match="details"):
        waverec(ca, [{"xy": torch.randn(4, 4)}], axes=(0, 1), wavelet="haar")


@pytest.mark.slow
@pytest.mark.parametrize("wavelet", pywt.wavelist(kind="discrete"))
def test_every_discrete_wavelet_matches_pywt(wavelet):
    x = torch.randn(8, 16, 12, dtype=torch.float64)
    ref = _ref(x, wavelet, 2, (0, 1, 2))
    ca, details = wavedec(x, axes=(0, 1, 2), level=2, wavelet=wavelet)
    np.testing.assert_allclose(ca.numpy(), ref[0], atol=1e-9)
    for ours, theirs in zip(details, ref[1:], strict=True):
        for k in theirs:
            np.testing.assert_allclose(ours[k].numpy(), theirs[k], atol=1e-9)
