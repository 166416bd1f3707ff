"""A first rebuild of a store without spans (the Rebuilder's `fresh` mode).

It writes without reading what is stored, so it must leave exactly what the
ordinary path leaves, and notice when another process writes spans meanwhile.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from spanwatch.store import marks
from spanwatch.store.connection import open_store
from spanwatch.store.prepare import CHUNK_SESSIONS, CHUNKS_AHEAD, prepare_session
from spanwatch.store.rebuild import Rebuilder, SessionResult
from spanwatch.store.rebuild_all import rebuild_store
from spanwatch.store.schema import INDEXES, ensure_schema, indexes_deferred
from stores import insert_events, make_store, path_rows, span_table
from test_store_parallel import busy_store, mark_rows
from test_store_rebuild import task_session


def tables(conn: sqlite3.Connection) -> tuple[object, ...]:
    return span_table(conn), path_rows(conn), mark_rows(conn)


def index_sql(path: Path) -> dict[str, str]:
    """spanwatch's secondary indexes present in the store, with their definitions."""
    conn = sqlite3.connect(path)
    try:
        return dict(
            conn.execute(
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'index' AND name LIKE 'idx_tool_span%'"
            )
        )
    finally:
        conn.close()


def schema_only_indexes(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "schema-only.db"
    busy_store(path).close()
    ensure_schema(open_store(path))
    return index_sql(path)


@pytest.mark.parametrize("jobs", [1, 2])
def test_fresh_rebuild_leaves_what_the_ordinary_path_leaves(tmp_path: Path, jobs: int) -> None:
    busy_store(tmp_path / "fresh.db").close()
    conn = busy_store(tmp_path / "ordinary.db")
    ensure_schema(conn)
    # A watermark of a session that is gone: the store is not fresh any more.
    conn.execute("INSERT INTO spanwatch_sessions VALUES ('ghost', 1, 1, 1, 0, 0, 0)")
    conn.commit()
    fresh = rebuild_store(tmp_path / "fresh.db", jobs=jobs)
    ordinary = rebuild_store(tmp_path / "ordinary.db", jobs=jobs)
    assert ordinary.vanished == 1
    assert (fresh.spans, fresh.spans_written) == (ordinary.spans, ordinary.spans_written)
    assert tables(sqlite3.connect(tmp_path / "fresh.db")) == tables(conn)
    assert "resumed/p0-task" in span_table(conn)


def test_spans_written_by_another_process_meanwhile_end_the_fresh_mode(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    busy_store(path).close()
    conn = open_store(path)
    ensure_schema(conn)
    sessions = marks.sessions_in_order(conn)
    rebuilder = Rebuilder(conn, write_batch_rows=10**6, fresh=True)
    for session_id in sessions[:5]:
        rebuilder.rebuild_prepared(prepare_session(conn, rebuilder.shape, session_id))
    # Meanwhile a daemon writes a later session and one of the queued ones.
    other = Rebuilder(open_store(path))
    other.rebuild(sessions[2])
    other.rebuild(sessions[7])
    # ... with a span its events no longer give (as if written from older rows).
    other.conn.execute(
        "INSERT INTO tool_spans (span_id, session_id) VALUES ('stale', ?)", (sessions[7],)
    )
    other.conn.execute("INSERT INTO tool_span_paths VALUES ('stale', 'a.py')")
    for session_id in sessions[5:]:
        rebuilder.rebuild_prepared(prepare_session(conn, rebuilder.shape, session_id))
    rebuilder.flush()
    assert not rebuilder.fresh

    reference = tmp_path / "reference.db"
    busy_store(reference).close()
    rebuild_store(reference)
    assert tables(conn) == tables(sqlite3.connect(reference))


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_first_rebuild_builds_the_secondary_indexes_once_near_the_end(
    tmp_path: Path, jobs: int
) -> None:
    """Absent while the sessions are written; built once: at the end, or, with
    workers, once they have the last chunks (the writer only waits then)."""
    path = tmp_path / "events.db"
    conn = make_store(path)
    for n in range(100):  # more sessions than the workers have in hand at a time
        insert_events(conn, task_session(f"s{n:03}", base=1000 + n, prefix=f"p{n}-"))
    # A resumed session repeats the ids of the first: it takes the ordinary path.
    insert_events(conn, task_session("resumed", base=9000, prefix="p0-"))
    conn.close()
    seen_during: list[dict[str, str]] = []

    def look(result: SessionResult, done: int, total: int) -> None:
        seen_during.append(index_sql(path))  # another connection, as a dashboard's

    rebuild_store(path, jobs=jobs, on_session=look)
    in_hand = jobs * CHUNKS_AHEAD * CHUNK_SESSIONS
    # Without workers, absent until the last session: its span ids collide with
    # the first's, which sends it down the ordinary path (which builds them).
    absent = len(seen_during) - 1 if jobs == 1 else len(seen_during) - in_hand
    assert absent > len(seen_during) / 3
    assert all(indexes == {} for indexes in seen_during[:absent])
    assert all(set(indexes) == set(INDEXES) for indexes in seen_during[absent:])
    assert index_sql(path) == schema_only_indexes(tmp_path)


def test_a_first_rebuild_that_fails_midway_still_leaves_the_indexes(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    busy_store(path).close()

    def stop(result: SessionResult, done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rebuild_store(path, jobs=2, on_session=stop)
    assert index_sql(path) == schema_only_indexes(tmp_path)
    # A second rebuild does it all.
    rebuild_store(path, jobs=2)
    reference = tmp_path / "reference.db"
    busy_store(reference).close()
    rebuild_store(reference)
    assert tables(sqlite3.connect(path)) == tables(sqlite3.connect(reference))


def test_a_rebuild_of_named_sessions_or_of_a_store_with_spans_keeps_the_indexes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    busy_store(path).close()
    ensure_schema(open_store(path))
    before = index_sql(path)
    seen_during: list[dict[str, str]] = []

    def look(result: SessionResult, done: int, total: int) -> None:
        seen_during.append(index_sql(path))

    rebuild_store(path, ["s001", "s002"], on_session=look)
    rebuild_store(path, jobs=2, on_session=look)  # spans stored: not a first rebuild
    assert seen_during and all(indexes == before for indexes in seen_during)


def test_the_ordinary_path_builds_deferred_indexes_before_it_reads_stored_spans(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    busy_store(path).close()
    conn = open_store(path)
    ensure_schema(conn)
    sessions = marks.sessions_in_order(conn)
    with indexes_deferred(conn):
        rebuilder = Rebuilder(conn, write_batch_rows=10**6, fresh=True)
        rebuilder.indexes_deferred = True
        for session_id in sessions[:3]:
            rebuilder.rebuild_prepared(prepare_session(conn, rebuilder.shape, session_id))
        assert index_sql(path) == {}
        Rebuilder(open_store(path)).rebuild(sessions[5])  # a daemon, meanwhile
        rebuilder.flush()  # finds the daemon's spans: its sessions take the ordinary path
        assert not rebuilder.fresh
        assert set(index_sql(path)) == set(INDEXES)
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT span_id FROM tool_spans WHERE session_id = ?", ("s001",)
        ).fetchall()
        assert "idx_tool_spans_session_depth" in str(plan)
