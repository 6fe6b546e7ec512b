"""Blob stores: a local folder, S3 through a real local S3 server, any other fsspec URL.

Every store is content-addressed, verifies on read, and never shows a partial blob.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from zoo.config import redact_url
from zoo.errors import (
    BlobCorruptError,
    BlobMissingError,
    ChangedWhileReadError,
    ConflictError,
    InvalidInputError,
)
from zoo.store import base as store_base
from zoo.store import fsspec_store, open_store, sha256_hex
from zoo.store.base import temp_name
from zoo.store.fsspec_store import FsspecStore
from zoo.store.local import TEMP_PREFIX, LocalStore


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3), "memory"])
def store_url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "blobs")
    if request.param == "memory":
        return f"memory://zoo-test-{os.getpid()}-{time.monotonic_ns()}/blobs"
    return request.getfixturevalue("s3_store_url")


def _corrupt(store, digest: str) -> None:
    """Change one byte of a stored blob behind the store's back."""
    data = bytearray(store._read(digest))
    data[len(data) // 2] ^= 0x01
    if isinstance(store, LocalStore):
        store._path(digest).write_bytes(bytes(data))
    else:
        store.fs.pipe_file(store._path(digest), bytes(data))


def test_a_blob_renamed_into_place_between_two_looks_is_no_damage(tmp_path, monkeypatch):
    """Another writer can rename a blob into place between a look through links that
    finds nothing and the look that asks why: what is there then is a regular file, not a
    link to nothing, so neither a write nor a read of it reports a blob that is not a
    file (eight writers importing one checkpoint met it)."""
    from zoo.errors import BlobNotAFileError
    from zoo.store import local

    store = LocalStore(tmp_path / "blobs")
    digest, _ = store.put(b"one blob" * 64)
    path = str(store._file(digest))
    real_stat, real_open = os.stat, os.open

    def not_there_yet(real):
        def look(p, *args, **kwargs):
            if str(p) == path:
                raise FileNotFoundError(2, "No such file or directory", path)
            return real(p, *args, **kwargs)

        return look

    monkeypatch.setattr(local.os, "stat", not_there_yet(real_stat))
    assert not store.not_a_file(digest)
    monkeypatch.setattr(local.os, "stat", real_stat)
    monkeypatch.setattr(local.os, "open", not_there_yet(real_open))
    with pytest.raises(BlobMissingError) as missing:
        store.get(digest)
    assert not isinstance(missing.value, BlobNotAFileError)


def test_put_get_has_delete_digests(store_url):
    store = open_store(store_url)
    a, b = b"alpha" * 100, b"beta" * 50
    da, written = store.put(a)
    assert written and da == sha256_hex(a)
    assert store.put(a) == (da, False)  # the same bytes are stored once
    db, _ = store.put(memoryview(b), sha256_hex(b))
    assert store.has(da) and store.has(db)
    assert store.get(da) == a and store.get(db) == b
    assert store.size(da) == len(a)
    assert abs(store.modified(da) - time.time()) < 60
    assert sorted(store.digests()) == sorted([da, db])
    entries = {e.digest: e for e in store.entries()}
    assert set(entries) == {da, db} and entries[db].size == len(b)
    assert list(store.temp_entries()) == []
    store.delete(da)
    store.delete(da)  # deleting twice is fine
    assert not store.has(da)
    assert list(store.digests()) == [db]
    with pytest.raises(BlobMissingError) as err:
        store.get(da)
    assert isinstance(err.value, FileNotFoundError) and err.value.digest == da
    with pytest.raises(FileNotFoundError):
        store.size(da)
    assert not store.verify(da)


def test_verify_on_read_detects_a_changed_byte(store_url):
    store = open_store(store_url)
    digest, _ = store.put(os.urandom(4096))
    assert store.verify(digest)
    _corrupt(store, digest)
    with pytest.raises(BlobCorruptError, match="corrupt") as err:
        store.get(digest)
    assert err.value.digest == digest
    assert not store.verify(digest)


def test_read_into_fills_the_buffer_and_checks_bytes_and_size(store_url):
    store = open_store(store_url)
    data = os.urandom(3 * 4096 + 7)
    digest, _ = store.put(data)
    buf = bytearray(len(data))
    store.read_into(digest, memoryview(buf))
    assert bytes(buf) == data
    for wrong in (len(data) - 1, len(data) + 1):  # a record whose size is not the blob's
        with pytest.raises(BlobCorruptError, match="bytes where"):
            store.read_into(digest, memoryview(bytearray(wrong)))
    _corrupt(store, digest)
    with pytest.raises(BlobCorruptError, match="hash to") as err:
        store.read_into(digest, memoryview(bytearray(len(data))))
    assert err.value.digest == digest
    store.delete(digest)
    with pytest.raises(BlobMissingError):
        store.read_into(digest, memoryview(bytearray(len(data))))


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        ("float32", ()),  # a scalar parameter
        ("float32", (3, 5)),
        ("bfloat16", (4,)),
        ("float16", (2, 2, 2)),
        ("int64", (7,)),
        ("bool", (6,)),
        ("float32", (0, 4)),
    ],
)
def test_tensors_round_trip_through_the_store(store_url, dtype, shape):
    """What materialize and the registry read back is exactly what was stored."""
    import torch

    from zoo.api import tensors as tio

    gen = torch.Generator().manual_seed(0)
    t = (torch.randn(shape, generator=gen) * 3).to(getattr(torch, dtype))
    store = open_store(store_url)
    recs = tio.store_tensors(store, {"t": t})
    back = tio.load_tensors(store, recs)["t"]
    assert back.dtype == t.dtype and back.shape == t.shape and torch.equal(back, t)
    if back.dtype == torch.bool:
        back.logical_not_()
    else:
        back.add_(1)
    assert torch.equal(tio.load_tensors(store, recs)["t"], t)  # it owns its memory


