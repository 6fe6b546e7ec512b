"""Bearer tokens for ``zoo serve``: created, listed, revoked and checked here.

A token is ``zoo_`` plus 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits);
only its sha256 is stored, so reading the database does not give anyone access. Roles are
ordered: ``read`` < ``write`` < ``admin``; each endpoint names the least role it needs.
A token may end (``expires_at``, UTC): from then on the server refuses it, saying when it
expired, as it refuses a revoked one; one without an end is valid until revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from zoo.errors import AuthenticationError, ConflictError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ROLES = ("read", "write", "admin")
PREFIX = "zoo_"


@dataclass(frozen=True)
class TokenInfo:
    """A token's record (never its secret)."""

    id: int
    name: str
    role: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    expires_at: datetime | None = None  # None: until revoked
    expired: bool = False  # when the record was read, by the registry's clock

    @property
    def active(self) -> bool:
        return self.revoked_at is None and not self.expired

    def allows(self, role: str) -> bool:
        return self.active and ROLES.index(self.role) >= ROLES.index(role)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "expired": self.expired,
            "active": self.active,
        }


def clock() -> datetime:
    """Now, in UTC: what a token's end is compared with (tests move it)."""
    return datetime.now(timezone.utc)


def parse_expiry(expires: str | datetime | timedelta | None, *, at: datetime) -> datetime | None:
    """When a token made at ``at`` ends: None (never), a duration from ``at`` with its
    unit (``30d``, ``12h``, ``2w``; as ``zoo gc --grace`` reads one), an ISO date
    (``2027-01-31``: 00:00 UTC that day) or time (``2027-01-31T18:00``, UTC unless it
    names its offset), a datetime (naive: UTC) or a timedelta. It must be after ``at``.

    Example:
        >>> parse_expiry("2027-01-31", at=datetime(2026, 12, 1, tzinfo=timezone.utc))
        datetime.datetime(2027, 1, 31, 0, 0, tzinfo=datetime.timezone.utc)
    """
    from zoo.api.arguments import parse_duration

    if expires is None:
        return None
    from zoo.text import printable

    said = f"expires={printable(str(expires))[:40]!r}"
    unread = InvalidInputError(
        f"{said} is not a duration or a date; write a duration with its unit "
        "(30d, 12h, 2w) or an ISO date or time (2027-01-31, 2027-01-31T18:00Z).",
        params=["expires"],
    )
    try:
        if isinstance(expires, timedelta):
            end = at + expires
        elif isinstance(expires, datetime):
            end = expires
        elif not isinstance(expires, str):
            raise InvalidInputError(
                f"An expiry is text such as 30d or 2027-01-31, not {expires!r:.40}."
            )
        elif expires.strip()[-1:] in ("s", "m", "h", "d", "w"):
            try:
                end = at + timedelta(seconds=parse_duration(expires.strip()))
            except InvalidInputError:  # its words name no argument ("'30days' is not...")
                raise unread from None
        else:
            try:
                text = expires.strip()
                # Python 3.10 reads no "Z" (UTC), which an ISO time may end with.
                text = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
                end = datetime.fromisoformat(text)
            except ValueError:
                raise unread from None
    except OverflowError:
        raise InvalidInputError(
            f"{said} ends after the year 9999; give an earlier one.", params=["expires"]
        ) from None
    end = end.replace(tzinfo=timezone.utc) if end.tzinfo is None else end.astimezone(timezone.utc)
    if end <= at:
        raise InvalidInputError(
            f"{said} ends at {end.isoformat(timespec='seconds')}, not after now "
            f"({at.isoformat(timespec='seconds')}); give a later time or a duration (30d).",
            params=["expires"],
        )
    return end


