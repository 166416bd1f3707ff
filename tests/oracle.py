"""The test oracle: `shared/reference/tool_span_index.rs`, transliterated line by line.

Nothing here is clever on purpose. Each function keeps the reference's name and
shape (quadratic loops, a dict for the `HashMap`, an `open_order` list), so a
reader can hold this file next to the Rust text and check it statement by
statement. It shares no code with `spanwatch.engine` beyond the `Event` and
`SpanRecord` data types.

Where the reference is not deterministic or not shown, the oracle follows
DESIGN.md:

- Exact ties of (start, end): the reference takes its spans out of a `HashMap`
  (random order) before a stable sort. The oracle keeps its spans in a dict,
  whose order is creation order, so ties sort by creation order (DESIGN.md's
  rule for spanwatch).
- `paths_from_event_payload` lives in the reference's `store::event_index`
  (not shown); DESIGN.md specifies it.
- The payload column is read with `serde_json::from_str(..).unwrap_or(Null)`.
  `serde_json_loads` below accepts exactly what serde_json accepts.
- Token sums: the reference adds `u32`s (wrapping in release builds); DESIGN.md
  says spanwatch sums with Python ints, and so does the oracle. Cost sums are
  `i64` additions and wrap as a Rust release build does (`wrap_i64`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from spanwatch.engine.events import Event, EventKind
from spanwatch.engine.records import SpanRecord

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
I64_MIN = -(2**63)

# serde_json's default recursion limit: the 128th nested array/object fails.
SERDE_RECURSION_LIMIT = 128


# --------------------------------------------------------------------------
# serde_json::from_str::<Value>, as Python values (None = JSON null)
# --------------------------------------------------------------------------


class SerdeReject(ValueError):
    """Text that serde_json::from_str::<Value> would refuse."""


def _reject_constant(name: str) -> object:
    # NaN, Infinity, -Infinity: not JSON, serde_json refuses them.
    raise SerdeReject(f"not a JSON number: {name}")


# --- Numbers: de.rs of serde_json 1.0.87 without `float_roundtrip`, line by line.
# serde_json keeps at most the digits that fit a u64 and computes
# f64(significand) * 10^exponent, which is not correctly rounded: near the top
# of the double range it overflows where Python's float() does not
# (1.7976931348623158e308 is refused). Its decimal parser also refuses a number
# whose integer part overflowed a u64 and whose fraction brings the exponent
# back to zero ("18446744073709551616.0"). The oracle replays that arithmetic;
# Python floats are the same IEEE doubles, with the same operations.

U64_MAX_INT = 2**64 - 1
I32_MAX = 2**31 - 1
I32_MIN = -(2**31)
DIGITS = "0123456789"
POW10 = [float(f"1e{k}") for k in range(309)]  # de.rs POW10: 1e0 ..= 1e308


def _overflow(value: int, digit: int, limit: int) -> bool:
    """`overflow!(value * 10 + digit, limit)`."""
    return value >= limit // 10 and (value > limit // 10 or digit > limit % 10)


class _NumberReader:
    """The number half of serde_json's `Deserializer`, over one number token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.index = 0

    def peek_or_null(self) -> str:
        return self.token[self.index] if self.index < len(self.token) else "\0"

    def eat_char(self) -> None:
        self.index += 1

    def parse(self) -> int | float:
        positive = True
        if self.peek_or_null() == "-":
            self.eat_char()
            positive = False
        return self.parse_integer(positive)

    def parse_integer(self, positive: bool) -> int | float:
        first = self.peek_or_null()
        self.eat_char()
        if first == "0":
            return self.parse_number(positive, 0)
        significand = int(first)
        while (c := self.peek_or_null()) in DIGITS:
            digit = int(c)
            if _overflow(significand, digit, U64_MAX_INT):
                return self.parse_long_integer(positive, significand)
            self.eat_char()
            significand = significand * 10 + digit
        return self.parse_number(positive, significand)

    def parse_number(self, positive: bool, significand: int) -> int | float:
        c = self.peek_or_null()
        if c == ".":
            return self.parse_decimal(positive, significand, 0)
        if c in "eE":
            return self.parse_exponent(positive, significand, 0)
        if positive:
            return significand  # u64
        if significand == 0 or significand > 2**63:
            return -float(significand)  # "-0", or below i64::MIN: an f64
        return -significand  # i64

    def parse_decimal(self, positive: bool, significand: int, exponent: int) -> float:
        self.eat_char()
        while (c := self.peek_or_null()) in DIGITS:
            digit = int(c)
            if _overflow(significand, digit, U64_MAX_INT):
                return self.parse_decimal_overflow(positive, significand, exponent)
            self.eat_char()
            significand = significand * 10 + digit
            exponent -= 1
        # "Error if there is not at least one digit after the decimal point."
        # (An exponent brought back to 0 from a long integer trips it too.)
        if exponent == 0:
            raise SerdeReject(f"invalid number: {self.token[:20]}")
        if self.peek_or_null() in "eE":
            return self.parse_exponent(positive, significand, exponent)
        return self.f64_from_parts(positive, significand, exponent)

    def parse_exponent(self, positive: bool, significand: int, starting_exp: int) -> float:
        self.eat_char()
        positive_exp = True
        if self.peek_or_null() == "+":
            self.eat_char()
        elif self.peek_or_null() == "-":
            self.eat_char()
            positive_exp = False
        exp = int(self.peek_or_null())
        self.eat_char()
        while (c := self.peek_or_null()) in DIGITS:
            self.eat_char()
            digit = int(c)
            if _overflow(exp, digit, I32_MAX):
                return self.parse_exponent_overflow(positive, significand == 0, positive_exp)
            exp = exp * 10 + digit
        final_exp = starting_exp + exp if positive_exp else starting_exp - exp
        final_exp = max(I32_MIN, min(I32_MAX, final_exp))  # saturating_add / saturating_sub
        return self.f64_from_parts(positive, significand, final_exp)

    def f64_from_parts(self, positive: bool, significand: int, exponent: int) -> float:
        f = float(significand)  # `significand as f64`
        while True:
            # `exponent.wrapping_abs() as usize`: i32::MIN stays negative, a huge index.
            index = abs(exponent) if exponent != I32_MIN else len(POW10)
            if index < len(POW10):
                pow_ = POW10[index]
                if exponent >= 0:
                    f *= pow_
                    if math.isinf(f):
                        raise SerdeReject(f"number out of range: {self.token[:20]}")
                else:
                    f /= pow_
                break
            if f == 0.0:
                break
            if exponent >= 0:
                raise SerdeReject(f"number out of range: {self.token[:20]}")
            f /= 1e308
            exponent += 308
        return f if positive else -f

    def parse_long_integer(self, positive: bool, significand: int) -> float:
        exponent = 0
        while True:
            c = self.peek_or_null()
            if c in DIGITS:
                self.eat_char()
                exponent += 1
            elif c == ".":
                return self.parse_decimal(positive, significand, exponent)
            elif c in "eE":
                return self.parse_exponent(positive, significand, exponent)
            else:
                return self.f64_from_parts(positive, significand, exponent)

    def parse_decimal_overflow(self, positive: bool, significand: int, exponent: int) -> float:
        # The next multiply/add would overflow, so just ignore all further digits.
        while self.peek_or_null() in DIGITS:
            self.eat_char()
        if self.peek_or_null() in "eE":
            return self.parse_exponent(positive, significand, exponent)
        return self.f64_from_parts(positive, significand, exponent)

    def parse_exponent_overflow(
        self, positive: bool, zero_significand: bool, positive_exp: bool
    ) -> float:
        # Error instead of +/- infinity.
        if not zero_significand and positive_exp:
            raise SerdeReject(f"number out of range: {self.token[:20]}")
        while self.peek_or_null() in DIGITS:
            self.eat_char()
        return 0.0 if positive else -0.0


