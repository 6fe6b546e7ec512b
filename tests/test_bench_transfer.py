"""The transfer benchmark: a micro run's report, and the analysis on synthetic curves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("matplotlib")

from zoo.bench import transfer  # noqa: E402


def test_steps_to_reach_interpolates_between_eval_points():
    steps = [0, 10, 20, 30]
    losses = [5.0, 4.0, 3.0, 2.5]
    assert transfer.steps_to_reach(steps, losses, 5.0) == 0.0
    assert transfer.steps_to_reach(steps, losses, 4.0) == 10.0
    assert transfer.steps_to_reach(steps, losses, 3.5) == pytest.approx(15.0)
    assert transfer.steps_to_reach(steps, losses, 2.75) == pytest.approx(25.0)
    assert transfer.steps_to_reach(steps, losses, 2.0) is None


def test_steps_to_reach_counts_from_where_the_curve_stays_below():
    """A warm start's dip in warmup, then a rise at the peak learning rate, is not
    reaching the target: the step counts from the last crossing."""
    steps = [0, 50, 100, 150, 200]
    losses = [3.0, 1.8, 2.1, 1.9, 1.7]
    assert transfer.first_crossing(steps, losses, 1.85) == pytest.approx(50 * 1.15 / 1.2)
    assert transfer.steps_to_reach(steps, losses, 1.85) == pytest.approx(150 + 50 * 0.05 / 0.2)
    assert transfer.steps_to_reach(steps, losses, 2.2) == pytest.approx(50 * 0.8 / 1.2)
    assert transfer.steps_to_reach([0, 50], [1.9, 2.1], 2.0) is None  # ends above
    nan = float("nan")
    assert transfer.steps_to_reach([0, 50, 100], [3.0, 1.5, nan], 2.0) is None  # diverged
    assert transfer.steps_to_reach([0, 50], [nan, nan], 2.0) is None
    assert transfer.steps_to_reach([0, 50], [3.0, 1.0], nan) is None


def test_tie_when_difference_within_seed_spread():
    assert transfer.verdict(2.00, 0.02, 2.01, 0.01) == "tie"
    assert transfer.verdict(2.00, 0.005, 2.05, 0.01) == "win"
    assert transfer.verdict(2.10, 0.005, 2.05, 0.01) == "loss"
    assert transfer.spread([1.0]) == 0.0
    assert transfer.spread([1.0, 3.0]) == pytest.approx(2**0.5)


def test_summary_on_synthetic_curves():
    grid = [0, 10, 20, 30, 40]

    def run(losses):
        return {"steps": grid, "loss": losses, "wall_s": 1.0}

    runs = {
        "scratch": [run([5, 4, 3.5, 3.2, 3.0]), run([5, 4, 3.5, 3.2, 3.0])],
        "weight-selection": [run([4, 3, 2.8, 2.7, 2.6]), run([4, 3, 2.8, 2.7, 2.6])],
        "dwt:db2:none": [run([3.5, 2.8, 2.6, 2.5, 2.4]), run([3.5, 2.8, 2.6, 2.5, 2.4])],
    }
    specs = {n: transfer.parse_method(n) for n in runs}
    s = transfer.summarize(runs, specs, steps=40, flops=100.0)
    assert s["best_baseline"] == "weight-selection"
    m = s["methods"]["dwt:db2:none"]
    assert m["steps_to_scratch"] == pytest.approx(10 * (3.5 - 3.0) / (3.5 - 2.8))
    assert m["steps_to_baseline"] == pytest.approx(20.0)
    assert m["saved_vs_baseline"] == pytest.approx(0.5)
    assert m["flops_saved_vs_scratch"] == pytest.approx((40 - m["steps_to_scratch"]) * 100)
    assert m["verdict_vs_baseline"] == "win"
    assert s["methods"]["scratch"]["steps_to_scratch"] == 40.0
    t = transfer.check_targets(s, "dwt:db2:none")
    assert t["beats_baseline_beyond_spread"] and t["reaches_baseline_within_70pct"]
    assert t["all_met"]


def test_parse_method_names():
    assert transfer.parse_method("dwt:db2:fan").wavelet == "db2"
    assert transfer.parse_method("dwt").name == "dwt:haar:none"
    nm = transfer.parse_method("dwt:haar:none+nm")
    assert nm.norm == "match" and nm.rescale == "none"
    assert transfer.parse_method("weight-selection+nd").norm == "dwt"
    assert transfer.parse_method("weight-selection").baseline
    rd = transfer.parse_method("dwt:db2:none+nm+rd")
    assert rd.residual_depth and rd.norm == "match" and rd.name == "dwt:db2:none+nm+rd"
    assert transfer.parse_method("hypercloning+rd").baseline
    with pytest.raises(ValueError):
        transfer.parse_method("magic")
    with pytest.raises(ValueError):
        transfer.parse_method("scratch+rd")
    assert transfer.parse_method("hypercloning+dz").depth == "identity"
    dc = transfer.parse_method("dwt:db2:fan+dc+rd")
    assert dc.depth == "copies" and dc.residual_depth and dc.name == "dwt:db2:fan+dc+rd"
    assert transfer.parse_method("weight-selection+nd+ds").depth == "stack"
    hd = transfer.parse_method("dwt:db2:fan+nm+hd+eb")
    assert hd.head_aware and hd.baseline_embeddings and hd.name == "dwt:db2:fan+nm+hd+eb"
    for bad in ("weight-selection+hd", "dwt:db2:fan+hd+hd", "dct:none+hd"):
        with pytest.raises(ValueError):
            transfer.parse_method(bad)
    eb = transfer.parse_method("dwt:db2:fan+nm+eb+ds")
    assert eb.baseline_embeddings and eb.norm == "match" and eb.depth == "stack"
    assert not transfer.parse_method("dwt:db2:fan").baseline_embeddings
    for bad in (
        "scratch+dc",
        "dwt:db2:fan+dc+ds",
        "dwt:db2:fan+hd+dz",
        "dwt:db2:fan+nd+dz",
        "dwt:db2:fan+rd+dc",
        "scratch+eb",
        "dwt:db2:fan+eb+eb",
        "dwt:db2:fan+ds+eb",
    ):
        with pytest.raises(ValueError):
            transfer.parse_method(bad)
    so = transfer.parse_method("weight-selection+nd+so")
    assert so.order == "similar" and so.norm == "dwt" and not so.baseline  # zoo's variant
    assert transfer.parse_method("dwt:db2:none+nm+dz+so").depth == "identity"
    bad_so = ("scratch+so", "dwt:db2:fan+so+so", "dwt:db2:fan+so+nm", "dwt:db2:fan+hd+so")
    bad_so += ("weight-selection+so+eb", "dwt:db2:fan+so+hd", "dwt:db2:fan+so+dz")
    bad_so += ("dwt:db2:fan+sd+so", "scratch+sd", "dwt:db2:fan+sd+nm")
    sd = transfer.parse_method("dwt:db2:fan+dz+sd")
    assert sd.order == "dissimilar" and sd.depth == "identity" and sd.name == "dwt:db2:fan+dz+sd"
    for bad in bad_so:
        with pytest.raises(ValueError):
            transfer.parse_method(bad)


@pytest.mark.parametrize("rule", ["copies", "stack"])
def test_depth_rules_copy_stack_and_average_layers(rule):
    """+dc / +ds set the depth by a fixed rule; checked per HF tensor name here."""
    import transformers

    def model(layers):
        cfg = transformers.GPT2Config(n_layer=layers, n_embd=32, n_head=2, vocab_size=50)
        return transformers.GPT2LMHeadModel(cfg)

    src = model(2)
    state = {k: v.detach().clone() for k, v in src.state_dict().items()}
    grown, cfg = transfer.depth_by_rule("gpt2", state, src.config.to_dict(), 4, rule)
    assert cfg["n_layer"] == 4
    for name, value in grown.items():
        parts = name.split(".")
        if parts[:2] != ["transformer", "h"]:
            assert torch.equal(value, state[name]), name
            continue
        i = int(parts[2])
        j = i // 2 if rule == "copies" else i % 2
        assert torch.equal(value, state[".".join([*parts[:2], str(j), *parts[3:]])]), name
    back, cfg = transfer.depth_by_rule("gpt2", grown, cfg, 2, rule)
    assert cfg["n_layer"] == 2
    for name, value in back.items():  # a mean of two copies is the layer itself
        assert torch.equal(value, state[name]), name
    one, _ = transfer.depth_by_rule("gpt2", state, src.config.to_dict(), 1, rule)
    w = "transformer.h.{}.attn.c_attn.weight"
    want = state[w.format(0)]
    if rule == "copies":
        want = (state[w.format(0)] + state[w.format(1)]) / 2
    torch.testing.assert_close(one[w.format(0)], want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="integer depth ratio"):
        transfer.depth_by_rule("gpt2", state, src.config.to_dict(), 3, rule)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_identity_depth_rule_preserves_a_pre_ln_models_function(family):
    """+dz: every layer repeated in place, the repeats' residual writers zeroed. For a
    pre-LN model the deeper one computes the same logits (checked with transformers)."""
    import transformers

    def model(layers):
        if family == "gpt2":
            cfg = transformers.GPT2Config(n_layer=layers, n_embd=32, n_head=2, vocab_size=50)
            return transformers.GPT2LMHeadModel(cfg).eval()
        cfg = transformers.LlamaConfig(**transfer.source_config("llama", layers, 64, 16))
        return transformers.LlamaForCausalLM(cfg).eval()

    torch.manual_seed(0)
    src = model(2)
    state = {k: v.detach().clone() for k, v in src.state_dict().items()}
    # Non-zero biases everywhere, so a bias left in a repeat would show.
    for k, v in state.items():
        if k.endswith("bias"):
            v.normal_(0, 0.1)
    src.load_state_dict(state)
    grown, _ = transfer.depth_by_rule(family, state, src.config.to_dict(), 4, "identity")
    deep = model(4)
    deep.load_state_dict(grown)
    zeroed = {k for k, v in grown.items() if v.abs().max() == 0}
    writers = transfer.RESIDUAL_WRITERS[family]
    assert zeroed and all(int(writers.search("." + k).group(1)) % 2 == 1 for k in zeroed)
    ids = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        want, got = src(ids).logits, deep(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    copies, _ = transfer.depth_by_rule(family, state, src.config.to_dict(), 4, "copies")
    with torch.no_grad():
        deep.load_state_dict(copies)
        assert not torch.allclose(deep(ids).logits, want, atol=1e-3)  # copies alone do not
    with pytest.raises(ValueError, match="grows"):
        transfer.depth_by_rule(family, state, src.config.to_dict(), 1, "identity")


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_residual_depth_scaling_touches_exactly_the_residual_writers(family):
    """+rd divides the matrices whose output is added to the residual stream, and their
    biases, by the depth ratio; nothing else changes."""
    import transformers

    def model(layers):
        if family == "gpt2":
            cfg = transformers.GPT2Config(n_layer=layers, n_embd=32, n_head=2, vocab_size=50)
            return transformers.GPT2LMHeadModel(cfg)
        if family == "llama":
            cfg = transformers.LlamaConfig(**transfer.source_config("llama", layers, 64, 16))
            return transformers.LlamaForCausalLM(cfg)
        cfg = transformers.BertConfig(
            num_hidden_layers=layers,
            hidden_size=32,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=50,
        )
        return transformers.BertForMaskedLM(cfg)

    src, tgt = model(2), model(4)
    state = tgt.state_dict()
    out = transfer.residual_depth_scaled(family, state, tgt.config.to_dict(), src.config.to_dict())
    writers = {
        "gpt2": ("attn.c_proj.", "mlp.c_proj."),
        "bert": ("attention.output.dense.", "output.dense."),
        "llama": ("self_attn.o_proj.", "mlp.down_proj."),
    }[family]
    scaled = {k for k in state if not torch.equal(out[k], state[k])}
    expected = {
        k
        for k in state
        if any(w in k for w in writers)
        and "LayerNorm" not in k
        and state[k].abs().sum() > 0  # zero biases stay zero either way
    }
    assert scaled == expected and len(expected) > 0
    for k in scaled:
        torch.testing.assert_close(out[k], state[k] / 2)


def _initialized(tmp_path, folder, family, requests):
    """(state, config) per (method, target size), made by transfer.initialize from the
    checkpoint in ``folder`` registered in a fresh registry."""
    import zoo
    from zoo.api import tensors as tio

    reg = zoo.connect(home=tmp_path / "home")
    try:
        src = reg.import_checkpoint(folder).name
        info = reg.show(src)
        source_state = (info.config, tio.load_tensors(reg.store, info.tensors))
        out = []
        for method, size in requests:
            state, config, _ = transfer.initialize(
                reg,
                family,
                src,
                transfer.parse_method(method),
                size,
                seed=0,
                dct_keep=0.5,
                source_state=source_state,
            )
            out.append((state, config))
        return out
    finally:
        reg.close()


EMBEDDINGS = {
    "gpt2": {"transformer.wte.weight", "transformer.wpe.weight"},
    "bert": {
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
    },
}


@pytest.mark.parametrize(
    ("family", "target", "base_size"),
    [("gpt2", (8, 64), (8, 64)), ("bert", (2, 16), (2, 16)), ("gpt2", (2, 64), (4, 64))],
)
def test_baseline_embeddings_swap_exactly_the_embedding_tables(
    family, target, base_size, tmp_path, tiny_dir
):
    """+eb: the embedding tables are the direction's baseline's (hypercloning to grow,
    weight selection to shrink), materialized separately; every other tensor is the
    method's own. Checked per HF tensor name. The baseline is made at the source's depth
    (embeddings have none), so depth and width may move in opposite directions; where the
    baseline can be made at the full target, its embeddings are the same."""
    baseline = "hypercloning" if target[1] > 32 else "weight-selection"
    (state, _), (own, _), (base, _) = _initialized(
        tmp_path,
        tiny_dir(family),
        family,
        [("dwt:db2:fan+eb", target), ("dwt:db2:fan", target), (baseline, base_size)],
    )
    assert set(state) == set(own)
    assert EMBEDDINGS[family] <= set(state)
    for name, value in state.items():
        want = base[name] if name in EMBEDDINGS[family] else own[name]
        assert torch.equal(value, want), name
    for name in EMBEDDINGS[family]:  # the swap is visible: the two methods differ there
        assert not torch.equal(base[name], own[name]), name


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_similar_order_suffix_takes_norms_in_the_methods_order(family, tmp_path, tiny_dir):
    """+so is zoo's order="similar". At L2S with +nd the norms come from the source in the
    order the method saw (else they would belong to other units); at the source's size,
    weight selection in similar order is the reordered source, norms included."""
    import zoo
    from zoo.api import tensors as tio

    (small, _), (small_own, small_config), (same, _) = _initialized(
        tmp_path,
        tiny_dir(family),
        family,
        [
            ("weight-selection+nd+so", (2, 16)),
            ("weight-selection+so", (2, 16)),
            ("weight-selection+so", (4, 32)),
        ],
    )
    reg = zoo.connect(home=tmp_path / "home")
    info = reg.show(reg.list()[0].name)
    stored = (info.config, tio.load_tensors(reg.store, info.tensors))
    config, reordered = transfer.in_order(family, stored, "similar")
    assert set(same) == set(reordered)
    for name, value in reordered.items():
        assert torch.equal(same[name], value), name
    assert any(not torch.equal(stored[1][n], v) for n, v in reordered.items())
    # +nd resizes the reordered source's norms by raw haar DWT; +so alone keeps the
    # selected units' own norm values.
    want = transfer.shared_norms(family, small_own, small_config, (config, reordered), "dwt")
    assert set(want) == set(small)
    for name, value in want.items():
        assert torch.equal(small[name], value), name
    assert any(not torch.equal(small[n], small_own[n]) for n in small)  # norms did change


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_head_aware_attention_keeps_heads_whole(family, tmp_path, tiny_dir):
    """+hd with raw haar, 4x32 (4 heads of 8) -> 8x64 (8 heads of 8): each target head is
    a whole source head, so target[l, h, :, j] = source[l // 2, h // 2, :, j // 2] / 2**1.5
    (haar synthesis with zero details repeats each coefficient over its cell, scaled by
    1/sqrt(2) per doubled axis: layers, heads, input hidden). Checked by indexing; the
    flat transform does not have this property, and the non-attention tensors are the
    method's own."""
    from safetensors.torch import load_file

    from zoo.families import get_family

    (hd, config), (flat, _) = _initialized(
        tmp_path,
        tiny_dir(family),
        family,
        [("dwt:haar:none+hd", (8, 64)), ("dwt:haar:none", (8, 64))],
    )
    fam = get_family(family)
    source = json.loads((tiny_dir(family) / "config.json").read_text())
    s = fam.to_signals(load_file(tiny_dir(family) / "model.safetensors"), source)
    t = fam.to_signals(hd, config)
    f = fam.to_signals(flat, config)
    q_src = s["attn.q.weight"].tensor.reshape(4, 4, 8, 32)
    q_hd = t["attn.q.weight"].tensor.reshape(8, 8, 8, 64)
    want = q_src[:, :, :, :].repeat_interleave(2, 0).repeat_interleave(2, 1)
    want = want.repeat_interleave(2, 3) / 2**1.5
    torch.testing.assert_close(q_hd, want, rtol=1e-5, atol=1e-6)
    q_flat = f["attn.q.weight"].tensor.reshape(8, 8, 8, 64)
    assert not torch.allclose(q_flat, want, atol=1e-4)
    o_src = s["attn.out.weight"].tensor.reshape(4, 32, 4, 8)  # (layers, out, heads, d)
    o_hd = t["attn.out.weight"].tensor.reshape(8, 64, 8, 8)
    want = o_src.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2)
    torch.testing.assert_close(o_hd, want / 2**1.5, rtol=1e-5, atol=1e-6)
    for key in t:
        if key not in transfer.HEAD_AXES:
            assert torch.equal(t[key].tensor, f[key].tensor), key


