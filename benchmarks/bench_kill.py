"""SIGKILL at random points of the commands that write: what is left after fsck --repair.

Four commands, in turn: ``zoo import`` (a checkpoint whose blobs are not stored yet),
``zoo extract`` (a recipe not extracted yet), ``zoo materialize ... --out DIR`` and
``zoo rederive NAME --out DIR`` (a fresh DIR each time). Each is killed after a random
delay, uniform over 1.1 times its own uncontended duration (measured first), so kills land
in reading, computing and writing alike; the targets are big enough (about 90 MB imported,
160 MB written per output) that many land mid-write. Then, as an operator would:
``zoo fsck --repair --grace 0s``, and the counts that must be 0:

- leftovers: temporary files in the store, and anything beside the ``--out`` folders
  other than finished outputs (hidden temporary or displaced folders);
- rows pointing at nothing: kept rows whose blobs are missing (fsck), blobs that are
  partial or corrupt (verify), and finished outputs that are not whole checkpoints.

Also reported: rows a killed ``--out`` command left without their folder (the command
recorded the checkpoint, then died before the folder was in place).

    python benchmarks/bench_kill.py [--kills 60] [--seed 1] [--pg URL] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT / "tests"))  # forklauncher: fork a CLI per command

from forklauncher import LAUNCHER  # noqa: E402

from zoo.bench.machine import cpu_model  # noqa: E402

COMMANDS = ("import", "extract", "materialize", "rederive")


def extract_recipes(rng: random.Random) -> list[list[str]]:
    """Recipes not extracted yet, one per extract attempt: every discrete wavelet at
    levels 1 and 2, then DCT blocks, in a random order."""
    import pywt

    recipes = [
        ["--wavelet", w, "--levels", str(levels)]
        for w in pywt.wavelist(kind="discrete")
        for levels in (1, 2)
        if (w, levels) != ("db2", 2)  # what the calibration run extracts
    ]
    rng.shuffle(recipes)
    return recipes + [["--method", "dct", "--keep", f"{k / 100:g}"] for k in range(5, 100, 5)]


SOURCE = dict(hidden=384, layers=6, heads=6, ffn=1536, vocab=30522)  # ~90 MB in float32
TARGET = ("--layers", "8", "--hidden", "512")  # ~160 MB written per output
# Each materialize kill asks for a size not registered yet (80-260 MB written), so a kill
# after its row is recorded but before its folder is in place shows as such.
TARGETS = [(layers, hidden) for hidden in (384, 448, 512, 576) for layers in range(5, 13)]


# --- the machine -------------------------------------------------------------------------


def machine() -> dict:
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "date": datetime.date.today().isoformat(),
        "commit": commit + ("+changes" if dirty else ""),
    }


def slug(info: dict) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")
    return f"{name}-{info['cores']}c"


# --- inputs ------------------------------------------------------------------------------


def base_checkpoint(folder: Path) -> Path:
    """A BERT in HF layout, random weights, about 90 MB."""
    import torch
    import transformers

    config = transformers.BertConfig(
        vocab_size=SOURCE["vocab"],
        hidden_size=SOURCE["hidden"],
        num_hidden_layers=SOURCE["layers"],
        num_attention_heads=SOURCE["heads"],
        intermediate_size=SOURCE["ffn"],
    )
    torch.manual_seed(0)
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    return folder


def variant(base: Path, folder: Path, seed: int) -> Path:
    """``base`` with every weight nudged: a checkpoint of new content, so importing it
    writes every blob."""
    import torch
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True)
    shutil.copy(base / "config.json", folder / "config.json")
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        k: (v + 1e-3 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
        for k, v in load_file(base / "model.safetensors").items()
    }
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


# --- killing -------------------------------------------------------------------------------


class Launcher:
    """A process that imported zoo once and forks the CLI per command (no start-up time
    in the delays)."""

    def __init__(self, env: dict, logs: Path) -> None:
        self.logs = logs
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self.proc.stdout.readline() == "ready\n"
        self.n = 0

    def _ask(self, req: dict) -> int:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def start(self, args: list[str]) -> tuple[int, Path]:
        self.n += 1
        log = self.logs / f"{self.n:03d}-{args[0]}.log"
        return self._ask({"run": args, "log": str(log)}), log

    def wait(self, pid: int) -> int:
        return self._ask({"wait": pid})

    def run(self, args: list[str]) -> float:
        """Run to the end; returns its duration, or raises with its log."""
        t = time.perf_counter()
        pid, log = self.start(args)
        status = self.wait(pid)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status):
            raise RuntimeError(f"{' '.join(args)} failed: {log.read_text()[-500:]}")
        return time.perf_counter() - t

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def run_kills(db_url: str, store_url: str, work: Path, n_kills: int, seed: int) -> dict:
    env = {**os.environ, "ZOO_DB_URL": db_url, "ZOO_STORE_URL": store_url, "ZOO_DEVICE": "cpu"}
    rng = random.Random(seed)
    outs = work / "outputs"  # every --out destination is a folder in here
    outs.mkdir()
    logs = work / "logs"
    logs.mkdir()
    base = base_checkpoint(work / "inputs" / "bert")
    recipes = extract_recipes(rng)
    targets = [t for t in TARGETS if t != (8, 512)]
    rng.shuffle(targets)

    launcher = Launcher(env, logs)
    # Uncontended durations, which also register what the later commands start from.
    durations = {
        "import": launcher.run(["import", str(base), "--name", "src"]),
        "extract": launcher.run(["extract", "src", "--name", "lg", "--wavelet", "db2"]),
    }
    launcher.run(["materialize", "lg", *TARGET, "--json"])  # registers the derived row
    derived = _derived_name(db_url, store_url)
    writes = {}
    for command, args in (
        ("materialize", ["materialize", "lg", *TARGET]),
        ("rederive", ["rederive", derived]),
    ):
        dest = outs / f"calibration-{command}"
        durations[command], writes[command] = _timed_write(launcher, [*args, "--out", str(dest)])
        shutil.rmtree(dest)

    attempts: list[dict] = []
    kills = {c: 0 for c in COMMANDS}
    finished = {c: 0 for c in COMMANDS}
    i = 0
    while sum(kills.values()) < n_kills:
        command = COMMANDS[i % len(COMMANDS)]
        k = i // len(COMMANDS)
        i += 1
        if command == "import":  # a checkpoint of new content each time, made untimed
            fresh = variant(base, work / "inputs" / f"bert-{k}", seed * 1000 + k)
            args = ["import", str(fresh)]
        elif command == "extract":
            args = ["extract", "src", *recipes[k]]
        elif command == "materialize":
            layers, hidden = targets[k % len(targets)]
            size = ["--layers", str(layers), "--hidden", str(hidden)]
            args = ["materialize", "lg", *size, "--out", str(outs / f"m-{k:03d}")]
        else:
            args = ["rederive", derived, "--out", str(outs / f"r-{k:03d}")]
        writes_out = command in ("materialize", "rederive")
        # Half the --out kills wait until the output is being written (anything new beside
        # the destination), then land within its measured write time.
        in_write = writes_out and k % 2 == 1
        before = set(os.listdir(outs))
        pid, log = launcher.start(args)
        if in_write:
            started = _wait_for(outs, before, timeout=3 * durations[command] + 30)
            delay = rng.uniform(0, 1.1 * writes[command])
        else:
            started = None
            delay = rng.uniform(0, 1.1 * durations[command])
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        status = launcher.wait(pid)
        killed = os.WIFSIGNALED(status)
        kills[command] += killed
        finished[command] += not killed
        attempt = {"command": command, "delay_s": round(delay, 3), "killed": killed}
        if command == "materialize":
            attempt["target"] = [layers, hidden]
        if not killed:
            attempt["exit"] = os.WEXITSTATUS(status)
            if attempt["exit"]:
                attempt["log"] = log.read_text()[-300:]
        if writes_out:
            dest = Path(args[-1])
            attempt["mode"] = "in the write" if in_write else "anywhere"
            attempt["write_seen"] = started is not None if in_write else None
            attempt["out_complete"] = dest.is_dir()
            attempt["out_leftovers"] = sorted(set(os.listdir(outs)) - before - {dest.name})
        attempts.append(attempt)
        # A finished output is not needed any more; keep the disk small.
        if writes_out and Path(args[-1]).is_dir():
            _check_output(Path(args[-1]), attempt)
            shutil.rmtree(args[-1])
        if command == "import":
            shutil.rmtree(fresh)
    launcher.close()
    return {
        "durations_s": {c: round(d, 2) for c, d in durations.items()},
        "write_s": {c: round(d, 2) for c, d in writes.items()},
        "kills": kills,
        "finished": finished,
        "attempts": attempts,
        "after": _after(env, outs, db_url, store_url, attempts),
    }


def _wait_for(outs: Path, before: set[str], *, timeout: float) -> float | None:
    """Wait until something new appears in ``outs`` (an output being assembled, whatever
    zoo names it); returns when, or None after ``timeout``."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if set(os.listdir(outs)) - before:
            return time.perf_counter()
        time.sleep(0.005)
    return None


