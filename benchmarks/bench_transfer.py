"""Run the transfer benchmarks on small sources trained here (GPT-2 / BERT by default, llama
on request; L2S / S2L), or join reports made apart, and write JSON + PNG under results/.

A thin script around :func:`zoo.bench.transfer.run_transfer`; see benchmarks/results/
transfer.md for the settings used and the results. Real checkpoints run through
``zoo bench transfer --source NAME`` (the same function). Examples:

    python benchmarks/bench_transfer.py --only gpt2-l2s --steps-l2s 400
    python benchmarks/bench_transfer.py --merge a.json b.json --out results --tag minilm
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

L2S = [
    "scratch",
    "weight-selection",
    "dwt:haar:none",
    "dwt:db2:none",
    "dwt:bior6.8:none",
    "dwt:haar:none+nm",
    "dwt:db2:none+nm",
    "weight-selection+nd",
    "dwt:db2:std",
    "dwt:db2:fan",
    "dct:none",
]
S2L = [
    "scratch",
    "hypercloning",
    "dwt:haar:none",
    "dwt:db2:none",
    "dwt:bior6.8:none",
    "dwt:db2:none+nm",
    "dwt:haar:fan",
    "dwt:db2:fan",
    "dct:none",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", action="append", help="e.g. gpt2-l2s (repeatable)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps-l2s", type=int, default=400)
    ap.add_argument("--steps-s2l", type=int, default=250)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--l2s", default="4x128:2x64", help="SOURCE:TARGET sizes")
    ap.add_argument("--s2l", default="2x64:4x128", help="SOURCE:TARGET sizes")
    ap.add_argument("--source-steps", default="4x128:1000,2x64:1500")
    ap.add_argument("--source-batch", type=int, default=32)
    ap.add_argument("--lr", type=float, help="peak learning rate (default: per size)")
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--warmup", type=float, default=0.1, help="warmup, fraction of the steps")
    ap.add_argument("--val-windows", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--home", default=None, help="ZOO_HOME for the run (default temporary)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "zoo-bench"))
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--methods", help="comma-separated; default the lists above")
    ap.add_argument("--tag", help="suffix of the output file names")
    ap.add_argument("--merge", nargs="+", help="reports of one setting to join (no training)")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out), args.tag)

    from zoo.bench.transfer import run_transfer

    src_steps = dict(kv.split(":") for kv in args.source_steps.split(","))
    todo = [f"{f}-{d}" for d in ("l2s", "s2l") for f in ("gpt2", "bert")]
    for job in args.only or todo:
        family, direction = job.split("-")
        src, tgt = (args.l2s if direction == "l2s" else args.s2l).split(":")
        report = run_transfer(
            family,
            direction,
            src,
            tgt,
            methods=args.methods.split(",")
            if args.methods
            else (L2S if direction == "l2s" else S2L),
            tag=args.tag,
            seeds=args.seeds,
            steps=args.steps_l2s if direction == "l2s" else args.steps_s2l,
            source_steps=int(src_steps.get(src, 600)),
            source_batch=args.source_batch,
            batch=args.batch,
            seq=args.seq,
            lr=args.lr,
            eval_every=args.eval_every,
            warmup=args.warmup,
            val_windows=args.val_windows,
            home=args.home,
            cache_dir=args.cache,
            out_dir=args.out,
            threads=args.threads,
        )
        print(
            json.dumps(
                {"job": job, "wall_s": report["wall_s"], "targets": report["targets"]}, default=str
            ),
            file=sys.stderr,
        )
    return 0


def merge(paths, out: Path, tag: str | None) -> int:
    from zoo.bench.transfer import markdown_table, merge_reports, plot, write_report

    report = merge_reports([json.loads(Path(p).read_text()) for p in paths])
    stem = f"transfer-{report['family']}-{report['direction']}" + (f"-{tag}" if tag else "")
    write_report(report, out, stem)
    plot(report, out / f"{stem}.png")
    print(markdown_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