def test_micro_run_report(tmp_path, capsys):
    torch.set_num_threads(1)
    report = transfer.run_transfer(
        "gpt2",
        "l2s",
        "2x64",
        "1x32",
        methods=["scratch", "dwt:db2:none"],
        seeds=[0, 0],
        steps=10,
        source_steps=10,
        batch=2,
        seq=16,
        val_windows=4,
        eval_every=5,
        max_bytes=2_000_000,
        home=tmp_path / "home",
        out_dir=tmp_path / "out",
        progress=False,
    )
    data = json.loads((tmp_path / "out" / "transfer-gpt2-l2s.json").read_text())
    assert (tmp_path / "out" / "transfer-gpt2-l2s.png").stat().st_size > 0
    assert data["partial"] is False and set(data["methods"]) == {"scratch", "dwt:db2:none"}
    scratch, dwt = report["methods"]["scratch"], report["methods"]["dwt:db2:none"]
    # Same seed, same batches: the two scratch runs are identical, spread zero.
    assert scratch["final_spread"] == 0.0 and scratch["curve_std"] == [0.0] * 3
    assert scratch["curve_steps"] == [0, 5, 10]
    # A transfer starts somewhere else than scratch.
    assert abs(dwt["loss0_mean"] - scratch["loss0_mean"]) > 1e-3
    assert dwt["verdict_vs_scratch"] in ("win", "tie", "loss")
    assert report["machine"]["torch"] == torch.__version__
    assert report["source"]["trained_here"] and report["flops_per_step"] > 0
    # A saved report rescored with the same rules is unchanged.
    again = transfer.rescore(json.loads(json.dumps(data)))
    assert again["methods"] == data["methods"] and again["targets"] == data["targets"]
    # Without a bar of its own, nothing else draws one either (transformers' shard bar).
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
@pytest.mark.parametrize("direction", ["l2s", "s2l"])
@pytest.mark.parametrize("size", ["2x32", "4x128", "3x96", "1x64", "2x48"])
def test_the_default_target_is_a_size_zoo_builds_from_the_source(family, direction, size):
    """Half or double on both axes, but never a width between whole heads: a 2x32 source
    (one head of 32) shrinks to 1x32, not to 1x16, which zoo refuses (head_dim is kept)."""
    from zoo.bench.transfer.models import source_config
    from zoo.bench.transfer.run import default_target
    from zoo.families import get_family
    from zoo.families.base import TargetSize

    layers, hidden = transfer.parse_size(size)
    config = source_config(family, layers, hidden, seq=16)
    heads = config.get("num_attention_heads") or config["n_head"]
    target = default_target((layers, hidden), direction, hidden // heads)
    grows = direction == "s2l"
    assert (target[0] > layers or target[1] > hidden) == grows, target
    assert (target[0] < layers or target[1] < hidden) != grows, target
    built = get_family(family).target_config(config, TargetSize(*target))
    assert get_family(family).axis_sizes(built)["hidden"] == target[1]
    if size == "2x32" and direction == "l2s":
        assert target == (1, 32)


def test_recipe_norm_match_is_one_rule_and_default_unchanged():
    from zoo.derive import Recipe, derive_signal, signal_stats
    from zoo.families.base import SignalSpec

    assert "norm" not in Recipe("dwt", "haar").to_json()
    assert Recipe("dwt", "haar", norm="match").to_json()["norm"] == "match"
    gains = 1.0 + 0.1 * torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    spec = SignalSpec(("layers", "hidden"), "norm_weight")
    ref = signal_stats(gains)
    raw = derive_signal(gains, spec, (2, 4), Recipe("dwt", "haar"), reference=ref)
    assert float(raw.mean()) == pytest.approx(2 * float(gains.mean()), rel=1e-5)  # raw: x2
    for method in ("dwt", "weight-selection"):
        y = derive_signal(gains, spec, (2, 4), Recipe(method, norm="match"), reference=ref)
        assert float(y.mean()) == pytest.approx(ref[0], abs=1e-5)
        # Matched over the population on both sides (amplitude version 4).
        population = float(gains.double().std(correction=0))
        assert float(y.double().std(correction=0)) == pytest.approx(population, rel=1e-4)


def test_defaults_table_covers_every_family_and_direction():
    from zoo.defaults import DEFAULTS, default_recipe, direction_of
    from zoo.derive import DEPTHS, NORMS
    from zoo.families import FAMILY_NAMES
    from zoo.methods import METHODS, RESCALES

    for family in FAMILY_NAMES:
        for direction in ("l2s", "s2l"):
            method, wavelet, rescale, norm, depth = DEFAULTS[(family, direction)]
            assert method in METHODS and rescale in RESCALES and norm in NORMS
            assert depth in DEPTHS and (depth == "method" or direction == "s2l")
            assert (wavelet is not None) == (method == "dwt")
    small, big = {"layers": 2, "hidden": 64}, {"layers": 4, "hidden": 128}
    assert direction_of(big, small) == "l2s" and direction_of(small, big) == "s2l"
    assert direction_of({"layers": 4, "hidden": 128}, {"layers": 2, "hidden": 256}) == "s2l"
    assert default_recipe("roberta", big, small) == DEFAULTS[("bert", "l2s")]
    # Where no learngene recipe beat it on a real checkpoint, the default is the baseline.
    assert DEFAULTS[("bert", "l2s")].method == "weight-selection"
    assert DEFAULTS[("bert", "s2l")].method == "hypercloning"
    # HyperCloning grows by integer multiples; other sizes take the best dwt recipe.
    uneven = default_recipe("bert", {"layers": 6, "hidden": 384}, {"layers": 9, "hidden": 576})
    assert uneven == ("dwt", "db2", "fan", "method", "identity")
    # Deeper but narrower: neither baseline makes it (HyperCloning only grows); dwt does.
    mixed = default_recipe("bert", {"layers": 4, "hidden": 128}, {"layers": 8, "hidden": 64})
    assert mixed == uneven
    from zoo.methods import check_target

    check_target(mixed.method, {"layers": 4, "hidden": 128}, {"layers": 8, "hidden": 64})
    # A method asked for alone gets its own best measured recipe.
    assert default_recipe("bert", small, big, "dwt") == uneven
    assert default_recipe("bert", big, small, "dwt")[:3] == ("dwt", "db2", "none")
    assert default_recipe("vit", small, big, "dct")[:3] == ("dct", None, "fan")
    assert default_recipe("gpt2", small, big, "net2net")[:3] == ("net2net", None, "none")


@pytest.mark.parametrize("kind", ["linear", "norm_weight", "bias"])
@pytest.mark.parametrize("shape", [(2, 4, 4), (8, 16, 16)])
def test_needs_reference_says_exactly_when_derive_signal_reads_it(kind, shape):
    """Materialize skips the source's statistics when needs_reference is False; the
    result must then not depend on them, and must when it is True."""
    import itertools

    from zoo.derive import NORMS, Recipe, derive_signal, needs_reference
    from zoo.families.base import SignalSpec
    from zoo.methods import METHODS, RESCALES

    x = 1.0 + 0.1 * torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(1))
    fan = 2 if kind == "linear" else None
    axes = ("layers", "hidden", "hidden") if kind == "linear" else ("layers", "hidden", "ffn")
    spec = SignalSpec(axes, kind, fan)
    seen = set()
    for method, rescale, norm in itertools.product(METHODS, RESCALES, NORMS):
        if method == "weight-selection" and shape[0] > x.shape[0]:
            continue  # selection only shrinks
        if method in ("hypercloning", "net2net") and shape[0] < x.shape[0]:
            continue  # tiling and Net2Net only grow
        recipe = Recipe(method, "db2" if method == "dwt" else None, rescale, norm=norm)

        def run(ref, recipe=recipe):
            gen = torch.Generator().manual_seed(0)
            return derive_signal(x, spec, shape, recipe, reference=ref, generator=gen)

        a, b = run((0.0, 1.0)), run((5.0, 3.0))
        needed = needs_reference(spec, recipe)
        seen.add(needed)
        if needed:
            assert not torch.equal(a, b), (method, rescale, norm)
        else:
            assert torch.equal(a, run(None)) and torch.equal(a, b), (method, rescale, norm)
    assert seen == {True, False}


