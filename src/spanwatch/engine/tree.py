"""The span tree: parents by time containment, depths, and subtree rollups.

The reference sorts spans by (start ASC, end DESC) and, for each span, scans
every earlier span for the deepest one whose closed interval contains it; the
first in sorted order wins among equally deep ones. That is quadratic. Here the
scan is a query on a Fenwick tree over end times: every earlier span already
starts no later than the current one, so an earlier span contains it exactly
when it ends no earlier. The tree keeps, for each end time, the best
(depth, earliest position) key, and answers "best key among ends >= e" in
O(log n).

`SpanTree` keeps the result between updates. A span's parent depends only on
the spans sorted before it, so when spans change, only those sorted at or
after the earliest changed one are re-parented; the earlier ones, and the
Fenwick entries they would contribute, are taken as they are.

Exact ties of (start, end) are ordered by creation (the reference leaves them
to a hash map's iteration order); see DESIGN.md.

The tree's state per span (parent, depth, totals, children, the interval it
was placed by) is kept in the `SpanBuilder` itself, not in dicts by span id:
the daemon keeps a tree for every cached session, and those dicts were a
fifth of its memory. So a set of spans belongs to at most one `SpanTree`.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from typing import Final

from spanwatch.engine.builder import SpanBuilder
from spanwatch.engine.records import SpanRecord, make_record

_NO_START: Final = 2**64  # sorts after every real start, as u64::MAX does in the reference
_I64: Final = 2**64

SortKey = tuple[int, int, int]
_UNSEEN: Final = -1  # `seen_start_ms` of a span not placed yet: timestamps are never negative


def sort_key(span: SpanBuilder) -> SortKey:
    """The reference's order: start ASC, end DESC; then creation order."""
    return _key(span.start_ms, span.end_ms, span.order)


def _placed_key(span: SpanBuilder) -> SortKey:
    """`sort_key` as of when the tree last placed the span (what `ordered` is sorted by)."""
    return _key(span.seen_start_ms, span.seen_end_ms, span.order)


def _end_key(span: SpanBuilder) -> tuple[int, int]:
    """What `SpanTree._by_end` is sorted by: the placed end, then creation order."""
    end = span.seen_end_ms
    return (-1 if end is None else end, span.order)  # complete spans only: never -1


def _is_complete(span: SpanBuilder) -> bool:
    """Placed with a start and an end: the only spans that can be or have a parent."""
    return (
        span.seen_start_ms != _UNSEEN
        and span.seen_start_ms is not None
        and (span.seen_end_ms is not None)
    )


def _key(start: int | None, end: int | None, order: int) -> SortKey:
    return (_NO_START if start is None else start, 0 if end is None else -end, order)


