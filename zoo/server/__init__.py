"""``zoo serve``: the registry over HTTP, one more front end over :mod:`zoo.api`.

The app (:func:`create_app`) answers a REST API (``/api/...``, schema at
``/openapi.json``), Hugging Face-compatible downloads (``/{name}/resolve/{revision}/...``
and ``/api/models/...``), and a web page (``/``). It holds the database and store
credentials; clients hold a bearer token (:mod:`zoo.api.tokens`).
"""

from __future__ import annotations

from zoo.errors import InvalidInputError
from zoo.server.options import ServerOptions


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


__all__ = ["ServerOptions", "create_app", "serve"]
