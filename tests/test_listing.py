"""Listing, search and lineage read from the database as a library grows: pages, filters,
stored aggregates, the totals the database keeps, recursive lineage queries, and the
migrations that add the aggregates and the totals.

References are independent of the code under test: tensor rows and edges read back with
plain queries, filters applied in Python, lineage walked one edge at a time.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import deque
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, inspect, select
from tinymodels import copies

from zoo.db.models import Alias, Artifact, ArtifactTensor, Edge
from zoo.errors import InvalidInputError

FAMILIES = ("bert", "gpt2", "llama")


def ids_of(items) -> list[int]:
    return [i.id for i in items]


# --- aggregates --------------------------------------------------------------------------------


def _check_aggregates(reg) -> int:
    from zoo.api.catalog import model_size

    with reg.session() as s:
        counted = dict(
            s.execute(
                select(ArtifactTensor.artifact_id, func.count()).group_by(
                    ArtifactTensor.artifact_id
                )
            ).all()
        )
        summed = dict(
            s.execute(
                select(ArtifactTensor.artifact_id, func.sum(ArtifactTensor.nbytes)).group_by(
                    ArtifactTensor.artifact_id
                )
            ).all()
        )
        rows = s.scalars(select(Artifact)).all()
        for row in rows:
            assert row.tensor_count == counted.get(row.id, 0), row.name
            assert row.nbytes == summed.get(row.id, 0), row.name
            config = json.loads(row.config_json)
            assert (row.layers, row.hidden) == model_size(row.family, config), row.name
    listed = {i.id: i for i in reg.list(include_deleted=True)}
    for row in rows:
        assert (listed[row.id].tensor_count, listed[row.id].nbytes) == (
            row.tensor_count,
            row.nbytes,
        )
    return len(rows)


@pytest.mark.parametrize("field", ["family", "created_by", "name"])
def test_a_filter_with_a_nul_character_is_bad_input_on_every_database(registry, field):
    """No name holds NUL and PostgreSQL refuses it in text: asked for, it is the caller's
    mistake (exit 2, HTTP 400), not a database failure."""
    with pytest.raises(InvalidInputError, match="NUL"):
        registry.search(**{field: "a\x00b"})


def test_size_bounds_and_depths_past_a_database_integer_are_one_line_or_all(
    registry, tiny_dir, run_cli
):
    """A bound no database integer holds is bad input (exit 2, one line), not a driver's
    overflow; a depth that large is every edge."""
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    huge = "99999999999999999999"
    for args in (["--max-hidden", huge], ["--min-layers", huge, "--json"]):
        code, out, err = run_cli("ls", *args)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert "must be from 0 to 2^63-1" in err
    with pytest.raises(InvalidInputError, match="max_layers is a whole number"):
        registry.search(max_layers="6")
    for bound in ("min_layers", "max_hidden"):  # no size is negative: a typo, not a filter
        with pytest.raises(InvalidInputError, match=f"{bound} must be from 0"):
            registry.search(**{bound: -1})
    code, out, err = run_cli("lineage", src.name, "--depth", huge)
    assert code == 0 and src.name in out, err


def test_bounds_past_a_32_bit_column_the_calendars_ends_and_a_63_bit_limit_answer(
    registry, tiny_dir, run_cli
):
    """PostgreSQL's id, layers and hidden columns are 32-bit: a cursor or a bound past them
    compares as 64-bit rather than failing as a database error; a time zone that moves a
    date past year 9999 or before year 1 is the calendar's end; a limit of 2^63-1 lists
    everything (a page reads one extra row). Each answers what it asks, on both back ends."""
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    big = str(2**31)
    when = "--created-after=2000-01-01"  # a filter the quick page leaves to the registry
    for args, listed in (
        (["--after", big], True),  # newest first: every id is below it
        (["--after", big, "--oldest-first"], False),
        (["--after", big, when], True),
        (["--min-hidden", big, when], False),
        (["--max-hidden", big, when], True),
        (["--max-layers", big, when], True),
        (["--created-before", "9999-12-31T23:00:00-05:00"], True),
        (["--created-after", "0001-01-01T00:00:00+01:00"], True),
        (["--created-after", "9999-12-31T23:00:00-05:00"], False),
        (["--limit", str(2**63 - 1)], True),
        (["--limit", str(2**63 - 1), when], True),
    ):
        code, out, err = run_cli("ls", "--json", *args)
        assert code == 0 and err == "", (args, err)
        names = [item["name"] for item in json.loads(out)["artifacts"]]
        assert names == ([src.name] if listed else []), (args, names)
    assert [a.name for a in registry.search(min_hidden=2**40, max_layers=2**40).items] == []
    assert [a.name for a in registry.search(max_hidden=2**40).items] == [src.name]


def test_an_empty_page_says_why_and_removed_artifacts_are_found_as_kept_ones_are(
    registry, tiny_dir, run_cli
):
    """An empty page says why (no match, or nothing after the cursor), not "register one"
    as an empty library does; `ls --all --derived-from` takes a removed parent `ls --all`
    lists; a removed artifact's hash prefix says it was removed; hex of either case."""
    parent = registry.import_checkpoint(tiny_dir("gpt2"))
    child = registry.import_checkpoint(tiny_dir("gpt2", seed=1))
    registry.link(child.name, parent.name, relation="finetune")
    # Sizes in decimal units, as export's messages and the Hub print them.
    assert f"  {parent.nbytes / 1000:.1f} KB" in run_cli("ls")[1]
    assert run_cli("ls", "--name", "nomatch")[1] == "(no artifact matches these filters)\n"
    assert run_cli("ls", "--after", "1")[1] == "(no more artifacts after this cursor)\n"
    registry.rm(child.name)
    registry.rm(parent.name)
    code, out, err = run_cli("ls", "--all", "--derived-from", parent.name, "--json")
    assert code == 0 and [i["name"] for i in json.loads(out)["artifacts"]] == [child.name], err
    code, _, err = run_cli("ls", "--derived-from", parent.name)
    assert code == 3 and "removed with `zoo rm`" in err, err
    code, _, err = run_cli("show", parent.content_hash[:12])
    assert code == 3 and f"the source {parent.name}" in err and "removed" in err, err
    registry.import_checkpoint(tiny_dir("gpt2"))  # brought back
    code, out, err = run_cli("show", parent.content_hash[:12].upper())
    assert code == 0 and parent.name in out, err


def test_an_argument_that_is_not_utf8_is_one_line(registry, tiny_dir, run_cli):
    """A Latin-1 terminal's byte reaches Python as a lone surrogate, which no database or
    file name of zoo's takes: every command says so in one line."""
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    for args in (
        ["show", "caf\udce9"],
        ["ls", "--name", "\udcff"],
        ["tag", src.name, "caf\udce9"],
        ["alias-history", "caf\udce9"],
    ):
        code, out, err = run_cli(*args)
        assert code == 2 and out == "" and err.count("\n") == 1, (args, err)
        assert "is not UTF-8 text" in err, err


@pytest.mark.postgres
def test_times_are_printed_in_utc_whatever_the_database_sessions_zone(
    registry, tiny_dir, db_url, tmp_path
):
    """PostgreSQL answers in its session's zone (PGTZ): every command prints UTC, as `zoo
    ls` does, since scripts compare the strings."""
    import subprocess
    import sys

    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's session time zone")
    src = registry.import_checkpoint(tiny_dir("gpt2"))
    env = {**os.environ, "PGTZ": "Asia/Kolkata", "ZOO_DB_URL": db_url, "ZOO_HOME": str(tmp_path)}
    env["ZOO_STORE_URL"] = os.environ["ZOO_STORE_URL"]
    zoo = [sys.executable, "-m", "zoo_cli.main"]
    shown = json.loads(subprocess.check_output([*zoo, "show", src.name, "--json"], env=env))
    listed = json.loads(subprocess.check_output([*zoo, "ls", "--json"], env=env))["artifacts"][0]
    assert shown["created_at"] == listed["created_at"] and shown["created_at"].endswith("+00:00")


