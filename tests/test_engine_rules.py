"""One test per rule of the span engine, each named after the behaviour it pins.

The rules are the reference's (shared/reference/tool_span_index.rs) plus what
DESIGN.md adds ("Span semantics that the reference file does not show").
Streams are written by hand, in load order (ts_ms, seq).
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest

from spanwatch.engine import SessionSpans, build_span_records
from spanwatch.engine.builder import SpanBuilder
from spanwatch.engine.events import Event, EventKind, EventSource
from spanwatch.engine.payload import parse_payload, paths_from_payload
from spanwatch.engine.records import SpanRecord

CALL, RESULT, HOOK = EventKind.TOOL_CALL, EventKind.TOOL_RESULT, EventKind.HOOK
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
U32_MAX = 2**32 - 1


class Stream:
    """Builds one session's events: seq counts up unless given."""

    def __init__(self, session: str = "s") -> None:
        self.session = session
        self.events: list[Event] = []

    def add(self, kind: EventKind, ts: int, seq: int | None = None, **fields: Any) -> Stream:
        payload = fields.pop("payload", "{}")
        if not isinstance(payload, str):
            payload = json.dumps(payload)
        self.events.append(
            Event(
                session_id=self.session,
                seq=len(self.events) + 1 if seq is None else seq,
                ts_ms=ts,
                kind=kind,
                payload=payload,
                **fields,
            )
        )
        return self

    def call(self, ts: int, tool: str | None, call_id: str | None, **fields: Any) -> Stream:
        return self.add(CALL, ts, tool=tool, tool_call_id=call_id, **fields)

    def result(self, ts: int, tool: str | None, call_id: str | None, **fields: Any) -> Stream:
        return self.add(RESULT, ts, tool=tool, tool_call_id=call_id, **fields)

    def hook(self, ts: int, payload: Any, call_id: str | None = None, **fields: Any) -> Stream:
        return self.add(HOOK, ts, tool_call_id=call_id, payload=payload, **fields)

    def pre(self, ts: int, tool: str | None, call_id: str | None = None, **extra: Any) -> Stream:
        return self.hook(ts, {"hook_event_name": "PreToolUse", "tool_name": tool, **extra}, call_id)

    def post(self, ts: int, tool: str | None, call_id: str | None = None, **extra: Any) -> Stream:
        return self.hook(
            ts, {"hook_event_name": "PostToolUse", "tool_name": tool, **extra}, call_id
        )

    def spans(self) -> dict[str, SpanRecord]:
        records = build_span_records(self.events)
        by_id = {r.span_id: r for r in records}
        assert len(by_id) == len(records)
        return by_id

    def only(self) -> SpanRecord:
        spans = self.spans()
        assert len(spans) == 1, spans
        return next(iter(spans.values()))


# --------------------------------------------------------------------------
# Which rows count, hook kinds and hook tools
# --------------------------------------------------------------------------


def test_unknown_kind_lifecycle_with_pretooluse_opens_span() -> None:
    kind = EventKind.parse("Lifecycle")
    assert kind is EventKind.HOOK
    s = Stream().add(kind, 10, payload={"event": "PreToolUse", "tool_name": "Read"})
    span = s.only()
    assert (span.tool, span.started_at_ms, span.status) == ("Read", 10, "orphaned")


def test_unknown_source_reads_as_hook_and_changes_nothing() -> None:
    assert EventSource.parse("Cursor") is EventSource.HOOK
    s = Stream()
    s.add(CALL, 1, tool="Read", tool_call_id="a", source=EventSource.parse("Cursor"))
    s.add(RESULT, 2, tool_call_id="a", source=EventSource.PROXY)
    span = s.only()
    assert (span.span_id, span.started_at_ms, span.ended_at_ms) == ("a", 1, 2)


@pytest.mark.parametrize("kind", [EventKind.MESSAGE, EventKind.ERROR, EventKind.COST])
def test_message_error_and_cost_rows_never_touch_spans(kind: EventKind) -> None:
    s = Stream().call(1, "Read", "a", tokens_in=5, cost_usd_e6=10)
    s.add(
        kind,
        2,
        tool="Read",
        tool_call_id="a",
        tokens_in=999,
        cost_usd_e6=999,
        payload={"event": "PostToolUse", "tool_name": "Read", "path": "x"},
    )
    span = s.only()
    assert (span.ended_at_ms, span.tokens_in, span.cost_usd_e6, span.paths) == (None, 5, 10, ())


@pytest.mark.parametrize("key", ["event", "hook_event_name"])
@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("PreToolUse", 7, None),
        ("pre_tool_use", 7, None),
        ("PostToolUse", None, 7),
        ("post_tool_use", None, 7),
    ],
)
def test_hook_kind_both_spellings_under_either_key(
    key: str, name: str, start: int | None, end: int | None
) -> None:
    span = Stream().hook(7, {key: name, "tool_name": "Edit"}).only()
    assert (span.started_at_ms, span.ended_at_ms) == (start, end)