class SpanTree:
    """All spans of a session in sorted order, with parents, depths and subtree totals."""

    def __init__(self) -> None:
        self.ordered: list[SpanBuilder] = []
        """Every span placed so far, sorted by the interval it was placed by."""
        self._spans: Mapping[str, SpanBuilder] = {}
        self._by_end: list[SpanBuilder] = []
        """The complete placed spans by end (`_end_key`): the candidate parents of
        a re-parented suffix are those ending late enough, found without a scan
        of every earlier span (8 bytes a span)."""
        self._resort_from: SortKey | None = None
        self._resum: set[str] = set()
        """Left by `forget`: where to re-parent from, and whose totals to sum again."""

    def update(self, spans: Mapping[str, SpanBuilder], touched: Iterable[str]) -> set[str]:
        """Bring the tree up to date after the `touched` spans changed or appeared.

        `spans` is every span of the session by id, in creation order (new ones
        come last). Returns the ids whose record may have changed: the touched
        and new spans, and every span whose parent, depth or totals moved.
        """
        self._spans = spans
        changed = set(touched)
        new_spans: list[SpanBuilder] = []
        placed = len(self.ordered)
        if len(spans) != placed:
            new_spans = list(islice(spans.values(), placed, None))
            changed.update(span.span_id for span in new_spans)
        moved_from, self._resort_from = self._resort_from, None
        replaced: list[SpanBuilder] = []
        for span_id in changed:
            span = spans[span_id]
            begins, ends = span.start_ms, span.end_ms
            # Compared as intervals, not sort keys: a missing end sorts like an
            # end at 0, but completing a span changes who can be its parent.
            if span.seen_start_ms == begins and span.seen_end_ms == ends:
                continue
            replaced.append(span)
            first = _key(begins, ends, span.order)
            if span.seen_start_ms != _UNSEEN:
                first = min(first, _placed_key(span))
            if moved_from is None or first < moved_from:
                moved_from = first
        moved: dict[str, SpanBuilder | None] = {}
        if moved_from is not None:
            # Spans sorted before `moved_from` kept their keys and their order;
            # only the rest (with the new spans) is sorted again.
            start = bisect_left(self.ordered, moved_from, key=_placed_key)
            by_end = self._by_end
            for span in replaced:
                if _is_complete(span):
                    del by_end[bisect_left(by_end, _end_key(span), key=_end_key)]
                span.seen_start_ms, span.seen_end_ms = span.start_ms, span.end_ms
                if _is_complete(span):
                    insort(by_end, span, key=_end_key)
            suffix = self.ordered[start:] + new_spans
            suffix.sort(key=_placed_key)
            self.ordered[start:] = suffix
            moved = self._assign_parents(start)
            changed |= moved.keys()
        resum = {span_id for span_id in self._resum if span_id in spans}
        self._resum = set()
        changed |= self._roll_up(changed | resum, moved)
        return changed

    def forget(self, removed: Iterable[SpanBuilder]) -> None:
        """Drop spans that no longer exist: a rewind undid the events that opened them.

        The next `update` re-parents every span sorted after them and sums
        their parents' subtrees again. Spans of the same ids made again since
        are new spans to it.
        """
        ordered, by_end = self.ordered, self._by_end
        for span in removed:
            if span.seen_start_ms == _UNSEEN:
                continue  # never placed
            key = _placed_key(span)
            del ordered[bisect_left(ordered, key, key=_placed_key)]
            if _is_complete(span):
                del by_end[bisect_left(by_end, _end_key(span), key=_end_key)]
            parent = span.parent
            if parent is not None:
                _set_parent(span, None, 0)
                self._resum.add(parent.span_id)
            for child in span.children or ():
                child.parent = None  # re-parented by the next update
            span.children = None
            if self._resort_from is None or key < self._resort_from:
                self._resort_from = key

    def retire(self, gone: set[SpanBuilder]) -> list[SpanBuilder]:
        """Drop the spans of `gone`; returns them in sorted order.

        Only for spans that no later change can reach, neither as a parent nor
        as a child (see `engine.retire`): the tree goes on as if they were not
        there. Their links are cut so that they are freed at once.
        """
        if not gone:
            return []
        assert self._resort_from is None and not self._resum, "update() first"
        retired = [span for span in self.ordered if span in gone]
        self.ordered = [span for span in self.ordered if span not in gone]
        self._by_end = [span for span in self._by_end if span not in gone]
        for span in retired:
            span.parent = None
            span.children = None
        return retired

    def records(
        self,
        span_ids: Iterable[str] | None = None,
        stored_id: Callable[[SpanBuilder], str] | None = None,
    ) -> list[SpanRecord]:
        """Records of the given spans (all, in sorted order, without `span_ids`).

        `stored_id` maps a span to the id it is stored under (a namespaced id
        when another session owns the raw one, see DESIGN.md); children point
        at it.
        """
        spans = self.ordered if span_ids is None else [self._spans[i] for i in span_ids]
        out = []
        for span in spans:
            parent = span.parent
            if parent is None:
                parent_id = None
            else:
                parent_id = parent.span_id if stored_id is None else stored_id(parent)
            out.append(
                make_record(
                    span,
                    span_id=span.span_id if stored_id is None else stored_id(span),
                    parent_span_id=parent_id,
                    depth=span.depth,
                    subtree_cost_usd_e6=span.subtree_cost_usd_e6,
                    subtree_token_count=span.subtree_token_count,
                )
            )
        return out

    def _assign_parents(self, start: int) -> dict[str, SpanBuilder | None]:
        """Re-parent the spans from sorted position `start` on.

        Returns the spans whose parent or depth changed, with their old parent.
        Every span is placed by its current interval by now, so the interval is
        read from `seen_start_ms` and `seen_end_ms`: plain attributes, where
        `start_ms` and `end_ms` are properties (the scan of the earlier spans
        below reads them for every span of the session).
        """
        ordered = self.ordered
        moved: dict[str, SpanBuilder | None] = {}
        if start >= len(ordered):
            return moved
        # Complete spans: the only ones that can be, or get, a parent.
        suffix = []
        for i in range(start, len(ordered)):
            span = ordered[i]
            s, e = span.seen_start_ms, span.seen_end_ms
            if s is not None and e is not None:
                suffix.append((i, span, s, e))
                continue
            if span.parent is not None or span.depth:
                moved.setdefault(span.span_id, span.parent)
                _set_parent(span, None, 0)
        if not suffix:
            return moved
        # An earlier span contains a later one exactly when it ends no earlier (it
        # already starts no later), so only earlier complete spans ending at or
        # after the earliest suffix end can be a parent here. (Not "after the
        # suffix's first start": a span whose call came after its result ends
        # before it starts, and the reference still nests it.)
        lowest_end = min(e for _, _, _, e in suffix)
        boundary = _placed_key(ordered[start])  # the first key of the suffix
        by_end = self._by_end
        active = [
            (bisect_left(ordered, key, 0, start, key=_placed_key), span, end)
            for span in by_end[bisect_left(by_end, (lowest_end, -1), key=_end_key) :]
            if (key := _placed_key(span)) < boundary and (end := span.seen_end_ms) is not None
        ]
        ends = sorted({e for _, _, e in active} | {e for _, _, _, e in suffix}, reverse=True)
        size = len(ends)
        rank_of = {end: rank + 1 for rank, end in enumerate(ends)}
        width = len(ordered) + 1
        best = [-1] * (size + 1)  # key = depth * width + (width - 1 - position); -1 is none

        def insert(position: int, end: int, depth: int) -> None:
            own_key = depth * width + (width - 1 - position)
            r = rank_of[end]
            while r <= size:
                if best[r] < own_key:
                    best[r] = own_key
                r += r & -r

        for position, span, end in active:
            insert(position, end, span.depth)
        for position, span, _start, end in suffix:
            found = -1
            r = rank_of[end]
            while r > 0:
                if best[r] > found:
                    found = best[r]
                r &= r - 1
            if found >= 0:
                parent: SpanBuilder | None = ordered[width - 1 - found % width]
                depth = found // width + 1
            else:
                parent, depth = None, 0
            if parent is not span.parent or depth != span.depth:
                moved.setdefault(span.span_id, span.parent)
                _set_parent(span, parent, depth)
            insert(position, end, depth)
        return moved

    def _roll_up(self, changed: set[str], moved: dict[str, SpanBuilder | None]) -> set[str]:
        """Subtree cost and tokens, as `compute_subtree_costs` sums them; the ids that changed.

        A span's own token count exists only when it has `tokens_in`. Only
        subtrees that can have changed are summed again: those of the changed
        and moved spans, of the parents they left, and of all their ancestors,
        deepest first, each from its own values and its children's totals.
        Token sums are exact integers (DESIGN.md); cost sums wrap to i64 as the
        reference's release build does.
        """
        spans = self._spans
        seeds = set(changed)
        seeds.update(old.span_id for old in moved.values() if old is not None)
        dirty: set[str] = set()
        for seed in seeds:
            span_id: str | None = seed
            while span_id is not None and span_id not in dirty:
                dirty.add(span_id)
                parent = spans[span_id].parent
                span_id = None if parent is None else parent.span_id
        totals_changed: set[str] = set()
        for span_id in sorted(dirty, key=lambda i: spans[i].depth, reverse=True):
            span = spans[span_id]
            cost = span.cost_usd_e6
            tokens = None if span.tokens_in is None else span.tokens_in + (span.tokens_out or 0)
            for child in span.children or ():
                if child.subtree_cost_usd_e6 is not None:
                    cost = (cost or 0) + child.subtree_cost_usd_e6
                if child.subtree_token_count is not None:
                    tokens = (tokens or 0) + child.subtree_token_count
            if cost is not None:
                cost = _wrap_i64(cost)
            if span.subtree_cost_usd_e6 != cost or span.subtree_token_count != tokens:
                span.subtree_cost_usd_e6 = cost
                span.subtree_token_count = tokens
                totals_changed.add(span_id)
        return totals_changed


def _set_parent(span: SpanBuilder, parent: SpanBuilder | None, depth: int) -> None:
    old = span.parent
    if old is not None and old.children is not None:
        old.children.remove(span)  # it is there: children lists follow `parent`
    if parent is not None:
        if parent.children is None:
            parent.children = [span]
        else:
            parent.children.append(span)
    span.parent, span.depth = parent, depth


def _wrap_i64(value: int) -> int:
    if -(2**63) <= value < 2**63:
        return value
    return (value + 2**63) % _I64 - 2**63
