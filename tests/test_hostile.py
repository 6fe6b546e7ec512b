"""The hostile-input corpus: every case ends in one line on stderr, a documented non-zero
exit code, and nothing written (no blob, no row, no folder, no file changed).

Each case builds its input in a fresh folder and names the command to run; the corpus
runs through the CLI's own entry point, as a user would meet it. The parser-level checks
of each safetensors rule live in test_checkpoint.py; this corpus is end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tinymodels import save_tiny

from zoo.checkpoint.hf import MAX_CONFIG_DEPTH
from zoo.checkpoint.safetensors_format import MAX_TENSORS


@dataclass
class Case:
    """``build(folder, tiny)`` -> the CLI arguments; ``env`` is set around the command."""

    build: Callable[[Path, Path], list[str]]
    code: int
    phrase: str
    env: Callable[[Path], dict[str, str]] = field(default=lambda folder: {})
    untouched: Callable[[Path], object] | None = None  # a snapshot that must not change


def _safetensors(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _folder(
    folder: Path, tiny: Path, *, header=None, data=b"", config=None, config_text=None
) -> list[str]:
    """A copy of the tiny checkpoint with a forged header and/or config.json."""
    out = folder / "ckpt"
    shutil.copytree(tiny, out)
    if header is not None:
        _safetensors(out / "model.safetensors", header, data)
    if config is not None:
        cfg = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**cfg, **config}))
    if config_text is not None:
        (out / "config.json").write_text(config_text)
    return ["import", str(out)]


def _one(shape, dtype="F32", offsets=(0, 0)) -> dict:
    return {"w": {"dtype": dtype, "shape": shape, "data_offsets": list(offsets)}}


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _config_with(**keys):
    return lambda f, t: _folder(f, t, config=keys)


def _lone_file(header, data=b""):
    def build(folder: Path, tiny: Path) -> list[str]:
        return ["audit", str(_safetensors(folder / "found.safetensors", header, data))]

    return build


def _ls(folder: Path, tiny: Path) -> list[str]:
    return ["ls"]


def _empty_db(folder: Path) -> dict[str, str]:
    (folder / "home").mkdir()
    (folder / "home" / "zoo.db").write_bytes(b"")
    return {"ZOO_HOME": str(folder / "home")}


def _header_past_end(folder: Path, tiny: Path) -> list[str]:
    args = _folder(folder, tiny)
    path = folder / "ckpt" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", len(data) * 4)
    path.write_bytes(bytes(data))
    return args


def _index(folder: Path, tiny: Path, shard: str) -> list[str]:
    out = folder / "ckpt"
    shutil.copytree(tiny, out)
    (out / "model.safetensors").rename(out / "model-00001.safetensors")
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    return ["import", str(out)]


def _pickle_only(folder: Path, tiny: Path) -> list[str]:
    out = folder / "ckpt"
    shutil.copytree(tiny, out)
    (out / "model.safetensors").unlink()
    (out / "pytorch_model.bin").write_bytes(b"\x80\x04not a pickle")
    return ["import", str(out)]


def _lone_bin(data: bytes):
    """A ``.bin`` found on a disk, audited with --convert-bin."""

    def build(folder: Path, tiny: Path) -> list[str]:
        (folder / "found.bin").write_bytes(data)
        return ["audit", str(folder / "found.bin"), "--convert-bin"]

    return build


def _special(name: str, kind: str, command: str = "import"):
    """A copy of the tiny checkpoint whose file ``name`` is a FIFO, a link to /dev/zero, a
    folder, or a link in a loop: none is read (a FIFO would block, /dev/zero never ends)."""

    def build(folder: Path, tiny: Path) -> list[str]:
        out = folder / "ckpt"
        shutil.copytree(tiny, out)
        path = out / name
        path.unlink(missing_ok=True)
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "device":
            path.symlink_to("/dev/zero")
        elif kind == "folder":
            path.mkdir()
        else:
            (out / "loop1").symlink_to("loop2")
            (out / "loop2").symlink_to("loop1")
            path.symlink_to("loop1")
        return [command, str(path if command == "audit" else out)]

    return build


def _sharded_with_fifo(folder: Path, tiny: Path) -> list[str]:
    out = folder / "ckpt"
    save_tiny("bert", out, max_shard_size="20KB")
    shard = sorted(out.glob("model-*.safetensors"))[-1]
    shard.unlink()
    os.mkfifo(shard)
    return ["import", str(out)]


def _latin1_behind_a_link(folder: Path, tiny: Path) -> list[str]:
    shutil.copytree(tiny, folder / os.fsdecode(b"caf\xe9"))
    (folder / "cafe").symlink_to(os.fsdecode(b"caf\xe9"))
    return ["import", str(folder / "cafe")]


def _config_toml(folder: Path, text: str) -> dict[str, str]:
    home = folder / "home"
    home.mkdir()
    (home / "config.toml").write_text(text)
    return {"ZOO_HOME": str(home)}


CORPUS: dict[str, Case] = {
    # --- forged safetensors headers, met at import -------------------------------------
    "shape overflowing 64 bits": Case(
        lambda f, t: _folder(f, t, header=_one([2**62, 2**62, 0])), 2, "overflows 64 bits"
    ),
    "header nested 100,000 deep": Case(
        lambda f, t: _folder(f, t, header=f'{{"w": {_deep(100_000)}}}'.encode()),
        2,
        "nested thousands of levels",
    ),
    "a million zero-size tensors": Case(
        lambda f, t: _folder(
            f,
            t,
            header={
                f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
                for i in range(MAX_TENSORS + 1)
            },
        ),
        2,
        f"more than the {MAX_TENSORS}",
    ),
    "tensor name of 600 characters": Case(
        lambda f, t: _folder(f, t, header={"w" * 600: _one([0])["w"]}), 2, "characters"
    ),
    "tensor of 17 axes": Case(lambda f, t: _folder(f, t, header=_one([1] * 17)), 2, "17 axes"),
    "negative axis": Case(lambda f, t: _folder(f, t, header=_one([-1])), 2, "non-negative"),
    "axis that is a float": Case(lambda f, t: _folder(f, t, header=_one([2.5])), 2, "integers"),
    "unknown dtype": Case(lambda f, t: _folder(f, t, header=_one([1], "X9")), 2, "unknown dtype"),
    "offsets past the end": Case(
        lambda f, t: _folder(f, t, header=_one([4], offsets=(0, 16))), 2, "truncated"
    ),
    "bytes not matching the shape": Case(
        lambda f, t: _folder(f, t, header=_one([3], offsets=(0, 8)), data=b"\0" * 8),
        2,
        "needs 12",
    ),
    "overlapping tensors": Case(
        lambda f, t: _folder(
            f,
            t,
            header={
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            data=b"\0" * 12,
        ),
        2,
        "overlap",
    ),
    "duplicate tensor name": Case(
        lambda f, t: _folder(f, t, header=b'{"w": {}, "w": {}}'), 2, "twice"
    ),
    "NaN in the header": Case(lambda f, t: _folder(f, t, header=b'{"w": NaN}'), 2, "NaN"),
    "header that is not JSON": Case(lambda f, t: _folder(f, t, header=b"{" * 64), 2, "JSON"),
    "header length past the end": Case(_header_past_end, 2, "declares a header"),
    "metadata that is not strings": Case(
        lambda f, t: _folder(f, t, header={"__metadata__": {"a": 1}}), 2, "__metadata__"
    ),
    # --- config.json --------------------------------------------------------------------
    "config nested 100,000 deep": Case(
        lambda f, t: _folder(f, t, config_text=f'{{"model_type": "bert", "x": {_deep(100_000)}}}'),
        2,
        "nests thousands of levels",
    ),
    f"config nested {MAX_CONFIG_DEPTH + 1} deep": Case(
        lambda f, t: _folder(f, t, config={"x": json.loads(_deep(MAX_CONFIG_DEPTH))}),
        2,
        f"more than {MAX_CONFIG_DEPTH} levels",
    ),
    "hidden_size 0": Case(_config_with(hidden_size=0), 2, "hidden_size=0"),
    "hidden_size 32.5": Case(_config_with(hidden_size=32.5), 2, "hidden_size=32.5"),
    'hidden_size "32"': Case(_config_with(hidden_size="32"), 2, "hidden_size='32'"),
    "hidden_size true": Case(_config_with(hidden_size=True), 2, "hidden_size=True"),
    "num_hidden_layers -1": Case(_config_with(num_hidden_layers=-1), 2, "num_hidden_layers=-1"),
    "num_attention_heads not dividing": Case(
        _config_with(num_attention_heads=5), 2, "not divisible"
    ),
    "NaN in the config": Case(
        _config_with(layer_norm_eps=float("nan")),
        2,
        "config.json gives 'layer_norm_eps' a value that is not a finite number",
    ),
    "infinity deep in the config": Case(
        _config_with(rope_scaling={"factors": [1.0, float("inf")]}),
        2,
        "config.json gives 'rope_scaling.factors[1]' a value that is not a finite number",
    ),
    "config that is a list": Case(lambda f, t: _folder(f, t, config_text="[1]"), 2, "list"),
    "weights contradicting the config": Case(_config_with(num_hidden_layers=6), 2, "lacks"),
    # --- other layouts ------------------------------------------------------------------
    "index escaping the folder": Case(
        lambda f, t: _index(f, t, "../outside.safetensors"), 2, "not a file inside"
    ),
    "pickle weights only": Case(lambda f, t: _pickle_only(f, t), 2, "--convert-bin"),
    # --- what is not a regular file: said, never read ----------------------------------------
    "a FIFO as model.safetensors": Case(
        _special("model.safetensors", "fifo"),
        2,
        "model.safetensors is a FIFO (named pipe); zoo reads only regular files",
    ),
    "a link to /dev/zero as model.safetensors": Case(
        _special("model.safetensors", "device"),
        2,
        "model.safetensors is a symbolic link to /dev/zero, which is a character device;",
    ),
    "a folder as model.safetensors": Case(
        _special("model.safetensors", "folder"), 2, "model.safetensors is a folder; zoo reads"
    ),
    "a loop of links as model.safetensors": Case(
        _special("model.safetensors", "loop"),
        2,
        "model.safetensors is a symbolic link in a loop; zoo reads only regular files",
    ),
    "a FIFO as config.json": Case(
        _special("config.json", "fifo"), 2, "config.json is a FIFO (named pipe); zoo reads"
    ),
    "a link to /dev/zero as config.json": Case(
        _special("config.json", "device"),
        2,
        "config.json is a symbolic link to /dev/zero, which is a character device;",
    ),
    "a folder as config.json": Case(
        _special("config.json", "folder"), 2, "config.json is a folder; zoo reads only"
    ),
    "a FIFO as a shard": Case(_sharded_with_fifo, 2, "is a FIFO (named pipe); zoo reads only"),
    "audit: a FIFO": Case(
        _special("model.safetensors", "fifo", "audit"),
        2,
        "model.safetensors is a FIFO (named pipe), neither a file nor a folder;",
    ),
    # --- paths zoo records --------------------------------------------------------------------
    "a folder whose name is not UTF-8, behind a link": Case(
        _latin1_behind_a_link,
        2,
        "caf\\udce9' is not UTF-8 text; zoo records the folder a checkpoint was imported from",
    ),
    # --- files found on a disk, met at audit -----------------------------------------------
    "audit: a text file as .bin": Case(_lone_bin(b"hello\n"), 2, "as a torch weights file"),
    "audit: an empty .bin": Case(_lone_bin(b""), 2, "(EOFError)"),
    "audit: shape overflowing 64 bits": Case(
        _lone_file(_one([2**62, 2**62, 0])), 2, "overflows 64 bits"
    ),
    "audit: header nested 100,000 deep": Case(
        _lone_file(f'{{"w": {_deep(100_000)}}}'.encode()), 2, "nested thousands"
    ),
    # --- database URLs and registries --------------------------------------------------------
    "sqlite in memory": Case(
        _ls, 2, "in-memory", env=lambda f: {"ZOO_DB_URL": "sqlite:///:memory:"}
    ),
    "sqlite without a path": Case(_ls, 2, "in-memory", env=lambda f: {"ZOO_DB_URL": "sqlite://"}),
    "database folder that does not exist": Case(
        _ls,
        9,
        "does not exist",
        env=lambda f: {"ZOO_DB_URL": f"sqlite:///{f / 'nonexistent' / 'dir' / 'zoo.db'}"},
        untouched=lambda f: (f / "nonexistent").exists(),
    ),
    "zoo.db truncated to 0 bytes": Case(
        _ls,
        9,
        "empty (0 bytes)",
        env=_empty_db,
        untouched=lambda f: (f / "home" / "zoo.db").read_bytes(),
    ),
    "password percent-encoded, server down": Case(
        _ls,
        9,
        "Cannot open the database",
        env=lambda f: {"ZOO_DB_URL": "postgresql+psycopg://zoo:s3cr%40t@127.0.0.1:1/zoo"},
    ),
    "config.toml that is not TOML": Case(
        _ls, 2, "not valid TOML", env=lambda f: _config_toml(f, "db_url = ")
    ),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny("bert", tmp_path_factory.mktemp("tiny") / "bert")


def _written(home: Path) -> list[str]:
    """Blobs and registry rows under ``home``; registry files themselves do not count."""
    blobs = [
        str(p.relative_to(home))
        for p in home.rglob("*")
        if p.is_file() and len(p.parent.name) == 2 and "blobs" in p.parts
    ]
    db = home / "zoo.db"
    if db.is_file() and db.stat().st_size:
        with sqlite3.connect(db) as c:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
            if "artifacts" in tables:
                blobs += [f"row {r[0]}" for r in c.execute("SELECT name FROM artifacts")]
    return blobs


@pytest.mark.parametrize("name", list(CORPUS))
def test_hostile_input_is_refused_in_one_line(name, tiny, tmp_path, monkeypatch, run_cli):
    case = CORPUS[name]
    folder = tmp_path / "case"
    folder.mkdir()
    args = case.build(folder, tiny)
    for var, value in case.env(folder).items():
        monkeypatch.setenv(var, value)
    before = case.untouched(folder) if case.untouched else None
    code, out, err = run_cli(*args)
    assert code == case.code, (code, err)
    assert out == "" and err.count("\n") == 1 and err.startswith("zoo: error: "), err
    assert case.phrase in err, err
    assert "Traceback" not in err and "s3cr" not in err
    assert _written(Path(os.environ["ZOO_HOME"])) == []
    if case.untouched:
        assert case.untouched(folder) == before


def test_a_percent_in_a_database_url_is_read_and_never_printed(db_url, monkeypatch, run_cli):
    """A percent-encoded password is how a URL carries an '@'; configparser (under
    Alembic) once read it as interpolation and printed the URL in a traceback."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        # A folder whose name holds a %: the same interpolation, on the embedded default.
        folder = Path(url.database).parent / "100%"
        folder.mkdir()
        db_url = f"sqlite:///{folder / 'zoo.db'}"
    else:
        db_url = url.set(password="s3cr@t").render_as_string(hide_password=False)
        assert "s3cr%40t" in db_url
    monkeypatch.setenv("ZOO_DB_URL", db_url)
    code, out, err = run_cli("ls")
    assert code == 0 and err == "", err
    assert "no artifacts" in out


