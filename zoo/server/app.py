"""The ASGI app: the REST API over :class:`zoo.Registry`, roles, limits and errors.

Every endpoint states the least role it needs (``read`` < ``write`` < ``admin``). Errors
are zoo's own classes, answered with each class's ``http_status`` and a body naming the
class, so a client raises the same class and the CLI exits with the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from zoo import __version__
from zoo.api.export import parse_size
from zoo.api.tokens import TokenInfo
from zoo.checkpoint.hf import MAX_JSON_BYTES, check_config, config_from_text
from zoo.checkpoint.safetensors_format import MAX_TENSORS
from zoo.errors import (
    AuthenticationError,
    DatabaseUnavailableError,
    InvalidInputError,
    NoRoomError,
    NoSuchRouteError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    SchemaOutdatedError,
    ServerUnavailableError,
    StorageError,
    StoreUnavailableError,
    ZooError,
    json_words,
    python_value,
    reworded,
)
from zoo.server.checks import _UPLOAD_NAME, check_name, check_query, check_upload_name
from zoo.server.hf import HUB_TAG, HUB_WRITES_REFUSED, is_hub_write
from zoo.server.links import DownloadLinks, read_link_key
from zoo.server.options import ServerOptions
from zoo.server.prefix import RootPath, check_root_path, route_path
from zoo.server.uploads import check_room, receive
from zoo.server.work import (
    FileCache,
    ServingRegistry,
    SingleFlight,
    acting_user,
    commit_of,
    folder_key,
)
from zoo.store.base import is_object_store_error
from zoo.text import printable

log = logging.getLogger("zoo.server")
access = logging.getLogger("zoo.server.access")

_REPO = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")


def error_body(exc: BaseException, status: int, exit_code: int) -> dict[str, Any]:
    # The parameters a message names are the request's JSON fields ("levels"); params
    # lists them, so a client says them in its own words again.
    body = {
        "class": type(exc).__name__,
        "message": json_words(exc),
        "status": status,
        "exit_code": exit_code,
    }
    if getattr(exc, "params", ()):
        body["params"] = list(exc.params)
    return {"error": body}


@contextlib.contextmanager
def _said_of(staging: Path, label: str) -> Iterator[None]:
    """An error about an upload names it as the uploader does (its label, or the folder
    they read), never the server's staging folder."""
    try:
        yield
    except ZooError as exc:
        exc.args = tuple(
            a.replace(str(staging), label) if isinstance(a, str) else a for a in exc.args
        )
        raise


def header_text(text: str, limit: int = 300) -> str:
    """``text`` as a header value any HTTP implementation sends: printable ASCII (any
    other character as ``?``: a header is Latin-1, and a line break would end it), at most
    ``limit`` characters, and no space at either end (h11 refuses such a value and drops
    the connection instead of answering)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:limit].strip()


def zoo_error_response(exc: ZooError, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if isinstance(exc, AuthenticationError) and not isinstance(exc, PermissionDeniedError):
        headers["WWW-Authenticate"] = 'Bearer realm="zoo"'
    hf_code = getattr(exc, "hf_error_code", None)
    if hf_code:  # what huggingface_hub reads to tell a missing repo, revision or file apart
        headers["X-Error-Code"] = hf_code
    # What huggingface_hub shows of an error, and all a HEAD answer can carry; the body
    # carries the whole message.
    headers["X-Error-Message"] = header_text(error_body(exc, 0, 0)["error"]["message"])
    headers.update(getattr(exc, "extra_headers", {}) or {})
    return JSONResponse(
        error_body(exc, exc.http_status, exc.exit_code),
        status_code=exc.http_status,
        headers=headers,
    )


class QuotedSlashes:
    """Keeps a quoted slash (``%2F``) inside its path segment.

    An ASGI server hands the app the decoded path, where ``/api/artifacts/acme%2Fcard``
    (the artifact ``acme/card``, a Hub repository id, quoted as the client and the web
    page quote every name) would read as the card of ``acme``. Here each segment is
    decoded on its own and a slash inside one stays ``%2F``; :func:`check_query` turns it
    back into ``/`` (no name can hold ``%``)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and b"%2f" in raw.lower():
            from urllib.parse import unquote

            segments = raw.decode("latin-1").split("/")
            path = "/".join(unquote(s).replace("/", "%2F") for s in segments)
            scope = {**scope, "path": path}
        return await self.app(scope, receive, send)


#: The routes that take a checkpoint's files, as multipart/form-data: written to disk as
#: they arrive, so bounded by --max-upload alone.
UPLOAD_ROUTES = ("/api/import/upload", "/api/audit")
#: The most any other request body holds: it is read whole and parsed in memory, at many
#: times its size. A config.json as large as zoo reads one, or the hashes of some 250,000
#: tensors (the largest checkpoints hold tens of thousands).
JSON_BODY_LIMIT = MAX_JSON_BYTES


def upload_too_large(limit: int) -> PayloadTooLargeError:
    """The refusal of an upload above ``limit`` (--max-upload), whether the upload
    announces its size or a client asks first (``GET /api/import/upload/check``)."""
    return PayloadTooLargeError(
        f"The request body exceeds this server's upload limit of {limit} bytes "
        "(zoo serve --max-upload)."
    )


