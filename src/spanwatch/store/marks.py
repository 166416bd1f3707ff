"""High-water marks: what the stored spans were built from, and what is new since.

A session's mark (max seq, row count, max rowid) is written in the same
transaction as its spans, from the same snapshot as the events they came from.
Comparing marks with the live `events` table tells which sessions are stale:
appended rows show up past the global rowid mark in O(new rows); deletions,
rows with lower seqs and vanished sessions show up in a reconcile pass.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from spanwatch.store.connection import InvalidText, fetch_all


@dataclass(frozen=True, slots=True)
class SessionMark:
    session_id: str
    max_seq: object
    """SQL max(seq): an int, unless someone stored another type there."""
    row_count: int
    max_id: int


def read_mark(conn: sqlite3.Connection, session_id: str) -> SessionMark | None:
    figures = read_mark_figures(conn, session_id)
    return None if figures is None else figures[0]


def read_mark_figures(
    conn: sqlite3.Connection, session_id: str
) -> tuple[SessionMark, int, int] | None:
    """The stored watermark, with the span count and skipped rows written beside it."""
    row = conn.execute(
        "SELECT max_seq, row_count, max_id, span_count, skipped_rows "
        "FROM spanwatch_sessions WHERE session_id = ?",
        (session_id,),
    ).fetchone()
    if row is None:
        return None
    return SessionMark(session_id, row[0], row[1], row[2]), row[3], row[4]


def live_mark(
    conn: sqlite3.Connection, session_id: str, *, up_to_id: int | None = None
) -> SessionMark:
    """The session's figures in `events` right now (row_count 0: the session is gone);
    with `up_to_id`, those of its rows up to that rowid."""
    sql = "SELECT count(*), max(seq), max(id) FROM events WHERE session_id = ?"
    params: tuple[object, ...] = (session_id,)
    if up_to_id is not None:
        sql += " AND id <= ?"
        params = (session_id, up_to_id)
    ((count, max_seq, max_id),) = fetch_all(conn, sql, params)
    return SessionMark(session_id, max_seq, count, max_id or 0)


def write_mark(
    conn: sqlite3.Connection, mark: SessionMark, *, span_count: int, skipped_rows: int, now_ms: int
) -> None:
    """Record what the session's spans now reflect. Call inside the spans' transaction."""
    conn.execute(
        "INSERT INTO spanwatch_sessions "
        "(session_id, max_seq, row_count, max_id, span_count, skipped_rows, rebuilt_at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(session_id) DO UPDATE SET "
        "max_seq = excluded.max_seq, row_count = excluded.row_count, "
        "max_id = excluded.max_id, span_count = excluded.span_count, "
        "skipped_rows = excluded.skipped_rows, rebuilt_at_ms = excluded.rebuilt_at_ms",
        (
            mark.session_id,
            mark.max_seq,
            mark.row_count,
            mark.max_id,
            span_count,
            skipped_rows,
            now_ms,
        ),
    )


def count_marks(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM spanwatch_sessions").fetchone()[0])


def delete_mark(conn: sqlite3.Connection, session_id: str) -> None:
    conn.execute("DELETE FROM spanwatch_sessions WHERE session_id = ?", (session_id,))


def max_event_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])


def sessions_with_new_rows(
    conn: sqlite3.Connection, after_id: int, limit: int = 100_000
) -> tuple[int, dict[str, int]]:
    """Sessions with rows past the global mark, and the new mark.

    Reads only rows with `id > after_id` (a rowid range scan). At most `limit`
    rows are looked at per call so a huge backlog is taken in steps; the
    returned mark is the largest id looked at.
    """
    rows = fetch_all(
        conn,
        "SELECT session_id, count(*), max(id) FROM "
        "(SELECT session_id, id FROM events WHERE id > ? ORDER BY id LIMIT ?) "
        "GROUP BY session_id",
        (after_id, limit),
    )
    new_mark = after_id
    sessions: dict[str, int] = {}
    for session_id, count, max_id in rows:
        new_mark = max(new_mark, max_id)
        if isinstance(session_id, str):
            sessions[session_id] = count
    return new_mark, sessions


def stale_sessions(conn: sqlite3.Connection, chunk: int = 2000) -> Iterator[str]:
    """Every session whose stored mark differs from `events`, including vanished ones.

    Walks sessions in id order, `chunk` sessions per short read, so neither
    memory nor the length of any read transaction grows with the store.
    """
    after = ""
    while True:
        groups = fetch_all(
            conn,
            "SELECT session_id, count(*), max(seq), max(id) FROM events "
            "WHERE session_id > ? GROUP BY session_id ORDER BY session_id LIMIT ?",
            (after, chunk),
        )
        live = [row for row in groups if isinstance(row[0], str)]
        upper = groups[-1][0] if len(groups) == chunk else None
        if upper is not None and not isinstance(upper, str):
            upper = live[-1][0] if live else None  # past every readable TEXT id
        if upper is None:
            stored = fetch_all(
                conn,
                "SELECT session_id, max_seq, row_count, max_id FROM spanwatch_sessions "
                "WHERE session_id > ?",
                (after,),
            )
        else:
            stored = fetch_all(
                conn,
                "SELECT session_id, max_seq, row_count, max_id FROM spanwatch_sessions "
                "WHERE session_id > ? AND session_id <= ?",
                (after, upper),
            )
        marks = {row[0]: (row[1], row[2], row[3]) for row in stored}
        for session_id, count, max_seq, max_id in live:
            if marks.pop(session_id, None) != (max_seq, count, max_id):
                yield session_id
        yield from marks  # marked but no longer in events: vanished
        if upper is None:
            break
        after = upper
    yield from orphan_span_sessions(conn)


def orphan_span_sessions(conn: sqlite3.Connection) -> list[str]:
    """Sessions with stored spans but neither events nor a mark (deleted before we ran)."""
    rows = conn.execute(
        "SELECT DISTINCT session_id FROM tool_spans WHERE session_id NOT IN "
        "(SELECT session_id FROM events) AND session_id NOT IN "
        "(SELECT session_id FROM spanwatch_sessions)"
    ).fetchall()
    return [row[0] for row in rows if isinstance(row[0], str)]


#: Every session_id value of `events`, with its row count, in order of first
#: appearance (smallest rowid).
_SESSION_GROUPS = "SELECT session_id, count(*) FROM events GROUP BY session_id ORDER BY min(id)"


def sessions_in_order(conn: sqlite3.Connection) -> list[str]:
    """Every session of the store, in order of first appearance (smallest rowid)."""
    return [row[0] for row in fetch_all(conn, _SESSION_GROUPS) if isinstance(row[0], str)]


def listed_sessions(
    conn: sqlite3.Connection,
) -> tuple[dict[str, int], list[tuple[int, object]]]:
    """`sessions_in_order` with each one's row count, and (id, seq) of the rows
    whose session_id is not readable TEXT, from one scan of the session index
    (a whole-store rebuild waits for this list before it starts).

    The reference names a session with a Rust string, so a BLOB or non-UTF-8
    session_id never matches one; spanwatch skips those rows too, and says so.
    """
    groups = fetch_all(conn, _SESSION_GROUPS)
    sizes: dict[str, int] = {}
    rows: list[tuple[int, object]] = []
    for session_id, count in groups:
        if isinstance(session_id, str):
            sizes[session_id] = count
            continue
        # Bytes bind as a BLOB; a non-UTF-8 TEXT id must be cast back to TEXT to match.
        match = "CAST(? AS TEXT)" if isinstance(session_id, InvalidText) else "?"
        rows += fetch_all(
            conn, f"SELECT id, seq FROM events WHERE session_id = {match}", (session_id,)
        )
    return sizes, rows
