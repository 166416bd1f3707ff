"""The span engine against the oracle (tests/oracle.py), and the oracle pinned by hand.

The property tests feed both with tests/strategies.py streams and compare the
records as sets (order is not part of the contract). The pinned streams at the
bottom were worked out by hand from the Rust text, so the oracle cannot drift
with the engine.

`SPANWATCH_ORACLE_EXAMPLES` sets the number of examples (default 400).
"""

from __future__ import annotations

import os
from dataclasses import astuple
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

import oracle
from spanwatch.engine import build_span_records
from spanwatch.engine.events import Event, EventKind, EventSource
from spanwatch.engine.payload import parse_payload, paths_from_payload
from spanwatch.engine.records import SpanRecord
from strategies import event_streams, hook_payloads, payloads

EXAMPLES = int(os.environ.get("SPANWATCH_ORACLE_EXAMPLES", "400"))

PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def by_span_id(records: list[SpanRecord]) -> dict[str, tuple[Any, ...]]:
    rows = {r.span_id: astuple(r) for r in records}
    assert len(rows) == len(records), "span ids repeat"
    return rows


def assert_engine_matches_oracle(events: list[Event]) -> None:
    ours = build_span_records(events)
    assert by_span_id(ours) == by_span_id(oracle.oracle_records(events))
    for record in ours:
        assert record.paths_json == oracle.paths_json(record.paths)


@PROPERTY
@given(events=event_streams())
def test_engine_matches_oracle_on_generated_streams(events: list[Event]) -> None:
    assert_engine_matches_oracle(events)


