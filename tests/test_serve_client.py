"""Client mode: the CLI with ZOO_ENDPOINT and ZOO_TOKEN talks to a real server process and
prints what it prints on the server's own database, with the same exit codes."""

from __future__ import annotations

import json
import os
import shutil
from types import SimpleNamespace

import pytest
from zooserver import ZooServer, client, registry_for, server_env

from zoo.errors import InvalidInputError

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_dir):
    home = tmp_path_factory.mktemp("client")
    env = server_env(home)
    reg = registry_for(env)
    reg.import_checkpoint(tiny_dir("gpt2"), name="tiny-gpt2")
    admin = reg.create_token("admin", role="admin")[1]
    reader = reg.create_token("reader", role="read")[1]
    server = ZooServer(env, log=home / "server.log").start()
    try:
        yield SimpleNamespace(url=server.url, env=env, reg=reg, admin=admin, reader=reader)
    finally:
        server.stop()
        reg.close()


@pytest.fixture
def both(served, run_cli, monkeypatch):
    """``run(*args)`` -> (local result, remote result); ``remote(*args)`` alone."""

    def local(*args):
        for var in ("ZOO_HOME", "ZOO_DB_URL", "ZOO_STORE_URL"):
            monkeypatch.setenv(var, served.env[var])
        monkeypatch.delenv("ZOO_ENDPOINT", raising=False)
        monkeypatch.delenv("ZOO_TOKEN", raising=False)
        return run_cli(*args)

    def remote(*args, token=None):
        # Nothing of the database reaches the client: only the endpoint and a token.
        for var in ("ZOO_DB_URL", "ZOO_STORE_URL"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("ZOO_ENDPOINT", served.url)
        monkeypatch.setenv("ZOO_TOKEN", token or served.admin)
        return run_cli(*args)

    return SimpleNamespace(run=lambda *a: (local(*a), remote(*a)), local=local, remote=remote)


@pytest.fixture
def sent(monkeypatch) -> list[str]:
    """The path of every request the remote registry sends, in order."""
    from zoo import client

    call, paths = client.RemoteRegistry._call, []

    def recording(self, method, path, **kwargs):
        paths.append(path)
        return call(self, method, path, **kwargs)

    monkeypatch.setattr(client.RemoteRegistry, "_call", recording)
    return paths


def test_a_default_takes_its_family_in_any_case_both_ways(both, served):
    lg = served.reg.extract("tiny-gpt2", method="dct")
    local, remote = both.run("default", "GPT2", lg.name, "--json")
    assert local[0] == 0 and remote == local, (local, remote)
    assert json.loads(local[1])["family"] == "gpt2"
    with client(served.url, served.admin) as http:
        answer = http.put("/api/defaults/Gpt2", json={"learngene": lg.name})
        assert answer.status_code == 200, answer.text
        assert answer.json()["family"] == "gpt2"
        read = http.get("/api/defaults/GPT2").json()
        assert (read["family"], read["learngene"]["name"]) == ("gpt2", lg.name)
        assert http.get("/api/defaults/bert").json() == {"family": "bert", "learngene": None}
        assert http.get("/api/defaults/nofamily").status_code == 400
    for args in (("default", "gpt2"), ("default", "bert", "--json"), ("default", "nofamily")):
        local, remote = both.run(*args)
        assert remote == local, (args, local, remote)
    assert local[0] == 2
    local, remote = both.run("tag", "tiny-gpt2", "gpt2")  # the default still wins: said
    assert remote == local and local[2].startswith("note: `zoo materialize gpt2` means")


def test_reads_print_the_same_both_ways(both, served):
    lg = served.reg.extract("tiny-gpt2", wavelet="haar")
    served.reg.materialize(lg.name, layers=2, hidden=16)
    for args in (
        ("ls",),
        ("ls", "--kind", "learngene"),
        ("ls", "--json"),
        ("show", "tiny-gpt2"),
        ("show", lg.name, "--tensors"),
        ("show", lg.name, "--json"),
        ("lineage", lg.name),
        ("lineage", "tiny-gpt2", "--format", "json"),
        ("lineage", lg.name, "--up", "--format", "dot"),
        ("lineage", lg.name, "--format", "mermaid"),
    ):
        local, remote = both.run(*args)
        assert local[0] == 0, (args, local)
        assert remote == local, args


def test_a_removed_artifact_is_shown_and_traced_the_same_both_ways(both, served, tiny_dir):
    served.reg.import_checkpoint(tiny_dir("gpt2", seed=7), name="removed-gpt2")
    served.reg.import_checkpoint(tiny_dir("gpt2", seed=8), name="tuned-gpt2")
    served.reg.link("tuned-gpt2", "removed-gpt2")
    served.reg.rm("removed-gpt2")
    for args, code in (
        (("show", "removed-gpt2"), 3),
        (("show", "removed-gpt2", "--all"), 0),
        (("show", "removed-gpt2", "--all", "--json"), 0),
        (("lineage", "removed-gpt2"), 3),
        (("lineage", "removed-gpt2", "--all"), 0),
        (("lineage", "removed-gpt2", "--all", "--format", "json"), 0),
    ):
        local, remote = both.run(*args)
        assert local[0] == code, (args, local)
        assert remote == local, args
    assert "tuned-gpt2" in both.local("lineage", "removed-gpt2", "--all")[1]


def test_errors_have_the_same_exit_code_and_line_both_ways(both):
    for args, code in (
        (("show", "no-such-model"), 3),
        (("show", "bad/name"), 3),
        (("materialize", "tiny-gpt2", "--layers", "2", "--hidden", "15"), 2),
        (("tag", "tiny-gpt2", "-x"), 2),
        (("lineage", "nothing-here"), 3),
        (("show", "x" * 300), 3),
        (("show", "a\tb"), 3),
        (("lineage", "tiny-gpt2", "--depth", "0"), 0),
        (("ls", "--limit", "1001"), 0),
        (("import", "/no/such/folder"), 2),  # not read as a Hub repository by the client
        # An empty name (a script's unset variable) is no artifact, never "everything"
        # nor another route.
        (("verify", ""), 3),
        (("ls", "--derived-from", "", "--json"), 3),
        (("token", "revoke", ""), 3),
        (("alias-history", ""), 3),
        (("rm", ""), 3),
        (("show", ""), 3),
        (("lineage", ""), 3),
        (("link", "", "--from", "tiny-gpt2"), 3),
    ):
        local, remote = both.run(*args)
        assert local[0] == code, (args, local)
        assert remote == local, args
    for args, code in ((("default", "", "x"), 2), (("rederive", ""), 3)):
        local, remote = both.run(*args)
        assert local[0] == remote[0] == code and remote[2].count("\n") == 1, (args, remote)
    # Migrations run where the database is: in client mode a local file would be changed.
    code, out, err = both.remote("db", "current")
    assert code == 2 and out == "" and "on the server's machine" in err, err


def test_writes_through_the_server_print_what_local_writes_print(both, served, tiny_dir, tmp_path):
    # Importing and extracting are idempotent: the second run answers the first's record.
    folder = tiny_dir("gpt2")
    remote = both.remote("import", str(folder), "--name", "tiny-gpt2")
    assert remote == both.local("import", str(folder), "--name", "tiny-gpt2")
    assert remote[0] == 0 and remote[1].startswith("tiny-gpt2  source")
    remote = both.remote("extract", "tiny-gpt2", "--wavelet", "db2")
    assert remote[0] == 0 and remote == both.local("extract", "tiny-gpt2", "--wavelet", "db2")
    size = ("materialize", "tiny-gpt2", "--layers", "3", "--hidden", "24", "--heads", "4")
    remote = both.remote(*size, "--out", str(tmp_path / "r"))
    local = both.local(*size, "--out", str(tmp_path / "l"))
    assert remote[0] == local[0] == 0
    assert remote[1].replace(str(tmp_path / "r"), "OUT") == local[1].replace(
        str(tmp_path / "l"), "OUT"
    )
    for name in ("config.json", "model.safetensors", "README.md"):
        assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "l" / name).read_bytes()
    # A file is not a checkpoint to import, said alike both ways.
    (tmp_path / "notes.txt").write_text("not a model")
    for path in (folder / "config.json", folder / "model.safetensors", tmp_path / "notes.txt"):
        local, remote = both.run("import", str(path))
        assert local[0] == 2 and remote == local, (path, local, remote)
        assert "import needs a checkpoint folder with config.json" in local[2]
    # The downloaded folder audits as the derived checkpoint, both ways.
    local, remote = both.run("audit", str(tmp_path / "r"))
    assert local[0] == 0 and remote == local
    assert both.remote("tag", "tiny-gpt2", "gpt2-small") == (0, "gpt2-small -> tiny-gpt2\n", "")
    assert "gpt2-small" in served.reg.show("tiny-gpt2").aliases
    # A read token cannot write: the class the server named, and its exit code.
    code, out, err = both.remote("tag", "tiny-gpt2", "other", token=served.reader)
    assert (code, out) == (12, "") and "PermissionDenied" not in err and "role read" in err
    assert "other" not in served.reg.show("tiny-gpt2").aliases


