"""Weight selection, HyperCloning tiling and Net2Net widening."""

from __future__ import annotations

import pytest
import torch

from zoo.errors import TransformError
from zoo.methods import resize
from zoo.transforms import net2net_widen, select_indices, tile, weight_select


@pytest.mark.parametrize(
    ("s", "t", "layer", "expect"),
    [
        (12, 4, False, [0, 3, 6, 9]),
        (12, 6, False, [0, 2, 4, 6, 8, 10]),
        (12, 5, False, [0, 3, 6, 8, 11]),
        (10, 4, False, [0, 3, 6, 9]),
        (768, 1, False, [0]),
        (7, 2, False, [0, 6]),
        (12, 3, True, [0, 1, 2]),
        (12, 5, True, [0, 1, 2, 3, 4]),
    ],
)
def test_select_indices_are_the_documented_ones(s, t, layer, expect):
    assert select_indices(s, t, layer=layer) == expect


@pytest.mark.parametrize(
    "s, t, word",
    [(3, 5, "`t` <= `s`"), (5, -1, "`t`"), (0, 0, "`s`"), (5, 0, "`t`"), (5, 2.5, "`t`")],
)
def test_select_indices_refuses_what_is_no_shrink_naming_the_argument(s, t, word):
    """A grow is no selection (3 -> 5 repeated indices), and a size is at least 1 (5 -> 0
    was a ZeroDivisionError, 5 -> -1 an empty list)."""
    with pytest.raises(TransformError, match=word):
        select_indices(s, t)


def test_weight_select_picks_exactly_those_elements():
    x = torch.arange(12 * 10 * 9, dtype=torch.float32).reshape(12, 10, 9)
    y = weight_select(x, (4, 5, 9), layer_axis=0)
    expect = x[[0, 1, 2, 3]][:, [0, 2, 4, 6, 8]]
    assert torch.equal(y, expect)
    y2 = resize(x, (4, 4, 9), method="weight-selection")  # no layer axis: stride along axis 0
    assert torch.equal(y2, x[[0, 3, 6, 9]][:, select_indices(10, 4)])


def test_tile_preserves_a_linear_layer():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 4, dtype=torch.float64, generator=g)
    b = torch.randn(5, dtype=torch.float64, generator=g)
    x = torch.randn(4, dtype=torch.float64, generator=g)
    w2 = tile(w, (10, 12), fan_in_axes=(1,))
    b2 = tile(b, (10,))
    y2 = w2 @ x.repeat(3) + b2
    torch.testing.assert_close(y2, (w @ x + b).repeat(2))
    # resize(method="hypercloning") is the same operation
    torch.testing.assert_close(resize(w, (10, 12), method="hypercloning", fan_in_axes=(1,)), w2)


