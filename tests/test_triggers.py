"""The opt-in triggers capture: rows changed in place are seen, flags clear safely."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from spanwatch.engine import Event
from spanwatch.engine.events import EventKind as K
from spanwatch.store import marks
from spanwatch.store.connection import open_store
from spanwatch.store.rebuild import Rebuilder
from spanwatch.store.schema import SPAN_COLUMN_NAMES, ensure_schema
from spanwatch.store.triggers import (
    flagged_sessions,
    install_triggers,
    remove_triggers,
    triggers_installed,
)
from stores import insert_events, make_store, path_rows, span_table

TOOL = SPAN_COLUMN_NAMES.index("tool")


def setup(tmp_path: Path) -> tuple[sqlite3.Connection, Rebuilder]:
    path = tmp_path / "events.db"
    writer = make_store(path)
    insert_events(writer, [
        Event("s", 1, 10, K.TOOL_CALL, tool="Read", tool_call_id="a",
              payload=json.dumps({"file_path": "/old"})),
        Event("s", 2, 20, K.TOOL_RESULT, tool_call_id="a"),
    ])  # fmt: skip
    conn = open_store(path)
    ensure_schema(conn)
    return writer, Rebuilder(conn, cache_sessions=4)


def upsert_in_place(writer: sqlite3.Connection) -> None:
    """What an upserting recorder does: same row, same rowid and seq, new content."""
    writer.execute(
        "INSERT INTO events (session_id, seq, ts_ms, kind, source, tool, tool_call_id, payload) "
        "VALUES ('s', 1, 10, 'ToolCall', 'Tail', 'Edit', 'a', '{\"file_path\": \"/new\"}') "
        "ON CONFLICT(session_id, seq) DO UPDATE SET tool = excluded.tool, "
        "payload = excluded.payload"
    )


def test_rowid_mode_cannot_see_a_row_changed_in_place(tmp_path: Path) -> None:
    writer, rb = setup(tmp_path)
    rb.rebuild("s")
    upsert_in_place(writer)
    assert list(marks.stale_sessions(rb.conn)) == []  # the documented blind spot
    rb.rebuild("s")
    assert span_table(writer)["a"][TOOL] == "Read"


def test_triggers_flag_in_place_changes_and_the_rebuild_clears_the_flag(tmp_path: Path) -> None:
    writer, rb = setup(tmp_path)
    assert install_triggers(rb.conn)
    assert triggers_installed(rb.conn)
    rb.rebuild("s")
    upsert_in_place(writer)
    flags = flagged_sessions(rb.conn)
    assert list(flags) == ["s"]
    result = rb.rebuild("s", flag_version=flags["s"])
    assert result.mode == "full"
    assert span_table(writer)["a"][TOOL] == "Edit"
    assert path_rows(writer) == {("a", "/new")}
    assert flagged_sessions(rb.conn) == {}


def test_a_change_landing_after_the_flag_was_read_keeps_the_session_flagged(tmp_path: Path) -> None:
    writer, rb = setup(tmp_path)
    install_triggers(rb.conn)
    upsert_in_place(writer)
    seen = flagged_sessions(rb.conn)["s"]
    writer.execute("UPDATE events SET ts_ms = 30 WHERE seq = 2")  # lands meanwhile
    rb.rebuild("s", flag_version=seen)
    assert flagged_sessions(rb.conn) == {"s": seen + 1}


def test_deleted_rows_and_sessions_are_flagged_and_spans_removed(tmp_path: Path) -> None:
    writer, rb = setup(tmp_path)
    install_triggers(rb.conn)
    rb.rebuild("s", flag_version=flagged_sessions(rb.conn).get("s"))
    writer.execute("DELETE FROM events WHERE session_id = 's'")
    flags = flagged_sessions(rb.conn)
    assert rb.rebuild("s", flag_version=flags["s"]).mode == "vanished"
    assert span_table(writer) == {}
    assert flagged_sessions(rb.conn) == {}


def test_remove_drops_triggers_and_table_and_writers_keep_working(tmp_path: Path) -> None:
    writer, rb = setup(tmp_path)
    install_triggers(rb.conn)
    assert remove_triggers(rb.conn)
    assert not triggers_installed(rb.conn)
    upsert_in_place(writer)
    assert flagged_sessions(rb.conn) == {}
    assert not remove_triggers(rb.conn)


def test_a_row_moved_to_another_session_flags_both(tmp_path: Path) -> None:
    writer, rb = setup(tmp_path)
    install_triggers(rb.conn)
    writer.execute("UPDATE events SET session_id = 't' WHERE seq = 2")
    assert flagged_sessions(rb.conn) == {"s": 1, "t": 1}
