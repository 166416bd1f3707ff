"""A session's engine state as the rebuild keeps it, and feeding rows to it.

`SessionState` is what `Rebuilder` caches per session between rebuilds, and
what a full read (`full_read`) hands over: the engine (`SessionSpans`,
`SpanTree`), the watermark the state describes, and the stored rows'
fingerprints to diff against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from spanwatch.engine import SessionSpans, SpanTree
from spanwatch.engine.builder import Position
from spanwatch.engine.events import Event
from spanwatch.store import spans as span_rows
from spanwatch.store.events import SessionRows
from spanwatch.store.marks import SessionMark

#: Events a cached session's engine can undo, to take in a row that arrives
#: after rows that sort later (the transcript tail commits after the hooks):
#: without it, such a row means reading the whole session again. A row later
#: than this many tool events is rare (a tail held up for seconds); it still
#: gets the full read. About 420 bytes an event: 27 KB a cached session.
JOURNAL_EVENTS = 64

#: Events fed between two calls of `read_in_full`'s `pace` (a millisecond or two).
PACE_EVENTS = 32


@dataclass(slots=True)
class SessionState:
    """A session as last written: engine state, watermark and stored rows."""

    spans: SessionSpans
    tree: SpanTree
    last_position: tuple[int, int]
    mark: SessionMark
    stored: dict[str, span_rows.Fingerprint]
    """The session's rows in tool_spans, by stored id (their fingerprints)."""
    owned_elsewhere: dict[str, str]
    """Raw span ids another session owns (stored here under a namespaced id)."""
    skipped_rows: int
    retire_at: int = 0
    """Live spans at which to try `retire_spans` next (see `Rebuilder`)."""


def feed_events(
    state: SessionState, events: list[Event], pace: Callable[[], object] | None
) -> None:
    """Feed events to the session's engine, calling `pace` every PACE_EVENTS of them."""
    if pace is None:
        state.spans.feed_all(events)
        return
    for start in range(0, len(events), PACE_EVENTS):
        pace()
        state.spans.feed_all(events[start : start + PACE_EVENTS])


def fresh_state(mark: SessionMark, journal_events: int = 0) -> SessionState:
    return SessionState(SessionSpans(journal_events), SpanTree(), (-1, -1), mark, {}, {}, 0)


def feed(
    state: SessionState, rows: SessionRows, pace: Callable[[], object] | None = None
) -> set[str]:
    """Feed the rows' events; the ids of the spans whose records may have changed."""
    feed_events(state, rows.events, pace)
    return settle(state, rows.events[-1] if rows.events else None, len(rows.skipped))


def settle(state: SessionState, last: Event | None, skipped: int) -> set[str]:
    """After feeding: the tree brought up to date, the position and skips noted.

    Returns the ids of the spans whose records may have changed.
    """
    changed = state.tree.update(state.spans.spans, state.spans.touched)
    state.spans.touched.clear()
    if last is not None:
        state.last_position = max(state.last_position, (last.ts_ms, last.seq))
    state.skipped_rows += skipped
    return changed


def position(event: Event) -> Position:
    return (event.ts_ms, event.seq)
