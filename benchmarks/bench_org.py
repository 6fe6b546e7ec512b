"""The organization-wide registry under load: many writers, kills, import throughput.

Three measurements, one run:

1. Writers held: 8 processes x N operations each (import / extract / materialize, on the
   same and on different checkpoints, started on one barrier) on SQLite + a local store,
   PostgreSQL + a local store and PostgreSQL + an S3-compatible server. Errors must be 0;
   latency per operation (p50 / p99 / max), and the time spent in write transactions
   (lock waits and retries included), are reported.
2. Kill points: ``zoo import`` / ``extract`` / ``materialize`` SIGKILLed at random points,
   then ``fsck`` + ``verify`` + every command again; inconsistencies must be 0.
3. Import throughput of a ~200 MB BERT checkpoint (random weights, HF layout) to the local
   store and to the S3 server, against a plain copy of the same bytes (``shutil.copy``,
   with and without fsync; one boto3 ``put_object``).

The S3 server is moto's (``moto_server``), started here on a free 127.0.0.1 port;
PostgreSQL comes from ``--pg`` or ``ZOO_TEST_DATABASE_URL`` (a fresh database per case).

    python benchmarks/bench_org.py [--ops 20] [--kills 40] [--params-m 52] [--pg URL]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path

from zoo.bench.machine import cpu_model

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tinymodels (tiny HF checkpoints), forklauncher

N_PROCS = 8
OPS = ("import", "extract", "materialize")


# --- the machine -------------------------------------------------------------------------


def machine() -> dict:
    cpu = cpu_model()
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
        ).stdout.strip()
        or None,
    }


def slug(info: dict) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")
    return f"{name}-{info['cores']}c"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else 0.0


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50_ms": round(1000 * pct(values, 0.5), 1),
        "p99_ms": round(1000 * pct(values, 0.99), 1),
        "max_ms": round(1000 * max(values, default=0.0), 1),
    }


# --- services: a fresh PostgreSQL database, the S3 server ---------------------------------


@contextlib.contextmanager
def pg_database(admin_url: str):
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"zoo_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def s3_server():
    """moto's S3-compatible server in its own process; sets the AWS env for zoo/boto."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        {
            "ZOO_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def new_bucket(endpoint: str) -> str:
    import boto3

    bucket = f"zoo-bench-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return bucket


# --- 1. writers held ---------------------------------------------------------------------


