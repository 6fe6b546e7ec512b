"""FRONT learngene: extraction, materialization, depth expansion rule."""

from __future__ import annotations

import math

import pytest
import torch
from livememory import peak_live_bytes

from zoo.errors import TransformError
from zoo.transforms import FrontBlock, front_extract, front_materialize
from zoo.transforms.front import layer_stats


def _stack(layers=4, shape=(6, 10), dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.5, 2.0, layers, dtype=dtype).reshape(-1, 1, 1)
    shift = torch.linspace(-1.0, 1.0, layers, dtype=dtype).reshape(-1, 1, 1)
    return torch.randn(layers, *shape, generator=g, dtype=dtype) * scale + shift


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_keep_one_same_shape_reconstructs_source(dtype, tol):
    x = _stack(dtype=dtype)
    fb = front_extract(x, keep=1.0)
    assert fb.block.shape == x.shape and fb.means.shape == (4,)
    y = front_materialize(fb, x.shape)
    assert y.dtype == dtype
    torch.testing.assert_close(y, x, atol=tol, rtol=0)


def test_stats_are_per_layer_z_scores():
    x = _stack()
    fb = front_extract(x, keep=0.5)
    torch.testing.assert_close(fb.means, x.mean(dim=(1, 2)))
    torch.testing.assert_close(fb.stds, x.std(dim=(1, 2), correction=0))
    assert fb.block.shape == (2, 3, 5)


def test_expanded_depth_layers_are_not_copies():
    x = _stack()
    fb = front_extract(x, keep=(0.25, 1.0, 1.0))  # one depth coefficient: same z per layer
    y = front_materialize(fb, (8, 6, 10))
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.allclose(y[i], y[j]), (i, j)
    # first and last target layers carry the first and last source statistics
    torch.testing.assert_close(y[0].mean(), x[0].mean(), atol=1e-9, rtol=0)
    torch.testing.assert_close(y[-1].mean(), x[-1].mean(), atol=1e-9, rtol=0)


def test_layer_stats_interpolate_over_depth():
    v = torch.tensor([1.0, 2.0, 5.0])
    assert layer_stats(v, 5).tolist() == [1.0, 1.5, 2.0, 3.5, 5.0]
    assert layer_stats(v, 2).tolist() == [1.0, 5.0]
    assert layer_stats(v, 1).tolist() == [2.0]
    out = layer_stats(v, 3)
    out[0] = 9.0
    assert v[0] == 1.0  # no aliasing


def test_amplitude_factor():
    x = _stack()
    fb = front_extract(x, keep=1.0)
    plain = front_materialize(fb, (4, 12, 5))
    amp = front_materialize(fb, (4, 12, 5), amplitude=True)
    means = fb.means.reshape(-1, 1, 1)
    factor = math.sqrt(12 / 6 * 5 / 10)
    torch.testing.assert_close(amp - means, (plain - means) * factor)


def test_layer_axis_none_uses_one_whole_tensor_zscore():
    x = _stack()
    fb = front_extract(x, keep=1.0, layer_axis=None)
    assert fb.means.shape == (1,)
    torch.testing.assert_close(front_materialize(fb, x.shape), x, atol=1e-10, rtol=0)
    assert front_materialize(fb, (7, 3, 3)).shape == (7, 3, 3)


def test_half_precision_is_computed_in_fp32():
    x = _stack(dtype=torch.float32).to(torch.bfloat16)
    fb = front_extract(x, keep=1.0)
    assert fb.block.dtype == torch.float32
    y = front_materialize(fb, x.shape)
    assert y.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda: front_extract(_stack(), keep=0.0), "keep"),
        (lambda: front_extract(_stack(), keep=1.5), "keep"),
        (lambda: front_extract(_stack(), keep=(0.5, 0.5)), "keep"),
        (lambda: front_extract(_stack(), keep=0.5, layer_axis=3), "layer_axis"),
        (lambda: front_materialize(front_extract(_stack(), keep=0.5), (4, 6)), "shape"),
        (lambda: front_materialize(front_extract(_stack(), keep=0.5), (4, 6, 0)), "shape"),
        (lambda: front_materialize("nope", (4, 6, 10)), "block"),
    ],
)
def test_bad_arguments(call, word):
    with pytest.raises(TransformError, match=f"`{word}`"):
        call()


def test_block_is_a_frozen_dataclass():
    fb = front_extract(_stack(), keep=0.5)
    assert isinstance(fb, FrontBlock) and fb.source_shape == (4, 6, 10)
    with pytest.raises(AttributeError):
        fb.block = None  # type: ignore[misc]


def test_layer_stats_refuses_a_depth_no_model_has():
    from zoo.transforms.front import layer_stats

    for bad in (-1, 0, 2.5):
        with pytest.raises(TransformError, match="`target_layers`"):
            layer_stats(torch.tensor([1.0, 3.0]), bad)
    with pytest.raises(TransformError, match="`values`"):
        layer_stats(torch.tensor([]), 3)


def test_a_half_precision_role_is_z_scored_in_one_float32_copy():
    """A 16-bit role is widened once and z-scored in that copy: three float32 copies were
    alive at once (the widened role, its centred copy and the z-scores), 2.8 GB of peak
    memory to extract a 0.84B Llama's FFN role of 0.37 GB. The block is the bits of the
    out-of-place z-score, and a float32 signal given is left as it was."""
    from zoo.transforms.dct import lowpass_coefficients

    x = _stack(layers=16, shape=(32, 24), dtype=torch.float32).to(torch.bfloat16)
    front_extract(x, keep=0.5)  # the DCT matrices, cached, are not the role's copies
    fb, peak = peak_live_bytes(lambda: front_extract(x, keep=0.5), x)
    # The widened copy, then the first low-pass (half of it) and what little follows;
    # the copies made before were three widened copies at once.
    widened = x.numel() * 4
    assert peak < 2.5 * widened, (peak, widened)

    xf = x.float()
    flat = xf.reshape(16, -1)
    z = (xf - flat.mean(dim=1).reshape(-1, 1, 1)) / flat.std(dim=1, correction=0).reshape(-1, 1, 1)
    for axis, m in enumerate((8, 16, 12)):
        z = lowpass_coefficients(z, axis, m)
    assert torch.equal(fb.block, z)

    y = _stack(dtype=torch.float32)
    kept = y.clone()
    front_extract(y, keep=0.5)
    assert torch.equal(y, kept)
