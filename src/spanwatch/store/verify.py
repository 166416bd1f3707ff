"""Checking stored spans against a fresh rebuild, without writing anything.

Each session is checked inside one read snapshot, so a daemon writing at the
same time cannot make a session look wrong half-way through. A session whose
watermark is behind its events is reported as pending (the daemon has not
caught up yet); any other difference is a real one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from spanwatch.engine import SessionSpans
from spanwatch.store import marks
from spanwatch.store import spans as span_rows
from spanwatch.store.connection import read_snapshot
from spanwatch.store.events import load_session_rows
from spanwatch.store.owners import session_records
from spanwatch.store.schema import SPAN_COLUMN_NAMES, EventsShape


@dataclass(frozen=True, slots=True)
class SpanDifference:
    span_id: str
    problem: str
    """"missing" (not stored), "unexpected" (stored, not rebuilt), "columns" or "paths"."""
    stored: dict[str, object] = field(default_factory=dict)
    expected: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class SessionCheck:
    session_id: str
    pending: bool
    """The session's watermark is behind its events: not yet rebuilt, not wrong."""
    spans: int = 0
    differences: list[SpanDifference] = field(default_factory=list)


def check_session(conn: sqlite3.Connection, shape: EventsShape, session_id: str) -> SessionCheck:
    with read_snapshot(conn):
        live = marks.live_mark(conn, session_id)
        stored_mark = marks.read_mark(conn, session_id)
        rows = load_session_rows(conn, shape, session_id)
        stored = span_rows.stored_rows(conn, session_id)
        stored_paths = span_rows.stored_paths(conn, stored)
        session = SessionSpans()
        session.feed_all(rows.events)
        records, _ = session_records(conn, session_id, session, stored)
    pending = live != stored_mark and (live.row_count > 0 or stored_mark is not None)
    check = SessionCheck(session_id, pending=pending, spans=len(records))
    expected = {record.span_id: record for record in records}
    for span_id, record in expected.items():
        row = span_rows.record_row(record)
        old = stored.get(span_id)
        if old is None:
            check.differences.append(SpanDifference(span_id, "missing", {}, _named(row)))
            continue
        changed = [i for i, (a, b) in enumerate(zip(old, row, strict=True)) if not _same(a, b)]
        if changed:
            check.differences.append(
                SpanDifference(
                    span_id,
                    "columns",
                    {SPAN_COLUMN_NAMES[i]: old[i] for i in changed},
                    {SPAN_COLUMN_NAMES[i]: row[i] for i in changed},
                )
            )
        have = stored_paths.get(span_id, set())
        if have != set(record.paths):
            check.differences.append(
                SpanDifference(
                    span_id,
                    "paths",
                    {"paths": sorted(have, key=str)},
                    {"paths": list(record.paths)},
                )
            )
    for span_id, old in stored.items():
        if span_id not in expected:
            check.differences.append(SpanDifference(span_id, "unexpected", _named(old), {}))
    return check


def check_store(
    conn: sqlite3.Connection, shape: EventsShape, sessions: Iterable[str] | None = None
) -> Iterator[SessionCheck]:
    """Every session with events or stored spans, or just the named ones."""
    if sessions is None:
        todo = marks.sessions_in_order(conn)
        known = set(todo)
        todo += [
            row[0]
            for row in conn.execute("SELECT DISTINCT session_id FROM tool_spans")
            if row[0] not in known
        ]
    else:
        todo = list(dict.fromkeys(sessions))
    for session_id in todo:
        yield check_session(conn, shape, session_id)


def _same(stored: object, expected: object) -> bool:
    """Equal as SQLite stores them: 5.0 (REAL) is not 5 (INTEGER), as the reference writes it."""
    return type(stored) is type(expected) and stored == expected


def _named(row: span_rows.SpanRow) -> dict[str, object]:
    return dict(zip(SPAN_COLUMN_NAMES, row, strict=True))
