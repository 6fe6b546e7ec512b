"""What a run writes: the JSON report, the plot of mean loss curves, the markdown table,
and the machine it ran on.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from zoo.bench.machine import cpu_model


def machine(device: str = "cpu") -> dict[str, Any]:
    out = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.device(device).type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


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
