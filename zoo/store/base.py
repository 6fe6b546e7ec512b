"""The blob store interface: content-addressed bytes, verified on read.

A blob's name is the sha256 hex of its bytes. Writers put the bytes under a temporary
name and rename them into place, so a reader never sees a partial blob and a crash leaves
at most a temporary file that ``zoo fsck --repair`` may remove.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator

from zoo.errors import BlobCorruptError, InvalidInputError

_DIGEST = re.compile(r"[0-9a-f]{64}")


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise InvalidInputError(f"{digest!r} is not a sha256 hex digest.")
    return digest


class BlobStore(ABC):
    """Content-addressed blob storage behind one small interface."""

    url: str

    @abstractmethod
    def has(self, digest: str) -> bool:
        """Whether the blob is stored."""

    @abstractmethod
    def _write(self, digest: str, data: bytes | memoryview) -> None:
        """Store ``data`` under ``digest`` atomically (temp name, then rename)."""

    @abstractmethod
    def _read(self, digest: str) -> bytes:
        """The stored bytes; raises BlobMissingError when absent."""

    @abstractmethod
    def delete(self, digest: str) -> None:
        """Remove a blob if present."""

    @abstractmethod
    def digests(self) -> Iterator[str]:
        """Every stored blob's digest."""

    @abstractmethod
    def size(self, digest: str) -> int:
        """Stored size in bytes; raises BlobMissingError when absent."""

    def put(self, data: bytes | memoryview, digest: str | None = None) -> tuple[str, bool]:
        """Store ``data``; returns ``(digest, written)``, ``written`` False if it was there.

        ``digest`` may be passed when the caller already hashed these exact bytes.
        """
        digest = check_digest(digest) if digest else sha256_hex(data)
        if self.has(digest):
            return digest, False
        self._write(digest, data)
        return digest, True

    def get(self, digest: str) -> bytes:
        """The blob's bytes, verified against ``digest``.

        Raises:
            BlobMissingError: the store does not have it.
            BlobCorruptError: its bytes changed since they were written.
        """
        data = self._read(check_digest(digest))
        actual = sha256_hex(data)
        if actual != digest:
            raise BlobCorruptError(
                f"Blob {digest[:12]} in {self.url} is corrupt (its bytes hash to "
                f"{actual[:12]}); run `zoo verify` to list every damaged blob.",
                digest=digest,
            )
        return data

    def verify(self, digest: str) -> bool:
        """Whether the stored bytes still match ``digest`` (False if missing)."""
        try:
            self.get(digest)
        except (BlobCorruptError, FileNotFoundError):
            return False
        return True
