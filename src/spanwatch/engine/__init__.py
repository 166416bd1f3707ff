"""The span engine: events in, span records out. No I/O, no clocks, no logging.

`build_span_records` is the whole rebuild of one session, the Python
counterpart of the reference's `final_span_records`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from spanwatch.engine.builder import SessionSpans, SpanBuilder
from spanwatch.engine.events import Event, EventKind, EventSource
from spanwatch.engine.records import SpanRecord, make_record
from spanwatch.engine.tree import assign_parents, roll_up_subtrees, sort_spans

__all__ = [
    "Event",
    "EventKind",
    "EventSource",
    "SessionSpans",
    "SpanRecord",
    "build_span_records",
    "finish_spans",
]


def build_span_records(events: Iterable[Event]) -> list[SpanRecord]:
    """All spans of one session's events, given in load order (ts_ms, seq)."""
    session = SessionSpans()
    for event in events:
        session.feed(event)
    return finish_spans(session.by_order)


def finish_spans(
    spans: list[SpanBuilder],
    stored_id: Callable[[SpanBuilder], str] | None = None,
) -> list[SpanRecord]:
    """Parents, depths and subtree totals, then records, in the reference's sorted order.

    `stored_id` maps a span to the id it is stored under (a namespaced id when
    another session owns the raw one, see DESIGN.md); children point at it.
    """
    ordered = sort_spans(spans)
    nodes = assign_parents(ordered)
    roll_up_subtrees(ordered, nodes)
    records = []
    for span in ordered:
        node = nodes[span.span_id]
        parent = node.parent
        parent_id = None if parent is None else (stored_id(parent) if stored_id else parent.span_id)
        record = make_record(span, node, parent_id)
        if stored_id is not None:
            own_id = stored_id(span)
            if own_id != span.span_id:
                record = replace(record, span_id=own_id)
        records.append(record)
    return records
