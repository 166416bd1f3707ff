"""Hypothesis strategies: realistic but adversarial event streams of one session.

`event_streams()` mixes two shapes:

- pooled: events drawn independently from small pools of tools and tool-call
  ids, so calls, results and hooks collide in every way the reference's matching
  rules can see (known, unknown and absent ids, results without a tool, hooks
  without an id, ToolCalls that reuse an id after its result, crossing spans);
- planned: a tree of tool invocations (nested, parallel siblings, subagents)
  recorded by hooks, by the transcript tail or both, with some results or post
  hooks missing (orphans), plus pooled noise.

Payloads are JSON text built from trees that put path keys at every level, in
arrays and in JSON-in-string values, and that splice in text serde_json refuses
(NaN, Infinity, 1e400, 400-digit integers, unpaired surrogate escapes, nesting
at and beyond the 128 limit, trailing content) next to text it accepts (paired
surrogates, 1e-400, 2**64, escaped keys, duplicate keys, 127-deep nesting).

Timestamps are distinct unless `ties=True`; rows come sorted by (ts_ms, seq),
the reference's load order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from spanwatch.engine.events import Event, EventKind, EventSource

U32_MAX = 2**32 - 1
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1

SESSION_IDS = ["sess-1", "9f1c2d3e-claude", "a:b:c", "ünï-séssion", ""]
TOOLS = ["Read", "Edit", "Bash", "Task", "Grep"]
IDS = ["toolu_01", "toolu_02", "toolu_03", "call_4", "call_5"]
UNKNOWN_IDS = ["toolu_unknown", ""]
PATH_KEYS = ["path", "file_path", "target_file", "file", "relative_workspace_path"]
OTHER_KEYS = [
    "tool_input",
    "tool_response",
    "content",
    "cwd",
    "session_id",
    "edits",
    "x",
    "Path",
    "FILE",
    "paths",
    "filePath",
    "transcript_path",
]
PATHS = [
    "src/main.py",
    "/home/dev/proj/README.md",
    "é/ü.rs",
    "dir with space/x.txt",
    "日本語.txt",
    "emoji😀.md",
    "ctl\x1fchar\x01.txt",
    "tab\there\nnewline",
    'q"uote\\back',
    "\x7fdel",
    "a",
    "b",
    "",
]
OTHER_STRINGS = ["hello", "", "null", "123", "[]", "{}", "PreToolUse", " ", "{"]
HOOK_NAMES = [
    "PreToolUse",
    "pre_tool_use",
    "PostToolUse",
    "post_tool_use",
    "Stop",
    "SessionStart",
    "pretooluse",
    "",
]
# Unknown kind strings all read as Hook (EventKind.parse), as do unknown sources.
KIND_STRINGS_READ_AS_HOOK = ["Hook", "Lifecycle", "SessionStart", "toolcall", ""]
SOURCE_STRINGS = ["Tail", "Hook", "Proxy", "Cursor", ""]

# JSON fragments spliced into payloads verbatim.
ACCEPTED_RAW = [
    "1e308",
    "-0",
    "1E+2",
    "18446744073709551616",
    "-9223372036854775809",
    "1.5e-400",
    "0e99999",
    "1" * 300,
    '"\\ud83d\\ude00"',
    '"\\u00e9\\/"',
    '"\\u0000"',
    # serde_json's own float arithmetic (not correctly rounded) at the edges:
    "1.7976931348623157e308",
    "-1.79769313486231570e308",
    "18446744073709551616.00",
    "0e2147483648",
    "1e-2147483649",
    "true",
    "[]",
    "{}",
]
REFUSED_RAW = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1" * 400,
    "-" + "9" * 400,
    "1.7976931348623158e308",  # finite for Python, out of range for serde_json
    "-17976931348623157" + "0" * 292,
    "1e2147483648",
    '"\\ud800"',
    '"\\udc00"',
    '"\\ud800\\u0041"',
    "'single'",
    "01",
    "[1,]",
]


# --------------------------------------------------------------------------
# JSON trees with raw fragments
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as is (accepted or refused by serde_json)."""

    text: str


