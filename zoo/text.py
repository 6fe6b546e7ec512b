"""Text that zoo records or prints but did not write: paths, folder names, origins.

A path found on a disk may hold bytes that are not UTF-8 (Python keeps them as lone
surrogates), which no database or JSON of zoo's takes; and it may hold control
characters, a newline above all, which printed raw would add lines of zoo's own to what
a reader takes for its output (a fake lineage line). Text output shows such characters
escaped, as Python writes them in a string (``\\n``); JSON keeps the exact string.
"""

from __future__ import annotations

__all__ = ["is_utf8", "printable"]


def is_utf8(text: str) -> bool:
    """Whether ``text`` (a path as Python decodes it) is UTF-8 text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """``text`` with every character that is not printable (a newline, a tab, an escape
    sequence's ESC, a lone surrogate) written as Python escapes it; a backslash too,
    when there is any such character, so the escaped text reads back to one string only.

    Example:
        >>> printable("new\\nline"), printable("café")
        ('new\\\\nline', 'café')
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in text)
