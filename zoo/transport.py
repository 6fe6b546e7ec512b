"""The HTTP a client speaks to a zoo server, on the standard library alone.

Every client command starts a process, and an HTTP library is most of what it imports:
httpx (with httpcore, and rich and pygments for its command line when they are
installed) took 134 ms of a 240 ms `zoo ls` on a 2-core AMD EPYC, where urllib takes 28.
A client needs little of it: JSON requests, a multipart upload streamed from files, and
a download streamed to disk. urllib reads proxies from the environment (``HTTPS_PROXY``,
``NO_PROXY``) and checks TLS certificates against the system's store (or
``SSL_CERT_FILE``).
"""

from __future__ import annotations

import contextlib
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
        import urllib.request

        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.timeout = timeout
        # Redirects are answered, not followed: a zoo server sends none, and following
        # one would carry the token to wherever it points.
        self._opener = urllib.request.build_opener(_no_redirect())

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
        arguments). A status of 400 or more is an answer too, not an exception."""
        import http.client
        import urllib.error

        request = self._request(method, path, **body)
        try:
            raw = self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as answer:  # an answer: its status and body
            raw = answer
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # URLError (refused, unknown host, TLS), timeouts, a bad URL or status line
            raise TransportError(_reason(exc)) from None
        with raw:
            yield Stream(raw)

    def _request(self, method, path, *, params=None, json=None, data=None, files=None):
        import json as jsonlib
        import urllib.request

        url = self.base_url + path
        if params:
            url += "?" + urlencode(params)
        headers = dict(self.headers)
        body: Any = None
        if files is not None or data is not None:
            boundary = uuid.uuid4().hex
            body, size = _multipart(boundary, data or {}, files or [])
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            headers["Content-Length"] = str(size)
        elif json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        return urllib.request.Request(url, data=body, headers=headers, method=method)

    def close(self) -> None:
        """Nothing to release: each request has its own connection, closed after it."""


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


def _no_redirect():
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None  # urllib then hands the 3xx back as an HTTPError: an answer

    return NoRedirect
