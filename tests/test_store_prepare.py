"""How a rebuild hands sessions to its worker processes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from spanwatch.engine import Event, SessionSpans, SpanTree
from spanwatch.store.prepare import _handout_order
from spanwatch.store.spans import built_rows, record_row
from strategies import event_streams


def test_long_chunks_are_handed_out_first_the_rest_in_order() -> None:
    chunks = [["a"], ["b"], ["c"], ["d"], ["e"]]
    sizes = {"a": 10, "b": 5_000, "c": 10, "d": 900, "e": 10}
    assert _handout_order(chunks, sizes) == [1, 3, 0, 2, 4]


def test_without_sizes_chunks_go_in_order() -> None:
    assert _handout_order([["a"], ["b"], ["c"]], {}) == [0, 1, 2]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_streams(max_events=60))
def test_built_rows_are_the_rows_of_the_records(events: list[Event]) -> None:
    """`built_rows` skips making records; its rows must be those the records give."""
    spans = SessionSpans()
    spans.feed_all(events)
    tree = SpanTree()
    tree.update(spans.spans, ())
    expected = [(record_row(record), record.paths) for record in tree.records()]
    assert built_rows(tree) == expected
    assert [type(v) for row, _ in built_rows(tree) for v in row] == [
        type(v) for row, _ in expected for v in row
    ]