def test_keep_refreshes_a_reused_blob(store_url, monkeypatch):
    """A folder store refreshes a reused blob's time on every reuse (one system call);
    S3 (a copy onto itself per refresh) only once it is older than a few minutes."""
    store = open_store(store_url)
    digest, _ = store.put(b"reused")
    before = store.modified(digest)
    time.sleep(1.1)  # S3 times have one-second resolution
    assert store.keep(digest)
    if store.freshen_after_s:
        assert store_url.startswith("s3://")
        assert store.freshen_after_s == store_base.REMOTE_FRESHEN_AFTER_S
        assert store.modified(digest) == before  # refreshed minutes ago at most: left
        monkeypatch.setattr(store, "freshen_after_s", -1.0)
        assert store.keep(digest)
    assert store.modified(digest) > before
    assert store.get(digest) == b"reused"
    assert not store.keep("0" * 64)


def test_a_blob_another_user_wrote_is_refreshed_or_written_again_when_reused(tmp_path, monkeypatch):
    """In a registry a team shares, a blob another member wrote is refreshed as utime(2)
    allows a non-owner with write access (to "now", no explicit times); one this user may
    not write at all is not kept, so the caller writes it again, fresh for the sweep."""
    store = LocalStore(tmp_path / "blobs")
    digest, _ = store.put(b"theirs")
    path = tmp_path / "blobs" / digest[:2] / digest
    os.utime(path, (1, 1))
    real_utime = os.utime

    def not_the_owner(target, times=None, **kw):  # utime(2)'s rule for a non-owner
        if times is not None:
            raise PermissionError(1, "Operation not permitted", str(target))
        return real_utime(target, **kw)

    monkeypatch.setattr(os, "utime", not_the_owner)
    assert store.keep(digest) and path.stat().st_mtime > time.time() - 60

    real_utime(path, (1, 1))

    def read_only(target, times=None, **kw):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(os, "utime", read_only)
    assert not store.keep(digest)
    assert store.put_if_absent(digest, lambda: b"theirs")  # written again
    assert path.stat().st_mtime > time.time() - 60 and store.get(digest) == b"theirs"


def test_claims_made_at_once_by_many_threads_all_land(tmp_path):
    """An import stores its blobs on a few threads, each claiming the store at its first
    write: the claim, with where the registry is, is written atomically by every one."""
    from concurrent.futures import ThreadPoolExecutor

    registry_id = "d1683166-b045-4a66-8568-43396c25d5c9"
    for i in range(5):
        store = LocalStore(tmp_path / f"blobs-{i}")
        store.owner_place = lambda: "host:/somewhere/zoo.db"
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(store.claim, [registry_id] * 16))
        assert store.claims() == [registry_id]
        assert store.claim_place(registry_id) == "host:/somewhere/zoo.db"
        claims = tmp_path / f"blobs-{i}" / "registries"
        assert [p.name for p in claims.iterdir()] == [registry_id]  # no temporary left


def test_put_if_absent_reads_only_when_needed(store_url):
    store = open_store(store_url)
    data = b"lazy" * 100
    digest = sha256_hex(data)
    reads = []

    def read():
        reads.append(1)
        return data

    assert store.put_if_absent(digest, read) is True
    assert store.put_if_absent(digest, read) is False
    assert len(reads) == 1 and store.get(digest) == data