@pytest.mark.parametrize("name", ["Stop", "SessionStart", "pretooluse", "PreToolUse ", ""])
def test_other_hook_events_open_no_span(name: str) -> None:
    assert Stream().hook(1, {"hook_event_name": name, "tool_name": "Edit"}).spans() == {}


def test_hook_payloads_that_do_not_parse_are_counted_those_not_utf8_among_them() -> None:
    """The store leaves hook payloads for this parse to check for UTF-8 (orjson parses
    UTF-8 only) while the count stays 0 (see `SessionRows.check_hook_payloads`)."""
    pre = b'{"hook_event_name": "PreToolUse", "tool_name": "Read", "x": "'
    payloads = {
        pre + "é".encode() + b'"}': 0,  # UTF-8, not ASCII: parses
        pre + b'\xc3\x28"}': 1,  # not UTF-8
        pre + b'\xed\xa0\x80"}': 1,  # a surrogate spelled in UTF-8
        pre + b'"': 1,  # not JSON
        b'{"hook_event_name": "PostToolUseFailure"}': 0,  # parses, no tool hook
        b'{"other": 1}': 0,  # not even parsed: it names no tool hook
    }
    for payload, not_json in payloads.items():
        spans = SessionSpans()
        spans.feed_all([Event("s", 1, 5, HOOK, tool_call_id="h", payload=payload)])
        assert spans.hooks_not_json == not_json, payload
        assert bool(spans.spans) == (payload.startswith(pre) and not not_json), payload


def test_string_event_key_wins_over_hook_event_name() -> None:
    span = Stream().hook(3, {"event": "post_tool_use", "hook_event_name": "PreToolUse"}).only()
    assert (span.started_at_ms, span.ended_at_ms) == (None, 3)


def test_string_event_key_that_is_no_hook_kind_does_not_fall_through() -> None:
    s = Stream().hook(3, {"event": "Stop", "hook_event_name": "PreToolUse"})
    assert s.spans() == {}


@pytest.mark.parametrize("event_value", [1, None, True, ["PreToolUse"], {"name": "PreToolUse"}])
def test_non_string_event_key_falls_through_to_hook_event_name(event_value: Any) -> None:
    span = Stream().hook(3, {"event": event_value, "hook_event_name": "PostToolUse"}).only()
    assert span.ended_at_ms == 3


@pytest.mark.parametrize(
    ("payload", "tool"),
    [
        ({"tool_name": "A", "tool": "B", "name": "C"}, "A"),
        ({"tool": "B", "name": "C"}, "B"),
        ({"name": "C"}, "C"),
        ({"tool_name": 1, "tool": None, "name": "C"}, "C"),
        ({"tool_name": {"name": "A"}, "tool": "B"}, "B"),
        ({"tool_name": ""}, ""),
        ({}, None),
    ],
)
def test_hook_tool_is_first_string_of_tool_name_tool_name(
    payload: dict[str, Any], tool: str | None
) -> None:
    span = Stream().hook(1, {"event": "PreToolUse", **payload}).only()
    assert span.tool == tool


def test_hook_ignores_the_tool_column() -> None:
    span = Stream().hook(1, {"event": "PreToolUse"}, tool="Read").only()
    assert span.tool is None


def test_hook_with_unknown_tool_call_id_opens_span_under_that_id() -> None:
    span = Stream().pre(1, "Read", "toolu_9").only()
    assert (span.span_id, span.tool_call_id) == ("toolu_9", "toolu_9")


def test_hook_without_id_joins_latest_open_span_of_its_tool() -> None:
    s = Stream().pre(1, "Read").pre(2, "Read").post(3, "Read")
    spans = s.spans()
    # The second pre hook finds the first span (same tool, not ended) and moves its start.
    assert set(spans) == {"s:1:1"}
    assert (spans["s:1:1"].started_at_ms, spans["s:1:1"].ended_at_ms) == (2, 3)
    assert spans["s:1:1"].lead_time_ms == 1


def test_hook_without_id_skips_ended_spans_of_its_tool() -> None:
    s = Stream().pre(1, "Read").post(2, "Read").post(3, "Read")
    spans = s.spans()
    assert set(spans) == {"s:1:1", "s:3:3"}
    assert spans["s:3:3"].status == "orphaned"


def test_hook_without_id_or_tool_gets_a_synthetic_id() -> None:
    s = Stream().hook(5, {"event": "PreToolUse"}).hook(6, {"event": "PostToolUse"})
    assert set(s.spans()) == {"s:1:5", "s:2:6"}


def test_hook_keeps_tool_and_tool_call_id_already_set() -> None:
    s = Stream().call(1, "Read", "a").hook(2, {"event": "PostToolUse", "tool_name": "Edit"}, "a")
    span = s.only()
    assert (span.tool, span.tool_call_id, span.ended_at_ms) == ("Read", "a", 2)


