"""Blob store on any fsspec filesystem, above all S3-compatible object storage.

``s3://bucket/prefix`` keeps blobs at ``prefix/ab/abcdef...``. An S3 PUT is atomic (an
object never appears partially, and a multipart upload appears only when completed), so
blobs are written in place, a large one in parts as it is read; a killed multipart
upload leaves an unfinished upload that ``zoo fsck --repair`` aborts. On other fsspec
back ends a blob is written under a temporary name and moved into place.

The S3 endpoint of a compatible server (MinIO, Ceph, moto...) comes from
``ZOO_S3_ENDPOINT_URL`` or the standard ``AWS_ENDPOINT_URL``; credentials come from the
standard AWS environment variables and files, read by botocore, never from the URL and
never printed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from zoo.config import is_s3_url, redact_url, s3_endpoint
from zoo.errors import BlobMissingError, InvalidInputError, StoreUnavailableError
from zoo.store.base import (
    REMOTE_FRESHEN_AFTER_S,
    BlobEntry,
    BlobStore,
    TempEntry,
    check_digest,
    is_blob,
    is_blob_folder,
    is_temp,
    temp_name,
)


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return 0.0


#: Seconds an S3 request may wait to connect, and between bytes of an answer (botocore's
#: default read timeout).
S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 60


#: An S3 blob of more than one part goes up as a multipart upload of parts this size (S3
#: takes parts of 5 MiB and more, at most 10,000 of them), a few parts at a time: a writer
#: holds those, never the whole blob (a 2 GB embedding is one blob).
S3_PART_SIZE = 16 << 20
S3_PARTS_IN_FLIGHT = 4
S3_MAX_PARTS = 10_000

#: Metadata zoo puts on each S3 object it writes at a blob's name, its value that name:
#: written with the bytes (a PUT, or the multipart upload completed only once its bytes
#: hash to the name), and gone with them when anything else is put at that key. A sweep
#: reads it with one HEAD instead of downloading the object to hash it (measured: gc of
#: 20 orphans of 200 MB downloaded 4 GB): benchmarks/results/gc-amd-epyc-2c.md.
WROTE = "zoo-sha256"


#: The fsspec protocols a store may use: object stores that read their credentials from the
#: environment, and memory (a test's; a registry refuses it, see zoo.api.registry). Others
#: (ftp, http, ssh...) need options a URL does not carry, or are no place to keep blobs.
OBJECT_STORES = ("s3", "gs", "az", "abfs", "s3a", "gcs", "abfss", "file", "local", "memory")


def _is_http_url(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- a port that is not a number fails here
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _address_alone(url: str) -> str | None:
    """An endpoint URL's scheme, host and port when it carries more (a user part, a query
    or a fragment: botocore sends none of them as meant, and a user and password there
    fail every request in aiohttp's words); None when it is the address alone."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc and not (parts.query or parts.fragment or "?" in url):
        return None
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