class BodyLimit:
    """Refuses request bodies over the limit: at once when Content-Length says so, else
    as soon as the bytes received pass it (nothing is parsed or written beyond that).
    An upload's files may take up to ``limit`` (--max-upload); any other body, JSON read
    whole into memory, at most ``JSON_BODY_LIMIT``."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    def _refusal(self, scope) -> tuple[int, PayloadTooLargeError]:
        headers = dict(scope.get("headers") or ())
        kind = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
        if (route_path(scope) in UPLOAD_ROUTES and kind == b"multipart/form-data") or (
            self.limit <= JSON_BODY_LIMIT
        ):
            return self.limit, upload_too_large(self.limit)
        return JSON_BODY_LIMIT, PayloadTooLargeError(
            f"The request body exceeds the {JSON_BODY_LIMIT} bytes this server reads of a "
            "request other than an upload; a checkpoint's files go as "
            f"multipart/form-data to {' or '.join(UPLOAD_ROUTES)}."
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        limit, too_large = self._refusal(scope)
        if length is not None and length.isdigit() and int(length) > limit:
            return await zoo_error_response(too_large, {"Connection": "close"})(
                scope, receive, send
            )
        received, exceeded, answered = 0, False, False

        async def limited():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise too_large
            return message

        async def answer_413():
            nonlocal answered
            if not answered:
                answered = True
                await zoo_error_response(too_large, {"Connection": "close"})(scope, receive, send)

        async def guarded(message):
            # Whatever the app made of the interrupted body (a form parser's 400), the
            # client is told the truth: too large.
            if exceeded:
                return await answer_413()
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except PayloadTooLargeError:
            await answer_413()


class Failures:
    """Answers a failure no handler took (the server's own: a database down, a full disk,
    a bug) by ``answer``, which logs it once. Starlette's handler for these answers, then
    raises the error again for the ASGI server, which would log its traceback a second
    time with every request."""

    def __init__(self, app, answer) -> None:
        self.app, self.answer = app, answer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            # The server is stopping and --shutdown-timeout has run out (the request's own
            # cleanups have run): the caller hears that, where the ASGI server would answer
            # a bare 500 and log a traceback. The connection task ends here either way.
            if not started:
                err = ServerUnavailableError(
                    "The zoo server stopped before this request finished; send it again "
                    "once the server is back."
                )
                await JSONResponse(error_body(err, 503, err.exit_code), status_code=503)(
                    scope, receive, send
                )
        except Exception as exc:
            if started:  # too late to answer: the ASGI server logs it and drops the connection
                raise
            response = await self.answer(Request(scope), exc)
            await response(scope, receive, send)


class AccessLog:
    """One line in the server's log per request: the caller's address, who it acted as
    (a token's name, ``anonymous``, or ``-`` before a token was read), the method and path,
    the status, the bytes sent and the time taken. Never the query string, where a
    download link carries its signature, and never a header, where the token rides."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        status, sent = 0, 0
        # The handler's token check sets the acting user in this request's own context:
        # a fresh value here, so no line names the user of an earlier request.
        acting_user.set(None)

        async def sending(message):
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            access.info(
                '%s %s "%s %s" %s %d %.0f ms',
                client[0] if client else "-",
                printable(acting_user.get() or "-"),
                scope["method"],
                printable(scope.get("path", "")),
                status or "-",  # none: the connection ended before an answer began
                sent,
                1000 * (time.perf_counter() - began),
            )


class TokenFirst:
    """Checks the token of a request that carries a body before anything reads the body:
    the routes' own checks run only once FastAPI has read and parsed it, so anyone who
    can reach the server could otherwise make it take in gigabytes (up to
    ``--max-upload``) without a token. The route still checks the role it needs."""

    def __init__(self, app, server: Server, router) -> None:
        self.app, self.server, self.router = app, server, router

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            # The role the route itself needs: an anonymous caller of a server with
            # --public-read may post to a route that only reads (an audit, a rederive, the
            # Hub's paths-info), and a caller without a token is told the role to ask for.
            role = declared_role(self.router, scope) or "write"
            try:
                await self.server.authorize(Request(scope), role)
            except PermissionDeniedError:
                pass  # a valid token: the route says what its role may do
            except ZooError as exc:
                return await zoo_error_response(exc, {"Connection": "close"})(scope, receive, send)
        return await self.app(scope, receive, send)


def declared_role(router, scope) -> str | None:
    """The role the route answering ``scope`` states (its ``read``, ``write`` or ``admin``
    dependency), or None where no route answers it."""
    from starlette.routing import Match

    for route in router.routes:
        if route.matches(scope)[0] is Match.FULL:
            dependant = getattr(route, "dependant", None)
            for dep in dependant.dependencies if dependant else ():
                role = getattr(dep.call, "zoo_role", None)
                if role is not None:
                    return role
            return None
    return None


# --- query strings -----------------------------------------------------------------------


async def known_query_only(request: Request) -> None:
    """Refuse a query parameter the route does not take, as a body's unknown field is:
    ``?familly=bert`` must not list everything while the answer looks right. The Hugging
    Face routes are left alone: hub clients send parameters of their own (``expand``)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if (
        dependant is None
        or HUB_TAG in route.tags
        or not route_path(request.scope).startswith("/api/")
    ):
        return
    taken = _query_names(dependant)
    unknown = sorted(k for k in request.query_params if k not in taken)
    if unknown:
        takes = ", ".join(sorted(taken)) or "none"
        raise InvalidInputError(
            f"Unknown query parameter {unknown[0][:40]!r} for {request.url.path[:100]} "
            f"(it takes: {takes})."
        )


def _query_names(dependant) -> set[str]:
    """The query parameters a route and its dependencies declare."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


# --- request bodies --------------------------------------------------------------------------


class _Body(BaseModel):
    # A field this server does not know is refused, never dropped: an option a client
    # sends (a newer client's, a typo) must not be ignored while the answer looks right.
    # Strict, as the local registry is: 2.0, "2" and true are not the integer 2.
    model_config = ConfigDict(extra="forbid", strict=True)


class ImportRequest(_Body):
    repo: str = Field(description="A Hub repository id (ORG/NAME) the server can reach.")
    revision: str | None = None
    name: str | None = None
    convert_bin: bool = False


class ExtractRequest(_Body):
    source: str
    method: str = "dwt"
    wavelet: str | None = None
    levels: int | None = None
    keep: float | None = None
    order: str = "stored"
    name: str | None = None
    device: str | int | None = None  # a GPU's index too, as locally


class MaterializeRequest(_Body):
    name: str
    layers: int
    hidden: int
    heads: int | None = None
    intermediate: int | None = None
    kv_heads: int | None = None
    method: str | None = None
    wavelet: str | None = None
    rescale: str | None = None
    seed: int | None = None
    norm: str | None = None
    depth: str | None = None
    order: str | None = None
    dtype: str = "auto"
    device: str | int | None = None  # a GPU's index too, as locally
    store: bool = False


class TagRequest(_Body):
    alias: str


class LinkRequest(_Body):
    parent: str
    relation: str = "finetune"
    note: str | None = None


class TensorHash(_Body):
    name: str = Field(max_length=512)
    dtype: str = Field(max_length=16)
    shape: list[int]
    nbytes: int
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class AuditHashesRequest(_Body):
    label: str = Field("upload", max_length=1024)
    # As many as an import takes: the largest real checkpoints hold up to 150,000.
    tensors: list[TensorHash] = Field(max_length=MAX_TENSORS)
    config: dict[str, Any] | None = None
    # config.json's text, read here as a local audit reads the file: a browser's JSON
    # parse turns 10000.0 into 10000, which the content hash tells apart.
    config_text: str | None = Field(None, max_length=MAX_JSON_BYTES)
    metadata: dict[str, str] | None = None


class RederiveRequest(_Body):
    device: str | int | None = None  # a GPU's index too, as locally


class DefaultRequest(_Body):
    learngene: str


class TokenRequest(_Body):
    name: str
    role: str = "read"
    expires: str | None = None  # zoo.api.tokens.parse_expiry, by the server's clock


class GcRequest(_Body):
    # Text such as 24h, or seconds: read by the registry, which refuses what it cannot read.
    grace: str | int | float = "24h"
    dry_run: bool = False


class FsckRequest(_Body):
    repair: bool = False
    grace: str | int | float = "24h"


class _TensorView:
    """A posted tensor hash with the attributes audit reads."""

    def __init__(self, t: TensorHash) -> None:
        self.name, self.dtype, self.shape = t.name, t.dtype, tuple(t.shape)
        self.nbytes, self.digest = t.nbytes, t.digest


# --- the app ----------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _schema_state_after(reg) -> str | None:
    """After a database error: the schema in words when it is not this zoo's (None when
    it is, or when the database cannot say)."""
    import sqlalchemy.exc

    from zoo.db import engine as db_engine

    try:
        with reg.engine.connect() as connection:
            state = db_engine.schema_state(connection)
    except sqlalchemy.exc.SQLAlchemyError:
        return None
    return None if state == "up to date" else state


def _schema_changed(state: str) -> SchemaOutdatedError:
    """A schema changed under the running server, as its callers hear it: the fix is for
    whoever runs the server, where it runs (a client has no `zoo db`), and no restart is
    needed (the server checks the schema again every few seconds)."""
    return SchemaOutdatedError(
        f"The server's database schema changed while it ran; it is now {state}, where the "
        "server runs. The server answers again by itself once the schema is its zoo's."
    )


class Server:
    """What every handler shares: the registry, the work pool, the file cache."""

    def __init__(self, registry, options: ServerOptions) -> None:
        from zoo.config import load_settings

        settings = registry.settings if registry is not None else load_settings()
        self.options = options
        self.root_path = check_root_path(options.root_path)
        # Read before anything is made: a key that cannot sign leaves no cache folder.
        key = None if options.link_key_file is None else read_link_key(options.link_key_file)
        self.reg = ServingRegistry(settings)
        self.limit = parse_size(options.max_upload)
        cache = Path(options.cache) if options.cache else settings.home / "serve-cache"
        store = settings.store_url.removeprefix("file://")
        if "://" not in store and cache.resolve().is_relative_to(Path(store).resolve()):
            raise InvalidInputError(
                f"--cache {cache} lies inside the blob store {store}, whose files are the "
                "registry's; give the server a folder outside it."
            )
        limit = options.cache_limit
        self.cache = FileCache(cache, limit=None if limit is None else parse_size(limit))
        self.work = SingleFlight(options.workers)
        self.links = DownloadLinks(key=key)
        # Materialize requests answered: key -> (artifact, config).
        self.done: dict[tuple, tuple] = {}

    async def db(self, fn, *args, **kwargs):
        """A short registry call, off the event loop."""
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(fn, *args, **kwargs)

    async def authorize(self, request: Request, role: str) -> TokenInfo | None:
        headers = request.headers.getlist("authorization")
        if len(headers) > 1:
            # Proxies and servers disagree on which of two they read: one token, one header.
            raise AuthenticationError(
                f"The request has {len(headers)} Authorization headers; send one: "
                "'Authorization: Bearer TOKEN'."
            )
        header = headers[0] if headers else None
        if not header:
            if role == "read" and self.options.public_read:
                acting_user.set("anonymous")
                return None
            raise AuthenticationError(
                "This zoo server needs a bearer token: set ZOO_TOKEN for zoo, HF_TOKEN for "
                f"huggingface_hub and transformers (zoo token create --name NAME --role {role}, "
                "run by an admin)."
            )
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise AuthenticationError("Send the token as 'Authorization: Bearer TOKEN'.")
        info = await self.db(self.reg.check_token, secret)
        if info is None:
            raise AuthenticationError("The token is unknown or revoked.")
        if not info.allows(role):
            raise PermissionDeniedError(
                f"The token {info.name!r} has role {info.role}; this request needs {role}."
            )
        acting_user.set(info.name)
        return info

    async def authorize_link(self, request: Request, token: int, expires: int, signature: str):
        """Let a signed download link (:mod:`zoo.server.links`) read its one file, as
        the token it names, while that token is active."""
        # As signed: a slash quoted inside a segment (a Hub id's, a module folder's) is a slash.
        name, filename = (request.path_params[k].replace("%2F", "/") for k in ("name", "filename"))
        self.links.check(name, filename, token, expires, signature)
        info = await self.db(self.reg.active_token, token)
        if info is None or not info.allows("read"):
            raise AuthenticationError(
                "The token this download link was made for is revoked: ask for a new one "
                "with an active token."
            )
        acting_user.set(info.name)
        return info

    # --- files of a checkpoint, built once ----------------------------------------------

    def folder_key(self, info) -> str:
        """:func:`folder_key` of ``info`` with the side files its folder carries (a
        derived checkpoint's are its source's: a corrected card reaches it)."""
        from zoo.api.side_files import files_of

        return folder_key(info, files_of(self.reg, info))

    async def export(self, info) -> str:
        """The cached HF folder of a source or derived artifact; returns its key."""
        key = await self.db(self.folder_key, info)
        if self.cache.folder(key) is None:
            await self.work.run(("export", key), lambda: self._export(info, key))
        return key

    def _export(self, info, key: str) -> None:
        if self.cache.folder(key) is not None:
            return
        pending = self.cache.pending()
        try:
            # By name, which one artifact holds: a content hash may be a source's and the
            # same-size checkpoint derived from it.
            with _storage_said_plainly():
                self.reg.export(info.name, out=pending)
            self.cache.adopt(pending, key)
        finally:
            self.cache.done_building(pending)

    async def materialize(self, query: str, params: dict[str, Any], *, caller=None):
        """Materialize once per distinct request and keep its files; returns the result's
        artifact, config, cache folder and warnings. Derivation is deterministic, so a request
        already answered (same parent content, same parameters) is answered again from
        memory while its files are in the cache; requests that arrive while it runs wait
        for it. Once every request waiting for it has left (``caller``: the request,
        watched), it records nothing."""
        parent = await self.parent_key(query)
        # The request as asked, less what means "zoo decides": a Hub size revision sends
        # layers and hidden alone, the REST body every field with its default.
        asked = {
            k: v
            for k, v in params.items()
            if not (v is None or v is False or (k == "dtype" and v == "auto"))
        }
        key = ("materialize", parent, json.dumps(asked, sort_keys=True))
        done = self.done.get(key)
        if done is not None and await self.db(self._still_answers, done[0]):
            return done
        return await self.work.run(
            key, lambda: self._materialize(key, query, params), caller=caller
        )

    def _still_answers(self, artifact) -> bool:
        """Whether a remembered answer stands: its files are cached and its artifact is
        kept. After a `zoo rm` (here or in any other process) the size is derived and
        recorded again, as for a request never answered."""
        if self.cache.folder(self.folder_key(artifact)) is None:
            return False
        try:
            return self.reg.show(artifact.name).content_hash == artifact.content_hash
        except NotFoundError:
            return False

    async def parent_key(self, query: str) -> str:
        """What a request derives from, as a materialization resolves it now: the named
        artifact's content, or for a bare family name its default learngene's (which `zoo
        default`, in any process, may move)."""
        try:
            return await self.db(self._parent_content, query)
        except ZooError:  # unknown or ambiguous: the materialization says which
            return f"name:{query}"

    def _parent_content(self, query: str) -> str:
        from zoo.api.plan import resolve_parent

        with self.reg.session() as session:
            return resolve_parent(session, query).content_hash

    def _materialize(self, key, query: str, params: dict[str, Any]):
        done = self.done.get(key)
        if done is not None and self._still_answers(done[0]):
            return done  # finished between the caller's check and this thread's start
        pending = self.cache.pending()
        try:
            with _storage_said_plainly():
                result = self.reg.materialize(query, out=pending, **params)
            folder = self.folder_key(result.artifact)
            self.cache.adopt(pending, folder)
            # Recorded here, in the worker, before any waiter resumes: a request arriving
            # after the work ends finds the answer instead of starting it again.
            self.done[key] = (result.artifact, result.config, folder, result.warnings)
            return self.done[key]
        finally:
            self.cache.done_building(pending)

    def file_response(self, request: Request, key: str, filename: str, headers=None):
        """One file of the cached folder ``key`` (:func:`folder_key`)."""
        files = self.cache.files(key)
        meta = files.get(filename)
        if meta is None:
            raise _entry_missing(filename)
        path = self.cache.root / key / filename
        extra = {
            "ETag": f'"{meta["sha256"]}"',
            "X-Linked-Etag": f'"{meta["sha256"]}"',
            "X-Repo-Commit": commit_of(key),
            "Accept-Ranges": "bytes",
            # A file's bytes never change under its ETag, but only a --public-read
            # server's files are anyone's: a shared cache (a proxy in front) must not keep
            # an answer to a token or a signed link and hand it to others.
            "Cache-Control": (
                f"{'public' if self.options.public_read else 'private'}, "
                "max-age=31536000, immutable"
            ),
            # A checkpoint's files are whatever its importer put there (a LICENSE.html, a
            # module folder's .svg): never a page that runs in the web page's origin, where
            # the token box is kept, whatever a browser makes of its bytes.
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            **(headers or {}),
        }
        if request.headers.get("if-none-match", "").strip('"') == meta["sha256"]:
            return Response(status_code=304, headers=extra)
        if _unsatisfiable(request, meta["size"], f'"{meta["sha256"]}"'):
            err = ZooError(f"No byte of the requested range is in this {meta['size']}-byte file.")
            return JSONResponse(
                error_body(err, 416, 2),
                status_code=416,
                headers={**extra, "Content-Range": f"bytes */{meta['size']}"},
            )
        return FileResponse(
            path, headers=extra, media_type=_media_type(filename), filename=None, stat_result=None
        )


# What a served file is, by its name: JSON, text (a card, a vocabulary, code: shown, never
# rendered), or bytes to save. Never HTML or SVG, which a browser would run.
_TEXT_SUFFIXES = (".md", ".txt", ".py", ".jinja", ".tiktoken")


def _media_type(filename: str) -> str:
    if filename.endswith(".json"):
        return "application/json"
    if filename.endswith(_TEXT_SUFFIXES):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


_RANGE = re.compile(r"bytes=\s*(\d*-\d*\s*(?:,\s*\d*-\d*\s*)*)", re.IGNORECASE)


def _unsatisfiable(request: Request, size: int, etag: str | None = None) -> bool:
    """Whether a Range header asks only for bytes past the end (416, in zoo's error body).
    A header in another unit or of another form is ignored and the whole file sent, as
    RFC 9110 (14.2) has a server do (the file server would answer a plain-text 400). Of
    one that also asks for bytes past the end, the ranges in the file are served (RFC
    9110, 15.3.7: the satisfiable ranges) and the others dropped, where the file server
    would refuse them all. What remains of the header is what it serves. An ``If-Range``
    that is not the file's ``etag`` asks for the whole file (RFC 9110, 13.1.5), and an
    empty file holds no range at all."""
    header = request.headers.get("range")
    if header is None:
        return False
    found = _RANGE.fullmatch(header.strip())
    specs = [spec.strip().partition("-") for spec in found.group(1).split(",")] if found else []
    others = [(k, v) for k, v in request.scope["headers"] if k != b"range"]
    if_range = request.headers.get("if-range")
    stale = if_range is not None and if_range.strip() != etag
    if stale or not specs or not all(_well_formed(first, last) for first, _, last in specs):
        request.scope["headers"] = others
        return False
    kept = [
        f"{first}-{last}"
        for first, _, last in specs
        if size and (int(first) < size if first else int(last) > 0)
    ]
    if kept and len(kept) < len(specs):
        request.scope["headers"] = [*others, (b"range", f"bytes={','.join(kept)}".encode())]
    return not kept


def _well_formed(first: str, last: str) -> bool:
    """``first-last``, ``first-`` or ``-suffix`` with first <= last."""
    return bool(first or last) and not (first and last and int(first) > int(last))


@contextlib.contextmanager
def _storage_said_plainly():
    """A build into the cache that its disk cannot take, told in the caller's terms (the
    caller named no folder), never with the cache's path or the CLI's ``--out``: a
    checkpoint larger than the room left, by its size and that room; a write that fails
    midway (builds running beside it filled the disk), by kind, as every failure of the
    server's own storage is, and logged with its detail."""
    from zoo.api.export import decimal_bytes

    try:
        yield
    except StorageError as exc:
        if isinstance(exc, NoRoomError) and exc.needed is not None and exc.free is not None:
            raise StorageError(
                f"This checkpoint would take {decimal_bytes(exc.needed)} and the server has "
                f"{decimal_bytes(exc.free)} of disk free for it."
            ) from None
        raise _storage_failed(exc) from None


def _storage_failed(exc: OSError) -> StorageError:
    """A failure of the server's own storage, told to the caller by kind (its reason,
    such as "No space left on device"); its text, with the server's paths, is logged."""
    # The server's own folders are no caller's parameter: the log names the path alone.
    log.error("storage error: %s", reworded(exc, _path_alone))
    # zoo's own StorageError says the file system's reason in its text, from its cause.
    cause = exc if exc.strerror else exc.__cause__
    reason = getattr(cause, "strerror", None)
    if not reason:
        return StorageError("The server's storage failed; the server's log says why.")
    return StorageError(f"The server's storage failed: {reason}.")


def _path_alone(name: str, value: str | None) -> str:
    """A parameter a message names, as its value alone (``out='/cache/x'``: /cache/x)."""
    return name if value is None else str(python_value(value))


_STORE_FAILED = "The server's object store failed; the server's log says why."


def _entry_missing(filename: str) -> NotFoundError:
    exc = NotFoundError(f"No file {filename[:80]!r} in this checkpoint.")
    exc.hf_error_code = "EntryNotFound"
    return exc


def create_app(registry, options: ServerOptions) -> FastAPI:
    from contextlib import asynccontextmanager

    server = Server(registry, options)

    @asynccontextmanager
    async def lifespan(app):
        left = server.cache.clean_leftovers()
        if left:
            log.info(
                "removed %d leftovers of an interrupted server, or folders another zoo "
                "built, from the cache",
                len(left),
            )
        await server.db(server.cache.trim)
        await server.db(server.reg.ensure_schema)
        yield
        server.work.close()
        server.cache.close()
        # The cut work's threads end with the process, under the blobs they were writing
        # (a store never opened has none).
        store = vars(server.reg).get("store")
        written = store.abandon_writes() if store is not None else 0
        if written:
            log.info("removed %d unfinished blob writes of the stopping server", written)
        server.reg.close()

    app = FastAPI(
        title="zoo",
        version=__version__,
        description="A model-zoo registry and lineage database: learngenes stored once, "
        "any size materialized on demand, lineage audited.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(known_query_only)],
    )
    app.state.server = server
    app.add_middleware(BodyLimit, limit=server.limit)
    app.add_middleware(TokenFirst, server=server, router=app.router)  # before BodyLimit reads
    app.add_middleware(QuotedSlashes)

    @app.exception_handler(ZooError)
    async def _zoo_error(request: Request, exc: ZooError):
        if isinstance(exc, StoreUnavailableError):  # its URL and advice are the server's
            log.error("object store error: %s", _first_line(exc))
            exc = StoreUnavailableError(_STORE_FAILED)
        elif isinstance(exc, SchemaOutdatedError):  # the server's schema, not the caller's
            state = await server.db(_schema_state_after, server.reg)
            if state is not None:
                exc = _schema_changed(state)
        return zoo_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # its location is a byte offset
            return zoo_error_response(InvalidInputError("The request body is not valid JSON."))
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if where:
            message = f"{where}: {first.get('msg', 'invalid request')}"
        else:  # the body as a whole: say what was wrong with it, and what is taken
            message = _body_refused(request, first)
        return zoo_error_response(InvalidInputError(message))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        where = f"{request.method} {request.url.path[:100]}"
        if exc.status_code == 404 and is_hub_write(request.method, route_path(request.scope)):
            # huggingface_hub's create_repo, upload_file, create_branch...: the Hub's routes
            # for writing, which zoo does not take (405, Allow: what the path takes, none),
            # said in one line where huggingface_hub shows a server's message.
            err = InvalidInputError(f"{where}: {HUB_WRITES_REFUSED}")
            headers = {
                "Allow": ", ".join(_methods_of(app, request.scope)),
                "X-Error-Message": header_text(str(err)),
            }
            return JSONResponse(error_body(err, 405, err.exit_code), 405, headers=headers)
        if exc.status_code == 404:  # no route (a route's own misses are zoo's NotFoundError)
            err: ZooError = NoSuchRouteError(
                f"{where}: this zoo server has no such path (ZOO_ENDPOINT is the server's "
                "address: its root, or the path a proxy serves it under, which a proxy "
                "that passes that path on needs the server to know: zoo serve --root-path; "
                "or this server's zoo is older than the client's)."
            )
        else:
            err = InvalidInputError(f"{where}: {exc.detail}")
        headers = exc.headers
        if exc.status_code == 405:  # with Allow (RFC 9110, 15.5.6): every route's methods
            headers = {"Allow": ", ".join(_methods_of(app, request.scope))}
        return JSONResponse(
            error_body(err, exc.status_code, err.exit_code),
            status_code=exc.status_code,
            headers=headers,
        )

    async def _unexpected(request: Request, exc: Exception):
        import errno as _errno
        import sys

        # The server's own failures are told to the caller by kind; their text (the
        # database's host, port and role, the server's paths) goes to the server's log.
        sa = sys.modules.get("sqlalchemy.exc")
        if sa is not None and isinstance(exc, sa.SQLAlchemyError):
            # One line: the driver's message, not the statement and its parameters (token
            # names, hashes), which SQLAlchemy's text appends.
            cause = getattr(exc, "orig", None) or exc
            log.error("database error: %s: %s", type(cause).__name__, _first_line(cause))
            # The schema is checked when the server starts: one changed under it since (a
            # `zoo db downgrade`, an older or newer zoo's upgrade) fails every statement.
            state = await server.db(_schema_state_after, server.reg)
            if state is not None:
                err = _schema_changed(state)
            else:
                err = DatabaseUnavailableError(
                    "The server's database is unavailable or failing; the server's log says why."
                )
            return JSONResponse(error_body(err, 503, err.exit_code), status_code=503)
        if isinstance(exc, OSError) and exc.errno in (
            _errno.ENOSPC,
            _errno.EDQUOT,
            _errno.EACCES,
            _errno.EROFS,
        ):
            err = _storage_failed(exc)
            return JSONResponse(error_body(err, 507, err.exit_code), status_code=507)
        if is_object_store_error(exc):
            # The store's endpoint, bucket and key stay in the server's log, as the
            # database's host does; the caller hears what a local command says: exit 11.
            log.error("object store error: %s: %s", type(exc).__name__, _first_line(exc))
            err = StoreUnavailableError(_STORE_FAILED)
            return JSONResponse(error_body(err, 503, err.exit_code), status_code=503)
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        err = ZooError(f"Internal error ({type(exc).__name__}); the server's log has its trace.")
        return JSONResponse(error_body(err, 500, 1), status_code=500)

    app.add_middleware(Failures, answer=_unexpected)  # it sees every failure
    app.add_middleware(AccessLog)  # the status a failure was answered with too
    # Outermost: every layer inside sees the path as the proxy's clients asked for it.
    app.add_middleware(RootPath, root=server.root_path)

    def role(name: str):
        async def dep(request: Request):
            return await server.authorize(request, name)

        dep.zoo_role = name  # read by TokenFirst, which checks it before the body is read
        return Depends(dep)

    read, write, admin = role("read"), role("write"), role("admin")

    async def read_or_link(
        request: Request,
        link_token: int | None = None,
        expires: int | None = None,
        signature: str | None = None,
    ):
        """A file's reader: a token in the header, a signed download link, or (with
        --public-read) anyone."""
        if link_token is None and expires is None and signature is None:
            return await server.authorize(request, "read")
        if link_token is None or expires is None or not signature:
            raise InvalidInputError(
                "A download link takes link_token, expires and signature together."
            )
        return await server.authorize_link(request, link_token, expires, signature)

    file_reader = Depends(read_or_link)

    # --- the service itself -------------------------------------------------------------

    @app.api_route("/api/health", methods=["GET", "HEAD"], tags=["service"])
    async def health():
        """Liveness (no token needed)."""
        return {"ok": True, "version": __version__}

    @app.get("/api/whoami", tags=["service"])
    async def whoami(token: TokenInfo | None = read):
        """The token's name and role (``anonymous`` under --public-read)."""
        if token is None:
            return {"name": "anonymous", "role": "read"}
        return {"name": token.name, "role": token.role}

    @app.get("/api/stats", tags=["service"])
    async def stats(_=read):
        """Derivations run, duplicate runs of one request, and the server's memory."""
        started = dict(server.work.started)
        derivations = {k: v for k, v in started.items() if k[0] == "materialize"}
        return {
            "derivations": sum(derivations.values()),
            "distinct_derivations": len(derivations),
            "duplicate_derivations": sum(v - 1 for v in derivations.values()),
            "exports": sum(v for k, v in started.items() if k[0] == "export"),
            "rss_bytes": _rss_bytes(),
        }

    # --- artifacts ------------------------------------------------------------------------

    @app.get("/api/artifacts", tags=["artifacts"])
    async def list_artifacts(
        kind: str | None = None,
        family: str | None = None,
        q: str | None = Query(
            None, max_length=128, description="A glob (* and ?) or text in names and aliases."
        ),
        name: str | None = Query(None, max_length=128, description="Exactly this name."),
        alias: str | None = Query(None, max_length=128, description="Exactly this alias."),
        size: str | None = Query(None, max_length=32, description="LAYERSxHIDDEN, e.g. 6x384."),
        min_layers: int | None = None,
        max_layers: int | None = None,
        min_hidden: int | None = None,
        max_hidden: int | None = None,
        derived_from: str | None = Query(None, max_length=128),
        created_by: str | None = Query(None, max_length=128),
        created_after: str | None = Query(None, max_length=40),
        created_before: str | None = Query(None, max_length=40),
        limit: int = Query(50, ge=0, le=1000, description="Artifacts per page (0: all)."),
        after: str | None = Query(None, max_length=256, description="The previous page's next."),
        oldest_first: bool = False,
        all: bool = False,
        _=read,
    ):
        """A page of artifacts, newest first, with the total that match and the cursor of
        the next page (kind, family, name or alias glob, size, lineage, author, time)."""
        if name or alias:  # one artifact at most: resolved, not searched
            searched = {
                "q": q,
                "size": size,
                "min_layers": min_layers,
                "max_layers": max_layers,
                "min_hidden": min_hidden,
                "max_hidden": max_hidden,
                "derived_from": derived_from,
                "created_by": created_by,
                "created_after": created_after,
                "created_before": created_before,
                "after": after,
                "all": all or None,
            }
            given = [k for k, v in searched.items() if v is not None]
            if given:  # a filter the look-up would not apply must not look applied
                raise InvalidInputError(
                    f"name= and alias= look up one kept artifact and combine with kind and "
                    f"family only (got {given[0]}=); use q= to search with other filters."
                )
            found = await server.db(_exactly, server.reg, name, alias)
            keep = [
                i
                for i in found
                if (kind is None or i.kind == kind) and (not family or _of_family(i, family))
            ]
            return {"artifacts": [_summary_json(i) for i in keep], "total": len(keep), "next": None}
        if size:
            layers, hidden = _parse_spec(size)
            min_layers = max_layers = layers
            min_hidden = max_hidden = hidden
        page = await server.db(
            server.reg.search,
            kind=kind,
            family=family,
            include_deleted=all,
            name=check_name(q, "pattern") if q else None,
            min_layers=min_layers,
            max_layers=max_layers,
            min_hidden=min_hidden,
            max_hidden=max_hidden,
            derived_from=check_query(derived_from) if derived_from else None,
            created_by=created_by,
            created_after=created_after,
            created_before=created_before,
            limit=limit or None,
            after=after,
            newest_first=not oldest_first,
        )
        body = page.to_json()
        body["artifacts"] = [_summary_json(i) for i in page.items]
        return body

    @app.get("/api/families", tags=["defaults"])
    async def families(_=read):
        """The families zoo resizes."""
        from zoo.families import FAMILY_NAMES

        return list(FAMILY_NAMES)

    @app.get("/api/artifacts/{name}/lineage", tags=["artifacts"])
    async def lineage(
        name: str,
        up: bool = True,
        down: bool = True,
        # Its range is the registry's to refuse, in its words (-1 is no depth).
        depth: int | None = Query(None, description="At most this many edges away."),
        format: str = Query("json", pattern="^(json|text|dot|mermaid|svg)$"),
        all: bool = Query(False, description="The artifact may be a removed one."),
        _=read,
    ):
        """Ancestors and descendants with each edge's recipe: json, text, dot, mermaid, svg."""
        graph = await server.db(
            server.reg.lineage,
            check_query(name),
            up=up,
            down=down,
            depth=depth,
            include_deleted=all,
        )
        if format == "json":
            return graph.to_json()
        if format == "svg":
            from zoo.server.svg import lineage_svg

            # Opened on its own, an SVG is a document of the page's origin: it runs nothing.
            headers = {
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
                "X-Content-Type-Options": "nosniff",
            }
            return Response(lineage_svg(graph), media_type="image/svg+xml", headers=headers)
        text = {"text": graph.to_text, "dot": graph.to_dot, "mermaid": graph.to_mermaid}[format]()
        return PlainTextResponse(text)

    @app.get("/api/artifacts/{name}/card", tags=["artifacts"])
    async def card(name: str, _=read):
        """The model card (README.md) of a source or derived checkpoint."""
        info = await server.db(server.reg.show, check_query(name))
        if info.kind == "learngene":
            return PlainTextResponse(_learngene_card(info))
        key = await server.export(info)
        return PlainTextResponse((server.cache.root / key / "README.md").read_text())

    @app.get("/api/artifacts/{name}/files", tags=["artifacts"])
    async def files(name: str, _=read):
        """The files of a source or derived checkpoint, with their sha256 and size."""
        info = await server.db(server.reg.show, check_query(name))
        key = await server.export(info)
        return {"content_hash": info.content_hash, "files": server.cache.files(key)}

    @app.get("/api/artifacts/{name}/files/{filename}", tags=["artifacts"])
    @app.head(
        "/api/artifacts/{name}/files/{filename}", tags=["artifacts"], operation_id="head_file"
    )
    async def file(request: Request, name: str, filename: str, _=file_reader):
        """Download one file (ETag: its sha256), with a token or by a signed link; a module
        folder's file by its path, its slash quoted (``1_Pooling%2Fconfig.json``)."""
        info = await server.db(server.reg.show, check_query(name))
        key = await server.export(info)
        return server.file_response(request, key, filename.replace("%2F", "/"))

    @app.get("/api/artifacts/{name}/files/{filename}/link", tags=["artifacts"])
    async def file_link(request: Request, name: str, filename: str, token=read):
        """A link to one file that downloads without a header (a browser saves it as it
        arrives), valid for a few minutes and only while the token is active."""
        info = await server.db(server.reg.show, check_query(name))
        key = await server.export(info)
        filename = filename.replace("%2F", "/")
        if filename not in server.cache.files(key):
            raise _entry_missing(filename)
        path = f"/api/artifacts/{quote(info.name, safe='')}/files/{quote(filename, safe='')}"
        # Under the server's --root-path: the path a client of the proxy in front asks for.
        path = request.scope.get("root_path", "") + path
        if token is None:  # an anonymous reader of a --public-read server needs no link
            return {"url": path, "expires_at": None}
        link = server.links.sign(info.name, filename, token.id, until=token.expires_at)
        expires_at = datetime.fromtimestamp(link.expires, timezone.utc).isoformat()
        return {"url": f"{path}?{link.query()}", "expires_at": expires_at}

    @app.post("/api/artifacts/{name}/aliases", tags=["artifacts"])
    async def tag(name: str, body: TagRequest, _=write):
        """Point an alias at the artifact (zoo tag)."""
        info, previous = await server.db(
            server.reg.point_alias, check_query(name), check_name(body.alias, "alias")
        )
        return {
            "alias": body.alias,
            "artifact": info.to_json(with_tensors=True),
            "previous": previous,
        }

    @app.get("/api/aliases/{alias}", tags=["artifacts"])
    async def alias_history(
        alias: str,
        limit: int = Query(50, ge=0, le=1000, description="Settings per page (0: all)."),
        after: str | None = Query(None, max_length=256, description="The previous page's next."),
        _=read,
    ):
        """A page of where an alias has pointed, newest first, with the cursor of the next
        page (zoo alias-history)."""
        settings = await server.db(
            server.reg.alias_history,
            check_query(alias, "alias"),
            limit=limit or None,
            after=after,
        )
        return settings.to_json(alias)

    @app.post("/api/artifacts/{name}/links", tags=["artifacts"])
    async def link(name: str, body: LinkRequest, _=write):
        """Declare a derivation made outside zoo (zoo link)."""
        edge = await server.db(
            server.reg.link,
            check_query(name),
            check_query(body.parent),
            relation=body.relation,
            note=body.note,
        )
        return edge.to_json()

    @app.delete("/api/artifacts/{name}", tags=["artifacts"])
    async def rm(name: str, cascade: bool = False, _=write):
        """Remove an artifact (soft; zoo gc makes it final)."""
        infos = await server.db(server.reg.rm, check_query(name), cascade=cascade)
        return [i.to_json() for i in infos]

    @app.post("/api/artifacts/{name}/rederive", tags=["artifacts"])
    async def rederive(name: str, body: RederiveRequest | None = None, _=read):
        """Re-derive a derived checkpoint and verify it bit for bit."""
        device = body.device if body else None
        result = await server.work.call(
            server.reg.rederive, check_query(name), device=device, return_weights=False
        )
        return {"artifact": result.artifact.to_json(with_tensors=True), "verified": True}

    # Registered after the routes below an artifact: a name with an unquoted slash (a Hub
    # repository id typed by hand) reaches the registry instead of no route.
    @app.get("/api/artifacts/{name:path}", tags=["artifacts"])
    async def show(
        name: str,
        tensors: bool = True,
        all: bool = Query(False, description="Also a removed artifact."),
        _=read,
    ):
        """One artifact by name, alias or content-hash prefix."""
        info = await server.db(server.reg.show, check_query(name), include_deleted=all)
        return info.to_json(with_tensors=tensors) | {"size": _size(info)}

    # --- writing: import, extract, materialize ------------------------------------------------

    @app.post("/api/import", tags=["writing"])
    async def import_hub(request: Request, body: ImportRequest, _=write):
        """Import a Hub repository the server can reach (ORG/NAME): from the server's HF
        cache or the Hub, never a folder on the server's disk (a client's own folder goes
        to /api/import/upload)."""
        if not _REPO.fullmatch(body.repo) or ".." in body.repo:
            raise InvalidInputError(f"{body.repo[:100]!r} is not a Hub repository id (ORG/NAME).")
        if body.name:
            check_name(body.name)
        info = await server.work.call(
            server.reg.import_from_hub,
            body.repo,
            name=body.name,
            revision=body.revision,
            convert_bin=body.convert_bin,
            caller=request,
        )
        return info.to_json(with_tensors=True)

    @app.post(
        "/api/import/upload",
        tags=["writing"],
        openapi_extra=_multipart_body(
            files="config.json, *.safetensors and the folder's other files, each by its "
            "path in the folder",
            folder="The folder's name (the default name).",
            name="The registry name to give it.",
            origin="Where the uploader read the folder (HOST:PATH): the origin the import "
            "record keeps, as upload:HOST:PATH (default upload:FOLDER).",
        ),
    )
    async def import_upload(request: Request, _=write):
        """Import an uploaded checkpoint folder (multipart: one part per file), each file
        written once, where the import reads it, as it arrives."""
        staging = await server.db(server.cache.upload_dir)
        try:
            await server.db(_check_upload_room, request, [staging, *_store_folder(server.reg)])
            # Its parts come in any order, the folder's name perhaps last: the files are
            # written here, and the folder renamed once its name is known.
            parts = staging / _PARTS
            parts.mkdir()
            got = await receive(
                request, parts, check_upload_name, fields=("folder", "name", "origin")
            )
            folder = got.fields.get("folder", "upload")
            name, origin = got.fields.get("name") or None, got.fields.get("origin")
            if not _UPLOAD_NAME.fullmatch(folder):
                raise InvalidInputError(
                    f"Folder name {folder[:40]!r} is refused: one plain name, no path."
                )
            if name:
                check_name(name)
            if origin is not None and not (origin and len(origin) <= 1024 and origin.isprintable()):
                raise InvalidInputError("origin is one line of printable text (HOST:PATH).")
            target = staging / folder
            parts.rename(target)
            # The staging folder is gone once imported: the record names the uploader's.
            with _said_of(target, origin or folder):
                info = await server.work.call(
                    server.reg.import_checkpoint,
                    target,
                    name=name,
                    origin=f"upload:{origin or folder}",
                    caller=request,
                )
            return info.to_json(with_tensors=True)
        finally:
            await server.db(server.cache.remove_upload, staging)

    @app.get("/api/import/upload/check", tags=["writing"])
    async def check_upload(
        size: int = Query(ge=0, description="The upload's whole multipart body, in bytes."),
        _=write,
    ):
        """Whether /api/import/upload would take an upload of ``size`` bytes from this
        token: its refusal (413 over --max-upload, 507 over the server's free disk, 401,
        403), before any byte is sent. The upload itself is refused as soon as its
        Content-Length arrives, and the connection closed: a client still sending sees a
        broken pipe or a reset, which may discard the answer."""
        if size > server.limit:
            raise upload_too_large(server.limit)
        await server.db(check_room, size, [server.cache.root, *_store_folder(server.reg)])
        return {"max_upload": server.limit}

    @app.post("/api/extract", tags=["writing"])
    async def extract(request: Request, body: ExtractRequest, _=write):
        """Extract a learngene once (zoo extract)."""
        params = body.model_dump()
        source = check_query(params.pop("source"))
        if params.get("name"):
            check_name(params["name"])
        key = ("extract", source, json.dumps(params, sort_keys=True))
        info = await server.work.run(
            key, lambda: server.reg.extract(source, **params), caller=request
        )
        return info.to_json(with_tensors=True)

    @app.post("/api/materialize", tags=["writing"])
    async def materialize(request: Request, body: MaterializeRequest, _=write):
        """Materialize a size (zoo materialize); its files are then under /files."""
        params = body.model_dump()
        query = check_query(params.pop("name"))
        made = await server.materialize(query, params, caller=request)
        artifact, config, _folder, warnings = made
        return {
            "artifact": artifact.to_json(with_tensors=True),
            "config": config,
            "files": f"{request.scope.get('root_path', '')}/api/artifacts/"
            f"{artifact.content_hash}/files",
            "warnings": list(warnings),
        }

    # --- auditing -----------------------------------------------------------------------------

    @app.post(
        "/api/audit",
        tags=["auditing"],
        openapi_extra=_multipart_body(
            files="A .safetensors file, or a folder's files each by its path in the folder",
            label="What the report calls it (default upload).",
            verify="true to re-hash the registry's blobs it matches.",
        ),
    )
    async def audit_upload(request: Request, _=read):
        """Audit an uploaded file or folder: which registered artifact is it?"""
        staging = await server.db(server.cache.upload_dir)
        try:
            await server.db(_check_upload_room, request, [staging])
            got = await receive(request, staging, check_upload_name, fields=("label", "verify"))
            label = got.fields.get("label", "upload")
            if len(label) > 1024:
                raise InvalidInputError("label is at most 1024 characters.")
            verify = _form_bool("verify", got.fields.get("verify", "false"))
            target = staging
            if len(got.files) == 1 and got.files[0].endswith(".safetensors"):
                target = staging / got.files[0]
            with _said_of(target, label):  # the file's path when one file was sent
                report = await server.work.call(server.reg.audit, target, verify=verify)
            report.path = label
            return report.to_json()
        finally:
            await server.db(server.cache.remove_upload, staging)

    @app.post("/api/audit/hashes", tags=["auditing"])
    async def audit_hashes(body: AuditHashesRequest, verify: bool = False, _=read):
        """Audit by the tensors' sha256 alone (what the web page hashes in the browser)."""
        tensors = [_TensorView(t) for t in body.tensors]
        config = body.config
        if body.config_text is not None:
            if config is not None:
                raise InvalidInputError("Send config or config_text, not both.")
            config = config_from_text(body.config_text)
        elif config is not None:  # checked as the file's text would be
            check_config(config, "config")
        report = await server.work.call(
            server.reg.audit_manifest,
            body.label,
            tensors,
            config,
            body.metadata,
            verify=verify,
        )
        return report.to_json()

    # --- defaults, maintenance, tokens ------------------------------------------------------

    @app.get("/api/defaults", tags=["defaults"])
    async def defaults(_=read):
        """zoo's measured default recipe per family and direction."""
        from zoo.defaults import CLOSEST, DEFAULTS

        return [
            {
                "family": family,
                "direction": direction,
                "measured_on": CLOSEST[family],
                **d._asdict(),
            }
            for (family, direction), d in DEFAULTS.items()
        ]

    @app.get("/api/defaults/{family}", tags=["defaults"])
    async def family_default(family: str, _=read):
        """The learngene a bare family name materializes from (zoo default FAMILY), or null."""
        info = await server.db(server.reg.family_default, family.replace("%2F", "/"))
        return {
            "family": family.lower() if info is None else info.family,
            "learngene": None if info is None else info.to_json(with_tensors=True),
        }

    @app.put("/api/defaults/{family}", tags=["defaults"])
    async def set_default(family: str, body: DefaultRequest, _=admin):
        """Make a learngene what a bare family name materializes from (zoo default)."""
        info = await server.db(
            # Any text the path holds is a family's name or none, which the registry says.
            server.reg.set_default,
            family.replace("%2F", "/"),
            check_query(body.learngene),
        )
        server.done.clear()  # a bare family name now means another learngene
        # The family's own name, however the path spelled it (BERT sets bert's).
        return {"family": info.family, "learngene": info.to_json(with_tensors=True)}

    @app.post("/api/gc", tags=["maintenance"])
    async def gc(body: GcRequest, _=admin):
        """Sweep blobs nothing kept needs (zoo gc)."""
        report = await server.work.call(server.reg.gc, grace=body.grace, dry_run=body.dry_run)
        return report.to_json()

    @app.post("/api/fsck", tags=["maintenance"])
    async def fsck(body: FsckRequest, _=admin):
        """Check the database against the store (zoo fsck)."""
        report = await server.work.call(server.reg.fsck, repair=body.repair, grace=body.grace)
        return report.to_json()

    @app.post("/api/verify", tags=["maintenance"])
    async def verify(name: str | None = None, repair: bool = False, _=admin):
        """Re-hash stored blobs (zoo verify); ``repair`` restores those zoo can produce
        again (zoo verify --repair)."""
        query = check_query(name) if name is not None else None  # "" is no artifact
        report = await server.work.call(server.reg.verify, query, repair=repair)
        return report.to_json()

    @app.get("/api/tokens", tags=["tokens"])
    async def tokens(all: bool = False, _=admin):
        """Token records (never secrets)."""
        infos = await server.db(server.reg.list_tokens, include_revoked=all)
        return [i.to_json() for i in infos]

    @app.post("/api/tokens", tags=["tokens"])
    async def create_token(body: TokenRequest, _=admin):
        """Create a token; the secret is in this answer only."""
        info, secret = await server.db(
            server.reg.create_token, body.name, role=body.role, expires=body.expires
        )
        return {**info.to_json(), "secret": secret}

    @app.delete("/api/tokens/{name}", tags=["tokens"])
    async def revoke_token(name: str, _=admin):
        """Revoke the active token NAME."""
        infos = await server.db(server.reg.revoke_token, check_query(name, "token name"))
        return [i.to_json() for i in infos]

    from zoo.server.hf import add_hf_routes
    from zoo.server.ui import add_ui_routes

    add_ui_routes(app, server.root_path)
    add_hf_routes(app, server, read)  # last: its /{repo}/resolve/... routes are the widest
    return app


# Where an upload's files are written until the folder's name is known: no name an
# upload's folder may have (_UPLOAD_NAME).
_PARTS = ".parts"


def _check_upload_room(request: Request, folders: list[Path]) -> None:
    """Refuse an upload whose announced size (Content-Length) the server's disks cannot
    hold, before any byte is received (a body without a length is stopped by the disk)."""
    length = request.headers.get("content-length", "")
    if length.isdigit():
        check_room(int(length), folders)


def _store_folder(reg) -> list[Path]:
    """The local blob store's folder (or the nearest one that exists), where an import
    writes an upload's bytes again; none for an object store."""
    root = getattr(reg.store, "root", None)
    if not isinstance(root, Path):
        return []
    return [next(p for p in (root, *root.parents) if p.exists())]


def _form_bool(name: str, text: str) -> bool:
    """A form field's true or false, in the spellings HTML forms and clients send."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise InvalidInputError(f"{name} is true or false, not {text[:20]!r}.")


def _multipart_body(**fields: str) -> dict:
    """The OpenAPI request body of an upload route: ``files`` (one part per file) and the
    form fields, described."""
    properties = {
        name: (
            {"type": "array", "items": {"type": "string", "format": "binary"}}
            if name == "files"
            else {"type": "string"}
        )
        | {"description": text}
        for name, text in fields.items()
    }
    schema = {"type": "object", "properties": properties, "required": ["files"]}
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }


def _body_refused(request: Request, error: dict) -> str:
    """Why a request body was refused as a whole, in one line: none sent, one sent as
    something other than JSON (FastAPI reads a body as JSON only under a JSON content
    type, so a form or text/plain reaches validation as bytes), or JSON that is not an
    object."""
    where = f"{request.method} {request.url.path[:100]}"
    found = error.get("input")
    if error.get("type") == "missing":
        return (
            f"{where} takes a JSON object as its body (Content-Type: application/json); none came."
        )
    if isinstance(found, bytes | bytearray):
        kind = request.headers.get("content-type", "").partition(";")[0].strip()[:60]
        sent = f"as {kind}" if kind else "without a Content-Type"
        return (
            f"{where} takes a JSON object as its body, sent with Content-Type: "
            f"application/json; this one came {sent}."
        )
    shown = {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}
    return f"{where} takes a JSON object as its body, not {shown.get(type(found), 'a number')}."


def _methods_of(app, scope) -> list[str]:
    """The methods the routes at this request's path take: Starlette's own 405 names the
    first such route's alone (GET of /api/tokens, not its POST)."""
    from starlette.routing import Match

    return sorted(
        {
            method
            for route in app.routes
            if getattr(route, "methods", None) and route.matches(scope)[0] == Match.PARTIAL
            for method in route.methods
        }
    )


def _parse_spec(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,5})x(\d{1,7})", text)
    if not m:
        raise InvalidInputError(f"{text[:40]!r} is not a size: write LAYERSxHIDDEN, e.g. 6x384.")
    return int(m.group(1)), int(m.group(2))