def test_pieces_are_stored_checked_and_a_changed_one_leaves_nothing(store_url):
    """An import stores a tensor in pieces of one reused buffer, read again from a file
    that may change: what is stored is every piece in order (hashlib's digest of the
    whole), and pieces that hash to something else store nothing, no temporary file
    either, and raise ChangedWhileReadError."""
    store = open_store(store_url)
    data = bytes(range(256)) * 5000
    digest = hashlib.sha256(data).hexdigest()
    buffer = bytearray(4096)

    def pieces(source: bytes):
        view = memoryview(buffer)
        for start in range(0, len(source), len(buffer)):
            piece = source[start : start + len(buffer)]
            view[: len(piece)] = piece
            yield view[: len(piece)]  # overwritten by the next piece

    changed = data[:-1] + b"x"
    with pytest.raises(ChangedWhileReadError):
        store.put_pieces_if_absent(digest, lambda: pieces(changed), len(data))
    assert not store.has(digest) and list(store.temp_entries()) == []
    assert store.put_pieces_if_absent(digest, lambda: pieces(data), len(data)) is True
    assert store.get(digest) == data
    assert store.put_pieces_if_absent(digest, lambda: pieces(changed), len(data)) is False


def test_bad_digest_is_refused(store_url):
    store = open_store(store_url)
    with pytest.raises(InvalidInputError):
        store.get("../../etc/passwd")
    with pytest.raises(InvalidInputError):
        store.put(b"x", "not-a-digest")


def test_local_write_interrupted_before_rename_leaves_nothing(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "blobs")

    def boom(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        store.put(b"half written")
    monkeypatch.undo()
    assert list(store.digests()) == []
    assert list(store.temp_entries()) == []


def test_fsspec_write_interrupted_before_move_leaves_nothing(monkeypatch):
    store = open_store(f"memory://zoo-test-move-{time.monotonic_ns()}/blobs")
    assert isinstance(store, FsspecStore) and not store.s3

    def boom(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.fs, "mv", boom)
    with pytest.raises(KeyboardInterrupt):
        store.put(b"half written")
    monkeypatch.undo()
    assert list(store.digests()) == []
    assert list(store.temp_entries()) == []


_WRITER = """
import os, sys
from zoo.store import open_store
data = os.urandom(int(sys.argv[2]))
print("ready", flush=True)
while True:
    open_store(sys.argv[1]).put(data)
    data = os.urandom(len(data))
"""


@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_killed_writers_never_leave_a_visible_partial_blob(kind, tmp_path, request):
    """SIGKILL a process writing big blobs, many times: every visible blob verifies."""
    url = str(tmp_path / "blobs") if kind == "local" else request.getfixturevalue("s3_store_url")
    size = 24 << 20 if kind == "local" else 12 << 20
    rng = __import__("random").Random(7)
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, str(size)],
            stdout=subprocess.PIPE,
            env=os.environ.copy(),
        )
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = open_store(url)
    digests = list(store.digests())
    for digest in digests:
        assert store.verify(digest), f"partial or corrupt blob {digest} is visible"
    # What the killed writers left is listed as leftovers and can be removed.
    for temp in store.temp_entries():
        store.remove_temp(temp.name)
    assert list(store.temp_entries()) == []
    assert sorted(store.digests()) == sorted(digests)


def test_local_temp_files_are_listed_and_removed(tmp_path):
    store = LocalStore(tmp_path / "blobs")
    digest, _ = store.put(b"kept")
    leftover = store._path(digest).parent / temp_name(digest)
    leftover.write_bytes(b"partial")
    [temp] = list(store.temp_entries())
    assert temp.size == len(b"partial")
    assert list(store.digests()) == [digest]  # a leftover is never a blob
    with pytest.raises(ValueError):
        store.remove_temp(f"{digest[:2]}/{digest}")  # only temporary files
    store.remove_temp(temp.name)
    assert not leftover.exists() and store.has(digest)


def test_only_files_named_as_zoo_names_them_are_leftovers_or_blobs(tmp_path):
    """A store folder may hold files zoo did not write: a name that only starts like a
    temporary file, one in a folder its digest does not name, one a folder deeper, or a
    digest-named file in the wrong folder is neither listed nor removable."""
    store = LocalStore(tmp_path / "blobs")
    digest, _ = store.put(b"kept")
    folder = store._path(digest).parent
    theirs = [
        folder / ".tmp-draft.txt",
        folder / f"{TEMP_PREFIX}{digest[:16]}-notes",
        tmp_path / "blobs" / "proj" / f".tmp-{digest[:16]}-{'0' * 32}",
        tmp_path / "blobs" / "zz" / temp_name("ab" * 32),
        tmp_path / "blobs" / "zz" / ("ab" * 32),
    ]
    for p in theirs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("precious")
    (folder / ".tmp-dir").mkdir()
    assert list(store.temp_entries()) == [] and list(store.digests()) == [digest]
    for p in theirs:
        with pytest.raises(ValueError):
            store.remove_temp(str(p.relative_to(tmp_path / "blobs")))
    assert all(p.read_text() == "precious" for p in theirs)


