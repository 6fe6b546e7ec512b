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

import sqlalchemy as sa
from alembic import op

from zoo.db.downgrades import count, losing

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Not a batch: a nullable column SQLite adds in place.
    op.add_column("api_tokens", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Revoked tokens lose nothing that matters: they are refused either way.
    n = count(op.get_bind(), "api_tokens", "expires_at IS NOT NULL AND revoked_at IS NULL")
    losing(revision, n and f"the ends of the active tokens that expire ({n}): none would")
    op.drop_column("api_tokens", "expires_at")
