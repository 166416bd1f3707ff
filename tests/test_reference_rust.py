"""spanwatch against the real Rust reference, row for row.

The reference module (a verbatim copy in tests/reference_rs) is compiled and
run on a store; spanwatch rebuilds a byte copy of the same store; every column
of every `tool_spans` row and every `tool_span_paths` row must be equal,
storage class included. Hand-written streams pin each rule of the reference
and of DESIGN.md; property tests (a small strategy here, and the adversarial
`event_streams()` of tests/strategies.py) cover the combinations nobody wrote down.

Kept out on purpose, because spanwatch deviates from the reference there by
design (DESIGN.md): spans with exactly equal (start, end) (the reference orders
them at random), one span id in two sessions, token values outside u32, token
sums that overflow u32, and negative `ts_ms`. (Cost sums wrap as i64 in both.)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_rust import (
    REFERENCE_COPY,
    SHARED_REFERENCE,
    SPAN_COLUMNS,
    ReferenceUnavailable,
    SpanDump,
    Sql,
    diff_dumps,
    dump_spans,
    insert_events,
    reference_binary,
    run_reference,
)
from spanwatch.engine.events import Event, EventKind, EventSource
from strategies import event_streams

Row = Event | Mapping[str, Any]
START, END = SPAN_COLUMNS.index("started_at_ms"), SPAN_COLUMNS.index("ended_at_ms")


@pytest.fixture(scope="module")
def reference() -> Path:
    """The reference binary, or a skip naming what this machine lacks."""
    try:
        return reference_binary()
    except ReferenceUnavailable as missing:
        pytest.skip(f"Rust reference not buildable here: {missing}")


def rebuild_both(directory: Path, rows: Iterable[Row]) -> tuple[SpanDump, SpanDump]:
    """Write the rows to a store, copy it, rebuild one copy with each engine."""
    from spanwatch.store.rebuild_all import rebuild_store

    ref_db, ours_db = directory / "reference.db", directory / "spanwatch.db"
    insert_events(ref_db, rows)
    shutil.copyfile(ref_db, ours_db)
    run_reference(ref_db)
    rebuild_store(ours_db)
    return dump_spans(ref_db), dump_spans(ours_db)


def assert_same_as_reference(directory: Path, rows: Sequence[Row]) -> SpanDump:
    expected, actual = rebuild_both(directory, rows)
    tied = tied_intervals(expected)
    assert not tied, f"ill-formed case: the reference orders these at random: {tied}"
    differences = diff_dumps(expected, actual)
    assert not differences, "\n".join([*differences, "events:", *map(repr, rows)])
    return expected


def tied_intervals(dump: SpanDump) -> list[list[str]]:
    """Spans of one session with the same complete (start, end): random in the reference."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for span_id, row in dump.spans.items():
        session, start, end = row[1], row[START], row[END]
        if start is not None and end is not None:
            groups.setdefault((session, start, end), []).append(span_id)
    return [sorted(ids) for ids in groups.values() if len(ids) > 1]


# --------------------------------------------------------------------------
# Raw rows for the hand-written streams
# --------------------------------------------------------------------------


def ev(
    seq: int, ts: int, kind: str | bytes, *, session: str | Sql = "s", **columns: Any
) -> dict[str, Any]:
    """One raw events row; `payload` is dumped to JSON unless `raw` gives the text."""
    raw = columns.pop("raw", None)
    payload = columns.pop("payload", None)
    text = raw if raw is not None else json.dumps(payload, ensure_ascii=False)
    row = {"session_id": session, "seq": seq, "ts_ms": ts, "kind": kind, "source": "Tail"}
    return row | {"payload": text} | columns


def call(
    seq: int, ts: int, tool: str | Sql | None, call_id: str | None, **kw: Any
) -> dict[str, Any]:
    return ev(seq, ts, "ToolCall", tool=tool, tool_call_id=call_id, **kw)


def result(
    seq: int, ts: int, tool: str | None, call_id: str | Sql | None, **kw: Any
) -> dict[str, Any]:
    return ev(seq, ts, "ToolResult", tool=tool, tool_call_id=call_id, **kw)


def hook(seq: int, ts: int, name: Any, tool: str | None = None, **kw: Any) -> dict[str, Any]:
    """A hook row: payload {"hook_event_name": name, "tool_name": tool} plus `extra`."""
    extra = kw.pop("extra", {})
    body = {"hook_event_name": name} | ({"tool_name": tool} if tool else {}) | extra
    kind = kw.pop("kind", "Hook")
    return ev(seq, ts, kind, source="Hook", payload=body, **kw)


def path_call(seq: int, ts: int, raw: str) -> dict[str, Any]:
    """A call whose span id names the case, to see which paths a payload yields."""
    return call(seq, ts, "T", f"p{seq}", raw=raw)


DEEP_127 = "[" * 126 + '{"path":"/deep127"}' + "]" * 126
DEEP_128 = "[" * 127 + '{"path":"/deep128"}' + "]" * 127