def test_micro_run_llama_grows_through_every_s2l_method(tmp_path):
    """The causal llama path end to end: a source trained here, then scratch, hypercloning
    and zoo's default all load strictly into LlamaForCausalLM at the target size."""
    torch.set_num_threads(1)
    report = transfer.run_transfer(
        "llama",
        "s2l",
        "1x64",
        "2x128",
        seeds=[0],
        steps=4,
        source_steps=4,
        batch=2,
        seq=16,
        val_windows=4,
        eval_every=2,
        max_bytes=2_000_000,
        home=tmp_path / "home",
        methods=["scratch", "hypercloning", "dwt:db2:fan"],
        progress=False,
    )
    assert report["objective"] == "causal LM" and report["target_method"] == "hypercloning"
    assert report["target_config"]["intermediate_size"] == 384
    assert report["best_baseline"] == "hypercloning"
    starts = {name: m["loss0_mean"] for name, m in report["methods"].items()}
    assert all(math.isfinite(v) for v in starts.values()), starts
    # Both transfers carry what the source learned: they start well below scratch.
    assert max(starts["hypercloning"], starts["dwt:db2:fan"]) < starts["scratch"] - 0.1, starts


# --- real checkpoints: their own tokenizer on English text -------------------------------

WORDS = "the of and to in is a that for it as with be on by this are an or from at which"
WORDS = [*WORDS.split(), "function", "return", "value", "module", "class", "object", "name"]


