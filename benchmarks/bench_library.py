"""A library of 100,000 artifacts: listing, search, lineage and writes, side by side with
MLflow's model registry on the same back ends, in one run.

zoo's library is generated through zoo's API: tiny Hugging Face checkpoints (bert, gpt2
and llama at several depths and widths; each copy's config.json carries its own index, so
every one is distinct content while the tensors are shared) registered with
``Registry.import_checkpoints``, plus a chain of 100 declared derivations, tags and derived
checkpoints. MLflow's library holds one registered model with one version per zoo
artifact: the first ``--mlflow-api`` of each made through ``MlflowClient`` (which also
times ``create_model_version``), the rest copies of those rows inserted into MLflow's own
tables (its API writes about 40 models a second here, ~40 minutes per 100k per back end).

Measured at each size (10k, 100k) on SQLite and PostgreSQL:

- the first page of 50: ``Registry.search()`` (the API), ``zoo ls`` run in-process (a new
  registry per call, on the process's engine for the database) and as a process
  (interpreter start included), against MLflow's ``search_registered_models(max_results=50)``
  on a warm client and as a process (a script that imports MLflow and asks for the page);
- at 10k, the whole library: ``zoo ls --json --limit 0`` (in-process) and ``Registry.list()``
  against MLflow paging through every registered model (1000 per page, its maximum);
- the ancestry of the artifact 100 derivations deep (``Registry.lineage(..., down=False)``);
- at 10k, single-process writes per second: ``tag``, ``link``, ``materialize`` of a virtual
  derived checkpoint, against MLflow's ``create_model_version``; then 8 processes writing
  at once (tags, links and derived records; MLflow: ``create_model_version``), each after
  a warm-up and one garbage collection (:func:`steady`): errors and latency percentiles.

    pip install mlflow   # for this benchmark only; zoo does not depend on it
    python benchmarks/bench_library.py [--sizes 10000,100000] [--backends sqlite,postgres]
        [--pg URL]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT / "tests"))  # tinymodels
sys.path.insert(0, str(Path(__file__).parent))  # bench_org's machine description

from bench_org import machine, pct, pg_database, slug  # noqa: E402

CHAIN = 100
# Untimed calls before each timed page or ancestry, for zoo and MLflow alike: the steady
# state a server or notebook sees (PostgreSQL drivers prepare a statement after its
# first few runs; caches fill).
WARMUP = 10
N_PROCS = 8
# (family, layers, hidden): the shapes the library is made of.
SHAPES = [
    ("bert", 2, 16),
    ("bert", 4, 32),
    ("gpt2", 2, 16),
    ("gpt2", 4, 32),
    ("llama", 2, 16),
    ("llama", 4, 32),
]


def median_ms(fn, repeat: int, warmup: int = 0) -> float:
    """Median milliseconds of ``repeat`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


# --- zoo's library --------------------------------------------------------------------------


def base_checkpoints(root: Path) -> list[Path]:
    from tinymodels import save_tiny

    out = []
    for family, layers, hidden in SHAPES:
        keys = (
            {"n_layer": layers, "n_embd": hidden, "n_head": 2}
            if family == "gpt2"
            else {
                "num_hidden_layers": layers,
                "hidden_size": hidden,
                "num_attention_heads": 2,
                "intermediate_size": 2 * hidden,
            }
        )
        if family == "llama":
            keys["num_key_value_heads"] = 2
        out.append(save_tiny(family, root / f"{family}-{layers}x{hidden}", **keys))
    return out


def copies(bases: list[Path], root: Path, start: int, stop: int) -> list[Path]:
    """Checkpoints ``start..stop``: a base's weights (hard links) under a config that
    names the copy, so each is its own artifact."""
    configs = [json.loads((b / "config.json").read_text()) for b in bases]
    out = []
    for i in range(start, stop):
        k = i % len(bases)
        folder = root / f"ckpt-{i:06d}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({**configs[k], "library_index": i}))
        os.link(bases[k] / "model.safetensors", folder / "model.safetensors")
        out.append(folder)
    return out


def grow_zoo(reg, bases, scratch: Path, have: int, want: int) -> tuple[int, float]:
    """Import copies until the library holds ``want`` artifacts; (count, seconds)."""
    spent = 0.0
    step = 5000
    while have < want:
        n = min(step, want - have)
        folders = copies(bases, scratch, have, have + n)
        start = time.perf_counter()
        reg.import_checkpoints(folders, batch=500)
        spent += time.perf_counter() - start
        shutil.rmtree(scratch)
        scratch.mkdir()
        have += n
    return have, spent


def chain(reg, bases, scratch: Path) -> list[str]:
    """101 sources, each declared derived from the one before: the last is 100 deep."""
    folders = copies(bases, scratch / "chain", 10_000_000, 10_000_000 + CHAIN + 1)
    infos = reg.import_checkpoints(folders)
    for parent, child in itertools.pairwise(infos):
        reg.link(child.name, parent.name, relation="finetune")
    shutil.rmtree(scratch / "chain")
    return [i.name for i in infos]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def analyze(url: str) -> None:
    """Planner statistics as a user's library has them: PostgreSQL's autovacuum takes them
    soon after a bulk load; SQLite never gathers any by itself, so neither zoo's nor
    MLflow's SQLite database gets them here."""
    from sqlalchemy import create_engine

    if url.startswith("sqlite"):
        return
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


# --- MLflow's library ------------------------------------------------------------------------


def mlflow_client(uri: str):
    logging.disable(logging.WARNING)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_registered_models(max_results=1)  # creates its schema
    return client


def mlflow_process_ms(uri: str, repeat: int = 3) -> float:
    """A script's first page of MLflow's registry: the process, imports included."""
    script = (
        "import logging; logging.disable(logging.WARNING)\n"
        "from mlflow import MlflowClient\n"
        f"client = MlflowClient(tracking_uri={uri!r}, registry_uri={uri!r})\n"
        "assert len(client.search_registered_models(max_results=50)) == 50\n"
    )
    run = [sys.executable, "-c", script]
    return median_ms(lambda: subprocess.run(run, check=True, capture_output=True), repeat)


def grow_mlflow(client, uri: str, have: int, want: int, api_n: int) -> tuple[int, dict]:
    """Registered models with one version each, up to ``want``; the first ``api_n`` through
    the API (timed), the rest as copies of their rows."""
    timing = {}
    if have < api_n:
        n = min(api_n, want) - have
        start = time.perf_counter()
        for i in range(have, have + n):
            client.create_registered_model(f"model-{i:06d}")
        timing["create_registered_model_per_s"] = round(n / (time.perf_counter() - start), 1)
        start = time.perf_counter()
        for i in range(have, have + n):
            client.create_model_version(f"model-{i:06d}", source=f"file:///models/{i}")
        timing["create_model_version_per_s"] = round(n / (time.perf_counter() - start), 1)
        have += n
    if have < want:
        _copy_mlflow_rows(uri, have, want)
        have = want
    return have, timing


def _copy_mlflow_rows(uri: str, have: int, want: int) -> None:
    from sqlalchemy import MetaData, create_engine, insert, select

    engine = create_engine(uri)
    meta = MetaData()
    meta.reflect(engine, only=["registered_models", "model_versions"])
    models, versions = meta.tables["registered_models"], meta.tables["model_versions"]
    with engine.begin() as c:
        model = dict(c.execute(select(models).limit(1)).mappings().one())
        version = dict(c.execute(select(versions).limit(1)).mappings().one())
        for start in range(have, want, 5000):
            names = [f"model-{i:06d}" for i in range(start, min(want, start + 5000))]
            c.execute(insert(models), [{**model, "name": n} for n in names])
            c.execute(
                insert(versions),
                [{**version, "name": n, "source": f"file:///models/{n}"} for n in names],
            )
    engine.dispose()


def mlflow_page_all(client) -> int:
    seen, token = 0, None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        seen += len(page)
        token = page.token
        if not token:
            return seen


# --- the CLI, in-process and as a process ----------------------------------------------------


def zoo_cli(*args: str) -> str:
    from zoo_cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            if exc.code:
                raise RuntimeError(f"zoo {' '.join(args)}: {err.getvalue()}") from None
    return out.getvalue()


def compile_zoo() -> None:
    """Write zoo's bytecode as `pip install` does for an installed zoo (and did for
    MLflow): a checkout installed in editable mode under PYTHONDONTWRITEBYTECODE never
    gets it, and each `zoo ls` process would then compile every module it imports (15 ms
    of 89 on a 2-core Xeon)."""
    import compileall

    import zoo_cli

    import zoo

    for package in (zoo, zoo_cli):
        compileall.compile_dir(Path(package.__file__).parent, quiet=1)


def zoo_process_ms(*args: str, repeat: int = 3) -> float:
    exe = shutil.which("zoo") or str(Path(sys.executable).parent / "zoo")
    return median_ms(lambda: subprocess.run([exe, *args], check=True, capture_output=True), repeat)


# --- writes ----------------------------------------------------------------------------------


def single_writes(reg, pool: list[str], derive_from: str, n: int, n_derived: int, tag: str):
    """Writes per second of each cheap write, one process."""
    rates = {}
    start = time.perf_counter()
    for i in range(n):
        reg.tag(pool[i], f"{tag}-alias-{i}")
    rates["tag_per_s"] = round(n / (time.perf_counter() - start), 1)
    # Older parent, newer child: a DAG, so no link is refused.
    start = time.perf_counter()
    for i in range(n):
        reg.link(pool[n + i], pool[i], relation="finetune")
    rates["link_per_s"] = round(n / (time.perf_counter() - start), 1)
    reg.materialize(derive_from, layers=1, hidden=8, method="scratch", seed=10**6, device="cpu")
    # A derived record's cost is mostly deriving its weights; its rows are one write on the
    # driver's connection (a transaction where that write leaves it to the general path).
    spent: list[float] = []

    def timed(write):
        def call(*a, **k):
            begin = time.perf_counter()
            try:
                return write(*a, **k)
            finally:
                spent.append(time.perf_counter() - begin)

        return call

    reg.driver_write, reg.transaction = timed(reg.driver_write), timed(reg.transaction)
    start = time.perf_counter()
    for i in range(n_derived):
        reg.materialize(derive_from, layers=1, hidden=8, method="scratch", seed=i, device="cpu")
    rates["derived_per_s"] = round(n_derived / (time.perf_counter() - start), 1)
    del reg.driver_write, reg.transaction
    # Writes the driver's path left to the general one (a transaction after it): none
    # expected, each record being new content.
    rates["derived_general_path"] = len(spent) - n_derived
    rates["derived_transaction_ms"] = round(1000 * statistics.median(spent), 2)
    rates["derived_transactions_per_s"] = round(len(spent) / sum(spent), 1)
    return rates


def steady() -> None:
    """Collect garbage once before a writer's timed writes, zoo's and MLflow's alike: the
    first full collection after the imports (torch's, transformers', SQLAlchemy's) scans
    every object they made, 100-900 ms on 2 cores with 8 processes doing it at the same
    moment, once per process; a long-running writer paid it long ago."""
    import gc

    gc.collect()


def _zoo_writer(i, env, pool, derive_from, n_ops, barrier, queue) -> None:
    os.environ.update(env)
    try:
        import zoo

        reg = zoo.connect()
        reg.search(limit=1)
        reg.materialize(
            derive_from, layers=1, hidden=8, method="scratch", seed=-1 - i, device="cpu"
        )
        steady()
        barrier.wait(timeout=300)
        lat, errors = [], []
        for k in range(n_ops):
            op = ("tag", "link", "derived")[k % 3]
            start = time.perf_counter()
            try:
                if op == "tag":
                    reg.tag(pool[(i * n_ops + k) % len(pool)], f"w{i}-{k}")
                elif op == "link":
                    half = len(pool) // 2
                    parent, child = pool[(i * n_ops + k) % half], pool[half + i * n_ops + k]
                    reg.link(child, parent, relation="distill")
                else:
                    seed = 10_000 + i * n_ops + k
                    reg.materialize(
                        derive_from, layers=1, hidden=8, method="scratch", seed=seed, device="cpu"
                    )
            except Exception:
                errors.append(traceback.format_exc(limit=4))
            lat.append((op, time.perf_counter() - start))
        reg.close()
        queue.put({"lat": lat, "errors": errors})
    except BaseException:
        queue.put({"lat": [], "errors": [traceback.format_exc()]})


def _mlflow_writer(i, uri, n_ops, barrier, queue) -> None:
    try:
        client = mlflow_client(uri)
        steady()
        barrier.wait(timeout=300)
        lat, errors = [], []
        for k in range(n_ops):
            start = time.perf_counter()
            try:
                client.create_model_version(f"model-{(i * n_ops + k):06d}", source=f"file:///w/{k}")
            except Exception:
                errors.append(traceback.format_exc(limit=4))
            lat.append(("create_model_version", time.perf_counter() - start))
        queue.put({"lat": lat, "errors": errors})
    except BaseException:
        queue.put({"lat": [], "errors": [traceback.format_exc()]})


def many_writers(target, args_of, n_ops: int) -> dict:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["zoo.api.materialize", "torch", "sqlalchemy.orm"])
    barrier, queue = ctx.Barrier(N_PROCS), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_of(i), barrier, queue)) for i in range(N_PROCS)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    reports = [queue.get(timeout=1800) for _ in procs]
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    lat = [x for r in reports for _, x in r["lat"]]
    errors = [e for r in reports for e in r["errors"]]
    return {
        "processes": N_PROCS,
        "ops": len(lat),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": round(wall, 1),
        "p50_ms": round(1000 * pct(lat, 0.5), 1),
        "p99_ms": round(1000 * pct(lat, 0.99), 1),
        "max_ms": round(1000 * max(lat, default=0.0), 1),
        "by_op": {
            op: round(1000 * pct([x for r in reports for o, x in r["lat"] if o == op], 0.99), 1)
            for op in sorted({o for r in reports for o, _ in r["lat"]})
        },
    }


# --- one back end ----------------------------------------------------------------------------


def run_backend(name: str, db_url: str, ml_uri: str, sizes, work: Path, args) -> dict:
    import zoo

    home = work / name
    store = home / "blobs"
    os.environ.update({"ZOO_HOME": str(home), "ZOO_DB_URL": db_url, "ZOO_STORE_URL": str(store)})
    reg = zoo.connect()
    bases = base_checkpoints(work / "bases")
    scratch = work / "scratch"
    scratch.mkdir(exist_ok=True)
    result: dict = {"sizes": {}}

    start = time.perf_counter()
    chained = set(chain(reg, bases, scratch))
    deep = max(chained)
    base_infos = reg.import_checkpoints(bases)
    derive_from = base_infos[2].name  # a gpt2 source
    have = len(reg.list())
    setup_s = time.perf_counter() - start
    client = mlflow_client(ml_uri)
    ml_have, ml_timing = 0, {}
    import_s = 0.0
    for size in sizes:
        have, spent = grow_zoo(reg, bases, scratch, have, size)
        import_s += spent
        log(f"{name}: zoo holds {have} artifacts ({import_s:.0f} s of imports)")
        ml_have, timing = grow_mlflow(client, ml_uri, ml_have, size, args.mlflow_api)
        ml_timing |= timing
        analyze(db_url)
        analyze(ml_uri)
        log(f"{name}: MLflow holds {ml_have} models; measuring")
        total = reg.search(limit=1).total
        row: dict = {"zoo_artifacts": total, "mlflow_models": ml_have}
        row["zoo_api_page_ms"] = median_ms(lambda: reg.search(limit=50), 50, WARMUP)
        zoo_cli("ls")  # imports and first connection
        row["zoo_ls_page_ms"] = median_ms(lambda: zoo_cli("ls"), 30, WARMUP)
        row["zoo_ls_page_process_ms"] = zoo_process_ms("ls")
        row["mlflow_page_ms"] = median_ms(
            lambda: client.search_registered_models(max_results=50), 50, WARMUP
        )
        row["mlflow_page_process_ms"] = mlflow_process_ms(ml_uri)
        lin = reg.lineage(deep, down=False)
        assert len(lin.edges) == CHAIN, len(lin.edges)
        row["zoo_ancestry_100_ms"] = median_ms(lambda: reg.lineage(deep, down=False), 50, WARMUP)
        if size == sizes[0]:
            data = json.loads(zoo_cli("ls", "--json", "--limit", "0"))
            assert len(data["artifacts"]) == total, (len(data["artifacts"]), total)
            row["zoo_ls_json_all_ms"] = median_ms(
                lambda: zoo_cli("ls", "--json", "--limit", "0"), 3
            )
            row["zoo_ls_json_all_process_ms"] = zoo_process_ms("ls", "--json", "--limit", "0")
            row["zoo_api_list_all_ms"] = median_ms(reg.list, 3)
            assert mlflow_page_all(client) == ml_have
            row["mlflow_page_all_ms"] = median_ms(lambda: mlflow_page_all(client), 3)
            # Writes, with the library at its first size.
            # The newest sources, oldest first, outside the chain (whose ancestry is measured).
            newest = reg.search(limit=4000 + CHAIN + 1, kind="source").items
            pool = [i.name for i in newest if i.name not in chained][::-1]
            result["writes"] = single_writes(
                reg, pool, derive_from, args.write_ops, args.write_ops, "single"
            )
            result["writes"]["mlflow_create_model_version_per_s"] = ml_timing.get(
                "create_model_version_per_s"
            )
            result["writes"]["mlflow_create_registered_model_per_s"] = ml_timing.get(
                "create_registered_model_per_s"
            )
            env = {k: os.environ[k] for k in ("ZOO_HOME", "ZOO_DB_URL", "ZOO_STORE_URL")}
            writer_pool = pool[2 * args.write_ops :]
            result["writers_8"] = many_writers(
                _zoo_writer,
                lambda i, env=env, p=writer_pool: (i, env, p, derive_from, args.writer_ops),
                args.writer_ops,
            )
            result["mlflow_writers_8"] = many_writers(
                _mlflow_writer, lambda i: (i, ml_uri, args.writer_ops), args.writer_ops
            )
            result["writers_8"]["ops_per_process"] = args.writer_ops
        result["sizes"][str(size)] = row
        print(name, size, json.dumps(row), flush=True)
    result["library"] = {
        "setup_s": round(setup_s, 1),
        "import_s": round(import_s, 1),
        "imported": have,
        "imports_per_s": round((have - CHAIN - 1 - len(bases)) / max(import_s, 1e-9), 1),
    }
    result["db_size_mb"] = _db_size_mb(reg, db_url)
    reg.close()
    return result


def _db_size_mb(reg, db_url: str) -> float | None:
    if db_url.startswith("sqlite"):
        path = Path(reg.engine.url.database)
        return round(sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20, 1)
    with reg.engine.connect() as c:
        return round(
            c.exec_driver_sql("SELECT pg_database_size(current_database())").scalar() / 2**20, 1
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg", default=os.environ.get("ZOO_TEST_DATABASE_URL"))
    parser.add_argument("--mlflow-api", type=int, default=1000)
    parser.add_argument("--write-ops", type=int, default=300, help="single-process writes")
    parser.add_argument("--writer-ops", type=int, default=30, help="per process, 8 at once")
    parser.add_argument("--out", default="library")
    parser.add_argument(
        "--shared", action="store_true", help="say that other work ran on the machine meanwhile"
    )
    parser.add_argument("--report", help="write the markdown of a results .json again")
    args = parser.parse_args()
    if args.report:
        path = Path(args.report)
        path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    import mlflow

    compile_zoo()

    info = machine()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    report = {
        "machine": info,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "mlflow": mlflow.__version__,
        "shared": args.shared,
        "warmup": WARMUP,
        "writers_collect_first": True,
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="zoo-library-") as tmp:
        work = Path(tmp)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                report["backends"]["sqlite"] = run_backend(
                    "sqlite",
                    f"sqlite:///{work / 'zoo.db'}",
                    f"sqlite:///{work / 'mlflow.db'}",
                    sizes,
                    work,
                    args,
                )
            else:
                with pg_database(args.pg) as zoo_url, pg_database(args.pg) as ml_url:
                    report["backends"]["postgres"] = run_backend(
                        "postgres", zoo_url, ml_url, sizes, work, args
                    )
            shutil.rmtree(work / "bases", ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    stem = f"{args.out}-{slug(info)}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# A library of artifacts: zoo vs MLflow {report['mlflow']}",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, "
        f"SQLite {m['sqlite']}; {report['date']}, commit {report['commit']}. "
        "Medians; pages and ancestry (zoo's and MLflow's alike) timed after "
        f"{report.get('warmup', 0)} untimed calls. `zoo ls` runs in-process (the "
        "command as a script calling zoo's CLI runs it, after one untimed call) and as a "
        "process, which also pays the "
        "interpreter and its imports (both packages' bytecode compiled, as installed), as a "
        "script asking MLflow for its page does. MLflow's "
        "library: the first 1000 registered models and versions made through MlflowClient "
        "(which times `create_model_version`), the rest copies of their rows; zoo's made "
        "through its API. Planner statistics as users have them: both PostgreSQL "
        "databases are analyzed after each growth (autovacuum does it for a user's), the "
        "SQLite ones never (SQLite gathers none by itself). "
        + (
            "Other work ran on the machine meanwhile."
            if report.get("shared")
            else "Nothing else ran on the machine meanwhile."
        ),
        "",
    ]
    for backend, r in report["backends"].items():
        lines += [
            f"## {backend}",
            "",
            "| | " + " | ".join(r["sizes"]) + " |",
            "|---|" + "---|" * len(r["sizes"]),
        ]
        keys = [
            ("zoo API first page of 50 (ms)", "zoo_api_page_ms"),
            ("`zoo ls` first page of 50 (ms)", "zoo_ls_page_ms"),
            ("`zoo ls` as a process (ms)", "zoo_ls_page_process_ms"),
            ("MLflow `search_registered_models` page of 50 (ms)", "mlflow_page_ms"),
            ("... as a process (ms)", "mlflow_page_process_ms"),
            ("zoo ancestry, 100 deep (ms)", "zoo_ancestry_100_ms"),
            ("`zoo ls --json --limit 0`, every artifact (ms)", "zoo_ls_json_all_ms"),
            ("... as a process (ms)", "zoo_ls_json_all_process_ms"),
            ("zoo `Registry.list()`, every artifact (ms)", "zoo_api_list_all_ms"),
            ("MLflow paging through every model, 1000 a page (ms)", "mlflow_page_all_ms"),
        ]
        for label, key in keys:
            values = [str(row.get(key, "-")) for row in r["sizes"].values()]
            lines.append(f"| {label} | " + " | ".join(values) + " |")
        w = r["writes"]
        lines += [
            "",
            f"Writes, one process, per second: tag {w['tag_per_s']}, link {w['link_per_s']}, "
            f"derived record (`materialize`, virtual) {w['derived_per_s']} (its write "
            f"alone: {w['derived_transactions_per_s']}/s, median "
            f"{w['derived_transaction_ms']} ms); MLflow "
            f"`create_model_version` {w['mlflow_create_model_version_per_s']}, "
            f"`create_registered_model` {w['mlflow_create_registered_model_per_s']}.",
            "",
        ]
        for label, key in (("zoo", "writers_8"), ("MLflow", "mlflow_writers_8")):
            x = r[key]
            lines.append(
                f"{label}, 8 processes at once: {x['ops']} writes, {x['errors']} errors, "
                f"p50 {x['p50_ms']} ms, p99 {x['p99_ms']} ms, max {x['max_ms']} ms "
                f"(p99 by write: {x['by_op']})"
                + (
                    ", each process after a warm-up write and one garbage collection."
                    if report.get("writers_collect_first")
                    else "."
                )
            )
        lib = r["library"]
        lines += [
            "",
            f"Library: {lib['imported']} artifacts; imports {lib['imports_per_s']}/s through "
            f"`import_checkpoints`; database {r['db_size_mb']} MB.",
            "",
        ]
    return "\n".join(lines + floors(report))


def floors(report: dict) -> list[str]:
    """Each number the library must reach, met or missed."""

    def verdict(ok: bool) -> str:
        return "meets" if ok else "**misses**"

    lines = ["## Floors", "", "| floor | back end | size | measured | |", "|---|---|---|---|---|"]
    for backend, r in report["backends"].items():
        for size, row in r["sizes"].items():
            for what, key, theirs in (
                ("API", "zoo_api_page_ms", "mlflow_page_ms"),
                ("`zoo ls`", "zoo_ls_page_ms", "mlflow_page_ms"),
                ("`zoo ls` as a process", "zoo_ls_page_process_ms", "mlflow_page_process_ms"),
            ):
                if theirs not in row:
                    continue
                ms, ml = row[key], row[theirs]
                lines.append(
                    f"| first page {what} < 100 ms, >= 5x MLflow's page | {backend} | {size} | "
                    f"{ms} ms, {ml / ms:.1f}x | {verdict(ms < 100 and ml / ms >= 5)} |"
                )
            ms = row["zoo_ancestry_100_ms"]
            lines.append(
                f"| ancestry 100 deep < 20 ms | {backend} | {size} | {ms} ms | {verdict(ms < 20)} |"
            )
            if "zoo_ls_json_all_ms" in row:
                ms, ml = row["zoo_ls_json_all_ms"], row["mlflow_page_all_ms"]
                lines.append(
                    f"| `zoo ls --json` of all <= MLflow paging all | {backend} | {size} | "
                    f"{ms} vs {ml} ms | {verdict(ms <= ml)} |"
                )
        w, ml = r["writes"], r["writes"]["mlflow_create_model_version_per_s"]
        for what in ("tag", "link", "derived"):
            rate = w[f"{what}_per_s"]
            lines.append(
                f"| {what} writes >= 2x `create_model_version` | {backend} | | "
                f"{rate}/s vs {ml}/s ({rate / ml:.1f}x) | {verdict(rate >= 2 * ml)} |"
            )
        x = r["writers_8"]
        lines.append(
            f"| 8 writers: 0 errors, p99 < 1 s | {backend} | | {x['errors']} errors, "
            f"p99 {x['p99_ms']} ms | {verdict(x['errors'] == 0 and x['p99_ms'] < 1000)} |"
        )
    return [
        *lines,
        "",
        "Reading the floors. A derived record is a `materialize`: its weights are derived, "
        "hashed and recorded, where `create_model_version` stores a URI; its write "
        "alone (`zoo.db.derived_rows`) is given beside it. The page `zoo ls` opens with is read "
        "without SQLAlchemy or psycopg (`zoo.api.quick_page`): with the standard library's "
        "sqlite3 on SQLite, through libpq on PostgreSQL, on a connection the process keeps "
        "for the next call, as MLflow's page runs on a client already warm. Each process is "
        "compared with the other's process (a script that imports MLflow and asks for its "
        "page).",
        "",
    ]


if __name__ == "__main__":
    main()