def serde_number(token: str) -> int | float:
    """A number token (valid JSON syntax, as Python's json matched it) as serde_json reads it."""
    return _NumberReader(token).parse()


class _Pairs(list[tuple[str, object]]):
    """An object as json.loads reads it, every key/value pair kept (duplicates too)."""


def _to_value(node: object, depth: int) -> object:
    """Check serde_json's recursion limit and unpaired surrogates, build the Value.

    Checked on every pair, including those a later duplicate key overwrites:
    serde_json refuses them while parsing, before the last value wins.
    """
    if isinstance(node, _Pairs):
        if depth + 1 >= SERDE_RECURSION_LIMIT:
            raise SerdeReject("recursion limit exceeded")
        obj: dict[str, object] = {}
        for key, item in node:
            _check_string(key)
            obj[key] = _to_value(item, depth + 1)  # a duplicate key: the last one wins
        return obj
    if isinstance(node, list):
        if depth + 1 >= SERDE_RECURSION_LIMIT:
            raise SerdeReject("recursion limit exceeded")
        return [_to_value(item, depth + 1) for item in node]
    if isinstance(node, str):
        _check_string(node)
    return node


def _check_string(text: str) -> None:
    # Python's json turns "\ud800" (an unpaired surrogate escape) into a lone
    # surrogate code point; serde_json refuses the whole text. A paired
    # "\ud83d\ude00" becomes one code point and is fine.
    for ch in text:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise SerdeReject("lone surrogate in hex escape")


