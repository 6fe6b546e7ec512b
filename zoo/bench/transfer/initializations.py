"""Each method's initial state, made through zoo's API (``reg.extract`` +
``reg.materialize``, so the benchmark measures what users get), and the benchmark-only
ablations of the method grammar (:mod:`.methods`) applied to it afterwards.
"""

from __future__ import annotations

import re

import torch

from zoo.errors import InvalidInputError
from zoo.unit_order import ATTENTION_INNER

from .methods import MethodSpec


def zoo_default_method(family: str, source: tuple[int, int], target: tuple[int, int]) -> str:
    """The method name (this module's grammar) of zoo's default for this transfer."""
    from zoo.defaults import default_recipe

    sizes = [{"layers": layers, "hidden": hidden} for layers, hidden in (source, target)]
    method, wavelet, rescale, norm, depth = default_recipe(family, *sizes)
    suffix = "+nm" if norm == "match" else ""
    if depth == "identity" and target[0] > source[0]:
        suffix += "+dz"
    if method == "dwt":
        return f"dwt:{wavelet}:{rescale}{suffix}"
    if method == "dct":
        return f"dct:{rescale}{suffix}"
    return method + suffix


def _learngene(reg, source: str, spec: MethodSpec, dct_keep: float) -> str:
    if spec.method == "dwt":
        return reg.extract(
            source, method="dwt", wavelet=spec.wavelet, levels=2, order=spec.order
        ).name
    return reg.extract(source, method="dct", keep=dct_keep, order=spec.order).name


def _seed_for(method: str, seed: int) -> int | None:
    """``seed`` for a method that draws random numbers; None for one that draws none
    (zoo refuses a seed it would not use)."""
    from zoo.methods import get

    return seed if get(method).random else None


def initialize(
    reg,
    family: str,
    source: str,
    spec: MethodSpec,
    target: tuple[int, int],
    *,
    seed: int,
    dct_keep: float,
    source_state=None,
):
    """The target's state dict and config, made by ``reg.materialize``."""
    from zoo.families import get_family

    layers, hidden = target
    parent = _learngene(reg, source, spec, dct_keep) if spec.method in ("dwt", "dct") else source
    source_depth = source_state[0][get_family(family).layers_key] if source_state else None
    # +dz is zoo's own --depth identity. +dc/+ds: the method changes the width only;
    # depth_by_rule sets the depth.
    by_rule = spec.depth in ("copies", "stack")
    m = reg.materialize(
        parent,
        layers=source_depth if by_rule else layers,
        hidden=hidden,
        method=spec.method,
        wavelet=spec.wavelet,
        rescale=spec.rescale,
        seed=_seed_for(spec.method, seed),
        # +nm is zoo's own option; +nd (raw-DWT norm scale for any method) is not. Always
        # explicit: a name without +nm means the method's own rule, whatever the default;
        # the same for the depth rule.
        norm="match" if spec.norm == "match" else "method",
        depth="identity" if spec.depth == "identity" else "method",
        order=spec.order,
        device="cpu",  # where the targets train; the same bits on any machine
    )
    state, config = dict(m.state_dict), m.config
    if spec.head_aware:
        state = heads_aware(family, state, config, source_state, spec)
    if spec.baseline_embeddings:
        # Embeddings have no depth: the baseline is made at the source's, so it can grow
        # (or shrink) the width whichever way the depth goes.
        baseline = baseline_for(family, source_state[0], hidden)
        b = reg.materialize(
            source,
            layers=source_depth,
            hidden=hidden,
            method=baseline,
            seed=_seed_for(baseline, seed),
            device="cpu",
        )
        state = embeddings_from(family, state, config, dict(b.state_dict), b.config)
    if spec.norm == "dwt":
        # The norms must be in the order the method saw.
        state = shared_norms(
            family, state, config, in_order(family, source_state, spec.order), "dwt"
        )
    if by_rule:
        state, config = depth_by_rule(family, state, config, layers, spec.depth)
    if spec.residual_depth:
        state = residual_depth_scaled(family, state, config, source_state[0])
    if spec.layout == "tiled":
        state = tiled_layout(family, state, config, source_state[0])
    return state, config, m.artifact.name


#: Axes whose units a grown model repeats (the others keep their size or are depth).
UNIT_AXES = ("hidden", "ffn", "kv", "attn")


def tiled_order(source: int, target: int) -> torch.Tensor:
    """Interleaved index of each tiled position: tiled unit ``c * S + i`` is interleaved
    unit ``k * i + c`` (the ``c``-th copy of source unit ``i``)."""
    k = target // source
    p = torch.arange(target)
    return (p % source) * k + p // source


