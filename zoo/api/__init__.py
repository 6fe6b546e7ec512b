"""The Python API: everything the CLI does goes through :class:`Registry`.

:class:`Registry` (and with it SQLAlchemy, a third of a second to import) loads on first
use, so a client of a zoo server (``ZOO_ENDPOINT``) never imports the database layer.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from zoo.config import load_settings

if TYPE_CHECKING:
    from zoo.api.registry import Registry


def connect(
    *,
    home: str | os.PathLike[str] | None = None,
    db_url: str | None = None,
    store_url: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> Registry:
    """Open the registry configured by arguments, environment or config file.

    With ``endpoint`` (or ``ZOO_ENDPOINT`` in the environment, when no database or home is
    given), the registry is a zoo server's: a :class:`zoo.client.RemoteRegistry` with the
    same methods, authenticated by ``token`` (or ``ZOO_TOKEN``).

    Example:
        >>> import zoo
        >>> reg = zoo.connect(home="/tmp/zoo-doc")   # doctest: +SKIP
    """
    if endpoint is None and home is None and db_url is None and store_url is None:
        from zoo.client import endpoint_from_env

        endpoint, env_token = endpoint_from_env() or (None, None)
        token = token or env_token
    if endpoint:
        from zoo.client import RemoteRegistry

        return RemoteRegistry(endpoint, token)  # type: ignore[return-value]
    from zoo.api.registry import Registry

    return Registry(load_settings(home=home, db_url=db_url, store_url=store_url))


def __getattr__(name: str) -> Any:
    if name == "Registry":
        from zoo.api.registry import Registry

        return Registry
    raise AttributeError(f"module 'zoo.api' has no attribute {name!r}")


__all__ = ["Registry", "connect"]