def _sentence_encoder(folder):
    """A tiny BERT saved as a sentence encoder is (BertModel: a pooler, no MLM head), with
    a WordPiece tokenizer in its folder, as a real checkpoint ships one."""
    import transformers

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, ".", ","]
    vocab += [f"##{c}" for c in letters]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # Positional: transformers 4 calls it vocab_file, 5 vocab (a path or a dict).
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    cfg = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(folder)
    return folder, len(vocab)


def _texts(folder, n=40):
    g = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True)
    for i in range(n):
        idx = torch.randint(0, len(WORDS), (60,), generator=g).tolist()
        (folder / f"doc{i:02d}.txt").write_text(" ".join(WORDS[j] for j in idx) + ".")
    return folder


def test_a_real_checkpoint_trains_on_text_in_its_own_tokenizer(tmp_path):
    """A registered sentence encoder: the family and size come from it, the corpus is
    text in its tokenizer (read from the folder it was imported from), and the MLM head
    it lacks is the model class's init, recorded as such."""
    import zoo

    folder, vocab = _sentence_encoder(tmp_path / "encoder")
    reg = zoo.connect(home=tmp_path / "home")
    name = reg.import_checkpoint(folder, name="encoder").name
    reg.close()
    torch.set_num_threads(1)
    report = transfer.run_transfer(
        None,
        "l2s",
        source=name,
        home=tmp_path / "home",
        text_dir=_texts(tmp_path / "text"),
        methods=["weight-selection"],
        seeds=[0],
        steps=2,
        batch=2,
        seq=16,
        val_windows=2,
        eval_every=1,
        progress=False,
    )
    assert report["family"] == "bert" and report["source_size"] == [2, 32]
    assert report["target_size"] == [1, 16] and report["data"]["vocab"] == vocab
    assert "*.txt under" in report["data"]["corpus"] and report["data"]["files"] == 40
    assert "cls.predictions.transform.dense.weight" in report["head_initialized"]
    assert set(report["methods"]) == {"scratch", "weight-selection"}
    assert all(math.isfinite(m["final_mean"]) for m in report["methods"].values())
    with pytest.raises(ValueError, match="not 3x64"):
        transfer.run_transfer(None, "l2s", "3x64", source=name, home=tmp_path / "home")