def test_aggregates_equal_the_tensor_rows_for_every_kind_and_after_gc(registry, tiny_dir, run_cli):
    src = registry.import_checkpoint(tiny_dir("bert"))
    other = registry.import_checkpoint(tiny_dir("gpt2"))
    lg = registry.extract(src.name, method="dwt", wavelet="haar", levels=1)
    stored = registry.materialize(lg.name, layers=2, hidden=16, store=True).artifact
    virtual = registry.materialize(src.name, layers=2, hidden=16, method="weight-selection")
    assert virtual.artifact.virtual and stored.tensor_count == len(stored.tensors) > 0
    assert (stored.layers, stored.hidden) == (2, 16) and (lg.layers, lg.hidden) == (4, 32)
    assert _check_aggregates(registry) == 5
    # What a listing prints is the row's aggregate, equal to what `show` counts.
    code, out, _ = run_cli("ls", "--json")
    assert code == 0
    listed = {a["name"]: a for a in json.loads(out)["artifacts"]}
    for info in (src, other, lg, stored):
        shown = registry.show(info.name)
        assert listed[info.name]["tensor_count"] == len(shown.tensors) == shown.tensor_count
        assert listed[info.name]["nbytes"] == sum(t.nbytes for t in shown.tensors)
    registry.rm(other.name)
    registry.gc(grace=0)
    assert _check_aggregates(registry) == 4


# --- totals ------------------------------------------------------------------------------------


def _counted(reg) -> dict[tuple[str | None, bool], int]:
    """Matches of every kind-only listing, counted from the rows: {(kind, include_deleted): n}."""
    from zoo.db.queries import KINDS

    with reg.session() as s:
        rows = s.execute(select(Artifact.kind, Artifact.deleted_at)).all()
    return {
        (kind, removed_too): sum(
            1 for k, gone in rows if (kind is None or k == kind) and (removed_too or gone is None)
        )
        for kind in (None, *KINDS)
        for removed_too in (False, True)
    }


def _totals(reg) -> dict[tuple[str | None, bool], int]:
    return {
        (kind, removed_too): reg.search(kind=kind, include_deleted=removed_too, limit=1).total
        for kind, removed_too in _counted(reg)
    }


def test_totals_follow_every_write_even_statements_outside_zoo(registry, tiny_dir, tmp_path):
    from sqlalchemy import text, update

    assert set(_totals(registry).values()) == {0}
    carded = copies(tiny_dir("bert"), tmp_path / "carded", 1)[0]
    (carded / "README.md").write_text("---\nbase_model: org/base\n---\n")
    child = registry.import_checkpoint(carded)  # and a placeholder for org/base
    sources = registry.import_checkpoints(copies(tiny_dir("gpt2"), tmp_path / "g", 3))
    lg = registry.extract(child.name, method="dwt", wavelet="haar", levels=1)
    registry.materialize(lg.name, layers=2, hidden=16, store=True)
    registry.materialize(sources[0].name, layers=1, hidden=8, method="weight-selection")
    registry.rm(sources[1].name)
    registry.rm(sources[2].name)
    expected = _counted(registry)
    assert expected[("placeholder", False)] == 1 and expected[("source", True)] == 4
    assert expected[(None, False)] == 6 and expected[(None, True)] == 8
    assert _totals(registry) == expected
    registry.gc(grace=0)  # deletes the removed rows for good
    assert _counted(registry)[(None, True)] == 6
    assert _totals(registry) == _counted(registry)
    # Writes that bypass zoo's API keep the totals too: the database maintains them.
    with registry.engine.begin() as c:
        c.execute(update(Artifact).where(Artifact.kind == "placeholder").values(kind="source"))
        c.execute(update(Artifact).where(Artifact.name == child.name).values(deleted_at=func.now()))
        for name in ("by-hand", "by-hand-2"):
            c.execute(
                text(
                    "INSERT INTO artifacts (kind, name, content_hash, info_json, virtual, "
                    "created_at, created_by) VALUES ('learngene', :n, :h, '{}', false, "
                    "CURRENT_TIMESTAMP, 'someone')"
                ),
                {"n": name, "h": name.ljust(64, "0")},
            )
        c.execute(delete(Artifact).where(Artifact.name == "by-hand-2"))
    expected = _counted(registry)
    assert expected[("placeholder", False)] == 0 and expected[("learngene", False)] == 2
    assert _totals(registry) == expected


def test_writers_of_two_kinds_in_opposite_orders_both_commit(registry):
    """Two transactions that each add a source and a placeholder, in opposite orders, and
    commit at the same moment: the totals rows must not deadlock them. PostgreSQL locks
    rows (SQLite serializes writers already). A third transaction holds the placeholder
    total while both commits start, so that both are inside their commits at once."""
    import threading
    import time

    from sqlalchemy import insert, text

    if registry.engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's")

    def row(kind: str, name: str) -> dict:
        return dict(
            kind=kind,
            name=name,
            content_hash=name.ljust(64, "0"),
            info_json="{}",
            virtual=False,
            created_at=func.now(),
            created_by="test",
        )

    assert registry.list() == []  # the schema is made on first use
    with registry.engine.begin() as c:  # a total row for each kind
        c.execute(insert(Artifact).values(**row("source", "s0")))
        c.execute(insert(Artifact).values(**row("placeholder", "p0")))
    first, second, holder = (registry.engine.connect() for _ in range(3))
    errors = []

    def commit(connection) -> None:
        try:
            connection.commit()
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    def wait_until_blocked(pid: int) -> None:
        query = text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :p")
        deadline = time.monotonic() + 10
        while holder.execute(query, {"p": pid}).scalar() != "Lock":
            assert time.monotonic() < deadline, "the commit never waited"
            time.sleep(0.02)

    try:
        for c in (first, second, holder):
            c.begin()
            c.exec_driver_sql("SET LOCAL lock_timeout = '10s'")  # a wait fails, not hangs
        pids = {c: c.exec_driver_sql("SELECT pg_backend_pid()").scalar() for c in (first, second)}
        first.execute(insert(Artifact).values(**row("source", "a1")))
        second.execute(insert(Artifact).values(**row("placeholder", "b1")))
        first.execute(insert(Artifact).values(**row("placeholder", "a2")))
        second.execute(insert(Artifact).values(**row("source", "b2")))
        holder.execute(text("SELECT 1 FROM artifact_totals WHERE kind = 'placeholder' FOR UPDATE"))
        threads = [threading.Thread(target=commit, args=(c,)) for c in (second, first)]
        for t, c in zip(threads, (second, first), strict=True):
            t.start()
            wait_until_blocked(pids[c])
        holder.rollback()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads) and errors == []
    finally:
        for c in (first, second, holder):
            c.close()
    assert _totals(registry)[("source", False)] == 3
    assert _totals(registry)[("placeholder", False)] == 3
    assert _totals(registry) == _counted(registry)


