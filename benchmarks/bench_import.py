"""`zoo import` and `zoo audit` of a 410 MB checkpoint: wall time and peak memory, for
one or several checkouts of zoo, run in turns.

A BERT of 8 x 512 with a 150,000-token vocabulary (410 MB of float32, one 307 MB
embedding) is saved in HF layout. Each round runs, for each checkout in turn (a, b, a,
b, ...: a slow spell of a shared machine hits every one alike), a CLI process each of:

- ``zoo audit DIR/model.safetensors`` against a fresh, empty registry: every tensor
  hashed, then the float32 tensors read again to look for a narrower dtype (each refuses
  within its first values); "unknown";
- ``zoo import DIR`` into that registry (SQLite, local store): every tensor hashed,
  stored and fsync'd, the file's own hash computed.

The checkpoint stays in the page cache (as right after a trainer saved it). Peak memory
is the process's maximum resident set size (``wait4``'s, which ``/usr/bin/time -v``
prints). Compare a change with its parent: ``git worktree add /tmp/base HEAD~1``, then
``--checkout before=/tmp/base --checkout after=.``.

    python benchmarks/bench_import.py [--rounds 5] [--checkout [LABEL=]DIR ...] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT))

from zoo.bench.machine import cpu_model  # noqa: E402

CLI = "import sys; from zoo_cli.main import main; main(sys.argv[1:])"


MAKE = """
import sys, torch, transformers
cfg = transformers.BertConfig(
    vocab_size=150_000,
    hidden_size=512,
    num_hidden_layers=8,
    num_attention_heads=8,
    intermediate_size=2048,
)
torch.manual_seed(0)
transformers.BertModel(cfg).save_pretrained(sys.argv[1])
"""


def make_checkpoint(folder: Path) -> None:
    # In a process of its own: Linux carries a process's peak memory over into the
    # programs it starts, so this one must stay small for theirs to be measured.
    subprocess.run([sys.executable, "-c", MAKE, str(folder)], check=True, capture_output=True)


def shim(checkout: Path, work: Path, index: int) -> Path:
    """A folder that maps zoo_cli and zoo_migrations to ``checkout``'s cli/ and
    migrations/, as an installed zoo has them."""
    folder = work / f"shim-{index}"
    folder.mkdir(exist_ok=True)
    for name, target in (("zoo_cli", "cli"), ("zoo_migrations", "migrations")):
        link = folder / name
        if not link.exists():
            link.symlink_to(checkout / target)
    return folder


def run(
    checkout: Path, shim_dir: Path, home: Path, args: list[str], ok: int = 0
) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak resident bytes) of one CLI process, which exits
    with ``ok``."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{shim_dir}{os.pathsep}{checkout}",
        "ZOO_HOME": str(home),
    }
    env.pop("ZOO_DB_URL", None)
    env.pop("ZOO_STORE_URL", None)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-P", "-c", CLI, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != ok:
        raise SystemExit(f"zoo {' '.join(args)} ({checkout}) failed: {err.strip()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024  # Linux: KiB


def commit_of(checkout: Path) -> str:
    """The commit a checkout is at, ``+changes`` when its tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(checkout), "diff", "--quiet", "HEAD"], check=False
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return head + ("+changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--checkout",
        action="append",
        help="[LABEL=]DIR: a zoo checkout to time, in turns with the others (default: this one)",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    given = [c.split("=", 1) if "=" in c else [c, c] for c in args.checkout or [str(ROOT)]]
    labels = [label for label, _ in given]
    checkouts = [Path(folder).resolve() for _, folder in given]
    load = os.getloadavg()

    work = Path(tempfile.mkdtemp(prefix="zoo-bench-import-", dir=args.workdir))
    try:
        source = work / "source"
        make_checkpoint(source)
        weights = source / "model.safetensors"
        size = weights.stat().st_size
        shims = [shim(c, work, i) for i, c in enumerate(checkouts)]
        times: dict[tuple[int, str], list[tuple[float, float, int]]] = {}
        for r in range(args.rounds + 1):  # round 0 warms the page cache and imports
            for i, checkout in enumerate(checkouts):
                home = work / f"home-{r}-{i}"
                # audit first, against the empty registry: "unknown" (exit 10)
                for command, cli_args, ok in (
                    ("audit", ["audit", str(weights)], 10),
                    ("import", ["import", str(source)], 0),
                ):
                    measured = run(checkout, shims[i], home, cli_args, ok)
                    if r:
                        times.setdefault((i, command), []).append(measured)
                shutil.rmtree(home)
            if r:
                print(
                    f"round {r}: "
                    + ", ".join(f"{labels[i]} {c} {v[-1][0]:.2f} s" for (i, c), v in times.items()),
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        {
            "checkout": labels[i],
            "command": command,
            "median_s": round(statistics.median(t for t, _, _ in v), 3),
            "min_s": round(min(t for t, _, _ in v), 3),
            "max_s": round(max(t for t, _, _ in v), 3),
            "cpu_median_s": round(statistics.median(c for _, c, _ in v), 3),
            "cpu_min_s": round(min(c for _, c, _ in v), 3),
            "cpu_max_s": round(max(c for _, c, _ in v), 3),
            "peak_rss_mb": round(statistics.median(m for _, _, m in v) / 2**20, 1),
            "peak_rss_max_mb": round(max(m for _, _, m in v) / 2**20, 1),
        }
        for (i, command), v in sorted(times.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkouts": {labels[i]: commit_of(c) for i, c in enumerate(checkouts)},
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "checkpoint_mb": round(size / 1e6, 1),
        "rounds": args.rounds,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = "import-" + "-".join(cpu_model().lower().split()[:3]) + f"-{os.cpu_count()}c"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# zoo import and zoo audit of a {report['checkpoint_mb']} MB checkpoint",
        "",
        f"Machine: {report['machine']}; {report['date']}; checkouts: "
        + ", ".join(f"{label} = {commit}" for label, commit in report["checkouts"].items())
        + f"; {args.rounds} rounds, checkouts in turns. Produced by "
        "`python benchmarks/bench_import.py`.",
        "",
        "| command | checkout | wall s: median (min-max) | CPU s (user+sys): median "
        "(min-max) | peak RSS MB: median (max) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['command']} | {r['checkout']} | {r['median_s']} ({r['min_s']}-{r['max_s']}) | "
        f"{r['cpu_median_s']} ({r['cpu_min_s']}-{r['cpu_max_s']}) | {r['peak_rss_mb']} "
        f"({r['peak_rss_max_mb']}) |"
        for r in rows
    ]
    lines += [
        "",
        "CPU time is the process's own (user + system), which other work on a shared "
        "machine disturbs less than wall time.",
        "",
        f"Load average before the run: {load}; after: {os.getloadavg()}",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
