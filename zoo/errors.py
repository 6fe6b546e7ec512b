"""The one exception hierarchy of zoo.

Every error a user can cause is a :class:`ZooError`. Each also subclasses the matching
built-in (a not-found error is a ``LookupError``, bad input a ``ValueError``) so callers
that only know Python's own exceptions still catch them. Messages are whole sentences
that say how to fix the problem. Each class carries what a front end answers with: the
CLI's exit code (``exit_code``) and a server's HTTP status (``http_status``), so renaming
or adding a class cannot silently change either.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Iterable


class ZooError(Exception):
    """Base class of every error zoo raises on purpose."""

    exit_code: int = 1
    http_status: int = 500
    #: The Python parameters its message names, each as a call writes it: ``levels=``, or
    #: with a value ``method='dct'``, ``force=True``. The CLI says its flags there instead
    #: (``--levels``, ``--method dct``, ``--force``), a server its JSON fields
    #: (:func:`reworded`), so each surface's message is in its caller's words.
    params: tuple[str, ...] = ()

    def __init__(self, *args, params: Iterable[str] = ()) -> None:
        super().__init__(*args)
        if params:
            self.params = tuple(params)


# --- input the user gave us -------------------------------------------------------------


class InvalidInputError(ZooError, ValueError):
    """An argument, name or option is not acceptable."""

    exit_code = 2
    http_status = 400


class InvalidNameError(InvalidInputError):
    """A registry name or alias has characters zoo does not accept."""


class InvalidCheckpointError(ZooError, ValueError):
    """A checkpoint on disk is malformed: missing config, bad safetensors, missing shard..."""

    exit_code = 2
    http_status = 422

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class ConfigMismatchError(InvalidCheckpointError):
    """The weights contradict their config.json (layers it names are missing, or a tensor's
    shape is not the one the config implies)."""


class UnsafeFormatError(InvalidCheckpointError):
    """A pickle-based checkpoint was offered where only safetensors are accepted."""


class UnknownFamilyError(InvalidInputError):
    """A config's model_type (or a requested family) is not one zoo knows."""


class InvalidTargetError(InvalidInputError):
    """A requested target size cannot be built (e.g. hidden not divisible by heads)."""


class TransformError(InvalidInputError):
    """A transform was called with arguments it cannot honour (unknown wavelet, level...)."""


# --- things that are not there --------------------------------------------------------------