def _timed_write(launcher: Launcher, args: list[str]) -> tuple[float, float]:
    """(duration, seconds from the first new entry beside the destination to the end)."""
    outs = Path(args[-1]).parent
    before = set(os.listdir(outs))
    t = time.perf_counter()
    pid, log = launcher.start(args)
    seen = _wait_for(outs, before, timeout=600)
    status = launcher.wait(pid)
    end = time.perf_counter()
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) or seen is None:
        raise RuntimeError(f"{' '.join(args)} failed: {log.read_text()[-500:]}")
    return end - t, end - seen


def _derived_name(db_url: str, store_url: str) -> str:
    import zoo

    with zoo.connect(db_url=db_url, store_url=store_url) as reg:
        return reg.list(kind="derived")[-1].name


def _check_output(dest: Path, attempt: dict) -> None:
    """A finished output must be a whole checkpoint."""
    from zoo.checkpoint import open_checkpoint

    try:
        with open_checkpoint(dest) as ckpt:
            attempt["out_tensors"] = len(ckpt.tensors)
    except Exception as exc:  # recorded as a broken output
        attempt["out_broken"] = str(exc).splitlines()[0]


def _cli(env: dict, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "zoo_cli.main", *args], capture_output=True, text=True, env=env
    )
    return done.returncode, done.stdout + done.stderr


