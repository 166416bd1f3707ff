"""Extending a session with new events gives the rows a rebuild from scratch gives.

The daemon keeps each recent session's `SessionSpans` and `SpanTree` and feeds
them only the rows that arrived since; that must never change a single row.
"""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spanwatch.engine import Event, SessionSpans, SpanTree, build_span_records
from strategies import event_streams

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def rows(records: list[Any]) -> dict[str, tuple[Any, ...]]:
    return {r.span_id: astuple(r) for r in records}


@PROPERTY
@given(data=st.data(), events=event_streams(max_events=60))
def test_feeding_events_in_chunks_gives_the_same_rows_after_every_chunk(
    data: st.DataObject, events: list[Event]
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=6)))
    session = SessionSpans()
    tree = SpanTree()
    current: dict[str, tuple[Any, ...]] = {}
    previous = 0
    for cut in [*cuts, len(events)]:
        session.feed_all(events[previous:cut])
        changed = tree.update(session.spans, session.touched)
        session.touched.clear()
        for record in tree.records(changed):
            current[record.span_id] = astuple(record)
        want = rows(build_span_records(events[:cut]))
        # Every row the tree did not report as changed must still be right.
        assert current == want
        previous = cut


@PROPERTY
@given(events=event_streams(ties=True, max_events=60))
def test_one_event_at_a_time_with_equal_timestamps(events: list[Event]) -> None:
    session = SessionSpans()
    tree = SpanTree()
    current: dict[str, tuple[Any, ...]] = {}
    for event in events:
        session.feed(event)
        for record in tree.records(tree.update(session.spans, session.touched)):
            current[record.span_id] = astuple(record)
        session.touched.clear()
    assert current == rows(build_span_records(events))
