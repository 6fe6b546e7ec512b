"""A derived record written on the driver's connection (zoo.db.derived_rows) against the
general path's (SQLAlchemy's session): the same rows, the same locks, and the general
path taking over whenever the driver's write fails."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from zoo.db import derived_rows
from zoo.db.models import Artifact, ArtifactTensor, Edge
from zoo.db.queries import aware
from zoo.errors import ConflictError


def _outcomes(monkeypatch) -> list:
    """The outcomes of the driver's path, as it runs."""
    seen: list = []
    real = derived_rows.insert_derived

    def traced(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(derived_rows, "insert_derived", traced)
    return seen


def _general_path_only(monkeypatch) -> list[str]:
    """Every derived record through the general path; the calls the driver's path got."""
    calls: list[str] = []

    def general(*_args, **_kwargs):
        calls.append("driver")
        return derived_rows.Outcome.GENERAL, None

    monkeypatch.setattr(derived_rows, "insert_derived", general)
    return calls


def _rows(reg, name: str) -> tuple[dict, list[dict], list[dict]]:
    """The derived artifact's row, its tensor rows and its edges, read through SQLAlchemy
    (each column as its type reads it), less the ids and times of this one write."""
    with reg.session() as session:
        row = session.scalar(select(Artifact).where(Artifact.name == name))
        artifact = {c.name: getattr(row, c.key) for c in Artifact.__table__.c}
        tensors = [
            {c.name: getattr(t, c.key) for c in ArtifactTensor.__table__.c}
            for t in session.scalars(
                select(ArtifactTensor)
                .where(ArtifactTensor.artifact_id == row.id)
                .order_by(ArtifactTensor.name)
            )
        ]
        edges = [
            {c.name: getattr(e, c.key) for c in Edge.__table__.c}
            for e in session.scalars(select(Edge).where(Edge.child_id == row.id))
        ]
        # The values as the database holds them (SQLite: text and integers, which raw
        # readers such as `zoo ls` parse and compare).
        stored = session.connection().exec_driver_sql(
            "SELECT a.created_at, a.virtual, e.created_at FROM artifacts a "
            f"JOIN edges e ON e.child_id = a.id WHERE a.id = {int(row.id)}"
        )
        artifact["stored"] = [_form(v) for v in stored.one()]
    assert artifact.pop("id") is not None
    times = [artifact.pop("created_at")] + [e.pop("created_at") for e in edges]
    for t in times:  # as SQLAlchemy stores times (SQLite: text it parses back)
        assert abs(time.time() - aware(t).timestamp()) < 600, t
    for t in tensors:
        t.pop("artifact_id")
    for e in edges:
        e.pop("id"), e.pop("child_id")
    return artifact, tensors, edges


@pytest.fixture
def second_db_url(db_url, tmp_path):
    """Another empty database on ``db_url``'s back end."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second.db'}"
        return
    from conftest import _pg_database

    url, drop = _pg_database()
    try:
        yield url
    finally:
        drop()


def _form(value):
    """A stored value's type, and for text its form with the digits blanked."""
    if isinstance(value, str):
        return "".join("9" if c.isdigit() else c for c in value)
    return type(value).__name__, value if isinstance(value, (bool, int)) else None


def test_a_derived_record_writes_the_rows_the_general_path_writes(
    db_url, second_db_url, tmp_path, monkeypatch, tiny_dir
):
    """The same materialization recorded by the driver's path and by the general one, each
    in an empty registry: the same columns read back, the same stored forms (SQLite's
    time text, its booleans), the same tensor rows and edge."""
    import zoo

    made = {}
    for path, url in (("driver", db_url), ("general", second_db_url)):
        calls = _general_path_only(monkeypatch) if path == "general" else _outcomes(monkeypatch)
        reg = zoo.connect(db_url=url, store_url=str(tmp_path / path))
        src = reg.import_checkpoint(tiny_dir("gpt2"), name="src")
        derived = reg.materialize(src.name, layers=1, hidden=16, method="scratch", seed=3).artifact
        assert derived.info == reg.show(derived.name).info
        made[path] = (derived, _rows(reg, derived.name), src.id)
        if path == "general":
            assert calls == ["driver"]
        else:  # written by the driver's path, not left to the general one
            assert calls == [(derived_rows.Outcome.INSERTED, derived.id)]
        monkeypatch.undo()
        reg.close()
    (by_driver, rows_driver, src_driver), (by_general, rows_general, src_general) = (
        made["driver"],
        made["general"],
    )
    assert src_driver == src_general
    artifact_d, tensors_d, edges_d = rows_driver
    artifact_g, tensors_g, edges_g = rows_general
    assert artifact_d == artifact_g
    assert artifact_d["virtual"] is True and artifact_d["deleted_at"] is None
    assert artifact_d["tensor_count"] == len(tensors_d) > 0
    assert tensors_d == tensors_g
    assert edges_d == edges_g and [e["relation"] for e in edges_d] == ["materialize"]
    assert edges_d[0]["parent_id"] == src_driver
    # The records the call returns are the ones stored, and the times read back in UTC.
    for derived in (by_driver, by_general):
        assert derived.created_at.utcoffset().total_seconds() == 0
        assert abs(time.time() - derived.created_at.timestamp()) < 600
    assert by_driver.tensors == by_general.tensors
    assert by_driver.content_hash == by_general.content_hash


def test_a_failing_driver_write_leaves_the_record_to_the_general_path(
    registry, tiny_dir, monkeypatch
):
    """A driver error mid-write (here at the tensors' insert) rolls back what the driver
    wrote, drops that connection, and the general path records the checkpoint once. The
    driver's connection fails only as zoo.db.derived_rows uses it (its
    ``driver_connection``); SQLAlchemy's statements go through the pool's wrapper."""
    src = registry.import_checkpoint(tiny_dir("gpt2"), name="src")
    real = registry.engine.raw_connection
    dbapi = registry.engine.dialect.loaded_dbapi
    broken = []

    class Failing:
        """The driver's connection, failing at the statement that inserts tensors."""

        def __init__(self, wrapped):
            self._wrapped = wrapped
            self.driver_connection = _FailingDriver(wrapped.driver_connection, dbapi)

        def __getattr__(self, name):  # what SQLAlchemy's own statements use, unchanged
            return getattr(self._wrapped, name)

        def invalidate(self):
            broken.append(True)
            self._wrapped.invalidate()

    monkeypatch.setattr(registry.engine, "raw_connection", lambda: Failing(real()))
    derived = registry.materialize(src.name, layers=1, hidden=16, method="scratch", seed=4)
    monkeypatch.undo()
    assert broken == [True]
    (only,) = registry.list(kind="derived")
    assert only.id == derived.artifact.id and only.tensor_count == len(derived.artifact.tensors)
    assert [e.relation for e in registry.lineage(only.name).edges] == ["materialize"]
    assert registry.fsck().ok


class _FailingDriver:
    def __init__(self, driver, dbapi):
        self._driver, self._dbapi = driver, dbapi

    def __getattr__(self, name):
        return getattr(self._driver, name)

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._driver, name, value)

    def execute(self, sql, *args):  # PostgreSQL: one statement
        if "artifact_tensors" in sql:
            raise self._dbapi.OperationalError("server closed the connection unexpectedly")
        return self._driver.execute(sql, *args)

    def cursor(self):  # SQLite: statement by statement
        driver, dbapi = self._driver, self._dbapi

        class Cursor:
            def __init__(self):
                self._cursor = driver.cursor()

            def execute(self, sql, *args):
                return self._cursor.execute(sql, *args)

            def executemany(self, sql, *args):
                if "artifact_tensors" in sql:
                    raise dbapi.OperationalError("disk I/O error")
                return self._cursor.executemany(sql, *args)

            def close(self):
                self._cursor.close()

        return Cursor()


