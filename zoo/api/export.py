"""Output folders: a materialized model written as a Hugging Face folder, all or nothing.

A folder is assembled under a hidden temporary name beside the destination and renamed
into place only when complete, so an interrupted run never leaves a partial folder. The
weights are streamed: the file layout (shards, offsets, headers) is fixed from the
tensors' shapes before any is derived, each finished tensor is written at its offset by
whichever worker finished it, and the headers (with zoo's provenance, known only once
every tensor is hashed) are written last into space reserved for them.

Every folder zoo writes carries a marker (:data:`MARKER`) listing its files. ``--force``
replaces only such a folder, untouched since zoo wrote it, and never the registry's own
home, database, blob store or a source's folder: nothing zoo did not write is deleted.

The temporary and set-aside names carry the writer's host and process id, so the next
write to the same destination (and ``zoo fsck --repair``, for the outputs the registry's
journal lists) can tell a dead writer's leftovers from a live writer's work.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import struct
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import (
    WRITE_ERRNOS,
    ConflictError,
    InvalidInputError,
    NoRoomError,
    StorageError,
    ZooError,
)
from zoo.text import is_utf8

#: The marker file of every output folder: the files zoo wrote, with size and mtime.
MARKER = ".zoo-output.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
#: Hugging Face's default shard size for uploads (transformers' ``max_shard_size``).
DEFAULT_SHARD_SIZE = 5_000_000_000
# Space kept in each shard's header for zoo's provenance metadata, which names the
# derived checkpoint's content hash: known only after every tensor has been hashed.
_METADATA_RESERVE = 4096
_UNITS = {
    "": 1,
    "B": 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(text: str | int) -> int:
    """``"5GB"`` -> 5_000_000_000 (KB/MB/GB decimal, KiB/MiB/GiB binary, as the Hub's tools).

    Example:
        >>> parse_size("500MB"), parse_size("2GiB"), parse_size(1024)
        (500000000, 2147483648, 1024)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
        unit = m.group(2).upper() if m else None
        if m is None or unit not in _UNITS:
            raise InvalidInputError(f"{text!r} is not a size; write it like 5GB, 500MB or 2GiB.")
        value = int(float(m.group(1)) * _UNITS[unit])
    if value < 1:
        raise InvalidInputError(f"A size must be at least 1 byte, got {text!r}.")
    return value


# --- where an output may go -----------------------------------------------------------------


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def out_path(out) -> Path:
    """``out`` (--out) as a path, ``~`` expanded (as an import's source and the home
    are: a program's ``"~/models/x"`` is not a folder named ``~`` in the current one),
    refused when it names no folder: not a path, empty (it would be the current folder),
    or holding NUL (no file system takes it)."""
    if isinstance(out, bytes) or not isinstance(out, (str, os.PathLike)):
        raise InvalidInputError(
            f"out= is a folder's path, not a {type(out).__name__}.", params=["out"]
        )
    if not os.fspath(out).strip() or "\x00" in os.fspath(out):
        raise InvalidInputError(f"out={os.fspath(out)!r} names no folder.", params=["out"])
    return Path(out).expanduser()


def check_out_dir(
    out: Path, *, force: bool, protected: Iterable[Path] = (), stores: Iterable[Path] = ()
) -> None:
    """Refuse, before any work, an output folder zoo must not write or replace.

    Refused: a symbolic link (the link, not its target, would be replaced); the current
    folder or one above it, or a mount point (neither can be renamed into place); a path
    that is or holds one of ``protected`` (the registry's home, database, blob store, a
    source's folder) or the user's home folder; a path inside one of ``stores`` (blob
    stores, whose files gc collects); an existing file, or a path under one; a non-empty
    folder without ``force``; and, with ``force``, a non-empty folder that is not an
    untouched output of zoo's; a path that ends in ``..`` (it names no folder to rename
    into) or goes up out of a folder that does not exist (which zoo would create and
    leave behind).
    """
    _check_names(out, out.resolve())  # first: a name too long fails every look at the path
    if out.is_symlink():
        raise InvalidInputError(
            f"out={str(out)!r} is a symbolic link; give the folder it points to.", params=["out"]
        )
    here = Path.cwd().resolve()
    resolved = out.resolve()
    if resolved in (here, *here.parents):
        raise InvalidInputError(
            f"out={str(out)!r} is the current folder or one above it; zoo renames the finished "
            "folder into place, so give a folder below it.",
            params=["out"],
        )
    if out.name == "..":
        raise InvalidInputError(
            f"out={str(out)!r} ends in '..'; name the folder to write itself.", params=["out"]
        )
    for i, part in enumerate(out.parts):
        if part == ".." and not Path(*out.parts[:i]).is_dir():
            raise InvalidInputError(
                f"out={str(out)!r} goes up out of {str(Path(*out.parts[:i]))!r}, which is not a "
                "folder; name the folder to write without it.",
                params=["out"],
            )
    _check_names(out, resolved)
    home = Path.home().resolve()
    for kept in protected:
        kept = kept.resolve()
        if _inside(kept, resolved):
            raise ConflictError(
                f"out={str(out)!r} would hold or replace {str(kept)!r}, which zoo's registry uses "
                "(its home, its database, its blob store, or a folder a source was imported "
                "from); give a folder outside it.",
                params=["out"],
            )
    for store in stores:
        store = store.resolve()
        if _inside(resolved, store):
            raise ConflictError(
                f"out={str(out)!r} lies inside the blob store {str(store)!r}, which zoo's registry "
                "uses (and collects); give a folder outside it.",
                params=["out"],
            )
    if resolved == home or _inside(home, resolved):
        raise ConflictError(
            f"out={str(out)!r} is or holds your home folder; give a folder below it.",
            params=["out"],
        )
    if out.exists() and not out.is_dir():
        raise ConflictError(f"out={str(out)!r} exists and is not a folder.", params=["out"])
    above = next(p for p in out.parents if p.exists())  # "." at the latest
    if not above.is_dir():  # else its folders' creation fails, as if on a full disk
        raise ConflictError(
            f"out={str(out)!r} lies under {str(above)!r}, which is not a folder.", params=["out"]
        )
    if os.path.ismount(out):
        raise InvalidInputError(
            f"out={str(out)!r} is a mount point; zoo renames the finished folder into place, "
            "which a mount point cannot be, so give a folder inside it.",
            params=["out"],
        )
    if not (out.is_dir() and any(out.iterdir())):
        return
    if not force:
        raise ConflictError(
            f"out={str(out)!r} exists and is not empty; pass force=True to replace it.",
            params=["out", "force"],
        )
    problem = _not_a_zoo_output(out)
    if problem:
        raise ConflictError(
            f"out={str(out)!r} {problem}; force=True replaces only a folder zoo wrote, so move or "
            "delete it yourself.",
            params=["out", "force"],
        )


def _check_names(out: Path, resolved: Path) -> None:
    """Refuse a path zoo cannot record (not UTF-8 text: the registry's journal of outputs
    keeps it) or whose file system takes none of its missing names (too long)."""
    if not is_utf8(str(resolved)):
        raise InvalidInputError(
            f"out= {str(resolved)!a} is not UTF-8 text; zoo records where it writes, so "
            "give a folder whose path is.",
            params=["out"],
        )
    limit = _name_max(out)
    for part in resolved.parts:
        if len(os.fsencode(part)) > limit:
            raise InvalidInputError(
                f"out={str(out)!r} has a name of {len(os.fsencode(part))} bytes, more than the "
                f"{limit} its file system takes; give a shorter one.",
                params=["out"],
            )


def is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder; False for a path the system refuses to look at (a
    name longer than its file system takes), which the checks of --out then name."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _name_max(path: Path) -> int:
    """The longest file name, in bytes, of the file system ``path`` is (or would be) on."""
    existing = next((p for p in (path, *path.parents) if is_folder(p)), Path("."))
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def check_room(out: Path, nbytes: int) -> None:
    """Refuse, before any byte is written, an output its file system has no room for:
    failing when the disk fills would waste the work done until then.

    Raises:
        NoRoomError: fewer than ``nbytes`` bytes are free where ``out`` would go.
    """
    out = Path(out)
    existing = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if nbytes > free:
        raise NoRoomError(
            f"out={str(out)!r} needs {decimal_bytes(nbytes)} and its file system has "
            f"{decimal_bytes(free)} free; free some space or write elsewhere.",
            needed=nbytes,
            free=free,
            params=["out"],
        )


def decimal_bytes(n: int) -> str:
    """Bytes in the largest decimal unit that keeps a digit before the point, as ``df -H``
    prints them: a small output and a nearly full disk both read as more than "0.0 GB"."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _not_a_zoo_output(folder: Path) -> str | None:
    """Why ``folder`` is not an output zoo wrote and nobody changed since; None if it is."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
        assert isinstance(files, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return "was not written by zoo (no readable zoo output marker)"
    present, folders = _tree(folder)
    listed = {p.as_posix() for name in files for p in Path(name).parents} - {"."}
    extra = sorted((present - {MARKER} - set(files)) | {f"{d}/" for d in folders - listed})
    if extra:
        return f"holds files zoo did not write ({', '.join(extra[:3])})"
    for name, seen in files.items():
        path = folder / name
        try:
            st = path.lstat()
        except OSError:
            continue  # removed since: nothing of the user's to lose
        if not path.is_file() or [st.st_size, st.st_mtime_ns] != seen:
            return f"has {name} changed since zoo wrote it"
    return None


def _tree(folder: Path) -> tuple[set[str], set[str]]:
    """The files (and links) and the folders under ``folder``, as paths relative to it
    (``1_Pooling/config.json``); links are not followed."""
    files: set[str] = set()
    folders: set[str] = set()
    for top, dirs, names in os.walk(folder):
        rel = Path(top).relative_to(folder)
        for d in list(dirs):
            if (Path(top) / d).is_symlink():
                dirs.remove(d)
                names.append(d)
            else:
                folders.add((rel / d).as_posix())
        files |= {(rel / n).as_posix() for n in names}
    return files, folders


# --- leftovers of interrupted writers ---------------------------------------------------------


def writer_host() -> str:
    """Where a writer's process id means something: this host, and on Linux its process
    id namespace (containers of one pod, or `docker --net=host`, share a host name but
    not process ids: a live writer in one must not look dead from another)."""
    host = socket.gethostname()
    try:
        return f"{host}/pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return host


def _host_tag() -> str:
    return hashlib.sha256(writer_host().encode()).hexdigest()[:8]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_LEFTOVER = re.compile(
    r"\.(?P<name>.+)\.zoo-(?P<what>tmp|old)-"
    r"(?P<tag>(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8})"
)

# The bytes a temporary or set-aside name adds around the output's name: a leading dot,
# ".zoo-tmp-" and the tag (host, a pid of up to 10 digits, 8 hex digits).
_AROUND = 1 + len(".zoo-tmp-") + 8 + 1 + 10 + 1 + 8


def _stem(out: Path) -> str:
    """``out``'s name as its temporary and set-aside folders carry it: whole when that fits
    in a file name, else its beginning and ``~`` with a hash of the whole name, so a name
    the file system takes always gets one, and two long names that begin alike never
    share one."""
    raw = os.fsencode(out.name)
    limit = _name_max(out.parent)
    if len(raw) + _AROUND <= limit:
        return out.name
    cut = raw[: max(0, limit - _AROUND - 17)]
    while cut and cut[-1] & 0xC0 == 0x80:  # not in the middle of a character
        cut = cut[:-1]
    if cut and cut[-1] >= 0xC0:
        cut = cut[:-1]
    return os.fsdecode(cut) + "~" + hashlib.sha256(raw).hexdigest()[:16]


def leftovers(out: Path, *, pid: int | None = None) -> list[Path]:
    """Temporary and set-aside folders that dead writers to ``out`` left on this host (of
    process ``pid`` only, when given). A live writer's folders are never listed."""
    host, stem = _host_tag(), _stem(out)
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return []
    found = []
    for p in siblings:
        m = _LEFTOVER.fullmatch(p.name)
        if not m or m["name"] != stem or m["host"] != host:
            continue
        writer = int(m["pid"])
        if pid is not None and writer != pid:
            continue
        if writer != os.getpid() and not pid_alive(writer):
            found.append(p)
    return sorted(found)


def clean_leftovers(out: Path, *, pid: int | None = None) -> list[tuple[Path, bool]]:
    """Undo what dead writers to ``out`` left: a previous output set aside while its
    replacement was being renamed in is put back if the swap never finished (the
    replacement, of the same tag, is still beside it) and nothing took its place; once
    the replacement was renamed in, the set-aside one is dropped, even if the new output
    is gone since (the user removed it). Temporary folders are removed. Returns each path
    handled, with whether it was put back in place (else removed)."""
    found = leftovers(out, pid=pid)
    matches = [(p, _LEFTOVER.fullmatch(p.name)) for p in found]
    unfinished = {m["tag"] for _, m in matches if m["what"] == "tmp"}
    done = []
    for p, m in sorted(matches, key=lambda pm: pm[1]["what"]):  # "old" before "tmp"
        if m["what"] == "old" and m["tag"] in unfinished and not out.exists():
            os.replace(p, out)  # the swap never finished: the previous output stays
            done.append((p, True))
        else:
            shutil.rmtree(p, ignore_errors=True)
            done.append((p, False))
    return done


# --- the streamed writer -------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSlot:
    """Where one tensor goes: its file and the offset of its bytes in the data section."""

    file: str
    start: int
    end: int
    dtype: str
    shape: tuple[int, ...]


def plan_files(
    layout: Mapping[str, tuple[str, tuple[int, ...], int]], max_shard_size: int
) -> dict[str, dict[str, TensorSlot]]:
    """Assign tensors (name -> (safetensors dtype code, shape, bytes)) to files.

    Wider dtypes first, then by name, as the safetensors library orders a file (every
    tensor starts at a multiple of its item size); a new shard starts when the next
    tensor would pass ``max_shard_size`` (a larger tensor gets a shard of its own).
    """
    from zoo.checkpoint.safetensors_format import DTYPE_ITEMSIZE

    order = sorted(layout, key=lambda n: (-DTYPE_ITEMSIZE[layout[n][0]], n))
    shards: list[list[str]] = [[]]
    size = 0
    for name in order:
        nbytes = layout[name][2]
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    count = len(shards)
    files: dict[str, dict[str, TensorSlot]] = {}
    for i, names in enumerate(shards):
        file = SINGLE_FILE if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        offset = 0
        slots = {}
        for name in names:
            code, shape, nbytes = layout[name]
            slots[name] = TensorSlot(file, offset, offset + nbytes, code, tuple(shape))
            offset += nbytes
        files[file] = slots
    return files


def _temp_path(out: Path, tag: str) -> Path:
    """The hidden folder beside ``out`` that a writer tagged ``tag`` assembles it in."""
    return out.parent / f".{_stem(out)}.zoo-tmp-{tag}"


def _new_temp(out: Path) -> tuple[Path, str, list[Path]]:
    """A fresh temporary folder beside ``out``, named for this host and process; with the
    folders above ``out`` that it created (for :func:`_remove_made`). While it is
    written it is no more open to others than a folder at ``out`` it will replace."""
    tag = f"{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp = _temp_path(out, tag)
    made: list[Path] = []
    try:
        for folder in reversed([out.parent, *out.parent.parents]):
            if not folder.is_dir():
                folder.mkdir()
                made.append(folder)
        temp.mkdir()
        with contextlib.suppress(OSError):
            replaced = os.stat(out)
            if stat.S_ISDIR(replaced.st_mode):
                mode = stat.S_IMODE(os.stat(temp).st_mode)
                os.chmod(temp, mode & (stat.S_IMODE(replaced.st_mode) | stat.S_IRWXU))
    except OSError as exc:  # a read-only or full file system, a folder not ours to write
        _remove_made(made)
        raise _cannot_write(
            out, exc, "zoo assembles the folder beside it, then renames it into place"
        ) from exc
    return temp, tag, made


def _remove_made(made: list[Path]) -> None:
    """Remove the folders zoo created above an output that was not written, each only if
    still empty (another writer may have put its own output there since)."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:
            return


def _cannot_write(out: Path, exc: OSError, why: str = "nothing of it was kept") -> StorageError:
    return StorageError(
        f"Cannot write out={str(out)!r}: {exc.strerror or exc} ({why}).", params=["out"]
    )


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """A file system's refusal while ``out`` is written, said of ``out`` in one line."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, ZooError) or exc.errno not in WRITE_ERRNOS:
            raise
        raise _cannot_write(out, exc) from exc


def _write_marker(temp: Path, *, synced: Iterable[str] = ()) -> None:
    """Flush every file of ``temp`` to disk and list them (size, mtime) in the marker."""
    files = {}
    for name in sorted(_tree(temp)[0]):  # a module folder's files too (1_Pooling/...)
        p = temp / name
        if name not in synced:
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        st = p.stat()
        files[name] = [st.st_size, st.st_mtime_ns]
    (temp / MARKER).write_text(json.dumps({"files": files}, sort_keys=True) + "\n")


@contextlib.contextmanager
def staged(out: Path, *, force: bool, protected: Iterable[Path] = ()) -> Iterator[Path]:
    """A folder of files for ``out``: write them into the yielded temporary folder; when
    the block ends without an error they are marked as zoo's and renamed into place,
    else removed. For folders whose files arrive whole (a download); weights that
    stream in use :class:`OutputFolder`."""
    out = Path(out)
    clean_leftovers(out)
    check_out_dir(out, force=force, protected=protected)
    temp, tag, made = _new_temp(out)
    try:
        yield temp
        with _writing(out):
            (temp / MARKER).unlink(missing_ok=True)  # only zoo's own marker counts
            _write_marker(temp)
            old = _swap_into_place(temp, out, tag, force=force)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        _remove_made(made)


@contextlib.contextmanager
def scratch(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` for files on their way to it (a download to be
    re-split), named as a writer's temporary folder so that, if this process dies, the
    next write to ``out`` removes it; removed when the block ends."""
    out = Path(out)
    clean_leftovers(out)
    temp, _, made = _new_temp(out)
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        _remove_made(made)


# Bytes of one tensor copied at a time by :func:`resharded`: memory stays flat whatever
# the tensor's size.
_COPY_BLOCK = 64 << 20


def resharded(folder: Path, out: Path, *, force: bool, max_shard_size: int) -> Path:
    """Write the HF folder ``folder`` (one that zoo wrote: weights, config, card, side
    files) to ``out`` with its weights in shards of up to ``max_shard_size`` bytes: the
    same tensors, bytes and provenance, so the same content hash, and the same other files.
    Each tensor is copied a block at a time; ``out`` appears whole or not at all."""
    from zoo.checkpoint.safetensors_format import read_header

    folder, out = Path(folder), Path(out)
    weights = sorted(p for p in folder.iterdir() if p.name.endswith(".safetensors"))
    headers = [read_header(p) for p in weights]
    if not headers:
        raise InvalidInputError(f"{folder} holds no .safetensors files to re-split.")
    layout = {n: (e.dtype, e.shape, e.nbytes) for h in headers for n, e in h.tensors.items()}
    if len(layout) < sum(len(h.tensors) for h in headers):
        raise InvalidInputError(f"{folder} names a tensor in two files; it cannot be re-split.")
    skip = {INDEX_FILE, MARKER, "config.json", "README.md"}
    extra = {
        name: (folder / name).read_bytes()
        for name in sorted(_tree(folder)[0])
        if (folder / name).is_file()
        and name not in skip
        and not ("/" not in name and name.endswith(".safetensors"))  # the weights
    }
    card = folder / "README.md"
    with OutputFolder(out, layout, force=force, max_shard_size=max_shard_size) as written:
        for header in headers:
            with open(header.path, "rb") as fh:
                for name, entry in header.tensors.items():
                    for at in range(0, entry.nbytes, _COPY_BLOCK) or (0,):
                        size = min(_COPY_BLOCK, entry.nbytes - at)
                        written.put_part(name, at, os.pread(fh.fileno(), size, entry.begin + at))
        return written.commit(
            config=json.loads((folder / "config.json").read_text(encoding="utf-8")),
            metadata=headers[0].metadata,
            card=card.read_text(encoding="utf-8") if card.exists() else "",
            extra_files=extra,
        )


class OutputFolder:
    """An HF folder being written: ``with OutputFolder(out, ...) as folder:`` put every
    tensor (any order, any thread), then :meth:`commit`. Leaving the block without a
    commit removes everything written; a commit renames the folder into place.

    Args:
        out: the destination.
        layout: every tensor's (safetensors dtype code, shape, bytes), by name.
        force: replace an existing output of zoo's (see :func:`check_out_dir`).
        protected, stores: see :func:`check_out_dir`.
        max_shard_size: bytes per weights file (``model-0000i-of-0000N.safetensors``
            plus an index when there are several).
    """

    def __init__(
        self,
        out: Path,
        layout: Mapping[str, tuple[str, tuple[int, ...], int]],
        *,
        force: bool,
        protected: Iterable[Path] = (),
        stores: Iterable[Path] = (),
        max_shard_size: int = DEFAULT_SHARD_SIZE,
    ) -> None:
        self.out = Path(out)
        self.force = force
        self.protected, self.stores = tuple(protected), tuple(stores)
        self.files = plan_files(layout, max_shard_size)
        self.slots = {n: s for slots in self.files.values() for n, s in slots.items()}
        self.temp: Path | None = None
        self._fds: dict[str, int] = {}
        self._data_start: dict[str, int] = {}
        self._written: set[str] = set()
        self._filled: dict[str, int] = {}  # bytes of each tensor written in parts
        self._displaced: Path | None = None  # the previous output, set aside (commit)
        self._made: list[Path] = []  # folders above ``out`` created for it

    def __enter__(self) -> OutputFolder:
        clean_leftovers(self.out)
        check_out_dir(self.out, force=self.force, protected=self.protected, stores=self.stores)
        self.temp, self._tag, self._made = _new_temp(self.out)
        try:
            with _writing(self.out):
                for file, slots in self.files.items():
                    start = 8 + len(_header(slots, None)) + _METADATA_RESERVE
                    start += -start % 8
                    # 0o666 less the umask, as any file is created (os.open's default is
                    # 0o777: weights would be executable).
                    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
                    fd = os.open(self.temp / file, flags, 0o666)
                    self._fds[file] = fd
                    self._data_start[file] = start
                    end = max((s.end for s in slots.values()), default=0)
                    os.ftruncate(fd, start + end)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _pwrite(self, fd: int, view: memoryview, at: int) -> None:
        done = 0
        with _writing(self.out):
            while done < view.nbytes:
                done += os.pwrite(fd, view[done:], at + done)

    def put(self, name: str, data: memoryview | bytes) -> None:
        """Write one tensor's bytes (as safetensors lays them out) at its place."""
        slot = self.slots[name]
        view = memoryview(data).cast("B")
        if view.nbytes != slot.end - slot.start:
            raise AssertionError(
                f"{name}: {view.nbytes} bytes for a slot of {slot.end - slot.start}"
            )
        self._pwrite(self._fds[slot.file], view, self._data_start[slot.file] + slot.start)
        self._written.add(name)

    def put_part(self, name: str, at: int, data: memoryview | bytes) -> None:
        """Write part of one tensor's bytes, ``at`` bytes into them (parts of one tensor in
        any order, from one thread); the tensor counts as written once every byte has
        come."""
        slot = self.slots[name]
        view = memoryview(data).cast("B")
        size = slot.end - slot.start
        if at < 0 or at + view.nbytes > size:
            raise AssertionError(f"{name}: bytes {at}-{at + view.nbytes} of a slot of {size}")
        self._pwrite(self._fds[slot.file], view, self._data_start[slot.file] + slot.start + at)
        self._filled[name] = self._filled.get(name, 0) + view.nbytes
        if self._filled[name] == size:
            self._written.add(name)

    def commit(
        self,
        *,
        config: Mapping[str, Any],
        metadata: Mapping[str, str],
        card: str,
        extra_files: Mapping[str, bytes] | None = None,
    ) -> Path:
        """Write headers, config, card and marker; flush; rename into place."""
        missing = sorted(set(self.slots) - self._written)
        if missing:
            raise AssertionError(f"{len(missing)} tensors were never written, e.g. {missing[0]}")
        assert self.temp is not None
        with _writing(self.out):
            for file, slots in self.files.items():
                fd = self._fds[file]
                header = _header(slots, metadata)
                room = self._data_start[file] - 8
                if len(header) > room:
                    raise InvalidInputError(
                        f"zoo's provenance for {file} needs {len(header)} header bytes, more than "
                        f"the {room} reserved."
                    )
                header += b" " * (room - len(header))
                os.pwrite(fd, struct.pack("<Q", len(header)) + header, 0)
                os.fsync(fd)
            if len(self.files) > 1:
                index = {
                    "metadata": {"total_size": sum(s.end - s.start for s in self.slots.values())},
                    "weight_map": {n: self.slots[n].file for n in sorted(self.slots)},
                }
                (self.temp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
            (self.temp / "config.json").write_text(
                json.dumps(dict(config), indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
            (self.temp / "README.md").write_text(card, encoding="utf-8")
            for name, data in (extra_files or {}).items():
                parts = name.split("/")  # a file of a module folder: 1_Pooling/config.json
                if (
                    (self.temp / name).exists()
                    or name == MARKER
                    or any(p in ("", ".", "..") or Path(p).name != p for p in parts)
                ):
                    raise InvalidInputError(
                        f"{name!r} is not a side file zoo can write to out=.", params=["out"]
                    )
                (self.temp / name).parent.mkdir(parents=True, exist_ok=True)
                (self.temp / name).write_bytes(data)
            _write_marker(self.temp, synced=self._fds)
            self._close()
            # The output it replaced stays aside until the block ends: a record written
            # after this rename (materialize) comes first, so a process killed between the
            # two leaves the previous output beside the new one, not gone.
            self._displaced = _swap_into_place(self.temp, self.out, self._tag, force=self.force)
        self.temp = None
        return self.out

    def take_back(self) -> None:
        """Undo a commit whose record could not be written: the folder renamed into place
        goes, and the output it replaced comes back. The folder leaves by its temporary
        name, so a process killed midway is undone by the next write (or ``zoo fsck
        --repair``) as a swap killed before its rename is."""
        temp = _temp_path(self.out, self._tag)
        os.replace(self.out, temp)
        if self._displaced is not None:
            os.replace(self._displaced, self.out)
            self._displaced = None
        shutil.rmtree(temp, ignore_errors=True)

    def _close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def __exit__(self, *exc) -> None:
        self._close()
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
            self.temp = None
        if self._displaced is not None:
            shutil.rmtree(self._displaced, ignore_errors=True)
            self._displaced = None
        _remove_made(self._made)  # those that hold the output stay
        self._made = []


def _header(slots: Mapping[str, TensorSlot], metadata: Mapping[str, str] | None) -> bytes:
    entries: dict[str, Any] = {}
    if metadata:
        entries["__metadata__"] = dict(sorted(metadata.items()))
    for name, s in sorted(slots.items(), key=lambda kv: kv[1].start):
        entries[name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [s.start, s.end]}
    raw = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)


def _swap_into_place(temp: Path, out: Path, tag: str, *, force: bool) -> Path | None:
    """Rename the finished folder ``temp`` to ``out``; returns the previous output it
    set aside (the caller removes it once its own record is written), or None.

    ``out`` is judged again here, at the end of a write that may have taken minutes, by
    the rule :func:`check_out_dir` applied at its start: a folder that appeared there
    meanwhile (another writer's, or the user's) is refused without ``force``, and with it
    replaced only if it is an untouched output of zoo's, checked once more after it was
    moved aside. What is refused stays as it is; the finished folder is dropped.
    """
    from zoo.checkpoint.safetensors_format import _fsync_dir

    _take_attributes(temp, out)
    try:
        # Atomic: a non-empty folder that appeared since is never replaced (ENOTEMPTY);
        # an empty one is, which loses nothing.
        os.rename(temp, out)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not out.is_dir():
            raise
    else:
        _fsync_dir(out.parent)
        return None
    _check_replaceable(out, force=force)
    old = out.parent / f".{_stem(out)}.zoo-old-{tag}"
    os.replace(out, old)
    try:
        _check_replaceable(old, force=force, shown=out)  # what moved is what was checked
        os.replace(temp, out)
    except BaseException:
        os.replace(old, out)
        raise
    _fsync_dir(out.parent)
    return old


def _take_attributes(temp: Path, out: Path) -> None:
    """Give ``temp`` the mode, and where this process may, the owner and group of the
    folder at ``out`` it is about to replace: a folder made private for the output stays
    private. Nothing to take when ``out`` is not a folder."""
    try:
        replaced = os.lstat(out)
    except OSError:
        return
    if not stat.S_ISDIR(replaced.st_mode):
        return
    # The mode first: its owner may always set it, and a folder's chown keeps it.
    os.chmod(temp, stat.S_IMODE(replaced.st_mode))
    mine = os.lstat(temp)
    if (mine.st_uid, mine.st_gid) == (replaced.st_uid, replaced.st_gid):
        return
    for uid in (replaced.st_uid, -1):  # owner and group; else the group alone
        try:
            os.chown(temp, uid, replaced.st_gid)
            return
        except PermissionError:
            continue


def _check_replaceable(folder: Path, *, force: bool, shown: Path | None = None) -> None:
    shown = shown or folder
    if not force:
        raise ConflictError(
            f"out={str(shown)!r} appeared while zoo wrote it and is not empty; it was left as it "
            "is and nothing was recorded: write elsewhere, or pass force=True to replace an "
            "output of zoo's.",
            params=["out", "force"],
        )
    problem = _not_a_zoo_output(folder)
    if problem:
        raise ConflictError(
            f"out={str(shown)!r} changed while zoo wrote it: it {problem}; it was left as it is "
            "and nothing was recorded (force=True replaces only a folder zoo wrote).",
            params=["out", "force"],
        )
