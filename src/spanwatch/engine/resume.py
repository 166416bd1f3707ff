"""Where a session's engine can start again without its early events: the resume point.

A daemon that starts, or has let a session's state go, would otherwise read
the whole session on its next change: seconds of CPU for a session of tens of
thousands of events, while every other session waits. Most of those events
made spans that are long finished and stored. If a timestamp T splits the
session's stored spans in two, every start and end of one part below T and
every one of the other at T or above, the two parts cannot contain one
another, and no span of the first part can be a parent, child or subtree
member of one of the second. An engine fed only the events at T or later
(`SessionSpans.resume_after`) then builds the second part exactly as a full
read would, as long as none of those events reaches back for a span of the
first part; the engine raises `RetiredSpanNeeded` when one might, and the
caller checks the spans it built against the stored ones (`store.resume`).

A stored span shows one start and one end: the hook's where there was one,
else the call's or the result's. The other events of the span are hidden, and
in real sessions the transcript's tool call comes before the pre-tool hook (by
milliseconds, or by minutes while a permission prompt waits), its result after
the post-tool hook. So T is put in a quiet stretch of the session, at least
`margin` from the times of the spans on either side. Where that is not far
enough, an event after T names a span from before it, the engine raises, and
the caller may try again with a point further back (a larger `keep`), or a
smaller margin where a session was written too fast to have quiet seconds.

This module picks T from the stored spans' times alone. It keeps at least
`keep` spans after T, so that what the next events are likely to touch (the
latest spans, what a rewind may undo) is in the engine, and it puts T before
every span still open among the latest `open_age` (a Task still running, say),
whose end is still to come and would otherwise need the full read after all.
"""

from __future__ import annotations

from collections.abc import Iterable

#: A stored span's times: (started_at_ms, ended_at_ms), either of them NULL.
SpanTimes = tuple[object, object]


def resume_point(
    spans: Iterable[SpanTimes], *, keep: int, open_age: int, margin: int
) -> tuple[int, int] | None:
    """(T, spans before T) for the latest T that splits the spans cleanly, or None.

    Every time of the spans before T is below T - margin, every one of those
    after T at T + margin or above.

    None when there is no such T with at least `keep` spans on each side, or
    a time is not an integer (rows another program damaged: read in full).
    """
    assert keep >= 1
    intervals: list[tuple[int, int, bool]] = []
    for started, ended in spans:
        times: list[int] = []
        for time in (started, ended):
            if isinstance(time, int):
                times.append(time)
            elif time is not None:
                return None
        if not times:
            return None
        intervals.append((min(times), max(times), ended is None))
    intervals.sort()
    count = len(intervals)
    last = count - keep
    for rank in range(max(0, count - open_age), count):
        if intervals[rank][2]:  # still open: T goes before it
            last = min(last, rank)
            break
    if last < keep:
        return None
    highest_before = [0] * (last + 1)  # highest time among intervals[:i]
    highest = -1
    for i in range(last):
        highest = max(highest, intervals[i][1])
        highest_before[i + 1] = highest
    for i in range(last, keep - 1, -1):
        cut = intervals[i][0] - margin
        if highest_before[i] < cut - margin:
            return cut, i
    return None
