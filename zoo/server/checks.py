"""What the server refuses before the registry sees it: names no artifact can have, and
upload file names that could leave the staging folder."""

from __future__ import annotations

import re

from zoo.errors import InvalidInputError, InvalidNameError

# Files accepted in an upload: plain names, no folders, no hidden files.
_UPLOAD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
# The weights, their configs and the side files (zoo.checkpoint.side_files) a folder holds.
_UPLOAD_SUFFIXES = (".json", ".safetensors", ".md", ".txt", ".model", ".jinja", ".tiktoken")


def check_query(text: str, what: str = "name") -> str:
    """Refuse, before the database sees it, what no name can hold and some databases
    cannot store (NUL, control characters, thousands of characters); anything else is
    looked up, and not found, as on the command line. A slash quoted in a path segment
    (kept as ``%2F`` by :class:`zoo.server.app.QuotedSlashes`) is a slash."""
    text = text.replace("%2F", "/")
    if not text or len(text) > 256 or not text.isprintable():
        shown = text[:40].encode("unicode_escape").decode() if text else ""
        raise InvalidNameError(
            f"{shown!r} is not a zoo {what}: use 1 to 128 letters, digits, '.', '_' and '-', "
            "starting with a letter, digit or '_'."
        )
    return text


def check_upload_name(name: str | None) -> str:
    base = name or ""
    if not _UPLOAD_NAME.fullmatch(base) or not base.endswith(_UPLOAD_SUFFIXES):
        shown = base[:40].encode("unicode_escape").decode()
        raise InvalidInputError(
            f"Upload file name {shown!r} is refused: plain file names only (no folders), "
            f"ending in {', '.join(_UPLOAD_SUFFIXES)}."
        )
    return base