def test_the_tokenizer_is_the_one_stored_with_the_source(tmp_path, tiny_dir):
    """Read from the registry's blobs: the folder it was imported from may be gone."""
    import shutil

    import zoo

    folder, _ = _sentence_encoder(tmp_path / "encoder")
    reg = zoo.connect(home=tmp_path / "home")
    try:
        info = reg.import_checkpoint(folder, name="enc")
        shutil.rmtree(folder)
        tok = transfer.source_tokenizer(reg, info)
        assert tok.convert_ids_to_tokens(tok("the module")["input_ids"])[1:-1] == [
            "the",
            "module",
        ]
        assert transfer.source_tokenizer(reg, reg.import_checkpoint(tiny_dir("bert"))) is None
    finally:
        reg.close()


def test_text_masks_never_pick_special_tokens_and_draw_ordinary_ones(tmp_path):
    from transformers import BertTokenizer

    from zoo.bench.transfer import data

    folder, vocab = _sentence_encoder(tmp_path / "encoder")
    corpus = data.load_text_corpus(
        BertTokenizer.from_pretrained(folder), folder=str(_texts(tmp_path / "text"))
    )
    assert corpus.specials == (0, 1, 2, 3, 4) and corpus.random_ids == (5, vocab)
    assert corpus.mask_id == 4 and int(corpus.train.max()) < vocab
    assert int((corpus.train == 3).sum()) == 38  # one separator per training document
    x = data.windows(corpus.train, torch.arange(0, 640, 16), 16)
    inputs, labels = data.mask_tokens(x, seed=5, corpus=corpus)
    picked = labels != -100
    assert 0.05 < float(picked.float().mean()) < 0.3
    assert not torch.isin(x[picked], torch.tensor(corpus.specials)).any()
    changed = picked & (inputs != x) & (inputs != 4)
    assert changed.any() and int(inputs[changed].min()) >= 5


