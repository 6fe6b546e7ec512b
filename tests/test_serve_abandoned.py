"""A client that leaves before its answer (Ctrl-C during `zoo materialize` or `zoo
import`, a dropped connection): what it asked for is not recorded on the server, as a
local command stopped the same way records nothing, unless another client still waits
for the same work. A real server process; its database's write lock, held here, keeps
the work from finishing until the client has gone."""

from __future__ import annotations

import contextlib
import fcntl
import signal
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from zooserver import ZooServer, client, registry_for, server_env

pytest.importorskip("fastapi")

SIZE = {"name": "tiny-bert", "layers": 2, "hidden": 24, "heads": 4}


@pytest.fixture
def served(tmp_path, tiny_dir):
    env = server_env(tmp_path)
    reg = registry_for(env)
    reg.import_checkpoint(tiny_dir("bert"), name="tiny-bert")
    token = reg.create_token("w", role="write")[1]
    log = tmp_path / "server.log"
    server = ZooServer(env, log=log).start()
    try:
        yield SimpleNamespace(server=server, reg=reg, token=token, home=tmp_path, log=log)
    finally:
        server.stop()
        reg.close()


@contextlib.contextmanager
def writes_held(served):
    """Every write of the server waits (the SQLite write lock zoo queues writers on)."""
    with open(served.home / "zoo.db.write.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sent(served, request: httpx.Request) -> socket.socket:
    """``request`` sent whole on a connection of its own, its answer never read."""
    body = request.read()
    head = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in request.headers.items()) + "\r\n"
    sock = socket.create_connection(("127.0.0.1", served.server.port))
    sock.sendall(head.encode() + body)
    return sock


def materialize_request(served) -> httpx.Request:
    return httpx.Request(
        "POST",
        f"{served.server.url}/api/materialize",
        json=SIZE,
        headers={"Authorization": f"Bearer {served.token}"},
    )


def statuses(served, route: str, count: int) -> list[str]:
    """The statuses of the first ``count`` requests to ``route`` in the server's log, once
    they are there."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines = [line for line in served.log.read_text().splitlines() if f'"{route}"' in line]
        if len(lines) >= count:
            return [line.split(f'"{route}" ')[1].split()[0] for line in lines[:count]]
        time.sleep(0.05)
    raise AssertionError(f"no {count} lines for {route}: {served.log.read_text()[-2000:]}")


def derived(served) -> list[str]:
    return [a.name for a in served.reg.list(kind="derived")]


def test_a_materialize_whose_client_left_records_nothing_and_runs_again_when_asked(served):
    with writes_held(served):
        gone = sent(served, materialize_request(served))
        time.sleep(1)  # the work has begun: it waits for the write lock
        gone.close()
        time.sleep(0.5)
    # "Client closed request": the work stopped before its rows, its files went.
    assert statuses(served, "POST /api/materialize", 1) == ["499"]
    assert derived(served) == []
    cache = served.home / "serve-cache"
    assert not [p.name for p in cache.iterdir() if p.name.startswith("..pending")]
    # Asked again by a client that waits, the size is derived afresh and recorded.
    with client(served.server.url, served.token) as http:
        answer = http.post("/api/materialize", json=SIZE)
    assert answer.status_code == 200, answer.text
    assert derived(served) == [answer.json()["artifact"]["name"]]


def test_a_materialize_another_client_waits_for_is_recorded_when_one_leaves(served):
    got = []

    def wait_for_it():
        with client(served.server.url, served.token) as http:
            got.append(http.post("/api/materialize", json=SIZE))

    waiter = threading.Thread(target=wait_for_it)
    with writes_held(served):
        gone = sent(served, materialize_request(served))
        time.sleep(0.5)
        waiter.start()
        time.sleep(1)  # both wait for the one derivation
        gone.close()
        time.sleep(0.5)
    waiter.join(timeout=120)
    assert got[0].status_code == 200, got[0].text
    assert derived(served) == [got[0].json()["artifact"]["name"]]
    # The one that left was answered too (to no one): its work was kept for the other.
    assert statuses(served, "POST /api/materialize", 2) == ["200", "200"]


def test_an_upload_whose_client_left_before_its_answer_imports_nothing(served, tiny_dir):
    folder = tiny_dir("llama")
    files = [("files", (f.name, f.read_bytes())) for f in sorted(folder.iterdir()) if f.is_file()]
    upload = httpx.Request(
        "POST",
        f"{served.server.url}/api/import/upload",
        files=files,
        data={"folder": "left", "name": "left"},
        headers={"Authorization": f"Bearer {served.token}"},
    )
    with writes_held(served):
        gone = sent(served, upload)
        time.sleep(1.5)  # received and stored: its record waits for the write lock
        gone.close()
        time.sleep(0.5)
    assert statuses(served, "POST /api/import/upload", 1) == ["499"]
    assert [a.name for a in served.reg.list(kind="source")] == ["tiny-bert"]
    cache = served.home / "serve-cache"
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".upload")]
    # What the import stored is no artifact's: gc collects it, as after a local Ctrl-C.
    assert served.reg.fsck(grace=0).orphans


def test_ctrl_c_during_the_download_of_a_size_says_the_server_recorded_it(
    served, run_cli, monkeypatch, tmp_path
):
    """Once the server has answered, the size is recorded there: a client stopped while it
    downloads the files says so, where it said only "aborted" as if nothing was kept."""
    from zoo.client import RemoteRegistry

    def ctrl_c(self, url, dest, meta):
        raise KeyboardInterrupt

    monkeypatch.setattr(RemoteRegistry, "_fetch", ctrl_c)
    for var in ("ZOO_DB_URL", "ZOO_STORE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ZOO_ENDPOINT", served.server.url)
    monkeypatch.setenv("ZOO_TOKEN", served.token)
    mine = tmp_path / "client"
    mine.mkdir()
    out = mine / "small"
    args = [str(a) for k, a in SIZE.items() for a in (f"--{k}", a) if k != "name"]
    code, stdout, stderr = run_cli("materialize", "tiny-bert", *args, "--out", str(out))
    [name] = derived(served)
    assert (code, stdout) == (130, "")
    assert stderr.strip() == (  # after the line end click writes on Ctrl-C
        f"zoo: interrupted after the server recorded {name}: it is kept there, and {out} "
        f"was not written (`zoo export {name} --out {out}` writes it)"
    )
    assert list(mine.iterdir()) == []  # nor any of its download staged
    # A Python caller reads the registry call that writes it.
    from zoo.errors import InterruptedAfterWriting

    remote = RemoteRegistry(served.server.url, served.token)
    with pytest.raises(InterruptedAfterWriting) as stopped:
        remote.materialize(**SIZE, out=out)
    assert str(stopped.value) == (
        f"interrupted after the server recorded {name}: it is kept there, and {out} was not "
        f"written (`reg.export({name!r}, out={str(out)!r})` writes it)"
    )


def test_a_size_a_hub_download_left_before_its_answer_is_not_recorded(served):
    """transformers' from_pretrained(revision="2x24") given up (a timeout, Ctrl-C) while
    the server makes the size: nothing recorded, as for `zoo materialize`."""
    path = "/tiny-bert/resolve/2x24/config.json"
    auth = {"Authorization": f"Bearer {served.token}"}
    with writes_held(served):
        gone = sent(served, httpx.Request("GET", f"{served.server.url}{path}", headers=auth))
        time.sleep(1)
        gone.close()
        time.sleep(0.5)
    assert statuses(served, f"GET {path}", 1) == ["499"]
    assert derived(served) == []
    with client(served.server.url, served.token) as http:
        config = http.get(path).json()
    assert (config["num_hidden_layers"], config["hidden_size"]) == (2, 24)
    assert len(derived(served)) == 1


# Each write of an output folder's weights waits: a build a test can stop midway, as one
# of a large model.
SLOW_WRITES = """
import time
import zoo.api.export as export
_pwrite = export.OutputFolder._pwrite
def _slow(self, *args):
    time.sleep(0.2)
    return _pwrite(self, *args)