def test_a_store_folder_holding_other_files_is_refused_before_anything_is_written(
    run_cli, monkeypatch, tmp_path, tiny_dir
):
    """zoo removes what it takes for its own leftovers from its store: a folder of the
    user's is refused as a new store, and stays exactly as it was."""
    mine = tmp_path / "mine"
    (mine / "proj").mkdir(parents=True)
    (mine / "proj" / ".tmp-draft.txt").write_text("precious")
    before = sorted(str(p) for p in mine.rglob("*"))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_STORE_URL", str(mine))
    code, _, err = run_cli("import", str(tiny_dir("gpt2")))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "holds 'proj', which zoo did not write" in err
    assert sorted(str(p) for p in mine.rglob("*")) == before
    # An empty folder, a new one, and a store on a file system of its own are taken.
    (tmp_path / "empty").mkdir()
    (tmp_path / "disk" / "lost+found").mkdir(parents=True)
    for folder in (tmp_path / "empty", tmp_path / "new", tmp_path / "disk"):
        monkeypatch.setenv("ZOO_HOME", str(tmp_path / f"home-{folder.name}"))
        monkeypatch.setenv("ZOO_STORE_URL", str(folder))
        code, _, err = run_cli("import", str(tiny_dir("gpt2")))
        assert code == 0, err
        assert (folder / "registries").is_dir()


# --- URLs and settings -------------------------------------------------------------------


@pytest.mark.s3
def test_open_store_picks_the_store_by_url(tmp_path, s3_store_url):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    local = open_store(f"file://{tmp_path}/b")
    assert isinstance(local, LocalStore) and str(local.root) == f"{tmp_path}/b"
    s3 = open_store(s3_store_url)
    assert isinstance(s3, FsspecStore) and s3.s3 and s3.url == s3_store_url
    # Only a store across the network has its small reads overlapped on threads.
    assert s3.remote and not local.remote
    assert not open_store(f"memory://zoo-test-{time.monotonic_ns()}/b").remote
    with pytest.raises(InvalidInputError, match="AWS_SECRET_ACCESS_KEY"):
        open_store("s3://AKIAXXXX:topsecret@bucket/prefix")
    with pytest.raises(InvalidInputError):
        open_store("nosuchproto://x/y")


@pytest.mark.s3
def test_a_large_s3_blob_goes_up_in_parts_as_it_is_read(s3_store_url, monkeypatch):
    """An import stores each tensor as one blob, some of hundreds of MB: on S3 it goes up as
    a multipart upload a few parts at a time, the first part sent before the last piece is
    read, so the writer never holds the blob. S3's ETag of a multipart object (the MD5 of
    its parts' MD5s, then ``-`` and their count) names the parts it was made of. Pieces
    that hash to something else complete nothing and leave no unfinished upload."""
    part = 5 << 20  # S3's smallest part
    monkeypatch.setattr(fsspec_store, "S3_PART_SIZE", part)
    monkeypatch.setattr(fsspec_store, "S3_PARTS_IN_FLIGHT", 2)
    store = open_store(s3_store_url)
    data = os.urandom(7 * part + 12345)
    digest = hashlib.sha256(data).hexdigest()
    events: list[str] = []
    in_flight = [0, 0]  # bytes in requests now, most at once
    call_s3 = store.fs.call_s3

    def counting(method, *args, **kwargs):
        body = len(kwargs.get("Body", b""))
        events.append(method)
        in_flight[0] += body
        in_flight[1] = max(in_flight)
        try:
            return call_s3(method, *args, **kwargs)
        finally:
            in_flight[0] -= body

    monkeypatch.setattr(store.fs, "call_s3", counting)

    def pieces(source: bytes):
        buffer = memoryview(bytearray(1 << 20))
        for start in range(0, len(source), buffer.nbytes):
            piece = source[start : start + buffer.nbytes]
            buffer[: len(piece)] = piece
            yield buffer[: len(piece)]
        events.append("last piece read")

    changed = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(ChangedWhileReadError):
        store.put_pieces_if_absent(digest, lambda: pieces(changed), len(data))
    bucket, key, _ = store.fs.split_path(store._path(digest))
    assert not store.has(digest)
    assert not call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")

    events.clear()
    assert store.put_pieces_if_absent(digest, lambda: pieces(data), len(data)) is True
    assert events.index("upload_part") < events.index("last piece read")
    assert in_flight[1] <= 2 * part
    parts = [data[i : i + part] for i in range(0, len(data), part)]
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert call_s3("head_object", Bucket=bucket, Key=key)["ETag"].strip('"') == f"{etag}-8"
    assert store.get(digest) == data
    assert not call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")


