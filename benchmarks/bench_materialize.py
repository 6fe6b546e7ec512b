"""Materialize time against loading a same-size safetensors checkpoint, in one run.

A BERT-base-sized source (12 x 768, random weights in HF layout) is registered and its
learngenes extracted; then for each method the time of `materialize` (API call, tensors on
the device, nothing written) is compared with loading a checkpoint of the *target's* size
with safetensors onto the same device. Goal (issue 4): a ratio of at most 1.5 for haar on
CPU and on GPU.

    python benchmarks/bench_materialize.py [--device cuda] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from zoo.bench.machine import cpu_model

RESULTS = Path(__file__).parent / "results"


def machine(device: str) -> dict:
    cpu = cpu_model()
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_together(fns: dict, device: str, repeats: int) -> dict[str, float]:
    """Median seconds of each function, run in turns (a, b, c, a, b, c, ...) so that a
    slow spell of a shared machine hits every one of them alike."""
    for fn in fns.values():
        fn()  # warm-up: caches, allocator, lazy imports
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[key].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    args = parser.parse_args()

    import transformers
    from safetensors.torch import load, load_file, save_file

    import zoo

    work = Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    cfg = transformers.BertConfig(
        num_hidden_layers=args.layers,
        hidden_size=args.hidden,
        num_attention_heads=args.hidden // 64,
        intermediate_size=4 * args.hidden,
    )
    torch.manual_seed(0)
    transformers.BertForMaskedLM(cfg).save_pretrained(work / "source")
    reg = zoo.connect(home=work / "home")
    src = reg.import_checkpoint(work / "source")
    haar = reg.extract(src.name, method="dwt", wavelet="haar", levels=1)
    db2 = reg.extract(src.name, method="dwt", wavelet="db2", levels=1)
    dct = reg.extract(src.name, method="dct", keep=0.5)

    L, H = args.layers, args.hidden
    cases = [
        (
            "haar L2S (band, fan rescale)",
            haar.name,
            dict(layers=L // 2, hidden=H // 2, rescale="fan"),
        ),
        ("db2 L2S (band, BERT's default: raw)", db2.name, dict(layers=L // 2, hidden=H // 2)),
        (
            "haar L2S (band, raw: BoT as published)",
            haar.name,
            dict(layers=L // 2, hidden=H // 2, rescale="none"),
        ),
        ("dct L2S (learngene block)", dct.name, dict(layers=L // 2, hidden=H // 2)),
        (
            "haar S2L (from source)",
            src.name,
            dict(layers=2 * L, hidden=2 * H, method="dwt", wavelet="haar"),
        ),
        (
            "weight-selection L2S",
            src.name,
            dict(layers=L // 2, hidden=H // 2, method="weight-selection"),
        ),
    ]
    from zoo.api.tensors import load_tensors

    rows = []
    for label, name, kwargs in cases:
        stored = reg.materialize(name, device=args.device, store=True, **kwargs)
        target = work / f"target-{len(rows)}.safetensors"
        save_file(
            {k: v.detach().cpu().contiguous().clone() for k, v in stored.state_dict.items()},
            target,
        )
        recs = stored.artifact.tensors
        t = timed_together(
            {
                "materialize": lambda n=name, kw=kwargs: reg.materialize(
                    n, device=args.device, **kw
                ),
                "lazy": lambda p=target: load_file(p, device=args.device),
                "eager": lambda p=target: {
                    k: v.to(args.device) for k, v in load(p.read_bytes()).items()
                },
                "registry": lambda r=recs: load_tensors(reg.store, r, device=args.device),
            },
            args.device,
            args.repeats,
        )
        mat = t["materialize"]
        mb = target.stat().st_size / 2**20
        rows.append(
            {
                "case": label,
                "target_mb": round(mb, 1),
                "materialize_s": round(mat, 4),
                "load_s": round(t["lazy"], 4),
                "eager_load_s": round(t["eager"], 4),
                "registry_load_s": round(t["registry"], 4),
                "ratio": round(mat / t["lazy"], 2),
                "ratio_vs_eager_load": round(mat / t["eager"], 2),
                "ratio_vs_registry_load": round(mat / t["registry"], 2),
            }
        )
        print(
            f"{label:40s} {mb:7.1f} MB  materialize {mat * 1e3:7.1f} ms  "
            f"lazy load {t['lazy'] * 1e3:6.1f} ms  eager load {t['eager'] * 1e3:6.1f} ms "
            f"({mat / t['eager']:4.1f}x)  registry load {t['registry'] * 1e3:6.1f} ms "
            f"({mat / t['registry']:4.2f}x)",
            flush=True,
        )

    report = {
        "machine": machine(args.device),
        "source": f"bert {L}x{H}",
        "repeats": args.repeats,
        "rows": rows,
        "note": "materialize = the full API call: resolve, read bands or source blobs "
        "(sha256-verified), transform, rebuild the state dict, hash every output tensor "
        "that is not a stored tensor unchanged, and record the derived checkpoint. "
        "Yardsticks, for a safetensors file of the target's size in the page cache: lazy = "
        "safetensors.torch.load_file (on CPU it maps the file; no byte is read until used), "
        "eager = safetensors.torch.load of the file's bytes (every byte read into memory "
        "owned by the tensors), registry = zoo reading the same checkpoint from its store "
        "(every byte read and sha256-verified). Each case's four timings run in turns.",
    }
    RESULTS.mkdir(exist_ok=True)
    stem = f"materialize-{args.device}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# materialize vs load ({args.device})",
        "",
        f"Machine: {report['machine']}",
        "",
        "| case | target MB | materialize ms | lazy load ms | ratio | eager load ms | ratio "
        "| registry load ms (sha256-verified) | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['case']} | {r['target_mb']} | {r['materialize_s'] * 1e3:.1f} | "
        f"{r['load_s'] * 1e3:.1f} | {r['ratio']} | {r['eager_load_s'] * 1e3:.1f} | "
        f"{r['ratio_vs_eager_load']} | {r['registry_load_s'] * 1e3:.1f} | "
        f"{r['ratio_vs_registry_load']} |"
        for r in rows
    ]
    lines += ["", report["note"], "", f"Load average after the run: {os.getloadavg()}"]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
