"""The opt-in `capture = "triggers"` mode: triggers on `events` flag changed sessions.

The default mode sees new rows (the rowid mark) and, at reconcile, deleted rows
and sessions; it cannot see a row updated in place (a writer upserting on
(session_id, seq) keeps the rowid, the seq and the count). With triggers, every
INSERT, UPDATE and DELETE on `events` bumps a per-session counter in
`spanwatch_dirty`, in the writer's own transaction. The daemon rebuilds the
session and, in the transaction that writes its spans, deletes the flag only if
the counter is still the one it read: a change that lands meanwhile keeps the
session flagged, and a crash before the commit loses nothing.

The table holds one row per flagged session and the daemon drains it, so it
stays small. `spanwatch triggers remove` drops the triggers and the table.
"""

from __future__ import annotations

import sqlite3

from spanwatch.store.connection import fetch_all, has_table, write_transaction

TRIGGER_NAMES = ("spanwatch_events_insert", "spanwatch_events_update", "spanwatch_events_delete")

_FLAG = (
    "INSERT INTO spanwatch_dirty (session_id, version) VALUES ({row}.session_id, 1) "
    "ON CONFLICT(session_id) DO UPDATE SET version = version + 1;"
)
_INSTALL = (
    "CREATE TABLE IF NOT EXISTS spanwatch_dirty "
    "(session_id TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS spanwatch_events_insert AFTER INSERT ON events "
    f"BEGIN {_FLAG.format(row='NEW')} END",
    "CREATE TRIGGER IF NOT EXISTS spanwatch_events_update AFTER UPDATE ON events "
    f"BEGIN {_FLAG.format(row='NEW')} "
    # A row moved to another session changes both; the old one is flagged too.
    "INSERT INTO spanwatch_dirty (session_id, version) SELECT OLD.session_id, 1 "
    "WHERE OLD.session_id IS NOT NEW.session_id "
    "ON CONFLICT(session_id) DO UPDATE SET version = version + 1; END",
    "CREATE TRIGGER IF NOT EXISTS spanwatch_events_delete AFTER DELETE ON events "
    f"BEGIN {_FLAG.format(row='OLD')} END",
)


def install_triggers(conn: sqlite3.Connection) -> bool:
    """Install the triggers (idempotent). True if they were not all there before."""
    was = triggers_installed(conn)
    with write_transaction(conn):
        for statement in _INSTALL:
            conn.execute(statement)
    return not was


def remove_triggers(conn: sqlite3.Connection) -> bool:
    """Drop the triggers and the flag table. True if anything was there."""
    had = triggers_installed(conn) or has_table(conn, "spanwatch_dirty")
    with write_transaction(conn):
        for name in TRIGGER_NAMES:
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        conn.execute("DROP TABLE IF EXISTS spanwatch_dirty")
    return had


def triggers_installed(conn: sqlite3.Connection) -> bool:
    marks = ", ".join("?" * len(TRIGGER_NAMES))
    count = conn.execute(
        f"SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({marks})",
        TRIGGER_NAMES,
    ).fetchone()[0]
    return bool(count == len(TRIGGER_NAMES))


def flagged_sessions(conn: sqlite3.Connection) -> dict[str, int]:
    """Sessions the triggers flagged, with the counter to clear them at."""
    if not has_table(conn, "spanwatch_dirty"):
        return {}
    rows = fetch_all(conn, "SELECT session_id, version FROM spanwatch_dirty")
    return {session_id: version for session_id, version in rows if isinstance(session_id, str)}


def clear_flag(conn: sqlite3.Connection, session_id: str, version: int) -> None:
    """Unflag a session rebuilt from the state at `version`. Call inside the spans' transaction."""
    conn.execute(
        "DELETE FROM spanwatch_dirty WHERE session_id = ? AND version = ?", (session_id, version)
    )
