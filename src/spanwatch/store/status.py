"""Figures for `spanwatch status`: how far the stored spans are behind the events."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from spanwatch.store.connection import fetch_all, has_table, read_snapshot


@dataclass(frozen=True, slots=True)
class SessionLag:
    session_id: str
    events: int
    max_seq: object
    max_id: int
    marked_events: int | None
    """Rows the stored spans reflect; None: never rebuilt."""
    marked_max_seq: object
    marked_max_id: int | None
    rebuilt_at_ms: int | None
    span_count: int | None
    skipped_rows: int | None

    @property
    def stale(self) -> bool:
        return (self.marked_events, self.marked_max_seq, self.marked_max_id) != (
            self.events,
            self.max_seq,
            self.max_id,
        )

    @property
    def lag_events(self) -> int:
        """Rows not yet reflected in spans (at least 1 when stale for another reason)."""
        if not self.stale:
            return 0
        return max(1, self.events - (self.marked_events or 0))


@dataclass(slots=True)
class StoreStatus:
    events: int = 0
    max_event_id: int = 0
    sessions: int = 0
    spans: int = 0
    stale_sessions: list[str] = field(default_factory=list)
    vanished_sessions: list[str] = field(default_factory=list)
    lag_events: int = 0
    last_rebuild_ms: int | None = None
    skipped_rows: int = 0
    triggers_installed: bool = False
    sessions_detail: list[SessionLag] = field(default_factory=list)


def store_status(conn: sqlite3.Connection) -> StoreStatus:
    status = StoreStatus()
    with read_snapshot(conn):
        has_marks = has_table(conn, "spanwatch_sessions")
        status.triggers_installed = bool(
            conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' "
                "AND name LIKE 'spanwatch_%'"
            ).fetchone()[0]
        )
        status.max_event_id = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        if has_table(conn, "tool_spans"):
            status.spans = conn.execute("SELECT count(*) FROM tool_spans").fetchone()[0]
        mark_sql = (
            "SELECT session_id, row_count, max_seq, max_id, rebuilt_at_ms, span_count, "
            "skipped_rows FROM spanwatch_sessions"
            if has_marks
            else "SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE 0"
        )
        stored = {row[0]: row[1:] for row in conn.execute(mark_sql)}
        live = fetch_all(
            conn, "SELECT session_id, count(*), max(seq), max(id) FROM events GROUP BY session_id"
        )
    none = (None, None, None, None, None, None)
    for session_id, count, max_seq, max_id in live:
        if not isinstance(session_id, str):
            continue
        marked = stored.pop(session_id, none)
        lag = SessionLag(session_id, count, max_seq, max_id, *marked)
        status.sessions_detail.append(lag)
        status.events += count
        status.sessions += 1
        status.skipped_rows += lag.skipped_rows or 0
        if lag.stale:
            status.stale_sessions.append(session_id)
            status.lag_events += lag.lag_events
        if lag.rebuilt_at_ms is not None:
            status.last_rebuild_ms = max(status.last_rebuild_ms or 0, lag.rebuilt_at_ms)
    status.vanished_sessions = sorted(stored)
    return status
