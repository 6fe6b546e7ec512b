"""The client's HTTP (zoo.transport) against a small standard-library server: what it
sends (query, headers, JSON, a multipart upload read back by the email parser), what it
hands back (every status as an answer, no redirect followed) and which failures it calls
the server's (a dropped link) and which it leaves alone (the caller's own errors)."""

from __future__ import annotations

import contextlib
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
    connections: ClassVar[list[int]] = [0]
    protocol_version = "HTTP/1.1"  # connections kept, as uvicorn keeps them

    def setup(self) -> None:  # once per connection
        super().setup()
        self.connections[0] += 1

    def log_message(self, *args) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError):  # a client that left mid-answer
            super().handle()

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
        if self.path.startswith(("/json", "http://")):  # the latter: asked as a proxy
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


@contextlib.contextmanager
def serving(handler, tls=None):
    handler.seen, handler.connections = [], [0]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server():
    with serving(_Handler) as url:
        yield url, _Handler.seen


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


def test_requests_to_a_server_share_one_connection(server):
    """urllib opened a connection per request: 30 for a download of a checkpoint in 20
    shards, each paying a TLS handshake where there is one. Every kind of answer (JSON, a
    streamed download, an error status, a redirect, an upload) leaves it open for the
    next request."""
    url, seen = server
    http = Transport(url, {}, timeout=10)
    for _ in range(3):
        assert http.request("GET", "/json").json() == {"path": "/json"}
        with http.stream("GET", "/big") as answer:
            assert b"".join(answer.iter_bytes()) == BIG
        assert http.request("GET", "/missing").status_code == 404
        assert http.request("GET", "/moved").status_code == 302
        assert http.request("POST", "/post", json={"n": 1}).status_code == 200
    assert len(seen) == 15
    assert _Handler.connections == [1]
    http.close()


def test_threads_sharing_a_client_each_get_their_own_answers(server):
    url, _ = server
    http = Transport(url, {}, timeout=10)
    got: dict[int, list] = {}

    def ask(n: int) -> None:
        got[n] = [http.request("GET", f"/json?n={n}&i={i}").json()["path"] for i in range(20)]

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {n: [f"/json?n={n}&i={i}" for i in range(20)] for n in range(4)}
    assert 1 <= _Handler.connections[0] <= 4  # one per thread asking at once, at most


def test_a_download_stopped_midway_is_not_read_by_the_next_request(server):
    """Ctrl-C (or a full disk) in the middle of a body leaves its rest on the connection:
    it is closed, and the next request gets its own answer on a new one."""
    url, _ = server
    http = Transport(url, {}, timeout=10)
    with pytest.raises(KeyboardInterrupt), http.stream("GET", "/big") as answer:
        next(answer.iter_bytes(1 << 16))
        raise KeyboardInterrupt
    assert http.request("GET", "/json").json() == {"path": "/json"}
    assert _Handler.connections == [2]


class _Idle(_Handler):
    timeout = 0.3  # the server closes a connection idle this long


def test_a_connection_the_server_closed_while_idle_is_replaced_for_any_request():
    with serving(_Idle) as url:
        http = Transport(url, {}, timeout=10)
        for method in ("GET", "POST", "GET"):
            time.sleep(0.8)
            assert http.request(method, "/json").status_code == 200
        assert _Idle.connections == [3]
        assert [s["path"] for s in _Idle.seen] == ["/json"] * 3


class _ClosesOnSecond(_Handler):
    """Answers the first request of a connection, and closes it as a second one arrives:
    what a client meets when the server closes an idle connection just as it is reused."""

    def handle_one_request(self) -> None:
        self.served = getattr(self, "served", 0) + 1
        if self.served == 1:
            return super().handle_one_request()
        self.raw_requestline = self.rfile.readline(65537)
        self.seen.append({"path": "dropped " + self.raw_requestline.decode().split()[1]})
        self.close_connection = True


