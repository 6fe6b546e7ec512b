"""Registry names and aliases: what characters zoo accepts, and why.

A name is 1 to 128 ASCII characters from ``A-Z a-z 0-9 . _ -``, starting with a letter,
digit or ``_``. Names end up in file names, URLs, shell commands and object-store keys, so
path separators (``/`` and ``\\``), whitespace, control characters and a leading ``.`` or
``-`` (hidden files, ``..``, command-line options) are refused, as is a name of 8 to 64 hex
digits, which would read as a content hash or a prefix of one (and take over that prefix).
"""

from __future__ import annotations

import re

from zoo.errors import InvalidNameError

__all__ = ["MAX_NAME_LENGTH", "validate_name"]

MAX_NAME_LENGTH = 128

_ALLOWED = re.compile(r"[A-Za-z0-9._-]")
_HASH = re.compile(r"[0-9a-fA-F]{8,64}")
_RULE = "use ASCII letters, digits, '.', '_' and '-' only"


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` unchanged if zoo accepts it as a registry name or alias.

    Args:
        name: the proposed name.
        what: how to call it in the error (``"name"``, ``"alias"``...).

    Raises:
        InvalidNameError: naming the first bad character and its position.

    Example:
        >>> validate_name("bert-base.v2")
        'bert-base.v2'
        >>> validate_name("org/bert")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        zoo.errors.InvalidNameError: The name 'org/bert' contains '/' at position 3, a path ...
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"The {what} must be a string, not {type(name).__name__}.")
    if not name:
        raise InvalidNameError(f"The {what} is empty; give it 1 to {MAX_NAME_LENGTH} characters.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(
            f"The {what} {name[:20]!r}... is {len(name)} characters long; shorten it to at "
            f"most {MAX_NAME_LENGTH}."
        )
    for i, ch in enumerate(name):
        if _ALLOWED.fullmatch(ch):
            continue
        if ch in "/\\":
            kind = ", a path separator"
        elif ch.isspace():
            kind = ", whitespace"
        elif not ch.isprintable():
            kind = ", a control character"
        elif not ch.isascii():  # a letter to its user ('é'), but not one a name may hold
            kind = ", which is not ASCII"
        else:
            kind = ""
        raise InvalidNameError(
            f"The {what} {name!r} contains {ch!a} at position {i}{kind}; {_RULE}."
        )
    if name[0] in ".-":
        raise InvalidNameError(
            f"The {what} {name!r} starts with {name[0]!r}; start it with a letter, digit or '_'."
        )
    if _HASH.fullmatch(name):
        raise InvalidNameError(
            f"The {what} {name!r} looks like a content hash or a prefix of one; choose a "
            "name that is not 8 to 64 hex digits."
        )
    return name