def _listing_plans(registry, db_url, monkeypatch, listings) -> list[list[dict]]:
    """EXPLAIN ANALYZE (JSON) of every statement that reads the registry's pages for
    ``listings`` (keyword sets for ``Registry.search``) and the quick pages for those of
    them it answers (``zoo ls``'s)."""
    from sqlalchemy import event

    import zoo.api
    from zoo.db import pg_page

    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append((statement, parameters))

    event.listen(registry.engine, "before_cursor_execute", seen)
    try:
        for listing in listings:
            registry.search(**listing)
    finally:
        event.remove(registry.engine, "before_cursor_execute", seen)
    asked = []
    ask = pg_page._ask
    monkeypatch.setattr(
        pg_page, "_ask", lambda p, sql, args: asked.append((sql, args)) or ask(p, sql, args)
    )
    from zoo.db.listing_sql import QUICK_FILTERS

    quick = {"kind", "include_deleted", "limit", "after", "newest_first", *QUICK_FILTERS}
    for listing in listings:
        if set(listing) <= quick:
            assert zoo.api.quick_page(**listing) is not None
    monkeypatch.setattr(pg_page, "_ask", ask)
    assert statements and asked
    plans = []
    with registry.engine.connect() as c:
        for statement, parameters in statements:
            explain = "EXPLAIN (ANALYZE, FORMAT JSON) " + statement
            plans.append(c.exec_driver_sql(explain, parameters).scalar())
    params = pg_page.connect_params(db_url)
    for sql, args in asked:
        plans.append(json.loads(ask(params, "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, args)[0][0]))
    return plans


def _nodes(plan) -> list[dict]:
    """Every node of a JSON plan."""
    found, todo = [], [plan[0]["Plan"]]
    while todo:
        node = todo.pop()
        found.append(node)
        todo.extend(node.get("Plans", []))
    return found


def _vacuumed(registry, table: str) -> int:
    """VACUUM ANALYZE ``table`` (as autovacuum would); its pages."""
    from sqlalchemy import text

    with registry.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text(f"VACUUM ANALYZE {table}"))
        return c.scalar(text(f"SELECT relpages FROM pg_class WHERE relname = '{table}'"))


def test_every_kind_total_is_read_by_key_however_many_writes_came_before(
    registry, db_url, tiny_dir, monkeypatch
):
    """On PostgreSQL each write to ``artifacts`` leaves a row version in the totals table,
    and VACUUM frees them but keeps their pages: a listing that summed the table by
    scanning it would read every page on every call. After writes that spread the table
    over many pages, no statement that a listing of every kind runs (the registry's page,
    the quick page ``zoo ls`` opens with) scans it."""
    from sqlalchemy import text

    if not db_url.startswith("postgresql"):
        pytest.skip("row versions are PostgreSQL's")
    source = registry.import_checkpoint(tiny_dir("bert"))
    with registry.engine.begin() as c:  # the row versions of 20,000 imports
        c.execute(
            text(
                "DO $$ BEGIN FOR i IN 1..20000 LOOP UPDATE artifact_totals SET kept = kept "
                "WHERE kind = 'source'; END LOOP; END $$"
            )
        )
    # What the test is about: a table much larger than its rows.
    assert _vacuumed(registry, "artifact_totals") >= 50
    for removed_too in (False, True):
        page = registry.search(include_deleted=removed_too, limit=1)
        assert page.total == 1 and page.items[0].name == source.name
    listings = [dict(include_deleted=removed_too, limit=1) for removed_too in (False, True)]
    plans = _listing_plans(registry, db_url, monkeypatch, listings)
    assert len(plans) == 4
    for plan in plans:
        read = [n for n in _nodes(plan) if n.get("Relation Name") == "artifact_totals"]
        assert read, plan  # it is read...
        assert all(n["Node Type"] != "Seq Scan" for n in read), read  # ...by its key


def test_a_page_reads_the_alias_table_once_however_the_planner_reads_it(
    registry, db_url, tiny_dir, tmp_path, monkeypatch
):
    """A page's aliases are gathered for all its rows at once. Looked up row by row,
    PostgreSQL planned a scan of the whole alias table for each row once the table had a
    few pages (400 aliases made a page twice as slow); gathered once, a scan reads it
    once, or the index is probed once per row."""
    from sqlalchemy import text

    import zoo.api

    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's planner")
    infos = registry.import_checkpoints(copies(tiny_dir("gpt2"), tmp_path / "c", 12))
    with registry.engine.begin() as c:  # the tags of a library in use
        c.execute(
            text(
                "INSERT INTO aliases (name, artifact_id, created_at) "
                "SELECT 'tag-' || g, :id, now() FROM generate_series(1, 400) g"
            ),
            {"id": infos[0].id},
        )
    registry.tag(infos[-1].name, "newest")
    assert _vacuumed(registry, "aliases") >= 3
    listings = [
        dict(limit=10),
        dict(kind="source", limit=10),
        dict(limit=10, include_deleted=True, newest_first=False),
        dict(family="gpt2", limit=10),  # a filtered page
    ]
    pages = [  # a filter's count reads no aliases
        [n for n in _nodes(plan) if n.get("Relation Name") == "aliases"]
        for plan in _listing_plans(registry, db_url, monkeypatch, listings)
    ]
    pages = [read for read in pages if read]
    assert len(pages) == 8  # 4 of the registry's, 4 quick ones
    for read in pages:
        scans = [n for n in read if n["Node Type"] == "Seq Scan"]
        assert sum(n["Actual Loops"] for n in scans) <= 1, scans
    assert registry.search(limit=1).items[0].aliases == ("newest",)
    assert zoo.api.quick_page(limit=1).items[0].aliases == ("newest",)
    oldest = registry.search(limit=1, newest_first=False).items[0]
    assert len(oldest.aliases) == 400
    assert zoo.api.quick_page(limit=1, newest_first=False).items[0] == oldest


def test_a_family_filter_takes_a_config_model_type_or_any_case(registry, tiny_dir, run_cli):
    """Users type what config.json says (gemma3_text) or the family in capitals: both
    list the family's checkpoints, through either reader of a page, and through the API."""
    gemma = registry.import_checkpoint(tiny_dir("gemma3"), name="g3")
    registry.import_checkpoint(tiny_dir("bert"), name="b")
    assert gemma.family == "gemma3" and gemma.config["model_type"] == "gemma3_text"
    for typed, expected in (("gemma3_text", ["g3"]), ("BERT", ["b"]), ("t5", [])):
        assert [a.name for a in registry.search(family=typed).items] == expected, typed
        for more in ((), ("--created-after", "2000-01-01")):  # both readers of a page
            code, out, err = run_cli("ls", "--json", "--family", typed, *more)
            assert code == 0, err
            assert [a["name"] for a in json.loads(out)["artifacts"]] == expected, (typed, more)


def test_a_family_filter_takes_the_model_type_of_a_checkpoint_no_family_resizes(
    registry, tiny_dir, tmp_path, run_cli
):
    """A t5 is catalogued with no family; --family t5 (what its config.json says, in any
    case) lists it, and nothing else, through the API, the CLI and a page with a cursor,
    as --family lists a family's checkpoints."""
    import transformers

    config = transformers.T5Config(vocab_size=96, d_model=16, d_kv=8, d_ff=32, num_layers=1)
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    assert json.loads((tmp_path / "t5" / "config.json").read_text())["model_type"] == "t5"
    t5 = registry.import_checkpoint(tmp_path / "t5", name="tr")
    registry.import_checkpoint(tiny_dir("bert"), name="b")
    assert t5.family is None
    for typed, expected in (("t5", ["tr"]), ("T5", ["tr"]), ("mt5", []), ("bert", ["b"])):
        page = registry.search(family=typed)
        assert ([a.name for a in page.items], page.total) == (expected, len(expected)), typed
        for more in ((), ("--created-after", "2000-01-01"), ("--all", "--limit", "1")):
            code, out, err = run_cli("ls", "--json", "--family", typed, *more)
            assert code == 0, err
            assert [a["name"] for a in json.loads(out)["artifacts"]] == expected, (typed, more)
    registry.rm("tr")
    assert registry.search(family="t5").items == ()
    assert [a.name for a in registry.search(family="t5", include_deleted=True).items] == ["tr"]


# --- pages -------------------------------------------------------------------------------------


def test_pages_are_complete_and_never_repeat_while_others_insert(registry, tiny_dir, tmp_path):
    import zoo

    base = tiny_dir("gpt2")
    registry.import_checkpoints(copies(base, tmp_path / "a", 23))
    before = ids_of(registry.list())
    other = zoo.connect()  # another writer, on its own connections
    seen, cursor, k = [], None, 0
    while True:
        page = registry.search(limit=4, after=cursor)
        seen += ids_of(page.items)
        # Between two pages, another writer registers two more artifacts.
        other.import_checkpoints(copies(base, tmp_path / f"w{k}", 2, start=100 + 2 * k))
        k += 1
        if page.next is None:
            break
        cursor = page.next
    other.close()
    assert k == 6 and len(registry.list()) == 23 + 2 * k
    assert len(seen) == len(set(seen)), "an artifact appeared twice"
    assert seen == sorted(seen, reverse=True)
    assert set(seen) == set(before), "an artifact that existed before paging was missed"
    # Oldest first: the same rows, in the other order, on the same cursors.
    everything = ids_of(registry.list())
    forward, cursor = [], None
    while True:
        page = registry.search(limit=5, after=cursor, newest_first=False)
        forward += ids_of(page.items)
        assert page.total == len(everything)
        if page.next is None:
            break
        cursor = page.next
    assert forward == everything == sorted(everything)


def test_ls_prints_a_first_page_and_the_command_for_the_next(registry, tiny_dir, tmp_path, run_cli):
    registry.import_checkpoints(copies(tiny_dir("bert"), tmp_path, 7))
    code, out, err = run_cli("ls", "--limit", "3", "--family", "bert")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()[1:]]
    newest = [i.name for i in registry.list()][::-1]
    assert names == newest[:3]
    assert err.startswith("3 of 7 shown; next page: zoo ls --family bert --limit 3 --after ")
    command = err.split("next page: zoo ")[1].split()
    code, out, err = run_cli(*command)
    assert [line.split()[0] for line in out.splitlines()[1:]] == newest[3:6]
    code, out, _ = run_cli("ls", "--json", "--limit", "0")
    page = json.loads(out)
    assert [a["name"] for a in page["artifacts"]] == newest and page["next"] is None
    assert page["total"] == 7
    for cursor in ("not-a-cursor", "²", str(1 << 63), "9" * 30):
        for more in ((), ("--created-after", "2000-01-01")):  # both readers of a page
            code, out, err = run_cli("ls", "--after", cursor, *more)
            assert code == 2 and out == "" and "not a listing cursor" in err, (cursor, err)
            assert err.count("\n") == 1
    # More than a database can count is every one, on both readers.
    for more in ((), ("--created-after", "2000-01-01")):
        code, out, _ = run_cli("ls", "--json", "--limit", "9" * 30, *more)
        assert code == 0 and [a["name"] for a in json.loads(out)["artifacts"]] == newest
    code, out, err = run_cli("ls", "--created-after", "yesterday")
    assert code == 2 and "ISO 8601" in err and "'--created-after'" in err
    assert err.count("\n") == 1 and "created_after" not in err  # the option, not Python's
    assert run_cli("ls", "--min-layers", "-1")[0] == 2  # no size is negative: a typo
    with pytest.raises(InvalidInputError):
        registry.search(limit=0)


@pytest.mark.parametrize(
    "shape",
    [
        {},
        {"newest_first": False},
        {"after": 9},
        {"kind": "source"},
        {"kind": "source", "after": 9, "newest_first": False},
        {"include_deleted": True},
        {"family": "gpt2"},
    ],
    ids=repr,
)
def test_a_page_reads_its_rows_in_order_without_planner_statistics(
    tmp_path, tiny_dir, monkeypatch, shape
):
    """SQLite gathers no planner statistics by itself, so a user's library has none. Each
    listing shape must still read its page in id order from an index: a plan that sorts
    (a temporary B-tree) reads every kept row, and grows with the library."""
    import zoo
    from zoo.db.search import Filters, statement

    monkeypatch.setenv("ZOO_DB_URL", f"sqlite:///{tmp_path / 'zoo.db'}")
    monkeypatch.setenv("ZOO_STORE_URL", str(tmp_path / "blobs"))
    reg = zoo.connect()
    reg.import_checkpoints(copies(tiny_dir("gpt2"), tmp_path / "c", 16))
    after = shape.get("after")
    newest_first = shape.get("newest_first", True)
    filters = Filters(
        kind=shape.get("kind"),
        family=shape.get("family"),
        include_deleted=shape.get("include_deleted", False),
    )
    query, params, _ = statement("sqlite", filters, limit=5, after=after, newest_first=newest_first)
    compiled = query.compile(reg.engine)
    values = compiled.construct_params(params)
    args = tuple(values[key] for key in compiled.positiontup)
    with reg.engine.connect() as conn:
        stats = "SELECT name FROM sqlite_master WHERE name LIKE 'sqlite_stat%'"
        assert conn.exec_driver_sql(stats).all() == []
        plan = [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", args)]
        rows = conn.exec_driver_sql(str(compiled), args).all()
    reg.close()
    assert not any("TEMP B-TREE" in step for step in plan), plan
    ids = [row[0] for row in rows]
    assert ids == sorted(ids, reverse=newest_first) and len(ids) == 6  # a page and one more
    if after is not None:
        assert all(i < after for i in ids) if newest_first else all(i > after for i in ids)


# --- filters against a brute-force reference -------------------------------------------------


@pytest.fixture
def library(registry, tiny_dir, tmp_path, monkeypatch):
    """Artifacts of three families and two sizes, by two users, with aliases and links."""
    import zoo.api.registry as registry_module

    original = registry_module.current_user
    infos = []
    for k, family in enumerate(FAMILIES):
        for small in (True, False):
            folder = tmp_path / f"{family}-{small}"
            sizes = (
                {"n_layer": 2, "n_embd": 16, "n_head": 2}
                if family == "gpt2"
                else {"num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 2}
            )
            if family == "llama":
                sizes["num_key_value_heads"] = 2
            base = tiny_dir(family) if not small else None
            if base is None:
                from tinymodels import save_tiny

                base = save_tiny(family, folder, **sizes)
            user = "alice" if (k + small) % 2 else "bob"
            monkeypatch.setattr(registry_module, "current_user", lambda u=user: u)
            infos += registry.import_checkpoints(copies(base, tmp_path / f"c-{family}-{small}", 3))
    monkeypatch.setattr(registry_module, "current_user", original)
    names = [i.name for i in infos]
    registry.tag(names[0], "Champion_v1")
    registry.tag(names[7], "baseline.old")
    registry.link(names[3], names[0])
    registry.link(names[5], names[3])
    registry.link(names[9], names[0], relation="distill")
    registry.rm(names[11])
    registry.materialize(names[6], layers=1, hidden=8, method="weight-selection")
    return registry


def _reference(reg, f: dict) -> list[int]:
    import fnmatch

    with reg.session() as s:
        rows = s.scalars(select(Artifact).order_by(Artifact.id.desc())).all()
        aliases: dict[int, list[str]] = {}
        for a in s.scalars(select(Alias)):
            aliases.setdefault(a.artifact_id, []).append(a.name)
        children: dict[int, list[int]] = {}
        for e in s.scalars(select(Edge)):
            children.setdefault(e.parent_id, []).append(e.child_id)
    below = None
    if f.get("derived_from") is not None:
        root = next(r.id for r in rows if r.name == f["derived_from"])
        below, todo = set(), [root]
        while todo:
            for c in children.get(todo.pop(), ()):
                if c not in below:
                    below.add(c)
                    todo.append(c)

    def matches_name(text: str) -> bool:
        pattern = f["name"].lower()
        if "*" not in pattern and "?" not in pattern:
            return pattern in text.lower()
        return fnmatch.fnmatchcase(text.lower(), pattern.replace("[", "[[]"))

    from zoo.db.queries import aware

    out = []
    for r in rows:
        if f.get("kind") and r.kind != f["kind"]:
            continue
        if f.get("family") and r.family != f["family"]:
            continue
        if not f.get("include_deleted") and r.deleted_at is not None:
            continue
        if f.get("name") and not any(matches_name(t) for t in [r.name, *aliases.get(r.id, [])]):
            continue
        config = json.loads(r.config_json)
        layers = config.get("num_hidden_layers", config.get("n_layer"))
        hidden = config.get("hidden_size", config.get("n_embd"))
        if f.get("min_layers") is not None and layers < f["min_layers"]:
            continue
        if f.get("max_layers") is not None and layers > f["max_layers"]:
            continue
        if f.get("min_hidden") is not None and hidden < f["min_hidden"]:
            continue
        if f.get("max_hidden") is not None and hidden > f["max_hidden"]:
            continue
        if below is not None and r.id not in below:
            continue
        if f.get("created_by") and r.created_by != f["created_by"]:
            continue
        if f.get("created_after") is not None and aware(r.created_at) < f["created_after"]:
            continue
        if f.get("created_before") is not None and aware(r.created_at) >= f["created_before"]:
            continue
        out.append(r.id)
    return out


OPTIONS = {
    "kind": lambda names, times: ["source", "derived"],
    "family": lambda names, times: [*FAMILIES, "vit"],
    "include_deleted": lambda names, times: [True, False],
    "name": lambda names, times: [
        "champ",
        "*V1",
        "*copy-1",
        "?ert*",
        "baseline.old",
        "gpt2*copy-?",
        "%",
        "_v",
        "CHAMPION?v1",
    ],
    "min_layers": lambda names, times: [1, 2, 3, 4],
    "max_layers": lambda names, times: [2, 3, 4],
    "min_hidden": lambda names, times: [16, 32],
    "max_hidden": lambda names, times: [8, 16, 32],
    "derived_from": lambda names, times: names[:4],
    "created_by": lambda names, times: ["alice", "bob", "carol"],
    "created_after": lambda names, times: times,
    "created_before": lambda names, times: times,
}


def _filters(names, times):
    return st.fixed_dictionaries(
        {}, optional={k: st.sampled_from(v(names, times)) for k, v in OPTIONS.items()}
    )


def test_filters_agree_with_a_brute_force_reference(library):
    reg = library
    everything = reg.list(include_deleted=True)
    names = [i.name for i in everything]
    stamps = sorted({i.created_at for i in everything})
    times = [stamps[0] - timedelta(seconds=1), stamps[len(stamps) // 2], stamps[-1]]

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(f=_filters(names, times), size=st.integers(1, 7))
    def check(f, size):
        expected = _reference(reg, f)
        page = reg.search(**f, limit=size)
        assert page.total == len(expected)
        got, cursor = ids_of(page.items), page.next
        while cursor is not None:
            page = reg.search(**f, limit=size, after=cursor)
            got += ids_of(page.items)
            cursor = page.next
        assert got == expected, f

    check()
    # No filter at all (the first page of `zoo ls`), with a removed artifact in the library.
    assert reg.search(limit=3).total == len(_reference(reg, {})) == len(everything) - 1
    # Each value of each filter alone, whatever hypothesis drew.
    for key, values in OPTIONS.items():
        for value in values(names, times):
            f = {key: value}
            assert ids_of(reg.search(**f, limit=None).items) == _reference(reg, f), f
    # Every filter excludes something here, so none of them is a no-op.
    for f in ({"kind": "derived"}, {"name": "champ"}, {"max_layers": 2}, {"created_by": "bob"}):
        assert 0 < len(_reference(reg, f)) < len(everything)


def test_derived_from_and_aliases_in_listings(library):
    reg = library
    listed = reg.list()
    root = listed[0].name
    below = {i.name for i in reg.list(derived_from=root)}
    assert below == {listed[3].name, listed[5].name, listed[9].name}
    assert [i.aliases for i in reg.list(name="champion_V1")] == [("Champion_v1",)]


def test_list_returns_every_match_and_names_search_for_a_page(library):
    """list() takes the filters but no paging: asked for a limit, it says which call pages
    instead of failing on a duplicate keyword."""
    with pytest.raises(TypeError, match=r"takes no after, limit; search\(\) gives one page"):
        library.list(limit=5, after="x")
    assert ids_of(library.search(limit=None, newest_first=False).items) == ids_of(library.list())


# --- the listing `zoo ls` opens with, read with sqlite3 alone ---------------------------------


def _pages(ask, **shape) -> list:
    """Every page of a listing, following each page's cursor."""
    pages, after = [], None
    while len(pages) < 100:  # a cursor that does not move on would page forever
        page = ask(after=after, **shape)
        assert page is not None, shape
        pages.append(page)
        if page.next is None:
            return pages
        after = page.next
    raise AssertionError(f"more than 100 pages: {shape}")


def test_the_quick_page_is_the_registrys_page(library, db_url, monkeypatch):
    """`zoo ls` reads a SQLite registry's listing with sqlite3 alone, a PostgreSQL one's
    through libpq alone: every page of every shape it answers (all or one kind, with
    removed ones or not, either order, any page size) equals the registry's own page,
    aliases, totals and cursors included."""
    import zoo.api

    monkeypatch.setenv("PGTZ", "Asia/Kolkata")  # a session time zone other than UTC's

    reg = library
    names = [i.name for i in reg.list()]
    reg.tag(names[0], "alpha-second")  # two aliases on one artifact, listed sorted
    shapes = itertools.product(
        (None, "source", "derived", "learngene"), (False, True), (True, False), (None, 1, 4)
    )
    compared = 0
    for kind, include_deleted, newest_first, limit in shapes:
        shape = dict(
            kind=kind, include_deleted=include_deleted, newest_first=newest_first, limit=limit
        )
        quick = _pages(zoo.api.quick_page, **shape)
        assert quick == _pages(reg.search, **shape), shape
        # Equal is not enough: 0 == False, yet `zoo ls --json` would print 0.
        flags = {type(f) for p in quick for i in p.items for f in (i.virtual, i.deleted)}
        assert flags <= {bool}, (shape, flags)
        compared += sum(len(p.items) for p in quick)
    assert compared > 200
    everything = zoo.api.quick_page(include_deleted=True, limit=None)
    assert {i.aliases for i in everything.items} >= {("Champion_v1", "alpha-second")}
    assert any(i.deleted for i in everything.items) and any(i.virtual for i in everything.items)
    assert everything.total == len(everything.items) == len(reg.list(include_deleted=True))


def test_the_quick_page_with_filters_is_the_registrys_page(library, db_url):
    """The filters `zoo ls` takes most (family, a name or alias pattern, layers and hidden
    ranges, author) are read without SQLAlchemy too: every page of each value of each
    filter, and of combinations hypothesis draws, equals the registry's page and keeps
    what the brute-force reference keeps."""
    import zoo.api
    from zoo.db.listing_sql import QUICK_FILTERS

    reg = library
    names = [i.name for i in reg.list(include_deleted=True)]
    quick_options = {k: OPTIONS[k](names, []) for k in ("kind", "include_deleted", *QUICK_FILTERS)}

    def same(f: dict, limit: int | None, newest_first: bool) -> int:
        shape = dict(f, limit=limit, newest_first=newest_first)
        quick = _pages(zoo.api.quick_page, **shape)
        assert quick == _pages(reg.search, **shape), shape
        got = [i.id for p in quick for i in p.items]
        expected = _reference(reg, f)
        assert got == (expected if newest_first else expected[::-1]), shape
        assert {p.total for p in quick} == {len(expected)}, shape
        return len(got)

    kept = 0
    for n, (key, value) in enumerate((k, v) for k in QUICK_FILTERS for v in quick_options[k]):
        for kind, include_deleted in itertools.product((None, "source"), (False, True)):
            f = {key: value, "kind": kind, "include_deleted": include_deleted}
            kept += same(f, limit=(None, 3)[n % 2], newest_first=n % 3 != 0)
    assert kept > 300
    for empty in ("name", "family", "created_by"):  # an empty text keeps everything
        assert same({empty: ""}, limit=4, newest_first=True) == len(_reference(reg, {}))

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        f=st.fixed_dictionaries(
            {}, optional={k: st.sampled_from(v) for k, v in quick_options.items()}
        ),
        limit=st.sampled_from([None, 1, 2, 5]),
        newest_first=st.booleans(),
    )
    def combined(f, limit, newest_first):
        same(f, limit, newest_first)

    combined()


def test_the_quick_page_leaves_filters_it_cannot_pass_on_to_the_registry(library):
    """A filter that needs a name resolved or a time parsed, text with a NUL (libpq reads
    C strings), a number no 64-bit column holds or a value of another type: None, and the
    registry answers or refuses it."""
    import zoo.api

    assert zoo.api.quick_page(family="gpt2") is not None
    for refused in (
        {"derived_from": library.list()[0].name},
        {"created_after": "2026-01-01"},
        {"family": "gpt2\x00"},
        {"name": "ch\x00amp"},
        {"min_layers": 2**63},
        {"max_hidden": -(2**63) - 1},
        {"min_layers": True},
        {"min_layers": "2"},
        {"created_by": 7},
    ):
        assert zoo.api.quick_page(**refused) is None, refused
    assert zoo.api.quick_page(min_layers=2**63 - 1).total == 0


def test_the_quick_page_leaves_to_the_registry_what_it_cannot_answer(
    registry, db_url, tmp_path, monkeypatch, run_cli
):
    """A server, an argument the registry refuses, another schema revision, a URL with
    options it cannot follow, a database file that is missing or empty, a PostgreSQL
    database that is not there are left to the registry, which says what is wrong; the
    quick path creates and changes nothing."""
    import sqlite3

    from sqlalchemy import text

    import zoo.api

    registry.search()  # creates the schema
    assert zoo.api.quick_page() is not None
    for refused in ({"kind": "model"}, {"limit": 0}, {"after": "x"}, {"after": "²"}):
        assert zoo.api.quick_page(**refused) is None, refused
    monkeypatch.setenv("ZOO_ENDPOINT", "http://127.0.0.1:9")
    assert zoo.api.quick_page() is None
    monkeypatch.delenv("ZOO_ENDPOINT")
    if db_url.startswith("postgresql"):
        for other in (
            db_url + "?no_such_libpq_option=1",
            db_url.rsplit("/", 1)[0] + "/zoo_no_such_database",
            db_url.replace("postgresql+psycopg", "postgresql+asyncpg"),
        ):
            monkeypatch.setenv("ZOO_DB_URL", other)
            assert zoo.api.quick_page() is None, other
        monkeypatch.setenv("ZOO_DB_URL", db_url)
        with registry.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0999'"))
        assert zoo.api.quick_page() is None
        code, out, err = run_cli("ls")
        assert code == 5 and out == "" and "newer than this zoo knows" in err
        return
    monkeypatch.setenv("ZOO_DB_URL", db_url + "?timeout=5")
    assert zoo.api.quick_page() is None
    missing = tmp_path / "missing.db"
    monkeypatch.setenv("ZOO_DB_URL", f"sqlite:///{missing}")
    assert zoo.api.quick_page() is None and not missing.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    monkeypatch.setenv("ZOO_DB_URL", f"sqlite:///{empty}")
    assert zoo.api.quick_page() is None and empty.stat().st_size == 0
    code, out, err = run_cli("ls")
    assert code != 0 and "empty (0 bytes)" in err and empty.stat().st_size == 0
    monkeypatch.setenv("ZOO_DB_URL", db_url)
    path = db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0999'")
    connection.close()
    assert zoo.api.quick_page() is None
    code, out, err = run_cli("ls")
    assert code == 5 and out == "" and "newer than this zoo knows" in err


def test_zoo_ls_never_imports_sqlalchemy_or_psycopg(library, db_url, tmp_path):
    """`zoo ls` as a process, with the filters it reads most, is the interpreter, click and
    sqlite3 or libpq (``-X importtime`` lists every module imported), and prints what the
    registry's own listing prints; a filter that needs a name resolved opens the registry."""
    import os
    import subprocess
    import sys

    reader = "zoo.db.sqlite_page" if db_url.startswith("sqlite") else "zoo.db.pg_page"

    def zoo_ls(*args):
        p = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "zoo_cli.main", "ls", *args],
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr[-2000:]
        imported = {
            line.rsplit("|", 1)[-1].strip()
            for line in p.stderr.splitlines()
            if line.startswith("import time:")
        }
        return json.loads(p.stdout), imported

    for args in ([], ["--kind", "source", "--limit", "2"], ["--all", "--oldest-first"]):
        page, imported = zoo_ls("--json", *args)
        assert reader in imported, args
        heavy = {m for m in imported if m.split(".")[0] in ("sqlalchemy", "psycopg", "torch")}
        assert not heavy, (args, sorted(heavy)[:5])
        # Nor what other commands need: the client, the methods' names, importlib's
        # resources (a tenth of the process between them).
        unused = {"zoo.client", "zoo.methods", "zoo.derive", "importlib.resources"}
        assert not unused & imported, (args, sorted(unused & imported))
        limit = int(args[args.index("--limit") + 1]) if "--limit" in args else 50
        kind = args[args.index("--kind") + 1] if "--kind" in args else None
        expected = library.search(
            kind=kind,
            include_deleted="--all" in args,
            limit=limit,
            newest_first="--oldest-first" not in args,
        )
        assert page == json.loads(json.dumps(expected.to_json())), args
    page, imported = zoo_ls("--json", "--family", "gpt2", "--name", "copy", "--min-layers", "2")
    assert reader in imported and "sqlalchemy" not in imported
    expected = library.search(family="gpt2", name="copy", min_layers=2)
    assert page == json.loads(json.dumps(expected.to_json()))
    assert {a["family"] for a in page["artifacts"]} == {"gpt2"}
    # Descendants need a name resolved: the registry answers.
    page, imported = zoo_ls("--json", "--derived-from", page["artifacts"][-1]["name"])
    assert "sqlalchemy" in imported and reader not in imported


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg://u%40x:p%2Fa%3As@db.example:6543/my%20db",
        "postgresql+psycopg://u:p/a:s@@db.example/db",  # the grammar keeps / : @ in it
        "postgresql+psycopg:///test",
        "postgresql+psycopg://me@/test?host=/var/run/postgresql",
        "postgresql+psycopg://me@[::1]:5433/test?sslmode=require&application_name=zoo",
        "postgresql+psycopg://me@db/test?connect_timeout=3",
        "postgresql+psycopg://",
    ],
)
def test_the_quick_page_connects_where_the_registry_connects(url):
    """The libpq keywords of the quick path are those SQLAlchemy's psycopg dialect gives
    psycopg for the same URL (its own parser is the reference)."""
    from sqlalchemy.engine import make_url

    from zoo.db import pg_page

    parsed = make_url(url)
    _, kwargs = parsed.get_dialect()().create_connect_args(parsed)
    expected = {k: str(v) for k, v in kwargs.items() if k != "context"}
    ours = {"connect_timeout": str(pg_page.CONNECT_TIMEOUT_S), **expected}
    assert pg_page.connect_params(url) == {**ours, "client_encoding": "UTF8"}


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://me@db/test",  # SQLAlchemy's default driver for it is psycopg2
        "sqlite:////tmp/zoo.db",
        "postgresql+psycopg://me@h1,h2/test",
        "postgresql+psycopg://me@/test?host=h1&host=h2",
        "postgresql+psycopg://me@/test?host=h1:5433",
        "postgresql+psycopg://me@h/test?port=5432,5433",
        "postgresql+psycopg://me@h:port/test",
        "postgresql+psycopg://me@h/prod%00test",  # NUL: libpq would read "prod"
    ],
)
def test_the_quick_page_leaves_other_urls_to_the_registry(url):
    from zoo.db import pg_page

    assert pg_page.connect_params(url) is None