@pytest.mark.s3
def test_a_large_s3_blob_is_read_in_ranges_into_the_callers_memory(s3_store_url, monkeypatch):
    """A tensor read from S3 (export, materialize, the server's files) fills the caller's
    buffer a few ranged GETs at a time, never the whole blob as one more bytes object; a
    changed byte, a short or a long object, or a missing one is told as for any store."""
    part = 1 << 20
    store = open_store(s3_store_url)
    data = os.urandom(5 * part + 777)
    digest, _ = store.put(data)
    monkeypatch.setattr(fsspec_store, "S3_PART_SIZE", part)  # reads only: S3 parts are 5 MiB+
    reads: list[int] = []
    cat_file = store.fs.cat_file

    def counting(path, start=None, end=None, **kwargs):
        out = cat_file(path, start=start, end=end, **kwargs)
        reads.append(len(out))
        return out

    monkeypatch.setattr(store.fs, "cat_file", counting)
    buffer = bytearray(len(data))
    store.read_into(digest, memoryview(buffer))
    assert bytes(buffer) == data
    assert len(reads) == 6 and max(reads) == part

    key = store._path(digest)
    for changed in (data[:7] + bytes([data[7] ^ 1]) + data[8:], data[:-1], data + b"x"):
        store.fs.pipe_file(key, changed)
        with pytest.raises(BlobCorruptError):
            store.read_into(digest, memoryview(bytearray(len(data))))
    store.delete(digest)
    with pytest.raises(BlobMissingError):
        store.read_into(digest, memoryview(bytearray(len(data))))


@pytest.mark.s3
def test_s3_endpoint_comes_from_the_environment(s3_store_url, s3_server, monkeypatch):
    monkeypatch.delenv("ZOO_S3_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    digest, _ = open_store(s3_store_url).put(b"via AWS_ENDPOINT_URL")
    monkeypatch.setenv("ZOO_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # ZOO_ wins
    assert open_store(s3_store_url).get(digest) == b"via AWS_ENDPOINT_URL"


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://zoo:hunter2@127.0.0.1:9000",
        "http://:hunter2@127.0.0.1:9000/",
        "http://127.0.0.1:9000/?X-Amz-Signature=hunter2",
        "http://127.0.0.1:9000/#hunter2",
    ],
)
def test_an_s3_endpoint_with_more_than_an_address_is_refused_in_one_line(
    endpoint, run_cli, monkeypatch, tiny_dir
):
    """Credentials come from the AWS environment, never from a URL: an endpoint carrying a
    user and password failed every request in aiohttp's words (exit 11), a query with a
    signature in it was printed back; now each is refused before any request, exit 2,
    saying where the credentials go and showing no secret."""
    pytest.importorskip("s3fs")
    monkeypatch.setenv("ZOO_STORE_URL", "s3://zoo-endpoint-test/zoo")
    monkeypatch.setenv("ZOO_S3_ENDPOINT_URL", endpoint)
    code, out, err = run_cli("import", str(tiny_dir("gpt2")))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "AWS_ACCESS_KEY_ID" in err and "hunter2" not in err, err


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://zoo:hunter2@db/zoo",
        "postgresql+psycopg://:hunter2@db/zoo",  # an empty user name
        "s3://:hunter2@bucket/x",
        "s3://bucket/x?secret_key=hunter2",
    ],
)
def test_urls_are_shown_without_their_secrets(url, run_cli, monkeypatch):
    assert "hunter2" not in redact_url(url) and "***" in redact_url(url)
    if url.startswith("s3://:"):
        monkeypatch.setenv("ZOO_STORE_URL", url)
        code, out, err = run_cli("verify")
        assert code == 2 and "carries credentials" in err and "hunter2" not in out + err


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg:/zoo:hunter2@127.0.0.1/zoo",  # one slash
        "zoo:hunter2@127.0.0.1",  # no scheme
        "postgresql+psycopg://zoo:p@hunter2@127.0.0.1:5432/zoo",  # an unescaped '@'
        "postgresql+psycopg://zoo:hunter2@127.0.0.1:notaport/zoo",
        "mysql://zoo:hunter2@127.0.0.1/zoo",
    ],
)
def test_a_mistyped_database_url_is_refused_without_its_password(
    url, run_cli, monkeypatch, tmp_path
):
    """A typo is when an error shows the URL: it is refused in one line (exit 2), before
    any connection, with the password masked there and in `zoo config show`."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    monkeypatch.setenv("ZOO_DB_URL", url)
    code, out, refusal = run_cli("ls")
    assert code == 2 and out == "" and refusal.count("\n") == 1, refusal
    assert "hunter2" not in refusal and "***" in refusal, refusal
    code, out, err = run_cli("config", "show")
    assert code == 0 and "hunter2" not in out and "***" in out, out + err
    # It says the URL is wrong, in the words the refusal used.
    code, out, _ = run_cli("config", "show", "--json")
    assert json.loads(out)["db_url_error"] == refusal.strip().removeprefix("zoo: error: ")


def test_config_show_lines_up_every_value_however_long_its_key(run_cli, monkeypatch, tmp_path):
    """`s3_endpoint_from` is the longest key; its value starts in the column every other
    value starts in."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    monkeypatch.setenv("ZOO_STORE_URL", "s3://models/zoo")
    monkeypatch.setenv("ZOO_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    code, out, err = run_cli("config", "show")
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.startswith("s3_endpoint_from ") for line in lines), out
    columns = {line.index(line.split(maxsplit=1)[1]) for line in lines}
    assert len(columns) == 1, out


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://zoo@127.0.0.1:1/zoo?password=hunter2",
        "postgresql+psycopg://zoo:hunter2@127.0.0.1:1/zoo?password=hunter2",
        "postgresql+psycopg://zoo@/zoo?host=127.0.0.1&port=1&password=hunter2",
    ],
)
def test_an_unreachable_database_is_named_without_its_password(url, run_cli, monkeypatch):
    """libpq takes the password in the query too: the error naming the database that
    cannot be reached masks it there as `zoo config show` does."""
    pytest.importorskip("psycopg")
    monkeypatch.setenv("ZOO_DB_URL", url)
    for args in (("ls",), ("show", "x"), ("verify",)):
        code, out, err = run_cli(*args)
        assert code == 9 and err.count("\n") == 1 and "Cannot open the database" in err, err
        assert "hunter2" not in out + err and "password=***" in err, err


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "postgresql+pg8000://zoo:hunter2@db.example/zoo"]
)
def test_config_show_flags_every_database_url_the_commands_refuse(url, run_cli, monkeypatch):
    """No file (in-memory), a driver not installed: each command refuses these, and
    `zoo config show` says so in the refusal's words."""
    monkeypatch.setenv("ZOO_DB_URL", url)
    code, _, refusal = run_cli("ls")
    assert code == 2 and refusal.count("\n") == 1, refusal
    code, out, _ = run_cli("config", "show", "--json")
    assert code == 0 and "hunter2" not in out
    assert json.loads(out)["db_url_error"] == refusal.strip().removeprefix("zoo: error: ")


