"""A session read in full, in one snapshot or a part at a time, and fed to a fresh engine.

The daemon reads a long session whose state is not in memory on a thread of
its own (`spanwatch.daemon.long_reads`), so the other sessions go on being
rebuilt meanwhile; `Rebuilder.rebuild_read` then diffs and writes it.
`Rebuilder.rebuild` reads any session of more than READ_PART_ROWS rows this
way too, on its own connection, whenever it needs all of its rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spanwatch.engine.events import Event
from spanwatch.store import marks, session_state
from spanwatch.store import spans as span_rows
from spanwatch.store.connection import read_snapshot
from spanwatch.store.events import (
    RowsChanged,
    SessionRows,
    load_session_rows,
    row_keys,
    session_rows_in_parts,
)
from spanwatch.store.schema import EventsShape
from spanwatch.store.session_state import SessionState, feed, feed_events, fresh_state, settle

#: Rows `read_in_full` reads (and feeds) at a time from a long session. Each
#: part's rows, events and parsed payloads are in memory at once (about 2 MB for
#: 500; 2000 rows raised the daemon's peak by some 10 MB), and the rows a part
#: adds to the cache end up spread over memory that these held.
READ_PART_ROWS = 500


class LongFullRead(Exception):
    """A rebuild that would read a long session in full, left to the caller (see `rebuild`)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"{session_id} is to be read in full elsewhere")
        self.session_id = session_id


@dataclass(slots=True)
class FullRead:
    """A session read in full, from one read snapshot, and fed to a fresh engine.

    Made by `read_in_full` on any connection: the daemon reads long sessions
    on a thread of its own, and `Rebuilder.rebuild_read` diffs and writes them.
    """

    session_id: str
    state: SessionState
    """Engine state, mark, and the session's stored rows (their fingerprints)."""
    rows: SessionRows
    """What was read, without its events (they held the payloads; fed already)."""
    changed: set[str]
    built: list[span_rows.BuiltRow]
    """Every span as a row under its raw id, in sorted order."""


def read_in_full(
    conn: sqlite3.Connection,
    shape: EventsShape,
    session_id: str,
    *,
    pace: Callable[[], object] | None = None,
    parts: bool = True,
) -> FullRead:
    """Read every row of the session in one snapshot and feed them (see `FullRead`).

    `pace`, if given, is called before every PACE_EVENTS events fed, after the
    read snapshot has ended: a background reader waits there while the
    daemon's store thread writes (see `spanwatch.daemon.long_reads`). The
    session's stored rows are read as well (in a later snapshot: the caller
    alone writes them, and not while this read is under way), and its rows
    built, so that little is left for the writing side.

    A session of more than READ_PART_ROWS rows is read a part at a time and
    each part fed before the next is read, so its payloads are never all in
    memory at once (a 50,000-event session's are about 95 MB in Python). The
    watermark and the rows' keys come from one snapshot; each part, read in a
    later one, must match them, else the session is read again in one piece.
    """
    with read_snapshot(conn):
        mark = marks.live_mark(conn, session_id)
        long = parts and mark.row_count > READ_PART_ROWS
        keys = row_keys(conn, session_id) if long else None
        rows = SessionRows()
        if keys is None and mark.row_count:
            rows = load_session_rows(conn, shape, session_id)
    state = fresh_state(mark, session_state.JOURNAL_EVENTS)  # the daemon keeps it
    if keys is None:
        changed = feed(state, rows, pace)
    else:
        try:
            rows, changed = _feed_in_parts(conn, shape, state, keys, pace)
        except RowsChanged:
            return read_in_full(conn, shape, session_id, pace=pace, parts=False)
    rows.events = []
    state.stored = span_rows.stored_fingerprints(conn, session_id)
    built = span_rows.built_rows(state.tree)
    return FullRead(session_id, state, rows, changed, built)


def _feed_in_parts(
    conn: sqlite3.Connection,
    shape: EventsShape,
    state: SessionState,
    keys: list[tuple[Any, ...]],
    pace: Callable[[], object] | None,
) -> tuple[SessionRows, set[str]]:
    """`feed` of the rows `keys` name, read READ_PART_ROWS at a time; what was read."""
    total = SessionRows()
    last: Event | None = None
    for part in session_rows_in_parts(conn, shape, state.mark.session_id, keys, READ_PART_ROWS):
        events = part.events
        feed_events(state, events, pace)
        if events:
            last = events[-1]
        total.skipped += part.skipped
        total.token_notes += part.token_notes
        total.row_count += part.row_count
        total.max_seq = max(total.max_seq, part.max_seq)
        total.max_id = max(total.max_id, part.max_id)
    return total, settle(state, last, len(total.skipped))