def test_a_get_the_server_dropped_on_a_kept_connection_is_sent_again_on_a_new_one():
    with serving(_ClosesOnSecond) as url:
        http = Transport(url, {}, timeout=10)
        http.request("GET", "/json?first")
        assert http.request("GET", "/json?second").json() == {"path": "/json?second"}
        paths = ["/json?first", "dropped /json?second", "/json?second"]
        assert [s["path"] for s in _ClosesOnSecond.seen] == paths
        assert _ClosesOnSecond.connections == [2]


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_write_the_server_dropped_on_a_kept_connection_is_not_sent_again(method):
    """The server may have carried it out before it dropped the connection: sent again, an
    upload would be imported twice, and a removal answered "not found"."""
    with serving(_ClosesOnSecond) as url:
        http = Transport(url, {}, timeout=10)
        http.request("GET", "/json?first")
        with pytest.raises(TransportError, match="closed connection without response"):
            http.request(method, "/post", json={"once": True})
        assert [s["path"] for s in _ClosesOnSecond.seen] == ["/json?first", "dropped /post"]
        assert _ClosesOnSecond.connections == [1]


class _NeverAnswers(_Handler):
    def handle_one_request(self) -> None:
        self.rfile.readline(65537)
        self.close_connection = True


def test_a_server_that_drops_every_request_is_asked_once():
    with serving(_NeverAnswers) as url:
        with pytest.raises(TransportError, match="closed connection without response"):
            Transport(url, {}, timeout=10).request("GET", "/json")
        assert _NeverAnswers.connections == [1]


def test_a_forward_proxy_from_the_environment_gets_the_absolute_url_and_its_credentials(
    server, monkeypatch
):
    url, seen = server
    for var in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", url.replace("http://", "http://me:p%40ss@"))
    http = Transport("http://zoo.invalid:8080/zoo", {}, timeout=10)
    for _ in range(2):
        answer = http.request("GET", "/api/x", params={"a": 1})
        assert answer.json() == {"path": "http://zoo.invalid:8080/zoo/api/x?a=1"}
    assert seen[-1]["headers"]["Host"] == "zoo.invalid:8080"
    assert seen[-1]["headers"]["Proxy-Authorization"] == "Basic bWU6cEBzcw=="  # me:p@ss
    assert _Handler.connections == [1]
    monkeypatch.setenv("NO_PROXY", "zoo.invalid")
    with pytest.raises(TransportError):  # asked directly: no such host
        Transport("http://zoo.invalid:8080", {}, timeout=10).request("GET", "/json")


def _self_signed(folder):
    """A certificate for 127.0.0.1 and its key, in PEM files."""
    import datetime
    import ipaddress

    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder / "cert.pem", folder / "key.pem"


def test_tls_checks_the_certificate_against_ssl_cert_file_and_keeps_the_connection(
    tmp_path, monkeypatch
):
    import ssl

    cert, key = _self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with serving(_Handler, tls) as url:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            Transport(url, {}, timeout=10).request("GET", "/json")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        http = Transport(url, {}, timeout=10)
        for i in range(5):
            assert http.request("GET", f"/json?{i}").json() == {"path": f"/json?{i}"}
        with http.stream("GET", "/big") as answer:
            assert b"".join(answer.iter_bytes()) == BIG
        assert _Handler.connections == [1]  # the refused handshake never reached a handler


class _Tunnel(BaseHTTPRequestHandler):
    """A CONNECT proxy: each tunnel piped to the address it names."""

    seen: ClassVar[list[dict]] = []
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_CONNECT(self) -> None:
        import socket

        self.seen.append({"path": self.path, "headers": dict(self.headers)})
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection((host, int(port)))
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()

        def pump(a, b) -> None:
            with contextlib.suppress(OSError):
                while block := a.recv(1 << 16):
                    b.sendall(block)
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(upstream, self.connection), daemon=True)
        back.start()
        pump(self.connection, upstream)
        back.join(timeout=10)
        upstream.close()
        self.close_connection = True


def test_https_goes_through_a_proxys_tunnel_with_its_credentials_and_keeps_it(
    tmp_path, monkeypatch
):
    import ssl

    cert, key = _self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    for var in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with serving(_Handler, tls) as url, serving(_Tunnel) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.replace("http://", "http://me:pw@"))
        http = Transport(url, {"Authorization": "Bearer t0k"}, timeout=10)
        for i in range(3):
            assert http.request("GET", f"/json?{i}").json() == {"path": f"/json?{i}"}
        (connect,) = _Tunnel.seen
        assert connect["path"] == url.removeprefix("https://")
        assert connect["headers"]["Proxy-Authorization"] == "Basic bWU6cHc="  # me:pw
        assert "Authorization" not in connect["headers"]  # the token is the server's alone
        assert [s["headers"].get("Proxy-Authorization") for s in _Handler.seen] == [None] * 3
        assert _Handler.connections == [1]
        http.close()  # the servers wait for their connections' ends as they stop