def _size(item) -> str | None:
    """LAYERSxHIDDEN of an artifact whose row records both."""
    return f"{item.layers}x{item.hidden}" if item.layers and item.hidden else None


def _exactly(reg, name: str | None, alias: str | None) -> list:
    """The artifact with exactly this registry name or alias, as a one-item list."""
    from zoo.errors import NotFoundError

    try:
        info = reg.show(check_query(name or alias))
    except NotFoundError:
        return []
    if (name and info.name != name) or (alias and alias not in info.aliases):
        return []
    return [info]


def _of_family(info, family: str) -> bool:
    """Whether ``family=`` keeps ``info`` as a listing's does: a family in any case or a
    config's model_type (of a checkpoint no family resizes, its config.json's)."""
    from zoo.families import family_filter

    listed, model_type = family_filter(family)
    if listed is not None:
        return info.family == listed
    own = (info.config or {}).get("model_type")
    return info.family is None and isinstance(own, str) and own.lower() == model_type.lower()


def _summary_json(item) -> dict[str, Any]:
    """A listing's entry (an ArtifactSummary or ArtifactInfo) with its LAYERSxHIDDEN."""
    keys = (
        "id",
        "kind",
        "name",
        "family",
        "content_hash",
        "virtual",
        "created_at",
        "created_by",
        "deleted",
        "tensor_count",
        "nbytes",
        "layers",
        "hidden",
        "aliases",
    )
    data = item.to_json()
    return {k: data[k] for k in keys} | {"size": _size(item)}


def _learngene_card(info) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in sorted(info.info.items()) if k != "signals")
    return (
        f"# {info.name}\n\nA {info.family} learngene ({info.content_hash}): {settings}.\n"
        "Materialize any size from it: `zoo materialize NAME --layers L --hidden H`, or ask "
        '`from_pretrained(NAME, revision="LxH")` of a zoo server.\n'
    )


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
