"""Which dirty sessions are ready to rebuild: a quiet window plus a maximum delay.

Agents write a session in bursts (a tool use is four or five rows within
milliseconds). Rebuilding after every row would redo the same work many times,
so a session is rebuilt once it has been quiet for `debounce_ms`. A session
that never goes quiet would then never be rebuilt, so it is also rebuilt once
it has been dirty for `max_delay_ms` since its first unprocessed change.

`Debouncer` is pure bookkeeping: the caller passes the time (milliseconds on a
monotonic clock) into every call, which keeps it free of asyncio and lets tests
drive it with any sequence of times. Each call is O(log n) in the number of
dirty sessions (amortised), so a backlog of thousands costs little.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass


@dataclass(slots=True)
class _Dirty:
    first_ms: float  # first mark since the session was last taken
    last_ms: float  # latest mark
    order: int  # tie-breaker: marking order, unique per dirty period
    due_ms: float  # when it becomes due, given the current timing
    ready: bool = False  # already due, waiting to be taken (e.g. held back by a limit)


class Debouncer:
    """Tracks dirty sessions and hands them out when they are due.

    A session is due at `min(last mark + debounce_ms, first mark + max_delay_ms)`.
    Once due it stays due until taken, even if marked again meanwhile (a late
    poll, or a `limit` that held it back): its rebuild reads the store when it
    runs, so the later events are included anyway, and it is not pushed back
    behind sessions that became dirty after it.
    """

    def __init__(self, debounce_ms: float, max_delay_ms: float) -> None:
        _check_timing(debounce_ms, max_delay_ms)
        self.debounce_ms = debounce_ms
        self.max_delay_ms = max_delay_ms
        self._dirty: dict[str, _Dirty] = {}
        # Lazy heaps: entries go stale when a session is re-marked, taken or
        # discarded, and are skipped when they surface.
        self._waiting: list[tuple[float, int, str]] = []  # (due_ms, order, session)
        self._ready: list[tuple[float, int, str]] = []  # (first_ms, order, session)
        self._counter = itertools.count()

    def mark(self, session_id: str, now_ms: float) -> None:
        """Record that `session_id` changed (has unprocessed events) at `now_ms`."""
        dirty = self._dirty.get(session_id)
        if dirty is None:
            order = next(self._counter)
            dirty = _Dirty(now_ms, now_ms, order, self._due_ms(now_ms, now_ms))
            self._dirty[session_id] = dirty
            heapq.heappush(self._waiting, (dirty.due_ms, order, session_id))
            self._compact()
            return
        if dirty.ready or dirty.due_ms <= now_ms:
            return  # already due: its rebuild will read these events too
        dirty.last_ms = max(dirty.last_ms, now_ms)
        due_ms = self._due_ms(dirty.first_ms, dirty.last_ms)
        if due_ms != dirty.due_ms:
            dirty.due_ms = due_ms
            heapq.heappush(self._waiting, (due_ms, dirty.order, session_id))
            self._compact()

    def due(self, now_ms: float, limit: int | None = None) -> list[str]:
        """Take up to `limit` (default: all) sessions due at `now_ms`, oldest first.

        Oldest means dirty the longest (earliest first mark). The sessions
        returned are forgotten: mark them again if their rebuild fails.
        """
        self._promote(now_ms)
        taken: list[str] = []
        while self._ready and (limit is None or len(taken) < limit):
            _, order, session_id = heapq.heappop(self._ready)
            if self._is_ready(order, session_id):
                del self._dirty[session_id]
                taken.append(session_id)
        return taken

    def next_deadline_ms(self) -> float | None:
        """When `due` will next return something; None if nothing is dirty.

        May be in the past, when sessions are already due but were held back
        by a `limit`: the caller should then not sleep at all.
        """
        while self._ready:
            _, order, session_id = self._ready[0]
            if self._is_ready(order, session_id):
                return self._dirty[session_id].due_ms
            heapq.heappop(self._ready)
        while self._waiting:
            due_ms, order, session_id = self._waiting[0]
            if self._is_current(due_ms, order, session_id):
                return due_ms
            heapq.heappop(self._waiting)
        return None

    def pending(self) -> int:
        """How many sessions are dirty and not yet taken."""
        return len(self._dirty)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._dirty

    def discard(self, session_id: str) -> bool:
        """Forget `session_id` (e.g. it was deleted, or rebuilt by other means)."""
        found = self._dirty.pop(session_id, None) is not None
        self._compact()
        return found

    def update_timing(self, debounce_ms: float, max_delay_ms: float) -> None:
        """Apply new timing (a reload) to the sessions already waiting.

        Sessions already due stay due; the others get deadlines recomputed
        from their first and last marks.
        """
        _check_timing(debounce_ms, max_delay_ms)
        self.debounce_ms = debounce_ms
        self.max_delay_ms = max_delay_ms
        self._waiting = []
        for session_id, dirty in self._dirty.items():
            if not dirty.ready:
                dirty.due_ms = self._due_ms(dirty.first_ms, dirty.last_ms)
                self._waiting.append((dirty.due_ms, dirty.order, session_id))
        heapq.heapify(self._waiting)

    def _due_ms(self, first_ms: float, last_ms: float) -> float:
        return min(last_ms + self.debounce_ms, first_ms + self.max_delay_ms)

    def _promote(self, now_ms: float) -> None:
        """Move sessions whose deadline has passed from waiting to ready."""
        while self._waiting and self._waiting[0][0] <= now_ms:
            due_ms, order, session_id = heapq.heappop(self._waiting)
            if self._is_current(due_ms, order, session_id):
                dirty = self._dirty[session_id]
                dirty.ready = True
                heapq.heappush(self._ready, (dirty.first_ms, order, session_id))

    def _is_current(self, due_ms: float, order: int, session_id: str) -> bool:
        dirty = self._dirty.get(session_id)
        return (
            dirty is not None
            and dirty.order == order
            and not dirty.ready
            and dirty.due_ms == due_ms
        )

    def _is_ready(self, order: int, session_id: str) -> bool:
        dirty = self._dirty.get(session_id)
        return dirty is not None and dirty.order == order

    def _compact(self) -> None:
        """Drop stale entries once they outnumber live ones, so memory stays O(dirty)."""
        if len(self._waiting) + len(self._ready) <= 2 * len(self._dirty) + 64:
            return
        self._waiting = [entry for entry in self._waiting if self._is_current(*entry)]
        self._ready = [entry for entry in self._ready if self._is_ready(entry[1], entry[2])]
        heapq.heapify(self._waiting)
        heapq.heapify(self._ready)


def _check_timing(debounce_ms: float, max_delay_ms: float) -> None:
    if debounce_ms < 0:
        raise ValueError(f"debounce_ms must be >= 0, got {debounce_ms}")
    if max_delay_ms < debounce_ms:
        raise ValueError(f"max_delay_ms ({max_delay_ms}) must be >= debounce_ms ({debounce_ms})")
