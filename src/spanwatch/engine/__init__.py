"""The span engine: events in, span records out. No I/O, no clocks, no logging.

`build_span_records` is the whole rebuild of one session, the Python
counterpart of the reference's `final_span_records`. `SessionSpans` and
`SpanTree` are its two halves, kept separately by the daemon so that a session
can be extended by new events without starting over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from spanwatch.engine.builder import SessionSpans, SpanBuilder
from spanwatch.engine.events import Event, EventKind, EventSource
from spanwatch.engine.records import SpanRecord
from spanwatch.engine.tree import SpanTree

__all__ = [
    "Event",
    "EventKind",
    "EventSource",
    "SessionSpans",
    "SpanRecord",
    "SpanTree",
    "build_span_records",
    "finish_spans",
]


def build_span_records(events: Iterable[Event]) -> list[SpanRecord]:
    """All spans of one session's events, given in load order (ts_ms, seq)."""
    session = SessionSpans()
    session.feed_all(events)
    return finish_spans(session.spans)


def finish_spans(
    spans: Mapping[str, SpanBuilder],
    stored_id: Callable[[SpanBuilder], str] | None = None,
) -> list[SpanRecord]:
    """Parents, depths and subtree totals, then records, in the reference's sorted order.

    `stored_id` maps a span to the id it is stored under (a namespaced id when
    another session owns the raw one, see DESIGN.md); children point at it.
    """
    tree = SpanTree()
    tree.update(spans, ())
    return tree.records(stored_id=stored_id)
