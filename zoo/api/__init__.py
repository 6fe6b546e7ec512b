"""The Python API: everything the CLI does goes through :class:`Registry`."""

from __future__ import annotations

import os

from zoo.api.registry import Registry
from zoo.config import load_settings


def connect(
    *,
    home: str | os.PathLike[str] | None = None,
    db_url: str | None = None,
    store_url: str | None = None,
) -> Registry:
    """Open the registry configured by arguments, environment or config file.

    Example:
        >>> import zoo
        >>> reg = zoo.connect(home="/tmp/zoo-doc")   # doctest: +SKIP
    """
    return Registry(load_settings(home=home, db_url=db_url, store_url=store_url))


__all__ = ["Registry", "connect"]
