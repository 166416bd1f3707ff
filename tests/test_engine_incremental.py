"""Extending a session with new events gives the rows a rebuild from scratch gives.

The daemon keeps each recent session's `SessionSpans` and `SpanTree` and feeds
them only the rows that arrived since; that must never change a single row.
"""

from __future__ import annotations

from dataclasses import astuple, fields
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spanwatch.engine import Event, SessionSpans, SpanTree, build_span_records
from spanwatch.engine.builder import SpanBuilder
from spanwatch.engine.events import EventKind
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


#: SpanBuilder's own fields (those after `has_end` belong to the tree).
_BUILDER_FIELDS = [f.name for f in fields(SpanBuilder)][
    : [f.name for f in fields(SpanBuilder)].index("has_end") + 1
]


def _builder_state(session: SessionSpans) -> list[tuple[Any, ...]]:
    """Every span's fields, in open order: what later events and the tree see."""
    assert list(session.spans.values()) == session.by_order
    return [tuple(getattr(span, name) for name in _BUILDER_FIELDS) for span in session.by_order]


@PROPERTY
@given(data=st.data(), events=event_streams(max_events=60))
def test_rows_arriving_out_of_order_are_taken_in_by_rewinding_the_journal(
    data: st.DataObject, events: list[Event]
) -> None:
    """Rows reach the store out of load order. A journaled engine that undoes the
    events after a late row and feeds them again with it must end where an engine
    fed every row so far in load order ends, chunk after chunk, so that later
    lookups (open spans of a tool, the latest span) answer alike; and the tree,
    told which spans the rewind removed, must report every record that changed."""
    arrival = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(arrival)), max_size=8)))
    journal = data.draw(st.integers(1, 12))
    session = SessionSpans(journal_events=journal)
    tree = SpanTree()
    current: dict[str, tuple[Any, ...]] = {}
    by_position = {(e.ts_ms, e.seq): e for e in events}
    fed: list[Event] = []
    previous = 0
    for cut in [*cuts, len(arrival)]:
        chunk = sorted(arrival[previous:cut], key=lambda e: (e.ts_ms, e.seq))
        previous = cut
        if not chunk:
            continue
        first = (chunk[0].ts_ms, chunk[0].seq)
        last = max(((e.ts_ms, e.seq) for e in fed), default=(-1, -1))
        fed = sorted(fed + chunk, key=lambda e: (e.ts_ms, e.seq))
        removed: list[str] = []
        if first > last:
            session.feed_all(chunk)
        elif session.can_rewind(first):
            again = [by_position[p] for p in session.journaled_after(first)]
            undone = session.rewind(first)
            tree.forget(undone)
            removed = [span.span_id for span in undone]
            session.feed_all(sorted(again + chunk, key=lambda e: (e.ts_ms, e.seq)))
        else:  # too late for the journal: the daemon reads the session again
            session, tree, current = SessionSpans(journal_events=journal), SpanTree(), {}
            session.feed_all(fed)
        straight = SessionSpans()
        straight.feed_all(fed)
        assert _builder_state(session) == _builder_state(straight)
        changed = tree.update(session.spans, session.touched)
        session.touched.clear()
        for span_id in removed:
            current.pop(span_id, None)
        current.update(rows(tree.records(changed)))
        assert current == rows(build_span_records(fed))


def test_a_late_tool_call_moves_a_result_back_to_its_own_span() -> None:
    """A concrete rewind: the result first attaches to the latest span; once its
    call (sorting before it) arrives, it belongs to the call's span."""
    call_a = Event("s", 1, 100, EventKind.TOOL_CALL, tool="Read", tool_call_id="a")
    call_b = Event("s", 3, 300, EventKind.TOOL_CALL, tool="Bash", tool_call_id="b")
    result_b = Event("s", 4, 400, EventKind.TOOL_RESULT, tool_call_id="b")
    late_result_a = Event("s", 2, 200, EventKind.TOOL_RESULT, tool_call_id="a")
    session = SessionSpans(journal_events=8)
    session.feed_all([call_a, call_b, result_b])
    position = (late_result_a.ts_ms, late_result_a.seq)
    assert session.can_rewind(position)
    assert session.journaled_after(position) == [(300, 3), (400, 4)]
    assert [span.span_id for span in session.rewind(position)] == ["b"]
    assert list(session.spans) == ["a"]
    session.feed_all([late_result_a, call_b, result_b])
    assert session.spans["a"].result_end_ms == 200
    assert session.spans["b"].result_end_ms == 400
    assert list(session.spans) == ["a", "b"]


def test_the_journal_keeps_only_its_latest_events() -> None:
    session = SessionSpans(journal_events=2)
    calls = [
        Event("s", i, i * 100, EventKind.TOOL_CALL, tool="Read", tool_call_id=f"c{i}")
        for i in range(1, 5)
    ]
    session.feed_all(calls)
    assert session.can_rewind((250, 0))  # after c1 and c2: c3 and c4 are journaled
    assert not session.can_rewind((150, 0))  # c2 was dropped from the journal
    assert not SessionSpans().can_rewind((0, 0))  # no journal at all


def test_forgetting_a_span_re_sums_its_parent_and_re_parents_its_children() -> None:
    """`SpanTree.forget` on its own: the parent left behind is summed again and
    the forgotten span's children find their next container, even when no
    remaining span is reported touched."""
    outer = Event("s", 1, 100, EventKind.TOOL_CALL, tool="Task", tool_call_id="outer")
    middle = Event("s", 2, 200, EventKind.TOOL_CALL, tool="Task", tool_call_id="mid",
                   tokens_in=7)  # fmt: skip
    inner = Event("s", 3, 300, EventKind.TOOL_CALL, tool="Read", tool_call_id="in", tokens_in=3)
    ends = [
        Event("s", 4, 400, EventKind.TOOL_RESULT, tool_call_id="in"),
        Event("s", 5, 500, EventKind.TOOL_RESULT, tool_call_id="mid"),
        Event("s", 6, 600, EventKind.TOOL_RESULT, tool_call_id="outer"),
    ]
    session = SessionSpans()
    session.feed_all([outer, middle, inner, *ends])
    tree = SpanTree()
    tree.update(session.spans, session.touched)
    spans = session.spans
    assert spans["outer"].subtree_token_count == 10
    assert spans["in"].parent is spans["mid"]
    # "mid" disappears (as if a rewind had undone what opened it).
    tree.forget([spans.pop("mid")])
    changed = tree.update(spans, ())
    assert {"outer", "in"} <= changed
    assert spans["in"].parent is spans["outer"]
    assert (spans["in"].depth, spans["outer"].subtree_token_count) == (1, 3)
    # Then the leaf goes too: only its parent's totals tell.
    tree.forget([spans.pop("in")])
    assert tree.update(spans, ()) == {"outer"}
    assert spans["outer"].subtree_token_count is None
