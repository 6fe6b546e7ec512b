"""``zoo serve``: the registry over HTTP, one more front end over :mod:`zoo.api`.

The app (:func:`create_app`) answers a REST API (``/api/...``, schema at
``/openapi.json``), Hugging Face-compatible downloads (``/{name}/resolve/{revision}/...``
and ``/api/models/...``), and a web page (``/``). It holds the database and store
credentials; clients hold a bearer token (:mod:`zoo.api.tokens`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from zoo.errors import InvalidInputError

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_size(text: str | int) -> int:
    """Bytes in ``"500MB"``, ``"8GB"``, ``"64KiB"`` or a plain number."""
    if isinstance(text, int):
        return text
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise InvalidInputError(f"{text!r} is not a size; write e.g. 500MB or 8GB.")
    unit = (m.group(2) or "").upper()
    base = 1024 if "I" in unit else 1000
    power = "KMGT".find(unit[:1]) + 1 if unit[:1] in "KMGT" and unit[:1] else 0
    return int(float(m.group(1)) * base**power)


@dataclass(frozen=True)
class ServerOptions:
    """How ``zoo serve`` runs.

    Attributes:
        public_read: requests without a token may read (list, show, download, audit).
        max_upload: the largest request body, in bytes or as ``"8GB"``.
        cache: folder for the files served (default ``$ZOO_HOME/serve-cache``).
        workers: threads for long work (extract, materialize, export).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    public_read: bool = False
    max_upload: str | int = "8GB"
    cache: str | None = None
    workers: int = 4


def create_app(registry=None, options: ServerOptions | None = None):
    """The ASGI app over ``registry`` (default: the configured one)."""
    try:
        from zoo.server.app import create_app as make
    except ImportError as exc:  # the server's packages are an extra
        raise InvalidInputError(f"zoo serve needs {exc.name}: pip install 'zoo[serve]'.") from None
    return make(registry, options or ServerOptions())


def serve(registry, options: ServerOptions) -> None:
    """Run the app on uvicorn until interrupted."""
    import uvicorn

    app = create_app(registry, options)
    uvicorn.run(
        app,
        host=options.host,
        port=options.port,
        log_level="info",
        access_log=False,
        # Longer than clients keep idle pooled connections (httpx, requests: 5 s and up),
        # so the server never closes one just as a client reuses it.
        timeout_keep_alive=75,
    )


__all__ = ["ServerOptions", "create_app", "parse_size", "serve"]
