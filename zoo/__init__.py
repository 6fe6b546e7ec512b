"""zoo: a model-zoo registry and lineage database.

Imports are lazy so that ``import zoo`` and ``zoo --help`` stay fast and torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {"connect": "zoo.api", "Registry": "zoo.api", "load_settings": "zoo.config"}

if TYPE_CHECKING:
    from zoo.api import Registry, connect
    from zoo.config import load_settings


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too: dir() and tab completion find zoo.connect and zoo.Registry.
    return sorted({*globals(), *_LAZY})


__all__ = ["Registry", "__version__", "connect", "load_settings"]
