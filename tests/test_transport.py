"""The client's HTTP (zoo.transport) against a small standard-library server: what it
sends (query, headers, JSON, a multipart upload read back by the email parser), what it
hands back (every status as an answer, no redirect followed) and which failures it calls
the server's (a dropped link) and which it leaves alone (the caller's own errors)."""

from __future__ import annotations

import email.parser
import email.policy
import errno
import io
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from zoo.transport import FileChangedError, Transport, TransportError, multipart_length

BIG = bytes(range(256)) * 12_000  # 3 MB: more than one block each way


class _Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict]] = []

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: bytes, kind="application/json", **headers) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(headers.pop("length", len(body))))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, "headers": dict(self.headers)})
        if self.path.startswith("/json"):
            self._answer(200, json.dumps({"path": self.path}).encode())
        elif self.path == "/missing":
            self._answer(404, b'{"error": "no"}')
        elif self.path == "/moved":
            self._answer(302, b"", Location="/json?followed=1")
        elif self.path == "/big":
            self._answer(200, BIG, "application/octet-stream")
        elif self.path == "/dropped":  # says 3 MB, sends 1 MB, hangs up
            self._answer(200, BIG[: 1 << 20], "application/octet-stream", length=len(BIG))
            self.close_connection = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if len(body) == int(self.headers["Content-Length"]):  # else the client hung up
            self._answer(200, b"{}")


@pytest.fixture
def server():
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.seen
    httpd.shutdown()
    httpd.server_close()


def test_a_request_carries_its_query_headers_and_json_and_reads_the_answer(server):
    url, seen = server
    http = Transport(url + "/", {"Authorization": "Bearer t0k"}, timeout=10)
    answer = http.request("GET", "/json", params={"q": "a b&c", "limit": 5})
    assert answer.status_code == 200
    assert answer.json() == {"path": "/json?q=a+b%26c&limit=5"}
    assert answer.headers["content-type"] == "application/json"
    assert seen[-1]["headers"]["Authorization"] == "Bearer t0k"
    http.request("POST", "/post", json={"name": "x", "n": [1, 2]})
    assert json.loads(seen[-1]["body"]) == {"name": "x", "n": [1, 2]}
    assert seen[-1]["headers"]["Content-Type"] == "application/json"


def test_every_status_is_an_answer_and_a_redirect_is_not_followed(server):
    url, seen = server
    http = Transport(url, {"Authorization": "Bearer t0k"}, timeout=10)
    missing = http.request("GET", "/missing")
    assert (missing.status_code, missing.json()) == (404, {"error": "no"})
    moved = http.request("GET", "/moved")
    assert moved.status_code == 302 and moved.headers["location"] == "/json?followed=1"
    assert [s["path"] for s in seen] == ["/missing", "/moved"]  # the token went nowhere else


def test_a_multipart_upload_is_what_the_email_parser_reads_back(server, tmp_path):
    url, seen = server
    (tmp_path / "config.json").write_text('{"a": 1}')
    (tmp_path / 'odd "name".safetensors').write_bytes(BIG)
    with (
        open(tmp_path / "config.json", "rb") as a,
        open(tmp_path / 'odd "name".safetensors', "rb") as b,
    ):
        files = [
            ("files", ("config.json", a, "application/octet-stream")),
            ("files", ('odd "name".safetensors', b, "application/octet-stream")),
        ]
        fields = {"folder": "ckpt", "origin": "upload:h:/p"}
        announced = multipart_length(fields, files)  # what a server's limit is checked against
        Transport(url, {}, timeout=10).request("POST", "/upload", files=files, data=fields)
    sent = seen[-1]
    assert int(sent["headers"]["Content-Length"]) == len(sent["body"]) == announced
    head = f"Content-Type: {sent['headers']['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + sent["body"])
    parts = [
        (
            p.get_param("name", header="content-disposition"),
            p.get_param("filename", header="content-disposition"),
            p.get_payload(decode=True),
        )
        for p in message.iter_parts()
    ]
    assert parts == [
        ("folder", None, b"ckpt"),
        ("origin", None, b"upload:h:/p"),
        ("files", "config.json", b'{"a": 1}'),
        ("files", "odd %22name%22.safetensors", BIG),
    ]


class _WrittenOnceRead(io.FileIO):
    """A file that a writer changes (``write(path)``) once its first block is read."""

    def __init__(self, path, write) -> None:
        super().__init__(path, "rb")
        self._write = write

    def read(self, size: int = -1) -> bytes:
        block = super().read(size)
        write, self._write = self._write, None
        if write is not None:
            write(self.name)
        return block


