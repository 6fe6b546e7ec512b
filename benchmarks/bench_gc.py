"""What ``zoo gc`` (and its dry run) costs on a store full of orphan blobs.

Orphans are written through the store of the code under test's newest version (as zoo
writes a blob), with no row naming them, as the blobs of removed artifacts are once no
kept one shares them: ``--blobs N --size BYTES`` of random bytes. Each code version
(``--code LABEL=REPO_ROOT``, several) runs ``reg.gc(grace=0, dry_run=...)`` in a fresh
process; measured: wall time, bytes read (a folder store: the file bytes the process
read, ``/proc/self/io`` rchar, of which
``read_bytes`` came from the disk; S3: the bytes of the GetObject answers), S3 requests by
operation, and the process's peak memory (VmHWM). A folder store's blobs are dropped
from the page cache (posix_fadvise) before each run, as after days on disk. A real gc
removes what it sweeps, so the orphans are written again before each gc after the first.

    python benchmarks/bench_gc.py --store folder|s3 --blobs 20 --size 200M \\
        --code old=/path/to/old/checkout --code new=. [--write-with .] [--out NAME]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

CHILD = r"""
import json, os, sys, time, collections
import zoo
reg = zoo.connect()
store = reg.store
counts = collections.Counter()
got = [0]
if store.remote:
    fs = store.fs
    fs.connect(refresh=False) if hasattr(fs, "connect") else None
    def seen(http_response=None, parsed=None, model=None, **_):
        counts[model.name] += 1
        if model.name == "GetObject" and parsed is not None:
            got[0] += int(parsed.get("ContentLength") or 0)
    fs.s3.meta.events.register("after-call.s3.*", seen)
def io():
    with open("/proc/self/io") as f:
        found = dict(l.split(": ") for l in f.read().splitlines())
    return int(found["rchar"]), int(found["read_bytes"])
def hwm():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmHWM")).split()[1])
before = io()
t = time.perf_counter()
report = reg.gc(grace=0, dry_run=sys.argv[1] == "dry")
wall = time.perf_counter() - t
read = [a - b for a, b in zip(io(), before)]
print(json.dumps({
    "wall_s": round(wall, 3),
    "bytes_read": got[0] if store.remote else read[0],
    "disk_bytes_read": read[1],
    # VmHWM, not ru_maxrss: that one keeps the forking parent's peak (moto's objects).
    "peak_rss_mb": round(hwm() / 1024, 1),
    "swept": len(report.swept),
    "quarantined": len(getattr(report, "quarantined", ())),
    "requests": dict(counts),
}))
"""

WRITE = r"""
import os, sys, zoo
reg = zoo.connect()
n, size = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    reg.store.put(os.urandom(size))
"""


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def run(code: Path, script: str, args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**env, "PYTHONPATH": str(code)},
        cwd=code,  # python -c looks in its folder first
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return done.stdout


def drop_cache(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", choices=["folder", "s3"], required=True)
    ap.add_argument("--blobs", type=int, required=True)
    ap.add_argument("--size", type=parse_size, required=True)
    ap.add_argument("--code", action="append", required=True, help="LABEL=REPO_ROOT")
    ap.add_argument("--write-with", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None, help="append the rows to results/NAME.json")
    args = ap.parse_args()
    codes = [(c.split("=", 1)[0], Path(c.split("=", 1)[1]).resolve()) for c in args.code]
    writer = Path(args.write_with).resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-gc-", dir=args.workdir))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    env.update(ZOO_HOME=str(work / "home"), ZOO_DB_URL=f"sqlite:///{work}/zoo.db")
    server = None
    if args.store == "s3":
        import logging

        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{server._server.server_port}"
        env.update(
            ZOO_S3_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
        )
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            region_name="us-east-1",
        ).create_bucket(Bucket="bench")
        env["ZOO_STORE_URL"] = "s3://bench/zoo"
    else:
        env["ZOO_STORE_URL"] = str(work / "blobs")
    rows = []
    try:
        for dry in (True, False):
            for label, code in codes:
                # The dry runs leave the orphans for the first gc; each later gc gets its own.
                if not rows or (not dry and rows[-1]["command"] == "gc"):
                    t = time.perf_counter()
                    run(writer, WRITE, [str(args.blobs), str(args.size)], env)
                    wrote = time.perf_counter() - t
                    print(f"wrote {args.blobs} x {args.size} B in {wrote:.1f} s", flush=True)
                    time.sleep(1.1)  # older than grace 0 where times are whole seconds
                if args.store == "folder":
                    drop_cache(work / "blobs")
                row = json.loads(run(code, CHILD, ["dry" if dry else "gc"], env))
                row.update(
                    code=label,
                    commit=subprocess.run(
                        ["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
                        capture_output=True,
                        text=True,
                    ).stdout.strip()
                    + (
                        "+wip"
                        if subprocess.run(
                            ["git", "-C", str(code), "diff", "--quiet", "HEAD"]
                        ).returncode
                        else ""
                    ),
                    command="gc --dry-run" if dry else "gc",
                    store=args.store,
                    blobs=args.blobs,
                    blob_bytes=args.size,
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    if args.out:
        from zoo.bench.machine import cpu_model

        path = RESULTS / f"{args.out}.json"
        doc = json.loads(path.read_text()) if path.exists() else {"runs": []}
        doc["machine"] = (
            f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        )
        doc["date"] = datetime.date.today().isoformat()
        doc["runs"] += rows
        path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