def test_the_quick_page_keeps_its_connection_replaces_a_closed_one_and_forks(
    registry, db_url, tiny_dir
):
    """Pages in a process share one connection; one the server closed since (a restart,
    an idle timeout) is replaced without the caller seeing it; a forked child opens its
    own and leaves its parent's working."""
    import os

    from sqlalchemy import text

    import zoo.api
    from zoo.db import pg_page

    if not db_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL connection")
    registry.import_checkpoint(tiny_dir("bert"))
    params = pg_page.connect_params(db_url)

    def backend() -> int:
        return int(pg_page._ask(params, "SELECT pg_backend_pid()", [])[0][0])

    first = zoo.api.quick_page()
    assert first is not None and first.total == 1
    pid = backend()
    assert zoo.api.quick_page() == first and backend() == pid
    with registry.engine.begin() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    assert zoo.api.quick_page() == first
    pid = backend()
    child = os.fork()
    if child == 0:  # lists, closes what it holds and exits
        code = 1
        try:
            code = 0 if zoo.api.quick_page() == first and backend() != pid else 3
            pg_page.close_kept()
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend() == pid and zoo.api.quick_page() == first


def test_the_quick_page_reads_through_the_systems_libpq_or_leaves_it_to_the_registry(
    registry, db_url, tiny_dir, monkeypatch
):
    """Without psycopg's copy of libpq the system's serves; without any libpq the
    registry answers."""
    import ctypes

    import zoo.api
    from zoo.db import libpq, pg_page

    if not db_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL connection")
    try:
        ctypes.CDLL("libpq.so.5")
    except OSError:
        pytest.skip("no system libpq")
    registry.import_checkpoint(tiny_dir("bert"))
    for only in (["libpq.so.5"], ["libzoo-no-such-library.so"]):
        pg_page.close_kept()
        monkeypatch.setattr(libpq, "_LIB", None)
        monkeypatch.setattr(libpq, "_candidates", lambda only=only: only)
        expected = registry.search() if only == ["libpq.so.5"] else None
        assert zoo.api.quick_page() == expected, only
    pg_page.close_kept()


