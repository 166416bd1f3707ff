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
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice

from spanwatch.engine.builder import SpanBuilder
from spanwatch.engine.records import SpanRecord, make_record

_NO_START = 2**64  # sorts after every real start, as u64::MAX does in the reference
_I64 = 2**64

SortKey = tuple[int, int, int]
_UNSEEN = (-1, -1)  # no real interval: timestamps are never negative


@dataclass(slots=True)
class TreeNode:
    """A span's place in the tree and its subtree totals."""

    parent: SpanBuilder | None = None
    depth: int = 0
    subtree_cost_usd_e6: int | None = None
    subtree_token_count: int | None = None
    children: set[str] | None = None
    """Ids of the child spans; None for a leaf (most spans), which saves a set each."""


def sort_key(span: SpanBuilder) -> SortKey:
    """The reference's order: start ASC, end DESC; then creation order."""
    start = span.start_ms
    end = span.end_ms
    return (_NO_START if start is None else start, 0 if end is None else -end, span.order)


class SpanTree:
    """All spans of a session in sorted order, with parents, depths and subtree totals."""

    def __init__(self) -> None:
        self.ordered: list[SpanBuilder] = []
        self.nodes: dict[str, TreeNode] = {}
        self._spans: Mapping[str, SpanBuilder] = {}
        self._order_keys: list[SortKey] = []  # sort keys of `ordered`, as sorted
        self._keys: dict[str, SortKey] = {}
        self._bounds: dict[str, tuple[int | None, int | None]] = {}
        self._by_end: list[tuple[int, int, SpanBuilder]] = []
        """Complete spans by (end, creation order): the candidate parents of a
        re-parented suffix are those ending late enough, found without a scan."""
        self._resort_from: SortKey | None = None
        self._resum: set[str] = set()
        """Where spans were forgotten: re-parent from there, re-sum their parents."""

    def update(self, spans: Mapping[str, SpanBuilder], touched: Iterable[str]) -> set[str]:
        """Bring the tree up to date after the `touched` spans changed or appeared.

        `spans` is every span of the session by id, in creation order (new ones
        come last). Returns the ids whose record may have changed: the touched
        and new spans, and every span whose parent, depth or totals moved.
        """
        self._spans = spans
        changed = set(touched)
        nodes = self.nodes
        new_spans: list[SpanBuilder] = []
        if len(spans) != len(nodes):
            new_spans = list(islice(spans.values(), len(nodes), None))
            for span in new_spans:
                nodes[span.span_id] = TreeNode()
                changed.add(span.span_id)
        keys = self._keys
        moved_from, self._resort_from = self._resort_from, None
        bounds = self._bounds
        for span_id in changed:
            span = spans[span_id]
            interval = (span.start_ms, span.end_ms)
            old_interval = bounds.get(span_id, _UNSEEN)
            if old_interval == interval:
                continue
            # Compared as intervals, not sort keys: a missing end sorts like an
            # end at 0, but completing a span changes who can be its parent.
            bounds[span_id] = interval
            self._index_end(span, old_interval, interval)
            new = sort_key(span)
            old = keys.get(span_id)
            keys[span_id] = new
            first = new if old is None or new < old else old
            if moved_from is None or first < moved_from:
                moved_from = first
        moved: dict[str, SpanBuilder | None] = {}
        if moved_from is not None:
            # Spans sorted before `moved_from` kept their keys and their order;
            # only the rest (with the new spans) is sorted again.
            start = bisect_left(self._order_keys, moved_from)
            suffix = self.ordered[start:] + new_spans
            suffix.sort(key=lambda span: keys[span.span_id])
            self.ordered[start:] = suffix
            self._order_keys[start:] = [keys[span.span_id] for span in suffix]
            moved = self._assign_parents(start)
            changed |= moved.keys()
        resum = {span_id for span_id in self._resum if span_id in nodes}
        self._resum = set()
        changed |= self._roll_up(changed | resum, moved)
        return changed

    def forget(self, span_ids: Iterable[str]) -> None:
        """Drop spans that no longer exist: a rewind undid the events that opened them.

        The next `update` re-parents every span sorted after them and sums
        their parents' subtrees again. Spans of the same ids made again since
        are new spans to it.
        """
        nodes = self.nodes
        for span_id in span_ids:
            key = self._keys.pop(span_id)
            position = bisect_left(self._order_keys, key)
            del self.ordered[position]
            del self._order_keys[position]
            start, end = self._bounds.pop(span_id)
            if start is not None and end is not None:
                del self._by_end[bisect_left(self._by_end, (end, key[2]))]
            node = nodes.pop(span_id)
            if node.parent is not None:
                parent = nodes.get(node.parent.span_id)
                if parent is not None and parent.children is not None:
                    parent.children.discard(span_id)
                self._resum.add(node.parent.span_id)
            for child_id in node.children or ():
                child = nodes.get(child_id)
                if child is not None:
                    child.parent = None  # re-parented by the next update
            if self._resort_from is None or key < self._resort_from:
                self._resort_from = key

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
            node = self.nodes[span.span_id]
            parent = node.parent
            if parent is None:
                parent_id = None
            else:
                parent_id = parent.span_id if stored_id is None else stored_id(parent)
            out.append(
                make_record(
                    span,
                    span_id=span.span_id if stored_id is None else stored_id(span),
                    parent_span_id=parent_id,
                    depth=node.depth,
                    subtree_cost_usd_e6=node.subtree_cost_usd_e6,
                    subtree_token_count=node.subtree_token_count,
                )
            )
        return out

    def _index_end(
        self,
        span: SpanBuilder,
        old: tuple[int | None, int | None],
        new: tuple[int | None, int | None],
    ) -> None:
        """Move the span's entry in `_by_end` from its old interval to its new one."""
        by_end = self._by_end
        old_start, old_end = old
        if old is not _UNSEEN and old_start is not None and old_end is not None:
            del by_end[bisect_left(by_end, (old_end, span.order))]
        new_start, new_end = new
        if new_start is not None and new_end is not None:
            insort(by_end, (new_end, span.order, span))

    def _assign_parents(self, start: int) -> dict[str, SpanBuilder | None]:
        """Re-parent the spans from sorted position `start` on.

        Returns the spans whose parent or depth changed, with their old parent.
        """
        ordered = self.ordered
        nodes = self.nodes
        moved: dict[str, SpanBuilder | None] = {}
        if start >= len(ordered):
            return moved
        # Complete spans: the only ones that can be, or get, a parent.
        suffix = []
        for i in range(start, len(ordered)):
            span = ordered[i]
            s, e = span.start_ms, span.end_ms
            if s is not None and e is not None:
                suffix.append((i, span, s, e))
                continue
            node = nodes[span.span_id]
            if node.parent is not None or node.depth:
                moved.setdefault(span.span_id, node.parent)
                self._set_parent(span.span_id, node, None, 0)
        if not suffix:
            return moved
        # An earlier span contains a later one exactly when it ends no earlier (it
        # already starts no later), so only earlier complete spans ending at or
        # after the earliest suffix end can be a parent here. (Not "after the
        # suffix's first start": a span whose call came after its result ends
        # before it starts, and the reference still nests it.)
        lowest_end = min(e for _, _, _, e in suffix)
        order_keys = self._order_keys
        boundary = order_keys[start]  # the first key of the suffix
        keys = self._keys
        by_end = self._by_end
        active = [
            (bisect_left(order_keys, key, 0, start), span, e)
            for e, _, span in by_end[bisect_left(by_end, (lowest_end,)) :]
            if (key := keys[span.span_id]) < boundary
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
            insert(position, end, nodes[span.span_id].depth)
        for position, span, _start, end in suffix:
            found = -1
            r = rank_of[end]
            while r > 0:
                if best[r] > found:
                    found = best[r]
                r &= r - 1
            node = nodes[span.span_id]
            if found >= 0:
                parent: SpanBuilder | None = ordered[width - 1 - found % width]
                depth = found // width + 1
            else:
                parent, depth = None, 0
            if parent is not node.parent or depth != node.depth:
                moved.setdefault(span.span_id, node.parent)
                self._set_parent(span.span_id, node, parent, depth)
            insert(position, end, depth)
        return moved

    def _set_parent(
        self, span_id: str, node: TreeNode, parent: SpanBuilder | None, depth: int
    ) -> None:
        if node.parent is not None:
            siblings = self.nodes[node.parent.span_id].children
            if siblings is not None:
                siblings.discard(span_id)
        if parent is not None:
            parent_node = self.nodes[parent.span_id]
            if parent_node.children is None:
                parent_node.children = {span_id}
            else:
                parent_node.children.add(span_id)
        node.parent, node.depth = parent, depth

    def _roll_up(self, changed: set[str], moved: dict[str, SpanBuilder | None]) -> set[str]:
        """Subtree cost and tokens, as `compute_subtree_costs` sums them; the ids that changed.

        A span's own token count exists only when it has `tokens_in`. Only
        subtrees that can have changed are summed again: those of the changed
        and moved spans, of the parents they left, and of all their ancestors,
        deepest first, each from its own values and its children's totals.
        Token sums are exact integers (DESIGN.md); cost sums wrap to i64 as the
        reference's release build does.
        """
        nodes = self.nodes
        seeds = set(changed)
        seeds.update(old.span_id for old in moved.values() if old is not None)
        dirty: set[str] = set()
        for seed in seeds:
            span_id: str | None = seed
            while span_id is not None and span_id not in dirty:
                dirty.add(span_id)
                parent = nodes[span_id].parent
                span_id = None if parent is None else parent.span_id
        spans = self._spans
        totals_changed: set[str] = set()
        for span_id in sorted(dirty, key=lambda i: nodes[i].depth, reverse=True):
            span = spans[span_id]
            node = nodes[span_id]
            cost = span.cost_usd_e6
            tokens = None if span.tokens_in is None else span.tokens_in + (span.tokens_out or 0)
            for child_id in node.children or ():
                child = nodes[child_id]
                if child.subtree_cost_usd_e6 is not None:
                    cost = (cost or 0) + child.subtree_cost_usd_e6
                if child.subtree_token_count is not None:
                    tokens = (tokens or 0) + child.subtree_token_count
            if cost is not None:
                cost = _wrap_i64(cost)
            if node.subtree_cost_usd_e6 != cost or node.subtree_token_count != tokens:
                node.subtree_cost_usd_e6 = cost
                node.subtree_token_count = tokens
                totals_changed.add(span_id)
        return totals_changed


def _wrap_i64(value: int) -> int:
    if -(2**63) <= value < 2**63:
        return value
    return (value + 2**63) % _I64 - 2**63
