"""The analysis of a run: spreads over seeds, steps to reach a loss, verdicts, targets.

Everything here works on the per-seed curves alone, so a saved report can be rescored
with these rules (:func:`rescore`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .methods import MethodSpec


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
    target in warmup and rise above it again at the peak learning rate (reports made before
    this rule took the first crossing)."""
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
    made before the stays-below rule; kept to recompute them)."""
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
    """The benchmark's targets for method ``name``: beat the best baseline beyond the
    spread, reach its final loss within 70% of its steps, save 50% of scratch's."""
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


#: Settings that must agree for runs to belong to one table (:func:`merge_reports`).
SAME_SETTINGS = (
    "family",
    "direction",
    "source_size",
    "target_size",
    "steps",
    "batch",
    "seq",
    "lr",
    "eval_every",
    "val_windows",
    "warmup",
    "dct_keep",
    "objective",
)


def merge_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report from runs of the same settings made separately (other seeds, other
    methods, in parallel processes): the per-seed curves are pooled by method and
    everything is recomputed from them. Refused when settings, data or source differ."""
    if not reports:
        raise ValueError("nothing to merge")
    first = reports[0]
    for other in reports[1:]:
        for key in SAME_SETTINGS:
            if other.get(key) != first.get(key):
                raise ValueError(f"reports differ in {key}: {first.get(key)} vs {other.get(key)}")
        if other["data"]["digest"] != first["data"]["digest"]:
            raise ValueError("reports read different corpora")
        if other["source"].get("name") != first["source"].get("name"):
            raise ValueError("reports start from different sources")
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for report in reports:
        if "runs" not in report:
            raise ValueError("a report without per-seed runs cannot be merged")
        for name, seeds in report["runs"].items():
            for run in seeds:
                runs.setdefault(name, {})[run["seed"]] = run
    from .methods import parse_method

    pooled = {name: [by_seed[k] for k in sorted(by_seed)] for name, by_seed in runs.items()}
    merged = {**first, "runs": pooled}
    merged["seeds"] = sorted({seed for by_seed in runs.values() for seed in by_seed})
    merged["wall_s"] = sum(r.get("wall_s", 0.0) for r in reports)
    merged["partial"] = any(r.get("partial") for r in reports)
    specs = {name: parse_method(name) for name in pooled}
    merged.update(summarize(pooled, specs, first["steps"], first["flops_per_step"]))
    add_targets(merged)
    return merged
