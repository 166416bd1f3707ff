"""Test stores: the agent side's `events` table in each of its versions, and row inserts.

Tables here are declared the way real stores declare them; `loose` drops the
NOT NULL constraints so tests can plant the bad rows a store can end up with
when a writer declared its table differently.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanwatch.engine.events import Event
from spanwatch.store.rebuild_all import rebuild_store

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


# Stored spans against a rebuild from nothing --------------------------------------

SpanRows = tuple[dict[str, tuple[Any, ...]], set[tuple[str, str]]]


def backup(db: Path, dest: Path) -> Path:
    """A consistent copy of a live store (SQLite's online backup API), read-only on `db`."""
    source = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    target = sqlite3.connect(dest)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return dest


def stored_spans(db: Path) -> SpanRows:
    """tool_spans by span id, and the tool_span_paths rows, of `db`."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return span_table(conn), path_rows(conn)
    finally:
        conn.close()


def fresh_spans(copy: Path) -> SpanRows:
    """What a one-shot rebuild from nothing stores for `copy`'s events.

    Works on a scratch copy, so `copy` keeps the spans the daemon wrote.
    """
    scratch = copy.with_name(copy.name + ".fresh")
    shutil.copyfile(copy, scratch)
    conn = sqlite3.connect(scratch, isolation_level=None)
    try:
        for (table,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND "
            "name IN ('tool_spans', 'tool_span_paths', 'spanwatch_sessions')"
        ).fetchall():
            conn.execute(f"DELETE FROM {table}")
    finally:
        conn.close()
    rebuild_store(scratch)
    try:
        return stored_spans(scratch)
    finally:
        scratch.unlink()


@dataclass
class SpanComparison:
    """Stored spans against a rebuild from nothing: what is missing, extra or different."""

    spans: int
    missing: list[str]
    extra: list[str]
    differ: list[str]
    paths_differ: int
    examples: list[tuple[tuple[Any, ...], tuple[Any, ...]]]
    """(stored, expected) rows of the first spans that differ."""

    @property
    def lost(self) -> int:
        """Spans a fresh rebuild has that the store lacks or holds differently."""
        return len(self.missing) + len(self.differ) + (1 if self.paths_differ else 0)

    def describe(self) -> str:
        return (
            f"{len(self.missing)} spans missing, {len(self.extra)} unexpected, "
            f"{len(self.differ)} differ, {self.paths_differ} path rows differ "
            f"(e.g. {(self.missing + self.extra + self.differ)[:3]}; {self.examples})"
        )

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.differ or self.paths_differ)


def compare_spans(copy: Path) -> SpanComparison:
    """Stored spans of `copy` (a store no one writes to) against a fresh rebuild of its events."""
    stored, paths = stored_spans(copy)
    expected, expected_paths = fresh_spans(copy)
    differ = sorted(k for k in expected.keys() & stored.keys() if expected[k] != stored[k])
    return SpanComparison(
        spans=len(expected),
        missing=sorted(expected.keys() - stored.keys()),
        extra=sorted(stored.keys() - expected.keys()),
        differ=differ,
        paths_differ=len(paths ^ expected_paths),
        examples=[(stored[k], expected[k]) for k in differ[:2]],
    )