class NotFoundError(ZooError, LookupError):
    """A name, alias, id or hash matches nothing in the registry."""

    exit_code = 3
    http_status = 404

    def __init__(
        self, message: str, *, query: str | None = None, suggestions: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.query = query
        self.suggestions = suggestions or []


class AmbiguousNameError(ZooError, LookupError):
    """A name matches several artifacts; the message lists the candidates."""

    exit_code = 3
    http_status = 409

    def __init__(self, message: str, *, candidates: list[str] | None = None, params=()) -> None:
        super().__init__(message, params=params)
        self.candidates = candidates or []


class OfflineError(ZooError, ConnectionError):
    """A Hub call was needed while offline, or the Hub could not be reached."""

    exit_code = 8
    http_status = 503


# --- the registry's own state -------------------------------------------------------------


class SchemaOutdatedError(ZooError, RuntimeError):
    """The database schema is older (or newer) than this version of zoo expects."""

    exit_code = 5
    http_status = 503


class DatabaseUnavailableError(ZooError, ConnectionError):
    """The database cannot be opened or reached (server down, bad URL, no permission)."""

    exit_code = 9
    http_status = 503


class BlobMissingError(ZooError, FileNotFoundError):
    """A row points at a blob that the store does not have."""

    exit_code = 6
    http_status = 500

    def __init__(self, message: str, *, digest: str | None = None) -> None:
        super().__init__(message)
        self.digest = digest


class BlobNotAFileError(BlobMissingError):
    """Something other than a file (a folder) is at a blob's name: not zoo's, so zoo
    neither reads it nor replaces it."""


class ChangedWhileReadError(InvalidInputError):
    """A file changed while zoo read it: its bytes read a second time (to store them) are
    not those hashed the first time, it was written to between zoo's first read of it and
    its last, or a client's upload found it changed as it was sent. Nothing is stored under
    the first hash."""

    def __init__(self, message: str, *, digest: str | None = None, why: str | None = None) -> None:
        super().__init__(message)
        self.digest = digest
        #: What changed, in words for a message that names the whole checkpoint.
        self.why = why

    @classmethod
    def of_import(cls, path, what: str) -> ChangedWhileReadError:
        """An import of the checkpoint at ``path`` refused because ``what`` (in words)."""
        return cls(
            f"{path} changed while zoo imported it ({what}); nothing was recorded. Import it "
            "again once whatever writes it is done."
        )


class BlobCorruptError(ZooError, OSError):
    """A stored blob's bytes no longer match its content hash."""

    exit_code = 6
    http_status = 500

    def __init__(self, message: str, *, digest: str | None = None) -> None:
        super().__init__(message)
        self.digest = digest


class StorageError(ZooError, OSError):
    """A file system or object store cannot take what zoo must write (no space...), or
    give what it must read (no permission)."""

    exit_code = 11
    http_status = 507


class UnreadableError(StorageError):
    """A file zoo must read is one this user may not read (no permission): the file
    system's refusal, not a fault of the file. To a server's client, the server's own
    failure."""

    http_status = 500


class StoreUnavailableError(StorageError):
    """The blob store itself cannot be reached as configured (an object store's bucket
    missing, or hidden from these credentials). To a server's client, the server's own
    failure: its store's URL and settings are not the caller's to fix."""

    http_status = 503


class NoRoomError(StorageError):
    """An output its file system has no room for, refused before any byte is written;
    with the numbers, so a server can say it without its own paths."""

    def __init__(
        self, message: str, *, needed: int | None = None, free: int | None = None, params=()
    ):
        super().__init__(message, params=params)
        self.needed, self.free = needed, free


class ConflictError(ZooError, RuntimeError):
    """The request conflicts with the registry's state (alias taken, folder not empty...)."""

    exit_code = 4
    http_status = 409


class DeviceUnavailableError(ZooError, RuntimeError):
    """A device such as ``cuda`` was requested but is not available."""

    exit_code = 7
    http_status = 503


class VerificationError(ZooError, RuntimeError):
    """Re-deriving or re-hashing something did not reproduce the recorded hashes."""

    exit_code = 6
    http_status = 500


# --- a zoo server and its clients ------------------------------------------------------------


class AuthenticationError(ZooError, PermissionError):
    """A zoo server was called without a token it accepts (none, unknown or revoked)."""

    exit_code = 12
    http_status = 401


class PermissionDeniedError(AuthenticationError):
    """The token is valid but its role does not allow the request (read on a write)."""

    http_status = 403


class PayloadTooLargeError(InvalidInputError):
    """An upload exceeds the server's configured limit (``zoo serve --max-upload``)."""

    http_status = 413


class ServerUnavailableError(ZooError, ConnectionError):
    """The zoo server named by ZOO_ENDPOINT cannot be reached, or answered garbage."""

    exit_code = 9
    http_status = 502


class NoSuchRouteError(ServerUnavailableError):
    """The server has no route for a request: the client's ZOO_ENDPOINT is not the zoo
    server's address (a path after its root that no proxy serves it under, or one a proxy
    passes on to a server not started with that --root-path), or the server's zoo is
    older than the client's. Not a missing artifact (exit 3): the request never reached
    one."""

    http_status = 404


class ClientGoneError(ZooError, RuntimeError):
    """A server's client left (Ctrl-C, a dropped connection) before its import, extract
    or materialize was recorded, and no other client waited for the same work: it stopped
    before its rows were written, as the command stopped locally would have. The answer
    reaches no one; the server's log shows its status, nginx's "client closed request"."""

    exit_code = 130
    http_status = 499


class InterruptedAfterWriting(KeyboardInterrupt):
    """Ctrl-C held back while an output folder was renamed into place and recorded, acted
    on once both were done: the work it interrupted is complete and kept. A
    KeyboardInterrupt still, so a loop of such calls stops."""


# A parameter as a Python call names it: ``name=`` and its value, if any: quoted text (as
# repr writes it, escapes and all: ``'a\\'b"c'``), a number, True/False/None, or a bare
# name (``method=dwt or dct``, a choice in words).
_QUOTED = r"'(?:[^'\\\n]|\\.)*'" + r'|"(?:[^"\\\n]|\\.)*"'
_VALUE = rf"""(?:{_QUOTED}|-?\d+(?:\.\d+)?\b|[A-Za-z_][\w-]*(?:\.\w+)*)"""
# Quoted text of the user's (a path, a name: ``'runs/out=3'``) is said as it is, whatever
# it holds that looks like a parameter.
_USER_TEXT = rf"(?<!\w)(?:{_QUOTED})(?!\w)"
# A registry call a message tells its reader to make, as Python writes it: ``reg.gc()``,
# ``reg.verify(repair=True)``. The CLI says its command (``zoo verify --repair``).
_CALL = rf"(?<![\w.])reg\.([a-z_]+)\(((?:[^()'\"\n]|{_QUOTED})*)\)"


def reworded(
    exc: BaseException,
    word: Callable[[str, str | None], str],
    call: Callable[[str, str], str] | None = None,
) -> str:
    """The first line of ``exc``'s message with each parameter it names (its ``params``,
    written as a Python call writes them) in another surface's words: ``word(name,
    value)``, where value is the Python text of the value named with it, or None; and
    with each registry call it names (``reg.gc()``) as ``call(method, arguments)`` says
    it, where one is given. What the message quotes is the user's text, and stays as it
    is, as do the arguments of a call (a server's client reads them as Python)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    params = getattr(exc, "params", ())
    if not params and call is None:
        return line
    names = "|".join(re.escape(p) for p in sorted(params, key=len, reverse=True))
    named = rf"(?<![\w.-])({names})=({_VALUE})?|" if names else ""
    pattern = re.compile(rf"{_CALL}|{named}{_USER_TEXT}")

    def said(m: re.Match) -> str:
        if m[1]:
            return call(m[1], m[2]) if call is not None else m[0]
        if names and m[3]:
            return word(m[3], m[4])
        return m[0]

    return pattern.sub(said, line)


def python_value(value: str | None):
    """The value a message's ``name=value`` names (its Python text), as an object."""
    import ast

    if value is None:
        return None
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):  # a bare name: the text itself
        return value


