"""``zoo serve`` under load: 50 concurrent clients on the loopback for 60 s.

Each client loops over a weighted mix: list (``GET /api/artifacts``), show, lineage (JSON
and SVG), file downloads (``/{name}/resolve/main/model.safetensors``, as
``huggingface_hub`` does) and on-demand sizes (``/{name}/resolve/{LxH}/config.json``
for a few sizes, which the first requests materialize and the rest are served from the
cache). Reported per kind: count, errors, p50/p99/max latency; for the server: the
derivations it ran, duplicate runs of one request (must be 0), and its resident memory
sampled every 5 s (it must stay flat). Two back ends: SQLite + a local folder, and
PostgreSQL + moto's S3-compatible server (``--pg`` or ``ZOO_TEST_DATABASE_URL``).

    python benchmarks/bench_serve.py [--clients 50] [--seconds 60] [--pg URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tinymodels, zooserver
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_org import RESULTS, machine, new_bucket, pct, pg_database, s3_server, slug  # noqa: E402

SIZES = ("2x32", "3x64", "4x96", "6x64")
MIX = (  # kind, weight
    ("list", 3),
    ("show", 4),
    ("lineage", 3),
    ("download", 3),
    ("size", 3),
)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def prepare(env: dict) -> str:
    """A small BERT and its learngene in the server's registry; returns an admin token."""
    from tinymodels import save_tiny

    import zoo

    folder = Path(env["ZOO_HOME"]) / "bert-bench"
    save_tiny(
        "bert",
        folder,
        hidden_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        vocab_size=2000,
        max_position_embeddings=128,
    )
    reg = zoo.connect(
        home=env["ZOO_HOME"], db_url=env["ZOO_DB_URL"], store_url=env["ZOO_STORE_URL"]
    )
    try:
        reg.import_checkpoint(folder, name="bert-bench")
        reg.extract("bert-bench", name="bert-bench-db2")
        return reg.create_token("bench", role="read")[1]
    finally:
        reg.close()


failures: list[str] = []


async def client_loop(http: httpx.AsyncClient, until: float, rng: random.Random, log: list):
    kinds = [k for k, w in MIX for _ in range(w)]
    while time.monotonic() < until:
        kind = rng.choice(kinds)
        if kind == "list":
            url = "/api/artifacts"
        elif kind == "show":
            url = f"/api/artifacts/{rng.choice(['bert-bench', 'bert-bench-db2'])}"
        elif kind == "lineage":
            fmt = rng.choice(["json", "svg"])
            url = f"/api/artifacts/bert-bench/lineage?format={fmt}"
        elif kind == "download":
            url = "/bert-bench/resolve/main/model.safetensors"
        else:
            url = f"/bert-bench/resolve/{rng.choice(SIZES)}/config.json"
        start = time.monotonic()
        detail = None
        try:
            r = await http.get(url)
            await r.aread()
            if r.status_code != 200:
                detail = f"{url}: {r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            detail = f"{url}: {type(exc).__name__} {exc}"
        log.append((kind, time.monotonic() - start, detail is None))
        if detail and len(failures) < 20:
            failures.append(detail)


async def load(url: str, token: str, clients: int, seconds: float, pid: int) -> dict:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {token}"}
    log: list = []
    memory: list[tuple[float, int]] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=600) as http:
        t0 = time.monotonic()
        until = t0 + seconds

        async def sample():
            while time.monotonic() < until:
                memory.append((round(time.monotonic() - t0, 1), rss(pid)))
                await asyncio.sleep(5)

        tasks = [client_loop(http, until, random.Random(i), log) for i in range(clients)]
        await asyncio.gather(sample(), *tasks)
        wall = time.monotonic() - t0
        stats = (await http.get("/api/stats")).json()
    kinds = {}
    for kind, _ in MIX:
        lat = [d for k, d, _ok in log if k == kind]
        kinds[kind] = {
            "n": len(lat),
            "errors": sum(1 for k, _d, ok in log if k == kind and not ok),
            "p50_ms": round(1000 * pct(lat, 0.5), 1),
            "p99_ms": round(1000 * pct(lat, 0.99), 1),
            "max_ms": round(1000 * max(lat, default=0), 1),
        }
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(log),
        "errors": sum(1 for *_x, ok in log if not ok),
        "requests_per_s": round(len(log) / wall, 1),
        "kinds": kinds,
        "derivations": stats["derivations"],
        "distinct_derivations": stats["distinct_derivations"],
        "duplicate_derivations": stats["duplicate_derivations"],
        "rss_mib": [(t, round(b / 2**20, 1)) for t, b in memory],
        "failures": list(failures),
    }


def result_errors(scope: dict) -> int:
    result = scope.get("result")
    return 1 if result is None else result["errors"]