def test_audit_of_an_unknown_file_exits_10_both_ways(both, tmp_path, tiny_dir):
    foreign = tiny_dir("gpt2", seed=7)
    local, remote = both.run("audit", str(foreign / "model.safetensors"))
    assert local[0] == 10 and remote == local


def test_tokens_through_the_server_need_admin(both, served):
    code, secret, _ = both.remote("token", "create", "--name", "ci", "--role", "read")
    assert code == 0 and secret.startswith("zoo_")
    assert served.reg.check_token(secret.strip()).role == "read"
    local, remote = both.run("token", "list")
    assert remote == local and "ci" in local[1]
    assert both.remote("token", "revoke", "ci")[0] == 0
    assert served.reg.check_token(secret.strip()) is None
    # An end is read by the server's clock; one that is none is refused alike both ways.
    code, out, err = both.remote("token", "create", "--name", "ci", "--expires", "12h", "--json")
    assert code == 0, err
    made = json.loads(out)
    hours = (_time(made["expires_at"]) - _time(made["created_at"])).total_seconds() / 3600
    assert hours == 12 and not made["expired"]
    assert served.reg.check_token(made["secret"]).expires_at == _time(made["expires_at"])
    local, remote = both.run("token", "create", "--name", "x", "--expires", "2020-01-01")
    assert (
        local[0] == remote[0] == 2
        and local[2].split("not after")[0] == remote[2].split("not after")[0]
    )
    assert both.remote("token", "revoke", "ci")[0] == 0


