"""How much of a registered source's function each grow method keeps at step 0.

For each method, the target is materialized through zoo (as ``zoo bench transfer`` does)
and run on validation windows of the source's English corpus; its last hidden states,
folded back to the source's width, are compared with the source's
(:mod:`zoo.bench.transfer.preservation`). Example, all-MiniLM-L6-v2 grown to BERT-base's
size:

    python benchmarks/bench_transfer_preservation.py --source minilm-l6 --target 12x768
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

METHODS = [
    "scratch",
    "hypercloning",
    "hypercloning+dz",
    "dwt:haar:none",
    "dct:none",
    "dwt:db2:fan+dz",
    "dwt:haar:exact",
    "dwt:haar:exact+dz",
    "dwt:haar:exact+hd",
    "dwt:db2:exact+dz",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", required=True, help="a registered source with a tokenizer")
    ap.add_argument("--target", default="12x768", help="LAYERSxHIDDEN")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--home", default=None, help="ZOO_HOME (default: the default registry)")
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args(argv)

    import torch

    import zoo
    from zoo.bench.transfer import data, parse_method, parse_size, source_tokenizer
    from zoo.bench.transfer.preservation import preservation
    from zoo.bench.transfer.report import machine

    reg = zoo.connect(home=args.home)
    t0 = time.perf_counter()
    try:
        from zoo.api import tensors as tio

        info = reg.show(args.source)
        corpus = data.load_text_corpus(source_tokenizer(reg, info))
        windows = data.valid_set(corpus, n=args.windows, seq=args.seq)
        state = (info.config, tio.load_tensors(reg.store, info.tensors))
        specs = {s.name: s for s in map(parse_method, args.methods.split(","))}
        result = preservation(
            reg,
            info.family,
            info.name,
            specs,
            parse_size(args.target),
            windows,
            source_state=state,
        )
    finally:
        reg.close()
    report = {
        "benchmark": "transfer-preservation",
        "source": args.source,
        "target": args.target,
        "windows": args.windows,
        "seq": args.seq,
        "corpus": corpus.name,
        "machine": machine(),
        "torch": torch.__version__,
        "wall_s": time.perf_counter() - t0,
        "methods": result,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    for name, r in sorted(result.items(), key=lambda kv: -kv[1]["cosine"]):
        print(f"{name:24s} {r['cosine']:.4f} ({r['layout']})", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