def test_hook_fills_tool_left_empty_by_a_call_without_tool() -> None:
    s = Stream().call(1, None, "a").post(2, "Edit", "a")
    assert s.only().tool == "Edit"


def test_hook_rows_carry_no_tokens_or_cost() -> None:
    s = Stream().call(1, "Read", "a", tokens_in=5)
    s.hook(2, {"event": "PostToolUse"}, "a", tokens_in=9, tokens_out=9, cost_usd_e6=9)
    span = s.only()
    assert (span.tokens_in, span.tokens_out, span.cost_usd_e6) == (5, None, None)


# --------------------------------------------------------------------------
# Tool calls
# --------------------------------------------------------------------------


def test_tool_call_overwrites_tool_and_tool_call_id_even_with_null() -> None:
    # A pre hook opens "h" for Read; a ToolCall without id takes that span
    # (same tool, no call yet) and sets its tool_call_id to NULL.
    s = Stream().pre(1, "Read", "h").call(2, "Read", None)
    span = s.only()
    assert (span.span_id, span.tool, span.tool_call_id) == ("h", "Read", None)
    # A second ToolCall with the id and no tool sets the tool to NULL.
    s.call(3, None, "h")
    span = s.only()
    assert (span.tool, span.tool_call_id, span.started_at_ms) == (None, "h", 1)


def test_tool_call_without_id_takes_latest_open_span_of_its_tool_without_call() -> None:
    s = Stream().pre(1, "Read", "x").pre(2, "Read", "y").pre(3, "Edit", "z")
    s.call(4, "Read", None)
    spans = s.spans()
    assert set(spans) == {"x", "y", "z"}
    assert spans["y"].tool_call_id is None
    assert spans["x"].tool_call_id == "x"


def test_tool_call_without_id_opens_new_span_when_all_of_its_tool_have_calls() -> None:
    s = Stream().call(1, "Read", "x").call(2, "Read", None)
    assert set(s.spans()) == {"x", "s:2:2"}


def test_tool_call_without_id_matches_ended_span_without_call() -> None:
    # has_call, not has_end, is what a ToolCall looks at.
    s = Stream().pre(1, "Read", "x").post(2, "Read", "x").call(3, "Read", None)
    span = s.only()
    assert (span.span_id, span.tool_call_id, span.started_at_ms) == ("x", None, 1)


def test_repeated_tool_call_moves_call_start_and_exactness() -> None:
    s = Stream().call(1, "Read", "a", ts_exact=True).call(5, "Read", "a", ts_exact=False)
    s.result(9, None, "a", ts_exact=True)
    span = s.only()
    assert (span.started_at_ms, span.lead_time_ms) == (5, None)


def test_empty_string_tool_call_id_is_an_id() -> None:
    s = Stream().call(1, "Read", "").result(2, None, "")
    span = s.only()
    assert (span.span_id, span.tool_call_id, span.status) == ("", "", "done")


# --------------------------------------------------------------------------
# Tool results
# --------------------------------------------------------------------------


def test_result_with_known_id_ends_that_span() -> None:
    s = Stream().call(1, "Read", "a").call(2, "Read", "b").result(3, "Read", "a")
    spans = s.spans()
    assert (spans["a"].ended_at_ms, spans["b"].ended_at_ms) == (3, None)


def test_result_with_unknown_id_ends_latest_open_span_of_its_tool() -> None:
    s = Stream().call(1, "Read", "a").call(2, "Read", "b").call(3, "Edit", "c")
    s.result(4, "Read", "nope")
    spans = s.spans()
    assert [spans[i].ended_at_ms for i in "abc"] == [None, 4, None]


def test_result_of_tool_with_no_open_span_falls_back_to_last_opened() -> None:
    s = Stream().call(1, "Read", "a").result(2, "Read", "a").call(3, "Edit", "c")
    s.result(4, "Read", None)
    spans = s.spans()
    assert (spans["a"].ended_at_ms, spans["c"].ended_at_ms) == (2, 4)


def test_result_without_id_or_open_span_attaches_to_last_opened_even_if_ended() -> None:
    s = Stream().call(1, "Read", "a").call(2, "Edit", "b").result(3, None, "b")
    s.result(4, None, None, payload={"path": "late.txt"}, tokens_in=3)
    spans = s.spans()
    assert (spans["b"].ended_at_ms, spans["b"].paths, spans["b"].tokens_in) == (
        4,
        ("late.txt",),
        3,
    )
    assert spans["a"].ended_at_ms is None


def test_last_opened_is_order_of_first_touch_not_of_last_call() -> None:
    # open_order keeps a span where it first appeared; a repeated call does not move it.
    s = Stream().call(1, "Read", "a").call(2, "Edit", "b").call(3, "Read", "a")
    s.result(4, None, None)
    spans = s.spans()
    assert (spans["a"].ended_at_ms, spans["b"].ended_at_ms) == (None, 4)


