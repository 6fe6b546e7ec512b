"""Content-addressed blob stores; :func:`open_store` picks one from a URL or folder."""

from __future__ import annotations

from zoo.store.base import BlobStore, sha256_hex


def open_store(url: str) -> BlobStore:
    """Open the store at ``url``: a folder path or ``file://`` URL."""
    from zoo.store.local import LocalStore

    if url.startswith("file://"):
        return LocalStore(url[len("file://"):])
    if "://" in url:
        from zoo.errors import InvalidInputError

        raise InvalidInputError(
            f"Store URL {url!r} has a scheme zoo does not support yet; use a folder path."
        )
    return LocalStore(url)


__all__ = ["BlobStore", "open_store", "sha256_hex"]