def deep_in_strings(levels: int) -> str:
    """A path in JSON in a string in 120 arrays, in a string in 120 arrays, `levels` times."""
    text = json.dumps({"path": f"/in-{levels}-strings"})
    for _ in range(levels):
        text = "[" * 120 + json.dumps(text) + "]" * 120
    return text


CASES: dict[str, list[dict[str, Any]]] = {
    "empty store": [],
    "call and result by id, exact": [
        call(1, 100, "Bash", "c1", ts_exact=1),
        result(2, 250, "Bash", "c1", ts_exact=1),
    ],
    "lead time needs both ends exact": [
        call(1, 100, "Bash", "c1", ts_exact=1),
        result(2, 200, "Bash", "c1"),
        call(3, 300, "Bash", "c2"),
        result(4, 450, "Bash", "c2", ts_exact=1),
        call(5, 500, "Bash", "c3", ts_exact=2),
        result(6, 560, "Bash", "c3", ts_exact=-1),
    ],
    "hooks in both spellings": [
        hook(1, 100, "PreToolUse", "Read", tool_call_id="h1"),
        hook(2, 150, "PostToolUse", "Read", tool_call_id="h1"),
        hook(3, 200, "pre_tool_use", "Edit", tool_call_id="h2"),
        hook(4, 270, "post_tool_use", "Edit", tool_call_id="h2"),
        hook(5, 300, "pretooluse", "Edit", tool_call_id="h3"),
        hook(6, 310, "Stop", "Edit"),
    ],
    "event key wins over hook_event_name": [
        ev(1, 100, "Hook", payload={"event": "PreToolUse", "tool_name": "A"}),
        ev(2, 110, "Hook", payload={"event": "Stop", "hook_event_name": "PreToolUse"}),
        ev(3, 120, "Hook", payload={"event": 5, "hook_event_name": "PreToolUse", "tool": "B"}),
        ev(
            4, 130, "Hook", payload={"event": None, "hook_event_name": "post_tool_use", "name": "B"}
        ),
        ev(5, 140, "Hook", payload={"event": ["PreToolUse"], "hook_event_name": 1}),
        ev(6, 150, "Hook", payload={"event": "PostToolUse", "tool_name": "A"}),
    ],
    "hook tool keys in order, non-strings skipped": [
        hook(1, 100, "PreToolUse", extra={"tool_name": 1, "tool": "Grep", "name": "x"}),
        hook(2, 110, "PreToolUse", extra={"tool": None, "name": "Glob"}),
        hook(3, 120, "PreToolUse", extra={"name": "LS", "tool_name": "Write"}),
        hook(4, 200, "PostToolUse", extra={"tool": "Grep"}),
        hook(5, 210, "PostToolUse", extra={"name": "Glob"}),
        hook(6, 220, "PostToolUse", extra={"tool_name": "Write"}),
        hook(7, 230, "PostToolUse", extra={"tool_name": "Write"}),
    ],
    "unknown kinds are hooks": [
        hook(1, 100, "PreToolUse", "Bash", kind="Lifecycle", tool_call_id="k1"),
        hook(2, 200, "PostToolUse", "Bash", kind="toolcall", tool_call_id="k1"),
        hook(3, 300, "PreToolUse", "Read", kind="", tool_call_id="k2"),
        hook(4, 400, "PostToolUse", "Read", kind="Message", tool_call_id="k2"),
        call(5, 500, "Read", "k3", source="Weird"),
        ev(6, 550, "Cost", tool="Read", tool_call_id="k3", tokens_in=9, payload={"path": "/c"}),
        ev(7, 560, "Error", tool="Read", tool_call_id="k3", payload={"path": "/e"}),
        ev(8, 570, "Message", tool="Read", payload={"hook_event_name": "PostToolUse"}),
    ],
    "hooks without id join the open span of their tool": [
        hook(1, 100, "PreToolUse", "Read"),
        hook(2, 150, "PreToolUse", "Read"),
        hook(3, 160, "PostToolUse", "Read"),
        hook(4, 170, "PostToolUse", "Read"),
        hook(5, 180, "PostToolUse", "Read"),
        hook(6, 190, "PostToolUse"),
    ],
    "call without id joins a hook span without call": [
        hook(1, 100, "PreToolUse", "Read"),
        call(2, 110, "Read", None, tokens_in=5),
        result(3, 140, "Read", None, tokens_out=7),
        hook(4, 150, "PostToolUse", "Read"),
        hook(5, 200, "PostToolUse", "Edit"),
        call(6, 210, "Edit", None),
        call(7, 220, None, None),
        call(8, 230, "Edit", None),
    ],
    "a call overwrites tool and id, even with null": [
        hook(1, 100, "PreToolUse", "Bash", tool_call_id="c1"),
        call(2, 110, None, "c1"),
        hook(3, 200, "PostToolUse", "Bash"),
        hook(4, 210, "PostToolUse", "Bash", tool_call_id="c1"),
        call(5, 300, "Edit", "c2"),
        hook(6, 310, "PreToolUse", "Grep", tool_call_id="c2"),
        call(7, 320, "Edit", None),
        result(8, 400, "Edit", None),
    ],
    "results without id or tool take the last opened span, even ended": [
        call(1, 100, "Bash", "c1"),
        result(2, 200, "Bash", "c1"),
        call(3, 210, "Read", "c2"),
        result(4, 220, "Read", "c2"),
        result(5, 300, None, None, tokens_out=3),
        result(6, 310, "Nope", "unknown-id", cost_usd_e6=7),
        result(7, 320, "Bash", None),
    ],
    "result before any span is dropped": [
        result(1, 100, "Bash", "c1", payload={"path": "/lost"}),
        result(2, 110, None, None),
        call(3, 200, "Bash", "c1"),
    ],
    "orphans": [
        call(1, 100, "Bash", "c1", tokens_in=4),
        hook(2, 200, "PostToolUse", "Read", tool_call_id="c2"),
        hook(3, 300, "PreToolUse", "Edit", tool_call_id="c3"),
        call(4, 310, "Edit", "c4"),
        call(5, 320, "Grep", "c5"),
        result(6, 400, "Grep", "c5"),
    ],
    "nesting, deepest container wins, closed intervals": [
        call(1, 100, "Task", "a", ts_exact=1),
        call(2, 200, "Task", "b"),
        call(3, 300, "Bash", "c"),
        result(4, 400, "Bash", "c"),
        result(5, 500, "Task", "b"),
        call(6, 500, "Read", "d"),
        result(7, 600, "Read", "d"),
        call(8, 600, "Read", "e"),
        result(9, 1000, "Task", "a", ts_exact=1),
        call(10, 1000, "Read", "f"),
        result(11, 1100, "Read", "f"),
        hook(12, 1000, "PreToolUse", "Read", tool_call_id="g"),
        hook(13, 1000, "PostToolUse", "Read", tool_call_id="g"),
        hook(14, 100, "PreToolUse", "Read", tool_call_id="h"),
        hook(15, 100, "PostToolUse", "Read", tool_call_id="h"),
    ],
    "equally deep overlapping containers: first in order wins": [
        call(1, 100, "X", "x"),
        call(2, 150, "Y", "y"),
        call(3, 200, "Z", "z", tokens_in=1, tokens_out=2, cost_usd_e6=3),
        result(4, 400, "Z", "z"),
        result(5, 500, "X", "x"),
        result(6, 600, "Y", "y"),
    ],
    "hook times win over call times": [
        hook(1, 100, "PreToolUse", "Bash", tool_call_id="c1"),
        call(2, 120, "Bash", "c1", ts_exact=1),
        result(3, 180, "Bash", "c1", ts_exact=1),
        hook(4, 200, "PostToolUse", "Bash", tool_call_id="c1"),
        call(5, 300, "Bash", "c2", ts_exact=1),
        hook(6, 310, "PreToolUse", "Bash", tool_call_id="c2"),
        result(7, 390, "Bash", "c2", ts_exact=1),
    ],
    "inverted intervals saturate": [
        hook(1, 100, "PostToolUse", "Bash", tool_call_id="c1"),
        hook(2, 200, "PreToolUse", "Bash", tool_call_id="c1"),
        call(3, 300, "Read", "c2", ts_exact=1),
        result(4, 400, "Read", "c2", ts_exact=1),
        call(5, 500, "Read", "c2", ts_exact=1),
        call(6, 150, "Grep", "c3"),
        result(7, 160, "Grep", "c3"),
    ],
    "tokens and cost on calls and results, subtree sums": [
        call(1, 100, "Task", "a", tokens_in=10, cost_usd_e6=1000),
        call(2, 110, "Bash", "b", tokens_in=1, tokens_out=2, reasoning_tokens=3),
        result(3, 120, "Bash", "b", tokens_in=5, cost_usd_e6=-40),
        call(4, 130, "Read", "c", tokens_out=8, cost_usd_e6=0),
        call(5, 135, "Read", "d", tokens_in=0, reasoning_tokens=6),
        result(6, 136, "Read", "d"),
        result(7, 140, "Read", "c", tokens_out=9),
        call(8, 150, "Grep", "e"),
        result(9, 160, "Grep", "e", tokens_in=11, tokens_out=12, cost_usd_e6=13),
        result(10, 200, "Task", "a", tokens_out=20, reasoning_tokens=1),
        call(11, 300, "Edit", "f", tokens_out=1),
        call(12, 310, "Edit", "g", tokens_in=2),
        result(13, 320, "Edit", "g"),
        result(14, 330, "Edit", "f"),
    ],
    "paths anywhere in the payload": [
        call(
            1,
            100,
            "Edit",
            "c1",
            payload={
                "tool_input": {"file_path": "/a", "edits": [{"path": "/b"}, {"target_file": "/c"}]}
            },
        ),
        result(
            2,
            110,
            "Edit",
            "c1",
            payload=[{"file": "/d"}, [[{"relative_workspace_path": "src/e.rs"}]]],
        ),
        call(
            3,
            200,
            "Read",
            "c2",
            payload={"path": "", "file": 5, "file_path": None, "paths": "/x", "PATH": "/y"},
        ),
        call(
            4,
            300,
            "Read",
            "c3",
            payload={"path": {"path": "/inner"}, "file": ["/not-a-path", {"file": "/f"}]},
        ),
        hook(
            5,
            400,
            "PreToolUse",
            "Read",
            tool_call_id="c4",
            extra={"tool_input": {"file_path": "/hooked"}},
        ),
        hook(
            6,
            410,
            "PostToolUse",
            "Read",
            tool_call_id="c4",
            extra={"tool_response": {"filePath": "/no", "file": "/hooked"}},
        ),
        call(7, 500, "Read", "c5", payload={"path": "/same", "x": {"file": "/same"}}),
        result(8, 510, "Read", "c5", payload={"path": "/same"}),
        ev(9, 520, "Message", payload={"path": "/message-ignored"}),
    ],
    "paths in JSON inside strings": [
        call(1, 100, "Bash", "c1", payload={"input": json.dumps({"file_path": "/in-string"})}),
        call(2, 110, "Bash", "c2", payload={"path": json.dumps({"file": "/nested"})}),
        call(3, 120, "Bash", "c3", payload={"x": json.dumps(json.dumps({"path": "/twice"}))}),
        call(4, 130, "Bash", "c4", payload=json.dumps({"path": "/top-level-string"})),
        call(5, 140, "Bash", "c5", payload={"x": json.dumps([1, {"path": "/arr"}])}),
        call(6, 150, "Bash", "c6", payload={"x": " \n" + json.dumps({"path": "/ws"}) + "\t"}),
        call(
            7,
            160,
            "Bash",
            "c7",
            payload={"x": '{"path": "/broken"', "y": '[1e400, {"path": "/inf"}]'},
        ),
        call(8, 170, "Bash", "c8", payload={"x": "\f" + json.dumps({"path": "/formfeed"})}),
        call(
            9, 180, "Bash", "c9", payload={"x": "{'path': '/single-quotes'}", "y": "7", "z": "null"}
        ),
    ],
    "paths_json escapes and non-ASCII": [
        call(1, 100, "Edit", "c1", payload={"path": "/tmp/ü/日本.txt", "file": "/😀"}),
        call(2, 110, "Edit", "c2", payload={"path": 'q"b\\s/t\ttab\nnl\x01\x1f\x7f\u2028'}),
        call(3, 120, "Edit", "c3", raw='{"path": "/nul\\u0000byte", "file": "\\ud83d\\ude00"}'),
        call(
            4,
            130,
            "Edit",
            "c4",
            payload={"path": "B", "file": "a", "file_path": "é", "target_file": "Z"},
        ),
    ],
    "JSON edges: what serde_json rejects makes the payload null": [
        path_call(1, 100, '{"path": "/nan", "x": NaN}'),
        path_call(2, 110, '{"path": "/inf", "x": Infinity}'),
        path_call(3, 120, '{"path": "/ninf", "x": -Infinity}'),
        path_call(4, 130, '{"path": "/e400", "x": 1e400}'),
        path_call(5, 140, '{"path": "/ne400", "x": -1e400}'),
        path_call(6, 150, '{"path": "/long-int", "x": 1' + "0" * 400 + "}"),
        path_call(7, 160, '{"path": "/lone-high", "x": "\\ud800"}'),
        path_call(8, 170, '{"path": "/lone-low", "x": "\\udc00"}'),
        path_call(9, 180, '{"path": "/high-high", "x": "\\ud800\\ud800"}'),
        path_call(10, 190, '{"\\ud800": 1, "path": "/lone-in-key"}'),
        path_call(11, 200, '{"path": "/ctrl", "x": "a\nb"}'),
        path_call(12, 210, '{"path": "/leading-zero", "x": 01}'),
        path_call(13, 220, '{"path": "/trailing"} x'),
        path_call(14, 230, '\ufeff{"path": "/bom"}'),
        path_call(15, 240, '{"path": "/comma",}'),
        path_call(16, 250, '{"path": "/bad-escape", "x": "\\x"}'),
        path_call(17, 260, ""),
        path_call(18, 270, DEEP_128),
        path_call(19, 280, '{"x": ' + json.dumps(DEEP_128) + "}"),
        path_call(20, 290, '{"path": "/dot", "x": 1.}'),
        path_call(21, 300, '{"path": "/plus", "x": +1}'),
    ],
    "JSON edges: a too-deep value behind a duplicate key still fails the parse": [
        path_call(1, 100, '{"x": ' + "[" * 127 + "]" * 127 + ', "x": 0, "path": "/dup-deep"}'),
        path_call(
            2,
            110,
            '{"x": '
            + json.dumps('{"y": ' + "[" * 127 + "]" * 127 + ', "y": 0, "path": "/in-string"}')
            + "}",
        ),
        ev(
            3,
            120,
            "Hook",
            raw='{"event": "PreToolUse", "tool_name": "A", "x": '
            + "[" * 127
            + "]" * 127
            + ', "x": 0}',
        ),
        path_call(4, 130, '{"x": ' + "[" * 126 + "]" * 126 + ', "x": 0, "path": "/dup-127-ok"}'),
        # An edge number takes the exact parse: 600 levels must not reach Python's recursion limit.
        path_call(
            5, 140, "[1.79769313486231581e308, " + "[" * 600 + "]" * 600 + ', {"path": "/no"}]'
        ),
        # Colons in keys and strings, at any depth, are not members: only a
        # duplicate hides the number here, which serde_json still refuses.
        path_call(
            6,
            150,
            '{"x": 1.7976931348623158e308, "k:e:y": ["v:a:l", {"a:": ":b"}], "x": 0, '
            '"path": "/dup-edge-colons"}',
        ),
        path_call(7, 160, '{"k:e:y": ["v:a:l", {"a:": ":b"}], "path": "/colons-no-dup"}'),
        path_call(8, 170, '{"t\\u003a": 1.7976931348623158e308, "t\\u003a": 0, "path": "/esc"}'),
    ],
    "JSON edges: the double range as serde_json computes it (f64 significand * 10^exp)": [
        path_call(1, 100, '{"path": "/max-rounded-up", "x": 1.7976931348623158e308}'),
        path_call(2, 110, '{"path": "/neg", "x": -1.7976931348623158e308}'),
        path_call(3, 120, '{"path": "/above-max-yet-finite", "x": 1.79769313486231581e308}'),
        path_call(4, 130, '{"path": "/long-int", "x": 1797693134862315807' + "0" * 290 + "}"),
        path_call(5, 140, '{"path": "/max", "x": 1.7976931348623157e308}'),
        path_call(6, 150, '{"path": "/beyond", "x": 1.7976931348623159e308}'),
    ],
    "JSON edges: what serde_json accepts": [
        path_call(1, 100, '{"path": "/big-int", "x": 123456789012345678901234567890}'),
        path_call(2, 110, '{"path": "/big-neg", "x": -123456789012345678901234567890}'),
        path_call(3, 120, '{"path": "/u64+1", "x": 18446744073709551616}'),
        path_call(4, 130, '{"path": "/tiny", "x": 1e-400}'),
        path_call(5, 140, '{"path": "/max", "x": 1.7976931348623157e308, "y": -0}'),
        path_call(6, 150, '{"path": "/pair", "x": "\\ud83d\\ude00"}'),
        path_call(7, 160, DEEP_127),
        path_call(8, 170, '{"x": ' + json.dumps(DEEP_127) + "}"),
        path_call(9, 180, ' \t\r\n{"path": "/ws"} \n'),
        path_call(10, 190, '{"path": "/first", "path": "/dup-last"}'),
        path_call(11, 200, '{"path": "/dup", "x": {"file": "/gone"}, "x": 1}'),
        path_call(12, 210, '{"path": "/escapes\\/\\b\\f\\n\\r\\t\\u00e9"}'),
        path_call(13, 220, "[" * 126 + json.dumps(json.dumps(DEEP_127)) + "]" * 126),
        # Each parse has its own depth limit: far deeper in all than Python's recursion limit.
        path_call(14, 230, deep_in_strings(9)),
        path_call(15, 240, deep_in_strings(16)),
    ],
    "JSON edges on hook payloads": [
        ev(1, 100, "Hook", raw='{"event": "PreToolUse", "tool_name": "A", "x": NaN}'),
        ev(2, 110, "Hook", raw='{"event": "PreToolUse", "tool_name": "B", "x": "\\ud800"}'),
        ev(3, 120, "Hook", raw='{"event": "PreToolUse", "event": "Stop", "tool_name": "C"}'),
        ev(4, 130, "Hook", raw='{"event": "Stop", "event": "PreToolUse", "tool_name": "D"}'),
        ev(
            5,
            140,
            "Hook",
            raw='{"hook_event_name": "PreToolUse", "tool": "E", "n": 1' + "0" * 30 + "}",
        ),
        ev(6, 150, "Hook", raw='"{\\"event\\": \\"PreToolUse\\", \\"tool_name\\": \\"F\\"}"'),
        ev(7, 160, "Hook", raw='[{"event": "PreToolUse", "tool_name": "G"}]'),
        ev(8, 170, "Hook", raw="[" * 127 + '{"event": "PreToolUse"}' + "]" * 127),
    ],
    # A non-ASCII hook payload is parsed from its stored UTF-8 bytes, not from
    # the decoded str: the same verdicts, paths and tools as for any text.
    "non-ASCII hook payloads, read as bytes": [
        ev(1, 100, "Hook", raw='{"event": "PreToolUse", "tool_name": "Édit", "file": "/ü/ß"}'),
        ev(2, 110, "Hook", raw='\ufeff{"event": "PreToolUse", "tool_name": "BOM", "path": "/b"}'),
        ev(3, 120, "Hook", raw='{"event": "PreToolUse", "tool_name": "Nå", "x": NaN}'),
        ev(4, 130, "Hook", raw='{"event": "PreToolUse", "tool_name": "Bïg", "x": 1e400}'),
        ev(5, 140, "Hook", raw='{"event": "PreToolUse", "tool_name": "Lø", "x": "\\ud800"}'),
        ev(6, 150, "Hook", raw='{"event": "PreToolUse", "tool_name": "😀", "p": "\\ud83d\\ude00"}'),
        ev(
            7,
            160,
            "Hook",
            raw="[" * 126 + '{"event": "PreToolUse", "tool_name": "ö"}' + "]" * 126,
        ),
        ev(8, 170, "Hook", raw='{"event": "PreToolUse", "tool_name": "ö", "d": ' + DEEP_128 + "}"),
        ev(9, 180, "Hook", raw='{"event": "PreToolUse", "tool_name": "ö", "d": ' + DEEP_127 + "}"),
        ev(
            10,
            190,
            "Hook",
            raw='{"hook_event_name": "PostToolUse", "tool_name": "Édit", "tool_response": '
            + json.dumps(json.dumps({"file_path": "/ü/in-string", "c": "a→b"}), ensure_ascii=False)
            + ', "file_path": "/ü/ß"}',
        ),
        ev(11, 200, "Hook", raw='{"event": "PostToolUse", "tool_name": "ü", "x": 1.0, "x": 2}'),
        ev(12, 210, "Hook", raw='{"event": "PostToolUse", "tool_name": "ü"} ü'),
        # Not UTF-8: the row is dropped, as the reference drops it.
        ev(
            13,
            220,
            "Hook",
            raw=Sql("CAST(X'7B226576656E74223A2250726554FF6F6C557365227D' AS TEXT)"),
        ),
        ev(14, 230, "Hook", raw=Sql("CAST(X'7B2265223A22EDA080227D' AS TEXT)")),
        ev(15, 240, "Hook", raw=Sql("CAST(X'EFBBBF7B7D' AS TEXT)")),
        ev(16, 250, "Lifecycle", raw='{"event": "PreToolUse", "tool_name": "Lï", "path": "/l"}'),
    ],
    "a payload that is not TEXT drops the row": [
        call(1, 100, "Bash", "c1"),
        result(2, 200, "Bash", "c1", raw=5),
        result(3, 210, "Bash", "c1", raw=1.5),
        ev(4, 220, "Hook", raw=b'{"event": "PostToolUse", "tool_name": "Bash"}'),
        result(5, 240, "Bash", "c1"),
    ],
    "storage classes the reference cannot read drop the row": [
        call(1, 100, "Bash", "c1"),
        result(2, 200, "Bash", "c1", tokens_in="many"),
        result(3, 210, "Bash", "c1", cost_usd_e6=1.5),
        result(4, 220, "Bash", "c1", payload=None, reasoning_tokens=b"\x01"),
        ev(5, 230, "ToolResult", tool=b"Bash", tool_call_id="c1"),
        ev(6, 240, "ToolResult", tool_call_id=b"c1"),
        ev(7, 250, "ToolResult", tool_call_id="c1", ts_exact="yes"),
        ev(8, 260, b"ToolResult", tool_call_id="c1"),
        ev(9, 270, "ToolResult", tool_call_id="c1", source=b"Tail"),
        {
            "session_id": "s",
            "seq": 10,
            "ts_ms": 280,
            "kind": "ToolResult",
            "source": "Tail",
            "tool_call_id": "c1",
            "payload": b"{}",
        },
        {
            "session_id": "s",
            "seq": 11.5,
            "ts_ms": 290,
            "kind": "ToolResult",
            "source": "Tail",
            "tool_call_id": "c1",
            "payload": "{}",
        },
        {
            "session_id": "s",
            "seq": 12,
            "ts_ms": 295.5,
            "kind": "ToolResult",
            "source": "Tail",
            "tool_call_id": "c1",
            "payload": "{}",
        },
        {
            "session_id": b"s",
            "seq": 13,
            "ts_ms": 297,
            "kind": "ToolCall",
            "source": "Tail",
            "tool_call_id": "blob-session",
            "payload": "{}",
        },
        result(14, 300, "Bash", "c1", tokens_in="42", tokens_out=7.0, cost_usd_e6="-3"),
    ],
    "text that is not UTF-8 drops the row": [
        call(1, 100, "Bash", "c1"),
        result(2, 200, "Bash", "c1", raw=Sql("CAST(X'7B22FF22' AS TEXT)")),
        call(3, 150, Sql("CAST(X'FF' AS TEXT)"), "c2"),
        result(4, 160, "Read", "c2"),
        call(5, 300, "Edit", "c3"),
        result(6, 400, "Edit", Sql("CAST(X'C3' AS TEXT)")),
        ev(7, 410, "ToolResult", tool="Edit", session=Sql("CAST(X'73FF' AS TEXT)")),
    ],
    "row order is ts then seq, not insertion order; odd seqs": [
        result(9, 300, "Bash", "c1", ts_exact=1),
        call(-5, 100, "Bash", "c1", ts_exact=1),
        hook(2**62, 150, "PreToolUse", "Read"),
        hook(-(2**63), 150, "PostToolUse", "Read"),
        hook(3, 150, "PreToolUse", "Read"),
        hook(-1, 160, "PreToolUse", "Grep"),
        call(7, 2**62, "Edit", None),
        call(8, 0, "Edit", None),
    ],
    "several sessions": [
        call(1, 100, "Bash", "a-1", session="a"),
        call(1, 105, "Bash", "b-1", session="b"),
        hook(2, 110, "PreToolUse", "Read", session="a"),
        result(2, 120, "Bash", None, session="b"),
        hook(3, 130, "PostToolUse", "Read", session="a"),
        result(4, 140, "Bash", "a-1", session="a"),
        hook(1, 150, "PreToolUse", "Read", session="c:1"),
        hook(3, 160, "PreToolUse", "Read", session="c"),
        call(5, 170, None, None, session="s:7"),
    ],
    "cost sums wrap as i64, as in the reference": [
        call(1, 100, "Task", "a", cost_usd_e6=2**63 - 1),
        call(2, 110, "Bash", "b", cost_usd_e6=5),
        call(3, 120, "Bash", "c", cost_usd_e6=-(2**63)),
        result(4, 130, "Bash", "c"),
        result(5, 140, "Bash", "b"),
        result(6, 200, "Task", "a"),
    ],
    "a tool-call id equal to a synthetic id of the same session": [
        hook(1, 100, "PreToolUse", "Read"),
        call(2, 150, "Bash", "s:1:100"),
        result(3, 200, "Bash", None),
    ],
}


