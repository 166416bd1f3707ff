"""Extending a session with new events gives the rows a rebuild from scratch gives.

The daemon keeps each recent session's `SessionSpans` and `SpanTree` and feeds
them only the rows that arrived since; that must never change a single row.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spanwatch.engine import Event, SessionSpans, SpanTree, build_span_records
from spanwatch.engine.builder import RetiredSpanNeeded, SpanBuilder
from spanwatch.engine.events import EventKind
from spanwatch.engine.retire import OPEN_SPAN_AGE, retire_spans
from spanwatch.simulate.rows import row_event
from spanwatch.simulate.sessions import stream_bursts, stream_session
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
    """Every span's fields, in open order: what later events and the tree see.

    A retired span shows as its order alone (`by_order` keeps its place).
    """
    assert [s for s in session.by_order if s.order >= 0] == list(session.spans.values())
    return [
        tuple(getattr(span, name) for name in _BUILDER_FIELDS)
        if session.spans.get(span.span_id) is span
        else (position,)
        for position, span in enumerate(session.by_order)
    ]


@dataclass
class Intake:
    """What `take_in` saw: spans retired, full reads for a retired span, live spans."""

    retired: int = 0
    rereads: int = 0
    live: int = 0


def take_in(
    chunks: list[list[Event]], journal: int, *, retire: bool, check_every: int = 1
) -> Intake:
    """Feed arriving chunks of rows as the daemon does, checking every row after each.

    A chunk whose rows sort after everything fed is fed as it is; one with rows
    sorting earlier rewinds the journal, or, too late for it, means feeding the
    session again from the start. The engine must then end where an engine
    fed every row so far in load order ends (so that later lookups, open spans
    of a tool, the latest span, answer alike), and the tree, told which spans
    the rewind removed, must report every record that changed. With `retire`,
    finished spans are retired after every chunk: their rows must never need to
    change again, and a row that needs one of them raises, after which the
    session is fed again from the start.
    """
    seen = Intake()
    session = SessionSpans(journal_events=journal)
    tree = SpanTree()
    current: dict[str, tuple[Any, ...]] = {}
    fed: list[Event] = []
    for number, arrived in enumerate(chunks, start=1):
        check = number % check_every == 0 or number == len(chunks)
        chunk = sorted(arrived, key=load_order)
        if not chunk:
            continue
        first = load_order(chunk[0])
        last = max(map(load_order, fed), default=(-1, -1))
        by_position = {load_order(e): e for e in fed}
        fed = sorted(fed + chunk, key=load_order)
        removed: list[str] = []
        try:
            if first > last:
                session.feed_all(chunk)
            elif session.can_rewind(first):
                again = [by_position[p] for p in session.journaled_after(first)]
                undone = session.rewind(first)
                tree.forget(undone)
                removed = [span.span_id for span in undone]
                session.feed_all(sorted(again + chunk, key=load_order))
            else:  # too late for the journal: the daemon reads the session again
                session, tree, current = SessionSpans(journal_events=journal), SpanTree(), {}
                session.feed_all(fed)
        except RetiredSpanNeeded:
            seen.rereads += 1
            session, tree, current = SessionSpans(journal_events=journal), SpanTree(), {}
            session.feed_all(fed)
            removed = []
        if check:
            straight = SessionSpans()
            straight.feed_all(fed)
            mine, theirs = _builder_state(session), _builder_state(straight)
            # Retired spans (their order alone) aside, the same spans in the same states.
            assert mine == [m if len(m) == 1 else t for m, t in zip(mine, theirs, strict=True)]
            assert session.span_count == len(straight.spans)
        changed = tree.update(session.spans, session.touched)
        session.touched.clear()
        for span_id in removed:
            current.pop(span_id, None)
        current.update(rows(tree.records(changed)))
        if check:
            assert current == rows(build_span_records(fed))
        if retire:
            seen.retired += len(retire_spans(session, tree))
        seen.live = len(session.spans)
    return seen


def load_order(event: Event) -> tuple[int, int]:
    return (event.ts_ms, event.seq)


@PROPERTY
@given(data=st.data(), events=event_streams(max_events=60), retire=st.booleans())
def test_rows_arriving_out_of_order_are_taken_in_by_rewinding_the_journal(
    data: st.DataObject, events: list[Event], retire: bool
) -> None:
    """Any arrival order, cut into chunks anywhere, with or without retiring spans."""
    arrival = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(arrival)), max_size=8)))
    chunks = [arrival[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrival)], strict=True)]
    seen = take_in(chunks, data.draw(st.integers(1, 12)), retire=retire)
    hypothesis.event(f"spans retired: {min(seen.retired, 5)}{'+' if seen.retired >= 5 else ''}")


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    tool_uses=st.integers(20, 150),
    journal=st.sampled_from([4, 16, 64]),
    per_chunk=st.integers(1, 6),
)
def test_realistic_sessions_retire_their_finished_spans_without_changing_a_row(
    seed: int, tool_uses: int, journal: int, per_chunk: int
) -> None:
    """Simulated agent sessions (hooks, transcript tail and proxy, Tasks nested
    inside Tasks, interrupted tools, rows arriving as each writer commits them,
    a tail held up now and then), taken in a few commits at a time."""
    bursts = [
        [row_event(row) for row in burst.rows]
        for burst in stream_bursts(
            stream_session("s", seed=seed, tool_uses=tool_uses, payload_scale=0.01)
        )
    ]
    chunks = [
        [event for burst in bursts[i : i + per_chunk] for event in burst]
        for i in range(0, len(bursts), per_chunk)
    ]
    seen = take_in(chunks, journal, retire=True)
    hypothesis.event(f"rereads: {seen.rereads}")
    hypothesis.event(f"live spans at the end: {'<= 40' if seen.live <= 40 else '> 40'}")


def test_a_long_session_keeps_only_its_recent_spans() -> None:
    """What retiring is for: memory for the spans still in play, not for all of
    them. Interrupted tools (open for good) go once OPEN_SPAN_AGE spans opened
    after them; Tasks that end within that never need a full read."""
    bursts = [
        [row_event(row) for row in burst.rows]
        for burst in stream_bursts(
            stream_session("s", seed=3, tool_uses=2000, payload_scale=0.0, task_depth=3)
        )
    ]
    seen = take_in(bursts, 64, retire=True, check_every=250)
    assert seen.rereads == 0
    assert seen.retired + seen.live >= 2000
    assert seen.live <= OPEN_SPAN_AGE + 100


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


def _retired_after(events: list[Event]) -> tuple[SessionSpans, set[str]]:
    session = SessionSpans(journal_events=2)
    session.feed_all(events)
    tree = SpanTree()
    tree.update(session.spans, session.touched)
    return session, {span.span_id for span in retire_spans(session, tree)}


def _hook(seq: int, ts: int, kind: str, call_id: str | None) -> Event:
    body = f'{{"hook_event_name": "{kind}ToolUse", "tool_name": "Read"}}'
    return Event("s", seq, ts, EventKind.HOOK, tool_call_id=call_id, payload=body)


def test_an_event_naming_a_retired_span_raises_instead_of_opening_a_new_one() -> None:
    calls = [
        Event("s", 2 * n + k, 100 * n + 10 * k, kind, tool="Read", tool_call_id=f"c{n}")
        for n in range(6)
        for k, kind in enumerate([EventKind.TOOL_CALL, EventKind.TOOL_RESULT])
    ]
    session, retired = _retired_after(calls)
    assert "c0" in retired and session.span_count == 6
    late = Event("s", 99, 900, EventKind.TOOL_RESULT, tool_call_id="c0", tokens_out=5)
    with pytest.raises(RetiredSpanNeeded):
        session.feed(late)


def test_a_lookup_that_would_find_a_retired_span_raises() -> None:
    """Hooks alone: spans without a call, which a ToolCall without id would take."""
    hooks = [
        _hook(2 * n + k, 100 * n + 10 * k, kind, f"h{n}")
        for n in range(6)
        for k, kind in enumerate(["Pre", "Post"])
    ]
    session, retired = _retired_after(hooks)
    assert {"h0", "h1"} <= retired
    # Every span of Read has no call: the newest (not retired) is taken first...
    session.feed(Event("s", 50, 1000, EventKind.TOOL_CALL, tool="Read"))
    assert session.spans["h5"].has_call
    # ... then the next newest, until one is retired.
    with pytest.raises(RetiredSpanNeeded):
        for seq in range(51, 60):
            session.feed(Event("s", seq, 1000 + seq, EventKind.TOOL_CALL, tool="Read"))
