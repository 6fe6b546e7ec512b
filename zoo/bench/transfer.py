"""The transfer benchmark: does a materialized model train faster than scratch and baselines?

:func:`run_transfer` obtains a source checkpoint (a registered one, or one it trains for a
short budget and registers in a zoo registry), initializes the target size once per method
*through zoo's own API* (``reg.extract`` + ``reg.materialize``, so it measures what users
get), trains every method for the same budget on the same batches with the same seeds,
and reports validation loss at step 0 and at the end, the steps each method needs to reach
scratch's and the best training-free baseline's final loss, steps and FLOPs saved, and a
win/tie/loss verdict (a difference within the seed spread is a tie). It writes JSON and a
PNG of the mean loss curves.

Data: the Python standard library's own source as bytes (:mod:`zoo.bench.data`); causal LM
for ``gpt2`` (GPT2LMHeadModel) and ``llama`` (LlamaForCausalLM), masked LM for ``bert``
(BertForMaskedLM, 15% masking with a fixed mask seed per batch).

Method names: ``scratch``, ``weight-selection``, ``hypercloning``, ``net2net``,
``dwt:WAVELET:RESCALE`` (BoT; RESCALE none|std|fan|fan-sqrt), ``dct:RESCALE`` (FRONT
learngene), and any of them with a suffix that replaces the method's own normalization
layers by one rule shared across methods, so a LayerNorm gain scale cannot pass for a better
transfer: ``+nm`` moment-matches them to the source's (the ``norm="match"`` rule of
:class:`zoo.derive.Recipe`); ``+nd`` resizes them by raw haar DWT, the scale raw BoT gives
(x2 gains for a 2x L2S on both axes, x0.5 for S2L). Then three ablations of the depth axis:
``+dc`` / ``+ds`` / ``+dz`` let the method change only the width and set the depth by a
fixed rule instead: ``+dc`` by adjacent copies (``[L0, L0, L1, L1]``; shrinking: means of
adjacent layers), i.e. haar along depth with the amplitude kept, no boundary wrap; ``+ds``
by stacking (``[L0, L1, L0, L1]``, as hypercloning does; shrinking: the first layers, as
weight selection does); ``+dz`` (growing only) by copies whose repeats start as identities
(``[L0, L0', L1, L1']``, the repeats' residual-writing matrices and biases zeroed: exactly
function-preserving along depth for pre-LN models). A final ``+rd`` divides every
residual-writing matrix and bias by target depth / source depth. ``+eb`` (after the norm
suffix, before the depth ones) ablates the embeddings: every embedding table (token,
position, token type) is taken from the direction's baseline (weight selection for L2S,
hypercloning for S2L), materialized at the target width (and the source's depth: embeddings
have none), and everything else from the method. ``+hd`` (right after the method and its
norm suffix; dwt only) redoes the attention projections head-aware: the hidden axis that
indexes heads (the outputs of q, k, v and the inputs of the output projection) is seen as
(heads, head_dim) and only the heads are resized, so each target head is a whole source head
(or a blend of whole heads), never a slice of one. ``+so`` / ``+sd``, last, are zoo's
``order="similar"`` / ``"dissimilar"`` (:mod:`zoo.unit_order`): the method sees the source's
residual and FFN units chained by similarity (dissimilarity) instead of as stored (the
function is unchanged). A baseline with either is zoo's variant of it, no longer the
published baseline.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoo.derive import RESCALES
from zoo.unit_order import ATTENTION_INNER

from . import data as bdata
from .machine import cpu_model

BASELINES = ("weight-selection", "hypercloning", "net2net")
FAMILIES = ("gpt2", "bert", "llama")
CAUSAL = ("gpt2", "llama")
HEAD_DIM = 32
ARCH = {"gpt2": "GPT2LMHeadModel", "bert": "BertForMaskedLM", "llama": "LlamaForCausalLM"}
# Tied tensors save_pretrained leaves out; load_state_dict may miss exactly these.
TIED = {
    "gpt2": {"lm_head.weight"},
    "bert": {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"},
    "llama": set(),  # its own lm_head, as LlamaConfig has by default
}


# --- method specs ----------------------------------------------------------------------


@dataclass(frozen=True)
class MethodSpec:
    name: str
    method: str
    wavelet: str | None = None
    rescale: str | None = None
    norm: str | None = None  # None: the method's own; "match" (+nm) or "dwt" (+nd)
    residual_depth: bool = False  # +rd: residual-writing matrices / (target/source depth)
    depth: str | None = None  # None: the method's own; "copies" (+dc) or "stack" (+ds)
    baseline_embeddings: bool = False  # +eb: embedding tables from the direction's baseline
    head_aware: bool = False  # +hd: attention resized along (heads, head_dim), heads only
    order: str = "stored"  # +so / +sd: zoo's order="similar" / "dissimilar"

    @property
    def baseline(self) -> bool:
        # A published baseline reads units as stored; with +so / +sd it is zoo's variant.
        return self.method in BASELINES and self.order == "stored"


def parse_method(text: str) -> MethodSpec:
    """``dwt:db2:fan`` -> MethodSpec; see the module doc for the grammar."""
    name = text.strip()
    orders = {"+so": "similar", "+sd": "dissimilar"}
    if any(suffix in name[:-3] for suffix in orders):
        raise ValueError(f"bad method {text!r}: +so / +sd comes last")
    if name[-3:] in orders:
        spec = parse_method(name[:-3])
        if spec.method == "scratch":
            raise ValueError(f"bad method {text!r}: +so / +sd follows a transfer")
        if spec.head_aware or spec.baseline_embeddings:
            # +hd and +eb re-read the source as stored.
            raise ValueError(f"bad method {text!r}: +hd and +eb do not combine with +so / +sd")
        return dataclasses.replace(spec, name=spec.name + name[-3:], order=orders[name[-3:]])
    if name.endswith("+rd"):
        spec = parse_method(name[:-3])
        if spec.method == "scratch":
            raise ValueError("+rd applies to transferred initializations, not scratch")
        return dataclasses.replace(spec, name=spec.name + "+rd", residual_depth=True)
    depth_rules = {"+dc": "copies", "+ds": "stack", "+dz": "identity"}
    if name[-3:] in depth_rules:
        spec = parse_method(name[:-3])
        if spec.method == "scratch" or spec.depth or spec.residual_depth:
            raise ValueError(f"bad method {text!r}: +dc/+ds/+dz follow a transfer, before +rd")
        if name.endswith("+dz") and (spec.head_aware or spec.norm == "dwt"):
            # +hd and +nd redo attention / norms at the target depth by the method.
            raise ValueError(f"bad method {text!r}: +hd and +nd do not combine with +dz")
        return dataclasses.replace(spec, name=spec.name + name[-3:], depth=depth_rules[name[-3:]])
    if name.endswith("+eb"):
        spec = parse_method(name[:-3])
        later = spec.baseline_embeddings or spec.depth or spec.residual_depth
        if spec.method == "scratch" or later:
            raise ValueError(f"bad method {text!r}: +eb follows a transfer, before +dc/+ds/+dz/+rd")
        return dataclasses.replace(spec, name=spec.name + "+eb", baseline_embeddings=True)
    if name.endswith("+hd"):
        spec = parse_method(name[:-3])
        if spec.method != "dwt" or spec.head_aware:
            raise ValueError(f"bad method {text!r}: +hd follows a dwt method, once")
        return dataclasses.replace(spec, name=spec.name + "+hd", head_aware=True)
    suffixes = {"+nm": "match", "+nd": "dwt"}
    norm = suffixes.get(name[-3:])
    body, tail = (name[:-3], name[-3:]) if norm else (name, "")
    parts = body.split(":")
    head = parts[0]
    if head == "dwt":
        wavelet = parts[1] if len(parts) > 1 and parts[1] else "haar"
        rescale = parts[2] if len(parts) > 2 and parts[2] else "none"
        if len(parts) > 3 or rescale not in RESCALES:
            raise ValueError(f"bad method {text!r}: use dwt:WAVELET:RESCALE")
        return MethodSpec(f"dwt:{wavelet}:{rescale}{tail}", "dwt", wavelet, rescale, norm)
    if head == "dct":
        rescale = parts[1] if len(parts) > 1 and parts[1] else "none"
        if len(parts) > 2 or rescale not in RESCALES:
            raise ValueError(f"bad method {text!r}: use dct:RESCALE")
        return MethodSpec(f"dct:{rescale}{tail}", "dct", None, rescale, norm)
    if head in (*BASELINES, "scratch") and len(parts) == 1 and not (head == "scratch" and norm):
        return MethodSpec(name, head, None, None, norm)
    raise ValueError(
        f"unknown method {text!r}; use scratch, weight-selection, hypercloning, net2net, "
        "dwt:WAVELET:RESCALE or dct:RESCALE (optionally +nm or +nd, then +hd, then +eb, then "
        "+dc, +ds or +dz, then +rd, then +so or +sd)"
    )


def default_methods(direction: str) -> list[str]:
    base = ["weight-selection"] if direction == "l2s" else ["hypercloning"]
    return [
        "scratch",
        *base,
        "dwt:haar:none",
        "dwt:db2:none",
        "dwt:bior6.8:none",
        "dwt:haar:none+nm",
        "dwt:db2:none+nm",
        "dwt:db2:std",
        "dwt:haar:fan",
        "dwt:db2:fan",
        "dct:none",
    ]


# --- sizes, configs, machine ----------------------------------------------------------


def parse_size(text: str | Sequence[int]) -> tuple[int, int]:
    """``"4x128"`` -> (layers, hidden)."""
    if not isinstance(text, str):
        layers, hidden = text
        return int(layers), int(hidden)
    m = re.fullmatch(r"\s*(\d+)\s*[xX/]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"size {text!r} must look like LAYERSxHIDDEN, e.g. 4x128")
    return int(m.group(1)), int(m.group(2))


def source_config(family: str, layers: int, hidden: int, seq: int) -> dict[str, Any]:
    """A small config of ``family`` for byte tokens, no dropout, head_dim 32."""
    heads = max(1, hidden // HEAD_DIM)
    if family == "gpt2":
        return dict(
            vocab_size=bdata.VOCAB,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=seq,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=bdata.SEP,
            eos_token_id=bdata.SEP,
            tie_word_embeddings=True,
        )
    if family == "bert":
        return dict(
            vocab_size=bdata.VOCAB,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=seq,
            type_vocab_size=2,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            pad_token_id=bdata.PAD,
        )
    if family == "llama":
        # SwiGLU width 3x hidden (Llama's is 8/3x; 3x keeps it dyadic), full multi-head
        # attention, RMSNorm, rotary positions, no biases, untied head.
        return dict(
            vocab_size=bdata.VOCAB,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=3 * hidden,
            max_position_embeddings=seq,
            bos_token_id=bdata.SEP,
            eos_token_id=bdata.SEP,
            tie_word_embeddings=False,
        )
    raise ValueError(f"family {family!r} not benchmarked; choose one of {FAMILIES}")


def build_model(family: str, config: dict[str, Any]):
    import transformers

    arch = getattr(transformers, ARCH[family])
    cfg = arch.config_class(
        **{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")}
    )
    return arch(cfg)


def load_state(model, family: str, state: dict[str, torch.Tensor]) -> None:
    result = model.load_state_dict(state, strict=False)
    missing = set(result.missing_keys) - TIED[family]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"state does not fit the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]}"
        )
    model.tie_weights()


def default_lr(hidden: int) -> float:
    """Peak AdamW learning rate per size (fixed per size, the same for every method)."""
    return round(2e-3 * math.sqrt(128 / hidden), 6)


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


# --- training --------------------------------------------------------------------------


def _loss(model, family: str, x: torch.Tensor, mask_seed: int) -> torch.Tensor:
    if family in CAUSAL:
        return model(input_ids=x, labels=x).loss
    inputs, labels = bdata.mask_tokens(x, seed=mask_seed)
    return model(input_ids=inputs, labels=labels).loss


@torch.no_grad()
def evaluate(model, family: str, val: torch.Tensor, chunk: int = 32) -> float:
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(val), chunk):
        x = val[i : i + chunk]
        total += float(_loss(model, family, x, mask_seed=7_777 + i)) * len(x)
        n += len(x)
    model.train()
    return total / n


def flops_per_step(model, family: str, batch: int, seq: int) -> float:
    """6 N D + 12 L H T D (Kaplan et al.): N counts every weight but position tables."""
    cfg = model.config
    layers = getattr(cfg, "n_layer", None) or cfg.num_hidden_layers
    hidden = getattr(cfg, "n_embd", None) or cfg.hidden_size
    n = sum(
        p.numel()
        for name, p in model.named_parameters()
        if "position" not in name and "wpe" not in name
    )
    tokens = batch * seq
    return float(6 * n * tokens + 12 * layers * hidden * seq * tokens)


def train(
    model,
    family: str,
    corpus,
    *,
    steps: int,
    seed: int,
    batch: int,
    seq: int,
    lr: float,
    val: torch.Tensor,
    eval_every: int,
    bar=None,
    warmup: float = 0.1,
) -> dict[str, Any]:
    """AdamW with linear warmup (``warmup`` of the steps, at least 10) and cosine decay to
    10% of the peak."""
    torch.manual_seed(seed)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    warm = min(steps, max(10, int(steps * warmup)))

    def lr_at(step: int) -> float:
        if step < warm:
            return lr * (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    curve_steps, curve = [0], [evaluate(model, family, val)]
    train_loss = []
    t0 = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x = bdata.train_batch(corpus, step, seed=seed, batch=batch, seq=seq)
        loss = _loss(model, family, x, mask_seed=1_000_000 * (seed + 1) + step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        train_loss.append(float(loss.detach()))
        done = step + 1
        if done % eval_every == 0 or done == steps:
            curve_steps.append(done)
            curve.append(evaluate(model, family, val))
        if bar is not None:
            bar.update(1)
    return {
        "steps": curve_steps,
        "loss": curve,
        "train_loss_last": train_loss[-1],
        "wall_s": time.perf_counter() - t0,
    }


# --- analysis ------------------------------------------------------------------------


def spread(values: Sequence[float]) -> float:
    """Sample std over seeds (0 for one seed)."""
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


#: How "steps to reach" is counted; recorded in every report (absent: the first crossing).
STEPS_RULE = "stays below: the step from which the mean curve stays at or below the target"


def steps_to_reach(steps: Sequence[int], losses: Sequence[float], target: float) -> float | None:
    """The step from which the curve stays at or below ``target`` (linear between eval
    points); None if it ends above. Not the first crossing: warm starts often dip below a
    target in warmup and rise above it again at the peak learning rate (seventh session;
    earlier reports took the first crossing)."""
    if not losses or not math.isfinite(target):
        return None
    # NaN is never "at or below": a diverged run does not reach anything.
    above = [i for i, loss in enumerate(losses) if not loss <= target]
    if not above:
        return float(steps[0])
    last = above[-1]
    if last == len(losses) - 1:
        return None
    a, b = losses[last], losses[last + 1]
    frac = (a - target) / (a - b) if a != b else 1.0
    return steps[last] + frac * (steps[last + 1] - steps[last])


def first_crossing(steps: Sequence[int], losses: Sequence[float], target: float) -> float | None:
    """The first step at which the curve reaches ``target`` (the rule of the reports
    before the seventh session; kept to recompute them)."""
    if losses[0] <= target:
        return float(steps[0])
    for i in range(1, len(steps)):
        if losses[i] <= target:
            a, b = losses[i - 1], losses[i]
            frac = (a - target) / (a - b) if a != b else 1.0
            return steps[i - 1] + frac * (steps[i] - steps[i - 1])
    return None


def verdict(a: float, a_spread: float, b: float, b_spread: float) -> str:
    """``a`` vs ``b`` (lower is better): a difference within the larger spread is a tie."""
    if abs(a - b) <= max(a_spread, b_spread):
        return "tie"
    return "win" if a < b else "loss"


def summarize(
    runs: dict[str, list[dict[str, Any]]], specs: dict[str, MethodSpec], steps: int, flops: float
) -> dict[str, Any]:
    """Per-method statistics and comparisons from per-seed curves."""
    out: dict[str, Any] = {}
    for name, seeds in runs.items():
        finals = [r["loss"][-1] for r in seeds]
        starts = [r["loss"][0] for r in seeds]
        grid = seeds[0]["steps"]
        curve_mean = [mean([r["loss"][i] for r in seeds]) for i in range(len(grid))]
        curve_std = [spread([r["loss"][i] for r in seeds]) for i in range(len(grid))]
        out[name] = {
            "method": specs[name].method,
            "wavelet": specs[name].wavelet,
            "rescale": specs[name].rescale,
            "norm_rule": specs[name].norm,
            "baseline": specs[name].baseline,
            "loss0_mean": mean(starts),
            "loss0_spread": spread(starts),
            "final_mean": mean(finals),
            "final_spread": spread(finals),
            "final_by_seed": finals,
            "curve_steps": grid,
            "curve_mean": curve_mean,
            "curve_std": curve_std,
            "wall_s_mean": mean([r["wall_s"] for r in seeds]),
            "materialize_s": mean([r.get("materialize_s", 0.0) for r in seeds]),
        }
    return {"methods": out, "best_baseline": compare(out, steps, flops)}


def compare(out: dict[str, Any], steps: int, flops: float) -> str | None:
    """Fill each method's steps, savings and verdicts against scratch and the best
    baseline (whose name it returns), from the per-method statistics alone; also used to
    rescore a saved report (:func:`rescore`)."""
    scratch = out.get("scratch")
    base_names = [n for n in out if out[n]["baseline"]]
    best_base = min(base_names, key=lambda n: out[n]["final_mean"]) if base_names else None
    for m in out.values():
        for ref_name, key in ((scratch and "scratch", "scratch"), (best_base, "baseline")):
            if not ref_name:
                m[f"steps_to_{key}"] = None
                m[f"saved_vs_{key}"] = None
                m[f"verdict_vs_{key}"] = None
                continue
            ref = out[ref_name]
            target = ref["final_mean"]
            reach = steps_to_reach(m["curve_steps"], m["curve_mean"], target)
            # Saved vs the reference: the reference needs its whole budget for its loss.
            saved = None if reach is None else 1.0 - reach / steps
            m[f"steps_to_{key}"] = reach
            m[f"saved_vs_{key}"] = saved
            m[f"flops_saved_vs_{key}"] = None if reach is None else (steps - reach) * flops
            m[f"verdict_vs_{key}"] = verdict(
                m["final_mean"], m["final_spread"], ref["final_mean"], ref["final_spread"]
            )
    return best_base


def rescore(report: dict[str, Any]) -> dict[str, Any]:
    """A saved report's comparisons and targets recomputed with this module's rules (e.g.
    :func:`steps_to_reach`), from its stored mean curves and final losses."""
    report["best_baseline"] = compare(report["methods"], report["steps"], report["flops_per_step"])
    add_targets(report)
    report["steps_rule"] = STEPS_RULE
    return report


def add_targets(report: dict[str, Any]) -> None:
    report["targets"] = check_targets(report, report["target_method"])
    transfers = [n for n, m in report["methods"].items() if n != "scratch" and not m["baseline"]]
    if transfers:
        best = min(transfers, key=lambda n: report["methods"][n]["final_mean"])
        report["best_transfer"] = best
        report["targets_best_transfer"] = check_targets(report, best)


def check_targets(summary: dict[str, Any], name: str) -> dict[str, Any]:
    """The benchmark's targets for method ``name`` (see the issue "Transfer benchmark")."""
    m = summary["methods"].get(name)
    if m is None:
        return {"method": name, "measured": False}
    base = summary["best_baseline"]
    res: dict[str, Any] = {"method": name, "measured": True, "best_baseline": base}
    if base is not None:
        b = summary["methods"][base]
        margin = b["final_mean"] - m["final_mean"]
        res["beats_baseline_margin"] = margin
        res["beats_baseline_beyond_spread"] = margin > max(m["final_spread"], b["final_spread"])
        s = m["steps_to_baseline"]
        res["fraction_of_baseline_steps"] = None if s is None else s / b["curve_steps"][-1]
        res["reaches_baseline_within_70pct"] = s is not None and s <= 0.7 * b["curve_steps"][-1]
    if "scratch" in summary["methods"]:
        res["saved_vs_scratch"] = m["saved_vs_scratch"]
        res["saves_50pct_vs_scratch"] = (m["saved_vs_scratch"] or 0.0) >= 0.5
    keys = [k for k in res if k.startswith(("beats_baseline_beyond", "reaches_", "saves_"))]
    res["all_met"] = all(res[k] for k in keys) if keys else False
    return res