def test_reference_copy_is_verbatim() -> None:
    """tests/reference_rs must build exactly the reference DESIGN.md points at."""
    if not SHARED_REFERENCE.exists():
        pytest.skip(f"{SHARED_REFERENCE} not present to compare with")
    assert REFERENCE_COPY.read_bytes() == SHARED_REFERENCE.read_bytes()


def test_reference_rows_hand_computed(reference: Path, tmp_path: Path) -> None:
    """The harness itself: the binary writes what reading the reference predicts."""
    db = tmp_path / "store.db"
    insert_events(
        db,
        [
            call(1, 100, "Task", "a", ts_exact=1, tokens_in=2**32 + 1, payload={"file": "/ü"}),
            call(2, 150, "Read", "b", tokens_in=2**32 - 1, tokens_out=3, cost_usd_e6=5),
            result(3, 160, None, "b", payload=[json.dumps({"path": "/b"})]),
            result(4, 200, "Task", None, ts_exact=1, cost_usd_e6=-2),
            hook(5, 300, "PostToolUse", "Edit"),
        ],
    )
    run_reference(db)
    dump = dump_spans(db)
    # tokens_in 2**32 + 1 wraps to 1; a's subtree tokens 1 + (2**32 - 1 + 3) wrap to 3.
    # fmt: off
    assert dump.spans == {
        "a": ("a", "s", "Task", "a", "done", 100, 200, 100,
              1, None, None, -2, '["/ü"]', None, 0, 3, 3),
        "b": ("b", "s", "Read", "b", "done", 150, 160, None,
              2**32 - 1, 3, None, 5, '["/b"]', "a", 1, 5, 2),
        "s:5:300": ("s:5:300", "s", "Edit", None, "orphaned", None, 300, None,
                    None, None, None, None, "[]", None, 0, None, None),
    }
    # fmt: on
    assert dump.paths == {("a", "/ü"), ("b", "/b")}


