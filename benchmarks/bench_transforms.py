"""Benchmark zoo.transforms against PyWavelets and SciPy on BERT-base-sized signals.

Measures, for a layer-stacked signal (12 x 768 x 3072 and 12 x 768 x 768, fp32):
one DWT level over all three axes down (``dwt_approx``) and up (``idwt_zero``) for haar,
db2 and bior6.8; the DCT resize halving every axis and back; and a plain tensor copy of
the input's bytes as the bandwidth yardstick, three ways: into a preallocated tensor
(``y.copy_(x)``, the pure bandwidth figure), ``x.clone()`` (torch's own allocation: a fresh
large CPU tensor is faulted in 4 KiB at a time), and a huge-page-hinted allocation plus
the copy (``zoo.transforms._memory.empty``, the same allocation policy NumPy uses for
PyWavelets' and SciPy's outputs). Reports the median of several repeats after warmup;
``--runs N`` repeats the whole measurement N times and keeps each case's median run.
Writes ``benchmarks/results/transforms-<device>.json`` and a short ``.md`` table.

References: ``pywt.wavedecn(level=1)`` (computes all 2**3 bands: PyWavelets has no
approximation-only N-D call) and ``pywt.idwtn`` with the detail bands absent (zeros,
PyWavelets skips them); ``scipy.fft.dctn``/``idctn(norm="ortho")`` with truncation or
zero-padding. References always run on the CPU with their default (single) worker.

Floors (zoo's speed goals; reported, not asserted): haar >= 20x PyWavelets and >= half the
copy bandwidth (time <= 2x the preallocated copy; the allocation-included ratio is
reported next to it); db2, bior6.8 and the DCT >= 2x their reference.

Usage: python benchmarks/bench_transforms.py [--device cuda] [--repeats 7] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pywt
import scipy
import scipy.fft as sfft
import torch

from zoo._memory import empty as alloc_like
from zoo.bench.machine import cpu_model
from zoo.transforms import dct_resize, dwt_approx, idwt_zero

AXES = (0, 1, 2)
WAVELETS = ("haar", "db2", "bior6.8")
SHAPES = ((12, 768, 3072), (12, 768, 768))
FLOORS = {"haar": 20.0, "db2": 2.0, "bior6.8": 2.0, "dct": 2.0}
COPY_FLOOR = 0.5  # copy_time / zoo_time: at least half the copy bandwidth


def _timer(fn, *, repeats: int, warmup: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_info(device: str) -> dict:
    cpu = cpu_model()
    info = {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "pywavelets": pywt.__version__,
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _cases(x: torch.Tensor, shape: tuple[int, ...]) -> list:
    xn = x.cpu().numpy()
    half = tuple(n // 2 for n in shape)
    zero = dict.fromkeys(("aad", "ada", "add", "daa", "dad", "dda", "ddd"))
    cases = []
    for w in WAVELETS:
        ca = dwt_approx(x, axes=AXES, wavelet=w)
        can = ca.cpu().numpy()
        cases.append(
            (
                w,
                "down",
                lambda w=w: dwt_approx(x, axes=AXES, wavelet=w),
                lambda w=w: pywt.wavedecn(xn, w, mode="periodization", level=1, axes=AXES),
            )
        )
        cases.append(
            (
                w,
                "up",
                lambda w=w, ca=ca: idwt_zero(ca, axes=AXES, wavelet=w),
                lambda w=w, can=can: pywt.idwtn(
                    {"aaa": can, **zero}, w, mode="periodization", axes=AXES
                ),
            )
        )
    xs = dct_resize(x, half)
    xsn = xs.cpu().numpy()

    def scipy_down():
        c = sfft.dctn(xn, norm="ortho")
        return sfft.idctn(c[: half[0], : half[1], : half[2]], norm="ortho")

    def scipy_up():
        c = np.zeros(shape, dtype=xsn.dtype)
        c[: half[0], : half[1], : half[2]] = sfft.dctn(xsn, norm="ortho")
        return sfft.idctn(c, norm="ortho")

    cases.append(("dct", "down", lambda: dct_resize(x, half), scipy_down))
    cases.append(("dct", "up", lambda: dct_resize(xs, shape), scipy_up))
    return cases


def run(device: str, repeats: int, warmup: int, ref_repeats: int, shapes) -> dict:
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for shape in shapes:
        x = torch.randn(shape, generator=gen).to(dev)
        y = torch.empty_like(x)
        t_copy = _timer(lambda: y.copy_(x), repeats=repeats, warmup=warmup, sync=sync)  # noqa: B023
        # A transform returns a fresh tensor; allocating it (page faults on CPU) is part
        # of its cost, so clone() is reported as a second yardstick.
        t_clone = _timer(x.clone, repeats=repeats, warmup=warmup, sync=sync)
        t_alloc = _timer(
            lambda: alloc_like(x.shape, like=x).copy_(x),  # noqa: B023
            repeats=repeats,
            warmup=warmup,
            sync=sync,
        )
        for name, direction, ours, ref in _cases(x, shape):
            t_zoo = _timer(ours, repeats=repeats, warmup=warmup, sync=sync)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pywt: "level too high" for 12 layers
                t_ref = _timer(ref, repeats=ref_repeats, warmup=1, sync=lambda: None)
            ratio = t_ref / t_zoo
            row = {
                "shape": list(shape),
                "transform": name,
                "direction": direction,
                "zoo_ms": round(t_zoo * 1e3, 2),
                "reference_ms": round(t_ref * 1e3, 2),
                "copy_ms": round(t_copy * 1e3, 2),
                "clone_ms": round(t_clone * 1e3, 2),
                "alloc_copy_ms": round(t_alloc * 1e3, 2),
                "speedup": round(ratio, 2),
                "floor": FLOORS[name],
                "floor_met": ratio >= FLOORS[name],
            }
            extra = ""
            if name == "haar":
                row["copy_fraction"] = round(t_copy / t_zoo, 3)
                row["clone_fraction"] = round(t_clone / t_zoo, 3)
                row["alloc_copy_fraction"] = round(t_alloc / t_zoo, 3)
                row["copy_floor"] = COPY_FLOOR
                row["copy_floor_met"] = t_copy / t_zoo >= COPY_FLOOR
                extra = (
                    f"  copy {t_copy * 1e3:.1f} ms ({t_copy / t_zoo:.2f}), "
                    f"clone {t_clone * 1e3:.1f} ms ({t_clone / t_zoo:.2f}), "
                    f"alloc+copy {t_alloc * 1e3:.1f} ms ({t_alloc / t_zoo:.2f})"
                )
            rows.append(row)
            label = "x".join(map(str, shape))
            print(
                f"{label:>14} {name:>8} {direction:>4}: zoo {t_zoo * 1e3:8.1f} ms  "
                f"ref {t_ref * 1e3:8.1f} ms  x{ratio:6.1f} (floor {FLOORS[name]:g}){extra}",
                flush=True,
            )
    return {"rows": rows}


def write(result: dict, out_dir: Path, tag: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"transforms-{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        f"# zoo.transforms benchmark ({tag})",
        "",
        f"{m['cpu_model']}, {m['cpu_cores']} cores, torch {m['torch']} "
        f"({m['torch_threads']} threads), PyWavelets {m['pywavelets']}, SciPy {m['scipy']}"
        + (f", GPU {m['gpu']}" if "gpu" in m else ""),
        f"Load average (1/5/15 min) sampled before and after each of {result['runs']} run(s): "
        f"{result['load_samples']}. {result['note']}",
        f"Each row is the run with the median zoo time; within a run, medians of "
        f"{result['repeats']} repeats (references: {result['ref_repeats']}).",
        "",
        "| shape | transform | dir | zoo ms | ref ms | speedup | floor | met | copy ms "
        "| clone ms | alloc+copy ms | copy/zoo (>= 0.5) | clone/zoo | alloc+copy/zoo |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {'x'.join(map(str, r['shape']))} | {r['transform']} | {r['direction']} | "
            f"{r['zoo_ms']} | {r['reference_ms']} | {r['speedup']} | {r['floor']:g}x | "
            f"{'yes' if r['floor_met'] else 'NO'} | {r['copy_ms']} | {r['clone_ms']} | "
            f"{r['alloc_copy_ms']} | "
            + (
                f"{r['copy_fraction']} ({'yes' if r['copy_floor_met'] else 'NO'}) | "
                f"{r['clone_fraction']} | {r['alloc_copy_fraction']} |"
                if "copy_fraction" in r
                else "- | - | - |"
            )
        )
    (out_dir / f"transforms-{tag}.md").write_text("\n".join(lines) + "\n")


def _median_rows(runs: list[list[dict]]) -> list[dict]:
    """Per case, the run with the median zoo time (ratios stay those of one real run)."""
    if len(runs) == 1:
        return runs[0]
    out = []
    for rows in zip(*runs, strict=True):
        ranked = sorted(rows, key=lambda r: r["zoo_ms"])
        pick = dict(ranked[len(ranked) // 2])
        pick["zoo_ms_runs"] = [r["zoo_ms"] for r in rows]
        pick["reference_ms_runs"] = [r["reference_ms"] for r in rows]
        out.append(pick)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--ref-repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runs", type=int, default=1, help="whole-benchmark repeats (median run)")
    p.add_argument("--quick", action="store_true", help="only the 12x768x768 shape")
    p.add_argument("--note", default="", help="free text stored with the results")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was requested but CUDA is not available.")
    shapes = SHAPES[1:] if args.quick else SHAPES
    loads, runs = [_load()], []
    for i in range(args.runs):
        if args.runs > 1:
            print(f"run {i + 1}/{args.runs}, load average {loads[-1]}", flush=True)
        runs.append(run(args.device, args.repeats, args.warmup, args.ref_repeats, shapes))
        loads.append(_load())
    result = {"rows": _median_rows([r["rows"] for r in runs])}
    cores = os.cpu_count() or 1
    # Judged on the sample taken before the first run: later samples count this
    # benchmark's own threads.
    busy = (loads[0][0] if loads[0] else 0.0) > 0.5 * cores
    note = args.note or (
        "Machine was busy before the run (1-min load average above half the cores): "
        "timings are noisy."
        if busy
        else "Machine was idle before the run (later load samples include this benchmark)."
    )
    result = {
        "machine": machine_info(args.device),
        "load_before": loads[0],
        "load_after": loads[-1],
        "load_samples": loads,
        "runs": args.runs,
        "repeats": args.repeats,
        "ref_repeats": args.ref_repeats,
        "busy": busy,
        "note": note,
        **result,
    }
    tag = "cpu" if args.device == "cpu" else args.device.replace(":", "")
    write(result, args.out, tag)
    print(f"wrote {args.out / f'transforms-{tag}.json'}")


if __name__ == "__main__":
    main()