def test_config_show_flags_a_named_sqlite_file_whose_folder_is_missing(
    run_cli, monkeypatch, tmp_path
):
    """A database named in a folder that does not exist is more likely mistyped than new:
    every command refuses it (exit 9) without blaming a variable that may not be set, and
    `zoo config show` says so in the refusal's words."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    monkeypatch.setenv("ZOO_DB_URL", f"sqlite:///{tmp_path / 'nowhere' / 'zoo.db'}")
    code, _, refusal = run_cli("ls")
    assert code == 9 and refusal.count("\n") == 1, refusal
    assert "correct the database URL (`zoo config show` says where it is set)" in refusal
    code, out, _ = run_cli("config", "show", "--json")
    assert json.loads(out)["db_url_error"] == refusal.strip().removeprefix("zoo: error: ")
    assert not (tmp_path / "nowhere").exists()


def test_relative_paths_in_the_config_file_are_the_homes(run_cli, monkeypatch, tmp_path, tiny_dir):
    """config.toml lives in the home: a relative store folder or SQLite file in it names
    one there, whatever folder a command runs in (read from another, it named a new,
    empty registry in each)."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    (home / "config.toml").write_text(
        'store_url = "blobs-alt"\ndb_url = "sqlite+pysqlite:///zoo-alt.db"\n'  # any driver
    )
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.delenv("ZOO_DB_URL", raising=False)
    monkeypatch.delenv("ZOO_STORE_URL", raising=False)
    monkeypatch.chdir(elsewhere)
    code, out, _ = run_cli("config", "show", "--json")
    shown = json.loads(out)
    assert shown["db_url"] == f"sqlite+pysqlite:///{home / 'zoo-alt.db'}", shown
    assert shown["store_url"] == str(home / "blobs-alt"), shown
    code, _, err = run_cli("import", str(tiny_dir("gpt2")))
    assert code == 0, err
    assert (home / "zoo-alt.db").is_file() and (home / "blobs-alt").is_dir()
    assert list(elsewhere.iterdir()) == []


