"""Span building: the reference's `build_spans`, fed one event at a time.

The reference keeps spans in a hash map and finds "the latest open span of a
tool" by scanning every span opened so far, which is quadratic in a long
session. Here each lookup has an index per tool, ordered by when the span was
opened, so a lookup only looks at the newest candidates. The answers are the
same: an index may hold stale entries (a span that got its call, its end, or
another tool since), and those are dropped when they reach the top.

`SpanBuilder` state can be fed further events later, which is what lets the
daemon extend a session without reading it again from the start.
"""

from __future__ import annotations

from bisect import insort
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from spanwatch.engine.events import Event, EventKind, synthetic_span_id
from spanwatch.engine.payload import (
    Payload,
    hook_kind,
    hook_tool,
    may_be_tool_hook,
    payload_paths,
)


@dataclass(slots=True, eq=False)
class SpanBuilder:
    """A span being built: the reference's `SpanBuilder`, minus the tree fields."""

    span_id: str
    session_id: str
    order: int
    """Position in the session's open order (creation order); ties break on it."""
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
    paths: set[str] | None = None
    """None until the first path: most spans have none, and an empty set costs 216 bytes."""
    has_call: bool = False
    has_end: bool = False

    @property
    def start_ms(self) -> int | None:
        return self.hook_start_ms if self.hook_start_ms is not None else self.call_start_ms

    @property
    def end_ms(self) -> int | None:
        return self.hook_end_ms if self.hook_end_ms is not None else self.result_end_ms


class _OpenIndex:
    """For each tool, the spans that may still match a lookup, by open order.

    Entries go stale when a span stops matching; `latest` pops stale entries
    off the top, so each entry is popped at most once per insertion.
    """

    __slots__ = ("_members", "_orders")

    def __init__(self) -> None:
        self._orders: defaultdict[str, list[int]] = defaultdict(list)
        self._members: set[tuple[str, int]] = set()

    def add(self, tool: str, order: int) -> None:
        if (tool, order) in self._members:
            return
        self._members.add((tool, order))
        orders = self._orders[tool]
        if not orders or orders[-1] < order:
            orders.append(order)
        else:
            insort(orders, order)

    def pop_stale(self, tool: str, order: int) -> None:
        self._orders[tool].pop()
        self._members.discard((tool, order))