def test_an_unreachable_server_is_one_line_and_exit_9(run_cli, monkeypatch):
    from zooserver import free_port

    monkeypatch.setenv("ZOO_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    code, out, err = run_cli("ls")
    assert code == 9 and out == "" and err.count("\n") == 1
    assert "Cannot reach the zoo server" in err


def test_a_hub_the_server_cannot_reach_is_said_to_be_the_servers(tmp_path, run_cli, monkeypatch):
    """A client's `zoo import ORG/NAME` is fetched by the server: where the server cannot
    reach the Hub, the client is told it is the server that could not, exit 8 as a local
    import says it, and what it can do itself; the network to check and HF_HUB_OFFLINE,
    the server's own, are in the server's log."""
    from zooserver import free_port

    env = server_env(tmp_path)
    env.pop("HF_HUB_OFFLINE")  # online, and nothing listens where it looks for the Hub
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    reg = registry_for(env)
    writer = reg.create_token("w", role="write")[1]
    log = tmp_path / "server.log"
    server = ZooServer(env, log=log).start()
    try:
        monkeypatch.setenv("ZOO_ENDPOINT", server.url)
        monkeypatch.setenv("ZOO_TOKEN", writer)
        code, out, err = run_cli("import", "acme/model", "--revision", "v1")
    finally:
        server.stop()
        reg.close()
    assert (code, out) == (8, ""), err
    assert err == (
        "zoo: error: The zoo server could not get acme/model at revision v1: it cannot reach "
        "the Hugging Face Hub, or is offline and its cache does not hold it (its log says "
        "which); download it where the Hub is reachable and import the folder (`zoo import "
        "FOLDER` uploads it).\n"
    )
    logged = [
        line for line in log.read_text().splitlines() if " ERROR zoo.server: hub error: " in line
    ]
    assert len(logged) == 1 and "Could not fetch acme/model at revision v1" in logged[0]
    assert "HF_HUB_OFFLINE=1" in logged[0]


def test_an_endpoint_with_a_path_after_the_servers_root_is_not_a_missing_artifact(
    served, run_cli, monkeypatch
):
    """A path after the server's root in ZOO_ENDPOINT is a misconfigured endpoint (exit 9),
    and the line says so; "Not Found", exit 3, would tell a script "no such artifact"."""
    monkeypatch.setenv("ZOO_ENDPOINT", f"{served.url}/zoo")
    monkeypatch.setenv("ZOO_TOKEN", served.admin)
    for args in (("show", "tiny-gpt2"), ("token", "list"), ("ls",)):
        code, out, err = run_cli(*args)
        assert code == 9 and out == "" and err.count("\n") == 1, (args, err)
        assert "no such path" in err and "ZOO_ENDPOINT" in err, err
    monkeypatch.setenv("ZOO_ENDPOINT", served.url)
    code, _, err = run_cli("show", "no-such-model")
    assert code == 3 and "no-such-model" in err, err


def test_an_endpoint_or_token_no_request_can_carry_is_one_line_and_exit_2(run_cli, monkeypatch):
    for endpoint, token in (
        ("ftp://127.0.0.1:21", "zoo_x"),  # urllib would speak FTP and wait
        ("127.0.0.1:8000", "zoo_x"),
        ("http://", "zoo_x"),
        ("http://127.0.0.1:9", "zoo_x\ry"),
        ("http://127.0.0.1:9", "zoo x"),
        ("http://[::1", "zoo_x"),
        ("http://127.0.0.1:port", "zoo_x"),
        # A secret in the URL would be printed with it, and sent as part of the host.
        ("http://u:hunter2@127.0.0.1:9", "zoo_x"),
        ("http://127.0.0.1:9/?token=hunter2", "zoo_x"),
        ("http://127.0.0.1:9#hunter2", "zoo_x"),
    ):
        monkeypatch.setenv("ZOO_ENDPOINT", endpoint)
        monkeypatch.setenv("ZOO_TOKEN", token)
        code, out, err = run_cli("ls")
        assert code == 2 and out == "" and err.count("\n") == 1, (endpoint, token, err)
        assert "hunter2" not in err, err
    for endpoint in ("http://u:hunter2@127.0.0.1:9", "http://127.0.0.1:9/?token=hunter2"):
        monkeypatch.setenv("ZOO_ENDPOINT", endpoint)
        code, out, err = run_cli("config", "show")
        assert code == 0 and "hunter2" not in out and "***" in out, out + err
    # A line end around the secret is the shell's, not the token's: the request is made.
    monkeypatch.setenv("ZOO_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("ZOO_TOKEN", "zoo_x\r\n")
    code, _, err = run_cli("ls")
    assert code == 9 and "Cannot reach the zoo server" in err


def test_a_client_process_never_imports_the_database_layer_torch_or_an_http_library(
    served, tmp_path, tiny_dir
):
    """A colleague's `zoo ls` against a server is the interpreter, click and the standard
    library's HTTP: SQLAlchemy (a third of a second to import), torch and httpx (half of
    a client's `zoo ls`, with the rich and pygments it loads) stay out of the process,
    and out of the maintenance, audit and token commands, whose reports a client rebuilds
    from the server's JSON, and out of an export re-split on the client's side.
    ``-X importtime`` lists every module the process imported."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_DB_URL", "ZOO_STORE_URL")}
    env.update(ZOO_ENDPOINT=served.url, ZOO_HOME=str(tmp_path))
    reads = (["ls"], ["show", "tiny-gpt2"], ["lineage", "tiny-gpt2"])
    admin = (["verify", "tiny-gpt2"], ["fsck"], ["gc", "--dry-run"], ["token", "list"])
    audit = (["audit", str(tiny_dir("gpt2"))],)
    # Files downloaded and re-split into shards of another size, without torch too.
    export = ["export", "tiny-gpt2", "--out", str(tmp_path / "out"), "--max-shard-size", "4KB"]
    for args, token, says in [
        *[(a, served.reader, "tiny-gpt2") for a in reads],
        *[(a, served.admin, "") for a in admin],
        *[(a, served.reader, "tiny-gpt2") for a in audit],
        (export, served.reader, "wrote"),
    ]:
        p = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "zoo_cli.main", *args],
            env={**env, "ZOO_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, (args, p.stderr[-2000:])
        assert says in p.stdout, args
        imported = {
            line.rsplit("|", 1)[-1].strip()
            for line in p.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "zoo.client" in imported, args  # the listing is read and parsed
        heavy = {
            m
            for m in imported
            if m.split(".")[0] in ("sqlalchemy", "alembic", "torch", "httpx", "httpcore", "rich")
        }
        assert not heavy, (args, sorted(heavy)[:5])


def test_an_upload_records_the_uploaders_folder_not_the_servers_copy(
    both, served, tiny_dir, tmp_path
):
    """A checkpoint imported through the server keeps, as its origin, the host and folder
    the client read it from (upload:HOST:PATH). The server's staging copy is removed once
    imported, so naming it would point an audit at nothing. A damaged blob of such a
    source is repaired by uploading it again from there, which `zoo verify` says."""
    import socket

    folder = tmp_path / "uploaded-llama"
    shutil.copytree(tiny_dir("llama", seed=11), folder)
    code, out, err = both.remote("import", str(folder), "--name", "uploaded-llama")
    assert code == 0, err
    (imp,) = served.reg.show("uploaded-llama").imports
    assert imp.origin == f"upload:{socket.gethostname()}:{folder.resolve()}"
    code, out, _ = both.remote("lineage", "uploaded-llama")
    assert code == 0 and imp.origin in out
    blob = served.reg.store._path(served.reg.show("uploaded-llama").tensors[0].digest)
    kept = blob.read_bytes()
    blob.write_bytes(bytes([kept[0] ^ 0xFF]) + kept[1:])
    try:
        code, out, err = both.local("verify", "uploaded-llama")
    finally:
        blob.write_bytes(kept)
    assert code == 6
    hint = f"upload uploaded-llama again from {socket.gethostname()}:{folder.resolve()}"
    assert hint in out + err, out + err


def test_a_folder_path_no_upload_form_can_carry_is_imported_as_a_local_import_is(
    both, served, tiny_dir, tmp_path
):
    """A folder whose path holds a tab, or is longer than the 1024 characters the server
    keeps of an upload's origin, imports through a client as it does locally: the origin
    is the path with the tab escaped, or its end (the folder's name) after "...". A path
    that names nothing is told whole, its newline escaped, not cut at it."""
    import socket

    tabbed = tmp_path / "tab\tname"
    shutil.copytree(tiny_dir("llama", seed=12), tabbed)
    code, _, err = both.remote("import", str(tabbed), "--name", "tabbed")
    assert code == 0, err
    (imp,) = served.reg.show("tabbed").imports
    assert imp.origin == f"upload:{socket.gethostname()}:{tabbed.resolve()}".replace("\t", "\\t")
    deep = tmp_path.joinpath(*(f"{i}" * 200 for i in range(1, 7)), "deep-llama")
    shutil.copytree(tiny_dir("llama", seed=13), deep)
    assert len(str(deep.resolve())) > 1100
    code, _, err = both.remote("import", str(deep), "--name", "deep")
    assert code == 0, err
    (imp,) = served.reg.show("deep").imports
    assert imp.origin.startswith(f"upload:{socket.gethostname()}:...")
    assert imp.origin.endswith("/deep-llama") and len(imp.origin) == len("upload:") + 1024
    for code, _, err in both.run("import", "no\nsuch"):
        assert (
            code == 2
            and err
            == "zoo: error: no\\nsuch is neither an existing folder nor a "
            "Hub repository id (ORG/NAME).\n"
        ), err


def test_a_shard_that_is_not_a_file_is_refused_by_a_client_as_a_local_import_refuses_it(
    both, tiny_dir, tmp_path
):
    """A shard the index names replaced by a FIFO: the client says what it is, as a local
    import does, instead of uploading the rest for the server to call the shard missing."""
    folder = tmp_path / "fifo-shard"
    shutil.copytree(tiny_dir("llama", sharded=True), folder)
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    shard.unlink()
    os.mkfifo(shard)
    (local, remote) = both.run("import", str(folder))
    assert local == remote, (local, remote)
    assert local[0] == 2 and f"{shard} is a FIFO (named pipe)" in local[2], local


@pytest.mark.parametrize("config", [None, '{"model_type": "llama",'])
def test_a_config_a_local_import_refuses_is_refused_by_a_client_before_any_upload(
    both, tiny_dir, tmp_path, sent, config
):
    """A folder without config.json, or with one that is not JSON: the client refuses it in
    a local import's words, before a byte of the weights is sent."""
    folder = tmp_path / "bad-config"
    shutil.copytree(tiny_dir("llama", seed=15), folder)
    (folder / "config.json").unlink()
    if config is not None:
        (folder / "config.json").write_text(config)
    (local, remote) = both.run("import", str(folder))
    assert local == remote, (local, remote)
    assert local[0] == 2 and local[2].startswith(f"zoo: error: {folder}"), local
    assert sent == [], sent


def test_a_truncated_shard_is_refused_by_a_client_before_any_upload(both, tiny_dir, tmp_path, sent):
    """A shard cut short inside its header (a download that stopped): the client refuses the
    folder in a local import's words, before the other shards are sent."""
    folder = tmp_path / "truncated-shard"
    shutil.copytree(tiny_dir("llama", sharded=True, seed=16), folder)
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    with open(shard, "r+b") as f:
        f.truncate(20)
    (local, remote) = both.run("import", str(folder))
    assert local == remote, (local, remote)
    assert local[0] == 2 and local[2].startswith(f"zoo: error: {shard} declares"), local
    assert sent == [], sent


def test_a_server_that_answers_the_upload_check_as_a_missing_artifact_takes_the_upload(
    both, served, tiny_dir, tmp_path, monkeypatch
):
    """A server older than the client answers the upload check's route as a missing
    artifact (before it had an answer for a missing route): the client uploads anyway, as
    to a server that says it has no such route."""
    from zoo import client, errors

    call = client.RemoteRegistry._call

    def older_server(self, method, path, **kwargs):
        if path == "/api/import/upload/check":
            raise errors.NotFoundError(f"{method} {path}: Not Found")
        return call(self, method, path, **kwargs)

    monkeypatch.setattr(client.RemoteRegistry, "_call", older_server)
    folder = tmp_path / "to-an-older-server"
    shutil.copytree(tiny_dir("llama", seed=14), folder)
    code, _, err = both.remote("import", str(folder), "--name", "older-server")
    assert code == 0, err
    assert served.reg.show("older-server").imports


def test_an_upload_whose_weights_change_as_they_are_sent_records_nothing(
    both, served, tiny_dir, tmp_path, monkeypatch
):
    """A trainer saving over the weights while a client uploads them: the client says so
    in a local import's words, exit 2, at once (a file cut short would otherwise leave the
    server waiting for the bytes announced, and the client for its answer, until
    ZOO_TIMEOUT), and the server, whose upload ended short of its body, keeps nothing."""
    import io
    import os
    import time

    import zoo.client
    import zoo.transport

    folder = tmp_path / "saving"
    shutil.copytree(tiny_dir("bert", seed=21), folder)
    weights = folder / "model.safetensors"
    first = weights.read_bytes()
    second = (tiny_dir("bert", seed=22) / "model.safetensors").read_bytes()
    assert len(second) == len(first) and second != first  # another save, same shapes

    class SavedOverOnceRead(io.FileIO):
        """The weights as the client reads them: `save` writes the file once a block is read."""

        def read(self, size: int = -1) -> bytes:
            block = super().read(size)
            if os.fspath(self.name) == str(weights) and saves:
                saves.pop()(weights)
            return block

    def cut_short(path):  # a save truncates the file first
        os.truncate(path, 0)

    def written_over(path):  # in place: the same size, other bytes
        with open(path, "r+b") as fh:
            fh.write(second)

    # The client opens the files it uploads with open(); a hung upload fails in a minute.
    monkeypatch.setattr(zoo.client, "open", SavedOverOnceRead, raising=False)
    monkeypatch.setenv("ZOO_TIMEOUT", "60")
    monkeypatch.setattr(zoo.transport, "_CHUNK", 4096)  # the weights go in several blocks
    cache = served.reg.settings.home / "serve-cache"
    before = [i.name for i in served.reg.list()], sorted(served.reg.store.digests())
    for save, said in ((cut_short, "was cut short"), (written_over, "changed")):
        weights.write_bytes(first)
        old = time.time() - 3600  # a write now moves the mtime, however coarse the clock
        os.utime(weights, (old, old))
        saves = [save]
        started = time.monotonic()
        code, out, err = both.remote("import", str(folder), "--name", "saving")
        assert time.monotonic() - started < 30, said
        assert (code, out) == (2, ""), (said, err)
        assert err == (
            f"zoo: error: {folder} changed while zoo imported it (model.safetensors {said} as "
            "it was sent to the server); nothing was recorded. Import it again once whatever "
            "writes it is done.\n"
        )
        assert ([i.name for i in served.reg.list()], sorted(served.reg.store.digests())) == before
        # The server removes what it took of the body once it sees the client gone, which
        # may be a moment after the client has returned.
        deadline = time.monotonic() + 10
        while [p for p in cache.iterdir() if p.name.startswith(".upload")]:
            assert time.monotonic() < deadline, list(cache.iterdir())
            time.sleep(0.05)
    # Saved and left alone, the folder uploads whole.
    assert both.remote("import", str(folder), "--name", "saving")[0] == 0
    assert served.reg.show("saving").content_hash == served.reg.audit(folder).artifact.content_hash


def test_verify_through_the_server_says_the_fix_and_repairs(both, served):
    """`zoo verify` as a client prints what the registry's own verify prints, the fix for
    each damaged blob included, and `--repair` restores what the server can produce again
    (a source whose folder the server can still read)."""
    blob = served.reg.store._path(served.reg.show("tiny-gpt2").tensors[0].digest)
    kept = blob.read_bytes()
    blob.chmod(0o644)
    blob.write_bytes(bytes([kept[0] ^ 0xFF]) + kept[1:])
    try:
        local, remote = both.run("verify", "tiny-gpt2")
        assert local == remote and remote[0] == 6, remote
        assert "run `zoo verify --repair` to restore 1 of them" in remote[1]
        code, out, err = both.remote("verify", "tiny-gpt2", "--repair")
        assert code == 0, out + err
        assert "restored 1 damaged blobs" in out and blob.read_bytes() == kept
    finally:
        if blob.read_bytes() != kept:
            blob.write_bytes(kept)
    assert both.remote("verify", "tiny-gpt2") == both.local("verify", "tiny-gpt2")


def test_maintenance_reports_through_the_server_are_the_registrys(both, served, tmp_path):
    """fsck, gc and verify as a client report every field the registry's own report has
    (the ages of store items aside, which grow between the two calls), an unfinished
    --out folder of a killed writer included."""
    import json
    import subprocess

    from zoo.api.export import _host_tag, writer_host
    from zoo.db import queries

    dead = subprocess.Popen(["true"])
    dead.wait()  # a writer's pid, no longer running
    out = tmp_path / "out"
    left = tmp_path / f".out.zoo-tmp-{_host_tag()}-{dead.pid}-0badcafe"
    left.mkdir()
    served.reg.transaction(lambda s: queries.add_output(s, str(out), writer_host(), dead.pid))

    def ageless(text: str):
        data = json.loads(text)
        for key in ("temp_files", "orphans", "swept"):
            for item in data.get(key, ()):
                item.pop("age_s")
        return data

    for args in (("fsck", "--json"), ("gc", "--dry-run", "--json"), ("verify", "--json")):
        (lcode, lout, _), (rcode, rout, rerr) = both.run(*args)
        assert (lcode, ageless(lout)) == (rcode, ageless(rout)), (args, rerr)
    code, out, _ = both.remote("fsck", "--json")
    assert json.loads(out)["output_leftovers"] == [str(left)]
    code, _, err = both.remote("fsck", "--repair")
    assert code == 0 and not left.exists(), err


def test_every_materialize_option_reaches_the_server(both, served, tmp_path):
    """A client's `materialize --dtype` gives the checkpoint the registry itself gives
    (bf16 here, the same content hash), and `--max-shard-size` the files a local
    `--out --max-shard-size` writes, byte for byte: the server's files are re-split on
    the client's side. So does `export`. A size that is not one is refused in one line
    before any work, writing nothing."""
    import json

    args = ("materialize", "tiny-gpt2", "--layers", "1", "--hidden", "8", "--dtype", "bfloat16")
    (lcode, lout, _), (rcode, rout, rerr) = both.run(*args, "--json")
    assert lcode == rcode == 0, rerr
    local, remote = json.loads(lout)["artifact"], json.loads(rout)["artifact"]
    assert remote["content_hash"] == local["content_hash"]
    assert {t.dtype for t in served.reg.show(remote["name"]).tensors} == {"BF16"}

    def files(folder):  # but zoo's marker, which lists the files' times
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".zoo-output.json"}

    for command in (args, ("export", "tiny-gpt2")):
        mine, theirs = tmp_path / f"{command[0]}-local", tmp_path / f"{command[0]}-remote"
        code, _, err = both.local(*command, "--out", str(mine), "--max-shard-size", "4KB")
        assert code == 0, err
        code, _, err = both.remote(*command, "--out", str(theirs), "--max-shard-size", "4KB")
        assert code == 0, err
        written = files(theirs)
        assert written == files(mine), command
        assert len([n for n in written if n.endswith(".safetensors")]) > 1, sorted(written)
        # The server's own files were one shard; nothing of them is left beside the output.
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # Re-split, it is still the checkpoint the registry recorded.
    audited, again = both.run("audit", str(tmp_path / "materialize-remote"))
    assert audited[0] == 0 and again == audited and remote["name"] in audited[1], audited

    out = tmp_path / "refused"
    for size in ("4 parsecs", "0"):
        code, out_text, err = both.remote(*args, "--out", str(out), "--max-shard-size", size)
        assert code == 2 and out_text == "" and err.count("\n") == 1, err
        assert not out.exists()
    code, _, err = both.remote(*args, "--max-shard-size", "4KB")
    assert code == 2 and "give --out" in err and err.count("\n") == 1, err


def test_a_client_is_warned_where_a_function_keeping_method_regroups_the_heads(both):
    """The server sends the warnings of a materialization, and the client prints them as
    the registry itself does: 8 heads of 4 from tiny-gpt2's 4 of 8 under HyperCloning."""
    args = ("materialize", "tiny-gpt2", "--layers", "4", "--hidden", "32", "--heads", "8")
    (lcode, _, lerr), (rcode, _, rerr) = both.run(*args, "--method", "hypercloning")
    assert lcode == rcode == 0 and lerr == rerr, (lerr, rerr)
    assert rerr.startswith("warning: 8 attention heads of 4 from the source's 4 of 8 ")
    assert rerr.endswith("(heads of 8 would: --heads 4)\n") and rerr.count("\n") == 1


def test_a_download_without_room_is_refused_before_any_byte(both, tmp_path, monkeypatch):
    """A client compares the server's files with the free space where --out goes before
    it downloads them: their size, and twice that when it re-splits them beside --out."""
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from zoo.api import export

    listing = tmp_path / "listing"
    code, _, err = both.remote("export", "tiny-gpt2", "--out", str(listing))
    assert code == 0, err
    size = sum(p.stat().st_size for p in listing.iterdir() if p.name != export.MARKER)
    outs = tmp_path / "outs"
    outs.mkdir()
    usage = namedtuple("usage", "total used free")
    real = shutil.disk_usage
    room = size * 3 // 2  # enough for the files, not for them and their re-split copy
    monkeypatch.setattr(
        export.shutil,
        "disk_usage",
        lambda path: usage(10**12, 10**12 - room, room) if Path(path) == outs else real(path),
    )
    code, out, err = both.remote(
        "export", "tiny-gpt2", "--out", str(outs / "split"), "--max-shard-size", "4KB"
    )
    assert code == 11 and out == "" and err.count("\n") == 1 and "KB free" in err, err
    assert list(outs.iterdir()) == []
    code, _, err = both.remote("export", "tiny-gpt2", "--out", str(outs / "whole"))
    assert code == 0, err


# What only a registry with its own database does: the server's internals, batch imports
# (a client imports one folder per call), and releasing a store's claim (it looks for
# database files where it runs); ``origin`` is what the server records for an upload,
# which the client states itself (upload:HOST:PATH).
_LOCAL_ONLY = {
    "active_token",
    "audit_manifest",
    "check_token",
    "check_writable",
    "driver_write",
    "ensure_schema",
    "get_or_create",
    "import_checkpoints",
    "release_claim",
    "session",
    "transaction",
}
_LOCAL_ONLY_KEYWORDS = {("import_checkpoint", "origin")}


def test_the_client_takes_every_option_the_registry_takes():
    """Every public Registry method a CLI command can call has a client counterpart that
    takes each of its keywords: a command run against a server never ends in a TypeError
    (`zoo verify` and `zoo rederive` once did)."""
    import inspect

    from zoo.api.registry import Registry
    from zoo.client import RemoteRegistry

    checked = 0
    for name, method in inspect.getmembers(Registry, inspect.isfunction):
        if name.startswith("_") or name in _LOCAL_ONLY:
            continue
        remote = inspect.signature(getattr(RemoteRegistry, name)).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in remote.values())
        for keyword in inspect.signature(method).parameters:
            if keyword != "self" and (name, keyword) not in _LOCAL_ONLY_KEYWORDS:
                assert takes_any or keyword in remote, (name, keyword)
                checked += 1
    assert checked > 50


def test_rederive_prints_the_same_both_ways(both, served):
    made = served.reg.materialize("tiny-gpt2", layers=1, hidden=8, method="weight-selection")
    local, remote = both.run("rederive", made.artifact.name)
    assert local == remote and local[0] == 0, remote
    assert "re-derived bit for bit" in remote[1]


def test_a_client_audits_by_hashes_and_never_uploads_the_weights(
    both, tmp_path, tiny_dir, monkeypatch
):
    """A client reads and hashes the checkpoint itself, as a local audit does, and sends
    only the hashes, config.json and metadata: the verdict (known, modified, verified) and
    the refusals are the registry's own, and no weights travel."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from zoo.client import RemoteRegistry

    sent: list[dict] = []
    call = RemoteRegistry._call
    monkeypatch.setattr(
        RemoteRegistry, "_call", lambda self, *a, **k: sent.append(k) or call(self, *a, **k)
    )
    tiny_gpt2 = tiny_dir("gpt2")  # registered as tiny-gpt2
    modified = tmp_path / "modified"
    shutil.copytree(tiny_gpt2, modified)
    weights = load_file(modified / "model.safetensors")
    first = sorted(weights)[0]
    weights[first] = weights[first] + 1
    save_file(weights, modified / "model.safetensors", metadata={"format": "pt"})
    verdicts = []
    for args in (
        ("audit", str(tiny_gpt2)),
        ("audit", str(tiny_gpt2), "--verify"),
        ("audit", str(modified)),
        ("audit", str(tmp_path / "missing")),
        ("audit", str(tmp_path)),  # no config.json
    ):
        local, remote = both.run(*args)
        assert remote == local, args
        verdicts.append(local)
    assert [v[0] for v in verdicts[:2]] == [0, 0] and "MODIFIED" in verdicts[2][1]
    assert "verify: re-derived" not in verdicts[1][1]  # a source: nothing to re-derive
    assert sent and all("files" not in k for k in sent)
    size = (modified / "model.safetensors").stat().st_size
    assert all(len(str(k.get("json", ""))) < size for k in sent)


def test_a_source_and_its_same_size_copy_export_their_own_cards_both_ways(both, served, tmp_path):
    """A same-size materialization holds its source's tensors (one content hash) but its
    own model card and file metadata: each export through the server is what a local
    export of the same name writes, whichever the server built first."""
    from safetensors import safe_open

    info = served.reg.show("tiny-gpt2")
    same = served.reg.materialize("tiny-gpt2", layers=info.layers, hidden=info.hidden)
    assert (same.artifact.kind, same.artifact.content_hash) == ("derived", info.content_hash)

    def metadata(folder):
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            return f.metadata()

    for name in (same.artifact.name, "tiny-gpt2", same.artifact.name):
        local, remote = tmp_path / "local" / name, tmp_path / "remote" / name
        done = [
            how("export", name, "--out", str(folder), "--force", "--json")
            for how, folder in ((both.local, local), (both.remote, remote))
        ]
        assert [code for code, _, _ in done] == [0, 0], done
        # The JSON names the artifact the folder holds, as materialize's does.
        (_, mine, _), (_, theirs, _) = done
        assert json.loads(mine)["artifact"] == served.reg.show(name).to_json()
        assert json.loads(theirs)["artifact"] == json.loads(mine)["artifact"]
        assert (remote / "README.md").read_text() == (local / "README.md").read_text()
        assert metadata(remote) == metadata(local)
    cards = {
        (tmp_path / "local" / n / "README.md").read_text()
        for n in ("tiny-gpt2", same.artifact.name)
    }
    assert len(cards) == 2


def test_an_upload_carries_what_a_local_import_reads(both, served, tiny_dir, tmp_path):
    """An upload sends the side files and the model card (so its base_model edge) with the
    weights; pickle weights go with --convert-bin, read as a local import reads them."""
    import json

    import torch
    from tinymodels import build_model

    folder = tmp_path / "with-files"
    shutil.copytree(tiny_dir("gpt2", seed=3), folder)
    (folder / "README.md").write_text("---\nbase_model: acme/base\nlicense: mit\n---\n# tuned\n")
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "bpe.codes").write_text("#version: 0.2\n")  # a side file by its name alone
    # A license, the code an auto_map names and a sentence-transformers module folder.
    (folder / "LICENSE").write_text("the terms\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_tuned.TunedConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_tuned.py").write_text("from transformers import GPT2Config\n")
    modules = [{"idx": 1, "path": "1_Pooling"}, {"idx": 2, "path": "2_Dense"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 16}')
    # A Dense module as sentence-transformers saves it without safetensors: its bytes
    # are kept (never unpickled), by the server as by a local import.
    (folder / "2_Dense").mkdir()
    torch.save({"linear.weight": torch.ones(4, 16)}, folder / "2_Dense" / "pytorch_model.bin")
    code, _, err = both.remote("import", str(folder), "--name", "with-files")
    assert code == 0, err
    info = served.reg.show("with-files")
    sent = {"README.md", "tokenizer_config.json", "merges.txt", "generation_config.json"}
    sent |= {"bpe.codes"}
    sent |= {"LICENSE", "configuration_tuned.py", "modules.json", "1_Pooling/config.json"}
    sent |= {"2_Dense/pytorch_model.bin"}
    assert {f.name for f in info.files} == sent
    local = both.local("import", str(folder), "--json")  # the same files, kept locally
    assert local[0] == 0 and {f["name"] for f in json.loads(local[1])["files"]} == sent
    code, _, err = both.remote("export", "with-files", "--out", str(tmp_path / "exported"))
    assert code == 0, err  # a module folder's file comes back by its path
    for name in ("1_Pooling/config.json", "2_Dense/pytorch_model.bin"):
        assert (tmp_path / "exported" / name).read_bytes() == (folder / name).read_bytes()
    graph = served.reg.lineage("with-files", down=False)
    assert {(graph.nodes[e.parent_id].name, e.relation) for e in graph.edges} == {
        ("acme/base", "finetune")
    }

    pickled = tmp_path / "bin-gpt2"
    pickled.mkdir()
    shutil.copy(tiny_dir("gpt2") / "config.json", pickled / "config.json")
    torch.save(build_model("gpt2", seed=4).state_dict(), pickled / "pytorch_model.bin")
    refused, local_refused = both.remote("import", str(pickled)), both.local("import", str(pickled))
    assert refused[0] == local_refused[0] == 2 and "--convert-bin" in refused[2]
    remote = both.remote("import", str(pickled), "--convert-bin", "--json")
    assert remote[0] == 0, remote[2]
    local = both.local("import", str(pickled), "--convert-bin", "--json")
    assert local[0] == 0, local[2]
    # The local import reads the same tensors from the pickle: the same content, found.
    assert json.loads(remote[1])["content_hash"] == json.loads(local[1])["content_hash"]
    assert json.loads(remote[1])["name"] == json.loads(local[1])["name"]


def test_an_audit_report_reads_back_whole_from_its_json():
    """Every field of a report the server sends comes back in the client, so a client's
    audit prints what a local one prints (which tensors were not compared, and why an
    artifact is named)."""
    import dataclasses

    from zoo.api.audit import AuditReport
    from zoo.client import audit_from_json

    values = {
        "path": "out",
        "status": "modified",
        "differing": ["a"],
        "missing": ["b"],
        "extra": ["c"],
        "config_differs": True,
        "not_compared": ["bert.embeddings.position_ids"],
        "named_by_file": True,
        "verified": False,
        "verify_error": "differs",
        "cast_from": ["BF16"],
        "rounded_to": ["F16"],
        "prefix_dropped": "bert.",
        "prefix_added": "model.",
        "head_dropped": True,
        "norm_names_differ": True,
        "wrapper_prefix": "_orig_mod.",
    }
    fields = {f.name for f in dataclasses.fields(AuditReport)}
    assert fields - set(values) == {"artifact", "lineage"}  # a new field is added here too
    report = AuditReport(**values)
    assert audit_from_json(report.to_json()) == report


def test_a_page_larger_than_the_servers_is_asked_for_in_parts(both, served, monkeypatch):
    """The server answers at most 1000 artifacts a request; a client's larger page is
    several requests, each from the cursor the one before ended at, and prints what the
    local page prints."""
    import json

    for seed in range(6):
        served.reg.materialize("tiny-gpt2", layers=1, hidden=8, method="scratch", seed=seed)
    monkeypatch.setattr("zoo.client._MAX_PAGE", 2)
    local, remote = both.run("ls", "--limit", "5", "--json")
    assert local[0] == 0 and remote == local
    page = json.loads(local[1])
    assert len(page["artifacts"]) == 5 and page["next"]
    local, remote = both.run("ls", "--limit", "3", "--after", page["next"], "--json")
    assert local[0] == 0 and remote == local


def test_config_show_in_client_mode_names_the_server_not_a_database(both, served):
    import json

    code, out, err = both.remote("config", "show", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["endpoint"].startswith(served.url) and "db_url" not in shown
    assert served.admin not in out and shown["token"].startswith("set")


def test_a_client_audit_sees_through_a_float32_save_as_a_local_one_does(both, served, tmp_path):
    """A bf16 output loaded as float32 and saved by transformers: the client narrows the
    tensors itself and sends only hashes, and prints the local verdict."""
    import json

    import torch
    import transformers

    out = tmp_path / "bf16"
    served.reg.materialize("tiny-gpt2", layers=1, hidden=16, dtype="bfloat16", out=out)
    widened = tmp_path / "f32"
    model = transformers.GPT2LMHeadModel.from_pretrained(out, dtype=torch.float32)
    model.save_pretrained(widened)
    local, remote = both.run("audit", str(widened), "--json")
    assert local[0] == 0 and remote == local
    report = json.loads(local[1])
    assert report["status"] == "known" and report["cast_from"] == ["BF16"]


def test_a_client_audit_finds_a_float32_checkpoint_saved_in_bf16_as_a_local_one_does(
    both, served, tmp_path
):
    """A float32 output loaded as bf16 and saved: the client sends the rounded tensors'
    hashes, the server finds the float32 records they round from, and the client prints
    the local verdict."""
    import json

    import torch
    import transformers

    out = tmp_path / "f32"
    m = served.reg.materialize(  # a seed of its own: a bf16 size of this recipe is the file
        "tiny-gpt2", layers=1, hidden=16, method="scratch", seed=4242, dtype="float32", out=out
    )
    assert m.artifact.virtual  # its weights are in the folder only: re-derived to compare
    model = transformers.GPT2LMHeadModel.from_pretrained(out, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    local, remote = both.run("audit", str(tmp_path / "bf16"), "--json")
    assert local[0] == 0 and remote == local, local
    report = json.loads(local[1])
    assert report["status"] == "known" and report["rounded_to"] == ["BF16"]
    assert report["artifact"]["name"] == m.artifact.name


def test_a_client_audit_of_a_base_model_saved_on_its_own_is_the_local_one(
    both, served, tiny_dir, tmp_path
):
    """A float32 base model saved without its head: its all-ones norm gains narrow to
    bf16 exactly, which must not make the client's audit claim a cast the local one does
    not (the narrowed hashes matched nothing a cast made)."""
    import json

    import transformers

    served.reg.import_checkpoint(tiny_dir("bert", seed=6), name="bert-mlm-base")
    model = transformers.BertForMaskedLM.from_pretrained(tiny_dir("bert", seed=6))
    model.bert.save_pretrained(tmp_path / "base")
    local, remote = both.run("audit", str(tmp_path / "base"), "--json")
    assert local[0] == 10 and remote == local, (local, remote)
    report = json.loads(local[1])
    assert report["head_dropped"] and report["cast_from"] == report["rounded_to"] == []


def test_an_alias_history_reads_the_same_through_the_server(both, served):
    import json

    other = served.reg.materialize("tiny-gpt2", layers=1, hidden=8, method="scratch", seed=77)
    assert both.remote("tag", "tiny-gpt2", "history-prod") == (0, "history-prod -> tiny-gpt2\n", "")
    code, out, _ = both.remote("tag", other.artifact.name, "history-prod")
    assert code == 0 and out == f"history-prod -> {other.artifact.name} (was tiny-gpt2)\n"
    local, remote = both.run("alias-history", "history-prod", "--json")
    assert local[0] == 0 and remote == local
    assert [s["artifact_name"] for s in json.loads(local[1])["history"]] == [
        other.artifact.name,
        "tiny-gpt2",
    ]
    local, remote = both.run("alias-history", "never-set")
    assert local[0] == 3 and remote == local


def test_an_alias_history_pages_the_same_through_the_server(both, served):
    """Seven settings, three a page, through the server as on its database: each once,
    newest first; a page larger than the server's is asked for in parts; a bad cursor or
    limit is refused in the registry's words."""
    import zoo

    names = [
        served.reg.materialize(
            "tiny-gpt2", layers=1, hidden=8, method="scratch", seed=s
        ).artifact.name
        for s in range(100, 107)
    ]
    for name in names:
        served.reg.tag(name, "paged-prod")
    newest_first = names[::-1]
    remote = zoo.connect(endpoint=served.url, token=served.admin)
    try:
        for reg in (served.reg, remote):
            pages, after = [], None
            while True:
                page = reg.alias_history("paged-prod", limit=3, after=after)
                pages.append([s.artifact_name for s in page])
                assert len(pages) <= 3, pages
                if page.next is None:
                    break
                after = page.next
            assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]
        # Every setting without a limit; 1,001 (past the server's page) in parts.
        assert [s.artifact_name for s in remote.alias_history("paged-prod")] == newest_first
        page = remote.alias_history("paged-prod", limit=1001)
        assert [s.artifact_name for s in page] == newest_first and page.next is None
        for bad in ({"after": "abc"}, {"limit": 0}, {"after": "9" * 30}):
            said = []
            for reg in (served.reg, remote):
                with pytest.raises(InvalidInputError) as caught:
                    reg.alias_history("paged-prod", **bad)
                said.append(str(caught.value))
            assert said[0] == said[1], said
    finally:
        remote.close()
    with client(served.url, served.reader) as http:
        body = http.get("/api/aliases/paged-prod", params={"limit": 3}).json()
        assert [s["artifact_name"] for s in body["history"]] == newest_first[:3]
        assert body["alias"] == "paged-prod" and body["next"]
        # The REST default is a page of 50, as /api/artifacts answers.
        whole = http.get("/api/aliases/paged-prod").json()
        assert len(whole["history"]) == 7 and whole["next"] is None
        answer = http.get("/api/aliases/paged-prod", params={"after": "abc"})
        assert answer.status_code == 400 and "not a listing cursor" in answer.text, answer.text

    command = ("alias-history", "paged-prod", "--limit", "3")
    local, remote_said = both.run(*command)
    assert local[0] == 0 and remote_said == local and len(local[1].splitlines()) == 3
    after = local[2].rpartition("--after ")[2].strip()
    local, remote_said = both.run(*command, "--after", after, "--json")
    assert local[0] == 0 and remote_said == local
    body = json.loads(local[1])
    assert [s["artifact_name"] for s in body["history"]] == newest_first[3:6]
    local, remote_said = both.run(*command, "--after", body["next"])
    assert local[0] == 0 and remote_said == local and local[2] == ""
    local, remote_said = both.run("alias-history", "paged-prod", "--after", "x")
    assert local[0] == 2 and remote_said == local and local[2].count("\n") == 1