def serde_json_loads(text: str) -> object:
    """Parse `text` as serde_json::from_str::<Value> does, or raise SerdeReject."""
    # A raw surrogate code point in the text itself cannot come out of valid
    # UTF-8, so a Rust String never holds one.
    _check_string(text)
    try:
        raw = json.loads(
            text,
            object_pairs_hook=_Pairs,
            parse_constant=_reject_constant,
            parse_float=serde_number,
            parse_int=serde_number,
        )
    except RecursionError as exc:  # nesting far beyond 128
        raise SerdeReject("recursion limit exceeded") from exc
    except json.JSONDecodeError as exc:
        raise SerdeReject(str(exc)) from exc
    return _to_value(raw, 0)


def parse_payload(text: str) -> object:
    """`serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null)`."""
    try:
        return serde_json_loads(text)
    except SerdeReject:
        return None


# --------------------------------------------------------------------------
# store::event_index::paths_from_event_payload (DESIGN.md, "Span semantics")
# --------------------------------------------------------------------------

PATH_KEYS = ("path", "file_path", "target_file", "file", "relative_workspace_path")


def paths_from_event_payload(payload: object) -> list[str]:
    found: list[str] = []
    _walk(payload, found)
    return sorted(set(found))


def _walk(value: object, found: list[str]) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            if key in PATH_KEYS and isinstance(child, str) and child != "":
                found.append(child)
            _walk(child, found)
    elif isinstance(value, list):
        for item in value:
            _walk(item, found)
    elif isinstance(value, str):
        try:
            inner = serde_json_loads(value)
        except SerdeReject:
            return
        _walk(inner, found)


def paths_json(paths: list[str] | tuple[str, ...]) -> str:
    """`serde_json::to_string(&Vec<String>)`, written out by hand.

    serde_json escapes `"` and `\\`, writes \\b \\f \\n \\r \\t short, every other
    control character below 0x20 as \\u00XX with lowercase hex, and keeps
    everything else (DEL and non-ASCII included) as is.
    """
    short = {
        '"': '\\"',
        "\\": "\\\\",
        "\b": "\\b",
        "\f": "\\f",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
    }
    parts = []
    for path in paths:
        out = []
        for ch in path:
            if ch in short:
                out.append(short[ch])
            elif ord(ch) < 0x20:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        parts.append('"' + "".join(out) + '"')
    return "[" + ",".join(parts) + "]"


