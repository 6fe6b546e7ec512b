"""Content-addressed blob stores; :func:`open_store` picks one from a URL or folder."""

from __future__ import annotations

from zoo.store.base import BlobEntry, BlobStore, TempEntry, sha256_hex


def open_store(url: str) -> BlobStore:
    """Open the store at ``url``.

    Args:
        url: a folder path, a ``file://`` URL, ``s3://BUCKET/PREFIX`` (S3 or an
            S3-compatible server named by ``ZOO_S3_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL``),
            or another object store fsspec opens with credentials from the environment
            (``gs://``, ``az://``; see :data:`zoo.store.fsspec_store.OBJECT_STORES`).

    Example:
        >>> open_store("/tmp/zoo-blobs").url
        '/tmp/zoo-blobs'
    """
    from zoo.store.local import LocalStore

    if url.startswith("file://"):
        return LocalStore(url[len("file://") :])
    if "://" in url:
        from zoo.store.fsspec_store import FsspecStore

        return FsspecStore(url)
    return LocalStore(url)


__all__ = ["BlobEntry", "BlobStore", "TempEntry", "open_store", "sha256_hex"]
