"""Full reads of long sessions done elsewhere: same rows, and the reading thread's pauses."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from spanwatch.daemon.long_reads import LongReads
from spanwatch.daemon.store_link import file_identity
from spanwatch.engine import Event
from spanwatch.engine.events import EventKind as K
from spanwatch.store import full_read, session_state
from spanwatch.store.connection import open_store
from spanwatch.store.events import row_keys
from spanwatch.store.full_read import FullRead, LongFullRead, read_in_full
from spanwatch.store.rebuild import Rebuilder
from spanwatch.store.schema import ensure_schema, events_shape
from stores import insert_events, make_store, path_rows, span_table


def tool_use(session: str, seq: int, ts: int, call_id: str, tool: str = "Read") -> list[Event]:
    return [
        Event(session, seq, ts, K.TOOL_CALL, tool=tool, tool_call_id=call_id,
              payload=json.dumps({"file_path": f"/src/{call_id}.py"})),
        Event(session, seq + 1, ts + 5, K.TOOL_RESULT, tool=tool, tool_call_id=call_id,
              tokens_in=10, tokens_out=3),
    ]  # fmt: skip


def session_events(
    session: str, uses: int, start_seq: int = 0, start_ts: int = 1000
) -> list[Event]:
    events: list[Event] = []
    for i in range(uses):
        events += tool_use(session, start_seq + 2 * i, start_ts + 10 * i, f"{session}-c{i}")
    return events


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, sqlite3.Connection]:
    path = tmp_path / "events.db"
    return path, make_store(path)


def rebuilder(path: Path) -> Rebuilder:
    conn = open_store(path)
    ensure_schema(conn)
    return Rebuilder(conn, cache_sessions=8)


def test_a_read_done_elsewhere_writes_what_a_rebuild_writes(
    store: tuple[Path, sqlite3.Connection], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_state, "JOURNAL_EVENTS", 4)
    path, conn = store
    insert_events(conn, session_events("s1", 40))
    rb = rebuilder(path)
    rb.rebuild("s1")
    # Rows a cached rebuild cannot take incrementally: they sort before more
    # events than its journal can undo.
    insert_events(conn, tool_use("s1", 500, 1001, "early", tool="Glob"))
    with pytest.raises(LongFullRead):
        rb.rebuild("s1", defer_full_from=10)
    reader = open_store(path)
    read = read_in_full(reader, events_shape(reader), "s1", pace=lambda: None)
    result = rb.rebuild_read(read)
    rb.flush()
    assert result.mode == "full"
    assert result.upserted == 1
    expected = tmp_path / "expected.db"
    fresh = make_store(expected)
    insert_events(fresh, [*session_events("s1", 40), *tool_use("s1", 500, 1001, "early", "Glob")])
    other = rebuilder(expected)
    other.rebuild("s1")
    other.flush()
    assert span_table(conn) == span_table(fresh)
    assert path_rows(conn) == path_rows(fresh)
    # The read's state is cached: what comes next is read incrementally.
    insert_events(conn, tool_use("s1", 600, 9000, "late"))
    assert rb.rebuild("s1", defer_full_from=10).mode == "incremental"


def test_only_long_full_reads_are_deferred(store: tuple[Path, sqlite3.Connection]) -> None:
    path, conn = store
    insert_events(conn, session_events("short", 3))
    insert_events(conn, session_events("long", 30))
    rb = rebuilder(path)
    assert rb.rebuild("short", defer_full_from=10).mode == "full"
    with pytest.raises(LongFullRead):
        rb.rebuild("long", defer_full_from=10)
    rb.rebuild("long")  # read here instead
    insert_events(conn, tool_use("long", 900, 99_000, "next"))
    assert rb.rebuild("long", defer_full_from=10).mode == "incremental"


def test_landed_reads_and_a_pause_that_holds_the_reader(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    path, conn = store
    insert_events(conn, session_events("s1", 400))
    ensure_schema(conn)
    landed = threading.Event()
    reads = LongReads(
        path, events_shape(conn), identity=file_identity(path), busy_timeout_ms=1000,
        on_landed=landed.set,
    )  # fmt: skip
    try:
        with reads.paused():
            reads.submit("s1")
            assert "s1" in reads
            time.sleep(0.3)
            assert not landed.is_set()  # held at its first pace point
        assert landed.wait(30)
        ((session_id, read),) = reads.landed()
        assert session_id == "s1"
        assert isinstance(read, FullRead)
        assert len(read.built) == 400
        assert "s1" not in reads
    finally:
        reads.close()


def test_closing_gives_up_reads_in_flight(store: tuple[Path, sqlite3.Connection]) -> None:
    path, conn = store
    insert_events(conn, session_events("s1", 50))
    ensure_schema(conn)
    reads = LongReads(
        path, events_shape(conn), identity=file_identity(path), busy_timeout_ms=1000,
        on_landed=lambda: None,
    )  # fmt: skip
    with reads.paused():
        reads.submit("s1")
        assert reads.close() == ["s1"]
    assert len(reads) == 0


def test_a_replaced_file_is_not_read(store: tuple[Path, sqlite3.Connection]) -> None:
    path, conn = store
    insert_events(conn, session_events("s1", 5))
    ensure_schema(conn)
    reads = LongReads(
        path, events_shape(conn), identity=(0, 0), busy_timeout_ms=1000, on_landed=lambda: None
    )
    try:
        reads.submit("s1")
        ((_, error),) = reads.wait()
        assert "replaced" in str(error)
    finally:
        reads.close()


def test_a_long_session_read_in_parts_gives_what_one_read_gives(
    store: tuple[Path, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, conn = store
    events = session_events("s1", 60)
    # Rows arrive out of load order, and one cannot be used at all.
    insert_events(conn, events[40:] + events[:40])
    insert_events(conn, tool_use("s1", 900, 1003, "late", tool="Glob"))
    conn.execute(
        "INSERT INTO events (session_id, seq, ts_ms, kind, source, payload) "
        "VALUES ('s1', 999, 'soon', 'ToolCall', 'Hook', '{}')"
    )
    ensure_schema(conn)
    reader = open_store(path)
    shape = events_shape(reader)
    whole = read_in_full(reader, shape, "s1", parts=False)
    monkeypatch.setattr(full_read, "READ_PART_ROWS", 7)
    parts = read_in_full(reader, shape, "s1", pace=lambda: None)
    assert parts.built == whole.built
    assert parts.state.mark == whole.state.mark
    assert parts.state.last_position == whole.state.last_position
    assert parts.rows.row_count == whole.rows.row_count == 123
    assert [r.seq for r in parts.rows.skipped] == [r.seq for r in whole.rows.skipped] == [999]


def test_a_part_that_changed_since_the_keys_were_read_means_one_read(
    store: tuple[Path, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, conn = store
    insert_events(conn, session_events("s1", 30))
    ensure_schema(conn)
    reader = open_store(path)
    shape = events_shape(reader)
    monkeypatch.setattr(full_read, "READ_PART_ROWS", 7)
    keys_of = row_keys

    def keys_then_delete(c: sqlite3.Connection, session_id: str) -> list[tuple[object, ...]]:
        keys = keys_of(c, session_id)
        conn.execute("DELETE FROM events WHERE seq = 10")  # after the keys were read
        return keys

    monkeypatch.setattr(full_read, "row_keys", keys_then_delete)
    read = read_in_full(reader, shape, "s1")
    assert read.rows.row_count == read.state.mark.row_count == 59
    assert len(read.built) == 29  # s1-c5 lost its call: its result joins another span