# --------------------------------------------------------------------------
# tool_span_index.rs
# --------------------------------------------------------------------------


@dataclass
class SpanBuilder:
    span_id: str = ""
    session_id: str = ""
    tool: str | None = None
    tool_call_id: str | None = None
    hook_start_ms: int | None = None
    hook_end_ms: int | None = None
    call_start_ms: int | None = None
    result_end_ms: int | None = None
    call_start_exact: bool = False
    result_end_exact: bool = False
    tokens_in: int | None = None
    tokens_out: int | None = None
    reasoning_tokens: int | None = None
    cost_usd_e6: int | None = None
    paths: set[str] = field(default_factory=set)  # BTreeSet: sorted on output
    has_call: bool = False
    has_end: bool = False
    parent_span_id: str | None = None
    depth: int = 0
    subtree_cost_usd_e6: int | None = None
    subtree_token_count: int | None = None


def wrap_i64(value: int) -> int:
    """An i64 addition in a Rust release build: wraps."""
    return (value - I64_MIN) % 2**64 + I64_MIN


def span_start(s: SpanBuilder) -> int | None:
    return s.hook_start_ms if s.hook_start_ms is not None else s.call_start_ms


def span_end(s: SpanBuilder) -> int | None:
    return s.hook_end_ms if s.hook_end_ms is not None else s.result_end_ms


def assign_parents(spans: list[SpanBuilder]) -> None:
    # Sort: start ASC, end DESC so outer spans appear before inner spans.
    # (Rust's sort_by is stable, as is list.sort; the input order is the dict's
    # creation order, see the module docstring.)
    def sort_key(s: SpanBuilder) -> tuple[int, int]:
        start = span_start(s)
        end = span_end(s)
        sa = start if start is not None else U64_MAX
        ea = end if end is not None else 0
        return (sa, -ea)

    spans.sort(key=sort_key)
    for i in range(len(spans)):
        s_start, s_end = span_start(spans[i]), span_end(spans[i])
        if s_start is None or s_end is None:
            continue
        best: tuple[int, int] | None = None
        for j, candidate in enumerate(spans[:i]):
            p_start, p_end = span_start(candidate), span_end(candidate)
            if p_start is None or p_end is None:
                continue
            if p_start <= s_start and s_end <= p_end:
                d = candidate.depth
                if best is None or d > best[1]:
                    best = (j, d)
        if best is not None:
            pi, pd = best
            pid = spans[pi].span_id
            spans[i].parent_span_id = pid
            spans[i].depth = pd + 1


def compute_subtree_costs(spans: list[SpanBuilder]) -> None:
    # Seed each span's subtree with its own cost/tokens.
    for s in spans:
        s.subtree_cost_usd_e6 = s.cost_usd_e6
        # u32 addition in the reference; Python ints here (DESIGN.md).
        s.subtree_token_count = (
            s.tokens_in + (s.tokens_out if s.tokens_out is not None else 0)
            if s.tokens_in is not None
            else None
        )
    # Build an index: span_id -> index in list.
    ids = [s.span_id for s in spans]
    # Bottom-up: iterate in reverse depth order (deepest first). Stable sort.
    order = sorted(range(len(spans)), key=lambda i: U32_MAX - spans[i].depth)
    for i in order:
        cost, tokens, pid = (
            spans[i].subtree_cost_usd_e6,
            spans[i].subtree_token_count,
            spans[i].parent_span_id,
        )
        if pid is None:
            continue
        if pid not in ids:
            continue
        pi = ids.index(pid)
        if cost is not None:
            base = spans[pi].subtree_cost_usd_e6
            spans[pi].subtree_cost_usd_e6 = wrap_i64((base if base is not None else 0) + cost)
        if tokens is not None:
            base = spans[pi].subtree_token_count
            # u32 addition in the reference; Python ints here (DESIGN.md).
            spans[pi].subtree_token_count = (base if base is not None else 0) + tokens