def test_a_read_only_registry_lists_and_refuses_writes_cleanly(
    tiny, tmp_path, monkeypatch, run_cli
):
    """Read-only for this user (a file mode for users, the immutable flag for root, who
    ignores modes): listing, showing and auditing work; a write is refused in one line
    before anything is written."""
    home = tmp_path / "home"
    monkeypatch.setenv("ZOO_HOME", str(home))
    assert run_cli("import", str(tiny), "--name", "ro")[0] == 0
    other = save_tiny("bert", tmp_path / "other", seed=1)
    blobs = sorted(p for p in (home / "blobs").rglob("*") if p.is_file())
    locked = [home / "zoo.db", home]
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("chattr is not installed")
        done = subprocess.run(["chattr", "+i", *map(str, locked)], capture_output=True)
        if done.returncode:
            pytest.skip(f"chattr +i is not allowed here: {done.stderr.decode().strip()}")
        undo = ["chattr", "-i", *map(str, locked)]
    else:
        for p in locked:
            p.chmod(0o555 if p.is_dir() else 0o444)
        undo = None
    try:
        code, out, err = run_cli("ls")
        assert code == 0 and "ro" in out, err
        assert run_cli("show", "ro")[0] == 0
        assert run_cli("audit", str(tiny))[0] == 0
        code, out, err = run_cli("import", str(other))
        assert code == 11 and err.count("\n") == 1 and "read-only" in err, err
        for args in (("db", "downgrade", "0009"), ("db", "upgrade")):
            code, out, err = run_cli(*args)
            assert code == 11 and err.count("\n") == 1 and "read-only" in err, (args, err)
        assert sorted(p for p in (home / "blobs").rglob("*") if p.is_file()) == blobs
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            for p in locked:
                p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize("error", ["ENOSPC", "EROFS"])