@pytest.mark.parametrize("rows", list(CASES.values()), ids=list(CASES))
def test_hand_written_case_is_well_formed(reference: Path, tmp_path: Path, rows: list[Row]) -> None:
    """The harness without spanwatch: each case runs, has no tie, gives the same rows twice."""
    dumps = []
    for name in ("one.db", "two.db"):
        insert_events(tmp_path / name, rows)
        run_reference(tmp_path / name)
        dumps.append(dump_spans(tmp_path / name))
    assert tied_intervals(dumps[0]) == []
    assert diff_dumps(dumps[0], dumps[1]) == []


@pytest.mark.parametrize("rows", list(CASES.values()), ids=list(CASES))
def test_hand_written_stream(reference: Path, tmp_path: Path, rows: list[Row]) -> None:
    assert_same_as_reference(tmp_path, rows)


# --------------------------------------------------------------------------
# Random streams
# --------------------------------------------------------------------------

TOOLS = ["Bash", "Read", "Edit", None]
PATHS = ["/a", "/b", "src/ü.rs", ""]


@st.composite
def payloads(draw: st.DrawFn, tool: str | None) -> str:
    """A payload text: hook bodies in every spelling, paths, JSON in strings, junk."""
    hook_name = draw(
        st.sampled_from(
            ["PreToolUse", "pre_tool_use", "PostToolUse", "post_tool_use", "Stop", None]
        )
    )
    body: dict[str, Any] = {}
    if hook_name is not None:
        body[draw(st.sampled_from(["event", "hook_event_name"]))] = hook_name
    if tool is not None and draw(st.booleans()):
        body[draw(st.sampled_from(["tool_name", "tool", "name"]))] = tool
    for key in draw(st.lists(st.sampled_from(["path", "file_path", "file", "x"]), max_size=2)):
        value: Any = draw(st.sampled_from(PATHS))
        if draw(st.booleans()):
            value = json.dumps({"target_file": value})
        body[key] = value
    text = json.dumps(body, ensure_ascii=False)
    return draw(st.sampled_from([text, text, text, text[:-1] + ', "n": NaN}', "not json"]))