def test_masked_lm_loss_at_masked_positions_equals_transformers_loss():
    """The benchmark applies the MLM head only where labels are; the loss is the one
    BertForMaskedLM computes over every position (the independent reference)."""
    import transformers

    from zoo.bench.transfer import data, training

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=data.VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    model = transformers.BertForMaskedLM(cfg).eval()
    x = torch.randint(0, 256, (3, 32))
    inputs, labels = data.mask_tokens(x, seed=11)
    with torch.no_grad():
        want = model(input_ids=inputs, labels=labels).loss
        got = training._loss(model, "bert", x, mask_seed=11)
    torch.testing.assert_close(got, want)


def test_a_head_the_source_lacks_is_the_same_for_every_method_of_a_seed(tmp_path):
    import transformers

    folder, _ = _sentence_encoder(tmp_path / "encoder")
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")  # BertModel names: no "bert." prefix
    config = json.loads((folder / "config.json").read_text())
    heads = []
    for seed in (1, 1, 2):
        model = transfer.build_model("bert", config, seed=seed)
        kept = transfer.load_state(model, "bert", state)
        assert "cls.predictions.transform.dense.weight" in kept
        heads.append(model.cls.predictions.transform.dense.weight.detach().clone())
        body = model.bert.encoder.layer[1].output.dense.weight
        assert torch.equal(body, state["encoder.layer.1.output.dense.weight"])
        assert model.config.hidden_dropout_prob == 0.0
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])
    model = transformers.BertForMaskedLM(transformers.BertConfig(**config))
    partial = {k: v for k, v in model.state_dict().items() if "transform.dense" not in k}
    with pytest.raises(RuntimeError, match="missing"):  # part of a head is not a head
        transfer.load_state(transfer.build_model("bert", config), "bert", partial)