def test_result_before_any_span_is_dropped() -> None:
    s = Stream().result(1, "Read", "a", payload={"path": "x"}).call(2, "Read", "b")
    span = s.only()
    assert (span.span_id, span.ended_at_ms, span.paths) == ("b", None, ())


def test_result_does_not_change_tool_or_tool_call_id() -> None:
    s = Stream().call(1, "Read", "a").result(2, "Edit", "a")
    span = s.only()
    assert (span.tool, span.tool_call_id) == ("Read", "a")


def test_later_result_moves_the_end() -> None:
    s = Stream().call(1, "Read", "a").result(2, None, "a").result(8, None, "a")
    assert s.only().ended_at_ms == 8


# --------------------------------------------------------------------------
# Start, end, status, lead time, ids, tokens
# --------------------------------------------------------------------------


def test_start_prefers_hook_start_and_end_prefers_hook_end() -> None:
    s = Stream().call(1, "Read", "a").pre(2, "Read", "a").post(3, "Read", "a")
    s.result(4, None, "a")
    span = s.only()
    assert (span.started_at_ms, span.ended_at_ms) == (2, 3)


def test_start_from_call_and_end_from_hook_when_only_those_exist() -> None:
    s = Stream().call(1, "Read", "a").post(6, "Read", "a")
    span = s.only()
    assert (span.started_at_ms, span.ended_at_ms, span.status) == (1, 6, "done")


def test_status_done_needs_both_start_and_end() -> None:
    s = Stream().call(1, "Read", "a").post(2, "Edit", "b").call(3, "Bash", "c")
    s.result(4, None, "c")
    spans = s.spans()
    assert {k: v.status for k, v in spans.items()} == {
        "a": "orphaned",
        "b": "orphaned",
        "c": "done",
    }


def test_lead_time_from_hook_pair_wins_over_exact_call_and_result() -> None:
    s = Stream().pre(10, "Read", "a").call(11, "Read", "a", ts_exact=True)
    s.result(30, None, "a", ts_exact=True).post(50, "Read", "a")
    assert s.only().lead_time_ms == 40


@pytest.mark.parametrize(
    ("call_exact", "result_exact", "lead"),
    [(True, True, 19), (True, False, None), (False, True, None), (False, False, None)],
)
def test_lead_time_from_call_and_result_only_when_both_exact(
    call_exact: bool, result_exact: bool, lead: int | None
) -> None:
    s = Stream().call(11, "Read", "a", ts_exact=call_exact)
    s.result(30, None, "a", ts_exact=result_exact)
    assert s.only().lead_time_ms == lead


def test_lead_time_falls_back_to_call_and_result_with_one_hook() -> None:
    s = Stream().pre(5, "Read", "a").call(11, "Read", "a", ts_exact=True)
    s.result(30, None, "a", ts_exact=True)
    span = s.only()
    assert (span.started_at_ms, span.ended_at_ms, span.lead_time_ms) == (5, 30, 19)


def test_lead_time_saturates_at_zero() -> None:
    # The post hook (ts 5) arrives before the pre hook (ts 10) of the same id.
    s = Stream().post(5, "Read", "a").pre(10, "Read", "a")
    span = s.only()
    assert (span.started_at_ms, span.ended_at_ms, span.lead_time_ms) == (10, 5, 0)


def test_synthetic_id_is_session_seq_ts() -> None:
    s = Stream("sess:1").call(77, "Read", None, seq=12)
    assert s.only().span_id == "sess:1:12:77"


@pytest.mark.parametrize(
    ("seq", "shown"), [(-1, 2**64 - 1), (I64_MIN, 2**63), (I64_MAX, I64_MAX), (0, 0)]
)
def test_synthetic_id_reads_negative_seq_as_u64(seq: int, shown: int) -> None:
    s = Stream().call(3, "Read", None, seq=seq)
    assert s.only().span_id == f"s:{shown}:3"


def test_last_non_null_tokens_and_cost_win() -> None:
    s = Stream().call(1, "Read", "a", tokens_in=5, tokens_out=6, reasoning_tokens=7, cost_usd_e6=8)
    s.result(2, None, "a", tokens_in=None, tokens_out=0, reasoning_tokens=None, cost_usd_e6=-3)
    s.result(3, None, "a", tokens_in=U32_MAX)
    span = s.only()
    assert (span.tokens_in, span.tokens_out, span.reasoning_tokens, span.cost_usd_e6) == (
        U32_MAX,
        0,
        7,
        -3,
    )


def test_tokens_from_a_later_call_override_those_of_the_result() -> None:
    s = Stream().call(1, "Read", "a", tokens_in=5).result(2, None, "a", tokens_in=6)
    s.call(3, "Read", "a", tokens_in=7)
    assert s.only().tokens_in == 7


# --------------------------------------------------------------------------
# Parents and depth
# --------------------------------------------------------------------------


def test_closed_intervals_span_ending_at_child_start_contains_it() -> None:
    # A is 0..10; B starts at 10 (where A ends) and ends at 10: inside A.
    s = Stream().call(0, "Task", "A").call(10, "Read", "B").result(10, None, "B")
    s.result(10, None, "A")
    spans = s.spans()
    assert (spans["B"].parent_span_id, spans["B"].depth) == ("A", 1)


