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
from spanwatch.store.prepare import prepare_session
from spanwatch.store.rebuild import Rebuilder
from spanwatch.store.rebuild_all import rebuild_store
from spanwatch.store.schema import ensure_schema
from stores import path_rows, span_table
from test_store_parallel import busy_store, mark_rows


def tables(conn: sqlite3.Connection) -> tuple[object, ...]:
    return span_table(conn), path_rows(conn), mark_rows(conn)


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