def run_case(name: str, env: dict, clients: int, seconds: float) -> dict:
    from zooserver import ZooServer

    token = prepare(env)
    server = ZooServer(env, "--workers", "2", log=Path(env["ZOO_HOME"]) / "server.log")
    server.start()
    try:
        # Warm the download once so the first minute measures serving, not the export.
        head = httpx.head(
            f"{server.url}/bert-bench/resolve/main/model.safetensors",
            headers={"Authorization": f"Bearer {token}"},
            timeout=300,
        )
        head.raise_for_status()
        result = asyncio.run(load(server.url, token, clients, seconds, server.proc.pid))
    finally:
        server.stop()
        if result_errors(locals()):
            keep = Path(tempfile.gettempdir()) / f"zoo-serve-bench-{name}.log"
            keep.write_bytes(server.log.read_bytes())
            print(f"server log kept at {keep}", file=sys.stderr)
    result["back_end"] = name
    result["download_bytes"] = int(head.headers["content-length"])
    import zoo

    reg = zoo.connect(
        home=env["ZOO_HOME"], db_url=env["ZOO_DB_URL"], store_url=env["ZOO_STORE_URL"]
    )
    try:
        derived = reg.list(kind="derived")
        result["derived_rows"] = len(derived)
        result["fsck_ok"] = reg.fsck(grace=0).ok
    finally:
        reg.close()
    return result


def markdown(info: dict, results: list[dict], commit: str, when: str) -> str:
    lines = [
        f"# zoo serve under load ({info['cpu']}, {info['cores']} cores)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"Python {info['python']}. Date {when}, commit {commit[:12]}. The load generator "
        "(one asyncio process, httpx) runs on the same cores as the server; the machine "
        "is shared with other jobs.",
        "",
        f"Workload: {results[0]['clients']} concurrent clients for {results[0]['seconds']} s "
        "on 127.0.0.1, each looping over a weighted mix: list 3, show 4, lineage 3 (JSON or "
        "SVG), download 3 (`/bert-bench/resolve/main/model.safetensors`, "
        f"{results[0]['download_bytes'] / 1e6:.1f} MB), on-demand "
        f"size 3 (`/bert-bench/resolve/{{{','.join(SIZES)}}}/config.json`). Source: a BERT "
        "6x128 (vocab 2000), its db2 learngene registered.",
        "",
        "| back end | requests | req/s | errors | derivations (distinct) | duplicate derivations "
        "| derived rows | fsck | server RSS MiB (start -> end) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mem = r["rss_mib"]
        lines.append(
            f"| {r['back_end']} | {r['requests']} | {r['requests_per_s']} | {r['errors']} | "
            f"{r['derivations']} ({r['distinct_derivations']}) | {r['duplicate_derivations']} | "
            f"{r['derived_rows']} | {'ok' if r['fsck_ok'] else 'PROBLEMS'} | "
            f"{mem[0][1]} -> {mem[-1][1]} (max {max(m for _, m in mem)}) |"
        )
    lines += [
        "",
        "Latency is mostly queueing: with every client always waiting on one request, "
        "the mean latency is clients / throughput ("
        + ", ".join(
            f"{r['back_end']}: {r['clients']} / {r['requests_per_s']} = "
            f"{r['clients'] / r['requests_per_s']:.1f} s"
            for r in results
        )
        + "); the server, the load generator and the machine's other jobs share its cores. "
        "The first request for a size derives it (the `size` p99); later ones are served "
        "from the cache. Memory rises while the first sizes are derived (torch and the "
        "derivation pool warm up), then stays flat.",
        "",
        "Latency per kind (p50 / p99 / max ms, count):",
        "",
    ]
    lines.append("| back end | " + " | ".join(k for k, _ in MIX) + " |")
    lines.append("|---|" + "---|" * len(MIX))
    for r in results:
        cells = [
            f"{v['p50_ms']} / {v['p99_ms']} / {v['max_ms']} ({v['n']})"
            for v in (r["kinds"][k] for k, _ in MIX)
        ]
        lines.append(f"| {r['back_end']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Server memory sampled every 5 s (MiB): "
        + "; ".join(
            f"{r['back_end']}: " + ", ".join(str(m) for _, m in r["rss_mib"]) for r in results
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--pg", default=os.environ.get("ZOO_TEST_DATABASE_URL"))
    ap.add_argument("--only", choices=["sqlite", "postgres"])
    args = ap.parse_args()
    from zooserver import server_env

    info = machine()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "sqlite"):
            home = Path(tmp) / "sqlite"
            home.mkdir()
            results.append(run_case("sqlite+local", server_env(home), args.clients, args.seconds))
            print(json.dumps(results[-1], indent=1), flush=True)
        if args.only in (None, "postgres") and args.pg:
            with pg_database(args.pg) as url, s3_server() as endpoint:
                home = Path(tmp) / "pg"
                home.mkdir()
                env = server_env(home, url, f"s3://{new_bucket(endpoint)}/zoo")
                env.update(
                    {k: os.environ[k] for k in os.environ if k.startswith(("AWS_", "ZOO_S3"))}
                )
                results.append(run_case("postgres+s3", env, args.clients, args.seconds))
                print(json.dumps(results[-1], indent=1), flush=True)
    out = {"machine": info, "commit": commit, "date": when, "results": results}
    stem = RESULTS / f"serve-{slug(info)}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(info, results, commit, when))
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