def tiled_layout(family: str, state, config, source_config) -> dict[str, torch.Tensor]:
    """``state`` with every axis that grew by an integer factor permuted from interleaved
    to tiled copies (the ``+tl`` ablation); one permutation per axis role, so the
    function is unchanged."""
    from zoo.families import get_family

    fam = get_family(family)
    s_sizes, t_sizes = fam.axis_sizes(source_config), fam.axis_sizes(config)
    perms = {
        role: tiled_order(s_sizes[role], t_sizes[role])
        for role in UNIT_AXES
        if role in t_sizes and t_sizes[role] > s_sizes[role] and t_sizes[role] % s_sizes[role] == 0
    }
    signals = {}
    for key, sig in fam.to_signals(state, config).items():
        t = sig.tensor
        for axis, role in enumerate(sig.axes):
            if role in perms:
                t = t.index_select(axis, perms[role])
        signals[key] = t
    return fam.from_signals(signals, config)


# Attention signals whose hidden axis indexes heads: axis position -> it is (heads, head_dim).
HEAD_AXES = ATTENTION_INNER


def _heads(config) -> int:
    return int(config.get("n_head") or config["num_attention_heads"])


def heads_aware(family: str, state, config, source_state, spec: MethodSpec):
    """``state`` with its attention projections re-derived from the source by ``spec``'s dwt
    recipe, the head-indexing hidden axis split into (heads, head_dim) and only the heads
    resized (the ``+hd`` ablation). Needs the same head_dim on both sides."""
    from zoo.derive import Recipe, derive_signal, signal_stats, target_shape
    from zoo.families import get_family
    from zoo.families.base import SignalSpec

    fam = get_family(family)
    src_cfg, src = source_state
    s_sizes, t_sizes = fam.axis_sizes(src_cfg), fam.axis_sizes(config)
    s_heads, t_heads = _heads(src_cfg), _heads(config)
    head_dim = s_sizes["hidden"] // s_heads
    if t_sizes["hidden"] // t_heads != head_dim:
        raise InvalidInputError(
            f"+hd keeps head_dim, but it goes {head_dim} -> {t_sizes['hidden'] // t_heads}"
        )
    recipe = Recipe(method="dwt", wavelet=spec.wavelet, rescale=spec.rescale, norm="method")
    sizes = {**t_sizes, "heads": t_heads, "head_dim": head_dim}
    src_signals = fam.to_signals(src, src_cfg)
    signals = {key: sig.tensor for key, sig in fam.to_signals(state, config).items()}
    for key, at in HEAD_AXES.items():
        sig = src_signals[key]
        axes = (*sig.axes[:at], "heads", "head_dim", *sig.axes[at + 1 :])
        shape = (*sig.tensor.shape[:at], s_heads, head_dim, *sig.tensor.shape[at + 1 :])
        fan_in = None
        if sig.fan_in_axis is not None:
            fan_in = at if sig.fan_in_axis == at else sig.fan_in_axis + (sig.fan_in_axis > at)
        split = SignalSpec(axes, sig.kind, fan_in)
        x = sig.tensor.reshape(shape)
        y = derive_signal(
            x, split, target_shape(axes, shape, sizes), recipe, reference=signal_stats(x)
        )
        signals[key] = y.reshape(signals[key].shape).to(signals[key].dtype)
    return fam.from_signals(signals, config)


def baseline_for(family: str, source_config, hidden: int) -> str:
    """The direction's training-free baseline: weight selection to shrink, hypercloning to grow."""
    from zoo.families import get_family

    grows = hidden > get_family(family).axis_sizes(source_config)["hidden"]
    return "hypercloning" if grows else "weight-selection"


def embeddings_from(family: str, state, config, other, other_config) -> dict[str, torch.Tensor]:
    """``state`` with every embedding signal (token, position, token type) taken from
    ``other``, a state of the same width (the ``+eb`` ablation)."""
    from zoo.families import get_family

    fam = get_family(family)
    mine, theirs = fam.to_signals(state, config), fam.to_signals(other, other_config)
    signals = {
        key: (theirs[key] if sig.kind == "embedding" else sig).tensor for key, sig in mine.items()
    }
    return fam.from_signals(signals, config)