def test_a_store_that_cannot_take_an_import_is_named_in_one_line(
    error, tiny, tmp_path, monkeypatch, run_cli
):
    """A full or read-only blob store fails a write that names no file (the write of an
    open file): the message says it was the blob store, and nothing is recorded."""
    import errno

    from zoo.store.local import LocalStore

    store = tmp_path / "blobs"
    monkeypatch.setenv("ZOO_STORE_URL", str(store))
    number = getattr(errno, error)

    def refused(self, *args, **kwargs):
        raise OSError(number, os.strerror(number))

    # Every blob a local store writes, whole or in pieces, is written by _write_file.
    with monkeypatch.context() as patched:
        patched.setattr(LocalStore, "_write_file", refused)
        code, out, err = run_cli("import", str(tiny))
    assert (code, out) == (11, "")
    said = (
        f"zoo: error: Cannot write to the blob store {store}: {os.strerror(number)}; "
        "nothing was recorded.\n"
    )
    assert err == said
    assert run_cli("ls")[1].startswith("(no artifacts")
    # An extraction and a stored size write blobs as an import does, and say the same.
    assert run_cli("import", str(tiny), "--name", "src")[0] == 0
    for args in (
        ("extract", "src"),
        ("materialize", "src", "--layers", "1", "--hidden", "16", "--store"),
    ):
        with monkeypatch.context() as patched:
            patched.setattr(LocalStore, "_write_file", refused)
            code, out, err = run_cli(*args)
        assert (code, out, err) == (11, "", said), args
    assert [line.split()[0] for line in run_cli("ls")[1].splitlines()[1:]] == ["src"]