def test_a_remote_registry_refuses_and_returns_what_the_local_one_does(
    served, tiny_dir, tmp_path, monkeypatch
):
    """The same call, local or through a server: what the local registry refuses is
    refused (the server's bodies are strict: true, 2.0 and "2" are not 2; a limit of 0, an
    empty name or 0 is no "everything"), with zoo's errors, not urllib's or pathlib's; and
    weights come back in memory only where no folder was written."""
    import zoo
    from zoo.errors import InvalidNameError, NotFoundError

    monkeypatch.delenv("ZOO_ENDPOINT", raising=False)
    remote = zoo.connect(endpoint=served.url, token=served.admin)
    before = {a.name for a in served.reg.list(include_deleted=True)}
    for call in (
        lambda: remote.show(None),
        lambda: remote.show("\ud800"),
        lambda: remote.search(limit=0),
        lambda: remote.search(limit=True),
        lambda: remote.verify(0),
        lambda: remote.materialize("tiny-gpt2", layers=True, hidden=16),
        lambda: remote.materialize("tiny-gpt2", layers=2.0, hidden=16),
        lambda: remote.materialize("tiny-gpt2", layers="2", hidden=16),
        lambda: remote.materialize("tiny-gpt2", layers=1, hidden=16, out=5),
        lambda: remote.export("tiny-gpt2", out=None),
        lambda: remote.import_checkpoints(str(tiny_dir("bert"))),
    ):
        with pytest.raises(InvalidInputError):
            call()
    for call in (lambda: remote.show(""), lambda: remote.verify("")):
        with pytest.raises(NotFoundError):
            call()
    with pytest.raises(InvalidNameError):
        remote.import_checkpoint(tiny_dir("bert", seed=3), name="")
    assert {a.name for a in served.reg.list(include_deleted=True)} == before
    written = remote.materialize("tiny-gpt2", layers=1, hidden=16, out=tmp_path / "m")
    assert written.state_dict is None and (tmp_path / "m" / "config.json").is_file()
    held = remote.materialize("tiny-gpt2", layers=1, hidden=16)
    assert set(held.state_dict) == set(
        served.reg.materialize("tiny-gpt2", layers=1, hidden=16).state_dict
    )
    imported = remote.import_checkpoints([tiny_dir("bert", seed=4), tiny_dir("bert", seed=5)])
    assert [served.reg.show(i.name).content_hash for i in imported] == [
        i.content_hash for i in imported
    ]


