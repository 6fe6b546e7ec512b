"""How ``zoo serve`` runs: the options the command line and tests set."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerOptions:
    """How ``zoo serve`` runs.

    Attributes:
        public_read: requests without a token may read (list, show, download, audit).
        max_upload: the largest upload (a checkpoint's files, for import and audit), in
            bytes or as ``"256GB"``; any other request body is bounded far below it
            (:data:`zoo.server.app.JSON_BODY_LIMIT`), or by this where it is less.
        cache: folder for the files served (default ``$ZOO_HOME/serve-cache``).
        cache_limit: the most the cache keeps, in bytes or as ``"200GB"`` (None: no
            limit); the folders used least recently go first.
        workers: threads for long work (extract, materialize, export).
        shutdown_timeout: how long a stopping server (SIGTERM, Ctrl-C) lets the requests
            in flight finish before it cuts them, in seconds or as ``"20s"``.
        link_key_file: a file holding the key download links are signed with (at least
            32 bytes), for servers that must take each other's links (replicas behind one
            load balancer) or keep them across a restart; None: a key drawn at start.
        root_path: the path a reverse proxy serves the server under (``/zoo`` for
            ``https://host/zoo/``), whether the proxy strips it or passes it on
            (:mod:`zoo.server.prefix`); ``""``: the server is the host's root.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    public_read: bool = False
    max_upload: str | int = "256GB"
    cache: str | None = None
    cache_limit: str | int | None = None
    workers: int = 4
    shutdown_timeout: str | float = 20
    link_key_file: str | None = None
    root_path: str = ""
