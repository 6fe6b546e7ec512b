"""The blob store interface: content-addressed bytes, verified on read.

A blob's name is the sha256 hex of its bytes. Writers put the bytes under a temporary
name and rename them into place, so a reader never sees a partial blob and a crash leaves
at most a temporary file that ``zoo fsck --repair`` may remove.
"""

from __future__ import annotations

import errno
import hashlib
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

from zoo.errors import BlobCorruptError, ChangedWhileReadError, InvalidInputError

_DIGEST = re.compile(r"[0-9a-f]{64}")
_BLOB_FOLDER = re.compile(r"[0-9a-f]{2}")
_REGISTRY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

#: How a writer names a blob it is still writing, in the blob's own folder: ``.tmp-``, the
#: digest's first 16 hex digits, ``-`` and a random uuid. Only a name of exactly this form,
#: in the folder its digest belongs to, is ever removed as a killed writer's leftover:
#: a store folder may hold files zoo did not write.
TEMP_PREFIX = ".tmp-"
_TEMP = re.compile(r"\.tmp-(?P<digest>[0-9a-f]{16})-[0-9a-f]{32}")


def temp_name(digest: str) -> str:
    """A fresh temporary name for a blob being written (see :data:`TEMP_PREFIX`)."""
    return f"{TEMP_PREFIX}{digest[:16]}-{uuid.uuid4().hex}"


def is_blob_folder(name: str) -> bool:
    """Whether ``name`` is one of the two-hex-digit folders blobs are kept in."""
    return _BLOB_FOLDER.fullmatch(name) is not None


def is_temp(folder: str, name: str) -> bool:
    """Whether ``folder/name`` is a temporary blob file a writer of zoo's names."""
    m = _TEMP.fullmatch(name)
    return m is not None and len(folder) == 2 and m["digest"].startswith(folder)


def is_blob(folder: str, name: str) -> bool:
    """Whether ``folder/name`` is where a blob is kept (``ab/abcdef...``)."""
    return _DIGEST.fullmatch(name) is not None and len(folder) == 2 and name.startswith(folder)


# A blob that is reused (``keep``) has its modification time refreshed, so that a garbage
# collector whose grace period is longer than a write never sweeps a blob a writer is
# about to point a new row at (git "freshens" reused objects the same way). Where a
# refresh costs a request (S3: a copy onto itself), a blob refreshed this recently is
# left as it is: a grace shorter than this is then safe only while no writer runs.
REMOTE_FRESHEN_AFTER_S = 300.0


@dataclass(frozen=True)
class BlobEntry:
    """One stored blob as a listing sees it: digest, size, modification time (epoch s)."""

    digest: str
    size: int
    mtime: float


@dataclass(frozen=True)
class TempEntry:
    """Something a killed writer left behind: a temporary file or an unfinished upload."""

    name: str
    size: int
    mtime: float