def test_a_derived_record_waits_for_a_removal_under_way_and_is_refused(registry, tiny_dir):
    """A removal of the parent holding its row (PostgreSQL) or the database (SQLite) when
    the record comes: the record waits for it, then is refused in zoo's words, with
    nothing written."""
    src = registry.import_checkpoint(tiny_dir("gpt2"), name="src")
    engine = registry.engine
    other = engine.raw_connection()
    cursor = other.driver_connection.cursor()
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:  # its driver opens no transaction by itself (zoo.db.engine)
        cursor.execute("BEGIN IMMEDIATE")
    cursor.execute(
        "UPDATE artifacts SET deleted_at = "
        + ("'2026-01-01 00:00:00.000000'" if sqlite else "now()")
        + f" WHERE id = {int(src.id)}"
    )
    outcome: list = []

    def record():
        try:
            outcome.append(
                registry.materialize(src.name, layers=1, hidden=16, method="scratch", seed=5)
            )
        except Exception as exc:  # the refusal, checked below
            outcome.append(exc)

    writer = threading.Thread(target=record)
    writer.start()
    writer.join(3)
    assert writer.is_alive() and not outcome  # waiting for the removal
    other.commit()
    writer.join(60)
    cursor.close()
    other.close()
    (refused,) = outcome
    assert isinstance(refused, ConflictError), refused
    assert "src was removed while this materialization ran" in str(refused)
    assert registry.list(kind="derived", include_deleted=True) == []


