"""token expiry: a bearer token of zoo serve may end

``zoo token create --expires 30d`` records when the token ends, in UTC; the server refuses
it from then on, saying when it expired. Tokens created before have none and stay valid
until revoked. Going down would make tokens meant to end valid for good, so it is refused
(as a loss of recorded data) while an active token has an end, unless --drop-data.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from zoo.db.downgrades import count, losing
from zoo.db.queries import aware

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Not a batch: a nullable column SQLite adds in place.
    op.add_column("api_tokens", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Revoked tokens lose nothing that matters: they are refused either way.
    bind = op.get_bind()
    n = count(bind, "api_tokens", "expires_at IS NOT NULL AND revoked_at IS NULL")
    expired = _expired(bind) if n else 0
    if expired:  # listed as not active, yet without its end it is valid again
        phrase = (
            f"the ends of the unrevoked tokens that have one ({n}): none would end, "
            f"and the {expired} expired would be valid again"
        )
    else:
        phrase = f"the ends of the active tokens that expire ({n}): none would"
    losing(revision, n and phrase)
    op.drop_column("api_tokens", "expires_at")


def _expired(bind) -> int:
    """Unrevoked tokens whose end has passed, compared in Python as the server does
    (SQLite keeps the times as text)."""
    tokens = sa.table(
        "api_tokens",
        sa.column("expires_at", sa.DateTime(timezone=True)),
        sa.column("revoked_at", sa.DateTime(timezone=True)),
    )
    ends = bind.execute(
        sa.select(tokens.c.expires_at).where(
            tokens.c.expires_at.is_not(None), tokens.c.revoked_at.is_(None)
        )
    ).scalars()
    now = datetime.now(timezone.utc)
    return sum(aware(end) <= now for end in ends)
