"""What the server does off the event loop: long work on a thread pool, each derivation
once however many requests ask for it at the same time, and the files it serves."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.api.export import MARKER
from zoo.api.registry import Registry
from zoo.errors import ClientGoneError, InvalidInputError, OfflineError, ServerUnavailableError

if TYPE_CHECKING:
    from starlette.requests import Request

log = logging.getLogger("zoo.server")

#: Who a request acts for (a token's name): what ``created_by`` records.
acting_user: contextvars.ContextVar[str | None] = contextvars.ContextVar("zoo_user", default=None)
#: Set once no request waits any more for the work the pool's thread runs.
_abandoned: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "zoo_abandoned", default=None
)


class ServingRegistry(Registry):
    """The configured registry, recording each change under the token that asked for it."""

    @property
    def user(self) -> str:
        return acting_user.get() or super().user

    def _check_wanted(self) -> None:
        abandoned = _abandoned.get()
        if abandoned is not None and abandoned.is_set():
            raise ClientGoneError(
                "The client left before this was recorded, and no other waited for it: "
                "nothing of it is recorded."
            )

    def import_from_hub(self, repo_id: str, **options):
        """Import the Hub repository ``repo_id`` (from this machine's HF cache, or the
        Hub), never a folder of the server's disk that the id also names: a caller's
        folders are uploaded, and the server's own are not theirs to read.

        The Hub is reached, and the cache read, from the server's machine: where neither
        gives the repository, the caller is told it is the server that could not, and
        what they can do; the advice a local import gives (the network, HF_HUB_OFFLINE,
        the cache's path) is the server operator's, and goes to the server's log."""
        from zoo.api.catalog import import_checkpoint

        try:
            return import_checkpoint(self, repo_id, hub_only=True, **options)
        except OfflineError as exc:
            log.error("hub error: %s", exc)
            revision = options.get("revision")
            what = repo_id + (f" at revision {revision}" if revision else "")
            raise OfflineError(
                f"The zoo server could not get {what}: it cannot reach the Hugging Face Hub, "
                "or is offline and its cache does not hold it (its log says which); download "
                "it where the Hub is reachable and import the folder (`zoo import FOLDER` "
                "uploads it)."
            ) from None


class _Job:
    """Work on the pool, and how many requests wait for it."""

    def __init__(self, future: asyncio.Future, abandoned: threading.Event) -> None:
        self.future, self.abandoned = future, abandoned
        self.waiting = 0


class SingleFlight:
    """Runs ``fn`` for a key once while it is running: later callers with the same key
    wait for the first one's result. Coordination happens on the event loop's thread.

    A caller that passes its request (``caller``) is watched: once every request waiting
    for a piece of work has disconnected (a client's Ctrl-C), the work stops before it
    records anything (:meth:`ServingRegistry._check_wanted`), and a request for the same
    work from then on starts it afresh. A caller of the server's own never leaves."""

    def __init__(self, workers: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zoo-work")
        self._running: dict[Any, _Job] = {}
        self._live: set[_Job] = set()  # every job not yet done, keyed or not (close)
        self.started: dict[Any, int] = {}  # key -> times its work succeeded (for the stats)
        self._lock = threading.Lock()

    async def run(self, key, fn: Callable[[], Any], *, caller: Request | None = None):
        job = self._running.get(key)
        if job is None:
            job = self._start(functools.partial(self._counted, key, fn))
            self._running[key] = job
            job.future.add_done_callback(lambda _f: self._forget(key, job))
        return await self._wait(key, job, caller)

    def _counted(self, key, fn):
        result = fn()
        with self._lock:  # counted when it succeeds: a refused request may be asked again
            self.started[key] = self.started.get(key, 0) + 1
        return result

    async def call(self, fn: Callable[..., Any], *args, caller: Request | None = None, **kwargs):
        """Long work without a key (each call is its own)."""
        return await self._wait(None, self._start(functools.partial(fn, *args, **kwargs)), caller)

    def _start(self, fn: Callable[[], Any]) -> _Job:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        abandoned = threading.Event()
        context.run(_abandoned.set, abandoned)
        job = _Job(loop.run_in_executor(self.executor, context.run, fn), abandoned)
        self._live.add(job)
        job.future.add_done_callback(lambda _f: self._live.discard(job))
        return job

    async def _wait(self, key, job: _Job, caller: Request | None):
        job.waiting += 1
        if caller is None:  # the server's own: it keeps the work wanted
            return await asyncio.shield(job.future)
        try:
            left = await _left_before(caller, job.future)
        finally:
            job.waiting -= 1
        if left and job.waiting == 0:
            job.abandoned.set()
            self._forget(key, job)
        # A caller that left still waits for the work to end: its request's cleanups (an
        # upload's staging folder, which the work reads) come after it.
        return await asyncio.shield(job.future)

    def _forget(self, key, job: _Job) -> None:
        if key is not None and self._running.get(key) is job:
            del self._running[key]

    def close(self) -> None:
        """Stop as the server stops: work not begun never starts, and work running records
        nothing (its requests were cut; the process ends before it would finish)."""
        for job in list(self._live):
            job.abandoned.set()
        self.executor.shutdown(wait=False, cancel_futures=True)


async def _left_before(request: Request, future: asyncio.Future) -> bool:
    """Whether ``request``'s client disconnected before ``future`` finished (its body is
    read: the next message the server has for it is its disconnection)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    gone = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait([future, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not gone.done() or gone.cancelled() or gone.exception() is not None:
        return False
    return not future.done()


# What this cache writes, by exact name; nothing else in its folder is ever removed.
_PENDING = ".pending-"
_UPLOAD = ".upload-"
#: The file that makes a folder this cache's, written when it first takes the folder.
CACHE_MARK = ".zoo-serve-cache"
#: The code that built the cache's folders (:func:`writer`), rewritten at a start that
#: found them built by other code and dropped them.
WRITER_MARK = ".zoo-serve-writer"
# What an output folder's writer names its hidden folders beside ``.pending-HEX``, after
# it (zoo.api.export: its temporary folder, and the output it set aside).
_WRITER_TEMP = r"\.zoo-(tmp|old)-[0-9a-f]{8}-\d+-[0-9a-f]{8}"
_LEFTOVER_NAMES = re.compile(
    r"\.(pending|upload)-[0-9a-f]{32}"  # a build or an upload a killed server left
    + r"|\.\.pending-[0-9a-f]{32}"  # its output's
    + _WRITER_TEMP
    + r"|\.[0-9a-f]{64}\.[a-z]+\.files\.zoo-tmp-[0-9a-f]{8}"  # a file index being written
    # A folder named by a bare content hash, and its index: none this cache reads (a name
    # says its artifact's kind too); it may hold another artifact's card.
    + r"|[0-9a-f]{64}(\.files\.json)?"
)


def folder_key(info, files=()) -> str:
    """The cache folder of an artifact's files: its content hash, then its kind. A source
    and the same-size checkpoint derived from it hold the same tensors but not the same
    model card or safetensors metadata (each names its own artifact). The key starts with
    the content hash, whose first 40 hex digits are the commit the Hub routes answer.

    ``files`` are the tokenizer, configs and card the folder carries (the artifact's own,
    or for what zoo derived, its source's: :func:`zoo.api.side_files.files_of`). They are
    not in the content hash, and an import may replace them (a corrected card): their
    digests end the key, so a folder built before is not served after."""
    key = f"{info.content_hash}.{info.kind}"
    if files:
        stored = "".join(f"{f.name}\0{f.digest}\n" for f in sorted(files, key=lambda f: f.name))
        key += "-" + hashlib.sha256(stored.encode()).hexdigest()[:12]
    return key


def commit_of(key: str) -> str:
    """The Hub commit a cached folder is served under: 40 hex digits that change with
    any of its files. Without side files, the first 40 of the content hash; with them,
    its first 28 and the 12 of their digests that end the key, so a corrected card is a
    new commit (huggingface_hub caches by commit, and a file under one is immutable)."""
    content, _, files = key.partition(".")
    files = files.partition("-")[2]
    return content[:28] + files if files else content[:40]


_KEY = re.compile(r"[0-9a-f]{64}\.[a-z]+(?:-[0-9a-f]{12})?")


@functools.lru_cache(maxsize=1)
def writer() -> str:
    """What the bytes of a served folder depend on beyond its key (the content hash and
    the stored files' digests): zoo's version and code, which write its config, card and
    fitted pipeline. A folder built by other code may differ from what this code builds
    (a corrected pooling width), so a cache built by another zoo is built again."""
    import zoo

    root = Path(zoo.__file__).parent
    digest = hashlib.sha256(zoo.__version__.encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


class FileCache:
    """Hugging Face folders of served checkpoints, one per artifact (:func:`folder_key`).

    A folder is built under a ``.pending-`` name and renamed into place when complete, so
    a server killed mid-build leaves only a pending folder, removed at the next start.
    The store and the database stay the registry's: this cache can be deleted at any time.
    It takes only a folder that is new, empty or already its own (:data:`CACHE_MARK`): at
    its start it removes what a killed server left there, unless another server uses it.

    With a ``limit`` (bytes), the folders used least recently go once the cache holds
    more, down to the limit: a read token can ask for any number of sizes, and each is
    built here. A folder used in the last ``idle_s`` seconds stays (a download may be
    about to open it), so the cache may pass the limit for that long. An evicted
    folder is built again when asked for, with the same bytes (derivation is
    deterministic). Only folders named by an artifact's key go, never another file.
    """

    def __init__(self, root: Path, *, limit: int | None = None, idle_s: float = 300.0) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._claim()
        self.limit, self.idle_s = limit, idle_s
        self._files: dict[str, dict[str, dict[str, Any]]] = {}
        self._used: dict[str, float] = {}  # key -> when last asked for (time.time())
        self._uploads: set[Path] = set()  # staging folders made here, removed at close
        self._builds: set[Path] = set()  # pending builds not yet adopted, removed at close
        self._closed = False
        self._lock = threading.Lock()
        self._trimming = threading.Lock()

    def _claim(self) -> None:
        """Take the folder if it is this cache's (its mark) or empty. Names alone never
        make a folder this cache's: a folder of files named by their sha256 (an OCI
        layout, a Hub cache's blobs) looks like one, and the cache removes such names."""
        mark = self.root / CACHE_MARK
        if not mark.is_file():
            entry = next(iter(sorted(self.root.iterdir())), None)
            if entry is not None:
                raise InvalidInputError(
                    f"The cache folder {self.root} holds {entry.name!r} and no {CACHE_MARK} "
                    "mark, so zoo did not make it its cache; give the server an empty or "
                    "new folder (--cache)."
                )
            mark.write_text(
                "The files zoo serve serves; zoo may remove anything named as it names it.\n"
            )
            (self.root / WRITER_MARK).write_text(writer() + "\n")
        # Held shared while this server runs: a server starting beside it on the same
        # cache sees it and leaves the pending builds and uploads alone (they are its).
        self._in_use = open(mark, "rb")  # noqa: SIM115 - held for the server's lifetime
        fcntl.flock(self._in_use, fcntl.LOCK_SH)

    def close(self) -> None:
        """Stop using the folder, removing the uploads still staged in it and the builds
        still pending (requests cut as the server stops, whose own cleanup may not get to
        run: the process exits under the threads writing them); another server starting
        then cleans what is left."""
        with self._lock:
            self._closed = True  # a build ending now is dropped, not adopted
            builds = list(self._builds)
        for staging in list(self._uploads):
            self.remove_upload(staging)
        for pending in builds:
            self.done_building(pending)
        if builds:
            log.info("removed %d unfinished builds of the stopping server", len(builds))
        self._in_use.close()

    def clean_leftovers(self) -> list[str]:
        """Remove what a killed server left (pending builds, uploads), and every folder
        built by other code than this server's (:func:`writer`: a zoo upgraded since);
        returns the names. Nothing while another server uses this cache: what is pending
        may be its, and it serves what it built."""
        # Asked at the server's start, when nothing of its own is pending yet. A failed
        # conversion to exclusive drops the shared hold (flock(2)): it is taken again.
        try:
            fcntl.flock(self._in_use, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._in_use, fcntl.LOCK_SH)
            return []
        try:
            removed = []
            for entry in self.root.iterdir():
                name = entry.name
                if _LEFTOVER_NAMES.fullmatch(name):
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
                    removed.append(name)
            mark = self.root / WRITER_MARK
            try:
                built_by = mark.read_text().strip()
            except FileNotFoundError:  # a cache from before the mark: its code unknown
                built_by = None
            if built_by != writer():
                stale = [e.name for e in self.root.iterdir() if _KEY.fullmatch(e.name)]
                for key in stale:
                    self._evict(key)
                removed += stale
                mark.write_text(writer() + "\n")
            return removed
        finally:
            fcntl.flock(self._in_use, fcntl.LOCK_SH)

    def folder(self, key: str) -> Path | None:
        path = self.root / key
        if not path.is_dir():
            return None
        self._use(key)
        return path

    def _use(self, key: str) -> None:
        """Note that ``key`` is asked for now; its folder's time says so after a restart
        (set at most once a minute)."""
        now = time.time()
        with self._lock:
            last = self._used.get(key, 0.0)
            self._used[key] = now
        if now - last > 60:
            with contextlib.suppress(OSError):
                os.utime(self.root / key)

    def pending(self) -> Path:
        """A fresh path to build a folder at (it does not exist yet); :meth:`done_building`
        removes what is left of it once its build ends, or the server's stop does."""
        path = self._fresh()
        with self._lock:
            if self._closed:
                raise ServerUnavailableError(
                    "The zoo server stopped before this request finished; send it again "
                    "once the server is back."
                )
            self._builds.add(path)
        return path

    def _fresh(self) -> Path:
        return self.root / f"{_PENDING}{uuid.uuid4().hex}"

    def done_building(self, path: Path) -> None:
        """Remove what is left of the build at ``path`` (:meth:`pending`): the folder, and
        the hidden folders its writer made beside it (:class:`zoo.api.export.OutputFolder`
        names them after it), by their exact names."""
        remove_tree(path)
        beside = re.compile(re.escape(f".{path.name}") + _WRITER_TEMP)
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.root):
                if beside.fullmatch(entry.name):
                    remove_tree(Path(entry.path))
        with self._lock:
            self._builds.discard(path)

    def upload_dir(self) -> Path:
        path = self.root / f"{_UPLOAD}{uuid.uuid4().hex}"
        path.mkdir()
        self._uploads.add(path)
        return path

    def remove_upload(self, path: Path) -> None:
        """Remove a staging folder :meth:`upload_dir` made, once its request is done."""
        remove_tree(path)
        self._uploads.discard(path)

    def adopt(self, built: Path, key: str) -> Path:
        """Rename a complete build into place (another build of the same artifact may have
        won the race: then this one is dropped; so is one that ends as the server stops)."""
        with self._lock:
            closed = self._closed
        if closed:
            self.done_building(built)
            raise ServerUnavailableError(
                "The zoo server stopped before this request finished; send it again "
                "once the server is back."
            )
        final = self.root / key
        try:
            os.replace(built, final) if not final.exists() else shutil.rmtree(built)
        except OSError:  # lost a race between the check and the rename
            shutil.rmtree(built, ignore_errors=True)
        self._use(key)
        self.trim(keep=key)
        return final

    def trim(self, *, keep: str | None = None) -> list[str]:
        """Evict the least recently used folders past the limit, but ``keep`` (a folder
        just built, whatever its size); returns their keys."""
        if self.limit is None:
            return []
        with self._trimming:
            folders = []
            for entry in self.root.iterdir():
                if _KEY.fullmatch(entry.name) and entry.is_dir():
                    folders.append((self._last_use(entry), entry.name, self._size(entry)))
            total = sum(size for _, _, size in folders)
            evicted = []
            now = time.time()
            for last, key, size in sorted(folders):
                if total <= self.limit:
                    break
                if key == keep or now - last < self.idle_s:
                    continue
                self._evict(key)
                total -= size
                evicted.append(key)
            if evicted:
                log.info("evicted %d served folders past the cache limit", len(evicted))
            return evicted

    def _last_use(self, folder: Path) -> float:
        with self._lock:
            known = self._used.get(folder.name)
        if known is not None:
            return known
        try:
            return folder.stat().st_mtime
        except OSError:
            return 0.0

    def _size(self, folder: Path) -> int:
        with self._lock:
            files = self._files.get(folder.name)
        if files is not None:
            return sum(f["size"] for f in files.values())
        total = 0
        with contextlib.suppress(OSError):
            for f in os.scandir(folder):
                with contextlib.suppress(OSError):
                    total += f.stat(follow_symlinks=False).st_size
        return total

    def _evict(self, key: str) -> None:
        # Renamed first, so a request sees the folder gone (and builds it again) rather
        # than half removed.
        gone = self._fresh()
        try:
            os.replace(self.root / key, gone)
        except OSError:
            return
        with self._lock:
            self._files.pop(key, None)
            self._used.pop(key, None)
        with contextlib.suppress(OSError):
            (self.root / f"{key}.files.json").unlink()
        shutil.rmtree(gone, ignore_errors=True)

    def files(self, key: str) -> dict[str, dict[str, Any]]:
        """``{file name: {"sha256", "size"}}`` of a cached folder (hashed once)."""
        self._use(key)
        with self._lock:
            known = self._files.get(key)
        if known is not None:
            return known
        folder = self.root / key
        index = self.root / f"{key}.files.json"
        try:
            files = json.loads(index.read_text())
        except (OSError, ValueError):
            files = {}
            # A module folder's files too (a sentence-transformers 1_Pooling/config.json),
            # named by their path in the folder as the Hub names them.
            for f in sorted(folder.rglob("*")):
                rel = f.relative_to(folder)
                if not f.is_file() or rel.as_posix() == MARKER:  # zoo's bookkeeping
                    continue
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        h.update(chunk)
                files[rel.as_posix()] = {"sha256": h.hexdigest(), "size": f.stat().st_size}
            temp = self.root / f".{key}.files.zoo-tmp-{uuid.uuid4().hex[:8]}"
            temp.write_text(json.dumps(files, sort_keys=True))
            os.replace(temp, index)
        with self._lock:
            self._files[key] = files
        return files


def remove_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
