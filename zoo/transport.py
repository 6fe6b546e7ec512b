"""The HTTP a client speaks to a zoo server, on the standard library alone.

Every client command starts a process, and an HTTP library is most of what it imports:
httpx (with httpcore, and rich and pygments for its command line when they are
installed) took 134 ms of a 240 ms `zoo ls` on a 2-core AMD EPYC, where urllib takes 28.
A client needs little of it: JSON requests, a multipart upload streamed from files, and
a download streamed to disk. Proxies come from the environment as urllib reads them
(``HTTPS_PROXY``, ``NO_PROXY``) and TLS certificates are checked against the system's
store (or ``SSL_CERT_FILE``).

Connections are kept for the next request (http.client's, up to 8 per client, each used
by one request at a time, so threads may share a client). urllib opened one per request:
30 for a `zoo export` of a checkpoint in 20 shards, 50 for 50 pages of a listing, each
with its own TLS handshake behind an https endpoint, where the 50 pages took 1.9 s
against 1.1 s on one kept connection (2-core AMD EPYC, loopback, a TLS proxy in front).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlencode

_CHUNK = 1 << 20


class TransportError(Exception):
    """The request did not get an answer: no connection, a timeout, a dropped link."""


class FileChangedError(Exception):
    """A file an upload reads changed while it was sent (cut short, grown, or written
    over): the request was abandoned before its body ended, so the server, which takes a
    body only whole, keeps none of it. ``filename`` is the part's, ``how`` in words."""

    def __init__(self, filename: str, how: str) -> None:
        super().__init__(f"{filename} {how} as it was sent")
        self.filename, self.how = filename, how


@dataclass
class Response:
    """A whole answer: its status, headers (names in lower case) and body."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Stream:
    """An answer whose body is read a block at a time (:meth:`Transport.stream`)."""

    def __init__(self, raw) -> None:
        self._raw = raw
        self.status_code = raw.status
        self.headers = {k.lower(): v for k, v in raw.headers.items()}
        length = self.headers.get("content-length", "")
        self._left = int(length) if length.isdigit() else None

    def iter_bytes(self, size: int = _CHUNK) -> Iterator[bytes]:
        while block := self._read(size):
            yield block

    def read(self) -> Response:
        """The rest of the body, as a whole answer."""
        return Response(self.status_code, self.headers, b"".join(self.iter_bytes()))

    def _read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body; b"" at its end. A link that drops or times
        out meanwhile is a :class:`TransportError`, and only that: the caller's own
        errors (a full disk it writes to) pass through as they are."""
        import http.client

        try:
            block = self._raw.read(size)
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, bad chunk
            raise TransportError(_reason(exc)) from None
        if self._left is not None:
            # http.client ends a body cut short with b"", as if it were whole.
            if not block and self._left:
                raise TransportError(f"the answer ended {self._left} bytes short")
            self._left -= len(block)
        return block