def test_span_starting_where_another_ends_but_ending_later_is_not_its_child() -> None:
    s = Stream().call(0, "Task", "A").result(10, None, "A").call(10, "Read", "B")
    s.result(11, None, "B")
    assert s.spans()["B"].parent_span_id is None


def test_child_sharing_both_bounds_of_parent_is_inside_it() -> None:
    s = Stream().pre(0, "Task", "A").pre(0, "Read", "B").post(9, "Read", "B").post(9, "Task", "A")
    spans = s.spans()
    assert (spans["B"].parent_span_id, spans["A"].parent_span_id) == ("A", None)


def test_equal_intervals_first_created_is_parent() -> None:
    # "late" is created first (by its call), though its seq is higher.
    s = Stream()
    s.call(0, "Read", "late", seq=9).call(0, "Read", "early", seq=10)
    s.result(5, None, "early", seq=11).result(5, None, "late", seq=12)
    spans = s.spans()
    assert (spans["early"].parent_span_id, spans["early"].depth) == ("late", 1)
    assert spans["late"].parent_span_id is None


def test_equal_intervals_chain_in_creation_order() -> None:
    s = Stream()
    for name in "pqr":
        s.pre(3, "Bash", name)
    for name in "rqp":
        s.post(7, "Bash", name)
    spans = s.spans()
    assert [spans[n].parent_span_id for n in "pqr"] == [None, "p", "q"]
    assert [spans[n].depth for n in "pqr"] == [0, 1, 2]


def test_deepest_container_wins() -> None:
    s = Stream().call(0, "Task", "outer").call(1, "Task", "inner").call(2, "Read", "leaf")
    s.result(3, None, "leaf").result(4, None, "inner").result(9, None, "outer")
    spans = s.spans()
    assert (spans["leaf"].parent_span_id, spans["leaf"].depth) == ("inner", 2)
    assert (spans["inner"].parent_span_id, spans["inner"].depth) == ("outer", 1)


def test_deepest_container_wins_over_a_later_shallower_one() -> None:
    # X 0..100 holds Y 10..60; Z 20..200 crosses Y (depth 0). Leaf 30..40 sits in
    # all three: Y is the deepest.
    s = Stream().call(0, "Task", "X").call(10, "Task", "Y").call(20, "Task", "Z")
    s.call(30, "Read", "leaf").result(40, None, "leaf").result(60, None, "Y")
    s.result(100, None, "X").result(200, None, "Z")
    spans = s.spans()
    assert (spans["Z"].depth, spans["Y"].depth) == (0, 1)
    assert (spans["leaf"].parent_span_id, spans["leaf"].depth) == ("Y", 2)


def test_equally_deep_containers_first_in_sorted_order_wins() -> None:
    # B is created first (by a call at 0) but starts at 5 (its pre hook wins);
    # A starts at 0. Both are depth 0 and contain the leaf; A sorts first.
    s = Stream().call(0, "Task", "B").call(0, "Task", "A").pre(5, "Task", "B")
    s.call(10, "Read", "leaf").result(50, None, "leaf")
    s.result(100, None, "A").result(200, None, "B")
    spans = s.spans()
    assert (spans["A"].depth, spans["B"].depth) == (0, 0)
    assert (spans["B"].started_at_ms, spans["B"].parent_span_id) == (5, None)
    assert spans["leaf"].parent_span_id == "A"


def test_orphans_neither_get_nor_give_a_parent() -> None:
    # "open" has a start and no end; "tail" has an end and no start.
    s = Stream().call(0, "Task", "open").call(1, "Read", "child").result(2, None, "child")
    s.post(3, "Edit", "tail")
    spans = s.spans()
    assert spans["child"].parent_span_id is None
    assert (spans["tail"].parent_span_id, spans["tail"].depth) == (None, 0)


def test_span_whose_call_follows_its_result_keeps_inverted_interval() -> None:
    # A repeated ToolCall after the result moves the start past the end.
    s = Stream().call(0, "Task", "P").call(1, "Read", "x").result(2, None, "x")
    s.call(5, "Read", "x").result(9, None, "P")
    spans = s.spans()
    x = spans["x"]
    assert (x.started_at_ms, x.ended_at_ms, x.status, x.parent_span_id) == (5, 2, "done", "P")


# --------------------------------------------------------------------------
# Subtree rollup
# --------------------------------------------------------------------------


def test_subtree_tokens_count_only_spans_with_tokens_in() -> None:
    s = Stream().call(0, "Task", "P", tokens_out=100)
    s.call(1, "Read", "a", tokens_in=3, tokens_out=4).result(2, None, "a")
    s.call(3, "Read", "b", tokens_out=50).result(4, None, "b")
    s.result(9, None, "P")
    spans = s.spans()
    # P has no tokens_in: its own tokens_out do not count, a's 3 + 4 do, b's do not.
    assert spans["P"].subtree_token_count == 7
    assert (spans["a"].subtree_token_count, spans["b"].subtree_token_count) == (7, None)