def _after(env: dict, outs: Path, db_url: str, store_url: str, attempts: list[dict]) -> dict:
    import zoo

    with zoo.connect(db_url=db_url, store_url=store_url) as reg:
        before = reg.fsck(grace=0)
    code, repair_out = _cli(env, "fsck", "--repair", "--grace", "0s", "--json")
    with zoo.connect(db_url=db_url, store_url=store_url) as reg:
        after = reg.fsck(grace=0)
        verify = reg.verify()
        derived = reg.list(kind="derived")
    registered = {(d.layers, d.hidden) for d in derived}
    out_leftovers = sorted(p.name for p in outs.iterdir())  # finished ones were removed
    rows_without_folder = sum(
        1
        for a in attempts
        if a["command"] == "materialize"
        and a["killed"]
        and not a["out_complete"]
        and tuple(a["target"]) in registered
    )
    return {
        "fsck_before_repair": {
            "problems": len(before.problems),
            "store_temp_files": len(before.temp_files),
            "orphan_blobs": len(before.orphans),
        },
        "fsck_repair_exit": code,
        "store_temp_files_left": len(after.temp_files),
        "orphan_blobs_left": len(after.orphans),
        "out_leftovers_left": out_leftovers,
        "out_leftover_bytes": sum(
            f.stat().st_size for p in outs.iterdir() for f in p.rglob("*") if f.is_file()
        ),
        "rows_pointing_at_missing_blobs": len(after.problems),
        "damaged_blobs": len(verify.problems),
        "broken_outputs": sum("out_broken" in a for a in attempts),
        "unexpected_exits": sum(a.get("exit", 0) not in (0,) for a in attempts),
        "derived_rows": len(derived),
        "killed_out_commands_without_folder": rows_without_folder,
        "repair_output": repair_out[-2000:],
    }