def checkpoints(root: Path) -> list[str]:
    """Same and different tiny checkpoints, sharing blobs and default names on purpose."""
    from tinymodels import save_tiny

    a = save_tiny("bert", root / "a" / "bert")
    b = save_tiny("gpt2", root / "gpt2")
    clash = save_tiny("bert", root / "b" / "bert", seed=1)  # same folder name
    twin = root / "twin"
    shutil.copytree(a, twin)  # same tensors, another config
    cfg = json.loads((twin / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-6
    (twin / "config.json").write_text(json.dumps(cfg))
    return [str(p) for p in (a, b, clash, twin)]


def _op(reg, op: str, ckpt: str, k: int):
    info = reg.import_checkpoint(ckpt)
    if op == "import":
        return info
    learngene = reg.extract(info.name)
    if op == "extract":
        return learngene
    return reg.materialize(learngene.name, layers=2, hidden=16, store=k % 2 == 0).artifact


def _writer(i, env, db_url, store_url, ckpts, n_ops, ops, barrier, queue) -> None:
    os.environ.clear()
    os.environ.update(env)
    try:
        import torch  # noqa: F401  (the transforms' lazy import is not an operation's cost)

        import zoo

        reg = zoo.connect(db_url=db_url, store_url=store_url)
        reg.list()
        tx_times: list[tuple[int, float]] = []
        transaction = reg.transaction
        current = [0]

        def timed_transaction(*args, **kwargs):
            start = time.perf_counter()
            try:
                return transaction(*args, **kwargs)
            finally:
                tx_times.append((current[0], time.perf_counter() - start))

        reg.transaction = timed_transaction
        barrier.wait(timeout=300)
        lat: list[tuple[str, int, float]] = []
        errors: list[str] = []
        for k in range(n_ops):
            current[0] = k
            op = ops[(i // 2 + k) % len(ops)]
            start = time.perf_counter()
            try:
                _op(reg, op, ckpts[(i + k) % len(ckpts)], k)
            except Exception:
                errors.append(traceback.format_exc(limit=3))
            lat.append((op, k, time.perf_counter() - start))
        reg.close()
        queue.put((i, {"lat": lat, "errors": errors, "tx": tx_times}))
    except BaseException:
        queue.put((i, {"lat": [], "errors": [traceback.format_exc()], "tx": []}))


def writers(db_url: str, store_url: str, ckpts: list[str], n_ops: int, ops=OPS) -> dict:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        [
            "zoo.api.catalog",
            "zoo.api.learngenes",
            "zoo.api.materialize",
            "zoo.transforms",
            "torch",
            "sqlalchemy.orm",
            "alembic.command",
        ]
    )
    barrier, queue = ctx.Barrier(N_PROCS), ctx.Queue()
    env = dict(os.environ)
    procs = [
        ctx.Process(
            target=_writer, args=(i, env, db_url, store_url, ckpts, n_ops, ops, barrier, queue)
        )
        for i in range(N_PROCS)
    ]
    start = time.perf_counter()
    for p in procs:
        p.start()
    reports = [queue.get(timeout=900)[1] for _ in procs]
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    lat = [x for r in reports for x in r["lat"]]
    errors = [e for r in reports for e in r["errors"]]
    tx = [x for r in reports for x in r["tx"]]

    import zoo

    reg = zoo.connect(db_url=db_url, store_url=store_url)
    fsck = reg.fsck(grace=0)
    stored = list(reg.store.digests())
    dup_blobs = len(stored) - len(set(stored))
    with reg.session() as s:
        from sqlalchemy import func, select

        from zoo.db.models import Artifact

        rows = s.execute(select(Artifact.kind, Artifact.content_hash)).all()
        sources = s.scalar(select(func.count()).where(Artifact.kind == "source"))
    reg.close()
    out = {
        "processes": N_PROCS,
        "ops_per_process": n_ops,
        "ops": len(lat),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": round(wall, 2),
        "all": summary([x for _, _, x in lat]),
        "by_op": {op: summary([x for o, _, x in lat if o == op]) for op in ops},
        "write_transactions": summary([x for _, x in tx]),
        # Each process's first operation pays one-time costs (SQL compilation, the first
        # transform) while it holds the write lock; the rest is the steady state.
        "warm": summary([x for _, k, x in lat if k > 0]),
        "warm_write_transactions": summary([x for k, x in tx if k > 0]),
        "duplicate_rows": len(rows) - len(set(rows)),
        "sources": sources,
        "duplicate_blobs": dup_blobs,
        "fsck_problems": len(fsck.problems),
        "leftover_temp_files": len(fsck.temp_files),
    }
    return out


# --- 2. kill points ----------------------------------------------------------------------

from forklauncher import LAUNCHER  # noqa: E402  (tests/ is on sys.path from here on)


def kill_points(
    db_url: str, store_url: str, ckpt: Path, small: str, n_kills: int, workdir: Path, seed: int = 1
) -> dict:
    """SIGKILL CLI commands at random points; then count what is inconsistent."""
    os.environ["ZOO_DB_URL"], os.environ["ZOO_STORE_URL"] = db_url, store_url
    rng = random.Random(seed)
    learngene = f"{ckpt.name}-lg"
    commands = [
        ["import", str(ckpt)],
        ["import", small],
        ["extract", ckpt.name, "--name", learngene],
        ["materialize", learngene, "--layers", "2", "--hidden", "128", "--store"],
        ["materialize", learngene, "--layers", "3", "--hidden", "64"],
    ]
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert launcher.stdout.readline() == "ready\n"

    def ask(req: dict) -> int:
        launcher.stdin.write(json.dumps(req) + "\n")
        launcher.stdin.flush()
        return int(launcher.stdout.readline())

    kills, finished, bad_exits = 0, 0, []
    by_command: dict[str, int] = {}
    while kills < n_kills:
        n = kills + finished
        args = commands[n % len(commands)]
        log = workdir / f"kill-{n}.log"
        pid = ask({"run": args, "log": str(log)})
        time.sleep(rng.uniform(0.0, 0.8 if args[0] == "import" else 1.2))
        os.kill(pid, signal.SIGKILL)
        status = ask({"wait": pid})
        if os.WIFSIGNALED(status):
            kills += 1
            by_command[args[0]] = by_command.get(args[0], 0) + 1
            continue
        finished += 1
        if os.WEXITSTATUS(status) not in (0, 3):
            bad_exits.append(log.read_text()[-300:])
    launcher.stdin.close()
    launcher.wait()

    from zoo_cli.main import main

    import zoo

    reg = zoo.connect()
    fsck = reg.fsck(grace=0)
    verify = reg.verify()
    after_failures = 0
    for args in commands:
        try:
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                main(list(args))
        except SystemExit as exc:
            after_failures += exc.code not in (0, None)
    repaired = reg.fsck(repair=True, grace=0)
    final = reg.fsck(grace=0)
    reg.close()
    inconsistencies = (
        len(fsck.problems)
        + len(verify.problems)
        + after_failures
        + len(bad_exits)
        + len(final.problems)
        + len(final.temp_files)
    )
    return {
        "kills": kills,
        "by_command": by_command,
        "finished": finished,
        "missing_or_damaged_blobs": len(fsck.problems),
        "corrupt_or_partial_blobs": len(verify.problems),
        "commands_failing_after": after_failures,
        "unexpected_exits": len(bad_exits),
        "leftover_temp_files": len(fsck.temp_files),
        "orphan_blobs": len(fsck.orphans),
        "removed_by_repair": len(repaired.removed),
        "inconsistencies": inconsistencies,
    }


# --- 3. import throughput ----------------------------------------------------------------


def big_checkpoint(folder: Path, params_m: int) -> Path:
    """A BERT in HF layout with random weights, about ``params_m`` million parameters."""
    import torch
    import transformers

    layers = max(1, round((params_m - 24.2) / 7.1))  # 30522 x 768 embeddings + 7.1M/layer
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=layers,
        num_attention_heads=12,
        intermediate_size=3072,
    )
    torch.manual_seed(0)
    transformers.BertForMaskedLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def _mbps(nbytes: int, seconds: float) -> float:
    return round(nbytes / 2**20 / seconds, 1)


def throughput(ckpt: Path, workdir: Path, s3_endpoint: str, repeats: int) -> dict:
    import boto3

    import zoo

    files = sorted(ckpt.glob("*.safetensors"))
    nbytes = sum(f.stat().st_size for f in files)
    out: dict = {
        "checkpoint_mb": round(nbytes / 2**20, 1),
        "repeats": repeats,
        "note": "best of the repeats; import includes reading, hashing and fsync",
    }

    def best(fn) -> float:
        return min(fn() for _ in range(repeats))

    def local_import(reimport: bool = False) -> float:
        home = Path(tempfile.mkdtemp(dir=workdir))
        reg = zoo.connect(db_url=f"sqlite:///{home / 'zoo.db'}", store_url=str(home / "b"))
        reg.list()
        if reimport:
            reg.import_checkpoint(ckpt)
        t = time.perf_counter()
        reg.import_checkpoint(ckpt)
        dt = time.perf_counter() - t
        reg.close()
        shutil.rmtree(home)
        return dt

    def s3_import() -> float:
        home = Path(tempfile.mkdtemp(dir=workdir))
        url = f"s3://{new_bucket(s3_endpoint)}/zoo"
        reg = zoo.connect(db_url=f"sqlite:///{home / 'zoo.db'}", store_url=url)
        reg.list()
        t = time.perf_counter()
        reg.import_checkpoint(ckpt)
        dt = time.perf_counter() - t
        reg.close()
        shutil.rmtree(home)
        return dt

    def copy(fsync: bool) -> float:
        dst = Path(tempfile.mkdtemp(dir=workdir))
        t = time.perf_counter()
        for f in files:
            shutil.copy(f, dst / f.name)
            if fsync:
                with open(dst / f.name, "rb+") as fh:
                    os.fsync(fh.fileno())
        dt = time.perf_counter() - t
        shutil.rmtree(dst)
        return dt

    def s3_put() -> float:
        client = boto3.client("s3", endpoint_url=s3_endpoint)
        bucket = new_bucket(s3_endpoint)
        t = time.perf_counter()
        for f in files:
            client.put_object(Bucket=bucket, Key=f.name, Body=f.read_bytes())
        return time.perf_counter() - t

    for key, fn in [
        ("import_local", local_import),
        ("reimport_local_all_blobs_present", lambda: local_import(True)),
        ("copy_local", lambda: copy(False)),
        ("copy_local_fsync", lambda: copy(True)),
        ("import_s3", s3_import),
        ("put_s3_boto", s3_put),
    ]:
        seconds = best(fn)
        out[key] = {"seconds": round(seconds, 3), "mb_per_s": _mbps(nbytes, seconds)}
    return out


# --- report ------------------------------------------------------------------------------


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"# Organization-wide registry under load ({m['cpu']}, {m['cores']} cores)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python "
        f"{m['python']}, SQLite {m['sqlite']}; {m.get('date') or 'date not recorded'}, "
        f"commit {m.get('commit') or 'not recorded'}. Shared machine: other jobs ran too.",
        "",
        "## Writers held (8 processes on one barrier)",
        "",
        "| back end | ops | errors | p50 ms | p99 ms | max ms | tx p99 ms | tx max ms | "
        "dup rows | dup blobs | fsck problems |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, w in res["writers"].items():
        a, t = w["all"], w["write_transactions"]
        lines.append(
            f"| {name} | {N_PROCS} x {w['ops_per_process']} | {w['errors']} | "
            f"{a['p50_ms']} | {a['p99_ms']} | {a['max_ms']} | {t['p99_ms']} | "
            f"{t['max_ms']} | {w['duplicate_rows']} | {w['duplicate_blobs']} | "
            f"{w['fsck_problems']} |"
        )
    lines += ["", "Per operation (p50 / p99 / max ms):", ""]
    for name, w in res["writers"].items():
        parts = [
            f"{op} {s['p50_ms']} / {s['p99_ms']} / {s['max_ms']}"
            for op, s in w["by_op"].items()
            if s["n"]
        ]
        lines.append(f"- {name}: " + "; ".join(parts))
    lines += [
        "",
        "An operation's latency includes its CPU work (hashing, DWT, materializing) on "
        "a 2-core machine shared by 8 writers; *tx* is the time inside write "
        "transactions, lock waits and retries included.",
        "",
        "## Kill points (SIGKILL at random points)",
        "",
        "| back end | kills | by command | finished | inconsistencies | leftovers | orphans |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, k in res["kills"].items():
        lines.append(
            f"| {name} | {k['kills']} | {k['by_command']} | {k['finished']} | "
            f"{k['inconsistencies']} | {k['leftover_temp_files']} | "
            f"{k['orphan_blobs']} |"
        )
    t = res["throughput"]
    lines += [
        "",
        "Inconsistencies: rows pointing at missing blobs + partial/corrupt blobs + "
        "commands failing afterwards + unexpected exits + leftovers after repair.",
        "",
        f"## Import throughput ({t['checkpoint_mb']} MB BERT, best of {t['repeats']})",
        "",
        "| path | seconds | MB/s |",
        "|---|---|---|",
    ]
    for key, v in t.items():
        if isinstance(v, dict):
            lines.append(f"| {key} | {v['seconds']} | {v['mb_per_s']} |")
    lines += [
        "",
        "Import reads, hashes (sha256) and fsyncs every tensor; the plain copy does "
        "none of that (see copy_local_fsync). The S3 server is moto in one local "
        "process, so S3 numbers measure zoo's overhead, not a real object store.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20, help="operations per writer process")
    parser.add_argument("--s3-ops", type=int, default=6, help="operations per writer on S3")
    parser.add_argument("--kills", type=int, default=40, help="kills per database back end")
    parser.add_argument(
        "--params-m",
        type=int,
        default=52,
        help="million parameters of the throughput checkpoint (52 ~ 200 MB)",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pg", default=os.environ.get("ZOO_TEST_DATABASE_URL"))
    args = parser.parse_args()
    if not args.pg:
        parser.error("PostgreSQL is needed: pass --pg URL or set ZOO_TEST_DATABASE_URL")
    info = machine()
    res: dict = {"machine": info, "writers": {}, "kills": {}}
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp, s3_server() as endpoint:
        root = Path(tmp)
        os.environ["ZOO_HOME"] = str(root / "home")
        ckpts = checkpoints(root / "ckpts")
        print("writers: sqlite + local store", flush=True)
        res["writers"]["sqlite+local"] = writers(
            f"sqlite:///{root / 'w1.db'}", str(root / "w1-blobs"), ckpts, args.ops
        )
        print("writers: postgres + local store", flush=True)
        with pg_database(args.pg) as url:
            res["writers"]["postgres+local"] = writers(url, str(root / "w2-blobs"), ckpts, args.ops)
        print("writers: postgres + s3", flush=True)
        with pg_database(args.pg) as url:
            res["writers"]["postgres+s3"] = writers(
                url, f"s3://{new_bucket(endpoint)}/zoo", ckpts, args.s3_ops
            )

        from tinymodels import save_tiny

        medium = save_tiny(
            "bert",
            root / "bert-medium",
            hidden_size=256,
            intermediate_size=1024,
            vocab_size=4000,
            num_attention_heads=4,
            max_position_embeddings=128,
        )
        small = ckpts[1]
        print("kill points: sqlite", flush=True)
        res["kills"]["sqlite+local"] = kill_points(
            f"sqlite:///{root / 'k1.db'}", str(root / "k1-blobs"), medium, small, args.kills, root
        )
        print("kill points: postgres", flush=True)
        with pg_database(args.pg) as url:
            res["kills"]["postgres+local"] = kill_points(
                url, str(root / "k2-blobs"), medium, small, args.kills, root, seed=2
            )
        print("throughput", flush=True)
        big = big_checkpoint(root / "bert-big", args.params_m)
        res["throughput"] = throughput(big, root, endpoint, args.repeats)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"org-{slug(info)}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
