"""Short-lived download links: a URL to one file that works without a header.

A browser saves a link's answer straight to disk, but a link sends no ``Authorization``
header; fetching the file with the header instead holds all of it in the page's memory
(gigabytes for a large checkpoint) before it can be saved. So the page asks the server,
with its token, for a link to one file, and follows it.

A link names the token it was made for and when it expires, and is signed with HMAC-SHA256
under a key this server process draws at start: it opens only that file's path, only
until it expires, only while the token is active (a revoked token's links stop at once),
and no other server can make one. A restart makes every link invalid; the page asks again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from zoo.errors import AuthenticationError

LINK_TTL_S = 300  # a link must start its download within this; the page follows it at once


@dataclass(frozen=True)
class Link:
    token: int
    expires: int  # unix seconds
    signature: str

    def query(self) -> str:
        return f"link_token={self.token}&expires={self.expires}&signature={self.signature}"


class DownloadLinks:
    """Makes and checks the signed links of one server process."""

    def __init__(self, ttl_s: int = LINK_TTL_S) -> None:
        self._key = secrets.token_bytes(32)
        self.ttl_s = ttl_s

    def sign(self, name: str, filename: str, token: int, *, now: float | None = None) -> Link:
        """A link to the file ``filename`` of the artifact ``name`` for the token with id
        ``token``, valid for :attr:`ttl_s` seconds from ``now``."""
        expires = int(time.time() if now is None else now) + self.ttl_s
        return Link(token, expires, self._mac(name, filename, token, expires))

    def check(
        self, name: str, filename: str, token: int, expires: int, signature: str, *, now=None
    ) -> None:
        """Raise :class:`AuthenticationError` unless ``signature`` is this server's for
        ``name``, ``filename``, ``token`` and ``expires``, and ``expires`` has not passed.
        Whether the token is still active is the caller's to check."""
        mac = self._mac(name, filename, token, expires).encode()
        # As bytes: compare_digest refuses a str with characters beyond ASCII.
        if not hmac.compare_digest(signature.encode("utf-8", "surrogatepass"), mac):
            raise AuthenticationError(
                "This download link is not valid for this file on this server (a restart "
                "makes old links invalid): open the artifact's page and download it again."
            )
        if (time.time() if now is None else now) > expires:
            raise AuthenticationError(
                "This download link has expired: open the artifact's page and download it again."
            )

    def _mac(self, name: str, filename: str, token: int, expires: int) -> str:
        message = json.dumps([name, filename, token, expires]).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
