"""resize: the dyadic-plus-bridge rule, rescaling, mixed shapes and errors."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.errors import TransformError
from zoo.methods import resize
from zoo.transforms import TRANSFORM_VERSION, dct_resize, dwt_approx, dyadic_plan, idwt_zero

pytestmark = pytest.mark.filterwarnings("ignore:Level value:UserWarning")


@pytest.mark.parametrize(
    ("s", "t", "plan"),
    [
        (12, 12, (0, 12)),
        (12, 6, (1, 6)),
        (12, 3, (2, 3)),
        (12, 9, (0, 12)),
        (12, 5, (1, 6)),
        (13, 6, (0, 13)),
        (768, 1024, (0, 1024)),
        (768, 2048, (1, 1024)),
        (12, 18, (0, 18)),
        (6, 12, (1, 6)),
        (7, 14, (1, 7)),
        (3, 13, (0, 13)),
    ],
)
def test_dyadic_plan(s, t, plan):
    assert dyadic_plan(s, t) == plan


@pytest.mark.parametrize("s, t, word", [(0, 3, "`s`"), (8, -4, "`t`"), (8, True, "`t`")])
def test_dyadic_plan_refuses_sizes_no_axis_has(s, t, word):
    with pytest.raises(TransformError, match=word):
        dyadic_plan(s, t)


def test_a_size_is_a_whole_number_not_cut_to_one():
    """`(4, 4.5, 6)` is refused, not resized to (4, 4, 6); 4.0 is the size 4."""
    x = torch.ones(4, 4, 6)
    for half in (
        4.5,
        torch.tensor(4.5),
        np.array(4.5),
        "4",
        bytearray(b"4"),
        torch.ones(2),
        torch.tensor([4.0]),
        np.bool_(True),
        torch.tensor(True),
        np.complex64(4),
    ):
        with pytest.raises(TransformError, match="`shape` must be a sequence of ints"):
            resize(x, (4, half, 6), method="dct")
    for four in (4.0, torch.tensor(4), np.int64(4)):
        assert resize(x, (4, four, 6), method="dct").shape == (4, 4, 6)


@pytest.mark.parametrize("wavelet", ["haar", "db2", "bior6.8"])
def test_dyadic_ratios_equal_the_plain_dwt(wavelet):
    x = torch.randn(8, 16, 32, dtype=torch.float64)
    down = resize(x, (4, 4, 32), wavelet=wavelet)
    ref = pywt.wavedecn(x.numpy(), wavelet, mode="periodization", level=1, axes=(0,))[0]
    ref = pywt.wavedecn(ref, wavelet, mode="periodization", level=2, axes=(1,))[0]
    np.testing.assert_allclose(down.numpy(), ref, atol=1e-10)
    up = resize(x, (16, 32, 32), wavelet=wavelet)
    torch.testing.assert_close(up, idwt_zero(x, axes=(0, 1), wavelet=wavelet))


def test_non_dyadic_uses_dwt_levels_then_dct_bridge():
    x = torch.randn(12, 20, dtype=torch.float64)
    got = resize(x, (5, 20), wavelet="db2")  # 12 -(dwt)-> 6 -(dct)-> 5
    expect = dct_resize(dwt_approx(x, axes=(0,), wavelet="db2"), (5, 20))
    torch.testing.assert_close(got, expect)
    got_up = resize(got, (12, 20), wavelet="db2")  # 5 -(dct)-> 6 -(dwt)-> 12
    torch.testing.assert_close(
        got_up, idwt_zero(dct_resize(got, (6, 20)), axes=(0,), wavelet="db2")
    )


@pytest.mark.parametrize("wavelet", ["haar", "db2", "sym8"])
@pytest.mark.parametrize(
    ("src", "dst"), [((12, 768), (9, 1024)), ((12, 40), (5, 20)), ((13, 7), (6, 14))]
)
def test_grow_is_adjoint_of_shrink_for_orthogonal_wavelets(wavelet, src, dst):
    # shrink S->T and grow T->S are adjoint, so grow(shrink(x)) is an orthogonal projection
    g = torch.Generator().manual_seed(0)
    small = tuple(min(a, b) for a, b in zip(src, dst, strict=True))
    x = torch.randn(src, generator=g, dtype=torch.float64)
    y = torch.randn(small, generator=g, dtype=torch.float64)
    lhs = (resize(x, small, wavelet=wavelet) * y).sum()
    rhs = (x * resize(y, src, wavelet=wavelet)).sum()
    torch.testing.assert_close(lhs, rhs, atol=1e-9, rtol=1e-9)

    def proj(v):
        return resize(resize(v, small, wavelet=wavelet), src, wavelet=wavelet)

    p = proj(x)
    torch.testing.assert_close(proj(p), p, atol=1e-9, rtol=0)


def test_biorthogonal_down_up_is_still_idempotent():
    x = torch.randn(12, 24, dtype=torch.float64)

    def proj(v):
        return resize(resize(v, (5, 9), wavelet="bior6.8"), (12, 24), wavelet="bior6.8")

    p = proj(x)
    torch.testing.assert_close(proj(p), p, atol=1e-9, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=3),
    st.data(),
    st.sampled_from(["dwt", "dct"]),
    st.sampled_from(["haar", "db2", "coif3", "bior6.8"]),
)
def test_any_positive_target_shape(src, data, method, wavelet):
    dst = [data.draw(st.integers(1, 40)) for _ in src]
    x = torch.randn(src)
    y = resize(x, dst, method=method, wavelet=wavelet)
    assert list(y.shape) == dst and y.dtype == x.dtype and torch.isfinite(y).all()
    assert torch.equal(y, resize(x, dst, method=method, wavelet=wavelet))  # deterministic


def test_equal_axes_untouched():
    x = torch.randn(6, 10, 5)
    y = resize(x, (6, 20, 5), wavelet="db2")
    torch.testing.assert_close(y, idwt_zero(x, axes=(1,), wavelet="db2"))
    assert torch.equal(resize(x, x.shape), x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_round_trip(dtype):
    x = torch.randn(12, 24).to(dtype)
    y = resize(x, (9, 32), wavelet="db2")
    assert y.dtype == dtype
    ref = resize(x.double(), (9, 32), wavelet="db2")
    tol = {torch.float16: 5e-3, torch.bfloat16: 5e-2, torch.float32: 1e-5, torch.float64: 1e-12}[
        dtype
    ]
    torch.testing.assert_close(y.double(), ref, atol=tol * 4, rtol=0)


def test_rescale_std_and_fan():
    x = torch.randn(4, 16, 8, dtype=torch.float64) * 0.02
    raw = resize(x, (8, 32, 16))
    assert abs(raw.std(correction=0) / x.std(correction=0) - 2**-1.5) < 0.2  # shrinks
    std = resize(x, (8, 32, 16), rescale="std")
    torch.testing.assert_close(std.std(correction=0), x.std(correction=0))
    torch.testing.assert_close(std, raw * (x.std(correction=0) / raw.std(correction=0)))
    fan = resize(x, (8, 32, 16), rescale="fan", fan_in_axes=(2,))
    torch.testing.assert_close(fan, std / 2)
    sqrt = resize(x, (8, 32, 16), rescale="fan-sqrt", fan_in_axes=(2,))
    torch.testing.assert_close(sqrt, std / 2**0.5)
    shrink = resize(x, (2, 8, 4), rescale="fan-sqrt", fan_in_axes=(1, 2))
    torch.testing.assert_close(shrink.std(correction=0), x.std(correction=0) * 2)  # 1/sqrt(1/4)
    ref = resize(x, (8, 32, 16), rescale="fan", fan_in_axes=(1, 2), reference_std=0.5)
    torch.testing.assert_close(ref.std(correction=0), torch.tensor(0.5 / 4, dtype=torch.float64))
    # hypercloning already divides by the fan-in multiplier, so "fan" agrees with "none"
    t_none = resize(x, (4, 32, 16), method="hypercloning", fan_in_axes=(2,))
    t_fan = resize(x, (4, 32, 16), method="hypercloning", fan_in_axes=(2,), rescale="fan")
    torch.testing.assert_close(t_fan, t_none)


def test_mixed_grow_and_shrink_bert_like():
    x = torch.randn(12, 96, 48)
    y = resize(x, (6, 128, 24), wavelet="bior6.8")
    assert y.shape == (6, 128, 24)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        (dict(shape=(4, 0)), "shape"),
        (dict(shape=(4, -2)), "shape"),
        (dict(shape=(4,)), "shape"),
        (dict(shape=(4, 4), method="wavelet"), "method"),
        (dict(shape=(4, 4), rescale="l2"), "rescale"),
        (dict(shape=(4, 4), wavelet="nope"), "wavelet"),
        (dict(shape=(4, 4), reference_std=-1.0), "reference_std"),
        (dict(shape=(4, 4), reference_std=float("nan")), "reference_std"),
        (dict(shape=(4, 4), fan_in_axes=(2,)), "fan_in_axes"),
        (dict(shape=(4, 4), layer_axis=2), "layer_axis"),
        (dict(shape=(16, 8), method="weight-selection"), "shape"),
        (dict(shape=(4, 12), method="hypercloning"), "shape"),
        (dict(shape=(4, 4), method="weight-selection", rescale="exact"), "rescale"),
    ],
)
def test_bad_arguments(kwargs, word):
    with pytest.raises(TransformError, match=f"`{word}`"):
        resize(torch.randn(8, 8), **kwargs)


def test_non_float_input_rejected():
    with pytest.raises(TransformError, match="`x`"):
        resize(torch.ones(8, 8, dtype=torch.int64), (4, 4))


def test_version_is_a_string():
    assert isinstance(TRANSFORM_VERSION, str) and TRANSFORM_VERSION


@pytest.mark.parametrize("rescale", ["none", "std", "fan", "fan-sqrt", "exact"])
def test_rescale_like_matches_resize_on_a_precomputed_result(rescale):
    from zoo.methods.amplitude import rescale_like

    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 8, 16, generator=g)
    shape = (2, 4, 8)
    ref = float(x.std(correction=0))
    want = resize(x, shape, rescale=rescale, reference_std=ref, fan_in_axes=(2,))
    raw = resize(x, shape, rescale="none")
    got = rescale_like(raw, x.shape, rescale=rescale, reference_std=ref, fan_in_axes=(2,))
    torch.testing.assert_close(got, want)
    if rescale != "none":
        assert not torch.allclose(got, raw)


def test_exact_haar_growth_keeps_a_linear_layers_function():
    """rescale="exact": haar with zero details repeats every unit; with the fan-in axis
    split, a Linear fed the grown (repeated) input returns the grown output: checked
    against torch's own linear on the source weights."""
    g = torch.Generator().manual_seed(0)
    w, b, x = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((6, 8), (6,), (8,)))
    for factor in (2, 4):
        w2 = resize(w, (6 * factor, 8 * factor), wavelet="haar", rescale="exact", fan_in_axes=(1,))
        b2 = resize(b, (6 * factor,), wavelet="haar", rescale="exact")
        want = torch.nn.functional.linear(x, w, b).repeat_interleave(factor)
        got = torch.nn.functional.linear(x.repeat_interleave(factor), w2, b2)
        torch.testing.assert_close(got, want)
        # Raw coefficients keep a matrix whose two axes grow alike (the gains cancel),
        # not its bias, nor anything with one growing axis (embeddings, norms).
        raw_w = resize(w, (6 * factor, 8 * factor), wavelet="haar", fan_in_axes=(1,))
        torch.testing.assert_close(raw_w, w2)
        raw_b = resize(b, (6 * factor,), wavelet="haar")
        got_raw = torch.nn.functional.linear(x.repeat_interleave(factor), raw_w, raw_b)
        assert not torch.allclose(got_raw, want)


