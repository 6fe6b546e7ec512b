"""An uploaded checkpoint is streamed into the server's staging folder as it arrives
(zoo.server.uploads): each file written once, nothing in the system's temporary folder,
and an upload the server's disks cannot hold refused before its first byte."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile

import httpx
import pytest
from zooserver import ZooServer, client, registry_for, server_env

from zoo.errors import InvalidInputError
from zoo.server.checks import check_upload_name
from zoo.server.uploads import MAX_FIELD_BYTES, receive


class _Request:
    """What :func:`receive` reads of a request: its headers and its body, in chunks."""

    def __init__(self, content_type: str, body: bytes, chunk: int) -> None:
        self.headers = {"content-type": content_type}
        self.body, self.chunk = body, chunk

    async def stream(self):
        for i in range(0, len(self.body), self.chunk):
            yield self.body[i : i + self.chunk]


def _encoded(files, data=None) -> tuple[str, bytes]:
    """A multipart body as httpx encodes one: an encoder other than zoo's client's."""
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.headers["content-type"], request.read()


def _receive(tmp_path, content_type, body, chunk=65536, fields=("folder", "name")):
    folder = tmp_path / "staging"
    folder.mkdir(exist_ok=True)
    request = _Request(content_type, body, chunk)
    return asyncio.run(receive(request, folder, check_upload_name, fields=fields)), folder


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_each_file_part_is_written_once_into_the_folder_as_it_arrives(tmp_path, monkeypatch, chunk):
    """Whatever the chunks the body arrives in (a boundary split across two of them), each
    file is written under its path in the folder with exactly the bytes sent, and the
    fields kept; no temporary file is made (a web framework's form parser spools each
    file into the system's temporary folder first)."""

    def refused(*_args, **_kwargs):
        raise AssertionError("an upload must not go through a temporary file")

    for maker in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, maker, refused)
    # 2.3 MB (more than one block written at a time) with a fake boundary in it; 23 KB
    # where the chunks are of a few bytes (a parser call each).
    repeat = 9000 if chunk >= 4096 else 90
    weights = bytes(range(256)) * repeat + b"\r\n--" + b"\0" * 1000
    files = [
        ("files", ("config.json", b'{"model_type": "bert"}', "application/json")),
        ("files", ("model.safetensors", weights, "application/octet-stream")),
        ("files", ("1_Pooling/config.json", b"{}", "application/json")),
    ]
    content_type, body = _encoded(files, {"folder": "my-model", "name": "caf\u00e9"})
    got, folder = _receive(tmp_path, content_type, body, chunk)
    assert got.fields == {"folder": "my-model", "name": "caf\u00e9"}
    assert got.files == ["config.json", "model.safetensors", "1_Pooling/config.json"]
    assert (folder / "model.safetensors").read_bytes() == weights
    assert (folder / "config.json").read_bytes() == b'{"model_type": "bert"}'
    assert (folder / "1_Pooling" / "config.json").read_bytes() == b"{}"


@pytest.mark.parametrize(
    ("files", "data", "said"),
    [
        ([("files", ("a.json", b"{}")), ("files", ("a.json", b"{}"))], None, "uploaded twice"),
        ([("files", ("../a.json", b"{}"))], None, "refused"),
        ([("weights", ("a.json", b"{}"))], None, "part named files"),
        ([("files", ("a.json", b"{}"))], {"other": "x"}, "not one it takes"),
        ([("files", ("a.json", b"{}"))], {"name": "x" * (MAX_FIELD_BYTES + 1)}, "more than"),
        ([], {"name": "x"}, "holds no file"),
    ],
)
def test_a_part_zoo_does_not_take_is_refused_in_one_line(tmp_path, files, data, said):
    content_type, body = _encoded(files or None, data)
    if not files:  # httpx sends a form without files url-encoded: make it multipart
        content_type, body = _encoded([("other", ("x", b""))], data)
        body = body.replace(b'name="other"; filename="x"', b'name="folder"')
    with pytest.raises(InvalidInputError, match=said) as caught:
        _receive(tmp_path, content_type, body)
    assert "\n" not in str(caught.value)


def test_a_body_that_is_not_a_well_formed_multipart_form_is_refused(tmp_path):
    for content_type, body in (
        ("application/json", b"{}"),
        ("multipart/form-data", b"--x\r\n"),  # no boundary named
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n"),
    ):
        with pytest.raises(InvalidInputError):
            _receive(tmp_path, content_type, body)


