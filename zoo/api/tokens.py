"""Bearer tokens for ``zoo serve``: created, listed, revoked and checked here.

A token is ``zoo_`` plus 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits);
only its sha256 is stored, so reading the database does not give anyone access. Roles are
ordered: ``read`` < ``write`` < ``admin``; each endpoint names the least role it needs.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from zoo.errors import ConflictError, InvalidInputError, NotFoundError

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

    @property
    def active(self) -> bool:
        return self.revoked_at is None

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
            "active": self.active,
        }


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    return role


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _info(row) -> TokenInfo:
    from zoo.db.queries import aware

    return TokenInfo(
        row.id,
        row.name,
        row.role,
        aware(row.created_at),
        row.created_by,
        aware(row.revoked_at) if row.revoked_at else None,
    )


def create_token(reg, name: str, role: str) -> tuple[TokenInfo, str]:
    """A new token; returns its record and the secret, which is shown only this once."""
    from sqlalchemy import select

    from zoo.checkpoint import validate_name
    from zoo.db.models import ApiToken
    from zoo.db.queries import now

    validate_name(name, "token name")
    check_role(role)
    secret = PREFIX + secrets.token_urlsafe(32)

    def work(session: Session) -> TokenInfo:
        taken = session.scalar(
            select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
        )
        if taken is not None:
            raise ConflictError(
                f"An active token is already named {name!r}; revoke it with "
                f"`zoo token revoke {name}` or choose another name."
            )
        row = ApiToken(
            name=name,
            role=role,
            token_hash=hash_secret(secret),
            created_at=now(),
            created_by=reg.user,
        )
        session.add(row)
        session.flush()
        return _info(row)

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
        return [_info(r) for r in rows]

    return reg.transaction(work)


def list_tokens(reg, *, include_revoked: bool = False) -> list[TokenInfo]:
    from sqlalchemy import select

    from zoo.db.models import ApiToken

    with reg.session() as session:
        query = select(ApiToken).order_by(ApiToken.id)
        if not include_revoked:
            query = query.where(ApiToken.revoked_at.is_(None))
        return [_info(r) for r in session.scalars(query).all()]


def check_token(reg, secret: str) -> TokenInfo | None:
    """The active token whose secret this is, or None."""
    from sqlalchemy import select

    from zoo.db.models import ApiToken

    if not isinstance(secret, str) or not secret.startswith(PREFIX) or len(secret) > 128:
        return None
    with reg.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_secret(secret)))
        return _info(row) if row is not None and row.revoked_at is None else None


def active_token(reg, token_id: int) -> TokenInfo | None:
    """The token with id ``token_id`` while it is active, or None (a signed download link
    names its token by id: :mod:`zoo.server.links`)."""
    from zoo.db.models import ApiToken

    if type(token_id) is not int or not 0 < token_id < 2**63:  # no bool, text or overflow
        return None
    with reg.session() as session:
        row = session.get(ApiToken, token_id)
        return _info(row) if row is not None and row.revoked_at is None else None