@settings(PROPERTY, max_examples=max(EXAMPLES // 2, 1))
@given(events=event_streams(ties=True))
def test_engine_matches_oracle_with_equal_timestamps(events: list[Event]) -> None:
    # Equal timestamps make equal intervals; the oracle orders them by creation,
    # which is the order DESIGN.md asks of spanwatch.
    assert_engine_matches_oracle(events)


def _reading(text: str) -> tuple[bool, list[str]]:
    value = oracle.parse_payload(text)
    return value is None, oracle.paths_from_event_payload(value)


@PROPERTY
@given(text=payloads() | hook_payloads())
def test_payload_reading_matches_oracle(text: str) -> None:
    assert (parse_payload(text) is None, paths_from_payload(text)) == _reading(text)


# --------------------------------------------------------------------------
# The oracle itself, on streams computed by hand from the Rust text
# --------------------------------------------------------------------------


def ev(seq: int, ts: int, kind: EventKind, session: str = "s", **fields: Any) -> Event:
    return Event(
        session_id=session, seq=seq, ts_ms=ts, kind=kind, source=EventSource.TAIL, **fields
    )


def record(span_id: str, session: str = "s", **fields: Any) -> SpanRecord:
    values: dict[str, Any] = {
        "span_id": span_id,
        "session_id": session,
        "tool": None,
        "tool_call_id": None,
        "status": "done",
        "started_at_ms": None,
        "ended_at_ms": None,
        "lead_time_ms": None,
        "tokens_in": None,
        "tokens_out": None,
        "reasoning_tokens": None,
        "cost_usd_e6": None,
        "paths": (),
        "parent_span_id": None,
        "depth": 0,
        "subtree_cost_usd_e6": None,
        "subtree_token_count": None,
    }
    values.update(fields)
    return SpanRecord(**values)


TASK_STREAM = [
    ev(1, 100, EventKind.HOOK, tool_call_id="T",
       payload='{"hook_event_name":"PreToolUse","tool_name":"Task"}'),
    ev(2, 110, EventKind.TOOL_CALL, tool="Task", tool_call_id="T", ts_exact=True,
       tokens_in=10, tokens_out=5, cost_usd_e6=100, payload='{"prompt":"look"}'),
    ev(3, 120, EventKind.TOOL_CALL, tool="Read", tool_call_id="R", ts_exact=True,
       tokens_in=3, payload='{"input":{"file_path":"a.py"}}'),
    ev(4, 130, EventKind.TOOL_RESULT, tool_call_id="R", ts_exact=True, cost_usd_e6=7,
       payload='{"content":"{\\"path\\": \\"b.py\\"}"}'),
    ev(5, 140, EventKind.TOOL_CALL, tool="Bash", tokens_out=4, payload="{}"),
    ev(6, 150, EventKind.TOOL_RESULT, tool_call_id="T", ts_exact=True, tokens_in=20),
    ev(7, 160, EventKind.HOOK, tool_call_id="T",
       payload='{"event":"PostToolUse","tool_name":"Task"}'),
    ev(8, 170, EventKind.MESSAGE, tokens_in=1000, cost_usd_e6=5000,
       payload='{"event":"PreToolUse","tool_name":"Read"}'),
]  # fmt: skip

TASK_EXPECTED = {
    # Hook pair (100..160) beats call/result for start, end and lead time.
    record("T", tool="Task", tool_call_id="T", started_at_ms=100, ended_at_ms=160,
           lead_time_ms=60, tokens_in=20, tokens_out=5, cost_usd_e6=100,
           subtree_cost_usd_e6=107, subtree_token_count=28),
    record("R", tool="Read", tool_call_id="R", started_at_ms=120, ended_at_ms=130,
           lead_time_ms=10, tokens_in=3, cost_usd_e6=7, paths=("a.py", "b.py"),
           parent_span_id="T", depth=1, subtree_cost_usd_e6=7, subtree_token_count=3),
    # No id, never ended: a synthetic id, orphaned, no parent; no tokens_in, no subtree tokens.
    record("s:5:140", tool="Bash", status="orphaned", started_at_ms=140, tokens_out=4),
}  # fmt: skip

QUIRK_STREAM = [
    # A Lifecycle row reads as Hook; the string `event` key wins over hook_event_name.
    ev(-1, 5, EventKind.parse("Lifecycle"), session="q",
       payload='{"event":"pre_tool_use","hook_event_name":"PostToolUse","tool":"Edit",'
               '"tool_input":{"file_path":"x.rs"}}'),
    # No id: takes the open Edit span that has no call yet; payload not JSON.
    ev(2, 6, EventKind.TOOL_CALL, session="q", tool="Edit", payload="not json"),
    # Unknown id, no tool: the last opened span. An empty path is no path.
    ev(3, 7, EventKind.TOOL_RESULT, session="q", tool_call_id="zzz", payload='{"file":""}'),
    # Non-string `event` falls through; the Edit span has ended, so a new span.
    ev(4, 9, EventKind.HOOK, session="q",
       payload='{"event":1,"hook_event_name":"post_tool_use","name":"Edit"}'),
    # No id, no tool: the last opened span again (an ended one).
    ev(10, 12, EventKind.TOOL_RESULT, session="q", tokens_in=7, payload="[]"),
]  # fmt: skip

QUIRK_EXPECTED = {
    record("q:18446744073709551615:5", session="q", tool="Edit", started_at_ms=5,
           ended_at_ms=7, paths=("x.rs",)),
    record("q:4:9", session="q", tool="Edit", status="orphaned", ended_at_ms=9,
           tokens_in=7, subtree_token_count=7),
}  # fmt: skip

TIE_STREAM = [
    ev(1, 0, EventKind.TOOL_CALL, tool="Read", tool_call_id="A", cost_usd_e6=1),
    ev(2, 0, EventKind.TOOL_CALL, tool="Read", tool_call_id="B", cost_usd_e6=2),
    ev(3, 10, EventKind.TOOL_RESULT, tool_call_id="B"),
    ev(4, 10, EventKind.TOOL_RESULT, tool_call_id="A"),
    ev(5, 10, EventKind.TOOL_CALL, tool="Grep", tool_call_id="C", cost_usd_e6=4),
    ev(6, 10, EventKind.TOOL_CALL, tool="Grep", tool_call_id="D", cost_usd_e6=8),
    ev(7, 10, EventKind.TOOL_RESULT, tool_call_id="D"),
    ev(8, 20, EventKind.TOOL_RESULT, tool_call_id="C"),
]

TIE_EXPECTED = {
    # A and B are both 0..10: A was created first, so A is B's parent.
    record("A", tool="Read", tool_call_id="A", started_at_ms=0, ended_at_ms=10,
           cost_usd_e6=1, subtree_cost_usd_e6=11),
    record("B", tool="Read", tool_call_id="B", started_at_ms=0, ended_at_ms=10,
           cost_usd_e6=2, parent_span_id="A", depth=1, subtree_cost_usd_e6=10),
    # C starts where A ends but ends later: not contained.
    record("C", tool="Grep", tool_call_id="C", started_at_ms=10, ended_at_ms=20,
           cost_usd_e6=4, subtree_cost_usd_e6=4),
    # D (10..10) is inside A, B and C (closed intervals); B is the deepest.
    record("D", tool="Grep", tool_call_id="D", started_at_ms=10, ended_at_ms=10,
           cost_usd_e6=8, parent_span_id="B", depth=2, subtree_cost_usd_e6=8),
}  # fmt: skip


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(TASK_STREAM, TASK_EXPECTED, id="task-with-child-and-orphan"),
        pytest.param(QUIRK_STREAM, QUIRK_EXPECTED, id="matching-quirks"),
        pytest.param(TIE_STREAM, TIE_EXPECTED, id="ties-and-closed-intervals"),
    ],
)
def test_oracle_gives_hand_computed_records(events: list[Event], expected: set[SpanRecord]) -> None:
    got = oracle.oracle_records(events)
    assert len(got) == len(expected)
    assert set(got) == expected