export.OutputFolder._pwrite = _slow
"""


def _build_cut(tmp_path, tiny_dir, stop: signal.Signals):
    """A server stopped by ``stop`` while it writes a size a client asked for; returns
    the server, its exit status, the client's answer and the cache."""
    env = server_env(tmp_path)
    reg = registry_for(env)
    reg.import_checkpoint(tiny_dir("bert"), name="tiny-bert")
    token = reg.create_token("w", role="write")[1]
    reg.close()
    log = tmp_path / "server.log"
    server = ZooServer(env, "--shutdown-timeout", "1s", log=log, patch=SLOW_WRITES).start()
    cache = tmp_path / "serve-cache"
    # None of zoo's writing, whatever they are named: kept.
    (cache / "notes.txt").write_text("mine")
    (cache / ".pending-mine").mkdir()
    got = []

    def ask():
        with client(server.url, token) as http:
            try:
                got.append(http.post("/api/materialize", json=SIZE))
            except httpx.HTTPError as exc:  # SIGKILL: no answer
                got.append(exc)

    asking = threading.Thread(target=ask)
    asking.start()
    deadline = time.monotonic() + 60
    while not any(".zoo-tmp-" in p.name for p in cache.iterdir()):
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)
    time.sleep(0.5)  # some weights are written
    server.proc.send_signal(stop)
    code = server.proc.wait(timeout=60)
    asking.join(timeout=60)
    return SimpleNamespace(env=env, server=server, code=code, got=got, cache=cache, log=log)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stopping_server_removes_the_builds_it_cut_and_nothing_else(tmp_path, tiny_dir, stop):
    """SIGTERM or Ctrl-C while a size is written into the cache: once --shutdown-timeout
    has passed the client hears the server stopped (503), nothing is recorded, and the
    folders of the build are gone before the process ends, not left for its next start."""
    cut = _build_cut(tmp_path, tiny_dir, stop)
    assert cut.code == (143 if stop == signal.SIGTERM else 130), cut.log.read_text()[-2000:]
    assert cut.got and cut.got[0].status_code == 503, cut.got
    names = sorted(p.name for p in cut.cache.iterdir())
    assert names == [".pending-mine", ".zoo-serve-cache", ".zoo-serve-writer", "notes.txt"]
    assert "removed 1 unfinished builds of the stopping server" in cut.log.read_text()
    reg = registry_for(cut.env)
    try:
        assert reg.list(kind="derived") == []
    finally:
        reg.close()