@pytest.fixture(scope="module")
def roomy(tmp_path_factory, tiny_dir):
    """A server that takes uploads far larger than its disk holds (--max-upload 1 PB)."""
    home = tmp_path_factory.mktemp("uploads")
    env = server_env(home)
    reg = registry_for(env)
    token = reg.create_token("w", role="write")[1]
    server = ZooServer(env, "--max-upload", "1000TB", log=home / "server.log").start()
    try:
        yield server, reg, token, home
    finally:
        server.stop()
        reg.close()


def test_an_upload_the_servers_disk_cannot_hold_is_refused_before_its_body(
    roomy, tiny_dir, run_cli, monkeypatch
):
    """Asked first (a client's `zoo import`) or announced by its Content-Length, an upload
    larger than the server's free disk is refused (507) in the server's words, before any
    byte of it is taken, and leaves nothing in the server's cache."""
    import zoo.transport

    server, _, token, home = roomy
    free = shutil.disk_usage(home).free
    with client(server.url, token) as http:
        checked = http.get("/api/import/upload/check", params={"size": free + 1})
        assert checked.status_code == 507, checked.text
        said = checked.json()["error"]["message"]
        assert "free" in said and str(home) not in said
        assert http.get("/api/import/upload/check", params={"size": 1000}).status_code == 200
    # A client's `zoo import` of a folder that large (its body's length, as the client
    # counts it, is what it asks about): exit 11, the server's words, nothing sent.
    monkeypatch.setattr(zoo.transport, "multipart_length", lambda *_: free + 1)
    monkeypatch.setenv("ZOO_ENDPOINT", server.url)
    monkeypatch.setenv("ZOO_TOKEN", token)
    assert run_cli("import", str(tiny_dir("bert"))) == (11, "", f"zoo: error: {said}\n")
    head = (
        f"POST /api/import/upload HTTP/1.1\r\nHost: x\r\nContent-Length: {free + 1}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(head.encode() + b"--b\r\n")  # and no more: the answer comes first
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 507"), answer[:300]
    assert json.loads(body)["error"]["class"] == "NoRoomError"
    cache = home / "serve-cache"
    assert not [p for p in cache.iterdir() if p.name.startswith(".upload")]


def test_the_folders_name_may_come_after_its_files(roomy, tiny_dir):
    """A form's parts come in the order the client chose: the folder's name sent after the
    files names the import (its default name, and the origin recorded)."""
    server, reg, token, _ = roomy
    real = tiny_dir("gpt2")
    parts = [
        ("files", (f.name, f.read_bytes(), "application/octet-stream"))
        for f in sorted(real.iterdir())
        if f.name in ("config.json", "model.safetensors")
    ]
    content_type, body = _encoded(parts, None)
    boundary = content_type.split("boundary=")[1].encode()
    closing = b"--" + boundary + b"--\r\n"
    assert body.endswith(closing)
    last = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="folder"\r\n\r\n'
        b"named-last\r\n"
    )
    body = body[: -len(closing)] + last + closing
    with client(server.url, token) as http:
        answer = http.post(
            "/api/import/upload", content=body, headers={"Content-Type": content_type}
        )
    assert answer.status_code == 200, answer.text
    info = reg.show(answer.json()["name"])
    assert info.name == "named-last"
    assert [i.origin for i in info.imports] == ["upload:named-last"]


@pytest.mark.parametrize("cut", [None, 1000])
def test_a_body_that_stops_before_its_closing_boundary_is_refused(tmp_path, cut):
    """A body that ends short (a client's bug, a Content-Length that counts too few bytes)
    is refused: its last file would otherwise be imported cut short."""
    content_type, body = _encoded(
        [
            ("files", ("config.json", b"{}", "application/json")),
            ("files", ("README.md", b"x" * 5000, "text/markdown")),
        ]
    )
    if cut is None:  # the closing boundary alone is missing
        cut = len(body) - body.rindex(b"\r\n--") - 2
    with pytest.raises(InvalidInputError, match="closing boundary") as caught:
        _receive(tmp_path, content_type, body[:-cut])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "names",
    [("a.json", "a.json/b.json"), ("a.json/b.json", "a.json"), ("1_P/c.json", "1_P/c.json/d.json")],
)
def test_a_name_both_a_file_and_a_folder_is_refused(tmp_path, names):
    """One name sent as a file and as a folder of other files (either first) is the
    client's mistake, told in one line (it was the server's 500)."""
    content_type, body = _encoded([("files", (n, b"{}")) for n in names])
    with pytest.raises(InvalidInputError, match="both as a file and as a folder"):
        _receive(tmp_path, content_type, body)