def test_subtree_cost_adds_descendants_at_every_depth() -> None:
    s = Stream().call(0, "Task", "P", cost_usd_e6=1).call(1, "Task", "Q")
    s.call(2, "Read", "r", cost_usd_e6=10).result(3, None, "r")
    s.call(4, "Read", "t", cost_usd_e6=100).result(5, None, "t")
    s.result(6, None, "Q").result(9, None, "P")
    spans = s.spans()
    assert [spans[n].subtree_cost_usd_e6 for n in ("P", "Q", "r", "t")] == [111, 110, 10, 100]
    assert spans["Q"].cost_usd_e6 is None


def test_subtree_cost_is_none_when_no_span_in_subtree_has_cost() -> None:
    s = Stream().call(0, "Task", "P").call(1, "Read", "a", tokens_in=1).result(2, None, "a")
    s.result(3, None, "P")
    assert s.spans()["P"].subtree_cost_usd_e6 is None


def test_subtree_cost_wraps_like_i64() -> None:
    s = Stream().call(0, "Task", "P", cost_usd_e6=I64_MAX)
    s.call(1, "Read", "a", cost_usd_e6=1).result(2, None, "a").result(3, None, "P")
    assert s.spans()["P"].subtree_cost_usd_e6 == I64_MIN


def test_subtree_tokens_add_up_past_u32() -> None:
    # The reference adds u32s (and wraps); DESIGN.md: spanwatch sums with Python ints.
    s = Stream().call(0, "Task", "P", tokens_in=U32_MAX, tokens_out=1)
    s.call(1, "Read", "a", tokens_in=U32_MAX).result(2, None, "a").result(3, None, "P")
    assert s.spans()["P"].subtree_token_count == 2 * U32_MAX + 1


def test_orphan_subtree_holds_only_its_own_totals() -> None:
    s = Stream().call(0, "Task", "P", cost_usd_e6=5, tokens_in=2).call(1, "Read", "a")
    s.result(2, None, "a")
    spans = s.spans()
    assert (spans["P"].subtree_cost_usd_e6, spans["P"].subtree_token_count) == (5, 2)


# --------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["path", "file_path", "target_file", "file", "relative_workspace_path"]
)
def test_paths_from_every_path_key(key: str) -> None:
    assert paths_from_payload(json.dumps({key: "a/b.py"})) == ["a/b.py"]


@pytest.mark.parametrize("key", ["Path", "filePath", "paths", "files", "file_path ", "cwd"])
def test_other_keys_hold_no_paths(key: str) -> None:
    assert paths_from_payload(json.dumps({key: "a/b.py"})) == []


def test_paths_nested_in_objects_and_arrays() -> None:
    payload = {
        "tool_input": {"edits": [{"file_path": "x.py"}, [{"path": "y.py"}], "z"]},
        "list": [[[{"target_file": "deep.py"}]]],
    }
    assert paths_from_payload(json.dumps(payload)) == ["deep.py", "x.py", "y.py"]


def test_paths_only_non_empty_strings_and_path_values_are_walked_too() -> None:
    payload = {
        "path": "",
        "file": 3,
        "file_path": None,
        "target_file": [{"relative_workspace_path": "inside.py"}],
        "x": {"path": {"file": "nested.py"}},
    }
    assert paths_from_payload(json.dumps(payload)) == ["inside.py", "nested.py"]


def test_paths_from_json_inside_string_values() -> None:
    inner = json.dumps({"file_path": "in.py", "more": json.dumps([{"path": "twice.py"}])})
    payload = {"tool_response": {"content": inner}, "file": json.dumps({"path": "p.py"})}
    assert paths_from_payload(json.dumps(payload)) == [
        "in.py",
        "p.py",
        "twice.py",
        json.dumps({"path": "p.py"}),
    ]


def test_paths_from_json_inside_string_with_leading_whitespace() -> None:
    payload = {"content": ' \n\t{"path": "ws.py"}'}
    assert paths_from_payload(json.dumps(payload)) == ["ws.py"]


def test_top_level_json_string_holding_json_gives_paths() -> None:
    text = json.dumps(json.dumps({"path": "top.py"}))
    assert parse_payload(text) == json.dumps({"path": "top.py"})
    assert paths_from_payload(text) == ["top.py"]


def test_refused_json_inside_a_string_is_only_a_string() -> None:
    payload = {"file_path": "a.py", "content": '{"path": "b.py", "n": NaN}'}
    assert paths_from_payload(json.dumps(payload)) == ["a.py"]


