"""artifact totals: kept and removed artifacts of each kind, kept by the database itself

A listing prints how many artifacts match. Counting them visits one index entry per
artifact (about 4 ms per 100k on PostgreSQL, more than the page itself), so the totals
that the unfiltered and kind-only listings print are kept in this small table instead.
Triggers on ``artifacts`` maintain it, so every writer (zoo's, an older zoo's, a hand-run
statement) keeps it exact without knowing it exists.

On PostgreSQL the trigger is deferred to commit and takes one advisory lock first: the
rows are locked only while a writer commits, and always in the same order (a transaction
that writes a source and a placeholder and one that writes them the other way round
would otherwise deadlock).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# pg_advisory_xact_lock key of the totals ("zoo_tot"); the lineage lock has another.
PG_TOTALS_LOCK = 0x7A6F6F5F746F74

_SQLITE_TRIGGERS = (
    """
    CREATE TRIGGER artifact_totals_insert AFTER INSERT ON artifacts BEGIN
        INSERT OR IGNORE INTO artifact_totals (kind, kept, removed) VALUES (NEW.kind, 0, 0);
        UPDATE artifact_totals SET kept = kept + (NEW.deleted_at IS NULL),
            removed = removed + (NEW.deleted_at IS NOT NULL)
        WHERE kind = NEW.kind;
    END
    """,
    """
    CREATE TRIGGER artifact_totals_delete AFTER DELETE ON artifacts BEGIN
        UPDATE artifact_totals SET kept = kept - (OLD.deleted_at IS NULL),
            removed = removed - (OLD.deleted_at IS NOT NULL)
        WHERE kind = OLD.kind;
    END
    """,
    """
    CREATE TRIGGER artifact_totals_update AFTER UPDATE OF kind, deleted_at ON artifacts BEGIN
        UPDATE artifact_totals SET kept = kept - (OLD.deleted_at IS NULL),
            removed = removed - (OLD.deleted_at IS NOT NULL)
        WHERE kind = OLD.kind;
        INSERT OR IGNORE INTO artifact_totals (kind, kept, removed) VALUES (NEW.kind, 0, 0);
        UPDATE artifact_totals SET kept = kept + (NEW.deleted_at IS NULL),
            removed = removed + (NEW.deleted_at IS NOT NULL)
        WHERE kind = NEW.kind;
    END
    """,
)

_PG_FUNCTION = f"""
CREATE FUNCTION zoo_artifact_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({PG_TOTALS_LOCK});
    IF TG_OP = 'UPDATE' OR TG_OP = 'DELETE' THEN
        UPDATE artifact_totals SET kept = kept - (OLD.deleted_at IS NULL)::int,
            removed = removed - (OLD.deleted_at IS NOT NULL)::int
        WHERE kind = OLD.kind;
    END IF;
    IF TG_OP = 'UPDATE' OR TG_OP = 'INSERT' THEN
        INSERT INTO artifact_totals (kind, kept, removed) VALUES (NEW.kind, 0, 0)
            ON CONFLICT (kind) DO NOTHING;
        UPDATE artifact_totals SET kept = kept + (NEW.deleted_at IS NULL)::int,
            removed = removed + (NEW.deleted_at IS NOT NULL)::int
        WHERE kind = NEW.kind;
    END IF;
    RETURN NULL;
END
$$
"""

_PG_TRIGGER = """
CREATE CONSTRAINT TRIGGER artifact_totals
    AFTER INSERT OR DELETE OR UPDATE OF kind, deleted_at ON artifacts
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION zoo_artifact_totals()
"""

# What the triggers keep, counted from the rows: the first fill.
COUNT_ROWS = (
    "SELECT kind, "
    "SUM(CASE WHEN deleted_at IS NULL THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN deleted_at IS NULL THEN 0 ELSE 1 END) "
    "FROM artifacts GROUP BY kind"
)


def upgrade() -> None:
    op.create_table(
        "artifact_totals",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("kept", sa.BigInteger(), nullable=False),
        sa.Column("removed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", name=op.f("pk_artifact_totals")),
    )
    bind = op.get_bind()
    # The triggers first: creating one locks the table against writers until this
    # migration commits, so the fill below counts exactly what they will add to.
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(_PG_FUNCTION)
        bind.exec_driver_sql(_PG_TRIGGER)
    else:
        for statement in _SQLITE_TRIGGERS:
            bind.exec_driver_sql(statement)
    bind.exec_driver_sql(f"INSERT INTO artifact_totals (kind, kept, removed) {COUNT_ROWS}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql("DROP TRIGGER artifact_totals ON artifacts")
        bind.exec_driver_sql("DROP FUNCTION zoo_artifact_totals()")
    else:
        for name in ("insert", "delete", "update"):
            bind.exec_driver_sql(f"DROP TRIGGER artifact_totals_{name}")
    op.drop_table("artifact_totals")