class FsspecStore(BlobStore):
    """Content-addressed blobs under ``url`` on an fsspec filesystem."""

    def __init__(self, url: str, *, fs=None) -> None:
        import fsspec

        protocol, _, rest = url.partition("://")
        protocol = protocol.lower()  # URL schemes are case-insensitive; fsspec's are not
        url = f"{protocol}://{rest}"
        self.url = redact_url(url)
        self.protocol = protocol
        self.remote = protocol not in ("file", "local", "memory")
        if "@" in rest.split("/", 1)[0]:
            raise InvalidInputError(
                f"Store URL {self.url!r} carries credentials; put them in the standard "
                "AWS environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) instead."
            )
        self.s3 = is_s3_url(url)
        if self.s3:
            self.freshen_after_s = REMOTE_FRESHEN_AFTER_S
        if fs is not None:
            self.fs = fs
        elif self.s3:
            try:
                import s3fs
            except ModuleNotFoundError as exc:
                raise InvalidInputError(
                    f"Store URL {self.url!r} needs s3fs: pip install 'zoo[s3]'."
                ) from exc
            endpoint = s3_endpoint()
            if endpoint is not None and not _is_http_url(endpoint):
                raise InvalidInputError(
                    f"The S3 endpoint {redact_url(endpoint)!r} is not an http:// or https:// "
                    "URL (ZOO_S3_ENDPOINT_URL, e.g. http://127.0.0.1:9000)."
                )
            address = _address_alone(endpoint) if endpoint is not None else None
            if address is not None:  # the rest may be a secret: not shown
                raise InvalidInputError(
                    f"The S3 endpoint of {address} carries a user name, a query or a "
                    "fragment; give the server's address alone (ZOO_S3_ENDPOINT_URL) and the "
                    "credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
                )
            # No listings cache: another process may add or remove a blob at any time.
            self.fs = s3fs.S3FileSystem(
                client_kwargs={"endpoint_url": endpoint} if endpoint else {},
                # A server that accepts and never answers must end in an error, not a hang:
                # measured, a listing against one fails after 185 s with these settings and
                # had not failed after 400 s with the libraries' defaults.
                config_kwargs={
                    "connect_timeout": S3_CONNECT_TIMEOUT_S,
                    "read_timeout": S3_READ_TIMEOUT_S,
                    "retries": {"max_attempts": 2, "mode": "standard"},
                },
                use_listings_cache=False,
                skip_instance_cache=True,
            )
            self.fs.retries = 1  # botocore retries; s3fs's own loop would multiply them (5x)
        else:
            if protocol not in OBJECT_STORES:
                raise InvalidInputError(
                    f"Store URL {self.url!r}: zoo keeps blobs in a folder or an object store "
                    f"({', '.join(f'{p}://' for p in OBJECT_STORES[:4])}...), not {protocol}://."
                )
            try:
                self.fs = fsspec.filesystem(protocol)
            except (ImportError, ValueError) as exc:
                raise InvalidInputError(
                    f"Store URL {self.url!r}: fsspec cannot open {protocol!r} ({exc})."
                ) from exc
        self.root = self.fs._strip_protocol(url).rstrip("/")
        if self.s3 and not self.root:
            raise InvalidInputError(
                f"Store URL {self.url!r} names no bucket; use s3://BUCKET/PREFIX."
            )

    @property
    def location(self) -> str:
        return f"{self.protocol}://{self.root}"

    def _path(self, digest: str) -> str:
        return f"{self.root}/{digest[:2]}/{digest}"

    def _missing(self, digest: str) -> BlobMissingError:
        return BlobMissingError(
            f"Blob {digest[:12]} is missing from {self.url}; `reg.verify()` says what "
            "restores it, and `reg.verify(repair=True)` restores it if zoo can produce it again.",
            digest=digest,
        )

    def _info(self, digest: str) -> dict[str, Any]:
        try:
            return self.fs.info(self._path(digest))
        except FileNotFoundError:
            raise self._missing(digest) from None

    def has(self, digest: str) -> bool:
        try:
            self.fs.info(self._path(digest))
        except FileNotFoundError:
            return False
        return True

    def _write(self, digest: str, data: bytes | memoryview) -> None:
        final = self._path(digest)
        if self.s3:
            self._upload(digest, [data], memoryview(data).nbytes, check=False)
            return
        temp = f"{self.root}/{digest[:2]}/{temp_name(digest)}"
        self.fs.makedirs(f"{self.root}/{digest[:2]}", exist_ok=True)
        try:
            self.fs.pipe_file(temp, bytes(data))
            self.fs.mv(temp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                if self.fs.exists(temp):
                    self.fs.rm_file(temp)

    def _write_pieces(self, digest: str, pieces: Iterable[bytes | memoryview]) -> None:
        if not self.s3:
            super()._write_pieces(digest, pieces)
            return
        self._upload(digest, pieces, None, check=True)

    def _upload(
        self,
        digest: str,
        pieces: Iterable[bytes | memoryview],
        size: int | None,
        *,
        check: bool,
    ) -> None:
        """Store the pieces on S3 as one PUT, or as a multipart upload completed only once
        every byte is sent (and, with ``check``, hashes to ``digest``): atomic, never
        partial, and holding a few parts in memory, not the blob. A failed or refused
        upload is aborted; one whose writer is killed is a leftover ``zoo fsck`` lists."""
        bucket, key, _ = self.fs.split_path(self._path(digest))
        part_size = max(S3_PART_SIZE, -(-(size or 0) // S3_MAX_PARTS))
        hasher = hashlib.sha256() if check else None
        buffer = bytearray()
        upload_id: str | None = None
        sent: list[Future] = []
        pool: ThreadPoolExecutor | None = None

        def send(part: bytes) -> None:
            nonlocal upload_id, pool
            if upload_id is None:
                upload_id = self.fs.call_s3(
                    "create_multipart_upload", Bucket=bucket, Key=key, Metadata={WROTE: digest}
                )["UploadId"]
                pool = ThreadPoolExecutor(S3_PARTS_IN_FLIGHT, thread_name_prefix="zoo-s3-part")
            if len(sent) >= S3_PARTS_IN_FLIGHT:
                sent[-S3_PARTS_IN_FLIGHT].result()  # bounds the parts held in memory
            sent.append(
                pool.submit(
                    self.fs.call_s3,
                    "upload_part",
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=len(sent) + 1,
                    Body=part,
                )
            )

        try:
            for piece in pieces:
                view = memoryview(piece).cast("B")
                if hasher is not None:
                    hasher.update(view)
                while view.nbytes:
                    take = min(view.nbytes, part_size - len(buffer))
                    buffer += view[:take]
                    view = view[take:]
                    if len(buffer) == part_size:
                        send(bytes(buffer))
                        buffer.clear()
            if hasher is not None and hasher.hexdigest() != digest:
                raise self._changed(digest)
            if upload_id is None:
                self.fs.call_s3(
                    "put_object",
                    Bucket=bucket,
                    Key=key,
                    Body=bytes(buffer),
                    Metadata={WROTE: digest},
                )
                return
            if buffer:
                send(bytes(buffer))
            parts = [{"PartNumber": n, "ETag": f.result()["ETag"]} for n, f in enumerate(sent, 1)]
            self.fs.call_s3(
                "complete_multipart_upload",
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            upload_id = None
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if upload_id is not None:
                with contextlib.suppress(Exception):
                    self.fs.call_s3(
                        "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id
                    )

    def _read(self, digest: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(digest))
        except FileNotFoundError:
            raise self._missing(digest) from None

    def read_into(self, digest: str, buffer: memoryview) -> None:
        if not self.s3:
            super().read_into(digest, buffer)
            return
        # Ranged GETs a few parts at a time, each copied into its place in the caller's
        # memory: never the whole blob as one more ``bytes`` object (and the copies of it
        # a single GET's answer is assembled from).
        view = buffer.cast("B")
        size = self.size(check_digest(digest))
        if size != view.nbytes:
            raise self._corrupt(digest, f"{size} bytes where {view.nbytes} were expected")
        path = self._path(digest)

        def fetch(start: int) -> None:
            end = min(start + S3_PART_SIZE, size)
            try:
                data = self.fs.cat_file(path, start=start, end=end)
            except FileNotFoundError:
                raise self._missing(digest) from None
            if len(data) != end - start:  # replaced by a shorter object meanwhile
                raise self._corrupt(digest, f"{len(data)} bytes at {start} of {size}")
            view[start:end] = data

        starts = range(0, size, S3_PART_SIZE)
        if len(starts) <= 1:
            for start in starts:
                fetch(start)
        else:
            with ThreadPoolExecutor(S3_PARTS_IN_FLIGHT, thread_name_prefix="zoo-s3-part") as pool:
                for _ in pool.map(fetch, starts):
                    pass
        self._check(digest, view)

    def size(self, digest: str) -> int:
        return int(self._info(digest)["size"])

    def stat(self, digest: str) -> tuple[int, float] | None:
        try:  # one request for both (a HEAD on S3)
            info = self.fs.info(self._path(digest))
        except FileNotFoundError:
            return None
        if info.get("type", "file") != "file":
            return None
        return int(info["size"]), self._mtime(info)

    def modified(self, digest: str) -> float:
        return self._mtime(self._info(digest))

    @staticmethod
    def _mtime(info: dict[str, Any]) -> float:
        for key in ("LastModified", "mtime", "last_modified", "created"):
            if info.get(key) is not None:
                return _epoch(info[key])
        return 0.0

    def _touch(self, digest: str) -> None:
        path = self._path(digest)
        if self.s3:
            # A copy onto itself with new metadata is how S3 refreshes LastModified; it
            # happens inside the server, no bytes travel. The new metadata keeps zoo's
            # mark only where the object carried it, and the copy happens only if the
            # object is still the one the HEAD saw: never a mark on someone else's bytes.
            bucket, key, _ = self.fs.split_path(path)
            head = self._head(digest)
            if head is None:
                raise self._missing(digest)
            kept = {"zoo-kept": "1"}
            if self._marked(digest, head):
                kept[WROTE] = digest
            try:
                self.fs.call_s3(
                    "copy_object",
                    Bucket=bucket,
                    Key=key,
                    CopySource={"Bucket": bucket, "Key": key},
                    CopySourceIfMatch=head["ETag"],
                    MetadataDirective="REPLACE",
                    Metadata=kept,
                )
            except FileNotFoundError:
                raise self._missing(digest) from None
            except OSError:
                # Refused (a >5 GB object, a bucket policy): the blob is there, which is
                # what the writer needs; only gc's freshness hint is lost, and the grace
                # period still covers any writer faster than it.
                pass
            return
        try:
            self.fs.touch(path, truncate=False)
        except FileNotFoundError:
            raise self._missing(digest) from None
        except (NotImplementedError, ValueError, OSError):
            # No way to set the time in place: write the same bytes again (temp, move).
            self._write(digest, self._read(digest))

    def _write_claim(self, registry_id: str, text: str = "") -> None:
        folder = f"{self.root}/{self.CLAIMS}"
        if not self.s3:
            self.fs.makedirs(folder, exist_ok=True)
        self.fs.pipe_file(f"{folder}/{registry_id}", text.encode())

    def _read_claim(self, registry_id: str) -> str | None:
        try:
            data = self.fs.cat_file(f"{self.root}/{self.CLAIMS}/{registry_id}")
            return data.decode("utf-8", "replace")  # not UTF-8: a claim zoo cannot read
        except FileNotFoundError:
            return None

    def _foreign_entry(self) -> str | None:
        # One listing of the store's top level (on S3 a delimited listing: the blob
        # folders and what else is there, not every blob).
        self.fs.invalidate_cache(self.root)
        try:
            entries = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return None
        for path in sorted(entries):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if not (is_blob_folder(name) or name in (self.CLAIMS, self.QUARANTINE)):
                return name
        return None

    def _check_bucket(self) -> None:
        """An S3 store's bucket exists: a listing of a missing one is empty, which a look
        (fsck, verify) would report as a store holding nothing."""
        if not self.s3:
            return
        bucket = self.root.split("/", 1)[0]
        self.fs.invalidate_cache(bucket)
        if not self.fs.exists(bucket):
            raise StoreUnavailableError(
                f"The object store's bucket {bucket!r} ({self.url}) does not exist, or these "
                "credentials cannot see it; create it, or fix ZOO_STORE_URL."
            )

    def _remove_claim(self, registry_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(f"{self.root}/{self.CLAIMS}/{registry_id}")

    def _list_claims(self) -> list[str]:
        folder = f"{self.root}/{self.CLAIMS}"
        self.fs.invalidate_cache(folder)  # another registry may have written one since
        try:
            return [p.rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False)]
        except FileNotFoundError:
            return []

    def _pieces(self, digest: str) -> Iterator[bytes]:
        try:
            with self.fs.open(self._path(digest), "rb", block_size=S3_PART_SIZE) as f:
                while piece := f.read(S3_PART_SIZE):
                    yield piece
        except FileNotFoundError:
            raise self._missing(digest) from None

    def _head(self, digest: str) -> dict[str, Any] | None:
        """The S3 object's HEAD (its ETag and metadata); None when none is there."""
        bucket, key, _ = self.fs.split_path(self._path(digest))
        try:
            return self.fs.call_s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None

    @staticmethod
    def _marked(digest: str, head: dict[str, Any]) -> bool:
        return (head.get("Metadata") or {}).get(WROTE) == digest

    def written_here(self, digest: str) -> bool | None:
        if self.s3:
            head = self._head(check_digest(digest))
            if head is None:
                return None
            if self._marked(digest, head):
                return True
            # No mark: written before zoo marked its objects, or put there by someone
            # else; its bytes tell.
        return self.intact(digest)

    def _move_aside(self, digest: str, name: str) -> str | None:
        source = self._path(digest)
        target = f"{self.root}/{self.QUARANTINE}/{name}"
        try:
            if self.s3:  # a copy inside the server, then the delete: no bytes travel
                bucket, key, _ = self.fs.split_path(source)
                self.fs.call_s3(
                    "copy_object",
                    Bucket=bucket,
                    Key=self.fs.split_path(target)[1],
                    CopySource={"Bucket": bucket, "Key": key},
                )
                self.fs.rm_file(source)
            else:
                self.fs.makedirs(f"{self.root}/{self.QUARANTINE}", exist_ok=True)
                self.fs.mv(source, target)
        except FileNotFoundError:
            return None
        return f"{self.protocol}://{target}"

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(digest))

    def _listing(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(folder, file name, info) of every file under ``ROOT/xx/``."""
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            found = {}
        if not found:  # a new prefix, or a bucket that is not there
            self._check_bucket()
            return
        start = len(self.root) + 1
        for path, info in sorted(found.items()):
            folder, _, name = path[start:].rpartition("/")
            if path.startswith(self.root + "/") and len(folder) == 2:
                yield folder, name, info

    def digests(self) -> Iterator[str]:
        for folder, name, _ in self._listing():
            if is_blob(folder, name):
                yield name

    def entries(self) -> Iterator[BlobEntry]:
        for folder, name, info in self._listing():
            if is_blob(folder, name):
                yield BlobEntry(name, int(info.get("size") or 0), self._mtime(info))

    def temp_entries(self) -> Iterator[TempEntry]:
        for folder, name, info in self._listing():
            if is_temp(folder, name):
                yield TempEntry(f"{folder}/{name}", int(info.get("size") or 0), self._mtime(info))
        if self.s3:
            for upload in self._multipart_uploads():
                if not self._blob_key(upload["Key"]):
                    continue  # another writer's upload under this prefix, not a blob's
                yield TempEntry(
                    f"upload:{upload['Key']}:{upload['UploadId']}",
                    0,
                    _epoch(upload.get("Initiated")),
                )

    def _blob_key(self, key: str) -> bool:
        """Whether the object key ``key`` (bucket excluded) is a blob's place here."""
        prefix = self.root.partition("/")[2]
        rest = key[len(prefix) + 1 :] if prefix else key
        if prefix and not key.startswith(prefix + "/"):
            return False
        folder, _, name = rest.partition("/")
        return is_blob(folder, name)

    def _multipart_uploads(self) -> list[dict[str, Any]]:
        bucket, _, prefix = self.root.partition("/")
        uploads: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        while True:
            page = self.fs.call_s3("list_multipart_uploads", **kwargs)
            uploads += page.get("Uploads", [])
            if not page.get("IsTruncated"):
                return uploads
            kwargs.update(
                KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"]
            )

    def remove_temp(self, name: str) -> None:
        if name.startswith("upload:") and self.s3:
            _, key, upload_id = name.split(":", 2)
            if not self._blob_key(key):
                raise ValueError(f"{key!r} is not where {self.url} keeps a blob")
            bucket = self.root.partition("/")[0]
            with contextlib.suppress(FileNotFoundError):
                self.fs.call_s3(
                    "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id
                )
            return
        sub, _, base = name.partition("/")
        if not is_temp(sub, base):
            raise ValueError(f"{name!r} is not a temporary file of {self.url}")
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(f"{self.root}/{name}")