def _cut_short(path) -> None:  # a trainer saving over it truncates it first
    os.truncate(path, 0)


def _written_over(path) -> None:  # another save, in place: same size, other bytes
    with open(path, "r+b") as fh:
        fh.write(bytes(reversed(BIG)))


def _grown(path) -> None:
    with open(path, "ab") as fh:
        fh.write(b"more")


@pytest.mark.parametrize(
    ("write", "said"),
    [(_cut_short, "was cut short"), (_written_over, "changed"), (_grown, "changed")],
)
def test_an_upload_whose_file_changes_as_it_is_sent_ends_short_of_its_body(
    server, tmp_path, write, said
):
    """A file written to while it is sent (several blocks here) is refused at once, and
    the request ends before the body it announced does: the server can take none of it.
    Sent on, a file cut short leaves the server waiting for the bytes it was promised, and
    one written over in place reaches it as a mix of two saves."""
    url, seen = server
    path = tmp_path / "model.safetensors"
    path.write_bytes(BIG)
    old = time.time() - 3600  # a write now moves the mtime, however coarse the clock
    os.utime(path, (old, old))
    started = time.monotonic()
    with (
        _WrittenOnceRead(path, write) as fh,
        pytest.raises(FileChangedError, match=f"^model.safetensors {said} as it was sent$"),
    ):
        Transport(url, {}, timeout=60).request(
            "POST", "/upload", files=[("files", ("model.safetensors", fh, "x/y"))]
        )
    assert time.monotonic() - started < 30  # not the timeout
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    (sent,) = seen
    boundary = sent["headers"]["Content-Type"].partition("boundary=")[2]
    assert len(sent["body"]) < int(sent["headers"]["Content-Length"])
    assert f"--{boundary}--".encode() not in sent["body"]
    assert len(sent["body"]) <= len(BIG) + 1000  # nothing past the size announced


def test_a_download_streams_in_blocks_and_a_dropped_link_is_the_transports_error(server):
    url, _ = server
    http = Transport(url, {}, timeout=10)
    with http.stream("GET", "/big") as answer:
        blocks = list(answer.iter_bytes(1 << 20))
    assert b"".join(blocks) == BIG and len(blocks) == 3
    with pytest.raises(TransportError), http.stream("GET", "/dropped") as answer:
        for _ in answer.iter_bytes(1 << 16):
            pass


def test_the_callers_own_error_while_streaming_is_not_called_the_servers(server):
    """A full disk while a download is written is the disk's error, not a dropped link."""
    url, _ = server
    with pytest.raises(OSError) as raised, Transport(url, {}, 10).stream("GET", "/big") as s:
        for _ in s.iter_bytes():
            raise OSError(errno.ENOSPC, "No space left on device")
    assert raised.type is OSError and raised.value.errno == errno.ENOSPC


def test_no_server_is_the_transports_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    with pytest.raises(TransportError, match="refused"):
        Transport(f"http://127.0.0.1:{port}", {}, timeout=5).request("GET", "/json")


def test_zoo_timeout_is_read_when_a_client_connects_and_refused_unless_seconds(
    monkeypatch, run_cli
):
    """A program that sets ZOO_TIMEOUT after ``import zoo`` gets it: a server that never
    answers is given up on after those seconds, not the default ten minutes. A value that
    is no number of seconds above 0 is one line, exit 2 (0 made every socket non-blocking
    and the first read fail with 'Operation now in progress')."""
    import socket

    import zoo
    import zoo.client  # imported before the variable is set, as a notebook's would be
    from zoo.errors import InvalidInputError, ServerUnavailableError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)  # connections are taken by the kernel, and never answered
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
        monkeypatch.setenv("ZOO_TIMEOUT", "0.5")
        started = time.monotonic()
        with pytest.raises(ServerUnavailableError, match="timed out"):
            zoo.connect(endpoint=endpoint).search()
        assert time.monotonic() - started < 10
    monkeypatch.setenv("ZOO_ENDPOINT", endpoint)
    for value in ("abc", "0", "-1", "nan", "inf"):
        monkeypatch.setenv("ZOO_TIMEOUT", value)
        with pytest.raises(InvalidInputError, match="ZOO_TIMEOUT"):
            zoo.connect()
        assert run_cli("ls") == (
            2,
            "",
            f"zoo: error: ZOO_TIMEOUT is the seconds a zoo server's answer may take, a "
            f"number above 0 (got {value!r}).\n",
        )
