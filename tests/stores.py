"""Test stores: the agent side's `events` table in each of its versions, and row inserts.

Tables here are declared the way real stores declare them; `loose` drops the
NOT NULL constraints so tests can plant the bad rows a store can end up with
when a writer declared its table differently.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from spanwatch.engine.events import Event

BASE_COLUMNS = (
    "session_id TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL, kind TEXT NOT NULL, "
    "source TEXT NOT NULL, tool TEXT, tokens_in INTEGER, tokens_out INTEGER, "
    "cost_usd_e6 INTEGER, payload TEXT NOT NULL"
)
LATER_COLUMNS = {
    "ts_exact": "INTEGER NOT NULL DEFAULT 0",
    "tool_call_id": "TEXT",
    "reasoning_tokens": "INTEGER",
    "stop_reason": "TEXT",
}


def make_store(
    path: Path, *, later_columns: Iterable[str] = tuple(LATER_COLUMNS), loose: bool = False
) -> sqlite3.Connection:
    """A WAL-mode store with `events`; `later_columns` picks which ALTERs it has seen."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    columns = BASE_COLUMNS.replace(" NOT NULL", "") if loose else BASE_COLUMNS
    conn.execute(f"CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, {columns})")
    conn.execute("CREATE UNIQUE INDEX events_session_seq ON events(session_id, seq)")
    for name in later_columns:
        decl = LATER_COLUMNS[name]
        if loose:
            decl = decl.replace(" NOT NULL", "")
        conn.execute(f"ALTER TABLE events ADD COLUMN {name} {decl}")
    return conn


def event_row(event: Event) -> dict[str, Any]:
    return {
        "session_id": event.session_id,
        "seq": event.seq,
        "ts_ms": event.ts_ms,
        "kind": event.kind.value,
        "source": event.source.value,
        "tool": event.tool,
        "tokens_in": event.tokens_in,
        "tokens_out": event.tokens_out,
        "cost_usd_e6": event.cost_usd_e6,
        "payload": event.payload,
        "ts_exact": int(event.ts_exact),
        "tool_call_id": event.tool_call_id,
        "reasoning_tokens": event.reasoning_tokens,
    }


def insert_rows(conn: sqlite3.Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert rows given as column -> value, in one transaction; unknown columns dropped."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    conn.execute("BEGIN")
    for row in rows:
        names = [name for name in row if name in present]
        conn.execute(
            f"INSERT INTO events ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            [row[name] for name in names],
        )
    conn.execute("COMMIT")


def insert_events(conn: sqlite3.Connection, events: Iterable[Event]) -> None:
    insert_rows(conn, (event_row(event) for event in events))


def span_table(conn: sqlite3.Connection) -> dict[str, tuple[Any, ...]]:
    """tool_spans as span_id -> row, for comparisons."""
    return {row[0]: tuple(row) for row in conn.execute("SELECT * FROM tool_spans")}


def path_rows(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    return set(conn.execute("SELECT span_id, path FROM tool_span_paths").fetchall())