@dataclass(frozen=True)
class Obj:
    """An object as key/value pairs: keys may repeat (the last one wins)."""

    pairs: tuple[tuple[str | Raw, Any], ...]


@dataclass(frozen=True)
class Arr:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class JsonStr:
    """A string value whose content is the JSON text of a tree."""

    tree: Any


def deep(levels: int, inner: Any) -> Any:
    """`inner` inside `levels` nested arrays."""
    for _ in range(levels):
        inner = Arr((inner,))
    return inner


def to_json(tree: Any, ascii_only: bool = False) -> str:
    """The JSON text of a tree (raw fragments spliced in as they are)."""
    if isinstance(tree, Raw):
        return tree.text
    if isinstance(tree, Obj):
        parts = []
        for key, value in tree.pairs:
            key_text = (
                key.text if isinstance(key, Raw) else json.dumps(key, ensure_ascii=ascii_only)
            )
            parts.append(key_text + ":" + to_json(value, ascii_only))
        return "{" + ",".join(parts) + "}"
    if isinstance(tree, Arr):
        return "[" + ",".join(to_json(item, ascii_only) for item in tree.items) + "]"
    if isinstance(tree, JsonStr):
        return json.dumps(to_json(tree.tree, ascii_only), ensure_ascii=ascii_only)
    return json.dumps(tree, ensure_ascii=ascii_only)


def _leaves() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(PATHS),
        st.sampled_from(OTHER_STRINGS),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.none(),
        st.sampled_from(ACCEPTED_RAW).map(Raw),
        st.sampled_from(REFUSED_RAW).map(Raw),
        st.text(max_size=6),
    )


KEYS: st.SearchStrategy[str | Raw] = st.one_of(
    st.sampled_from(PATH_KEYS),
    st.sampled_from(OTHER_KEYS),
    # "path" and "file" spelled with escapes: still path keys once parsed.
    st.sampled_from(['"\\u0070ath"', '"fil\\u0065"']).map(Raw),
)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    pair_value = st.one_of(st.sampled_from(PATHS), children)
    return st.one_of(
        st.lists(st.tuples(KEYS, pair_value), max_size=4).map(lambda p: Obj(tuple(p))),
        st.lists(children, max_size=4).map(lambda i: Arr(tuple(i))),
        children.map(JsonStr),
        # A path 126, 127 or 128 arrays deep: whether it counts depends on the
        # depth it sits at (serde_json refuses the 128th nested level).
        st.sampled_from([126, 127, 128]).map(lambda n: deep(n, Obj((("path", "deep.txt"),)))),
    )


JSON_TREES: st.SearchStrategy[Any] = st.recursive(_leaves(), _extend, max_leaves=10)

# Payloads as real writers produce them (most rows), cheap to draw.
REALISTIC_TREES: st.SearchStrategy[Any] = st.one_of(
    st.builds(
        lambda key, path, content: Obj((("tool_input", Obj(((key, path),))), ("content", content))),
        st.sampled_from(PATH_KEYS),
        st.sampled_from(PATHS),
        st.sampled_from(OTHER_STRINGS),
    ),
    st.builds(
        lambda path: Obj((("type", "tool_result"), ("content", JsonStr(Obj((("file", path),)))))),
        st.sampled_from(PATHS),
    ),
    st.builds(
        lambda paths: Obj((("edits", Arr(tuple(Obj((("path", p),)) for p in paths))),)),
        st.lists(st.sampled_from(PATHS), max_size=3),
    ),
    st.builds(
        lambda raw, path: Obj((("file_path", path), ("x", Raw(raw)))),
        st.sampled_from(ACCEPTED_RAW + REFUSED_RAW),
        st.sampled_from(PATHS),
    ),
    st.just(Obj(())),
    st.just(Obj((("content", "plain text output"),))),
)


def json_trees() -> st.SearchStrategy[Any]:
    """JSON trees with path keys at any level (one shared strategy: cheap to draw from)."""
    return JSON_TREES


