"""The one exception hierarchy of zoo.

Every error a user can cause is a :class:`ZooError`. Each also subclasses the matching
built-in (a not-found error is a ``LookupError``, bad input a ``ValueError``) so callers
that only know Python's own exceptions still catch them. Messages are whole sentences
that say how to fix the problem; the CLI prints them on one line and maps the class to
an exit code in one table (``zoo_cli.main``).
"""

from __future__ import annotations


class ZooError(Exception):
    """Base class of every error zoo raises on purpose."""


# --- input the user gave us -------------------------------------------------------------


class InvalidInputError(ZooError, ValueError):
    """An argument, name or option is not acceptable."""


class InvalidNameError(InvalidInputError):
    """A registry name or alias has characters zoo does not accept."""


class InvalidCheckpointError(ZooError, ValueError):
    """A checkpoint on disk is malformed: missing config, bad safetensors, missing shard..."""

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

    def __init__(
        self, message: str, *, query: str | None = None, suggestions: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.query = query
        self.suggestions = suggestions or []


class AmbiguousNameError(ZooError, LookupError):
    """A name matches several artifacts; the message lists the candidates."""

    def __init__(self, message: str, *, candidates: list[str] | None = None) -> None:
        super().__init__(message)
        self.candidates = candidates or []


class OfflineError(ZooError, ConnectionError):
    """A Hub call was needed while offline, or the Hub could not be reached."""


# --- the registry's own state -------------------------------------------------------------


class SchemaOutdatedError(ZooError, RuntimeError):
    """The database schema is older (or newer) than this version of zoo expects."""


class DatabaseUnavailableError(ZooError, ConnectionError):
    """The database cannot be opened or reached (server down, bad URL, no permission)."""


class BlobMissingError(ZooError, FileNotFoundError):
    """A row points at a blob that the store does not have."""

    def __init__(self, message: str, *, digest: str | None = None) -> None:
        super().__init__(message)
        self.digest = digest


class BlobCorruptError(ZooError, OSError):
    """A stored blob's bytes no longer match its content hash."""

    def __init__(self, message: str, *, digest: str | None = None) -> None:
        super().__init__(message)
        self.digest = digest


class ConflictError(ZooError, RuntimeError):
    """The request conflicts with the registry's state (alias taken, folder not empty...)."""


class DeviceUnavailableError(ZooError, RuntimeError):
    """A device such as ``cuda`` was requested but is not available."""


class VerificationError(ZooError, RuntimeError):
    """Re-deriving or re-hashing something did not reproduce the recorded hashes."""