def test_what_a_killed_server_was_building_goes_at_the_next_start(tmp_path, tiny_dir):
    """SIGKILL leaves no time to clean: the next start removes the build's folders by
    their names, and nothing else."""
    cut = _build_cut(tmp_path, tiny_dir, signal.SIGKILL)
    assert cut.code == -signal.SIGKILL
    assert [p.name for p in cut.cache.iterdir() if ".zoo-tmp-" in p.name]
    again = ZooServer(cut.env, log=cut.log).start()
    try:
        names = sorted(p.name for p in cut.cache.iterdir())
        assert names == [".pending-mine", ".zoo-serve-cache", ".zoo-serve-writer", "notes.txt"]
    finally:
        again.stop()


# Each piece of a blob the store writes waits: an import a test can stop midway, as one of
# a large checkpoint.
SLOW_BLOBS = """
import time
import zoo.store.local as local
_write_file = local.LocalStore._write_file
def _slow(self, digest, pieces, *, check):
    def slowly():
        for piece in pieces:
            time.sleep(0.3)
            yield piece
    return _write_file(self, digest, slowly(), check=check)
local.LocalStore._write_file = _slow
"""


def test_a_server_stopped_during_an_import_removes_the_blobs_it_was_writing(tmp_path, tiny_dir):
    """SIGTERM while an uploaded checkpoint's blobs are written: the import records
    nothing, and the temporary files of the blobs it was writing go before the process
    ends (they were left, and zoo fsck exited 13 for them until --repair), while a
    temporary file of another writer's, named as zoo names them, stays."""
    from zoo.store.base import temp_name

    env = server_env(tmp_path)
    reg = registry_for(env)
    reg.import_checkpoint(tiny_dir("bert"), name="tiny-bert")
    token = reg.create_token("w", role="write")[1]
    blobs = tmp_path / "blobs"
    digest = "ab" * 32
    other = blobs / "ab" / temp_name(digest)  # another process's write, under way
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_bytes(b"not this server's")
    log = tmp_path / "server.log"
    server = ZooServer(env, "--shutdown-timeout", "1s", log=log, patch=SLOW_BLOBS).start()
    folder = tiny_dir("gpt2", seed=7)
    files = [("files", (f.name, f.read_bytes())) for f in sorted(folder.iterdir()) if f.is_file()]
    got = []

    def upload():
        with client(server.url, token) as http:
            got.append(http.post("/api/import/upload", files=files, data={"folder": "g"}))

    uploading = threading.Thread(target=upload)
    uploading.start()

    def writing():
        return [p for p in blobs.glob("*/.tmp-*") if p != other]

    deadline = time.monotonic() + 60
    while not writing():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.02)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 143, log.read_text()[-2000:]
    uploading.join(timeout=60)
    assert got and got[0].status_code == 503, got
    assert writing() == [], log.read_text()[-2000:]
    assert other.read_bytes() == b"not this server's"
    assert "unfinished blob writes of the stopping server" in log.read_text()
    try:
        assert [a.name for a in reg.list()] == ["tiny-bert"]
        assert [t.name for t in reg.fsck(grace=0).temp_files] == [
            other.relative_to(blobs).as_posix()
        ]
    finally:
        reg.close()


def test_a_token_ending_during_a_materialize_says_the_server_recorded_it(
    served, run_cli, monkeypatch, tmp_path
):
    """A token that ends while the server makes a size: the request, begun before its end,
    is finished and recorded, and its files' download is refused. The client said only
    that the token expired (exit 12), as if nothing was kept; it now names what the server
    recorded and how to write it, and leaves no folder."""
    info, secret = served.reg.create_token("ending", role="write", expires="3s")
    for var in ("ZOO_DB_URL", "ZOO_STORE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ZOO_ENDPOINT", served.server.url)
    monkeypatch.setenv("ZOO_TOKEN", secret)
    out = tmp_path / "small"
    args = [str(a) for k, a in SIZE.items() for a in (f"--{k}", a) if k != "name"]
    got = []
    asking = threading.Thread(
        target=lambda: got.append(run_cli("materialize", "tiny-bert", *args, "--out", str(out)))
    )
    with writes_held(served):
        asking.start()
        time.sleep(4)  # the request was taken; its record waits past the token's end
    asking.join(timeout=120)
    [name] = derived(served)
    code, stdout, stderr = got[0]
    assert (code, stdout) == (12, ""), stderr
    assert stderr == (
        f"zoo: error: The token 'ending' expired at "
        f"{info.expires_at.isoformat(timespec='seconds')}; an admin can create a new one "
        f"(zoo token create). The server recorded {name} before: {out} was not written "
        f"(zoo export {name} --out DIR writes it, with a token in force).\n"
    )
    assert not out.exists()