def _top_level_text(draw: st.DrawFn, tree: Any) -> str:
    text = to_json(tree, ascii_only=draw(st.booleans()))
    mangle = draw(
        st.sampled_from(
            ["none"] * 12
            + ["whitespace", "trailing", "bom", "empty", "not_json", "string_of_json", "deep"]
        )
    )
    if mangle == "whitespace":
        return " \n\t" + text + "\r\n "
    if mangle == "trailing":
        return text + draw(st.sampled_from([" x", "}", "{}", ",", "\x00"]))
    if mangle == "bom":
        return "\ufeff" + text
    if mangle == "empty":
        return draw(st.sampled_from(["", "   ", "not json", "null", "{'path': 'a'}"]))
    if mangle == "not_json":
        return text[: len(text) // 2]
    if mangle == "string_of_json":
        return json.dumps(text)
    if mangle == "deep":
        levels = draw(st.sampled_from([126, 127, 128, 5000]))
        return "[" * levels + text + "]" * levels
    return text


@st.composite
def payloads(draw: st.DrawFn) -> str:
    """Payload text of a tool call or result (any JSON, or not JSON)."""
    tree = draw(st.one_of(REALISTIC_TREES, JSON_TREES))
    return _top_level_text(draw, tree)


PAYLOADS: st.SearchStrategy[str] = payloads()


HOOK_NAME_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(HOOK_NAMES),
    st.sampled_from([1, None, True]),
    st.just(Arr(("PreToolUse",))),
    st.just(Obj((("name", "PostToolUse"),))),
)
HOOK_TOOL_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(TOOLS),
    st.sampled_from([1, None, "", False]),
    st.just(Obj((("name", "Read"),))),
)


@st.composite
def hook_payloads(draw: st.DrawFn, kind: str | None = None, tool: str | None = None) -> str:
    """A hook's payload: event / hook_event_name, tool_name / tool / name, tool_input..."""
    pairs: list[tuple[str | Raw, Any]] = []
    if kind is not None:
        spelling = draw(st.sampled_from(["camel", "snake"]))
        name = {
            ("pre", "camel"): "PreToolUse",
            ("pre", "snake"): "pre_tool_use",
            ("post", "camel"): "PostToolUse",
            ("post", "snake"): "post_tool_use",
        }[(kind, spelling)]
        pairs.append((draw(st.sampled_from(["event", "hook_event_name"])), name))
    else:
        for key in ("event", "hook_event_name"):
            if draw(st.booleans()):
                pairs.append((key, draw(HOOK_NAME_VALUES)))
        if draw(st.integers(0, 9)) == 0:
            pairs.append((Raw('"\\u0065vent"'), draw(st.sampled_from(HOOK_NAMES))))
    tool_keys = ["tool_name", "tool", "name"]
    if tool is not None:
        pairs.append((draw(st.sampled_from(tool_keys)), tool))
    else:
        for key in tool_keys:
            if draw(st.booleans()):
                pairs.append((key, draw(HOOK_TOOL_VALUES)))
    if draw(st.booleans()):
        file_key = draw(st.sampled_from(PATH_KEYS))
        pairs.append(("tool_input", Obj(((file_key, draw(st.sampled_from(PATHS))),))))
    if draw(st.booleans()):
        pairs.append(("tool_response", draw(st.one_of(REALISTIC_TREES, JSON_TREES))))
    pairs.append(("session_id", "9f1c2d3e"))
    pairs.append(("cwd", "/home/dev/proj"))
    pairs = list(draw(st.permutations(pairs)))
    if draw(st.integers(0, 7)) == 0 and pairs:
        # A duplicate key: the last occurrence wins, as in serde_json.
        repeated, _ = pairs[0]
        pairs.append((repeated, draw(st.one_of(HOOK_NAME_VALUES, st.sampled_from(TOOLS)))))
    tree = Obj(tuple(pairs))
    if draw(st.integers(0, 5)) == 0:
        return _top_level_text(draw, tree)
    return to_json(tree, ascii_only=draw(st.booleans()))


# --------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------