def test_threads_asking_for_pages_at_once_leave_one_connection_open(
    registry, db_url, tiny_dir, monkeypatch
):
    """Threads that find no free connection open their own; once done, one is kept per
    database and the others are closed, not left open."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import text

    import zoo.api
    from zoo.db import pg_page

    if not db_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL connection")
    registry.import_checkpoint(tiny_dir("bert"))
    tagged = db_url + "?application_name=zoo_quick_page_threads"
    monkeypatch.setenv("ZOO_DB_URL", tagged)
    with ThreadPoolExecutor(8) as pool:
        pages = list(pool.map(lambda _: zoo.api.quick_page(), range(200)))
    assert all(p is not None and p.total == 1 for p in pages)
    count = text(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'zoo_quick_page_threads'"
    )
    deadline = time.monotonic() + 10  # a closed session's backend exits a moment later
    while True:
        with registry.engine.connect() as connection:
            open_ = connection.execute(count).scalar()
        if open_ == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert open_ == 1
    pg_page.close_kept()


# --- lineage -----------------------------------------------------------------------------------


def _old_walk(session, root: int, *, up: bool, down: bool, depth: int | None):
    """zoo's former lineage walk, one query per node, with a depth limit: (edges, nodes)."""
    from zoo.db import queries

    edges, nodes = set(), {root}
    for direction, wanted in (("up", up), ("down", down)):
        if not wanted:
            continue
        todo, level = deque([(root, 0)]), {root: 0}
        while todo:
            node, d = todo.popleft()
            if depth is not None and d >= depth:
                continue
            found = (
                queries.edges(session, child_id=node)
                if direction == "up"
                else queries.edges(session, parent_id=node)
            )
            for e in found:
                edges.add(e.id)
                nxt = e.parent_id if direction == "up" else e.child_id
                nodes.add(nxt)
                if nxt not in level:
                    level[nxt] = d + 1
                    todo.append((nxt, d + 1))
    return edges, nodes


