"""Blob store in a local folder: ``ROOT/ab/abcdef...``."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from zoo.errors import BlobMissingError, BlobNotAFileError
from zoo.store.base import (
    TEMP_PREFIX,
    BlobEntry,
    BlobStore,
    TempEntry,
    check_digest,
    is_blob,
    is_blob_folder,
    is_temp,
    temp_name,
)

__all__ = ["TEMP_PREFIX", "LocalStore"]


class LocalStore(BlobStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self.url = str(self.root)
        self._root_text = os.fspath(self.root)
        # The temporary files this process's writers are writing now (abandon_writes).
        self._writing: set[Path] = set()
        self._writing_lock = threading.Lock()

    @property
    def location(self) -> str:
        return str(self.root.resolve())

    def _path(self, digest: str) -> Path:
        return Path(self._file(digest))

    def _file(self, digest: str) -> str:
        # As text: an import of a checkpoint whose blobs are stored already stats and
        # touches each of them, and building a Path costs more than either.
        return os.path.join(self._root_text, digest[:2], digest)

    def has(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def stat(self, digest: str) -> tuple[int, float] | None:
        try:
            st = os.stat(self._file(digest))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (st.st_size, st.st_mtime) if stat.S_ISREG(st.st_mode) else None

    def not_a_file(self, digest: str) -> bool:
        path = self._file(digest)
        try:
            return not stat.S_ISREG(os.stat(path).st_mode)
        except FileNotFoundError:
            return _link_to_nothing(path)
        except OSError:  # a loop of links: there, and not a file
            return True

    def _write(self, digest: str, data: bytes | memoryview) -> None:
        self._write_file(digest, [data], check=False)

    def _write_pieces(self, digest: str, pieces: Iterable[bytes | memoryview]) -> None:
        self._write_file(digest, pieces, check=True)

    def _write_file(
        self, digest: str, pieces: Iterable[bytes | memoryview], *, check: bool
    ) -> None:
        final = self._path(digest)
        if self.not_a_file(digest):  # not zoo's: a blob is a file, so it stays where it is
            raise self._not_a_file(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        # A unique temporary name per writer: two processes storing the same blob each
        # write their own file, and the last rename wins with identical bytes.
        temp = final.parent / temp_name(digest)
        with self._writing_lock:
            self._writing.add(temp)
        try:
            h = hashlib.sha256()
            with open(temp, "wb") as f:
                for piece in pieces:
                    if check:
                        h.update(piece)
                    f.write(piece)
                if check and h.hexdigest() != digest:
                    raise self._changed(digest)  # the temporary file goes below
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            with self._writing_lock:
                self._writing.discard(temp)

    def abandon_writes(self) -> int:
        """Remove the temporary files of the blobs this process is writing now, by their
        names; returns how many. For a process about to end under its writing threads
        (a stopping server's cut work, which would never finish them): a writer whose file
        goes fails, or has just renamed it into place, a whole blob."""
        with self._writing_lock:
            writing = list(self._writing)
        removed = 0
        for temp in writing:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
                removed += 1
        return removed

    def _read(self, digest: str) -> bytes:
        with os.fdopen(self._open(digest), "rb") as f:
            return f.read()

    def _open(self, digest: str) -> int:
        """The blob's file opened for reading, refused unless it is a regular file: a FIFO
        at its name would block the reader for ever (opened without blocking, it is
        refused instead), and a folder or a loop of links holds no blob."""
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        try:
            fd = os.open(self._file(digest), flags | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            if _link_to_nothing(self._file(digest)):
                raise self._not_a_file(digest) from None
            raise self._missing(digest) from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR):
                raise self._not_a_file(digest) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self._not_a_file(digest)
        return fd

    def _not_a_file(self, digest: str) -> BlobNotAFileError:
        from zoo.checkpoint.files import what_is

        what = what_is(self._path(digest)) or "not a regular file"
        return BlobNotAFileError(
            f"Blob {digest[:12]} in {self.url} is {what}, not a file; zoo does not remove "
            f"what it did not write: move {self._path(digest)} away, then "
            "`reg.verify(repair=True)` restores the blob if zoo can produce it again.",
            digest=digest,
        )

    def _pieces(self, digest: str) -> Iterator[bytes]:
        with os.fdopen(self._open(digest), "rb") as f:
            while piece := f.read(8 << 20):
                yield piece

    def _move_aside(self, digest: str, name: str) -> str | None:
        folder = self.root / self.QUARANTINE
        folder.mkdir(exist_ok=True)
        target = folder / name
        try:
            os.rename(self._file(digest), target)  # one file system: the bytes stay put
        except FileNotFoundError:
            return None
        return str(target)

    def read_into(self, digest: str, buffer: memoryview) -> None:
        # Straight from the file into the caller's memory: one copy, no ``bytes`` object.
        digest = check_digest(digest)
        f = os.fdopen(self._open(digest), "rb", buffering=0)
        view = buffer.cast("B")
        with f:
            done = 0
            while done < view.nbytes:
                n = f.readinto(view[done:])
                if not n:
                    break
                done += n
            longer = bool(f.read(1))
        if done != view.nbytes or longer:
            size = self._path(digest).stat().st_size
            raise self._corrupt(digest, f"{size} bytes where {view.nbytes} were expected")
        self._check(digest, view)

    def _missing(self, digest: str) -> BlobMissingError:
        return BlobMissingError(
            f"Blob {digest[:12]} is missing from {self.url}; `reg.verify()` says what "
            "restores it, and `reg.verify(repair=True)` restores it if zoo can produce it again.",
            digest=digest,
        )

    def size(self, digest: str) -> int:
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobMissingError(
                f"Blob {digest[:12]} is missing from {self.url}.", digest=digest
            ) from None

    def modified(self, digest: str) -> float:
        try:
            return self._path(digest).stat().st_mtime
        except FileNotFoundError:
            raise BlobMissingError(
                f"Blob {digest[:12]} is missing from {self.url}.", digest=digest
            ) from None

    def _touch(self, digest: str) -> None:
        # Times left to the system ("now"): that needs write permission only, where
        # explicit times need the file's owner, and a registry a team shares holds blobs
        # another member wrote.
        os.utime(self._file(digest))

    def _write_claim(self, registry_id: str, text: str = "") -> None:
        folder = self.root / self.CLAIMS
        folder.mkdir(parents=True, exist_ok=True)
        claim = folder / registry_id
        if text:  # atomically: other threads and processes claim at the same moment
            temp = folder / f".{registry_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            temp.write_text(text, encoding="utf-8")
            os.replace(temp, claim)
        else:
            claim.touch()

    def _read_claim(self, registry_id: str) -> str | None:
        try:
            # Bytes that are not UTF-8 read as a claim zoo cannot read, not a traceback.
            data = (self.root / self.CLAIMS / registry_id).read_bytes()
            return data.decode("utf-8", "replace")
        except FileNotFoundError:
            return None

    def _remove_claim(self, registry_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / self.CLAIMS / registry_id).unlink()

    def _list_claims(self) -> list[str]:
        folder = self.root / self.CLAIMS
        return [p.name for p in folder.iterdir()] if folder.is_dir() else []

    def _foreign_entry(self) -> str | None:
        if not self.root.is_dir():
            return None
        for entry in sorted(self.root.iterdir()):
            name = entry.name
            if name == "lost+found":  # a store kept at the root of its own file system
                continue
            if not (
                (is_blob_folder(name) or name in (self.CLAIMS, self.QUARANTINE)) and entry.is_dir()
            ):
                return name
        return None

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(digest).unlink()

    def digests(self) -> Iterator[str]:
        for sub in self._folders():
            for f in sorted(sub.iterdir()):
                # A folder under a blob's name is not one zoo wrote: never listed, so
                # never swept.
                if is_blob(sub.name, f.name) and f.is_file():
                    yield f.name

    def _folders(self) -> list[Path]:
        """The two-character folders blobs are kept in."""
        if not self.root.is_dir():
            return []
        return [p for p in sorted(self.root.iterdir()) if is_blob_folder(p.name) and p.is_dir()]

    def entries(self) -> Iterator[BlobEntry]:
        for digest in self.digests():
            found = self.stat(digest)
            if found is not None:
                yield BlobEntry(digest, *found)

    def temp_files(self) -> Iterator[Path]:
        """Temporary files left by writers that were killed mid-write."""
        for sub in self._folders():
            for f in sorted(sub.iterdir()):
                if is_temp(sub.name, f.name) and f.is_file():
                    yield f

    def temp_entries(self) -> Iterator[TempEntry]:
        for path in self.temp_files():
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                yield TempEntry(str(path.relative_to(self.root)), st.st_size, st.st_mtime)

    def remove_temp(self, name: str) -> None:
        path = self.root / name
        if path.parent.parent != self.root or not is_temp(path.parent.name, path.name):
            raise ValueError(f"{name!r} is not a temporary file of {self.url}")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _link_to_nothing(path) -> bool:
    """Whether what is at ``path``, which a look through links did not find, is a link to
    nothing; asked again with ``lstat``, not "is anything there now", since another writer
    may have just renamed the blob into place (it is no link, and no damage)."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False