@pytest.mark.postgres
def test_a_connection_option_libpq_rejects_is_bad_input_not_an_outage(
    db_url, run_cli, monkeypatch, tmp_path
):
    """Exit 9 tells a script the database is down; an option of the URL's own is exit 2."""
    if not db_url.startswith("postgresql"):
        pytest.skip("libpq's connection options")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    for option, says in (("bogus=1", '"bogus"'), ("connect_timeout=abc", "connect_timeout")):
        monkeypatch.setenv("ZOO_DB_URL", f"{db_url}?{option}")
        code, _, err = run_cli("ls")
        assert code == 2 and err.count("\n") == 1 and says in err, err
        assert err.startswith("zoo: error: Database URL: "), err


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("memory://zoo-blobs", "in this process's memory"),
        ("ftp://host/blobs", "not ftp://"),
    ],
)
def test_a_store_that_cannot_keep_blobs_is_refused_before_anything_is_recorded(
    url, says, run_cli, monkeypatch, tmp_path, tiny_dir
):
    """An in-memory store loses every blob when the command ends, leaving rows that point
    at nothing; an FTP one needs options a URL does not carry."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    monkeypatch.setenv("ZOO_STORE_URL", url)
    code, out, err = run_cli("import", str(tiny_dir("gpt2")))
    assert code == 2 and out == "" and err.count("\n") == 1 and says in err, err
    monkeypatch.delenv("ZOO_STORE_URL")
    assert run_cli("ls", "--all", "--json")[1].count('"name"') == 0


@pytest.mark.s3
def test_an_s3_prefix_holding_objects_zoo_did_not_write_is_refused_as_a_new_store(
    run_cli, monkeypatch, tmp_path, tiny_dir, s3_store_url
):
    """As for a folder: zoo's sweeps must never meet the user's objects, nor another
    registry's prefix under a bucket's root. An upper-case scheme is S3 all the same."""
    fs = open_store(s3_store_url).fs
    bucket = s3_store_url.removeprefix("s3://").split("/")[0]
    fs.pipe_file(f"{bucket}/zoo/notes.txt", b"precious")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    for url, says in ((s3_store_url, "'notes.txt'"), (f"s3://{bucket}", "'zoo'")):
        monkeypatch.setenv("ZOO_STORE_URL", url)
        code, _, err = run_cli("import", str(tiny_dir("gpt2")))
        assert code == 2 and err.count("\n") == 1, err
        assert f"holds {says}, which zoo did not write" in err, err
    assert fs.cat_file(f"{bucket}/zoo/notes.txt") == b"precious"
    assert fs.ls(f"{bucket}/zoo", detail=False) == [f"{bucket}/zoo/notes.txt"]
    monkeypatch.setenv("ZOO_STORE_URL", f"S3://{bucket}/fresh")
    code, _, err = run_cli("import", str(tiny_dir("gpt2")))
    assert code == 0, err
    assert fs.ls(f"{bucket}/fresh/registries", detail=False)
    monkeypatch.setenv("ZOO_S3_ENDPOINT_URL", "notaurl")
    code, _, err = run_cli("verify")
    assert code == 2 and "'notaurl' is not an http:// or https:// URL" in err, err


def test_config_show_masks_secrets(run_cli, monkeypatch):
    secret = "wJalrXUtnFEMI-zoo-test-secret"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAZOOTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    s3_store_url = "s3://zoo-bucket/team/zoo"
    monkeypatch.setenv("ZOO_DB_URL", "postgresql+psycopg://zoo:hunter2@db.example/zoo")
    monkeypatch.setenv("ZOO_STORE_URL", s3_store_url + "?secret_key=sekrit2")
    for args in (("config", "show"), ("config", "show", "--json")):
        code, out, err = run_cli(*args)
        assert code == 0, err
        assert "hunter2" not in out and "sekrit2" not in out and secret not in out
        assert "***" in out and "db.example" in out and s3_store_url in out
        assert "db_url_error" not in out  # a URL that is right is not called wrong


def test_config_show_names_the_s3_endpoint_and_where_it_came_from(run_cli, monkeypatch):
    for var in ("ZOO_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ZOO_STORE_URL", "s3://zoo-bucket/zoo")
    _, out, _ = run_cli("config", "show", "--json")
    assert json.loads(out)["s3_endpoint"] == "AWS"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://ceph.internal:7480")
    monkeypatch.setenv("ZOO_S3_ENDPOINT_URL", "https://minio.internal")  # ZOO_ wins
    code, out, err = run_cli("config", "show", "--json")
    shown = json.loads(out)
    assert code == 0, err
    assert shown["s3_endpoint"] == "https://minio.internal"
    assert shown["s3_endpoint_from"] == "$ZOO_S3_ENDPOINT_URL"
    monkeypatch.setenv("ZOO_STORE_URL", "s3a://zoo-bucket/zoo")  # s3a is S3 too
    assert json.loads(run_cli("config", "show", "--json")[1])["s3_endpoint_from"] == (
        "$ZOO_S3_ENDPOINT_URL"
    )
    signed = "https://minio.internal/?X-Amz-Signature=abc123&X-Amz-Credential=AKIA%2F2026"
    monkeypatch.setenv("ZOO_S3_ENDPOINT_URL", signed)
    shown = json.loads(run_cli("config", "show", "--json")[1])["s3_endpoint"]
    assert "abc123" not in shown and "AKIA" not in shown and "minio.internal" in shown
    monkeypatch.setenv("ZOO_STORE_URL", "/srv/zoo/blobs")  # a folder: no endpoint to show
    _, out, _ = run_cli("config", "show")
    assert "s3_endpoint" not in out and "/srv/zoo/blobs" in out


def test_config_show_names_the_home_and_the_device_and_where_each_came_from(
    run_cli, monkeypatch, tmp_path
):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    monkeypatch.delenv("ZOO_DEVICE", raising=False)
    shown = json.loads(run_cli("config", "show", "--json")[1])
    assert shown["home"] == str(tmp_path) and shown["home_from"] == "$ZOO_HOME"
    assert shown["device_from"] == "default"
    assert shown["device"] == (
        "materialize: the GPU when there is one, else the CPU; extract: the CPU"
    )
    monkeypatch.setenv("ZOO_DEVICE", "cpu")
    code, out, err = run_cli("config", "show")
    assert code == 0, err
    assert "device          cpu" in out and "device_from     $ZOO_DEVICE" in out


@pytest.mark.s3
def test_registry_on_s3_imports_verifies_and_reads_back(tmp_path, tiny_dir, s3_store_url):
    import zoo

    reg = zoo.connect(db_url=f"sqlite:///{tmp_path / 'zoo.db'}", store_url=s3_store_url)
    info = reg.import_checkpoint(tiny_dir("bert"))
    stored = set(reg.store.digests())
    assert stored == {t.digest for t in info.tensors}
    assert reg.import_checkpoint(tiny_dir("bert")).id == info.id
    assert set(reg.store.digests()) == stored
    assert reg.verify().ok and reg.fsck().ok
    # The registry's id is recorded beside the blobs (not among them); a second registry
    # on the same bucket is refused its gc, which records nothing; its first write adds
    # its own id.
    assert reg.store.claims() == [reg.registry_id]
    other = zoo.connect(db_url=f"sqlite:///{tmp_path / 'other.db'}", store_url=s3_store_url)
    with pytest.raises(ConflictError, match="also used by 1 other registry"):
        other.gc(grace=0)
    assert reg.store.claims() == [reg.registry_id]
    other.import_checkpoint(tiny_dir("bert"))
    assert sorted(reg.store.claims()) == sorted([reg.registry_id, other.registry_id])
    assert set(reg.store.digests()) == stored and reg.fsck().shared_with == 1
    other.close()
    reg.close()


@pytest.mark.s3
def test_a_missing_bucket_is_one_line_exit_11(s3_store_url, tiny_dir, monkeypatch, run_cli):
    """s3fs turns botocore's NoSuchBucket into a FileNotFoundError without an errno."""
    missing = "s3://zoo-no-such-bucket-" + s3_store_url.split("-")[-1]
    monkeypatch.setenv("ZOO_STORE_URL", missing)
    for args in (["import", str(tiny_dir("gpt2"))], ["fsck"], ["verify"]):
        code, out, err = run_cli(*args)
        assert code == 11 and out == "" and err.count("\n") == 1, (args, err)
        assert "object store" in err and "bucket" in err.lower(), err