def final_span_records(events: list[Event]) -> list[SpanRecord]:
    spans = build_spans(events)
    assign_parents(spans)
    compute_subtree_costs(spans)
    return [from_builder(s) for s in spans]


def oracle_records(events: list[Event]) -> list[SpanRecord]:
    """The oracle's rows for one session's events, given in load order."""
    return final_span_records(events)


def build_spans(events: list[Event]) -> list[SpanBuilder]:
    spans: dict[str, SpanBuilder] = {}
    open_order: list[str] = []
    for event in events:
        if event.kind not in (EventKind.TOOL_CALL, EventKind.TOOL_RESULT, EventKind.HOOK):
            continue
        # The reference parses the payload when it loads the row (a String;
        # spanwatch's store layer hands over its checked UTF-8 bytes).
        text = event.payload
        payload = parse_payload(text if isinstance(text, str) else text.decode())
        if event.kind is EventKind.TOOL_CALL:
            handle_tool_call(event, payload, spans, open_order)
        elif event.kind is EventKind.TOOL_RESULT:
            handle_tool_result(event, payload, spans, open_order)
        elif event.kind is EventKind.HOOK:
            handle_hook(event, payload, spans, open_order)
    return list(spans.values())


def handle_tool_call(
    event: Event, payload: object, spans: dict[str, SpanBuilder], open_order: list[str]
) -> None:
    tool = event.tool
    existing = find_open_without_call(spans, open_order, tool) if tool is not None else None
    if event.tool_call_id is not None:
        span_id = event.tool_call_id
    elif existing is not None:
        span_id = existing
    else:
        span_id = synthetic_span_id(event)
    if span_id not in spans:
        spans[span_id] = SpanBuilder(
            span_id=span_id,
            session_id=event.session_id,
            tool=tool,
            tool_call_id=event.tool_call_id,
        )
    span = spans[span_id]
    span.tool = tool
    span.tool_call_id = event.tool_call_id
    span.call_start_ms = event.ts_ms
    span.call_start_exact = event.ts_exact
    span.tokens_in = pick_u32(span.tokens_in, event.tokens_in)
    span.tokens_out = pick_u32(span.tokens_out, event.tokens_out)
    span.reasoning_tokens = pick_u32(span.reasoning_tokens, event.reasoning_tokens)
    span.cost_usd_e6 = pick_i64(span.cost_usd_e6, event.cost_usd_e6)
    span.paths.update(paths_from_event_payload(payload))
    span.has_call = True
    if not any(id_ == span_id for id_ in open_order):
        open_order.append(span_id)


def handle_tool_result(
    event: Event, payload: object, spans: dict[str, SpanBuilder], open_order: list[str]
) -> None:
    span_id = match_span_id(event, spans, open_order)
    if span_id is None:
        return
    span = spans.get(span_id)
    if span is None:
        return
    span.result_end_ms = event.ts_ms
    span.result_end_exact = event.ts_exact
    span.tokens_in = pick_u32(span.tokens_in, event.tokens_in)
    span.tokens_out = pick_u32(span.tokens_out, event.tokens_out)
    span.reasoning_tokens = pick_u32(span.reasoning_tokens, event.reasoning_tokens)
    span.cost_usd_e6 = pick_i64(span.cost_usd_e6, event.cost_usd_e6)
    span.paths.update(paths_from_event_payload(payload))
    span.has_end = True


def handle_hook(
    event: Event, payload: object, spans: dict[str, SpanBuilder], open_order: list[str]
) -> None:
    kind = hook_kind(payload)
    if kind is None:
        return
    tool = hook_tool(payload)
    span_id: str | None = event.tool_call_id
    if span_id is None and tool is not None:
        span_id = find_open_same_tool(spans, open_order, tool)
    if span_id is None:
        span_id = synthetic_span_id(event)
    if span_id not in spans:
        spans[span_id] = SpanBuilder(
            span_id=span_id,
            session_id=event.session_id,
            tool=tool,
            tool_call_id=event.tool_call_id,
        )
    span = spans[span_id]
    span.tool = span.tool if span.tool is not None else tool
    span.tool_call_id = span.tool_call_id if span.tool_call_id is not None else event.tool_call_id
    span.paths.update(paths_from_event_payload(payload))
    if kind == "pre":
        span.hook_start_ms = event.ts_ms
    elif kind == "post":
        span.hook_end_ms = event.ts_ms
        span.has_end = True
    if not any(id_ == span_id for id_ in open_order):
        open_order.append(span_id)


