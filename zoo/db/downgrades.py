"""What a migration's downgrade deletes that the registry recorded.

A downgrade that deletes recorded data (artifacts, tokens, the records of side files...)
first calls :func:`losing` with what it deletes. zoo runs a downgrade in one transaction,
DDL included, and unless ``--drop-data`` rolls it back when any migration said so, naming
every loss (:func:`zoo.db.engine.downgrade`). Alembic resolves the target, so a relative
one (``head-1``, ``base+1``) is checked like any other. The counts are exact: on
PostgreSQL each table is locked before it is counted, so a writer in flight either commits
first (and is counted) or waits for the downgrade; on SQLite the downgrade holds the write
lock from its start.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

LOST = "zoo_recorded_data_lost"


def count(connection: Connection, table: str, where: str = "") -> int:
    """Rows of ``table`` (matching ``where``), with no writer able to add one until the
    downgrade ends."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    condition = f" WHERE {where}" if where else ""
    return connection.exec_driver_sql(f"SELECT count(*) FROM {table}{condition}").scalar()


def losing(revision: str, phrase: str | None) -> None:
    """Say, from a migration's downgrade, what undoing ``revision`` deletes (nothing when
    ``phrase`` is empty)."""
    from alembic import context

    if phrase:
        context.config.attributes.setdefault(LOST, []).append(f"undoing {revision}, {phrase}")