def test_tile_stacks_depth():
    x = torch.arange(2 * 3, dtype=torch.float32).reshape(2, 3)
    y = tile(x, (5, 6), fan_in_axes=(1,), layer_axis=0)
    assert torch.equal(y[:, :3] * 2, x[[0, 1, 0, 1, 0]])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_tile_divides_each_element_once_and_leaves_its_input_alone(dtype):
    """Every copy is the source divided by the fan-in multiples, rounded once to the
    source's dtype (the division is done in the compute dtype); the input, whatever its
    dtype, is never changed (tile divides a float copy in place)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, 3, generator=g).to(dtype)
    before = x.clone()
    y = tile(x, (12, 8, 6), fan_in_axes=(1, 2))
    compute = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
    expect = ((x.to(compute) / 2) / 2).to(dtype).repeat(2, 2, 2)
    assert y.dtype == dtype and torch.equal(y, expect)
    assert torch.equal(x, before)


def _mlp(w1, b1, w2, x):
    return w2 @ torch.relu(w1 @ x + b1)


def test_net2net_preserves_a_two_layer_mlp():
    g = torch.Generator().manual_seed(1)
    w1, b1 = (
        torch.randn(6, 4, generator=g, dtype=torch.float64),
        torch.randn(6, generator=g, dtype=torch.float64),
    )
    w2 = torch.randn(3, 6, generator=g, dtype=torch.float64)
    x = torch.randn(4, generator=g, dtype=torch.float64)

    def gen():
        return torch.Generator().manual_seed(7)

    w1n = net2net_widen(w1, (15, 4), generator=gen())
    b1n = net2net_widen(b1, (15,), generator=gen())
    w2n = net2net_widen(w2, (3, 15), fan_in_axes=(1,), generator=gen())
    torch.testing.assert_close(_mlp(w1n, b1n, w2n, x), _mlp(w1, b1, w2, x))
    assert torch.equal(w1n[:6], w1)
    # the extra units are copies, and some unit was copied (not just appended zeros)
    assert all(any(torch.equal(w1n[i], w1[j]) for j in range(6)) for i in range(6, 15))


def test_net2net_is_deterministic_given_the_generator():
    w = torch.randn(4, 8)
    a = net2net_widen(w, (4, 20), generator=torch.Generator().manual_seed(3))
    b = net2net_widen(w, (4, 20), generator=torch.Generator().manual_seed(3))
    c = net2net_widen(w, (4, 20), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(net2net_widen(w, (4, 20)), net2net_widen(w, (4, 20)))


def test_net2net_given_maps_copies_those_units_and_divides_their_readers():
    w = torch.randn(3, 4)
    rows, cols = torch.tensor([0, 1, 2, 1, 1]), torch.tensor([0, 1, 2, 3, 0, 0])
    got = net2net_widen(w, (5, 6), fan_in_axes=(1,), maps=(rows, cols))
    counts = torch.bincount(cols, minlength=4)
    torch.testing.assert_close(got, w[rows][:, cols] / counts[cols])


@pytest.mark.parametrize(
    ("sizes", "heads"),
    [
        ((4, 2, 8, 2), "each group grows"),
        ((4, 2, 8, 4), "groups are copied"),
        ((4, 2, 12, 6), "groups are copied unevenly"),
        ((4, 4, 8, 8), "no grouping"),
        ((4, 1, 6, 1), "one group grows unevenly"),
        ((8, 4, 8, 8), "groups shrink"),
        ((4, 2, 8, 8), "groups shrink as heads grow"),
        ((4, 2, 4, 4), "groups shrink, query heads kept"),
    ],
)
def test_net2net_copies_a_query_head_with_the_key_value_head_that_serves_it(sizes, heads):
    """Query heads are grouped onto key/value heads (grouped-query attention): a copied
    query head must read a copy of the key/value head its source read, or its attention
    changes. Query heads that keep their count are a signal of unchanged size, which no
    method copies: they stay in place, and the key/value heads follow them."""
    from zoo.methods.net2net import CopyMaps

    sh, skv, th, tkv = sizes
    d = 3
    maps = CopyMaps.draw(
        7,
        {"hidden": sh * d, "kv": skv * d},
        {"hidden": th * d, "kv": tkv * d},
        (sh, skv),
        (th, tkv),
    )
    query = maps.query.reshape(th, d)
    kv = maps.kv.reshape(tkv, d)
    assert torch.equal(query % d, torch.arange(d).expand(th, d)), heads  # whole heads
    assert torch.equal(kv % d, torch.arange(d).expand(tkv, d)), heads
    q_heads, kv_heads = (query[:, 0] // d).tolist(), (kv[:, 0] // d).tolist()
    if th // tkv >= sh // skv:
        assert kv_heads[:skv] == list(range(skv)), heads  # the source's own first
    if th == sh:
        assert q_heads == list(range(sh)), heads
    for j, h in enumerate(q_heads):
        assert h // (sh // skv) == kv_heads[j // (th // tkv)], (heads, j)
    assert set(q_heads) == set(range(sh)), heads  # no source head is lost


def test_hypercloning_pairs_each_query_head_with_the_key_value_head_it_read():
    """Under grouped-query attention query head q of H reads key/value head q // (H / K)
    (transformers' repeat_kv). For every whole multiple of query and of key/value heads,
    each target query head copies a source query head whose key/value head is the one
    the target's grouping hands it, and every source query head is copied as many times
    as the heads grow (the fan-in division). Tiling both is kept where it pairs them."""
    from zoo.methods.hypercloning import head_maps

    tiled = 0
    for sh in range(1, 13):
        for skv in (k for k in range(1, sh + 1) if sh % k == 0):
            for a in range(1, 5):
                for b in range(1, 7):
                    th, tkv = a * sh, b * skv
                    if th % tkv:
                        continue
                    maps = head_maps(sh, skv, th, tkv)
                    if maps is None:
                        assert a == b
                        tiled += 1
                        maps = [j % sh for j in range(th)], [m % skv for m in range(tkv)]
                    q, kv = maps
                    for j, h in enumerate(q):
                        assert h // (sh // skv) == kv[j // (th // tkv)], (sh, skv, th, tkv)
                    assert sorted(q) == sorted(list(range(sh)) * a), (sh, skv, th, tkv)
    assert tiled > 0
    assert head_maps(8, 2, 8, 4) == (list(range(8)), [0, 0, 1, 1])  # query heads in place


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda: tile(torch.randn(4, 4), (4, 6)), "shape"),
        (lambda: tile(torch.randn(4, 4), (2, 4)), "shape"),
        (lambda: weight_select(torch.randn(4, 4), (8, 4)), "shape"),
        (lambda: net2net_widen(torch.randn(4, 4), (2, 4)), "shape"),
        (lambda: net2net_widen(torch.randn(4, 4), (6, 4), maps=(None,)), "maps"),
        (lambda: net2net_widen(torch.randn(4, 4), (6, 4), maps=(torch.arange(5), None)), "maps"),
        (lambda: net2net_widen(torch.randn(4, 4), (6, 4), maps=(torch.arange(6), None)), "maps"),
        (lambda: tile(torch.randn(4, 4), (8, 4), fan_in_axes=(3,)), "fan_in_axes"),
        (lambda: tile(torch.randn(4, 4), (8, 4), maps=(None,)), "maps"),
        (lambda: tile(torch.randn(4, 4), (8, 4), maps=(torch.arange(8) % 4 + 1, None)), "maps"),
        # every source unit copied twice, or the fan-in division is not its copy count
        (lambda: tile(torch.randn(4, 4), (8, 4), maps=(torch.arange(8) // 3, None)), "maps"),
        (lambda: weight_select(torch.randn(4, 4), (2, 4), layer_axis=5), "layer_axis"),
    ],
)
def test_bad_arguments(call, word):
    with pytest.raises(TransformError, match=f"`{word}`"):
        call()