@st.composite
def session_events(draw: st.DrawFn, session_id: str, timestamps: list[int]) -> list[Event]:
    """Events of one session; tool-call ids are namespaced by the session."""
    seqs = draw(st.permutations(range(len(timestamps))))
    events = []
    for ts, seq in zip(timestamps, seqs, strict=True):
        tool = draw(st.sampled_from(TOOLS))
        kind = draw(
            st.sampled_from(
                [EventKind.TOOL_CALL, EventKind.TOOL_RESULT, EventKind.HOOK, EventKind.MESSAGE]
            )
        )
        call_id = draw(st.sampled_from([None, None, "c1", "c2", "c3"]))
        tokens = st.none() | st.integers(0, 2**20 - 1)
        events.append(
            Event(
                session_id=session_id,
                seq=seq * 3 - 5,
                ts_ms=ts,
                kind=kind,
                source=draw(st.sampled_from(list(EventSource))),
                ts_exact=draw(st.booleans()),
                tool=tool,
                tool_call_id=None if call_id is None else f"{session_id}/{call_id}",
                tokens_in=draw(tokens),
                tokens_out=draw(tokens),
                reasoning_tokens=draw(tokens),
                cost_usd_e6=draw(st.none() | st.integers(-(10**6), 10**6)),
                payload=draw(payloads(tool)),
            )
        )
    return events


