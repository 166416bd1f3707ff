"""Retiring spans: letting go of those that nothing fed later can change.

The daemon keeps each cached session's engine state so that new events extend
it, but in a long session almost every span is long finished, and each costs
about 700 bytes for as long as the session stays cached. Retired spans leave
memory; their rows stay stored as they are. `SessionSpans.retire` keeps a hash
of each retired id, and an event that would still change a retired span (it
names its id, or a lookup finds it) raises `RetiredSpanNeeded`: the caller
then feeds the session again from the start. So retiring must pick spans that
no event is likely to reach, and whose rows nothing else can change.

Every event fed from now on sorts after the journal's floor (an older late
row means a full read anyway), so every start or end it sets is at least the
floor's timestamp. A span may be retired when it has no journaled step, is
not the latest opened span (which a result without id or tool falls back on),
and is not open to a lookup this session makes (the latest span of a tool
without a call, or without an end: `SessionSpans.findable`). Of those:

- an incomplete span has no parent and no children, and keeps none while
  nothing reaches it. One without a start (a post hook whose pre hook and
  call never came) is left alone. One without an end is mostly waiting for
  it (a Task runs for many tool uses), so it goes only once OPEN_SPAN_AGE
  spans opened after it: by then it is most likely an interrupted tool, and
  kept, it would keep every span after it (see below);
- the complete spans of the longest prefix P of the sorted spans (start
  ascending, nothing else in between) whose every start and end is below the
  floor, below every start and end of the complete or kept spans after P, and
  below every start and end the journal would restore: no span outside P, now
  or later, can contain one of them (it would have to start no later) or be
  contained by one (it would have to end no later), so the spans of P are
  parents and children only of each other.

Either way their rows can no longer change.
"""

from __future__ import annotations

from typing import Final

from spanwatch.engine.builder import SessionSpans, SpanBuilder
from spanwatch.engine.tree import SpanTree

#: Spans opened after an open span before it is taken for an interrupted tool
#: (about 2,000 events). A Task still running past that costs a full read
#: of the session when it ends.
OPEN_SPAN_AGE: Final = 500


def retire_spans(spans: SessionSpans, tree: SpanTree) -> list[SpanBuilder]:
    """Retire what can be retired (see the module docstring); returns those spans.

    Call it after `tree.update`, with the tree placed over every span.
    """
    floor, journaled, restorable = spans.journal_reach()
    if floor is None:
        return []  # a rewind may still go back to the first event
    limit = floor if restorable is None else min(floor, restorable)
    journaled.add(len(spans.by_order) - 1)  # a result may fall back on "the latest span"

    def may_go(span: SpanBuilder) -> bool:
        return span.order not in journaled and not spans.findable(span)

    ordered = tree.ordered
    opened_long_ago = len(spans.by_order) - OPEN_SPAN_AGE
    inert = {
        span
        for span in ordered
        if (
            span.seen_start_ms is None
            or (span.seen_end_ms is None and span.order < opened_long_ago)
        )
        and may_go(span)
    }
    # lowest[i]: the lowest start or end of what stays after position i, and the limit.
    lowest = [limit] * (len(ordered) + 1)
    for i in range(len(ordered) - 1, -1, -1):
        low = lowest[i + 1]
        span = ordered[i]
        if span not in inert:
            start, end = span.seen_start_ms, span.seen_end_ms
            if start is not None and start < low:
                low = start
            if end is not None and end < low:
                low = end
        lowest[i] = low
    count = 0
    highest = -1
    for i, span in enumerate(ordered):
        if span in inert:
            continue
        start, end = span.seen_start_ms, span.seen_end_ms
        if start is None or end is None or not may_go(span):
            break
        highest = max(highest, start, end)
        if highest >= limit:
            break
        if highest < lowest[i + 1]:
            count = i + 1
    gone = inert.union(ordered[:count])
    retired = tree.retire(gone)
    spans.retire(retired)
    return retired