def test_lineage_queries_equal_the_per_edge_walk_on_random_dags(registry, tiny_dir, tmp_path):
    from zoo.api.lineage import is_ancestor

    infos = registry.import_checkpoints(copies(tiny_dir("bert"), tmp_path, 7))
    ids = [i.id for i in infos]
    names = [i.name for i in infos]
    pairs = [(a, b) for a in range(7) for b in range(a + 1, 7)]

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        chosen=st.lists(st.sampled_from(pairs), unique=True, max_size=12),
        relabel=st.permutations(range(7)),
        root=st.integers(0, 6),
        depth=st.one_of(st.none(), st.integers(0, 4)),
        up=st.booleans(),
        down=st.booleans(),
    )
    def check(chosen, relabel, root, depth, up, down):
        registry.transaction(lambda s: s.execute(delete(Edge)))
        for a, b in chosen:  # a DAG in a random topological order
            registry.link(names[relabel[b]], names[relabel[a]], relation="finetune")
        graph = registry.lineage(names[root], up=up, down=down, depth=depth)
        with registry.session() as s:
            edges, nodes = _old_walk(s, ids[root], up=up, down=down, depth=depth)
            for y in ids:
                above = _old_walk(s, y, up=True, down=False, depth=None)[1] - {y}
                assert {x for x in ids if is_ancestor(s, x, y)} == above
        assert {e.id for e in graph.edges} == edges
        assert set(graph.nodes) == nodes and next(iter(graph.nodes)) == ids[root]

    check()