def test_a_client_gone_before_its_body_ended_is_a_refused_upload(tmp_path):
    """A client that disconnects midway (Ctrl-C during `zoo import`) is told as a refused
    upload, not logged as the server's own failure with its trace."""
    from starlette.requests import ClientDisconnect

    content_type, body = _encoded([("files", ("config.json", b"{}"))])

    class Gone(_Request):
        async def stream(self):
            yield self.body[:40]
            raise ClientDisconnect()

    folder = tmp_path / "staging"
    folder.mkdir()
    request = Gone(content_type, body, 40)
    with pytest.raises(InvalidInputError, match="went away"):
        asyncio.run(receive(request, folder, check_upload_name, fields=()))


def test_an_upload_cut_short_imports_nothing(roomy, tiny_dir):
    """Over HTTP, a body whose Content-Length ends it before its closing boundary: 400, no
    artifact, nothing left in the cache."""
    server, reg, token, home = roomy
    real = tiny_dir("llama")  # imported by no other test here
    parts = [
        ("files", (f.name, f.read_bytes(), "application/octet-stream"))
        for f in sorted(real.iterdir())
        if f.name in ("config.json", "model.safetensors")
    ]
    parts.append(("files", ("README.md", b"card " * 1000, "text/markdown")))
    content_type, body = _encoded(parts, {"folder": "cut-short"})
    before = reg.search().total
    with client(server.url, token) as http:
        answer = http.post(
            "/api/import/upload", content=body[:-2000], headers={"Content-Type": content_type}
        )
    assert answer.status_code == 400, answer.text
    assert "closing boundary" in answer.json()["error"]["message"]
    assert reg.search().total == before
    assert not [p for p in (home / "serve-cache").iterdir() if p.name.startswith(".upload")]


def test_a_stopping_server_cuts_an_upload_stalled_mid_body(tmp_path):
    """SIGTERM with an upload in flight whose client stopped sending: the server waits
    --shutdown-timeout for it, then answers 503 (exit 9: it stopped before the request
    finished), removes the staging folder and exits 143, rather than wait for that client
    for good."""
    import signal
    import subprocess
    import time

    env = server_env(tmp_path)
    reg = registry_for(env)
    token = reg.create_token("w", role="write")[1]
    reg.close()
    server = ZooServer(env, "--shutdown-timeout", "1s", log=tmp_path / "server.log").start()
    cache = tmp_path / "serve-cache"
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as stalled:
            part = (
                b'--x\r\nContent-Disposition: form-data; name="files"; '
                b'filename="model.safetensors"\r\n\r\n'
            )
            stalled.sendall(
                b"POST /api/import/upload HTTP/1.1\r\nHost: zoo\r\n"
                + f"Authorization: Bearer {token}\r\n".encode()
                + b"Content-Type: multipart/form-data; boundary=x\r\n"
                + b"Content-Length: 100000\r\n\r\n"
                + part
                + b"\0" * 1000
            )
            deadline = time.monotonic() + 30
            while not any(p.name.startswith(".upload-") for p in cache.iterdir()):
                assert time.monotonic() < deadline, "the upload never reached the server"
                time.sleep(0.1)
            server.proc.send_signal(signal.SIGTERM)
            try:
                code = server.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail("zoo serve still ran 30 s after SIGTERM, waiting for a stalled upload")
            stalled.settimeout(5)
            answer = stalled.recv(65536).decode()
        assert code == 128 + signal.SIGTERM
        assert answer.startswith("HTTP/1.1 503"), answer
        assert json.loads(answer.partition("\r\n\r\n")[2])["error"]["exit_code"] == 9
        assert "stopped before this request finished" in answer
        assert not [p for p in cache.iterdir() if p.name.startswith(".upload-")]
    finally:
        server.stop()
