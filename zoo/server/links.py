"""Short-lived download links: a URL to one file that works without a header.

A browser saves a link's answer straight to disk, but a link sends no ``Authorization``
header; fetching the file with the header instead holds all of it in the page's memory
(gigabytes for a large checkpoint) before it can be saved. So the page asks the server,
with its token, for a link to one file, and follows it.

A link names the token it was made for and when it expires, and is signed with HMAC-SHA256:
it opens only that file's path, only until it expires, only while the token is active (a
revoked token's links stop at once). The key is drawn at start, so no other server can make
one and a restart makes every link invalid (the page asks again), unless the operator gives
servers a key file (``zoo serve --link-key-file``): replicas behind one balancer then take
each other's links, the page's request for a link and its download landing on either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from zoo.errors import AuthenticationError, InvalidInputError

LINK_TTL_S = 300  # a link must start its download within this; the page follows it at once
# A key file's least content: HMAC-SHA256's own key size (RFC 2104, section 3: a key shorter
# than the hash's output weakens it).
LINK_KEY_MIN_BYTES = 32


@dataclass(frozen=True)
class Link:
    token: int
    expires: int  # unix seconds
    signature: str

    def query(self) -> str:
        return f"link_token={self.token}&expires={self.expires}&signature={self.signature}"


class DownloadLinks:
    """Makes and checks the signed links of one server process."""

    def __init__(self, ttl_s: int = LINK_TTL_S, key: bytes | None = None) -> None:
        self._key = secrets.token_bytes(LINK_KEY_MIN_BYTES) if key is None else key
        self.ttl_s = ttl_s

    def sign(
        self,
        name: str,
        filename: str,
        token: int,
        *,
        now: float | None = None,
        until: datetime | None = None,
    ) -> Link:
        """A link to the file ``filename`` of the artifact ``name`` for the token with id
        ``token``, valid for :attr:`ttl_s` seconds from ``now``, and no later than
        ``until`` (the token's end: the link is refused from then on, so its answer says
        so rather than a time it will not reach)."""
        expires = int(time.time() if now is None else now) + self.ttl_s
        if until is not None:
            expires = min(expires, math.floor(until.timestamp()))
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
                "This download link is not valid for this file on this server (a restart, "
                "or another server without the same --link-key-file, makes old links "
                "invalid): open the artifact's page and download it again."
            )
        if (time.time() if now is None else now) > expires:
            raise AuthenticationError(
                "This download link has expired: open the artifact's page and download it again."
            )

    def _mac(self, name: str, filename: str, token: int, expires: int) -> str:
        message = json.dumps([name, filename, token, expires]).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


def read_link_key(path: str | Path) -> bytes:
    """The signing key in the file ``path`` (its bytes, a final newline aside), refused in
    one line where it cannot be read or is too short to sign with."""
    try:
        key = Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise InvalidInputError(
            f"--link-key-file {path}: cannot be read ({exc.strerror or exc})."
        ) from None
    if len(key) < LINK_KEY_MIN_BYTES:
        raise InvalidInputError(
            f"--link-key-file {path} holds {len(key)} bytes; a signing key needs at least "
            f"{LINK_KEY_MIN_BYTES}, e.g. the output of: python -c "
            '"import secrets; print(secrets.token_hex(32))"'
        )
    return key
