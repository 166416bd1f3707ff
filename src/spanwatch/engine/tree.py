"""The span tree: parents by time containment, depths, and subtree rollups.

The reference sorts spans by (start ASC, end DESC) and, for each span, scans
every earlier span for the deepest one whose closed interval contains it; the
first in sorted order wins among equally deep ones. That is quadratic. Here the
scan is a query on a Fenwick tree over end times: every earlier span already
starts no later than the current one, so an earlier span contains it exactly
when it ends no earlier. The tree keeps, for each end time, the best
(depth, earliest position) key, and answers "best key among ends >= e" in
O(log n).

Exact ties of (start, end) are ordered by creation (the reference leaves them
to a hash map's iteration order); see DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spanwatch.engine.builder import SpanBuilder

_NO_START = 2**64  # sorts after every real start, as u64::MAX does in the reference
_I64 = 2**64


@dataclass(slots=True)
class TreeNode:
    """A span's place in the tree and its subtree totals."""

    parent: SpanBuilder | None = None
    depth: int = 0
    subtree_cost_usd_e6: int | None = None
    subtree_token_count: int | None = None


def sort_spans(spans: Sequence[SpanBuilder]) -> list[SpanBuilder]:
    """Spans in the reference's order: start ASC, end DESC, then creation order."""

    def key(span: SpanBuilder) -> tuple[int, int, int]:
        start = span.start_ms
        end = span.end_ms
        return (
            _NO_START if start is None else start,
            0 if end is None else -end,
            span.order,
        )

    return sorted(spans, key=key)


def assign_parents(ordered: Sequence[SpanBuilder]) -> dict[str, TreeNode]:
    """Parent and depth of every span; `ordered` comes from `sort_spans`."""
    nodes = {span.span_id: TreeNode() for span in ordered}
    complete = [
        (i, span, start, end)
        for i, span in enumerate(ordered)
        if (start := span.start_ms) is not None and (end := span.end_ms) is not None
    ]
    if not complete:
        return nodes
    # Fenwick tree over end times in descending rank, so "ends >= e" is a prefix.
    ends = sorted({end for _, _, _, end in complete}, reverse=True)
    size = len(ends)
    rank_of = {end: rank + 1 for rank, end in enumerate(ends)}
    width = len(ordered) + 1
    best = [-1] * (size + 1)  # key = depth * width + (width - 1 - position); -1 is none
    for position, span, _start, end in complete:
        rank = rank_of[end]
        found = -1
        r = rank
        while r > 0:
            if best[r] > found:
                found = best[r]
            r &= r - 1
        node = nodes[span.span_id]
        if found >= 0:
            parent_position = width - 1 - found % width
            node.parent = ordered[parent_position]
            node.depth = found // width + 1
        own_key = node.depth * width + (width - 1 - position)
        r = rank
        while r <= size:
            if best[r] < own_key:
                best[r] = own_key
            r += r & -r
    return nodes


def roll_up_subtrees(ordered: Sequence[SpanBuilder], nodes: dict[str, TreeNode]) -> None:
    """Each span's subtree cost and tokens, as `compute_subtree_costs` sums them.

    A span's own token count exists only when it has `tokens_in`. Children come
    after their parent in sorted order, so one reverse pass adds every finished
    subtree into its parent. Token sums are exact integers (DESIGN.md); cost
    sums wrap to i64 as the reference's release build does.
    """
    for span in ordered:
        node = nodes[span.span_id]
        node.subtree_cost_usd_e6 = span.cost_usd_e6
        tokens_in = span.tokens_in
        node.subtree_token_count = None if tokens_in is None else tokens_in + (span.tokens_out or 0)
    for span in reversed(ordered):
        node = nodes[span.span_id]
        if node.parent is None:
            continue
        parent = nodes[node.parent.span_id]
        cost = node.subtree_cost_usd_e6
        if cost is not None:
            parent.subtree_cost_usd_e6 = _wrap_i64((parent.subtree_cost_usd_e6 or 0) + cost)
        tokens = node.subtree_token_count
        if tokens is not None:
            parent.subtree_token_count = (parent.subtree_token_count or 0) + tokens


def _wrap_i64(value: int) -> int:
    if -(2**63) <= value < 2**63:
        return value
    return (value + 2**63) % _I64 - 2**63