def test_reports_made_apart_merge_into_the_report_made_at_once():
    grid = [0, 10, 20]

    def run(seed, losses):
        return {"seed": seed, "steps": grid, "loss": losses, "wall_s": 1.0}

    runs = {
        "scratch": [run(0, [5, 4, 3.0]), run(1, [5, 4, 3.2])],
        "weight-selection": [run(0, [4, 3, 2.5]), run(1, [4, 3, 2.7])],
        "dwt:haar:exact+so": [run(0, [4, 3, 2.4]), run(1, [4, 3.1, 2.6])],
    }
    base = {"family": "bert", "direction": "l2s", "steps": 20, "flops_per_step": 1.0}
    base |= {"data": {"digest": "d"}, "source": {"name": "s"}, "target_method": "dwt:db2:none"}

    def report(names, seeds):
        part = {n: [r for r in runs[n] if r["seed"] in seeds] for n in names}
        return {**base, "runs": part}

    whole = transfer.merge_reports([report(runs, (0, 1))])
    parts = transfer.merge_reports(
        [report(["scratch", "weight-selection"], (0,)), report(runs, (1,)), report(runs, (0,))]
    )
    assert parts["methods"] == whole["methods"] and parts["seeds"] == [0, 1]
    assert whole["best_baseline"] == "weight-selection"
    ws = whole["methods"]["weight-selection"]
    assert ws["final_mean"] == pytest.approx(2.6) and ws["final_spread"] > 0
    with pytest.raises(ValueError, match="steps"):
        transfer.merge_reports([report(runs, (0,)), {**report(runs, (1,)), "steps": 30}])


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (("--source-size", "4y128"), "LAYERSxHIDDEN"),
        (("--target-size", "8x256"), "is not l2s"),
        (("--methods", "dwt:db2:fan+so+so"), "bad method"),
        (("--steps", "0"), "steps"),
        (("--seq", "1"), "at least 2 tokens"),  # no next token to predict: NaN losses
        (("--methods", ""), "unknown method ''"),  # not the default methods
        # Refused before the source trains (600 steps at the default budget).
        (("--source-size", "2x64", "--target-size", "1x48"), "must be a multiple of 32"),
        (("--source-size", "1x32"), "changes no size"),  # half of 1x32 in whole heads
        (("--source-size", "2x64", "--target-size", "2x64"), "changes no size"),
        # A source trained here reads bytes: a folder of text given for it was ignored.
        (
            (
                "--text",
                str(Path(__file__).parent),
                "--steps",
                "1",
                "--seeds",
                "1",
                "--source-steps",
                "1",
            ),
            "--text is read in a registered source's own tokenizer",
        ),
    ],
)
def test_bad_benchmark_arguments_are_one_line_errors(run_cli, args, word, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    code, out, err = run_cli("bench", "transfer", *args)
    assert code == 2 and out == ""
    assert err.startswith("zoo: error:") and word in err and len(err.strip().splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_sees_the_cpu_batches_under_bf16_autocast():
    """The same model trained a few steps on the CPU and on CUDA (bf16 autocast) from the
    same init on the same batches: the curves agree to bf16's precision."""
    from zoo.bench.transfer import data

    corpus = data.load_corpus(max_bytes=2_000_000)
    val = data.valid_set(corpus, n=4, seq=32)
    config = transfer.source_config("bert", 2, 64, 32)
    curves = {}
    for device in ("cpu", "cuda"):
        model = transfer.build_model("bert", config, seed=0)
        run = transfer.train(
            model,
            "bert",
            corpus,
            steps=6,
            seed=0,
            batch=4,
            seq=32,
            lr=1e-3,
            val=val,
            eval_every=3,
            device=device,
        )
        curves[device] = run["loss"]
    assert curves["cpu"][0] > curves["cpu"][-1]
    torch.testing.assert_close(
        torch.tensor(curves["cuda"]), torch.tensor(curves["cpu"]), rtol=0, atol=0.05
    )


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_preservation_finds_hyperclonings_tiled_copy_of_the_source(family, tmp_path, tiny_dir):
    """Width-only hypercloning repeats every unit, heads whole: the folded last hidden
    states are the source's (cosine 1, tiled), for post-LN BERT and pre-LN GPT-2 alike;
    net2net's random copies, folded by its map, are the source's up to its norms' uneven
    averages; a scratch target is unrelated to the source."""
    import zoo
    from zoo.api import tensors as tio
    from zoo.bench.transfer.preservation import fold, preservation

    reg = zoo.connect(home=tmp_path / "home")
    try:
        info = reg.import_checkpoint(tiny_dir(family))
        state = (info.config, tio.load_tensors(reg.store, info.tensors))
        specs = {n: transfer.parse_method(n) for n in ("scratch", "hypercloning", "net2net")}
        windows = torch.randint(0, 96, (4, 12), generator=torch.Generator().manual_seed(0))
        got = preservation(reg, family, info.name, specs, (4, 64), windows, source_state=state)
    finally:
        reg.close()
    assert got["hypercloning"]["layout"] == "tiled"
    assert got["hypercloning"]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert abs(got["scratch"]["cosine"]) < 0.5
    # GPT-2's ln_f feeds its tied head, so each copy is divided by its count.
    assert got["net2net"]["layout"] == {"bert": "copied", "gpt2": "copied-sum"}[family]
    assert got["net2net"]["cosine"] > 0.99
    h = torch.arange(6.0).reshape(1, 6)
    copied = fold(h, 3, torch.tensor([0, 1, 2, 1, 1, 0]))
    torch.testing.assert_close(copied["copied"], torch.tensor([[2.5, 8 / 3, 2.0]]))
    torch.testing.assert_close(copied["copied-sum"], torch.tensor([[5.0, 8.0, 2.0]]))
    assert fold(h, 3)["tiled"].tolist() == [[1.5, 2.5, 3.5]]
    assert fold(h, 3)["interleaved"].tolist() == [[0.5, 2.5, 4.5]]


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_haar_exact_laid_out_tiled_is_hypercloning(family, tmp_path, tiny_dir):
    """Haar with zero details and the exact amplitude repeats every unit; +tl lays the
    copies out as HyperCloning does, and the two grown states agree tensor by tensor
    (HyperCloning is the independent reference: tiling plus a fan-in division)."""
    (tiled, _), (flat, _), (clone, _) = _initialized(
        tmp_path,
        tiny_dir(family),
        family,
        [("dwt:haar:exact+tl", (4, 64)), ("dwt:haar:exact", (4, 64)), ("hypercloning", (4, 64))],
    )
    assert set(tiled) == set(clone)
    for name, value in clone.items():
        torch.testing.assert_close(tiled[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.allclose(flat[n], v, atol=1e-4) for n, v in clone.items())
    assert transfer.parse_method("dwt:haar:exact+dz+so+tl").layout == "tiled"
    for bad in ("hypercloning+tl", "dwt:haar:exact+tl+tl", "dwt:haar:exact+tl+so"):
        with pytest.raises(ValueError):
            transfer.parse_method(bad)


def test_a_source_trained_until_flat_stops_when_a_round_stops_helping(tmp_path, monkeypatch):
    """source_steps=0: rounds of training on new batches until one improves validation
    loss by less than the tolerance; the source is cached and registered once."""
    from zoo.bench.transfer import sources

    monkeypatch.setattr(sources, "FLAT_ROUND", 6)
    monkeypatch.setattr(sources, "FLAT_TOLERANCE", 0.5)  # any round after the first stops
    torch.set_num_threads(1)
    kw = dict(
        seeds=[0],
        steps=1,
        source_steps=0,
        batch=2,
        seq=16,
        val_windows=2,
        eval_every=3,
        max_bytes=2_000_000,
        home=tmp_path / "home",
        methods=["scratch"],
        progress=False,
    )
    report = transfer.run_transfer("gpt2", "l2s", "2x32", "1x32", **kw)
    src = report["source"]
    assert src["until_flat"] and src["rounds"] == 2 and src["steps"] == 12
    assert src["name"].endswith("-flat") and src["curve_steps"][-1] == 12
    again = transfer.run_transfer("gpt2", "l2s", "2x32", "1x32", **kw)
    assert again["source"]["content_hash"] == src["content_hash"]  # reused, not retrained