class SessionSpans:
    """All spans of one session, built from its events in load order."""

    def __init__(self) -> None:
        self.spans: dict[str, SpanBuilder] = {}
        """Spans by id, in open order (the reference's `open_order`)."""
        self.by_order: list[SpanBuilder] = []
        self.touched: set[str] = set()
        """Ids of spans changed since the caller last cleared this set."""
        self._without_call = _OpenIndex()
        self._without_end = _OpenIndex()

    def feed(self, event: Event) -> None:
        kind = event.kind
        if kind is EventKind.TOOL_CALL:
            self._tool_call(event)
        elif kind is EventKind.TOOL_RESULT:
            self._tool_result(event)
        elif kind is EventKind.HOOK:
            self._hook(event)

    def feed_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.feed(event)

    # The three handlers follow the reference's handle_* functions line by line.

    def _tool_call(self, event: Event) -> None:
        tool = event.tool
        span_id = event.tool_call_id
        if span_id is None:
            existing = self._find_open_without_call(tool) if tool is not None else None
            span_id = existing.span_id if existing is not None else synthetic_span_id(event)
        span = self.spans.get(span_id)
        if span is None:
            span = self._open(span_id, event, tool)
        span.tool = tool
        span.tool_call_id = event.tool_call_id
        span.call_start_ms = event.ts_ms
        span.call_start_exact = event.ts_exact
        self._take_usage(span, event)
        _add_paths(span, payload_paths(event.payload))
        span.has_call = True
        self._index(span)
        self.touched.add(span_id)

    def _tool_result(self, event: Event) -> None:
        span = self._match(event)
        if span is None:
            return
        span.result_end_ms = event.ts_ms
        span.result_end_exact = event.ts_exact
        self._take_usage(span, event)
        _add_paths(span, payload_paths(event.payload))
        span.has_end = True
        self.touched.add(span.span_id)

    def _hook(self, event: Event) -> None:
        if not may_be_tool_hook(event.payload):
            return
        # Parsed in any case, so the walk collects paths without first asking
        # the text whether it may name one (it finds none where it names none).
        payload = Payload(event.payload, names_path=True, utf8=event.payload_utf8)
        kind = hook_kind(payload.value)
        if kind is None:
            return
        tool = hook_tool(payload.value)
        span_id = event.tool_call_id
        if span_id is None:
            existing = self._find_open_same_tool(tool) if tool is not None else None
            span_id = existing.span_id if existing is not None else synthetic_span_id(event)
        span = self.spans.get(span_id)
        if span is None:
            span = self._open(span_id, event, tool)
        if span.tool is None:
            span.tool = tool
        if span.tool_call_id is None:
            span.tool_call_id = event.tool_call_id
        _add_paths(span, payload.paths())
        if kind == "pre":
            span.hook_start_ms = event.ts_ms
        else:
            span.hook_end_ms = event.ts_ms
            span.has_end = True
        self._index(span)
        self.touched.add(span_id)

    def _open(self, span_id: str, event: Event, tool: str | None) -> SpanBuilder:
        span = SpanBuilder(
            span_id=span_id,
            session_id=event.session_id,
            order=len(self.by_order),
            tool=tool,
            tool_call_id=event.tool_call_id,
        )
        self.spans[span_id] = span
        self.by_order.append(span)
        return span

    @staticmethod
    def _take_usage(span: SpanBuilder, event: Event) -> None:
        """The last non-null token and cost values win (`pick_u32`, `pick_i64`)."""
        if event.tokens_in is not None:
            span.tokens_in = event.tokens_in
        if event.tokens_out is not None:
            span.tokens_out = event.tokens_out
        if event.reasoning_tokens is not None:
            span.reasoning_tokens = event.reasoning_tokens
        if event.cost_usd_e6 is not None:
            span.cost_usd_e6 = event.cost_usd_e6

    def _index(self, span: SpanBuilder) -> None:
        """Keep the lookup indexes complete: every matching span is in them."""
        if span.tool is None:
            return
        if not span.has_call:
            self._without_call.add(span.tool, span.order)
        if not span.has_end:
            self._without_end.add(span.tool, span.order)

    def _match(self, event: Event) -> SpanBuilder | None:
        """The reference's `match_span_id`: id, else open span of the tool, else last opened."""
        if event.tool_call_id is not None:
            span = self.spans.get(event.tool_call_id)
            if span is not None:
                return span
        if event.tool is not None:
            span = self._find_open_same_tool(event.tool)
            if span is not None:
                return span
        return self.by_order[-1] if self.by_order else None

    def _find_open_without_call(self, tool: str) -> SpanBuilder | None:
        """Latest opened span of `tool` that has no ToolCall yet."""
        return self._latest(self._without_call, tool, lambda span: not span.has_call)

    def _find_open_same_tool(self, tool: str) -> SpanBuilder | None:
        """Latest opened span of `tool` that has not ended."""
        return self._latest(self._without_end, tool, lambda span: not span.has_end)

    def _latest(
        self, index: _OpenIndex, tool: str, still_open: Callable[[SpanBuilder], bool]
    ) -> SpanBuilder | None:
        """The newest span in `index` for `tool` that still matches, dropping stale ones."""
        orders = index._orders.get(tool)
        while orders:
            span = self.by_order[orders[-1]]
            if span.tool == tool and still_open(span):
                return span
            index.pop_stale(tool, span.order)
        return None


def _add_paths(span: SpanBuilder, found: list[str]) -> None:
    if not found:
        return
    if span.paths is None:
        span.paths = set(found)
    else:
        span.paths.update(found)