def test_json_inside_a_string_has_its_own_depth_limit() -> None:
    # The strings sit 5 levels down; their JSON counts its levels from zero.
    inner_ok = "[" * 126 + '{"path":"ok.py"}' + "]" * 126  # 127 levels
    inner_refused = "[" * 127 + '{"path":"no.py"}' + "]" * 127  # 128 levels
    assert paths_from_payload(json.dumps([[[[{"s": inner_ok}]]]])) == ["ok.py"]
    assert paths_from_payload(json.dumps([[[[{"s": inner_refused}]]]])) == []


def test_duplicate_keys_last_one_wins() -> None:
    span = Stream().hook(1, '{"event":"Stop","tool_name":"A","event":"PreToolUse"}').only()
    assert (span.started_at_ms, span.tool) == (1, "A")
    assert paths_from_payload('{"path":"first.py","path":"second.py"}') == ["second.py"]


def test_escaped_key_spelling_is_the_same_key() -> None:
    assert paths_from_payload('{"\\u0070ath":"esc.py","fil\\u0065":"e2.py"}') == [
        "e2.py",
        "esc.py",
    ]


def test_span_paths_are_sorted_and_unique_over_all_its_rows() -> None:
    s = Stream().pre(0, "Edit", "a", tool_input={"file_path": "z.py"})
    s.call(1, "Edit", "a", payload={"path": "b.py", "file": "z.py"})
    s.result(2, None, "a", payload={"file_path": "b.py", "target_file": "a.py"})
    s.post(3, "Edit", "a", tool_response={"filePath": "ignored.py", "file": "c.py"})
    assert s.only().paths == ("a.py", "b.py", "c.py", "z.py")


REFUSED = [
    pytest.param('"x":NaN', id="nan"),
    pytest.param('"x":Infinity', id="infinity"),
    pytest.param('"x":-Infinity', id="minus-infinity"),
    pytest.param('"x":1e400', id="1e400"),
    pytest.param('"x":-1e400', id="minus-1e400"),
    pytest.param('"x":' + "1" * 400, id="400-digit-integer"),
    pytest.param('"x":1.7976931348623158e308', id="max-double-rounded-by-serde-to-inf"),
    pytest.param('"x":1e2147483648', id="exponent-past-i32"),
    pytest.param('"x":' + "[" * 127 + "]" * 127, id="128-deep"),
    pytest.param('"x":"\\ud800"', id="lone-high-surrogate"),
    pytest.param('"x":"\\udc00"', id="lone-low-surrogate"),
    pytest.param('"x":"\\ud800\\u0041"', id="high-surrogate-then-letter"),
    pytest.param('"x":01', id="leading-zero"),
    pytest.param('"x":[1,]', id="trailing-comma"),
]


def hook_text(extra: str) -> str:
    """A PreToolUse payload with a path, plus one more member spliced in as text."""
    return '{"hook_event_name":"PreToolUse","tool_name":"Read","file_path":"f.py",' + extra + "}"


@pytest.mark.parametrize("extra", REFUSED)
def test_serde_refusal_makes_whole_payload_null(extra: str) -> None:
    text = hook_text(extra)
    assert parse_payload(text) is None
    assert paths_from_payload(text) == []
    # No hook kind either: the row opens no span.
    assert Stream().hook(1, text).spans() == {}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(hook_text('"x":1}') + " x", id="trailing-content"),
        pytest.param(hook_text('"x":1') + "}", id="trailing-brace"),
        pytest.param("\ufeff" + hook_text('"x":1'), id="byte-order-mark"),
        pytest.param("", id="empty"),
        pytest.param("{'path': 'a'}", id="single-quotes"),
    ],
)
def test_text_that_is_not_one_json_document_is_null(text: str) -> None:
    assert parse_payload(text) is None
    assert paths_from_payload(text) == []
    assert Stream().hook(1, text).spans() == {}


@pytest.mark.parametrize("number", ["18446744073709551616.0", "-18446744073709551619.5e3"])
def test_serde_refuses_long_integer_whose_fraction_brings_exponent_to_zero(number: str) -> None:
    text = hook_text('"x":' + number)
    assert parse_payload(text) is None
    assert Stream().hook(1, text).spans() == {}


def test_serde_refusal_under_an_overwritten_duplicate_key_still_nulls_payload() -> None:
    # serde_json counts the nesting of every value it reads, including one that
    # a later duplicate key then overwrites.
    text = hook_text('"x":' + "[" * 127 + "]" * 127 + ',"x":1')
    assert parse_payload(text) is None
    assert Stream().hook(1, text).spans() == {}


@pytest.mark.parametrize("extra", REFUSED)
@pytest.mark.parametrize(
    "neighbour",
    [
        pytest.param('"note":"a: b :c"', id="colons-in-strings"),
        pytest.param('"note":"caf\\u00e9: x"', id="colons-and-unicode-escape"),
        pytest.param('"note":"\\u003a\\u003a"', id="escaped-colons"),
        pytest.param('"note":"{\\"k\\":1}"', id="escaped-quote-colon"),
        pytest.param('"note" : "spaced"', id="space-before-colon"),
        # Past 4 KB the parsed strings are counted in place, not written out.
        pytest.param('"note":"' + "a: b é " * 800 + '"', id="long-string-with-colons"),
    ],
)
def test_refused_value_behind_a_duplicate_key_nulls_payload_whatever_its_neighbours(
    extra: str, neighbour: str
) -> None:
    # The overwritten value never reaches the parsed payload, and colons inside
    # strings must not hide the duplicate from the check that finds it.
    text = hook_text(f'{neighbour},{extra},"x":1')
    assert parse_payload(text) is None
    assert Stream().hook(1, text).spans() == {}


