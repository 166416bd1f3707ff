"""The tables spanwatch writes, and the shape of the `events` table it reads.

`tool_spans` and `tool_span_paths` have exactly the reference's columns. An
older `tool_spans` gets its missing columns added; nothing is ever dropped.
spanwatch's own bookkeeping lives in `spanwatch_*` tables.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from spanwatch.store.connection import write_transaction
from spanwatch.store.errors import StoreError

#: (column, declaration used when adding it to an older table)
TOOL_SPAN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("span_id", "TEXT PRIMARY KEY"),
    ("session_id", "TEXT NOT NULL DEFAULT ''"),
    ("tool", "TEXT"),
    ("tool_call_id", "TEXT"),
    ("status", "TEXT NOT NULL DEFAULT 'orphaned'"),
    ("started_at_ms", "INTEGER"),
    ("ended_at_ms", "INTEGER"),
    ("lead_time_ms", "INTEGER"),
    ("tokens_in", "INTEGER"),
    ("tokens_out", "INTEGER"),
    ("reasoning_tokens", "INTEGER"),
    ("cost_usd_e6", "INTEGER"),
    ("paths_json", "TEXT NOT NULL DEFAULT '[]'"),
    ("parent_span_id", "TEXT"),
    ("depth", "INTEGER NOT NULL DEFAULT 0"),
    ("subtree_cost_usd_e6", "INTEGER"),
    ("subtree_token_count", "INTEGER"),
)
SPAN_COLUMN_NAMES = tuple(name for name, _ in TOOL_SPAN_COLUMNS)

_CREATE = (
    "CREATE TABLE IF NOT EXISTS tool_spans ("
    + ", ".join(f"{name} {decl}" for name, decl in TOOL_SPAN_COLUMNS)
    + ")",
    "CREATE TABLE IF NOT EXISTS tool_span_paths ("
    "span_id TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY (span_id, path))",
    # Per-session watermark: what the stored spans of the session were built from.
    "CREATE TABLE IF NOT EXISTS spanwatch_sessions ("
    "session_id TEXT PRIMARY KEY, max_seq INTEGER, row_count INTEGER NOT NULL, "
    "max_id INTEGER NOT NULL, span_count INTEGER NOT NULL, skipped_rows INTEGER NOT NULL, "
    "rebuilt_at_ms INTEGER NOT NULL)",
)
#: spanwatch's indexes besides the primary keys, by name: created once an
#: older tool_spans has all its columns.
INDEXES = {
    "idx_tool_spans_parent": "tool_spans(parent_span_id)",
    "idx_tool_spans_session_depth": "tool_spans(session_id, depth)",
    "idx_tool_span_paths_path": "tool_span_paths(path)",
}
_INDEXES = tuple(f"CREATE INDEX IF NOT EXISTS {name} ON {on}" for name, on in INDEXES.items())

#: events columns added by later versions of the store, with the value a missing one reads as.
OPTIONAL_EVENT_COLUMNS = {"ts_exact": "0", "tool_call_id": "NULL", "reasoning_tokens": "NULL"}
REQUIRED_EVENT_COLUMNS = (
    "id", "session_id", "seq", "ts_ms", "kind", "source", "tool",
    "tokens_in", "tokens_out", "cost_usd_e6", "payload",
)  # fmt: skip


def ensure_schema(conn: sqlite3.Connection, *, retry_for_s: float = 30.0) -> list[str]:
    """Create spanwatch's tables if absent; add columns an older `tool_spans` lacks.

    Returns the columns added. Runs in one short write transaction.
    """
    added: list[str] = []
    with write_transaction(conn, retry_for_s=retry_for_s):
        for statement in _CREATE:
            conn.execute(statement)
        present = table_columns(conn, "tool_spans")
        for name, decl in TOOL_SPAN_COLUMNS:
            if name not in present:
                conn.execute(f"ALTER TABLE tool_spans ADD COLUMN {name} {decl}")
                added.append(name)
        for statement in _INDEXES:
            conn.execute(statement)
    return added


@contextlib.contextmanager
def indexes_deferred(conn: sqlite3.Connection, *, retry_for_s: float = 30.0) -> Iterator[None]:
    """Inside, `INDEXES` are absent; they are built on the way out, errors or not.

    For a first rebuild of a whole store, into empty tables. Span ids are
    random, so each of its transactions dirtied pages all over every index
    and wrote them all to the WAL again: 713 MB of log for the benchmark
    store's 115 MB of spans and paths. Without these three indexes it is 528
    MB (the primary keys stay); building each at the end, sorted, is one
    transaction of 0.1-0.3 s. `Rebuilder` builds them first (`build_indexes`)
    if it reads stored spans by session, and a rebuild with workers once they
    have the last sessions to build (the writer only waits for them then). A
    process killed inside leaves them absent, which makes queries slower, not
    wrong, until the next `ensure_schema` (every spanwatch command that writes
    runs one).
    """
    with write_transaction(conn, retry_for_s=retry_for_s):
        for name in INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # the error that got us here is the one to see
            build_indexes(conn, retry_for_s=retry_for_s)
        raise
    build_indexes(conn, retry_for_s=retry_for_s)


def build_indexes(conn: sqlite3.Connection, *, retry_for_s: float = 30.0) -> None:
    """Create whichever of `INDEXES` are absent, each in a transaction of its own
    (building one over a full table holds the write lock for a fraction of a second)."""
    for statement in _INDEXES:
        with write_transaction(conn, retry_for_s=retry_for_s):
            conn.execute(statement)


def table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


@dataclass(frozen=True, slots=True)
class EventsShape:
    """The columns this store's `events` table has, as a SELECT list.

    Missing optional columns read as the reference would read them: `ts_exact`
    as 0, the others as NULL.
    """

    columns: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def select_list(self) -> str:
        return ", ".join(self.columns)


def events_shape(conn: sqlite3.Connection) -> EventsShape:
    present = table_columns(conn, "events")
    lacking = [c for c in REQUIRED_EVENT_COLUMNS if c not in present]
    if lacking:
        raise StoreError(f"the events table lacks required columns: {', '.join(lacking)}")

    def optional(name: str) -> str:
        return name if name in present else OPTIONAL_EVENT_COLUMNS[name]

    columns = (
        "id", "session_id", "seq", "ts_ms", optional("ts_exact"), "kind", "source", "tool",
        optional("tool_call_id"), "tokens_in", "tokens_out", optional("reasoning_tokens"),
        "cost_usd_e6", "payload",
    )  # fmt: skip
    missing = tuple(name for name in OPTIONAL_EVENT_COLUMNS if name not in present)
    return EventsShape(columns=columns, missing=missing)