TOKENS: st.SearchStrategy[int | None] = st.one_of(
    st.none(),
    st.none(),
    st.integers(0, 5000),
    st.sampled_from([0, 1, U32_MAX, U32_MAX - 1, 2**31]),
)
COSTS: st.SearchStrategy[int | None] = st.one_of(
    st.none(),
    st.none(),
    st.integers(0, 100_000),
    st.sampled_from([I64_MIN, I64_MAX, -1, 2**62]),
)
SOURCES: st.SearchStrategy[EventSource] = st.sampled_from(SOURCE_STRINGS).map(EventSource.parse)
MAYBE_TOOL: st.SearchStrategy[str | None] = st.one_of(st.none(), st.sampled_from(TOOLS))
MAYBE_ID: st.SearchStrategy[str | None] = st.one_of(st.none(), st.sampled_from(IDS))
MAYBE_ANY_ID: st.SearchStrategy[str | None] = st.one_of(
    st.none(), st.sampled_from(IDS + UNKNOWN_IDS)
)
NUMBERS: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "ts_exact": st.booleans(),
        "tokens_in": TOKENS,
        "tokens_out": TOKENS,
        "reasoning_tokens": TOKENS,
        "cost_usd_e6": COSTS,
        "source": SOURCES,
    }
)


@st.composite
def tool_call_specs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "kind": EventKind.TOOL_CALL,
        "tool": draw(MAYBE_TOOL),
        "tool_call_id": draw(MAYBE_ID),
        "payload": draw(PAYLOADS),
        **draw(NUMBERS),
    }


@st.composite
def tool_result_specs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "kind": EventKind.TOOL_RESULT,
        "tool": draw(MAYBE_TOOL),
        "tool_call_id": draw(MAYBE_ANY_ID),
        "payload": draw(PAYLOADS),
        **draw(NUMBERS),
    }


@st.composite
def hook_specs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["pre", "post", None]))
    tool = draw(MAYBE_TOOL) if kind is not None else None
    return {
        "kind": EventKind.parse(draw(st.sampled_from(KIND_STRINGS_READ_AS_HOOK))),
        # The tool column of a hook row is not what names its tool.
        "tool": draw(MAYBE_TOOL),
        "tool_call_id": draw(MAYBE_ANY_ID),
        "payload": draw(hook_payloads(kind=kind, tool=tool)),
        **draw(NUMBERS),
    }


@st.composite
def other_specs(draw: st.DrawFn) -> dict[str, Any]:
    """Message, Error and Cost rows: never part of a span, whatever they carry."""
    payload = draw(st.one_of(payloads(), hook_payloads(kind="pre", tool="Read")))
    return {
        "kind": draw(st.sampled_from([EventKind.MESSAGE, EventKind.ERROR, EventKind.COST])),
        "tool": draw(MAYBE_TOOL),
        "tool_call_id": draw(MAYBE_ID),
        "payload": payload,
        **draw(NUMBERS),
    }


POOLED_SPECS: st.SearchStrategy[dict[str, Any]] = st.one_of(
    tool_call_specs(), tool_result_specs(), hook_specs(), other_specs()
)


def pooled_specs() -> st.SearchStrategy[dict[str, Any]]:
    return POOLED_SPECS


@dataclass
class Invocation:
    tool: str
    call_id: str | None
    hooks: bool
    transcript: bool
    children: list[Invocation]
    parallel: bool


@st.composite
def invocations(draw: st.DrawFn, depth: int = 0) -> Invocation:
    tool = "Task" if depth == 0 and draw(st.booleans()) else draw(st.sampled_from(TOOLS))
    n_children = draw(st.integers(0, 3)) if depth < 4 and tool == "Task" else 0
    if depth < 4 and tool != "Task" and draw(st.integers(0, 5)) == 0:
        n_children = 1  # a span that contains another without being a Task
    channels = draw(st.sampled_from(["hooks", "transcript", "both", "both"]))
    return Invocation(
        tool=tool,
        call_id=draw(st.one_of(st.none(), st.sampled_from([*IDS, "toolu_x1", "toolu_x2"]))),
        hooks=channels in ("hooks", "both"),
        transcript=channels in ("transcript", "both"),
        children=[draw(invocations(depth + 1)) for _ in range(n_children)],
        parallel=draw(st.booleans()),
    )