def test_a_remote_registry_refuses_bad_arguments_in_the_local_registrys_words(
    served, tiny_dir, monkeypatch
):
    """Arguments that are not what a Registry method takes are refused by a client before
    any request, with the local registry's error class and message: a filter of another
    type is not sent as its text (family=7 was answered as a search for "7"; name=5 found
    artifacts), "" or None is no folder (an upload or audit of "" read the current folder),
    and a misspelt keyword is Python's TypeError on both, not a request the server
    refuses in its own words."""
    import zoo
    from zoo.errors import NotFoundError, ZooError

    monkeypatch.delenv("ZOO_ENDPOINT", raising=False)
    remote = zoo.connect(endpoint=served.url, token=served.admin)
    # The current folder is a checkpoint: "" must not read it.
    monkeypatch.chdir(tiny_dir("gpt2"))
    before = {a.name for a in served.reg.list(include_deleted=True)}
    calls = {
        "family": lambda reg: reg.search(family=7),
        "name": lambda reg: reg.search(name=5),
        "author": lambda reg: reg.search(created_by=5),
        "cursor": lambda reg: reg.search(after=5),
        "kind": lambda reg: reg.search(kind=5),
        "bound": lambda reg: reg.search(min_layers="1"),
        "moment": lambda reg: reg.search(created_after=12345),
        "listed bound": lambda reg: reg.list(max_hidden=1.5),
        "audit None": lambda reg: reg.audit(None),
        "audit ''": lambda reg: reg.audit(""),
        "import ''": lambda reg: reg.import_checkpoint(""),
        "import None": lambda reg: reg.import_checkpoint(None),
        "batch None": lambda reg: reg.import_checkpoints(None),
        "batch [None]": lambda reg: reg.import_checkpoints([None]),
        "batch 5": lambda reg: reg.import_checkpoints(5),
        "list limit": lambda reg: reg.list(limit=3),
        "search keyword": lambda reg: reg.search(bogus=1),
        "extract keyword": lambda reg: reg.extract("tiny-gpt2", bogus=1),
        "materialize keyword": lambda reg: reg.materialize("tiny-gpt2", layers=1, hidden=8, x=1),
        "materialize layers": lambda reg: reg.materialize("tiny-gpt2", hidden=8),
        "alias ''": lambda reg: reg.tag("tiny-gpt2", ""),
        "alias None": lambda reg: reg.tag("tiny-gpt2", None),
        "long alias": lambda reg: reg.tag("nope", "a" * 200),
        "token None": lambda reg: reg.create_token(None),
        "revoke None": lambda reg: reg.revoke_token(None),
        # Values of another type: the local registry's words, not the server's request model's.
        "layers '1'": lambda reg: reg.materialize("tiny-gpt2", layers="1", hidden=16),
        "heads '2'": lambda reg: reg.materialize("tiny-gpt2", layers=1, hidden=16, heads="2"),
        "dtype None": lambda reg: reg.materialize("tiny-gpt2", layers=1, hidden=16, dtype=None),
        "method 5": lambda reg: reg.materialize("tiny-gpt2", layers=1, hidden=16, method=5),
        "seed 1.0": lambda reg: reg.materialize("tiny-gpt2", layers=1, hidden=16, seed=1.0),
        "device 1.5": lambda reg: reg.materialize("tiny-gpt2", layers=1, hidden=16, device=1.5),
        "levels 2.0": lambda reg: reg.extract("tiny-gpt2", levels=2.0),
        "keep '0.5'": lambda reg: reg.extract("tiny-gpt2", method="dct", keep="0.5"),
        "keep 2": lambda reg: reg.extract("tiny-gpt2", method="dct", keep=2),
        "extract method None": lambda reg: reg.extract("tiny-gpt2", method=None),
        "extract order None": lambda reg: reg.extract("tiny-gpt2", order=None),
        "extract wavelet 5": lambda reg: reg.extract("tiny-gpt2", wavelet=5),
        "extract name 5": lambda reg: reg.extract("tiny-gpt2", name=5),
        "extract device 1.5": lambda reg: reg.extract("tiny-gpt2", device=1.5),
        "relation None": lambda reg: reg.link("tiny-gpt2", "tiny-gpt2", relation=None),
        "note 5": lambda reg: reg.link("tiny-gpt2", "tiny-gpt2", note=5),
        "parent None": lambda reg: reg.link("tiny-gpt2", None),
        "rederive device 1.5": lambda reg: reg.rederive("tiny-gpt2", device=1.5),
        # Durations: not sent as their text, which the server read as its own ('-5' is not
        # a duration), and 1e-05 seconds is one.
        "grace -5": lambda reg: reg.gc(grace=-5, dry_run=True),
        "grace None": lambda reg: reg.gc(grace=None, dry_run=True),
        "grace inf": lambda reg: reg.gc(grace=float("inf"), dry_run=True),
        "grace nan": lambda reg: reg.fsck(grace=float("nan")),
        "grace huge": lambda reg: reg.fsck(grace=-(10**400)),
        "depth '2'": lambda reg: reg.lineage("tiny-gpt2", depth="2"),
        "depth 1.0": lambda reg: reg.lineage("tiny-gpt2", depth=1.0),
        "depth -1": lambda reg: reg.lineage("tiny-gpt2", depth=-1),
        "family ''": lambda reg: reg.set_default("", "tiny-gpt2"),
        "family None": lambda reg: reg.set_default(None, "tiny-gpt2"),
        "family NUL": lambda reg: reg.set_default("\x00", "tiny-gpt2"),
        "default None": lambda reg: reg.set_default("gpt2", None),
        "role None": lambda reg: reg.create_token("t", role=None),
        "expires 5": lambda reg: reg.create_token("t", expires=5),
        "expires soon": lambda reg: reg.create_token("t", expires="soon"),
        "expires huge": lambda reg: reg.create_token("t", expires="99999999w"),
        # A yes-or-no option is True or False: "no" is not read as true (it was, locally:
        # rm(cascade="no") cascaded), nor refused in the server's words.
        "store 'no'": lambda reg: reg.materialize("tiny-gpt2", layers=1, hidden=16, store="no"),
        "cascade 'no'": lambda reg: reg.rm("tiny-gpt2", cascade="no"),
        "dry_run 'yes'": lambda reg: reg.gc(dry_run="yes"),
        "repair None": lambda reg: reg.fsck(repair=None),
        "include_deleted 1": lambda reg: reg.show("tiny-gpt2", include_deleted=1),
        "up 'no'": lambda reg: reg.lineage("tiny-gpt2", up="no"),
        "newest_first None": lambda reg: reg.search(newest_first=None),
        "include_revoked 'yes'": lambda reg: reg.list_tokens(include_revoked="yes"),
    }
    # Names that name nothing, said alike (and not by the server's own words).
    lookups = {
        "show long": lambda reg: reg.show("a" * 5000),
        "show NUL": lambda reg: reg.show("\x00"),
        "lineage NUL": lambda reg: reg.lineage("\x00"),
        "rm long": lambda reg: reg.rm("a" * 1025),
        "link to ''": lambda reg: reg.link("tiny-gpt2", ""),
        "default to ''": lambda reg: reg.set_default("gpt2", ""),
        "revoke NUL": lambda reg: reg.revoke_token("\x00"),
        "history NUL": lambda reg: reg.alias_history("\x00"),
    }
    said = {}
    for what, call in {**calls, **lookups}.items():
        refused = []
        for reg in (served.reg, remote):
            with pytest.raises((ZooError, TypeError)) as caught:
                call(reg)
            message = str(caught.value).replace("RemoteRegistry.", "Registry.")
            refused.append((type(caught.value), message))
        assert refused[0] == refused[1], (what, refused)
        assert refused[0][0] is TypeError or issubclass(
            refused[0][0], (InvalidInputError, NotFoundError)
        ), what
        assert len(refused[0][1]) < 300, what  # one line, not the argument back
        said[what] = refused[0]
    # Another HTTP client (curl) sending values of the right JSON type hears zoo's words.
    with client(served.url, served.admin) as http:
        for what, (method, path, body) in {
            "show long": ("GET", "/api/artifacts/" + "a" * 5000, None),
            "lineage NUL": ("GET", "/api/artifacts/%00/lineage", None),
            "link to ''": ("POST", "/api/artifacts/tiny-gpt2/links", {"parent": ""}),
            "default to ''": ("PUT", "/api/defaults/gpt2", {"learngene": ""}),
            "grace -5": ("POST", "/api/gc", {"grace": -5, "dry_run": True}),
            "depth -1": ("GET", "/api/artifacts/tiny-gpt2/lineage?depth=-1", None),
            "family NUL": ("PUT", "/api/defaults/%00", {"learngene": "tiny-gpt2"}),
        }.items():
            answer = http.request(method, path, json=body)
            assert answer.status_code in (400, 404), (what, answer.text)
            error = answer.json()["error"]
            assert (error["class"], error["message"]) == (
                said[what][0].__name__,
                said[what][1],
            ), what
    assert {a.name for a in served.reg.list(include_deleted=True)} == before
    for reg in (served.reg, remote):  # a number of seconds is sent as one
        assert reg.gc(grace=1e-05, dry_run=True).grace_s == 1e-05
    # Local only, as `zoo release-claim` says in client mode: one line, not an AttributeError.
    with pytest.raises(InvalidInputError, match="where the database is"):
        remote.release_claim("0123abcd")