def test_depth_limits_and_cycle_refusal(registry, tiny_dir, tmp_path, run_cli):
    names = [i.name for i in registry.import_checkpoints(copies(tiny_dir("gpt2"), tmp_path, 5))]
    for parent, child in itertools.pairwise(names):
        registry.link(child, parent)
    assert len(registry.lineage(names[4], depth=None).edges) == 4
    assert [len(registry.lineage(names[4], depth=d).edges) for d in range(6)] == [0, 1, 2, 3, 4, 4]
    assert {n.name for n in registry.lineage(names[2], depth=1).nodes.values()} == set(names[1:4])
    alone = registry.lineage(names[2], depth=0)
    assert not alone.edges and [n.name for n in alone.nodes.values()] == [names[2]]
    # An import is an edge too, from the folder into the artifact it made: at depth d,
    # those of the artifacts fewer than d edges up (none at depth 0).
    assert not alone.imports and "--import-->" not in alone.to_text()
    # Edges hidden by the depth are not "no recorded lineage": the text says which.
    assert alone.to_text() == f"{names[2]} (depth 0: no edges walked)"
    assert alone.to_json()["depth"] == 0 and registry.lineage(names[2]).to_json()["depth"] is None
    imported = [registry.lineage(names[4], depth=d, down=False).imports for d in (1, 2, 9)]
    assert [sorted(registry.lineage(names[4]).nodes[i].name for i in m) for m in imported] == [
        [names[4]],
        sorted(names[3:]),
        sorted(names),
    ]
    code, out, _ = run_cli("lineage", names[4], "--up", "--depth", "2", "--format", "json")
    data = json.loads(out)
    assert code == 0 and {e["parent"] for e in data["edges"]} == {names[2], names[3]}
    code, _, err = run_cli("lineage", names[4], "--depth", "-1")
    assert code == 2
    with pytest.raises(InvalidInputError, match="would make a cycle"):
        registry.link(names[0], names[4])
    code, out, err = run_cli("link", names[1], "--from", names[3])
    assert code == 2 and "would make a cycle" in err and err.count("\n") == 1
    assert len(registry.lineage(names[0]).edges) == 4  # nothing was added


def test_every_lineage_walk_looks_up_each_step_by_the_edge_index(
    registry, db_url, tiny_dir, tmp_path, run_cli
):
    """PostgreSQL plans a recursive step once; for an edges table of a few pages it chose
    a scan of the whole table joined at every step. Each step now looks up its edges by
    the index: with 400 more edges, vacuumed and analyzed, no walk scans the edges table
    more than once: a 30-deep lineage up, one down with a depth limit, the ancestor check
    a materialization's record makes, `link`'s cycle check (refusing a cycle 30 deep) and
    the listing of an artifact's descendants."""
    from sqlalchemy import text

    from zoo.db import graph, search
    from zoo.db.queries import edge_values

    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's planner")
    infos = registry.import_checkpoints(copies(tiny_dir("gpt2"), tmp_path / "c", 71))
    infos, others = infos[:31], [i.id for i in infos[31:]]
    for parent, child in itertools.pairwise(infos):
        registry.link(child.name, parent.name, relation="finetune")
    with registry.engine.begin() as c:  # 400 edges elsewhere in the library
        c.execute(
            text(
                "INSERT INTO edges (parent_id, child_id, relation, recipe_json, zoo_version, "
                "created_at, created_by) SELECT p, c, 'distill', '{}', 'test', now(), 'test' "
                "FROM unnest(CAST(:ids AS int[])) p, unnest(CAST(:ids AS int[])) c "
                "WHERE p < c LIMIT 400"
            ),
            {"ids": others},
        )
    assert _vacuumed(registry, "edges") >= 4
    assert len(registry.lineage(infos[-1].name, down=False).edges) == 30
    assert len(registry.lineage(infos[0].name, up=False, depth=20).edges) == 20
    top, bottom = infos[0].id, infos[-1].id
    cycle = edge_values(bottom, top, "finetune", {}, "test", "test")
    walks = [
        (graph._walk_edges_statement("postgresql", True, False), {"root": bottom}),
        (graph._walk_edges_statement("postgresql", False, True), {"root": top, "depth": 20}),
        (graph._is_ancestor_statement("postgresql"), {"node": bottom, "ancestor": others[0]}),
        (graph._insert_unless_cycle_statement("postgresql"), cycle),
        (
            search.statement(
                "postgresql",
                search.Filters(derived_from=top),
                limit=50,
                after=None,
                newest_first=True,
            )[0],
            {"limit": 51},
        ),
    ]
    with registry.engine.connect() as connection, connection.begin():
        for statement, values in walks:
            compiled = statement.compile(registry.engine)
            params = compiled.construct_params(values)
            explain = "EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled)
            plan = connection.exec_driver_sql(explain, params).scalar()
            read = [n for n in _nodes(plan) if n.get("Relation Name") == "edges"]
            scans = [n for n in read if n["Node Type"] == "Seq Scan"]
            assert sum(n["Actual Loops"] for n in scans) <= 1, (str(compiled), scans)
            assert any(n["Actual Loops"] >= 20 for n in read), read  # it walked
        connection.rollback()  # the cycle check inserts nothing; nothing else is kept
    assert len(registry.search(derived_from=infos[0].name, limit=50).items) == 30
    code, _, err = run_cli("link", infos[0].name, "--from", infos[-1].name)
    assert code == 2 and "would make a cycle" in err


