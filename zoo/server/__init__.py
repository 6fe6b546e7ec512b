"""``zoo serve``: the registry over HTTP, one more front end over :mod:`zoo.api`.

The app (:func:`create_app`) answers a REST API (``/api/...``, schema at
``/openapi.json``), Hugging Face-compatible downloads (``/{name}/resolve/{revision}/...``
and ``/api/models/...``), and a web page (``/``). It holds the database and store
credentials; clients hold a bearer token (:mod:`zoo.api.tokens`).
"""

from __future__ import annotations

import logging
import time

from zoo.errors import ConflictError, InvalidInputError, StorageError
from zoo.server.options import ServerOptions


def create_app(registry=None, options: ServerOptions | None = None):
    """The ASGI app over ``registry`` (default: the configured one)."""
    try:
        from zoo.server.app import create_app as make
    except ImportError as exc:  # the server's packages are an extra
        raise InvalidInputError(f"zoo serve needs {exc.name}: pip install 'zoo[serve]'.") from None
    return make(registry, options or ServerOptions())


def serve(registry, options: ServerOptions) -> None:
    """Run the app on uvicorn until interrupted. What would stop it at start (a database
    to upgrade or that refuses the schema, a port in use, a host that is not this
    machine's) is found first and said in zoo's one line and exit code; uvicorn would log
    a traceback and exit 3, zoo's code for "not found"."""
    import uvicorn

    from zoo.api.arguments import parse_duration

    shutdown_timeout = parse_duration(options.shutdown_timeout)
    app = create_app(registry, options)
    app.state.server.reg.ensure_schema()
    sock = _listening_socket(options.host, options.port)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=sock.getsockname()[1],
        log_level="info",
        log_config=_uvicorn_logging(),
        access_log=False,
        # Longer than clients keep idle pooled connections (httpx, requests: 5 s and up),
        # so the server never closes one just as a client reuses it.
        timeout_keep_alive=75,
        # A client stalled mid-upload, or one that stops reading a download, would
        # otherwise keep a stopping server running for good.
        timeout_graceful_shutdown=shutdown_timeout,
    )
    _log_to_stderr()
    # uvicorn names the address only for a socket it bound itself.
    where = f"[{options.host}]" if ":" in options.host else options.host
    root = app.state.server.root_path
    logging.getLogger("zoo.server").info(
        "zoo serving on http://%s:%d%s (Ctrl-C stops it)",
        where,
        config.port,
        f", under {root} behind its proxy" if root else "",
    )
    uvicorn.Server(config).run(sockets=[sock])


# Every line of the log with its time, as zoo's own: an operator reads when the server
# started and stopped (a restart, a crash loop) beside what it answered.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _UtcFormatter(logging.Formatter):
    """Times in UTC with their offset, as every time zoo writes (a token's end, a
    record's): in the machine's zone, without one, a server run with TZ=Asia/Kolkata
    logged a refusal at 07:32 of a token that "expired at 02:02+00:00"."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03d+00:00"


def _uvicorn_logging() -> dict:
    """uvicorn's own logging settings, its start and stop lines given their time."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    # Named uvicorn, not by its logger "uvicorn.error", which says its start and stop too.
    config["formatters"]["default"] = {
        "()": _UtcFormatter,
        "fmt": LOG_FORMAT.replace("%(name)s", "uvicorn"),
    }
    return config


def _log_to_stderr() -> None:
    """zoo's own lines (a line per request, failures, the cache's cleaning) on stderr
    beside uvicorn's, each with its time: uvicorn sets up its own loggers only, so zoo's
    went unprinted below a warning and without a time above."""
    handler = logging.StreamHandler()
    handler.setFormatter(_UtcFormatter(LOG_FORMAT))
    logger = logging.getLogger("zoo.server")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _listening_socket(host: str, port: int):
    """A socket bound to ``host:port`` (asyncio listens on it when it starts serving)."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInputError(f"--host {host!r} is not a name or address: {exc}.") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConflictError(
                f"Port {port} on {host} is in use by another process; choose another with --port."
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise InvalidInputError(
                f"--host {host} is not an address of this machine; give one of its own "
                "(0.0.0.0 for all of them)."
            ) from None
        if exc.errno == errno.EACCES:
            raise StorageError(
                f"Port {port} needs privileges this user does not have (ports below 1024); "
                "choose another with --port, behind your proxy."
            ) from None
        raise
    return sock


__all__ = ["ServerOptions", "create_app", "serve"]