def test_a_refused_argument_is_named_as_each_caller_gives_it(served, both, monkeypatch):
    """The server's answer names the request's JSON field; through a client, a Python call
    names the parameter and the CLI its option, as locally."""
    import zoo

    with client(served.url, served.admin) as http:
        answer = http.post(
            "/api/materialize",
            json={"name": "tiny-gpt2", "layers": 1, "hidden": 16, "method": "scratch"}
            | {"wavelet": "db2"},
        )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["message"] == '"wavelet" applies to "method": "dwt" only.', error
    assert error["params"] == ["wavelet", "method"]
    args = ("materialize", "tiny-gpt2", "--layers", "1", "--hidden", "16")
    local, remote = both.run(*args, "--method", "scratch", "--wavelet", "db2")
    said = "zoo: error: --wavelet applies to --method dwt only.\n"
    assert local == remote == (2, "", said), (local, remote)
    monkeypatch.delenv("ZOO_HOME", raising=False)
    reg = zoo.connect(endpoint=served.url, token=served.admin)
    with pytest.raises(InvalidInputError) as info:
        reg.materialize("tiny-gpt2", layers=1, hidden=16, method="scratch", wavelet="db2")
    assert str(info.value) == "wavelet= applies to method='dwt' only."


@pytest.mark.parametrize("folder", ["two words", "it's", 'it\'s "so"', "new\nline", "runs out=3"])
def test_a_path_a_refusal_names_is_said_alike_by_every_caller(
    served, both, monkeypatch, tmp_path, folder
):
    """A path holding a space, quotes, a newline or what reads as a parameter (out=3) is
    the user's text: a Python call's message names it as repr writes it, the CLI's as a
    shell takes it back, on one line, locally and through a server alike."""
    import shlex

    import zoo
    from zoo.errors import ConflictError
    from zoo.text import printable

    (tmp_path / folder).mkdir()
    taken = tmp_path / folder / "model"
    taken.mkdir()
    (taken / "mine.txt").write_text("not zoo's")
    (tmp_path / folder / "notes.txt").write_text("mine")
    under = tmp_path / folder / "notes.txt" / "small"
    said = [
        (
            taken,
            4,
            f"out={str(taken)!r} exists and is not empty; pass force=True to replace it.",
            f"--out {shlex.quote(printable(str(taken)))} exists and is not empty; pass --force "
            "to replace it.",
        ),
        (
            under,
            4,
            f"out={str(under)!r} lies under {str(under.parent)!r}, which is not a folder.",
            f"--out {shlex.quote(printable(str(under)))} lies under {str(under.parent)!r}, "
            "which is not a folder.",
        ),
    ]
    monkeypatch.delenv("ZOO_HOME", raising=False)
    remote_reg = zoo.connect(endpoint=served.url, token=served.admin)
    for out, code, python, flags in said:
        for reg in (served.reg, remote_reg):
            with pytest.raises(ConflictError) as info:
                reg.export("tiny-gpt2", out=out)
            assert str(info.value) == python
        local, remote = both.run("export", "tiny-gpt2", "--out", str(out))
        assert local == remote == (code, "", f"zoo: error: {flags}\n"), (local, remote)
    assert (taken / "mine.txt").read_text() == "not zoo's"
    assert (tmp_path / folder / "notes.txt").read_text() == "mine"


def test_what_to_run_is_said_alike_through_a_server(served, both, monkeypatch, tiny_dir):
    """A registry call a message tells the reader to make reaches a client as Python, and
    its CLI says the command, as locally."""
    import zoo
    from zoo.errors import NotFoundError

    served.reg.import_checkpoint(tiny_dir("roberta"), name="tiny-roberta")
    python = (
        "No roberta learngene is registered. Extract one with `reg.extract('tiny-roberta')`, "
        "or name a source: tiny-roberta."
    )
    monkeypatch.delenv("ZOO_HOME", raising=False)
    for reg in (served.reg, zoo.connect(endpoint=served.url, token=served.admin)):
        with pytest.raises(NotFoundError) as info:
            reg.materialize("roberta", layers=1, hidden=16)
        assert str(info.value) == python
    local, remote = both.run("materialize", "roberta", "--layers", "1", "--hidden", "16")
    said = python.replace("reg.extract('tiny-roberta')", "zoo extract tiny-roberta")
    assert local == remote == (3, "", f"zoo: error: {said}\n"), (local, remote)


def _time(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)