@st.composite
def random_streams(draw: st.DrawFn) -> list[Event]:
    """One or more sessions, distinct timestamps, rows inserted in random order."""
    sessions = draw(st.integers(1, 3))
    stamps = draw(st.lists(st.integers(0, 5_000), unique=True, min_size=1, max_size=30))
    owner = [draw(st.integers(0, sessions - 1)) for _ in stamps]
    events: list[Event] = []
    for n in range(sessions):
        mine = [ts for ts, o in zip(stamps, owner, strict=True) if o == n]
        events += draw(session_events(f"sess{n}", mine))
    return draw(st.permutations(events))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(events=random_streams())
def test_random_streams(reference: Path, events: list[Event]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        assert_same_as_reference(Path(directory), list(events))


TOKEN_FIELDS = ("tokens_in", "tokens_out", "reasoning_tokens")


def small_tokens(event: Event) -> Event:
    """Token values below 2**20: no u32 sum overflows (spanwatch sums exactly, by design)."""
    small = {f: v % 2**20 for f in TOKEN_FIELDS if (v := getattr(event, f)) is not None}
    return replace(event, **small)


@st.composite
def several_sessions(draw: st.DrawFn, max_events: int = 40) -> list[Event]:
    """tests/strategies.py streams, one or two sessions; ids kept apart across sessions."""
    streams = draw(
        st.lists(
            event_streams(max_events=max_events),
            min_size=1,
            max_size=2,
            unique_by=lambda s: s[0].session_id if s else None,
        )
    )
    events = [small_tokens(e) for stream in streams for e in stream]
    if len(streams) == 1:
        return events
    # A tool-call id never equals a synthetic id, whose session ids have no "/".
    return [
        e if e.tool_call_id is None else replace(e, tool_call_id=f"{e.session_id}/{e.tool_call_id}")
        for e in events
    ]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(events=several_sessions())
def test_strategy_streams(reference: Path, events: list[Event]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        assert_same_as_reference(Path(directory), events)