def test_a_new_registry_is_still_created_in_zoos_own_home(tmp_path, monkeypatch, run_cli):
    home = tmp_path / "not" / "yet"
    monkeypatch.setenv("ZOO_HOME", str(home))
    code, out, err = run_cli("ls")
    assert code == 0 and "no artifacts" in out, err
    assert (home / "zoo.db").stat().st_size > 0


def test_config_toml_is_read_on_python_3_10(tmp_path):
    """Python 3.10 has no tomllib; zoo reads config.toml with tomli there (a dependency
    on 3.10 only). Run as 3.10 would: tomllib hidden from the import system."""
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{tmp_path / 'configured.db'}"
    (home / "config.toml").write_text(f'db_url = "{url}"\n')
    script = (
        "import sys\n"
        "sys.modules['tomllib'] = None\n"  # `import tomllib` now fails as on 3.10
        "from zoo.config import load_settings\n"
        "s = load_settings()\n"
        "print(s.db_url, s.db_url_from)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_DB_URL", "ZOO_STORE_URL")}
    env["ZOO_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == [url, str(home / "config.toml")]


def test_choice_options_offer_the_names_zoo_defines_and_refuse_others(run_cli):
    """The CLI reads its options' names from the modules that define them, on first use;
    a name outside them is a one-line usage error before any work."""
    from zoo_cli.main import cli

    from zoo.derive import DEPTHS, DTYPES, NORMS
    from zoo.methods import LEARNGENE_METHODS, METHODS, RESCALES
    from zoo.unit_order import ORDERS

    offered = {
        ("materialize", "method"): tuple(METHODS),
        ("materialize", "rescale"): RESCALES,
        ("materialize", "norm"): NORMS,
        ("materialize", "depth"): DEPTHS,
        ("materialize", "order"): ORDERS,
        ("materialize", "dtype"): DTYPES,
        ("extract", "method"): LEARNGENE_METHODS,
        ("extract", "order"): ORDERS,
    }
    for (command, option), names in offered.items():
        param = next(p for p in cli.commands[command].params if p.name == option)
        assert tuple(param.type.choices) == tuple(names), (command, option)
        size = ("--layers", "2", "--hidden", "8") if command == "materialize" else ()
        code, out, err = run_cli(command, "x", *size, f"--{option}", "no-such-name")
        assert code == 2 and out == "", (command, option, err)
        assert "'no-such-name' is not one of" in err and len(err.strip().splitlines()) == 1


def _unprivileged(run_cli, tmp_path):
    """Run the CLI as a user whom file modes bind: as it is for a user, in a process
    without root's capabilities to ignore them (setpriv) for root."""
    if os.geteuid() != 0:
        return run_cli
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    drop = "-dac_override,-dac_read_search,-fowner,-chown"

    def run(*args: str):
        done = subprocess.run(
            [
                "setpriv",
                f"--bounding-set={drop}",
                "--inh-caps=-all",
                sys.executable,
                "-c",
                "import sys; from zoo_cli.main import command; sys.argv[0] = 'zoo'; command()",
                *args,
            ],
            capture_output=True,
            text=True,
        )
        return done.returncode, done.stdout, done.stderr

    return run


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_file_this_user_may_not_read_is_the_file_systems_refusal(name, tiny, tmp_path, run_cli):
    """No permission is exit 11, as the docs list it, and not a malformed checkpoint."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny, ckpt)
    (ckpt / name).chmod(0)
    code, out, err = _unprivileged(run_cli, tmp_path)("import", str(ckpt))
    assert (code, out) == (11, "")
    assert err == (
        f"zoo: error: Cannot read {ckpt / name}: Permission denied; give this user read "
        "access to it.\n"
    )


def test_side_files_zoo_cannot_keep_are_listed_as_not_kept(tiny, tmp_path, run_cli):
    """A tokenizer file whose name is not UTF-8 (zoo records names) and a FIFO (never
    read: it would block) are left out of the import, and said to be."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny, ckpt)
    (ckpt / os.fsdecode(b"\xff\xfe.tiktoken")).write_bytes(b"x")
    os.mkfifo(ckpt / "tokenizer.json")
    (ckpt / "special_tokens_map.json").symlink_to("special_tokens_map.json")  # a loop
    code, out, err = run_cli("import", str(ckpt))
    assert code == 0, err
    assert err.startswith(
        "note: not kept, so an export lacks them: special_tokens_map.json (a loop of "
        "symbolic links), tokenizer.json (a FIFO, not a regular file), \\xff\\xfe.tiktoken "
        "(a name that is not UTF-8 text) ("
    ), err
    code, out, _ = run_cli("show", "ckpt", "--json")
    assert json.loads(out)["files"] == []


def test_safetensors_an_import_does_not_read_are_said_to_be_left_and_read_ones_are_not(
    tmp_path, run_cli
):
    """A shard its index does not name (left by an older save), and shards beside a
    model.safetensors (which is what an import reads, as transformers does), hold weights
    the registry does not get: the import says so. Shards the index names in a folder of
    their own are read, and not said to be left."""
    sharded = save_tiny("bert", tmp_path / "sharded", max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    (sharded / "model-00099-of-00099.safetensors").write_bytes((sharded / shards[0]).read_bytes())
    code, out, err = run_cli("import", str(sharded), "--json")
    assert code == 0, err
    assert json.loads(out)["not_kept"] == [
        {
            "name": "model-00099-of-00099.safetensors",
            "why": "safetensors weights the checkpoint does not read",
        }
    ]

    nested = tmp_path / "nested"
    shutil.copytree(sharded, nested)
    (nested / "model-00099-of-00099.safetensors").unlink()
    (nested / "weights").mkdir()
    for shard in shards:
        (nested / shard).rename(nested / "weights" / shard)
    index["weight_map"] = {k: f"weights/{v}" for k, v in index["weight_map"].items()}
    (nested / "model.safetensors.index.json").write_text(json.dumps(index))
    code, out, err = run_cli("import", str(nested), "--json")
    assert code == 0 and json.loads(out)["not_kept"] == [] and "note" not in err, err

    both = tmp_path / "both"
    shutil.copytree(sharded, both)
    (both / "model-00099-of-00099.safetensors").unlink()
    shutil.copy(save_tiny("bert", tmp_path / "single") / "model.safetensors", both)
    code, out, err = run_cli("import", str(both), "--json")
    assert code == 0, err
    left = json.loads(out)["not_kept"]
    assert [e["name"] for e in left] == shards
    assert {e["why"] for e in left} == {"safetensors weights the checkpoint does not read"}


def test_an_index_naming_a_file_that_is_not_safetensors_is_refused_as_forged(tmp_path, run_cli):
    sharded = save_tiny("bert", tmp_path / "sharded", max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    first = sorted(index["weight_map"])[0]
    index["weight_map"][first] = "config.json"
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    code, out, err = run_cli("import", str(sharded))
    assert (code, out) == (2, ""), err
    assert "names 'config.json' as a shard, which is not a .safetensors file" in err
    assert err.count("\n") == 1


def test_a_registry_whose_path_is_not_utf8_is_refused_in_one_line(
    tiny, tmp_path, monkeypatch, run_cli
):
    """SQLite takes a database's name as UTF-8 text: a home or database URL that is not
    is refused (exit 2) before anything is made there, by every command."""
    home = tmp_path / os.fsdecode(b"caf\xe9") / "home"
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.delenv("ZOO_DB_URL", raising=False)
    monkeypatch.delenv("ZOO_STORE_URL", raising=False)
    for args in (("ls",), ("import", str(tiny)), ("gc",)):
        code, out, err = run_cli(*args)
        assert (code, out) == (2, ""), (args, err)
        assert err == (
            f"zoo: error: The database path {str(home / 'zoo.db')!a} is not UTF-8 text; give "
            "the registry (ZOO_HOME or the database URL) a folder whose path is.\n"
        )
    assert list(tmp_path.iterdir()) == []


def test_a_current_folder_whose_name_is_not_utf8_is_refused_in_one_line(
    tiny, tmp_path, monkeypatch, run_cli
):
    latin = tmp_path / os.fsdecode(b"caf\xe9")
    shutil.copytree(tiny, latin)
    monkeypatch.chdir(latin)
    code, out, err = run_cli("import", ".")
    assert (code, out) == (2, "")
    assert err == (
        f"zoo: error: {str(latin)!a} is not UTF-8 text; zoo records the folder a checkpoint "
        "was imported from, so give it a name that is.\n"
    )


def test_a_full_database_is_the_file_systems_refusal(tiny, tmp_path, monkeypatch, run_cli):
    """SQLite's "database or disk is full" when a row is written, and its I/O error on
    opening a database whose disk has no byte free: exit 11 ("no space"), not 9."""
    import sqlite3

    import sqlalchemy

    from zoo.api import catalog

    full = sqlite3.connect(":memory:")  # a full disk, as SQLite meets it
    full.execute("CREATE TABLE t (x)")
    full.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.OperationalError) as caught:
        full.execute("INSERT INTO t VALUES (zeroblob(100000))")

    def write_row(reg, session, ready):
        raise sqlalchemy.exc.OperationalError("INSERT INTO artifacts", {}, caught.value)

    with monkeypatch.context() as patched:
        patched.setattr(catalog, "_create", write_row)
        code, out, err = run_cli("import", str(tiny))
    assert (code, out) == (11, ""), err
    assert err.startswith(
        "zoo: error: database error: (sqlite3.OperationalError) database or disk is full"
    )
    database = Path(os.environ["ZOO_HOME"]) / "zoo.db"
    assert err.endswith(
        f" (the database sqlite:///{database}: its disk is full; free space there and run "
        "the command again: the registry recorded none of it)\n"
    ), err
    assert err.count("\n") == 1

    import shutil as shutil_module
    import sqlite3
    from collections import namedtuple

    def io_error(*args, **kwargs):
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorcode = 4874  # SQLITE_IOERR_SHMSIZE: no room for the -shm file
        raise sqlalchemy.exc.OperationalError("PRAGMA journal_mode", {}, error)

    home = Path(os.environ["ZOO_HOME"])
    usage = namedtuple("usage", "total used free")
    real = shutil_module.disk_usage
    monkeypatch.setattr(sqlalchemy.Engine, "connect", io_error)
    for free, code_wanted in ((0, 11), (10**9, 9)):
        monkeypatch.setattr(
            shutil_module,
            "disk_usage",
            lambda p, free=free: usage(10**9, 10**9 - free, free) if Path(p) == home else real(p),
        )
        code, out, err = run_cli("import", str(tiny))
        assert code == code_wanted and err.count("\n") == 1, err
        assert ("its disk is full" in err) == (code == 11), err