def match_span_id(event: Event, spans: dict[str, SpanBuilder], open_order: list[str]) -> str | None:
    if event.tool_call_id is not None and event.tool_call_id in spans:
        return event.tool_call_id
    found = find_open_same_tool(spans, open_order, event.tool) if event.tool is not None else None
    if found is not None:
        return found
    return open_order[-1] if open_order else None


def find_open_without_call(
    spans: dict[str, SpanBuilder], open_order: list[str], tool: str
) -> str | None:
    for id_ in reversed(open_order):
        span = spans.get(id_)
        if span is not None and span.tool == tool and not span.has_call:
            return id_
    return None


def find_open_same_tool(
    spans: dict[str, SpanBuilder], open_order: list[str], tool: str
) -> str | None:
    for id_ in reversed(open_order):
        span = spans.get(id_)
        if span is not None and span.tool == tool and not span.has_end:
            return id_
    return None


def synthetic_span_id(event: Event) -> str:
    # `event.seq` is read from SQLite as i64 and cast to u64.
    return f"{event.session_id}:{event.seq % 2**64}:{event.ts_ms}"


def _get_str(payload: object, key: str) -> str | None:
    """`payload.get(key).and_then(|v| v.as_str())`."""
    if isinstance(payload, dict):
        value = payload.get(key)
        if isinstance(value, str):
            return value
    return None


def hook_kind(payload: object) -> str | None:
    raw = _get_str(payload, "event")
    if raw is None:
        raw = _get_str(payload, "hook_event_name")
    if raw is None:
        return None
    if raw in ("PreToolUse", "pre_tool_use"):
        return "pre"
    if raw in ("PostToolUse", "post_tool_use"):
        return "post"
    return None


def hook_tool(payload: object) -> str | None:
    for k in ("tool_name", "tool", "name"):
        value = _get_str(payload, k)
        if value is not None:
            return value
    return None


def pick_u32(current: int | None, next_: int | None) -> int | None:
    return next_ if next_ is not None else current


def pick_i64(current: int | None, next_: int | None) -> int | None:
    return next_ if next_ is not None else current


def from_builder(span: SpanBuilder) -> SpanRecord:
    lead: int | None = None
    if span.hook_start_ms is not None and span.hook_end_ms is not None:
        lead = max(span.hook_end_ms - span.hook_start_ms, 0)  # saturating_sub
    elif (
        span.call_start_exact
        and span.result_end_exact
        and span.call_start_ms is not None
        and span.result_end_ms is not None
    ):
        lead = max(span.result_end_ms - span.call_start_ms, 0)  # saturating_sub
    started = span_start(span)
    ended = span_end(span)
    status = "done" if started is not None and ended is not None else "orphaned"
    return SpanRecord(
        span_id=span.span_id,
        session_id=span.session_id,
        tool=span.tool,
        tool_call_id=span.tool_call_id,
        status=status,
        started_at_ms=started,
        ended_at_ms=ended,
        lead_time_ms=lead,
        tokens_in=span.tokens_in,
        tokens_out=span.tokens_out,
        reasoning_tokens=span.reasoning_tokens,
        cost_usd_e6=span.cost_usd_e6,
        paths=tuple(sorted(span.paths)),
        parent_span_id=span.parent_span_id,
        depth=span.depth,
        subtree_cost_usd_e6=span.subtree_cost_usd_e6,
        subtree_token_count=span.subtree_token_count,
    )
