"""Serving under a path prefix: ``https://tools.internal/zoo/`` proxied to ``zoo serve``.

A proxy in front either strips the prefix (nginx's ``proxy_pass http://backend/;`` in a
``location /zoo/``, Traefik's StripPrefix) or passes the path whole. The server told its
prefix (``zoo serve --root-path /zoo``) takes both: a path that begins with the prefix
carries it, any other is the path after it. Either way the request reaches the routes with
the prefix as ASGI's ``root_path`` and the whole path as ``path``, as Starlette routes
them, so what the server writes into its answers (a redirect, a download link, the web
page's links, the OpenAPI ``servers``) carries the prefix.

A redirect's ``Location`` is written relative to the request's own path (``zoo/``,
``../artifacts``): the browser resolves it against the address it asked for, prefix and
host included, so it is right behind any such proxy, one whose prefix the server was not
told too, and never names the address the proxy reached the server at.

The proxy's ``X-Forwarded-Prefix`` header is not read: a proxy that does not set it passes
on whatever a client put there, which would then decide the links the server hands to
others (and a shared cache would keep them).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from zoo.errors import InvalidInputError

# Plain path segments: nothing a proxy or a browser would encode or read otherwise.
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def check_root_path(text: str | None) -> str:
    """``--root-path`` as the server keeps it: ``/zoo`` (``""`` for none), refused in one
    line unless it is ``/`` and plain path segments."""
    if not text:
        return ""
    value = text.strip()
    # One final slash is the same path (--root-path /zoo/); an empty segment is a typo.
    segments = value[1:].removesuffix("/").split("/") if value != "/" else []
    if not value.startswith("/") or not all(
        _SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments
    ):
        raise InvalidInputError(
            f"--root-path {text[:100]!r} is not a path such as /zoo: it starts with / and "
            "holds plain names (letters, digits, . _ ~ -) separated by /."
        )
    return "/" + "/".join(segments) if segments else ""


def relative_reference(here: str, there: str) -> str:
    """A reference that leads from the path ``here`` to the path ``there`` (RFC 3986,
    5.2), whatever prefix both are served under: ``/zoo`` to ``/zoo/`` is ``zoo/``,
    ``/api/artifacts/`` to ``/api/artifacts`` is ``../artifacts``."""
    base = here.split("/")[1:-1]  # the folders of here's path
    target = there.split("/")[1:]
    shared = 0
    while shared < min(len(base), len(target) - 1) and base[shared] == target[shared]:
        shared += 1
    up = [".."] * (len(base) - shared)
    rest = target[shared:]
    ref = "/".join(up + rest)
    if not up and (not ref or ":" in rest[0].partition("/")[0]):
        ref = "./" + ref  # "" would be here itself, "a:b" a scheme
    return ref


class RootPath:
    """Serves the app under ``root`` (``/zoo``, or ``""``), and writes the redirects it
    answers relative to the request's path (see the module's text)."""

    def __init__(self, app, root: str) -> None:
        self.app, self.root = app, root
        self._raw_root = root.encode("ascii")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        root, path = self.root, scope["path"]
        if root:
            raw = scope.get("raw_path") or path.encode("utf-8")
            if not (path == root or path.startswith(root + "/")):  # the proxy stripped it
                path = root + (path if path.startswith("/") else "/" + path)
                raw = self._raw_root + (raw if raw.startswith(b"/") else b"/" + raw)
            scope = {**scope, "path": path, "raw_path": raw, "root_path": root}

        async def sending(message):
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                headers = _relative_location(message["headers"], path, _host(scope))
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, sending)


def _host(scope) -> str:
    return dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1").lower()


def _relative_location(headers, path: str, host: str):
    out = []
    for key, value in headers:
        if key.lower() == b"location":
            target = urlsplit(value.decode("latin-1"))
            # Only the server's own redirects: Starlette's name the Host it was asked by.
            if target.path.startswith("/") and target.netloc.lower() in ("", host):
                ref = relative_reference(path, target.path)
                value = (ref + (f"?{target.query}" if target.query else "")).encode("latin-1")
        out.append((key, value))
    return out


def route_path(scope) -> str:
    """The path after the root path: what the routes match."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :] or "/"
    return path