@st.composite
def _emit(draw: st.DrawFn, inv: Invocation) -> list[dict[str, Any]]:
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    if inv.hooks:
        before.append(
            {
                "kind": EventKind.HOOK,
                "tool_call_id": inv.call_id if draw(st.integers(0, 4)) else None,
                "payload": draw(hook_payloads(kind="pre", tool=inv.tool)),
                **draw(NUMBERS),
            }
        )
        if draw(st.integers(0, 5)):  # else: interrupted, no PostToolUse
            after.append(
                {
                    "kind": EventKind.HOOK,
                    "tool_call_id": inv.call_id if draw(st.integers(0, 4)) else None,
                    "payload": draw(hook_payloads(kind="post", tool=inv.tool)),
                    **draw(NUMBERS),
                }
            )
    if inv.transcript:
        call = draw(tool_call_specs())
        call["tool"] = inv.tool
        call["tool_call_id"] = inv.call_id
        before.append(call)
        if draw(st.integers(0, 5)):  # else: interrupted, no result
            result = draw(tool_result_specs())
            result["tool_call_id"] = inv.call_id if draw(st.integers(0, 5)) else None
            result["tool"] = draw(st.sampled_from([None, inv.tool]))
            after.append(result)
    before = list(draw(st.permutations(before)))
    after = list(draw(st.permutations(after)))
    streams = [draw(_emit(child)) for child in inv.children]
    middle: list[dict[str, Any]] = []
    if inv.parallel:
        # Parallel siblings: their rows interleave, each in its own order.
        while any(streams):
            live = [s for s in streams if s]
            pick = live[draw(st.integers(0, len(live) - 1))]
            middle.append(pick.pop(0))
    else:
        for s in streams:
            middle.extend(s)
    return before + middle + after


@st.composite
def planned_specs(draw: st.DrawFn) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    for inv in draw(st.lists(invocations(), min_size=1, max_size=3)):
        specs.extend(draw(_emit(inv)))
    for noise in draw(st.lists(POOLED_SPECS, max_size=6)):
        specs.insert(draw(st.integers(0, len(specs))), noise)
    return specs


def seqs() -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(0, 10_000),
        st.integers(-5, -1),
        st.sampled_from([I64_MIN, I64_MAX, -1]),
    )


@st.composite
def event_streams(draw: st.DrawFn, ties: bool = False, max_events: int = 40) -> list[Event]:
    """One session's events in load order (ORDER BY ts_ms, seq)."""
    session_id = draw(st.sampled_from(SESSION_IDS))
    if draw(st.booleans()):
        n = draw(st.integers(0, max_events))
        specs = draw(st.lists(POOLED_SPECS, min_size=n, max_size=n))
    else:
        specs = draw(planned_specs())[: max_events * 2]
    n = len(specs)
    seq_values = draw(st.lists(seqs(), min_size=n, max_size=n, unique=True))
    ts = draw(st.one_of(st.integers(0, 2**41), st.just(I64_MAX - 10 * (n + 1) * 1000)))
    events = []
    for spec, seq in zip(specs, seq_values, strict=True):
        events.append(
            Event(
                session_id=session_id,
                seq=seq,
                ts_ms=ts,
                kind=spec["kind"],
                source=spec.get("source", EventSource.HOOK),
                ts_exact=spec.get("ts_exact", False),
                tool=spec.get("tool"),
                tool_call_id=spec.get("tool_call_id"),
                tokens_in=spec.get("tokens_in"),
                tokens_out=spec.get("tokens_out"),
                reasoning_tokens=spec.get("reasoning_tokens"),
                cost_usd_e6=spec.get("cost_usd_e6"),
                payload=spec["payload"],
            )
        )
        ts += draw(st.integers(0, 3)) if ties else draw(st.integers(1, 5000))
    events.sort(key=lambda e: (e.ts_ms, e.seq))
    return events
