"""A session's engine state rebuilt from its stored spans and its latest events.

When the daemon has no state for a long session (it just started, or let the
session go), the session's next change would mean reading every row of it,
payloads and all. Its stored spans and watermark already say what those rows
made. `resumed_state` reads the stored spans' times, picks a resume point T
(`engine.resume`), and feeds only the rows at T or later, as they were at the
stored watermark, to an engine that knows the spans before T only by their
ids. The state it returns is then what a cached state would be at that
watermark, and the new rows are fed to it the ordinary way.

Nothing here trusts more than it checks. The rows up to the watermark must be
as they were (none deleted), the stored spans as many as the watermark says,
and every span the engine builds from the rows after T must equal its stored
row, with no stored span after T left unbuilt.
Anything else, or an event that reaches back before T (`RetiredSpanNeeded`),
returns None, and the caller reads the session in full as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from spanwatch.engine.builder import RetiredSpanNeeded
from spanwatch.engine.resume import resume_point
from spanwatch.store import marks
from spanwatch.store import spans as span_rows
from spanwatch.store.connection import fetch_all
from spanwatch.store.events import load_session_rows
from spanwatch.store.marks import SessionMark
from spanwatch.store.owners import claimed_elsewhere, stored_id_for
from spanwatch.store.schema import EventsShape
from spanwatch.store.session_state import SessionState, feed, fresh_state

#: Sessions with fewer rows at their watermark are read in full: that is cheap.
RESUME_MIN_ROWS = 1_000

#: The resume points tried in turn, as (spans kept after the point at least,
#: margin in ms from the stored times on either side; see `engine.resume`).
#: A tool call's hidden events are milliseconds from its hooks, or minutes
#: behind a permission prompt; a session written fast may have no quiet
#: second. A try that fails costs the rows after its point (about 5 a span).
RESUME_TRIES = ((64, 1_000), (512, 1_000), (64, 50), (64, 0))

#: The resume point goes before every span still open among this many latest
#: ones (a tool still running). An older one is most likely an interrupted tool;
#: should it end after all, that costs the full read the resume saved.
RESUME_OPEN_AGE = 128

#: Sorts after every seq: the journal floor (T - 1, this) lets no event before T be rewound to.
_AFTER_ANY_SEQ = 2**64


def resumed_state(
    conn: sqlite3.Connection,
    shape: EventsShape,
    session_id: str,
    *,
    journal_events: int,
    tries: Iterable[tuple[int, int]] = RESUME_TRIES,
    min_rows: int = RESUME_MIN_ROWS,
) -> tuple[SessionState, int] | None:
    """The session's state at its stored watermark, from its latest rows only, and the
    rows read for it; or None.

    Tries a resume point for each of `tries` (spans kept after it, margin) in turn.
    Call inside a read snapshot: the watermark, the stored spans and the rows
    must be of one moment.
    """
    stored = marks.read_mark_figures(conn, session_id)
    if stored is None:
        return None
    mark, span_count, skipped_rows = stored
    if type(mark.max_seq) is not int or mark.row_count < min_rows:
        return None
    if marks.live_mark(conn, session_id, up_to_id=mark.max_id) != mark:
        return None  # rows deleted or changed since: the reconcile's full read
    times: list[tuple[Any, ...]] = fetch_all(
        conn,
        "SELECT span_id, started_at_ms, ended_at_ms, tool FROM tool_spans WHERE session_id = ?",
        (session_id,),
    )
    if len(times) != span_count:
        return None
    tried = None
    for keep, margin in tries:
        point = resume_point(
            ((row[1], row[2]) for row in times), keep=keep, open_age=RESUME_OPEN_AGE, margin=margin
        )
        if point is not None and point != tried:
            tried = point
            resumed = _state_after(
                conn, shape, mark, times,
                cut=point[0], spans_before=point[1], journal_events=journal_events,
            )  # fmt: skip
            if resumed is not None:
                resumed[0].skipped_rows = skipped_rows  # all of them, not those after the point
                return resumed
    return None


def _state_after(
    conn: sqlite3.Connection,
    shape: EventsShape,
    mark: SessionMark,
    times: list[tuple[Any, ...]],
    *,
    cut: int,
    spans_before: int,
    journal_events: int,
) -> tuple[SessionState, int] | None:
    """The state at `mark` from the rows at `cut` or later, checked against the stored
    rows, and the rows read; None if an event reached before `cut` or a span differs."""
    session_id = mark.session_id
    before_rows = [row for row in times if _before(row, cut)]
    before = {str(row[0]) for row in before_rows}
    open_tools = {str(row[3]) for row in before_rows if row[2] is None and row[3] is not None}
    after = {str(row[0]) for row in times} - before
    ids_before = before | {_raw_id(session_id, span_id) for span_id in before}
    if "tool_call_id" in shape.columns:
        ids_before.update(
            str(row[0])
            for row in fetch_all(
                conn,
                "SELECT DISTINCT tool_call_id FROM events WHERE session_id = ? AND ts_ms < ? "
                "AND tool_call_id IS NOT NULL",
                (session_id, cut),
            )
        )
    rows = load_session_rows(conn, shape, session_id, from_ts=cut, up_to_id=mark.max_id)
    state = fresh_state(mark, journal_events)
    state.spans.resume_after(ids_before, spans_before, (cut - 1, _AFTER_ANY_SEQ), open_tools)
    try:
        feed(state, rows)
    except RetiredSpanNeeded:
        return None
    fingerprints = span_rows.stored_fingerprints(conn, session_id, from_ms=cut)
    if fingerprints.keys() != after:
        return None
    owned: dict[str, str] = {}
    claimed_elsewhere(
        conn, session_id, state.spans.spans, stored=fingerprints, owned_elsewhere=owned
    )
    records = state.tree.records(stored_id=stored_id_for(session_id, owned))
    if span_rows.diff_rows(fingerprints, records, complete=True):
        return None
    state.stored = span_rows.keyed_by_span_ids(fingerprints, state.spans.spans)
    state.owned_elsewhere = owned
    return state, rows.row_count


def _before(row: tuple[Any, ...], cut: int) -> bool:
    """Whether a stored span's times lie before the resume point (`resume_point` made
    sure that either all of them do or none)."""
    times: list[int] = [t for t in row[1:3] if t is not None]
    return min(times) < cut


def _raw_id(session_id: str, span_id: str) -> str:
    """The engine's id of a span stored under a namespaced id (see `store.owners`)."""
    prefix = f"{session_id}/"
    return span_id[len(prefix) :] if span_id.startswith(prefix) else span_id
