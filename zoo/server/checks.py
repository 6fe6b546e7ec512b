"""What the server refuses before the registry sees it: names no artifact can have, and
upload file names that could leave the staging folder."""

from __future__ import annotations

import re

from zoo.errors import InvalidInputError, InvalidNameError

# Files accepted in an upload: plain names, no hidden files, in a few folders at most.
_UPLOAD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_UPLOAD_DEPTH = 4
# The weights, their configs and the side files (zoo.checkpoint.side_files) a folder holds.
_UPLOAD_SUFFIXES = (".json", ".safetensors", ".md", ".txt", ".model", ".jinja", ".tiktoken")


def check_query(text: str, what: str = "name") -> str:
    """A name, alias or hash to look up, refused as the local registry refuses it, in its
    words (:func:`zoo.db.entities.check_lookup`: NUL, or longer than any name); anything
    else is answered by the registry, as the command line answers it. A slash quoted in a
    path segment (kept as ``%2F`` by :class:`zoo.server.app.QuotedSlashes`) is a slash."""
    from zoo.db.entities import check_lookup

    text = text.replace("%2F", "/")
    check_lookup(text, what)
    return text


def check_name(text: str, what: str = "name") -> str:
    """A name to give (an alias, a new artifact's name) or a pattern: refused as the
    command line refuses it (exit 2) when no name can hold it."""
    if not _storable(text):
        raise InvalidNameError(
            f"{_shown(text)} is not a zoo {what}: use 1 to 128 ASCII letters, digits, '.', '_' "
            "and '-', starting with a letter, digit or '_'."
        )
    return text


def _storable(text: str) -> bool:
    return bool(text) and len(text) <= 256 and text.isprintable()


def _shown(text: str) -> str:
    """The text quoted and escaped once, as the command line shows a name (``repr``)."""
    return repr(text[:40])


def check_upload_name(name: str | None) -> str:
    """A file's name in an uploaded folder: a plain name, or a path of plain names below
    it (a sentence-transformers module folder's ``1_Pooling/config.json``), each part
    starting with a letter, digit or '_' (no '..', no hidden name, nothing absolute). At
    the top, of a kind a checkpoint folder holds (:data:`_UPLOAD_SUFFIXES`, code a
    config's auto_map names, a side file by its name: a license file, a tokenizer's
    bpe.codes or source.spm); in a module folder, any such name, as an
    import keeps every file of one (a Dense module's ``pytorch_model.bin`` too: stored as
    bytes, never unpickled)."""
    from zoo.checkpoint.side_files import is_side_file

    text = name or ""
    parts = text.split("/")
    base = parts[-1]
    if (
        len(parts) > _UPLOAD_DEPTH
        or not all(_UPLOAD_NAME.fullmatch(p) for p in parts)
        or not (len(parts) > 1 or base.endswith((*_UPLOAD_SUFFIXES, ".py")) or is_side_file(base))
    ):
        shown = text[:40].encode("unicode_escape").decode()
        raise InvalidInputError(
            f"Upload file name {shown!r} is refused: plain names, in at most "
            f"{_UPLOAD_DEPTH - 1} folders; at the top, ending in "
            f"{', '.join(_UPLOAD_SUFFIXES)} or .py, or a side file's name (LICENSE, bpe.codes)."
        )
    return text