@pytest.mark.parametrize(
    "text, paths",
    [
        pytest.param('{"transcript_path":"t.jsonl","filepath":"f"}', [], id="keys-ending-in-path"),
        pytest.param('{"path" : "spaced.py"}', ["spaced.py"], id="space-before-colon"),
        pytest.param(
            json.dumps({"out": " \n" + json.dumps({"x": json.dumps({"file": "two.py"})})}),
            ["two.py"],
            id="json-two-strings-deep-after-whitespace",
        ),
        pytest.param('{"a":"x:y","a":"z","path":"kept.py"}', ["kept.py"], id="harmless-duplicate"),
    ],
)
def test_paths_found_exactly_where_path_keys_are(text: str, paths: list[str]) -> None:
    assert paths_from_payload(text) == paths


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(hook_text('"x":' + "[" * 126 + "]" * 126), id="127-deep"),
        pytest.param(hook_text('"x":1e-400'), id="1e-400"),
        pytest.param(hook_text('"x":1e308'), id="1e308"),
        pytest.param(hook_text('"x":1.7976931348623157e308'), id="max-double"),
        pytest.param(hook_text('"x":18446744073709551616.00'), id="2-to-the-64-point-00"),
        pytest.param(hook_text('"x":0e2147483648'), id="zero-with-exponent-past-i32"),
        pytest.param(hook_text('"x":' + "1" * 300), id="300-digit-integer"),
        pytest.param(hook_text('"x":18446744073709551616'), id="2-to-the-64"),
        pytest.param(hook_text('"x":-9223372036854775809'), id="below-i64"),
        pytest.param(hook_text('"x":"\\ud83d\\ude00"'), id="paired-surrogates"),
        pytest.param(hook_text('"x":"\\u0000"'), id="escaped-nul"),
        pytest.param(" \n" + hook_text('"x":1') + " \n\t\r", id="surrounding-whitespace"),
    ],
)
def test_serde_accepted_edges_keep_payload(text: str) -> None:
    assert parse_payload(text) is not None
    assert paths_from_payload(text) == ["f.py"]
    span = Stream().hook(1, text).only()
    assert (span.tool, span.started_at_ms, span.paths) == ("Read", 1, ("f.py",))


def test_payload_json_null_is_no_hook() -> None:
    assert parse_payload("null") is None
    assert Stream().hook(1, "null").spans() == {}


def test_paths_json_compact_non_ascii_kept_control_characters_escaped() -> None:
    s = Stream().call(
        1, "Edit", "a", payload={"path": "é/日本.py", "file": "a\x1fb", "target_file": 'q"\\\n'}
    )
    span = s.only()
    assert span.paths == ("a\x1fb", 'q"\\\n', "é/日本.py")
    assert span.paths_json == '["a\\u001fb","q\\"\\\\\\n","é/日本.py"]'


def test_paths_json_of_no_paths_is_empty_array() -> None:
    assert Stream().call(1, "Edit", "a").only().paths_json == "[]"


def test_written_out_inits_start_every_field_at_its_declared_default() -> None:
    """`Event` and `SpanBuilder` write their `__init__` out (mypyc compiles it):
    a field added to the class but not to `__init__`, or given another
    default there, would read differently from what the class declares."""
    made: list[tuple[Event | SpanBuilder, set[str]]] = [
        (Event("s", 1, 2, EventKind.HOOK), {"session_id", "seq", "ts_ms", "kind"}),
        (SpanBuilder("a", "s", 0), {"span_id", "session_id", "order"}),
    ]
    for obj, given in made:
        for field in fields(obj):
            if field.name not in given:
                assert getattr(obj, field.name) == field.default, (type(obj), field.name)


def test_event_takes_its_fields_in_order_or_by_name() -> None:
    values: dict[str, Any] = {
        "session_id": "s", "seq": 1, "ts_ms": 2, "kind": EventKind.TOOL_CALL,
        "source": EventSource.TAIL, "ts_exact": True, "tool": "Read", "tool_call_id": "c",
        "tokens_in": 1, "tokens_out": 2, "reasoning_tokens": 3, "cost_usd_e6": 4,
        "payload": b"{}",
    }  # fmt: skip
    assert [field.name for field in fields(Event)] == list(values)
    by_position, by_name = Event(*values.values()), Event(**values)
    assert by_position == by_name
    assert [getattr(by_name, name) for name in values] == list(values.values())