def _refuse_expired(info: TokenInfo, made_for: str = "") -> None:
    if info.expired:
        assert info.expires_at is not None
        # An admin's own token: the server takes no other way to make a token, so a new
        # one is made where the database is, as the first was.
        remedy = (
            "make a new admin token where the registry's database is reachable, as the "
            "first one was (zoo token create --name NAME --role admin, without ZOO_ENDPOINT)"
            if info.role == "admin"
            else "an admin can create a new one (zoo token create)"
        )
        raise AuthenticationError(
            f"The token {info.name!r}{made_for} expired at "
            f"{info.expires_at.isoformat(timespec='seconds')}; {remedy}."
        )


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    return role


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _info(row, now: datetime) -> TokenInfo:
    from zoo.db.queries import aware

    expires_at = aware(row.expires_at) if row.expires_at else None
    return TokenInfo(
        row.id,
        row.name,
        row.role,
        aware(row.created_at),
        row.created_by,
        aware(row.revoked_at) if row.revoked_at else None,
        expires_at,
        expires_at is not None and expires_at <= now,
    )


def create_token(
    reg, name: str, role: str, expires: str | datetime | timedelta | None = None
) -> tuple[TokenInfo, str]:
    """A new token, valid until ``expires`` (:func:`parse_expiry`; None: until revoked);
    returns its record and the secret, which is shown only this once."""
    from sqlalchemy import select

    from zoo.checkpoint import validate_name
    from zoo.db.models import ApiToken

    validate_name(name, "token name")
    check_role(role)
    created = clock()
    expires_at = parse_expiry(expires, at=created)
    secret = PREFIX + secrets.token_urlsafe(32)

    def work(session: Session) -> TokenInfo:
        named = session.scalars(
            select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
        ).all()
        if any(_info(r, created).active for r in named):  # an expired one may be replaced
            raise ConflictError(
                f"An active token is already named {name!r}; revoke it with "
                f"`zoo token revoke {name}` or choose another name."
            )
        row = ApiToken(
            name=name,
            role=role,
            token_hash=hash_secret(secret),
            created_at=created,
            created_by=reg.user,
            expires_at=expires_at,
        )
        session.add(row)
        session.flush()
        return _info(row, created)

    return reg.transaction(work), secret


def revoke_token(reg, name: str) -> list[TokenInfo]:
    """Revoke the active tokens named ``name``; the server refuses them from then on."""
    from sqlalchemy import select

    from zoo.db.models import ApiToken
    from zoo.db.queries import check_lookup, now

    check_lookup(name, "token name")

    def work(session: Session) -> list[TokenInfo]:
        rows = session.scalars(
            select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
        ).all()
        if not rows:
            raise NotFoundError(f"No active token is named {name!r}; see `zoo token list`.")
        for row in rows:
            row.revoked_at = now()
        session.flush()
        return [_info(r, clock()) for r in rows]

    return reg.transaction(work)


def list_tokens(reg, *, include_revoked: bool = False) -> list[TokenInfo]:
    from sqlalchemy import select

    from zoo.db.models import ApiToken

    with reg.session() as session:
        query = select(ApiToken).order_by(ApiToken.id)
        if not include_revoked:
            query = query.where(ApiToken.revoked_at.is_(None))
        now = clock()
        return [_info(r, now) for r in session.scalars(query).all()]


def check_token(reg, secret: str) -> TokenInfo | None:
    """The active token whose secret this is, or None (unknown or revoked).

    Raises:
        AuthenticationError: the token has expired (saying when), read in the same query.
    """
    from sqlalchemy import select

    from zoo.db.models import ApiToken

    if not isinstance(secret, str) or not secret.startswith(PREFIX) or len(secret) > 128:
        return None
    with reg.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_secret(secret)))
        if row is None or row.revoked_at is not None:
            return None
        info = _info(row, clock())
    _refuse_expired(info)
    return info


def active_token(reg, token_id: int) -> TokenInfo | None:
    """The token with id ``token_id`` while it is active, or None (a signed download link
    names its token by id: :mod:`zoo.server.links`).

    Raises:
        AuthenticationError: the token has expired (saying when).
    """
    from zoo.db.models import ApiToken

    if type(token_id) is not int or not 0 < token_id < 2**63:  # no bool, text or overflow
        return None
    with reg.session() as session:
        row = session.get(ApiToken, token_id)
        if row is None or row.revoked_at is not None:
            return None
        info = _info(row, clock())
    _refuse_expired(info, " this download link was made for")
    return info