def test_relative_settings_are_the_folder_the_registry_was_opened_in(
    monkeypatch, tmp_path, tiny_dir
):
    """A relative home, database file or store folder is the current folder's when the
    registry is opened (os.path.abspath then), and a handle held open goes on with that
    registry after the process changes folder, as a notebook does: its writes were
    refused as to a read-only database, and its reads of blobs looked in the new folder."""
    import zoo

    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    for var in ("ZOO_HOME", "ZOO_DB_URL", "ZOO_STORE_URL", "ZOO_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    (here / "urls").mkdir()  # a database folder someone names must exist
    monkeypatch.chdir(here)
    monkeypatch.setenv("ZOO_HOME", "env-home")
    handles = [
        zoo.connect(home="arg-home"),
        zoo.connect(),
        zoo.connect(db_url="sqlite:///urls/zoo.db", store_url="urls/blobs"),
    ]
    expected = [
        (os.path.abspath("arg-home/zoo.db"), os.path.abspath("arg-home/blobs")),
        (os.path.abspath("env-home/zoo.db"), os.path.abspath("env-home/blobs")),
        (os.path.abspath("urls/zoo.db"), os.path.abspath("urls/blobs")),
    ]
    assert [
        (r.settings.db_url.removeprefix("sqlite:///"), r.settings.store_url) for r in handles
    ] == expected
    names = [reg.import_checkpoint(tiny_dir("bert")).name for reg in handles]
    monkeypatch.chdir(elsewhere)
    for i, reg in enumerate(handles):
        reg.tag(names[i], "moved")
        reg.export("moved", out=tmp_path / "out" / str(i))
        assert [a.name for a in reg.list()] == [names[i]]
    assert list(elsewhere.iterdir()) == []