def depth_by_rule(family: str, state, config, layers: int, rule: str):
    """``state`` (at the source's depth) taken to ``layers`` layers by a fixed rule (the
    ``+dc`` / ``+ds`` / ``+dz`` ablations): ``copies`` repeats each layer in place, or
    averages adjacent groups; ``stack`` repeats the whole stack, or keeps the first layers;
    ``identity`` (growing only) is zoo's ``--depth identity`` rule
    (:func:`zoo.derive.deepen_by_identity`). Needs an integer ratio between the depths."""
    from zoo.derive import deepen_by_identity
    from zoo.families import get_family

    fam = get_family(family)
    now = fam.axis_sizes(config)["layers"]
    big, small = max(now, layers), min(now, layers)
    if big % small:
        raise InvalidInputError(f"+dc/+ds/+dz need an integer depth ratio, not {now} -> {layers}")
    factor = big // small
    if rule == "identity" and layers < now:
        raise InvalidInputError("+dz grows the depth; it has no rule for shrinking")
    out_config = {**config, fam.layers_key: layers}
    signals = {}
    for key, sig in fam.to_signals(state, config).items():
        t = sig.tensor
        if "layers" in sig.axes and rule == "identity":
            t = deepen_by_identity(t, key, sig.axes, layers)
        elif "layers" in sig.axes:
            t = t.movedim(sig.axes.index("layers"), 0)
            if layers > now and rule == "copies":
                t = t.repeat_interleave(factor, dim=0)
            elif layers > now:
                t = t.repeat(factor, *([1] * (t.dim() - 1)))
            elif rule == "copies":
                t = t.reshape(layers, factor, *t.shape[1:]).mean(dim=1)
            else:
                t = t[:layers]
            t = t.movedim(0, sig.axes.index("layers")).contiguous()
        signals[key] = t
    return fam.from_signals(signals, out_config), out_config


# Matrices (and biases) whose output is added to the residual stream, per family; group 1
# is the layer index.
RESIDUAL_WRITERS = {
    "gpt2": re.compile(r"\.h\.(\d+)\.(attn|mlp)\.c_proj\.(weight|bias)$"),
    "bert": re.compile(r"\.layer\.(\d+)\.(attention\.output|output)\.dense\.(weight|bias)$"),
    "llama": re.compile(r"\.layers\.(\d+)\.(self_attn\.o_proj|mlp\.down_proj)\.(weight|bias)$"),
}


def residual_depth_scaled(family: str, state, config, source_config) -> dict[str, torch.Tensor]:
    """Divide every residual-writing matrix and bias by target depth / source depth (the
    ``+rd`` ablation): when depth grows by copying or smoothly interpolating layers, each
    source layer's update reaches the residual stream that many times."""
    from zoo.families import get_family

    fam = get_family(family)
    ratio = fam.axis_sizes(config)["layers"] / fam.axis_sizes(source_config)["layers"]
    pattern = RESIDUAL_WRITERS[family]
    return {k: v / ratio if pattern.search("." + k) else v for k, v in state.items()}


def in_order(family: str, source_state, order: str):
    """``(config, state)`` of the source with its units in ``order`` (zoo.unit_order)."""
    from zoo.families import get_family
    from zoo.unit_order import ordered

    if order == "stored":
        return source_state
    fam = get_family(family)
    config, state = source_state
    signals = ordered(fam.to_signals(state, config), order)
    return config, fam.from_signals({k: s.tensor for k, s in signals.items()}, config)


def shared_norms(family: str, state, config, source_state, rule: str) -> dict[str, torch.Tensor]:
    """Replace every normalization signal by one rule shared across methods.

    ``match``: the method's result moment-matched to the source's mean and std (what
    ``Recipe(norm="match")`` does in :func:`zoo.derive.derive_signal`). ``dwt``: the source's
    norm signal resized by raw haar DWT, whatever the method.
    """
    from zoo.families import get_family
    from zoo.methods import resize
    from zoo.methods.amplitude import match_moments
    from zoo.transforms.moments import mean_std

    fam = get_family(family)
    src_cfg, src = source_state
    src_signals = fam.to_signals(src, src_cfg)
    signals = fam.to_signals(state, config)
    out = {}
    for key, sig in signals.items():
        t = sig.tensor
        if sig.kind in ("norm_weight", "norm_bias") and key in src_signals:
            s = src_signals[key].tensor
            if rule == "match":
                t = match_moments(t, *mean_std(s, correction=0))  # population, as it takes
            elif tuple(s.shape) != tuple(t.shape):
                t = resize(s, tuple(t.shape), method="dwt", wavelet="haar").to(t.dtype)
            else:
                t = s.clone()
        out[key] = t
    return fam.from_signals(out, config)