@pytest.mark.parametrize(
    "dialect_class",
    [
        "sqlalchemy.dialects.postgresql.psycopg2:PGDialect_psycopg2",
        "sqlalchemy.dialects.postgresql.pg8000:PGDialect_pg8000",
    ],
)
def test_a_driver_the_statements_are_not_written_for_leaves_the_record_to_the_general_path(
    dialect_class,
):
    """A database URL may name another driver than psycopg or sqlite3 (zoo opens
    postgresql+psycopg2:// and lists with it): its connection has no psycopg
    ``execute``, so its derived record is the general path's, not an AttributeError."""
    import importlib
    import types

    module, _, name = dialect_class.partition(":")
    dbapi = types.SimpleNamespace(Error=type("Error", (Exception,), {}), paramstyle="pyformat")
    dialect = getattr(importlib.import_module(module), name)(dbapi=dbapi)
    used = []

    def raw_connection():  # a driver's connection: no Connection.execute as psycopg's
        used.append(True)
        driver = types.SimpleNamespace(autocommit=False, cursor=lambda: None)
        return types.SimpleNamespace(
            driver_connection=driver, close=lambda: None, invalidate=lambda: None
        )

    engine = types.SimpleNamespace(dialect=dialect, raw_connection=raw_connection)
    artifact = dict.fromkeys(derived_rows.ARTIFACT_COLUMNS)
    edge = dict.fromkeys(derived_rows.EDGE_COLUMNS)
    outcome = derived_rows.insert_derived(engine, 1, artifact, [], edge)
    assert outcome == (derived_rows.Outcome.GENERAL, None)
    assert used == []


@pytest.mark.parametrize("taken_by", ["artifact", "alias"])
def test_a_derived_name_given_by_hand_to_another_is_not_taken_again(
    registry, tiny_dir, tmp_path, taken_by
):
    """The name a derived checkpoint gets (family, size, method, 8 digits of its hash),
    given by hand to another artifact or to an alias: the record takes 16 digits instead
    (it once ended in 'database error: UNIQUE constraint failed'), and an --out folder's
    provenance names it as the registry does; the alias still means its own artifact."""
    import json

    from safetensors import safe_open

    registry.import_checkpoint(tiny_dir("gpt2"), name="src")
    first = registry.materialize("src", layers=1, hidden=16, method="scratch", seed=6).artifact
    registry.rm(first.name)
    registry.gc(grace="0s")  # forgotten: the same request records it afresh
    other = registry.import_checkpoint(
        tiny_dir("bert"), name=first.name if taken_by == "artifact" else "other"
    )
    if taken_by == "alias":
        registry.tag(other.name, first.name)
    out = tmp_path / "small"
    made = registry.materialize(
        "src", layers=1, hidden=16, method="scratch", seed=6, out=out
    ).artifact
    assert made.content_hash == first.content_hash
    assert made.name == first.name[:-8] + first.content_hash[:16]
    assert registry.show(made.name).id == made.id
    assert registry.show(first.name).id == other.id
    with safe_open(out / "model.safetensors", "pt") as f:
        assert json.loads(f.metadata()["zoo.derived"])["name"] == made.name
    assert registry.fsck().ok


def test_a_derived_name_whose_16_digits_are_taken_too_takes_the_whole_hash(
    registry, tiny_dir, tmp_path
):
    """Its 8-digit name an alias's and its 16-digit one another artifact's (both given by
    hand): the record takes the whole hash, where it ended in 'UNIQUE constraint failed'
    with its --out folder written and no row for it."""
    import json

    from safetensors import safe_open

    registry.import_checkpoint(tiny_dir("gpt2"), name="src")
    first = registry.materialize("src", layers=1, hidden=16, method="scratch", seed=6).artifact
    registry.rm(first.name)
    registry.gc(grace="0s")
    sixteen = first.name[:-8] + first.content_hash[:16]
    other = registry.import_checkpoint(tiny_dir("bert"), name=sixteen)
    registry.tag(other.name, first.name)
    out = tmp_path / "small"
    made = registry.materialize(
        "src", layers=1, hidden=16, method="scratch", seed=6, out=out
    ).artifact
    assert made.name == first.name[:-8] + first.content_hash
    assert registry.show(made.name).id == made.id
    assert registry.show(sixteen).id == registry.show(first.name).id == other.id
    with safe_open(out / "model.safetensors", "pt") as f:
        assert json.loads(f.metadata()["zoo.derived"])["name"] == made.name
    assert registry.fsck().ok
