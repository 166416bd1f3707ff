"""The agent side's `events` table, as the store's writers create and migrate it.

This is not spanwatch's schema: spanwatch only reads this table. The simulator
needs it to make stores like the ones found in the wild, including old ones.
Each store version is the previous one plus `ALTER TABLE ADD COLUMN`, so the
physical column order (and the missing columns of old stores) match reality.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from spanwatch.simulate.rows import ADDED_COLUMNS, ALL_COLUMNS

#: Store versions and how many of `ADDED_COLUMNS` each has.
#:   v1  the first release: the ten base columns
#:   v2  + ts_exact, tool_call_id (transcript timestamps and tool-use ids)
#:   v3  + reasoning_tokens, stop_reason, latency_ms (what the proxy learned)
VERSIONS: dict[str, int] = {"v1": 0, "v2": 2, "v3": 5}
CURRENT = "v3"

_CREATE_V1 = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    tool TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    cost_usd_e6 INTEGER,
    payload TEXT NOT NULL
)
"""
_CREATE_UNIQUE = "CREATE UNIQUE INDEX IF NOT EXISTS events_session_seq ON events(session_id, seq)"


def resolve_version(version: str) -> str:
    """Map "current" to the newest version; reject unknown names."""
    name = CURRENT if version == "current" else version
    if name not in VERSIONS:
        known = ", ".join(["current", *VERSIONS])
        raise ValueError(f"unknown store version {version!r} (known: {known})")
    return name


def connect(path: str | Path, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """Open (creating if needed) a store the way agent writers do.

    Autocommit mode (`isolation_level=None`) so callers run explicit
    `BEGIN IMMEDIATE ... COMMIT` transactions like real writers; a busy timeout
    so a writer waits for spanwatch's short write transactions instead of failing.
    """
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return conn


def create_events_table(conn: sqlite3.Connection, version: str = "current") -> tuple[str, ...]:
    """Create or migrate `events` up to `version`; switch the store to WAL.

    Idempotent: on an existing table only the columns of `version` that are
    missing are added (never dropped, never moved back to an older version).
    Returns the table's columns afterwards, without `id`.
    """
    wanted = ADDED_COLUMNS[: VERSIONS[resolve_version(version)]]
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(_CREATE_V1)
    conn.execute(_CREATE_UNIQUE)
    present = set(event_columns(conn))
    for name, decl in wanted:
        if name not in present:
            conn.execute(f"ALTER TABLE events ADD COLUMN {name} {decl}")
    return event_columns(conn)


def event_columns(conn: sqlite3.Connection) -> tuple[str, ...]:
    """The columns `events` has, in table order, without `id` (empty if no table)."""
    rows = conn.execute("SELECT name FROM pragma_table_info('events')").fetchall()
    return tuple(str(name) for (name,) in rows if name != "id")


def insertable_columns(conn: sqlite3.Connection) -> tuple[str, ...]:
    """The generated row fields this store can hold: what a writer of its version writes."""
    present = set(event_columns(conn))
    return tuple(name for name in ALL_COLUMNS if name in present)


def insert_sql(columns: tuple[str, ...]) -> str:
    """`INSERT INTO events (...) VALUES (?, ...)` for `columns`."""
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO events ({', '.join(columns)}) VALUES ({marks})"