# --- source and initializations through zoo's API ----------------------------------------


def obtain_source(
    reg,
    family: str,
    size: tuple[int, int],
    *,
    corpus,
    source: str | None,
    steps: int,
    batch: int,
    seq: int,
    val: torch.Tensor,
    eval_every: int,
    cache_dir: Path,
    bar=None,
) -> dict[str, Any]:
    """A registered source by name, or a short-trained one (cached, then registered)."""
    if source is not None:
        info = reg.show(source)
        return {"name": info.name, "trained_here": False, "config": info.config}
    layers, hidden = size
    folder = cache_dir / f"{family}-{layers}x{hidden}-s{steps}-b{batch}-q{seq}-{corpus.digest}"
    meta_path = folder / "bench_source.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if bar is not None:
            bar.update(steps)
    else:
        model = build_model(family, source_config(family, layers, hidden, seq))
        torch.manual_seed(0)
        model.apply(model._init_weights)
        run = train(
            model,
            family,
            corpus,
            steps=steps,
            seed=10_000,
            batch=batch,
            seq=seq,
            lr=default_lr(hidden),
            val=val,
            eval_every=eval_every,
            bar=bar,
        )
        folder.mkdir(parents=True, exist_ok=True)
        _save_quietly(model, folder)
        meta = {
            "steps": steps,
            "batch": batch,
            "seq": seq,
            "lr": default_lr(hidden),
            "final_val_loss": run["loss"][-1],
            "curve_steps": run["steps"],
            "curve": run["loss"],
            "wall_s": run["wall_s"],
            "data_seed": 10_000,
        }
        meta_path.write_text(json.dumps(meta, indent=1))
    name = f"bench-{family}-{layers}x{hidden}-{corpus.digest[:8]}-s{steps}"
    info = reg.import_checkpoint(str(folder), name=name)
    return {
        "name": info.name,
        "trained_here": True,
        "config": info.config,
        "content_hash": info.content_hash,
        **meta,
    }


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
        seed=seed,
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
            source, layers=source_depth, hidden=hidden, method=baseline, seed=seed, device="cpu"
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
    return state, config, m.artifact.name


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
        raise ValueError(
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


def _save_quietly(model, folder: Path) -> None:
    """save_pretrained without transformers' own shard bar, which would cut through the
    benchmark's bar (and print before any error that follows)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder, safe_serialization=True)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


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
        raise ValueError(f"+dc/+ds/+dz need an integer depth ratio, not {now} -> {layers}")
    factor = big // small
    if rule == "identity" and layers < now:
        raise ValueError("+dz grows the depth; it has no rule for shrinking")
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
    from zoo.derive import _match_moments, signal_stats
    from zoo.families import get_family
    from zoo.transforms import resize

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
                t = _match_moments(t, *signal_stats(s))
            elif tuple(s.shape) != tuple(t.shape):
                t = resize(s, tuple(t.shape), method="dwt", wavelet="haar").to(t.dtype)
            else:
                t = s.clone()
        out[key] = t
    return fam.from_signals(out, config)


# --- the benchmark ---------------------------------------------------------------------


def run_transfer(
    family: str,
    direction: str,
    source_size: str | Sequence[int] = "4x128",
    target_size: str | Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 3,
    steps: int = 400,
    *,
    source: str | None = None,
    home: str | os.PathLike[str] | None = None,
    source_steps: int = 600,
    source_batch: int | None = None,
    batch: int = 16,
    seq: int = 64,
    lr: float | None = None,
    eval_every: int = 10,
    warmup: float = 0.1,
    val_windows: int = 64,
    dct_keep: float | None = None,
    max_bytes: int | None = 32_000_000,
    cache_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    target_method: str | None = None,
    progress: bool = True,
    threads: int | None = None,
    tag: str | None = None,
) -> dict[str, Any]:
    """Run the transfer benchmark; returns the report (also written as JSON + PNG).

    Args:
        family: ``gpt2`` or ``llama`` (causal LM), or ``bert`` (masked LM).
        direction: ``l2s`` (target smaller) or ``s2l`` (target larger).
        source_size, target_size: ``"LAYERSxHIDDEN"``; target defaults to half (l2s) or
            double (s2l) the source on both axes.
        methods: method names (module doc); default :func:`default_methods`.
        seeds: a count (seeds 0..n-1) or explicit seeds; each seed fixes the data order,
            the mask draws and the random inits, and is shared by every method.
        steps: training steps per run (every method, every seed).
        source: a registered source in ``home`` to use instead of training one.
        home: ZOO_HOME of the registry (default a fresh temporary one).
        source_steps: training budget of a source trained here.
        source_batch: its batch size (default ``batch``).
        batch, seq: tokens per step are ``batch * seq``.
        lr: peak AdamW learning rate of the target (default :func:`default_lr`).
        eval_every: validation every this many steps (steps-to-reach resolution).
        warmup: the targets' linear warmup, a fraction of ``steps`` (at least 10 steps).
        val_windows: validation windows (fixed, held-out files).
        dct_keep: FRONT keep ratio (default: target/source ratio, capped at 1).
        cache_dir: where trained sources are kept for reuse (default under ``home``).
        out_dir: write ``transfer-<family>-<direction>.json`` and ``.png`` there.
        target_method: the method the targets are checked for (default: zoo's default).
        progress: a tqdm bar on stderr.
        threads: torch threads (default: leave as is).
        tag: appended to the output file names (``transfer-gpt2-l2s-TAG.json``).
    """
    import zoo

    if threads:
        torch.set_num_threads(threads)
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} not benchmarked; choose one of {FAMILIES}")
    if direction not in ("l2s", "s2l"):
        raise ValueError("direction must be l2s or s2l")
    src_size = parse_size(source_size)
    if target_size is None:
        f = 0.5 if direction == "l2s" else 2
        target_size = (int(src_size[0] * f), int(src_size[1] * f))
    tgt_size = parse_size(target_size)
    grows = tgt_size[0] > src_size[0] or tgt_size[1] > src_size[1]
    if grows != (direction == "s2l"):
        raise ValueError(f"{src_size} -> {tgt_size} is not {direction}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    specs = {s.name: s for s in map(parse_method, methods or default_methods(direction))}
    if "scratch" not in specs:
        specs = {"scratch": parse_method("scratch"), **specs}
    if dct_keep is None:
        dct_keep = min(1.0, tgt_size[1] / src_size[1])
    lr = lr or default_lr(tgt_size[1])
    if target_method is None:
        target_method = zoo_default_method(family, src_size, tgt_size)

    tmp = tempfile.TemporaryDirectory(prefix="zoo-bench-") if home is None else None
    home_path = Path(home) if home is not None else Path(tmp.name)
    cache = Path(cache_dir) if cache_dir is not None else home_path / "bench-sources"
    out_path = Path(out_dir) if out_dir is not None else None
    stem = f"transfer-{family}-{direction}" + (f"-{tag}" if tag else "")
    t_start = time.perf_counter()
    corpus = bdata.load_corpus(max_bytes=max_bytes)
    val = bdata.valid_set(corpus, n=val_windows, seq=seq)
    reg = zoo.connect(home=home_path)
    report: dict[str, Any] = {
        "benchmark": "transfer",
        "family": family,
        "direction": direction,
        "source_size": list(src_size),
        "target_size": list(tgt_size),
        "steps": steps,
        "seeds": seed_list,
        "batch": batch,
        "seq": seq,
        "tokens_per_step": batch * seq,
        "lr": lr,
        "eval_every": eval_every,
        "val_windows": val_windows,
        "dct_keep": dct_keep,
        "schedule": f"AdamW(0.9,0.95, wd 0.01 on matrices), warmup {warmup:.0%} (at least "
        "10 steps) then cosine to 10%, grad clip 1.0",
        "warmup": warmup,
        "objective": "causal LM" if family in CAUSAL else "masked LM (15%, 80/10/10)",
        "data": {
            "corpus": "python stdlib *.py (no site-packages), bytes + specials",
            "root": corpus.root,
            "files": corpus.n_files,
            "digest": corpus.digest,
            "train_tokens": len(corpus.train),
            "valid_tokens": len(corpus.valid),
            "vocab": bdata.VOCAB,
        },
        "machine": machine(),
        "target_method": target_method,
        "steps_rule": STEPS_RULE,
        "partial": True,
    }
    total = len(specs) * len(seed_list) * steps + (0 if source else source_steps)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=stem, unit="step", leave=False)
    try:
        src = obtain_source(
            reg,
            family,
            src_size,
            corpus=corpus,
            source=source,
            steps=source_steps,
            batch=source_batch or batch,
            seq=seq,
            val=val,
            eval_every=max(eval_every, 25),
            cache_dir=cache,
            bar=bar,
        )
        report["source"] = {k: v for k, v in src.items() if k != "config"}
        src_info = reg.show(src["name"])
        from zoo.api import tensors as tio

        source_state = (src_info.config, tio.load_tensors(reg.store, src_info.tensors))
        runs: dict[str, list[dict[str, Any]]] = {}
        flops = None
        for name, spec in specs.items():
            runs[name] = []
            for seed in seed_list:
                t0 = time.perf_counter()
                state, config, derived = initialize(
                    reg,
                    family,
                    src["name"],
                    spec,
                    tgt_size,
                    seed=seed,
                    dct_keep=dct_keep,
                    source_state=source_state,
                )
                model = build_model(family, config)
                load_state(model, family, state)
                t_init = time.perf_counter() - t0
                if flops is None:
                    flops = flops_per_step(model, family, batch, seq)
                    report["flops_per_step"] = flops
                    report["target_config"] = config
                run = train(
                    model,
                    family,
                    corpus,
                    steps=steps,
                    seed=seed,
                    batch=batch,
                    seq=seq,
                    lr=lr,
                    val=val,
                    eval_every=eval_every,
                    bar=bar,
                    warmup=warmup,
                )
                run.update(seed=seed, materialize_s=t_init, derived=derived)
                runs[name].append(run)
            report.update(summarize(runs, specs, steps, flops))
            report["wall_s"] = time.perf_counter() - t_start
            if out_path is not None:
                write_report(report, out_path, stem)
    finally:
        if bar is not None:
            bar.close()
        reg.close()
        if tmp is not None:
            tmp.cleanup()
    add_targets(report)
    report["partial"] = False
    report["wall_s"] = time.perf_counter() - t_start
    if out_path is not None:
        write_report(report, out_path, stem)
        plot(report, out_path / f"{stem}.png")
    return report


def write_report(report: dict[str, Any], out_dir: Path, stem: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=True, default=str))
    tmp.replace(path)
    return path


def plot(report: dict[str, Any], path: Path) -> Path:
    """Mean validation loss per method (band: one seed std); right panel zooms on the end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = report["methods"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    finals = [m["final_mean"] for m in methods.values()]
    order = sorted(methods, key=lambda n: methods[n]["final_mean"])
    for ax, zoom in zip(axes, (False, True), strict=True):
        for i, name in enumerate(order):
            m = methods[name]
            style = "--" if m["baseline"] else (":" if name == "scratch" else "-")
            color = "black" if name == "scratch" else plt.cm.tab20(i % 20)
            xs, ys, sd = m["curve_steps"], m["curve_mean"], m["curve_std"]
            ax.plot(xs, ys, style, color=color, label=f"{name} ({m['final_mean']:.3f})", lw=1.4)
            ax.fill_between(
                xs,
                [y - s for y, s in zip(ys, sd, strict=True)],
                [y + s for y, s in zip(ys, sd, strict=True)],
                color=color,
                alpha=0.15,
            )
        ax.set_xlabel("training step")
        ax.set_ylabel("validation loss (nats/token)")
        ax.grid(alpha=0.3)
        if zoom:
            half = report["steps"] // 2
            ax.set_xlim(half, report["steps"])
            lo = min(finals)
            hi = max(max(finals), min(finals) + 0.05)
            ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.3 * (hi - lo))
            ax.set_title("second half (zoom)")
        else:
            ax.set_title(
                f"{report['family']} {report['direction'].upper()} "
                f"{report['source_size'][0]}x{report['source_size'][1]} -> "
                f"{report['target_size'][0]}x{report['target_size'][1]}, "
                f"{len(report['seeds'])} seeds"
            )
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "not reached"
    return f"{100 * x:.0f}%" if pct else f"{x:.0f}"


def markdown_table(report: dict[str, Any]) -> str:
    """One row per method, best final loss first (the table of transfer.md)."""
    methods = report["methods"]
    base = report.get("best_baseline")
    lines = [
        "| method | final loss (mean ± std) | step-0 loss | steps to scratch final | "
        f"steps to {base or 'baseline'} final | saved vs scratch | saved vs baseline | "
        "vs scratch | vs baseline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(methods, key=lambda n: methods[n]["final_mean"]):
        m = methods[name]
        label = f"**{name}**" if name == report.get("target_method") else name
        if m["baseline"]:
            label += " (baseline)"
        lines.append(
            f"| {label} | {m['final_mean']:.3f} ± {m['final_spread']:.3f} | "
            f"{m['loss0_mean']:.3f} | {_fmt(m['steps_to_scratch'])} | "
            f"{_fmt(m['steps_to_baseline'])} | {_fmt(m['saved_vs_scratch'], True)} | "
            f"{_fmt(m['saved_vs_baseline'], True)} | {m['verdict_vs_scratch'] or '-'} | "
            f"{m['verdict_vs_baseline'] or '-'} |"
        )
    return "\n".join(lines)
