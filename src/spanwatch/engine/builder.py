"""Span building: the reference's `build_spans`, fed one event at a time.

The reference keeps spans in a hash map and finds "the latest open span of a
tool" by scanning every span opened so far, which is quadratic in a long
session. Here each lookup has an index per tool, ordered by when the span was
opened, so a lookup only looks at the newest candidates. The answers are the
same: an index may hold stale entries (a span that got its call, its end, or
another tool since), and those are dropped when they reach the top.

`SpanBuilder` state can be fed further events later, which is what lets the
daemon extend a session without reading it again from the start. Rows do not
reach the store in load order (the transcript tail commits after the hooks, the
proxy later still), so a session may receive a row that sorts before events
already fed. With a journal (`journal_events`), the builder remembers how to
undo its last events: `rewind` takes it back to just before the late row, and
the caller feeds the undone events again with the new ones in their place,
instead of reading the whole session again.

A long session's spans are mostly long finished: `retire` lets go of those
that no event fed from now on can change (see `engine.retire`), keeping only a
hash of each id. An event that would still need one raises `RetiredSpanNeeded`,
and the caller reads the session again.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Any, Final

from spanwatch.engine.events import Event, EventKind, synthetic_span_id
from spanwatch.engine.payload import (
    Payload,
    hook_kind,
    hook_tool,
    may_be_tool_hook,
    payload_paths,
)


@dataclass(slots=True, eq=False, init=False)
class SpanBuilder:
    """A span being built: the reference's `SpanBuilder`, with its place in the tree.

    The tree fields (from `parent` on) belong to the one `SpanTree` that is
    kept over the session's spans; they live here rather than in the tree's
    own dicts because the daemon keeps these objects for every cached span,
    and each dict entry keyed by span id cost about 100 bytes a span.

    `__init__` is written out (it takes what opening a span knows): mypyc
    compiles it, where the dataclass's own is Python code generated at import
    (see `Event`).
    """

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
    paths: tuple[str, ...] | None = None
    """Sorted and distinct; None until the first path. A tuple, not a set: a set of
    one path costs 216 bytes, a tuple 48, and most spans have one or two."""
    has_call: bool = False
    has_end: bool = False
    # The tree fields, kept by `SpanTree`:
    parent: SpanBuilder | None = None
    depth: int = 0
    subtree_cost_usd_e6: int | None = None
    subtree_token_count: int | None = None
    children: list[SpanBuilder] | None = None
    """None for a leaf (most spans). A list, not a set: a span has a handful of
    children, a set of one costs 216 bytes and a list 64."""
    seen_start_ms: int | None = -1
    seen_end_ms: int | None = -1
    """The interval the tree last placed the span by (-1: not placed yet)."""

    def __init__(
        self,
        span_id: str,
        session_id: str,
        order: int,
        tool: str | None = None,
        tool_call_id: str | None = None,
        *,
        has_call: bool = False,
        has_end: bool = False,
    ) -> None:
        self.span_id = span_id
        self.session_id = session_id
        self.order = order
        self.tool = tool
        self.tool_call_id = tool_call_id
        self.hook_start_ms = None
        self.hook_end_ms = None
        self.call_start_ms = None
        self.result_end_ms = None
        self.call_start_exact = False
        self.result_end_exact = False
        self.tokens_in = None
        self.tokens_out = None
        self.reasoning_tokens = None
        self.cost_usd_e6 = None
        self.paths = None
        self.has_call = has_call
        self.has_end = has_end
        self.parent = None
        self.depth = 0
        self.subtree_cost_usd_e6 = None
        self.subtree_token_count = None
        self.children = None
        self.seen_start_ms = -1
        self.seen_end_ms = -1

    @property
    def start_ms(self) -> int | None:
        return self.hook_start_ms if self.hook_start_ms is not None else self.call_start_ms

    @property
    def end_ms(self) -> int | None:
        return self.hook_end_ms if self.hook_end_ms is not None else self.result_end_ms


class RetiredSpanNeeded(Exception):
    """An event matched a span that `SessionSpans.retire` let go of.

    Nothing is undone: the caller drops this engine state and feeds the
    session again from its first event.
    """


#: What `SessionSpans.by_order` holds in place of a retired span.
_RETIRED: Final = SpanBuilder(span_id="", session_id="", order=-1, has_call=True, has_end=True)


def _has_no_call(span: SpanBuilder) -> bool:
    return not span.has_call


def _has_no_end(span: SpanBuilder) -> bool:
    return not span.has_end


class _OpenIndex:
    """For each tool, the spans that may still match a lookup, by open order.

    A span matches while it has the tool and is `still_open` (has no call, or
    no end, depending on the index). Entries go stale when a span stops
    matching; `latest` pops stale entries off the top, so each entry is popped
    at most once per insertion. Each order is listed at most once per tool:
    membership is looked up in the sorted list itself (a set of (tool, order)
    beside it cost about 80 bytes a span, kept for as long as the daemon
    caches the session).
    """

    __slots__ = ("_orders", "hidden", "looked_up", "still_open")

    def __init__(self, still_open: Callable[[SpanBuilder], bool]) -> None:
        self._orders: defaultdict[str, list[int]] = defaultdict(list)
        self.still_open = still_open
        self.looked_up = False
        """Whether the session has looked a span up in this index (see `findable`)."""
        self.hidden: frozenset[str] | None = frozenset()
        """Tools of which a span from before the resume point may match (None: any
        tool), in an engine started by `SessionSpans.resume_after`."""

    def matches(self, span: SpanBuilder, tool: str) -> bool:
        return span.tool == tool and self.still_open(span)

    def add(self, tool: str, order: int) -> bool:
        """Add an entry; False if it was there already."""
        orders = self._orders[tool]
        if not orders or orders[-1] < order:
            orders.append(order)
            return True
        at = bisect_left(orders, order)
        if orders[at] == order:  # at < len(orders): orders[-1] >= order
            return False
        orders.insert(at, order)
        return True

    def pop_stale(self, tool: str) -> None:
        self._orders[tool].pop()

    def remove(self, tool: str, order: int) -> None:
        """Undo `add`."""
        orders = self._orders[tool]
        del orders[bisect_left(orders, order)]

    def push_back(self, tool: str, order: int) -> None:
        """Undo `pop_stale` (the entry was the tool's newest)."""
        self._orders[tool].append(order)

    def drop_stale(self, spans: Mapping[int, SpanBuilder]) -> None:
        """Remove the entries of `spans` (by order) that no longer match."""
        for tool, entries in self._orders.items():
            entries[:] = [o for o in entries if o not in spans or self.matches(spans[o], tool)]


#: The fields of a SpanBuilder that feeding changes.
_STATE_FIELDS: Final = (
    "tool", "tool_call_id", "hook_start_ms", "hook_end_ms", "call_start_ms", "result_end_ms",
    "call_start_exact", "result_end_exact", "tokens_in", "tokens_out", "reasoning_tokens",
    "cost_usd_e6", "paths", "has_call", "has_end",
)  # fmt: skip
_state_of: Final = attrgetter(*_STATE_FIELDS)
#: Where a saved state holds what `start_ms` and `end_ms` are made of.
_START_AT: Final = (_STATE_FIELDS.index("hook_start_ms"), _STATE_FIELDS.index("call_start_ms"))
_END_AT: Final = (_STATE_FIELDS.index("hook_end_ms"), _STATE_FIELDS.index("result_end_ms"))

#: One step of an event's undo: ("open", span) | ("state", span, fields) |
#: ("add" or "pop", index, tool, order).
_Step = tuple[Any, ...]
Position = tuple[int, int]
"""Where an event sorts in load order: (ts_ms, seq)."""


class SessionSpans:
    """All spans of one session, built from its events in load order.

    `journal_events`: how many of the latest events `rewind` can undo (0: no
    journal, as for a one-shot rebuild). Events that cannot touch a span
    whatever came before them (messages, costs, errors, hooks that are not
    tool hooks) are not journaled and need no undoing.
    """

    def __init__(self, journal_events: int = 0) -> None:
        self.spans: dict[str, SpanBuilder] = {}
        """Spans by id, in open order (the reference's `open_order`)."""
        self.by_order: list[SpanBuilder] = []
        self.touched: set[str] = set()
        """Ids of spans changed since the caller last cleared this set."""
        self._session_id: str | None = None
        self._strings: dict[str, str] = {}
        """Tool names and paths, one string object each: every event brings its own
        copy, and a session names the same few tools and files over and over."""
        self._without_call = _OpenIndex(_has_no_call)
        self._without_end = _OpenIndex(_has_no_end)
        self._indexes = (self._without_call, self._without_end)
        self._journal_events = journal_events
        self._journal: deque[tuple[Position, list[_Step]]] = deque()
        self._journal_floor: Position | None = None
        """The position of the newest event dropped from the journal."""
        self._undo: list[_Step] | None = None
        """The undo steps of the event being fed, when journaling."""
        self._retired = array("q")
        """`hash()` of each retired span's id, sorted (8 bytes a span)."""
        self.retired_count = 0
        self.hooks_not_json = 0
        """Hook events parsed as maybe tool hooks whose payload did not parse (as
        serde_json reads JSON) or is `null`. While it is 0, every such payload
        parsed, which orjson does only for UTF-8: the store layer leaves those
        payloads unchecked till then (`SessionRows.check_hook_payloads`)."""

    @property
    def span_count(self) -> int:
        """Spans of the session, retired ones included."""
        return len(self.spans) + self.retired_count

    def feed(self, event: Event) -> None:
        kind = event.kind
        if self._journal_events:
            if kind is EventKind.MESSAGE or kind is EventKind.ERROR or kind is EventKind.COST:
                return
            self._undo = []
        if kind is EventKind.TOOL_CALL:
            self._tool_call(event)
        elif kind is EventKind.TOOL_RESULT:
            self._tool_result(event)
        elif kind is EventKind.HOOK and not self._hook(event):
            self._undo = None  # not a tool hook: nothing to undo, whatever came before
        if self._undo is not None:
            self._journal.append(((event.ts_ms, event.seq), self._undo))
            self._undo = None
            if len(self._journal) > self._journal_events:
                self._journal_floor = self._journal.popleft()[0]

    def can_rewind(self, position: Position) -> bool:
        """Whether the journal holds every event fed so far that sorts after `position`."""
        return self._journal_events > 0 and (
            self._journal_floor is None or self._journal_floor < position
        )

    def journaled_after(self, position: Position) -> list[Position]:
        """Positions of the journaled events after `position`, in load order."""
        found = []
        for at, _ in reversed(self._journal):
            if at <= position:
                break
            found.append(at)
        found.reverse()
        return found

    def journal_reach(self) -> tuple[int | None, set[int], int | None]:
        """What a rewind can still reach, for `retire`'s caller.

        The timestamp of the newest event dropped from the journal (None: a
        rewind may go back to the first event), the orders of the spans (and
        index entries) the journal refers to, and the lowest start or end any
        span had in the states it saved (a rewind brings those back).
        """
        floor = None if self._journal_floor is None else self._journal_floor[0]
        orders: set[int] = set()
        lowest: int | None = None
        for _, steps in self._journal:
            for step in steps:
                what = step[0]
                if what == "open":
                    orders.add(step[1].order)
                elif what == "state":
                    orders.add(step[1].order)
                    saved = step[2]
                    for first, then in _START_AT, _END_AT:  # as `start_ms`, `end_ms`
                        at = saved[first] if saved[first] is not None else saved[then]
                        if at is not None and (lowest is None or at < lowest):
                            lowest = at
                else:
                    orders.add(step[3])
        return floor, orders, lowest

    def retire(self, spans: Iterable[SpanBuilder]) -> None:
        """Let go of spans that no event fed from now on can change.

        The caller has made sure of that (`engine.retire`); what is left of
        them is a hash of each id, so that an event naming one raises
        `RetiredSpanNeeded`, and the lookup-index entries of those still open
        to a lookup, for the same reason.
        """
        gone = {span.order: span for span in spans}
        if not gone:
            return
        for index in self._indexes:
            index.drop_stale(gone)
        for order, span in gone.items():
            del self.spans[span.span_id]
            self.by_order[order] = _RETIRED
        hashes = (hash(span.span_id) for span in gone.values())
        self._retired = array("q", sorted(chain(self._retired, hashes)))
        self.retired_count += len(gone)

    def resume_after(
        self,
        ids_before: Iterable[str],
        spans_before: int,
        floor: Position,
        open_tools_before: Iterable[str],
    ) -> None:
        """Start this fresh engine as if the events before a cut had been fed and retired.

        The caller (`store.resume`) knows the spans those events opened from
        their stored rows: `spans_before` of them, with ids among `ids_before`
        (more ids do no harm), all closed to what comes after the cut (see
        `engine.resume`), those without an end being of `open_tools_before`;
        `floor` sorts after every event before the cut. The events after it
        are then fed as usual. One that may need a span from before the cut
        raises `RetiredSpanNeeded` as a retired span's would: it names its
        id, falls back on the latest span when none was opened since, or looks
        up an open span, finds none opened since, and one from before may
        match: a span without an end of the same tool, or one without a call
        (which stored rows do not tell).
        """
        assert not self.by_order, "resume_after needs a fresh engine"
        self.by_order = [_RETIRED] * spans_before
        self._retired = array("q", sorted({hash(span_id) for span_id in ids_before}))
        self.retired_count = spans_before
        self._journal_floor = floor
        self._without_call.hidden = None
        self._without_end.hidden = frozenset(open_tools_before)

    def findable(self, span: SpanBuilder) -> bool:
        """Whether a lookup of a kind this session makes may still find `span`.

        Sessions whose every event names its tool call never look spans up,
        and one that does, does it again: a span it may find is not retired.
        """
        return span.tool is not None and any(
            index.looked_up and index.still_open(span) for index in self._indexes
        )

    def _check_not_retired(self, span_id: str) -> None:
        """Raise `RetiredSpanNeeded` if `span_id` may be a retired span's id."""
        if self.retired_count:
            retired, key = self._retired, hash(span_id)
            at = bisect_left(retired, key)
            if at < len(retired) and retired[at] == key:
                raise RetiredSpanNeeded(span_id)

    def rewind(self, position: Position) -> list[SpanBuilder]:
        """Undo every event fed after `position`, as if they had never been fed.

        Check `can_rewind` first. The caller then feeds those events again,
        with whatever sorts among them, in load order. Returns the spans
        removed (those the undone events opened: a tree over them must
        `forget` them); the spans changed back are added to `touched`.
        """
        journal = self._journal
        removed: list[SpanBuilder] = []
        while journal and journal[-1][0] > position:
            for step in reversed(journal.pop()[1]):
                what = step[0]
                if what == "state":
                    span = step[1]
                    for name, value in zip(_STATE_FIELDS, step[2], strict=True):
                        setattr(span, name, value)
                    self.touched.add(span.span_id)
                elif what == "open":
                    span = self.by_order.pop()
                    del self.spans[span.span_id]
                    removed.append(span)
                elif what == "add":
                    step[1].remove(step[2], step[3])
                else:
                    step[1].push_back(step[2], step[3])
        self.touched.difference_update(span.span_id for span in removed)
        return removed

    def _save(self, span: SpanBuilder) -> None:
        """Journal the span's state before this event changes it."""
        if self._undo is not None:  # paths are a tuple: the state can be kept as it is
            self._undo.append(("state", span, _state_of(span)))

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
            self._check_not_retired(span_id)
            span = self._open(span_id, event, tool)
        else:
            self._save(span)
        span.tool = self._shared(tool)
        span.tool_call_id = _same_or(span.span_id, event.tool_call_id)
        span.call_start_ms = event.ts_ms
        span.call_start_exact = event.ts_exact
        self._take_usage(span, event)
        self._add_paths(span, payload_paths(event.payload))
        span.has_call = True
        self._index(span)
        self.touched.add(span_id)

    def _tool_result(self, event: Event) -> None:
        span = self._match(event)
        if span is None:
            return
        self._save(span)
        span.result_end_ms = event.ts_ms
        span.result_end_exact = event.ts_exact
        self._take_usage(span, event)
        self._add_paths(span, payload_paths(event.payload))
        span.has_end = True
        self.touched.add(span.span_id)

    def _hook(self, event: Event) -> bool:
        """False when the event is not a tool hook (whatever came before it)."""
        if not may_be_tool_hook(event.payload):
            return False
        # Parsed in any case, so the walk collects paths without first asking
        # the text whether it may name one (it finds none where it names none).
        payload = Payload(event.payload, names_path=True)
        if payload.value is None:
            self.hooks_not_json += 1
            return False
        kind = hook_kind(payload.value)
        if kind is None:
            return False
        tool = hook_tool(payload.value)
        span_id = event.tool_call_id
        if span_id is None:
            existing = self._find_open_same_tool(tool) if tool is not None else None
            span_id = existing.span_id if existing is not None else synthetic_span_id(event)
        span = self.spans.get(span_id)
        if span is None:
            self._check_not_retired(span_id)
            span = self._open(span_id, event, tool)
        else:
            self._save(span)
        if span.tool is None:
            span.tool = self._shared(tool)
        if span.tool_call_id is None:
            span.tool_call_id = _same_or(span.span_id, event.tool_call_id)
        self._add_paths(span, payload.paths())
        if kind == "pre":
            span.hook_start_ms = event.ts_ms
        else:
            span.hook_end_ms = event.ts_ms
            span.has_end = True
        self._index(span)
        self.touched.add(span_id)
        return True

    def _open(self, span_id: str, event: Event, tool: str | None) -> SpanBuilder:
        session_id = self._session_id
        if session_id != event.session_id:  # the first span (a session's events all agree)
            session_id = self._session_id = event.session_id
        span = SpanBuilder(
            span_id=span_id,
            session_id=session_id,
            order=len(self.by_order),
            tool=self._shared(tool),
            tool_call_id=_same_or(span_id, event.tool_call_id),
        )
        self.spans[span_id] = span
        self.by_order.append(span)
        if self._undo is not None:
            self._undo.append(("open", span))
        return span

    def _shared(self, text: str | None) -> str | None:
        """The session's one string object equal to `text`."""
        if text is None:
            return None
        return self._strings.setdefault(text, text)

    def _add_paths(self, span: SpanBuilder, found: list[str]) -> None:
        if not found:
            return
        paths = span.paths
        if paths is None:
            strings = self._strings
            span.paths = tuple(sorted({strings.setdefault(path, path) for path in found}))
            return
        merged = set(paths).union(found)
        if len(merged) != len(paths):
            strings = self._strings
            span.paths = tuple(sorted(strings.setdefault(path, path) for path in merged))

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
        tool = span.tool
        if tool is None:
            return
        undo = self._undo
        for index in self._indexes:
            if index.still_open(span) and index.add(tool, span.order) and undo is not None:
                undo.append(("add", index, tool, span.order))

    def _match(self, event: Event) -> SpanBuilder | None:
        """The reference's `match_span_id`: id, else open span of the tool, else last opened."""
        if event.tool_call_id is not None:
            span = self.spans.get(event.tool_call_id)
            if span is not None:
                return span
            self._check_not_retired(event.tool_call_id)
        if event.tool is not None:
            span = self._find_open_same_tool(event.tool)
            if span is not None:
                return span
        if not self.by_order:
            return None
        if self.by_order[-1] is _RETIRED:
            raise RetiredSpanNeeded("the latest span")
        return self.by_order[-1]

    def _find_open_without_call(self, tool: str) -> SpanBuilder | None:
        """Latest opened span of `tool` that has no ToolCall yet."""
        return self._latest(self._without_call, tool)

    def _find_open_same_tool(self, tool: str) -> SpanBuilder | None:
        """Latest opened span of `tool` that has not ended."""
        return self._latest(self._without_end, tool)

    def _latest(self, index: _OpenIndex, tool: str) -> SpanBuilder | None:
        """The newest span in `index` for `tool` that still matches, dropping stale ones."""
        index.looked_up = True
        orders = index._orders.get(tool)
        while orders:
            span = self.by_order[orders[-1]]
            if span is _RETIRED:  # `retire` kept only entries that still match
                raise RetiredSpanNeeded(f"the latest open span of {tool!r}")
            if index.matches(span, tool):
                return span
            index.pop_stale(tool)
            if self._undo is not None:
                self._undo.append(("pop", index, tool, span.order))
        if index.hidden is None or tool in index.hidden:
            raise RetiredSpanNeeded(f"an open span of {tool!r} from before the resume point")
        return None


def _same_or(known: str, value: str | None) -> str | None:
    """`value`, as the string object `known` when they are equal (it is kept once)."""
    return known if value == known else value
