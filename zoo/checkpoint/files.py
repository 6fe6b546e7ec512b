"""Opening the files of a checkpoint found on a disk.

zoo reads only regular files: a FIFO would block the reader for ever, a device such as
``/dev/zero`` never ends, and a folder or a loop of symbolic links holds no bytes. Each
is refused in one line that says what the path is, and a file is opened without
blocking, so one swapped for a FIFO after it was looked at is refused too. A file this
user may not read is a refusal of the file system (exit 11), not a malformed checkpoint.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from zoo.errors import InvalidCheckpointError, UnreadableError

__all__ = ["Watch", "cannot_read", "is_regular", "not_a_file", "open_regular", "what_is"]

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def what_is(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file (its link followed), in words;
    None for a regular file or a path where nothing is."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link in a loop"
        if os.path.islink(path):
            return f"a symbolic link to {os.readlink(path)}, which does not exist"
        return None
    if stat.S_ISREG(mode):
        return None
    kind = next((kind for test, kind in _KINDS if test(mode)), "not a regular file")
    if os.path.islink(path):
        return f"a symbolic link to {os.readlink(path)}, which is {kind}"
    return kind


def is_regular(path: Path) -> bool:
    """Whether ``path`` is a regular file, or a link to one."""
    return os.path.lexists(path) and what_is(path) is None


def not_a_file(path: Path, what: str | None = None) -> InvalidCheckpointError:
    """The refusal of ``path``, which is not a regular file (``what``: what it is)."""
    what = what or what_is(path) or "not a regular file"
    if "which does not exist" in what:  # an HF cache snapshot whose blob is gone
        advice = "the folder is incomplete (download it again)"
    else:
        advice = "zoo reads only regular files: put the file itself there"
    return InvalidCheckpointError(f"{path} is {what}; {advice}.", path=str(path))


def cannot_read(path: Path, exc: OSError) -> Exception:
    """What zoo says of ``path`` when reading it failed with ``exc``."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UnreadableError(
            f"Cannot read {path}: {exc.strerror}; give this user read access to it."
        )
    if exc.errno in (errno.ELOOP, errno.ENOENT) and os.path.islink(path):
        return not_a_file(path)
    return InvalidCheckpointError(
        f"Cannot read {path}: {exc.strerror or exc}; check that the file exists and is readable.",
        path=str(path),
    )


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file, without ever blocking (a FIFO
    opened for reading waits for a writer unless opened non-blocking).

    Raises:
        InvalidCheckpointError: ``path`` is not a regular file, or cannot be read.
        UnreadableError: this user may not read it.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise cannot_read(Path(path), exc) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((k for test, k in _KINDS if test(mode)), "not a regular file")
            raise not_a_file(Path(path), kind)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _state(path: Path) -> tuple[int, ...] | None:
    """What changes whenever the bytes at ``path`` may have: the file there (device and
    inode: another renamed over it), its size, and its modification and status-change
    times (any write or truncation sets both to the present; ``os.utime`` can set the
    first back, nothing but the clock the second). None where nothing is."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Watch:
    """The files of one checkpoint as they stood before zoo first read each, to tell
    whether any was written to before zoo last read it. Hashing a file while a trainer
    saves over it (truncating it, then writing the new version) mixes the two versions
    without a read ever coming up short once the writer is ahead of the reader; the
    file's state tells."""

    def __init__(self) -> None:
        self._before: dict[Path, tuple[int, ...] | None] = {}

    def see(self, path: Path) -> None:
        """Note ``path``'s state, unless noted already: call it before the first read."""
        self._before.setdefault(Path(path), _state(path))

    def changed(self) -> list[Path]:
        """The files whose state is not what :meth:`see` noted, in name order."""
        return sorted(p for p, before in self._before.items() if _state(p) != before)