# --- report ---------------------------------------------------------------------------------


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"# SIGKILL at random points, then fsck --repair ({m['cpu']}, {m['cores']} cores)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python "
        f"{m['python']}, SQLite {m['sqlite']}; {m['date']}, commit {m['commit']}. "
        "Produced by `python benchmarks/bench_kill.py "
        f"--kills {res['args']['kills']} --seed {res['args']['seed']}`.",
        "",
        "Commands killed in turn: `import` of a 90 MB BERT whose blobs are new, `extract` "
        "of a recipe not extracted yet, `materialize --out` of a size not registered yet "
        "(80-260 MB) and `rederive --out` (160 MB), each into a fresh folder. A kill "
        "comes after a random delay, uniform over 1.1 times the command's uncontended "
        "duration (*anywhere*); every other `--out` kill instead waits until something new "
        "appears beside the destination and lands uniformly within 1.1 times the measured "
        "write time (*in the write*). Then `zoo fsck --repair --grace 0s`.",
        "",
    ]
    for backend, r in res["backends"].items():
        a = r["after"]

        def count(command: str, mode: str, *, left: bool = False, r=r) -> int:
            return sum(
                1
                for x in r["attempts"]
                if x["command"] == command
                and x.get("mode") == mode
                and x["killed"]
                and (bool(x["out_leftovers"]) or not left)
            )

        lines += [
            f"## {backend}",
            "",
            "Uncontended durations (s): "
            + ", ".join(f"{c} {d}" for c, d in r["durations_s"].items())
            + "; of which writing the output folder: "
            + ", ".join(f"{c} {d}" for c, d in r["write_s"].items()),
            "",
            "| command | kills | finished before the kill |",
            "|---|---|---|",
        ]
        for c in COMMANDS:
            lines.append(f"| {c} | {r['kills'][c]} | {r['finished'][c]} |")
        before = a["fsck_before_repair"]
        lines += [
            "",
            "| after `fsck --repair --grace 0s` | count |",
            "|---|---|",
            f"| store temporary files left (before repair: {before['store_temp_files']}) "
            f"| {a['store_temp_files_left']} |",
            f"| orphan blobs left (before repair: {before['orphan_blobs']}) "
            f"| {a['orphan_blobs_left']} |",
            f"| leftovers beside `--out` folders ({a['out_leftover_bytes'] / 2**20:.0f} MB) "
            f"| {len(a['out_leftovers_left'])} |",
            f"| rows pointing at missing blobs | {a['rows_pointing_at_missing_blobs']} |",
            f"| partial or corrupt blobs (verify) | {a['damaged_blobs']} |",
            f"| finished outputs that are not whole checkpoints | {a['broken_outputs']} |",
            f"| commands that finished with an error | {a['unexpected_exits']} |",
            "",
            "`--out` kills that left something beside the destination, by where they "
            "landed: "
            + "; ".join(
                f"{c} {count(c, mode, left=True)} of {count(c, mode)} {mode}"
                for c in ("materialize", "rederive")
                for mode in ("anywhere", "in the write")
            )
            + ". Killed `materialize --out` runs whose derived checkpoint row is registered "
            f"without its folder: {a['killed_out_commands_without_folder']} (the row is a "
            "recipe, re-derivable; the folder is what was lost).",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=60, help="kills per back end (>= 50)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pg", help="also run on this PostgreSQL server (admin URL)")
    parser.add_argument("--workdir", help="where inputs and outputs go (default: a temp dir)")
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    args = parser.parse_args()
    info = machine()
    res: dict = {"machine": info, "args": vars(args), "backends": {}}
    root = Path(tempfile.mkdtemp(prefix="zoo-kill-", dir=args.workdir))
    try:
        work = root / "sqlite"
        work.mkdir()
        res["backends"]["sqlite+local"] = run_kills(
            f"sqlite:///{work / 'zoo.db'}", str(work / "blobs"), work, args.kills, args.seed
        )
        if args.pg:
            from sqlalchemy import create_engine, text
            from sqlalchemy.engine import make_url

            name = f"zoo_kill_{uuid.uuid4().hex[:10]}"
            admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
                work = root / "postgres"
                work.mkdir()
                res["backends"]["postgres+local"] = run_kills(
                    url, str(work / "blobs"), work, args.kills, args.seed + 1
                )
            finally:
                with admin.connect() as c:
                    c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"kill-{slug(info)}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    stem.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