class Transport:
    """Requests to one server: ``base_url`` joined with each path, ``headers`` on each,
    ``timeout`` seconds for each connect and each read."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
        import threading
        from urllib.parse import urlsplit

        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.timeout = timeout
        parts = urlsplit(self.base_url)
        self._netloc, self._prefix = parts.netloc, parts.path
        # The proxy is read once, as urllib's opener read it when it was built.
        self._route = _route(parts.scheme, parts.netloc)
        self._idle: list[tuple[Any, float]] = []  # (connection, when it went idle)
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: dict[str, str] | None = None,
        files: list[tuple[str, tuple[str, BinaryIO, str]]] | None = None,
    ) -> Response:
        """The answer to one request. ``json``: the body, as JSON. ``data`` (form fields)
        and ``files`` (field, (filename, open file, content type)): a multipart body,
        streamed from the files (:class:`FileChangedError` if one changes meanwhile)."""
        with self.stream(method, path, params=params, json=json, data=data, files=files) as s:
            return s.read()

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **body) -> Iterator[Stream]:
        """The answer, its body read as the caller asks (see :meth:`request`'s ``body``
        arguments). A status of 400 or more is an answer too, not an exception. Redirects
        are answered, not followed: a zoo server sends none, and following one would carry
        the token to wherever it points."""
        url, headers, payload = self._request(method, path, **body)
        conn, raw = self._send(method, url, headers, payload)
        try:
            yield Stream(raw)
        except BaseException:
            conn.close()  # mid-body (Ctrl-C, a dropped link, the caller's error): unusable
            raise
        if raw.isclosed() and not raw.will_close:  # read to its end, and the server stays
            self._keep(conn)
        else:
            conn.close()

    def _send(self, method: str, url: str, headers: dict[str, str], payload):
        """A connection with the request sent on it, and the answer's head."""
        import http.client

        retry = method in _RESENT
        while True:
            try:
                conn, reused = self._connection()
            except (ValueError, http.client.HTTPException) as exc:  # a port that is no number
                raise TransportError(_reason(exc)) from None
            try:
                conn.request(method, url, body=payload, headers=headers)
                return conn, conn.getresponse()
            except BaseException as exc:
                conn.close()
                # A kept connection the server closed as it was reused, the request left
                # unanswered: a read is sent once more, on a new one.
                if reused and retry and isinstance(exc, _closed_errors()):
                    self.close()  # the other kept ones are as old
                    retry = False
                    continue
                if isinstance(exc, (OSError, ValueError, http.client.HTTPException)):
                    # refused, unknown host, TLS, timeouts, a bad URL or status line
                    raise TransportError(_reason(exc)) from None
                raise

    def _connection(self):
        """A kept connection the server has not closed, or a new one; and which."""
        import time

        with self._lock:
            if self._pid != os.getpid():  # forked: the sockets are the parent's too
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                conn, since = self._idle.pop()
                if time.monotonic() - since < _IDLE_S and not _dropped(conn):
                    return conn, True
                conn.close()
        return self._route.connect(self._netloc, self.timeout), False

    def _keep(self, conn) -> None:
        import time

        with self._lock:
            if len(self._idle) < _KEPT and self._pid == os.getpid():
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def _request(self, method, path, *, params=None, json=None, data=None, files=None):
        """The request's target, headers and body."""
        import json as jsonlib

        url = self._route.target(self._netloc, self._prefix + path)
        if params:
            url += "?" + urlencode(params)
        headers = {**self.headers, **self._route.headers}
        body: Any = None
        if files is not None or data is not None:
            boundary = uuid.uuid4().hex
            body, size = _multipart(boundary, data or {}, files or [])
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            headers["Content-Length"] = str(size)
        elif json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        return url, headers, body

    def close(self) -> None:
        """Close the kept connections (a later request opens a new one)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


#: Requests sent again where the server dropped them: those that change nothing (RFC 9110
#: 9.2.1). A DELETE is idempotent too, but one the server carried out before it dropped
#: the connection would be answered "not found" the second time.
_RESENT = frozenset({"GET", "HEAD", "OPTIONS"})
#: Kept connections per client: one per thread that asks at once, up to this.
_KEPT = 8
#: A connection idle longer is not reused: well under a server's own limit (uvicorn's
#: 75 s as zoo serve runs it, a load balancer's 60 s), and a firewall that drops an idle
#: connection unannounced would otherwise leave the next request waiting ZOO_TIMEOUT.
_IDLE_S = 30.0


def _closed_errors() -> tuple[type[BaseException], ...]:
    import http.client
    import ssl

    # What a request on a connection the server has closed meets: on sending, a reset or
    # a broken pipe; on reading, the end of the stream (TLS: without its close_notify).
    return (
        http.client.RemoteDisconnected,
        ConnectionResetError,
        BrokenPipeError,
        ConnectionAbortedError,
        ssl.SSLEOFError,
        ssl.SSLZeroReturnError,
    )


def _dropped(conn) -> bool:
    """Whether the server closed an idle connection (or sent on it, unasked): either way
    its socket is readable."""
    import select

    sock = conn.sock
    if sock is None:
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


@dataclass
class _Route:
    """How requests reach the server: directly, through a forward proxy (the absolute
    URL sent to it), or tunnelled through one (CONNECT, for https), as urllib does."""

    tls: bool  # the connection (to the proxy, where there is one) is TLS
    proxy: str | None = None  # host:port
    tunnel: bool = False
    # Proxy-Authorization: on each request to a forward proxy, on the CONNECT of a tunnel
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    tunnel_headers: dict[str, str] = dataclasses.field(default_factory=dict)
    scheme: str = "http"
    error: str | None = None  # a proxy scheme urllib cannot speak

    def target(self, netloc: str, path: str) -> str:
        if self.proxy is not None and not self.tunnel:
            return f"{self.scheme}://{netloc}{path or '/'}"
        return path or "/"

    def connect(self, netloc: str, timeout: float):
        import http.client

        if self.error:
            raise TransportError(self.error)
        where = self.proxy or netloc
        if self.tls:
            # No context given: http.client makes the default one (the system's store or
            # SSL_CERT_FILE, as urllib's did) for each connection.
            conn = http.client.HTTPSConnection(where, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(where, timeout=timeout)
        if self.tunnel:
            conn.set_tunnel(netloc, headers=self.tunnel_headers)
        return conn


def _route(scheme: str, netloc: str) -> _Route:
    """The route urllib's ProxyHandler takes for ``scheme://netloc``."""
    import base64
    import urllib.request
    from urllib.parse import unquote

    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or not netloc or urllib.request.proxy_bypass(netloc):
        return _Route(tls=scheme == "https", scheme=scheme)
    kind, user, password, hostport = urllib.request._parse_proxy(proxy)
    kind = kind or scheme
    auth = {}
    if user and password:
        secret = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
        auth["Proxy-Authorization"] = f"Basic {secret}"
    if scheme == "https":  # tunnelled, whatever the proxy's own scheme
        return _Route(tls=True, proxy=hostport, tunnel=True, tunnel_headers=auth, scheme=scheme)
    if kind not in ("http", "https"):
        return _Route(tls=False, scheme=scheme, error=f"unknown url type: {kind}")
    return _Route(tls=kind == "https", proxy=hostport, headers=auth, scheme=scheme)


