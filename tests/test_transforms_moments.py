"""A signal's mean and std in float64, a block at a time (zoo/transforms/moments.py),
checked against exactly rounded sums (math.fsum) and against torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoo.derive import signal_stats
from zoo.transforms import moments as mom


def _exact(x: torch.Tensor, correction: int) -> tuple[float, float]:
    """Mean and std from correctly rounded sums of the float64 values."""
    v = x.double().reshape(-1).numpy()
    mean = math.fsum(v) / v.size
    m2 = math.fsum((np.asarray(v) - mean) ** 2)
    return mean, math.sqrt(m2 / (v.size - correction))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("offset", [0.0, 1.0])  # 1.0: a norm gain, mean far from its spread
def test_blocked_moments_agree_with_exact_sums(dtype, offset):
    g = torch.Generator().manual_seed(0)
    # Several blocks and a short last one, so the merge of blocks is exercised.
    x = (offset + 0.02 * torch.randn(3 * mom.BLOCK + 1234, generator=g)).to(dtype)
    for correction in (0, 1):
        mean, std = mom.mean_std(x, correction=correction)
        want_mean, want_std = _exact(x, correction)
        assert mean == pytest.approx(want_mean, rel=1e-13, abs=1e-17)
        assert std == pytest.approx(want_std, rel=1e-12)
    assert mom.moments(x)[0] == x.numel()


def test_moments_leave_a_float64_input_unchanged():
    x = torch.randn(2 * mom.BLOCK + 7, dtype=torch.float64)
    before = x.clone()
    mom.mean_std(x)
    assert torch.equal(x, before)


def test_signal_stats_rules_agree_to_rounding_and_edge_cases_give_zero():
    x = torch.randn(4, 300, 512, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    blocked, whole = signal_stats(x), signal_stats(x, whole=True)
    ref = (float(x.double().mean()), float(x.double().std()))
    for got in (blocked, whole):
        assert got == pytest.approx(ref, rel=1e-10)
    assert signal_stats(torch.tensor([3.0])) == (3.0, 0.0)
    assert signal_stats(torch.tensor([float("nan"), 1.0])) == (0.0, 0.0)
    assert mom.mean_std(torch.empty(0)) == (0.0, 0.0)


def test_moments_handed_over_in_pieces_give_the_bits_of_the_whole():
    """A signal derived a layer at a time adds its layers in turn; pieces that end inside
    a block (and pieces shorter than one) give exactly the numbers of the whole."""
    x = torch.randn(3 * mom.BLOCK + 999, generator=torch.Generator().manual_seed(2))
    whole = mom.moments(x)
    for sizes in ([mom.BLOCK // 3] * 10, [7, mom.BLOCK, 2 * mom.BLOCK + 5]):
        acc = mom.Moments()
        start = 0
        for size in sizes:
            acc.add(x[start : start + size])
            start += size
        acc.add(x[start:])  # the rest
        assert acc.result() == whole, sizes
    assert mom.Moments().result() == (0, 0.0, 0.0)