@pytest.mark.parametrize(
    ("text", "is_null"),
    [
        ('{"path":"a"}', False),
        ('{"x":NaN}', True),
        ('{"x":Infinity}', True),
        ('{"x":-Infinity}', True),
        ('{"x":1e400}', True),
        ('{"x":' + "1" * 400 + "}", True),
        ('{"x":' + "1" * 300 + "}", False),
        ('{"x":18446744073709551616}', False),
        ('{"x":1e-400}', False),
        # serde_json's float arithmetic, not Python's, decides at the edges.
        ("1.7976931348623157e308", False),
        ("1.7976931348623158e308", True),
        ("17976931348623158" + "0" * 292, True),
        ("18446744073709551616.00", False),
        ("18446744073709551616.0", True),
        ("18446744073709551616.6", False),
        ("1e2147483648", True),
        ("0e2147483648", False),
        ("-1e-2147483649", False),
        ('{"x":"\\ud800"}', True),
        ('{"x":"\\udc00"}', True),
        ('{"x":"\\ud83d\\ude00"}', False),
        ("[" * 127 + "]" * 127, False),
        ("[" * 128 + "]" * 128, True),
        ('{"a":' * 127 + "1" + "}" * 127, False),
        ('{"a":' * 128 + "1" + "}" * 128, True),
        ("[" * 100_000 + "]" * 100_000, True),
        # A refused value under a key that a later duplicate overwrites: still refused.
        ('{"a":"\\ud800","a":"ok"}', True),
        ('{"a":' + "[" * 127 + "]" * 127 + ',"a":1}', True),
        ('{"path":"a"} x', True),
        ('{"path":"a"}\n', False),
        ("\ufeff{}", True),
        ("", True),
        ("null", True),
    ],
)
def test_oracle_reads_payloads_as_serde_json(text: str, is_null: bool) -> None:
    assert (oracle.parse_payload(text) is None) is is_null


def test_oracle_paths_json_is_serde_json_compact_form() -> None:
    assert oracle.paths_json(["a", "é", 'q"\\', "\x1f\n\t\x7f"]) == (
        '["a","é","q\\"\\\\","\\u001f\\n\\t\x7f"]'
    )
    assert oracle.paths_json([]) == "[]"