def json_words(exc: BaseException) -> str:
    """``exc``'s first line as a server answers it: each parameter as its request's JSON
    field, ``"levels"``, ``"method": "dct"``."""
    import json

    def word(name: str, value: str | None) -> str:
        shown = f'"{name}"'
        return shown if value is None else f"{shown}: {json.dumps(python_value(value))}"

    return reworded(exc, word)


def from_json_words(message: str, params: Iterable[str]) -> str:
    """A server's message (:func:`json_words`) in a Python call's words again."""
    import json

    names = "|".join(re.escape(p) for p in sorted(params, key=len, reverse=True))
    if not names:
        return message
    value = r'"(?:[^"\\\n]|\\.)*"|-?\d+(?:\.\d+)?|true|false|null'
    pattern = re.compile(rf'"({names})"(?:: ({value}))?|{_USER_TEXT}')

    def word(m: re.Match) -> str:
        if m.group(1) is None:  # the user's quoted text
            return m.group(0)
        if m.group(2) is None:
            return f"{m.group(1)}="
        return f"{m.group(1)}={json.loads(m.group(2))!r}"

    return pattern.sub(word, message)


#: Exit codes for failures of the environment rather than of zoo's own checks: a database
#: driver's error, and a file system or object store refusing (no space, no permission).
EXIT_DATABASE = DatabaseUnavailableError.exit_code
EXIT_STORAGE = StorageError.exit_code

#: What a file system answers when it cannot take what zoo writes: zoo says so in one line
#: naming what it was writing (an output folder, the blob store), with exit 11.
WRITE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EFBIG,
        errno.EIO,
        errno.ENAMETOOLONG,
    }
)