# --- batch import ------------------------------------------------------------------------------


def test_batch_import_registers_what_single_imports_would(registry, tiny_dir, tmp_path):
    folders = copies(tiny_dir("llama"), tmp_path, 5)
    folders.append(folders[1])  # the same content twice: one artifact
    batch = registry.import_checkpoints(folders, batch=2)
    assert len({i.id for i in batch}) == 5 and batch[1].id == batch[5].id
    for info, folder in zip(batch, folders, strict=True):
        again = registry.import_checkpoint(folder)
        assert (again.id, again.content_hash, again.tensor_count) == (
            info.id,
            info.content_hash,
            len(info.tensors),
        )
        assert info.name == folder.name
    assert _check_aggregates(registry) == 5


# --- the migration -----------------------------------------------------------------------------


def test_migration_backfills_the_aggregates_down_and_up_again(registry, tiny_dir):
    from zoo.db import engine as db_engine

    src = registry.import_checkpoint(tiny_dir("gpt2"))
    lg = registry.extract(src.name, method="dwt", wavelet="haar", levels=1)
    registry.materialize(lg.name, layers=2, hidden=16, store=True)
    registry.materialize(src.name, layers=3, hidden=16, method="weight-selection")
    written = {(i.id, i.tensor_count, i.nbytes, i.layers, i.hidden) for i in registry.list()}
    assert len(written) == 4 and all(w[1] > 0 and w[3] for w in written)
    engine = registry.engine
    for _ in range(2):
        engine.dispose()
        db_engine.downgrade(engine, "0005")
        with engine.connect() as c:
            columns = {col["name"] for col in inspect(c).get_columns("artifacts")}
        assert "tensor_count" not in columns and "layers" not in columns
        db_engine.upgrade(engine)
        engine.dispose()
        backfilled = {(i.id, i.tensor_count, i.nbytes, i.layers, i.hidden) for i in registry.list()}
        assert backfilled == written


def test_migration_fills_the_totals_from_the_rows_down_and_up_again(registry, tiny_dir, tmp_path):
    from zoo.db import engine as db_engine

    sources = registry.import_checkpoints(copies(tiny_dir("gpt2"), tmp_path / "g", 3))
    registry.extract(sources[0].name, method="dwt", wavelet="haar", levels=1)
    registry.rm(sources[2].name)
    written = _counted(registry)
    assert written[("source", False)] == 2 and written[("source", True)] == 3
    engine = registry.engine
    for _ in range(2):
        engine.dispose()
        db_engine.downgrade(engine, "0006")
        with engine.connect() as c:
            assert "artifact_totals" not in inspect(c).get_table_names()
        db_engine.upgrade(engine)
        engine.dispose()
        assert _totals(registry) == written
    registry.import_checkpoints(copies(tiny_dir("gpt2"), tmp_path / "h", 2, start=10))
    assert _totals(registry)[("source", False)] == 4 == _counted(registry)[("source", False)]


def test_a_recorded_origin_with_control_characters_prints_escaped_and_json_keeps_it(
    registry, tiny_dir, tmp_path, run_cli
):
    """A folder named with a newline would add a line of its own (a fake lineage edge) to
    what an auditor reads: text output escapes it as Python writes it; JSON is exact."""
    import shutil

    folder = tmp_path / "new\nline --import--> bert\x1b[2K"
    shutil.copytree(tiny_dir("bert"), folder)
    code, _, err = run_cli("import", str(folder), "--name", "crafted")
    assert code == 0, err
    shown = repr(str(folder))[1:-1]  # one line: \n and \x1b as escapes
    code, text, _ = run_cli("lineage", "crafted")
    assert code == 0 and text == f"{shown} --import--> crafted\n"
    code, text, _ = run_cli("show", "crafted")
    imported = [line for line in text.splitlines() if line.startswith("imported:")]
    assert len(imported) == 1 and imported[0].startswith(f"imported:  {shown} (")
    assert len(text.splitlines()) == len([line for line in text.splitlines() if ":" in line])
    code, text, _ = run_cli("audit", str(folder))
    assert code == 0 and text.splitlines() == [
        f"{shown}: source crafted ({registry.show('crafted').content_hash[:12]})",
        "ancestry:",
        f"  {shown} --import--> crafted",
    ]
    for fmt in ("dot", "mermaid"):
        code, text, _ = run_cli("lineage", "crafted", "--format", fmt)
        assert code == 0 and "\x1b" not in text
        assert not any(line.startswith("line") for line in text.splitlines()), text
    code, text, _ = run_cli("lineage", "crafted", "--format", "json")
    assert json.loads(text)["imports"]["crafted"][0]["origin"] == str(folder)
    # verify names the folder in its fix, and a side file's name is in the import's note.
    blob = next(t.digest for t in registry.show("crafted").tensors if len(t.shape) == 2)
    path = Path(registry.settings.store_url) / blob[:2] / blob
    path.write_bytes(path.read_bytes()[::-1])
    shutil.rmtree(folder)
    code, text, _ = run_cli("verify")
    assert code == 6 and f"from its folder, {shown}, no longer on this machine" in text, text
    assert not any(line.startswith("line") for line in text.splitlines()), text
    noted = tmp_path / "noted"
    shutil.copytree(tiny_dir("gpt2"), noted)
    (noted / "notes\nverified: all files kept.txt").write_text("x")
    code, _, err = run_cli("import", str(noted))
    assert code == 0 and "notes\\nverified: all files kept.txt" in err and err.count("\n") == 1


def test_a_declared_note_with_control_characters_prints_escaped_and_json_keeps_it(
    registry, tiny_dir, run_cli
):
    """A link's note is free text: a newline in it would add a fake lineage edge to what
    `zoo lineage` and `zoo audit` print; text output escapes it, JSON keeps it exact."""
    folder = tiny_dir("bert")
    base = registry.import_checkpoint(folder)
    tuned = registry.import_checkpoint(tiny_dir("bert", seed=1), name="bert-tuned")
    note = "tuned]\nevil --materialize--> bert-tuned  [method=dwt\x1b[2K"
    code, _, err = run_cli("link", tuned.name, "--from", base.name, "--note", note)
    assert code == 0, err
    shown = repr(note)[1:-1]
    code, text, _ = run_cli("lineage", tuned.name, "--up")
    assert code == 0 and f"{base.name} --finetune--> bert-tuned  [note={shown}]" in text
    assert not any(line.startswith("evil") for line in text.splitlines()), text
    assert "\x1b" not in text
    code, text, _ = run_cli("audit", str(tiny_dir("bert", seed=1)))
    assert code == 0 and f"  {base.name} --finetune--> bert-tuned  [note={shown}]" in text
    assert not any(line.startswith("evil") for line in text.splitlines()), text
    code, text, _ = run_cli("lineage", tuned.name, "--format", "json")
    assert [e["recipe"]["note"] for e in json.loads(text)["edges"]] == [note]