def test_exact_haar_shrink_merges_equal_units_into_one():
    """Shrinking a layer whose units come in equal pairs (outputs repeated, inputs split
    between the copies, so it computes u @ x repeated) gives back u: means along outputs,
    sums along inputs."""
    g = torch.Generator().manual_seed(1)
    u = torch.randn(5, 4, 3, generator=g, dtype=torch.float64)  # (layers, out, in)
    big = u.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2) / 2
    for wavelet in ("haar",):
        got = resize(big, (5, 4, 3), wavelet=wavelet, rescale="exact", fan_in_axes=(2,))
        torch.testing.assert_close(got, u)
    x = torch.randn(3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(big[0] @ x.repeat_interleave(2), (u[0] @ x).repeat_interleave(2))


@pytest.mark.parametrize("method", ["dwt", "dct"])
@pytest.mark.parametrize(("src", "dst"), [((8, 16), (4, 8)), ((4, 6), (8, 12)), ((12, 8), (5, 8))])
def test_exact_gain_turns_any_constant_into_itself(method, src, dst):
    """Whatever the ratio (whole wavelet levels or a DCT bridge), a constant weight stays
    that constant on output axes and is spread over the inputs on the fan-in axis, so its
    row sums are kept."""
    from zoo.methods.amplitude import exact_gain

    x = torch.full(src, 0.3, dtype=torch.float64)
    y = resize(x, dst, method=method, rescale="exact", fan_in_axes=(1,))
    torch.testing.assert_close(y, torch.full(dst, 0.3 * src[1] / dst[1], dtype=torch.float64))
    assert exact_gain(src, src, (1,)) == 1.0