def is_object_store_error(exc: BaseException) -> bool:
    """Whether an object store failed: botocore's errors (no credentials, access denied,
    an endpoint that does not answer) reach zoo through s3fs, raised as they are or as the
    cause of an OSError it translated them to (no such bucket)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if any(c.__module__.startswith("botocore") for c in type(seen).__mro__):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise InvalidInputError(f"{digest!r} is not a sha256 hex digest.")
    return digest


class BlobStore(ABC):
    """Content-addressed blob storage behind one small interface."""

    url: str
    #: Where the store is, as its claims record it (zoo.api.store_claim.Place.store): a
    #: folder's real path, or an object store's URL.
    location: str
    # Each read or write is a network round trip: callers overlap them on threads even
    # for small blobs.
    remote: bool = False
    # How old a reused blob must be before ``keep`` refreshes its time (see above): a
    # local file's refresh is one system call, so every reuse refreshes it.
    freshen_after_s: float = 0.0

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

    @abstractmethod
    def modified(self, digest: str) -> float:
        """Modification time (epoch seconds); raises BlobMissingError when absent."""

    @abstractmethod
    def _touch(self, digest: str) -> None:
        """Set the blob's modification time to now."""

    def stat(self, digest: str) -> tuple[int, float] | None:
        """(size, modification time) of the stored blob, or None when there is none (or
        something other than a file is at its name: nothing zoo wrote, so not a blob)."""
        try:
            return self.size(digest), self.modified(digest)
        except FileNotFoundError:
            return None

    def not_a_file(self, digest: str) -> bool:
        """Whether something other than a file (a folder) is at the blob's name: not a
        blob zoo wrote, and one zoo will not replace."""
        return False

    def entries(self) -> Iterator[BlobEntry]:
        """Every stored blob with its size and modification time."""
        for digest in self.digests():
            try:
                yield BlobEntry(digest, self.size(digest), self.modified(digest))
            except FileNotFoundError:  # removed while we listed
                continue

    def temp_entries(self) -> Iterator[TempEntry]:
        """Leftovers of writers killed mid-write (never visible as blobs)."""
        return iter(())

    def remove_temp(self, name: str) -> None:
        """Remove one leftover listed by :meth:`temp_entries`."""
        raise NotImplementedError(f"{type(self).__name__} leaves no temporary files.")

    def abandon_writes(self) -> int:
        """Remove what this process's writers are writing now and will not finish (the
        process ends under them); returns how many. A store that writes no temporary
        files has none."""
        return 0

    # --- the registries that use this store ---------------------------------------------

    #: Folder of one small marker object per registry that uses the store (blobs live in
    #: two-character folders, so listings of blobs never see it).
    CLAIMS = "registries"

    #: The claim that stands for blobs written before registries recorded their ids: zoo
    #: cannot tell whose they are, so it counts as another registry until a person says.
    UNCLAIMED = "unclaimed"

    #: ``() -> registry id`` of the registry whose blobs this handle writes (set by the
    #: registry): its first write or reuse of a blob records the claim. A look (fsck,
    #: verify, a dry run) claims nothing: a registry pointed at another's store by mistake
    #: must not become one more owner, which would refuse the owner its own gc.
    owner: Callable[[], str] | None = None
    #: ``() -> where the owner's database is`` (``HOST:FILE`` for SQLite, "" otherwise),
    #: written into its claim: a copy of the database carries the same id, and must not
    #: sweep what the original writes (zoo.api.maintenance).
    owner_place: Callable[[], str] | None = None
    #: ``(recorded place) -> bool``, called with the owner's claim before its first write:
    #: whether the place names the owner's database as it no longer is (moved, or written
    #: in an older form), so that the write records it anew. It raises for a place naming
    #: another database with the owner's id (a copy's writes would be swept by the
    #: original as orphans): the claim is read once per handle, not once per blob.
    confirm_owner: Callable[[str], bool] | None = None

    def _claim_for_write(self) -> None:
        if self.owner is None:
            return
        try:
            self.claim(self.owner())
        except OSError as exc:  # a read-only client (no permission, a read-only mount)
            if not isinstance(exc, PermissionError) and exc.errno != errno.EROFS:
                raise  # any other failure is the store's to report

    def others(self, registry_id: str) -> list[str]:
        """The claims of registries other than ``registry_id``, counting blobs that no
        registry claims as :data:`UNCLAIMED` (written before registries recorded their
        ids), without writing anything."""
        claims = self.claims()
        if not claims and next(iter(self.digests()), None) is not None:
            claims = [self.UNCLAIMED]
        return [c for c in claims if c != registry_id]

    def claim(self, registry_id: str) -> None:
        """Record that the registry ``registry_id`` keeps blobs here (once; idempotent),
        with where its database is (:attr:`owner_place`) when the claim says nowhere yet
        or names that database where it no longer is; a claim naming another database
        refuses (:attr:`confirm_owner`)."""
        if registry_id not in self._claim_cache:
            existing = self.claims()
            place = self.owner_place() if self.owner_place is not None else ""
            if registry_id not in existing:
                foreign = None if existing else self._foreign_entry()
                if foreign is not None:
                    raise InvalidInputError(
                        f"The store {self.url} holds {foreign!r}, which zoo did not write; "
                        "give zoo an empty or new folder for its blobs (ZOO_STORE_URL)."
                    )
                if not existing and next(iter(self.digests()), None) is not None:
                    self._write_claim(self.UNCLAIMED)
                self._write_claim(registry_id, place)
            elif place:
                recorded = self._read_claim(registry_id)
                confirm = self.confirm_owner
                if not recorded or (confirm is not None and confirm(recorded)):
                    self._write_claim(registry_id, place)
            self._claim_cache.add(registry_id)

    def check_claim(self, registry_id: str) -> None:
        """Refuse now, writing nothing, what the first write under ``registry_id`` would be
        refused (:attr:`confirm_owner`): before a command's work, not after it."""
        if registry_id not in self._claim_cache and self.confirm_owner is not None:
            recorded = self._read_claim(registry_id)
            if recorded:
                self.confirm_owner(recorded)  # raises for another database's claim

    def _foreign_entry(self) -> str | None:
        """Something in a store no registry has claimed yet that no zoo writes there (a
        store is no place for other files: zoo removes what it takes for its own
        leftovers); None if there is none, or a listing would cost too much to tell."""
        return None

    def claims(self) -> list[str]:
        """Ids of the registries that use this store (and ``UNCLAIMED``, see above)."""
        return sorted(
            c for c in self._list_claims() if c == self.UNCLAIMED or _REGISTRY_ID.fullmatch(c)
        )

    @cached_property
    def _claim_cache(self) -> set[str]:
        return set()

    @abstractmethod
    def _write_claim(self, registry_id: str, text: str = "") -> None: ...

    @abstractmethod
    def _read_claim(self, registry_id: str) -> str | None: ...

    @abstractmethod
    def _list_claims(self) -> list[str]: ...

    @abstractmethod
    def _remove_claim(self, registry_id: str) -> None: ...

    def claim_place(self, registry_id: str) -> str | None:
        """Where the database that claimed the store as ``registry_id`` was when it last
        swept (its SQLite file; "" when it never said); None when it has no claim."""
        return self._read_claim(registry_id)

    def set_claim_place(self, registry_id: str, place: str) -> None:
        self._write_claim(registry_id, place)

    def remove_claim(self, registry_id: str) -> None:
        """Remove a registry's claim (one a person released: zoo.api.store_claim.release)."""
        self._remove_claim(registry_id)
        self._claim_cache.discard(registry_id)

    # --- what zoo did not write ----------------------------------------------------------

    #: Folder beside the blob folders where a file found at a blob's name whose bytes do
    #: not hash to that name goes when a sweep or a repair would remove or replace it: zoo
    #: never wrote such bytes there (a user's file, or damage), so it never deletes them.
    QUARANTINE = "quarantine"

    @property
    def quarantine_url(self) -> str:
        """Where :meth:`quarantine` moves files, as the user names it."""
        return f"{self.url.rstrip('/')}/{self.QUARANTINE}"

    def intact(self, digest: str) -> bool | None:
        """Whether the file at the blob's name hashes to that name, read in pieces (never
        the whole blob in memory); None when no file is there."""
        h = hashlib.sha256()
        try:
            for piece in self._pieces(check_digest(digest)):
                h.update(piece)
        except FileNotFoundError:  # gone, or not a file (BlobNotAFileError): not a blob
            return None
        return h.hexdigest() == digest

    def written_here(self, digest: str) -> bool | None:
        """Whether the file at the blob's name is the blob zoo wrote there, as a sweep asks
        before it deletes one (False: move it aside); None when no file is there. By
        default its bytes are read and hashed (:meth:`intact`); a store that marks what it
        writes answers from that mark without reading the bytes."""
        return self.intact(digest)

    def _pieces(self, digest: str) -> Iterator[bytes]:
        """The stored bytes, a piece at a time, unverified."""
        yield self._read(digest)

    def quarantine(self, digest: str) -> str | None:
        """Move the file at the blob's name into :attr:`QUARANTINE`, under the name
        ``DIGEST.UTCTIME.RANDOM`` (two moves of one name never meet); where it went, or
        None when nothing was there."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        return self._move_aside(digest, f"{digest}.{stamp}.{uuid.uuid4().hex[:8]}")

    @abstractmethod
    def _move_aside(self, digest: str, name: str) -> str | None: ...

    def keep(self, digest: str, size: int | None = None) -> bool:
        """Whether the blob is stored; if it is, make sure a sweep will not take it now.

        Call this instead of :meth:`has` before pointing a new row at an existing blob:
        an old blob gets a fresh modification time, so ``zoo gc`` (which sweeps only
        unreferenced blobs older than its grace period) leaves it alone until the row is
        committed. With ``size`` (the bytes the caller holds), a stored blob of another
        size is damaged (a truncated file no row needed, left for gc): not kept, so the
        caller writes it again, atomically, rather than point a new row at it.
        """
        self._claim_for_write()  # a reused blob is this registry's as much as a new one
        found = self.stat(digest)
        if found is not None and size is not None and found[0] != size:
            # Bytes that are not the blob's (its size says so): set aside, since the write
            # that follows would replace them, and zoo did not write them.
            self.quarantine(digest)
            return False
        if found is None:
            return False
        age = time.time() - found[1]
        if age > self.freshen_after_s:
            try:
                self._touch(digest)
            except (FileNotFoundError, PermissionError):
                # Gone, or a blob this user may not refresh (another user's, read-only):
                # written again, the new file is fresh and the sweep leaves it.
                return False
        return True

    def put_if_absent(
        self,
        digest: str,
        read: Callable[[], bytes | memoryview],
        size: int | None = None,
        *,
        check: bool = False,
    ) -> bool:
        """Keep the blob if it is stored (at ``size`` bytes, when given: see :meth:`keep`),
        else store ``read()``; True when it was written.

        One existence check (one request on S3), and the bytes are read only when needed.
        ``read`` must return the bytes ``digest`` names (the caller hashed them). With
        ``check``, they are hashed again first: bytes read a second time from a file that
        may change meanwhile (an import's source) are never stored under another's name.

        Raises:
            ChangedWhileReadError: with ``check``, ``read()`` is not what ``digest`` names.
        """
        check_digest(digest)
        if self.keep(digest, size):
            return False
        data = read()
        if check and sha256_hex(data) != digest:
            raise self._changed(digest)
        self._write(digest, data)
        return True

    def put_pieces_if_absent(
        self, digest: str, pieces: Callable[[], Iterable[bytes | memoryview]], size: int
    ) -> bool:
        """:meth:`put_if_absent` with ``check``, for bytes read in pieces (each valid until
        the next is asked for): a store that writes files holds one piece at a time, never
        the whole blob. True when it was written.

        Raises:
            ChangedWhileReadError: the pieces are not what ``digest`` names; nothing is
                stored.
        """
        check_digest(digest)
        if self.keep(digest, size):
            return False
        self._write_pieces(digest, pieces())
        return True

    def _write_pieces(self, digest: str, pieces: Iterable[bytes | memoryview]) -> None:
        """Store the pieces, checked to hash to ``digest``; stores that write a file
        override it to write each piece as it comes."""
        data = b"".join(bytes(p) for p in pieces)
        if sha256_hex(data) != digest:
            raise self._changed(digest)
        self._write(digest, data)

    @staticmethod
    def _changed(digest: str) -> ChangedWhileReadError:
        return ChangedWhileReadError(
            f"The bytes read for blob {digest[:12]} hash to something else.", digest=digest
        )

    def put(self, data: bytes | memoryview, digest: str | None = None) -> tuple[str, bool]:
        """Store ``data``; returns ``(digest, written)``, ``written`` False if it was there.

        ``digest`` may be passed when the caller already hashed these exact bytes.
        """
        digest = check_digest(digest) if digest else sha256_hex(data)
        if self.keep(digest, memoryview(data).nbytes):
            return digest, False
        self._write(digest, data)
        return digest, True

    def rewrite(self, digest: str, data: bytes | memoryview) -> None:
        """Replace a missing or damaged blob with ``data`` (checked to hash to ``digest``),
        atomically like every write.

        Raises:
            ChangedWhileReadError: ``data`` is not the blob ``digest`` names.
        """
        check_digest(digest)
        if sha256_hex(data) != digest:
            raise ChangedWhileReadError(
                f"The bytes offered for blob {digest[:12]} hash to something else; a blob is "
                "only ever rewritten with its own bytes.",
                digest=digest,
            )
        self._claim_for_write()
        if self.intact(digest) is False:  # not zoo's bytes: kept, not written over
            self.quarantine(digest)
        self._write(digest, data)

    def get(self, digest: str) -> bytes:
        """The blob's bytes, verified against ``digest``.

        Raises:
            BlobMissingError: the store does not have it.
            BlobCorruptError: its bytes changed since they were written.
        """
        data = self._read(check_digest(digest))
        self._check(digest, data)
        return data

    def read_into(self, digest: str, buffer: memoryview) -> None:
        """Fill ``buffer`` (writable, exactly the blob's size) with its verified bytes.

        Saves the intermediate ``bytes`` object ``get`` builds; stores that can read in
        place override it. On error ``buffer`` holds garbage and must be discarded.

        Raises:
            BlobMissingError: the store does not have it.
            BlobCorruptError: its bytes changed, or its size is not ``buffer``'s.
        """
        data = self.get(digest)
        if len(data) != buffer.nbytes:
            raise self._corrupt(digest, f"{len(data)} bytes where {buffer.nbytes} were expected")
        buffer[:] = data

    def _check(self, digest: str, data: bytes | memoryview) -> None:
        actual = sha256_hex(data)
        if actual != digest:
            raise self._corrupt(digest, f"its bytes hash to {actual[:12]}")

    def _corrupt(self, digest: str, what: str) -> BlobCorruptError:
        return BlobCorruptError(
            f"Blob {digest[:12]} in {self.url} is corrupt ({what}); `reg.verify()` says what "
            "restores it, and `reg.verify(repair=True)` restores it if zoo can produce it again.",
            digest=digest,
        )

    def verify(self, digest: str) -> bool:
        """Whether the stored bytes still match ``digest`` (False if missing)."""
        try:
            self.get(digest)
        except (BlobCorruptError, FileNotFoundError, IsADirectoryError):
            return False
        return True