def multipart_length(fields: dict[str, str], files) -> int:
    """The length of the body :meth:`Transport.request` sends for ``data=fields`` and
    ``files`` (their sizes now): what a server's upload limit is checked against before
    anything is sent."""
    return _multipart(uuid.uuid4().hex, fields, files)[1]  # every boundary is as long


def _multipart(boundary: str, fields: dict[str, str], files) -> tuple[Iterator[bytes], int]:
    """A ``multipart/form-data`` body (RFC 7578) that reads each file a block at a time
    as it is sent, and its length in bytes (sent up front: a proxy may refuse a chunked
    upload).

    Each file is sent as it was when the length was taken: a file that a writer cuts
    short, grows or writes over meanwhile (its size, mtime or ctime no longer what they
    were; ctime cannot be set back) raises :class:`FileChangedError` before the body's
    closing boundary, so the request ends short and the server discards it. Without the
    check a file cut short would leave the server waiting for bytes that never come, and
    one written over would be taken as a mix of its old and new bytes."""
    heads: list[bytes] = []
    sizes = 0
    stats = []
    for name, value in fields.items():
        heads.append(_part_head(boundary, name) + value.encode() + b"\r\n")
    for field, (filename, fh, content_type) in files:
        head = _part_head(boundary, field, filename, content_type)
        heads.append(head)
        stats.append(os.fstat(fh.fileno()))
        sizes += len(head) + stats[-1].st_size + 2
    tail = f"--{boundary}--\r\n".encode()
    size = sum(len(h) for h in heads[: len(fields)]) + sizes + len(tail)

    def body() -> Iterator[bytes]:
        yield from heads[: len(fields)]
        parts = zip(heads[len(fields) :], files, stats, strict=True)
        for head, (_, (filename, fh, _)), before in parts:
            yield head
            left = before.st_size
            while left and (block := fh.read(min(_CHUNK, left))):
                left -= len(block)
                yield block
            if left:
                raise FileChangedError(filename, "was cut short")
            if _version(os.fstat(fh.fileno())) != _version(before):
                raise FileChangedError(filename, "changed")
            yield b"\r\n"
        yield tail

    return body(), size


def _version(st: os.stat_result) -> tuple[int, int, int]:
    """What a write to an open file changes."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _part_head(boundary: str, name: str, filename: str | None = None, content_type=None) -> bytes:
    disposition = f'form-data; name="{_quoted(name)}"'
    if filename is not None:
        disposition += f'; filename="{_quoted(filename)}"'
    lines = [f"--{boundary}", f"Content-Disposition: {disposition}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _quoted(value: str) -> str:
    # As HTML's form encoding does (and httpx did): nothing in it can end the quoted string.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)  # URLError wraps the socket's error
    return str(reason if reason is not None else exc) or type(exc).__name__
