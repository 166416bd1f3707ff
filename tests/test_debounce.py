"""The debouncer: quiet windows, maximum delay, ordering and nothing lost.

The clock is an argument, so these tests drive it with exact integer times.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spanwatch.daemon.debounce import Debouncer

SESSIONS = st.sampled_from(["a", "b", "c", "d", "e"])
TIMING = st.tuples(st.integers(0, 300), st.integers(0, 1000)).map(
    lambda pair: (pair[0], pair[0] + pair[1])  # max_delay_ms >= debounce_ms
)
MARKS = st.lists(st.tuples(SESSIONS, st.integers(0, 400)), max_size=60)  # (session, gap)


@dataclass
class Period:
    """The marks of one session between two takes, as the test saw them."""

    marks: list[int] = field(default_factory=list)


def run_on_time(
    debouncer: Debouncer, marks: list[tuple[str, int]]
) -> list[tuple[str, int, list[int]]]:
    """Mark sessions at the given gaps; poll exactly at every deadline, before any mark then.

    Returns (session, time taken, marks of that dirty period) for every take.
    """
    taken: list[tuple[str, int, list[int]]] = []
    open_periods: dict[str, Period] = {}

    def poll_until(limit_ms: float) -> None:
        while (deadline := debouncer.next_deadline_ms()) is not None and deadline <= limit_ms:
            for session_id in debouncer.due(deadline):
                taken.append((session_id, int(deadline), open_periods.pop(session_id).marks))

    now = 0
    for session_id, gap in marks:
        now += gap
        poll_until(now)
        debouncer.mark(session_id, now)
        open_periods.setdefault(session_id, Period()).marks.append(now)
    poll_until(float("inf"))
    assert not open_periods
    return taken


@given(TIMING, MARKS)
def test_polled_on_time_every_session_is_taken_exactly_at_its_deadline(
    timing: tuple[int, int], marks: list[tuple[str, int]]
) -> None:
    debounce_ms, max_delay_ms = timing
    debouncer = Debouncer(debounce_ms, max_delay_ms)
    for _, taken_at, period in run_on_time(debouncer, marks):
        first, last = min(period), max(period)
        # Never later than max_delay after the first mark...
        assert taken_at - first <= max_delay_ms
        # ...and a session that went quiet is taken exactly debounce after its last mark.
        assert taken_at == min(last + debounce_ms, first + max_delay_ms)
        assert first <= last <= taken_at


@given(TIMING, MARKS)
def test_nothing_is_lost(timing: tuple[int, int], marks: list[tuple[str, int]]) -> None:
    debouncer = Debouncer(*timing)
    taken = run_on_time(debouncer, marks)
    assert debouncer.pending() == 0
    assert debouncer.next_deadline_ms() is None
    # Every mark belongs to exactly one take.
    assert sorted(t for _, _, period in taken for t in period) == sorted(_times_of(marks))
    assert {session for session, _, _ in taken} == {session for session, _ in marks}


def _times_of(marks: list[tuple[str, int]]) -> list[int]:
    now, times = 0, []
    for _, gap in marks:
        now += gap
        times.append(now)
    return times


class Model:
    """The specification, written plainly: O(n) per call, obviously right."""

    def __init__(self, debounce_ms: int, max_delay_ms: int) -> None:
        self.debounce_ms, self.max_delay_ms = debounce_ms, max_delay_ms
        self.dirty: dict[str, tuple[int, int, int]] = {}  # session -> (first, order, deadline)
        self.order = 0

    def mark(self, session_id: str, now: int) -> None:
        if session_id not in self.dirty:
            self.order += 1
            deadline = now + min(self.debounce_ms, self.max_delay_ms)
            self.dirty[session_id] = (now, self.order, deadline)
            return
        first, order, deadline = self.dirty[session_id]
        if now < deadline:  # not yet due: the quiet window restarts
            deadline = min(now + self.debounce_ms, first + self.max_delay_ms)
            self.dirty[session_id] = (first, order, deadline)

    def due(self, now: int, limit: int | None) -> list[str]:
        ready = sorted(
            (first, order, session_id)
            for session_id, (first, order, deadline) in self.dirty.items()
            if deadline <= now
        )
        chosen = [session_id for _, _, session_id in ready[:limit]]
        for session_id in chosen:
            del self.dirty[session_id]
        return chosen


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("mark"), SESSIONS, st.integers(0, 300)),
        st.tuples(st.just("due"), st.none() | st.integers(0, 3), st.integers(0, 600)),
        st.tuples(st.just("discard"), SESSIONS, st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=300)
@given(TIMING, OPERATIONS)
def test_matches_the_plain_model_under_late_polls_limits_and_discards(
    timing: tuple[int, int], operations: list[tuple[str, object, int]]
) -> None:
    debouncer, model = Debouncer(*timing), Model(*timing)
    now = 0
    for kind, argument, gap in operations:
        now += gap
        if kind == "mark":
            assert isinstance(argument, str)
            debouncer.mark(argument, now)
            model.mark(argument, now)
        elif kind == "due":
            assert argument is None or isinstance(argument, int)
            assert debouncer.due(now, argument) == model.due(now, argument)
        else:
            assert isinstance(argument, str)
            assert debouncer.discard(argument) == (argument in model.dirty)
            model.dirty.pop(argument, None)
        assert debouncer.pending() == len(model.dirty)
        expected_deadline = min((d for _, _, d in model.dirty.values()), default=None)
        deadline = debouncer.next_deadline_ms()
        if expected_deadline is None or expected_deadline > now:
            assert deadline == expected_deadline
        else:  # something is already due: any time not after now tells the caller to go
            assert deadline is not None and deadline <= now


def test_quiet_session_is_due_exactly_after_debounce() -> None:
    debouncer = Debouncer(250, 2000)
    debouncer.mark("s", 1000)
    debouncer.mark("s", 1100)
    assert debouncer.next_deadline_ms() == 1350
    assert debouncer.due(1349) == []
    assert debouncer.due(1350) == ["s"]
    assert debouncer.pending() == 0


def test_busy_session_is_due_after_max_delay() -> None:
    debouncer = Debouncer(250, 1000)
    taken_at = []
    for now in range(0, 2000, 100):  # an event every 100 ms, never quiet for 250
        if debouncer.due(now):
            taken_at.append(now)
        debouncer.mark("s", now)
    assert taken_at == [1000]
    # The second dirty period started at 1000 (the mark after the take).
    assert debouncer.next_deadline_ms() == 2000


def test_oldest_first_and_limit() -> None:
    debouncer = Debouncer(100, 100)
    for now, session_id in enumerate(["c", "a", "d", "b"]):
        debouncer.mark(session_id, now)
    assert debouncer.due(50) == []
    assert debouncer.due(500, limit=2) == ["c", "a"]
    debouncer.mark("e", 600)  # newer than the held-back ones
    assert debouncer.next_deadline_ms() is not None
    assert debouncer.next_deadline_ms() <= 500  # type: ignore[operator]
    assert debouncer.due(800, limit=2) == ["d", "b"]
    assert debouncer.due(800) == ["e"]


def test_oldest_means_dirty_longest_not_due_first() -> None:
    debouncer = Debouncer(100, 1000)
    debouncer.mark("busy", 0)
    debouncer.mark("busy", 90)
    debouncer.mark("busy", 180)  # due at 280
    debouncer.mark("quiet", 50)  # due at 150, but dirty for less time
    assert debouncer.due(300, limit=1) == ["busy"]
    assert debouncer.due(300, limit=1) == ["quiet"]


def test_a_due_session_marked_again_stays_due() -> None:
    debouncer = Debouncer(100, 1000)
    debouncer.mark("s", 0)
    debouncer.mark("s", 150)  # after its deadline (100), before anyone polled
    assert debouncer.due(150) == ["s"]


def test_discard_forgets_a_session() -> None:
    debouncer = Debouncer(100, 1000)
    debouncer.mark("gone", 0)
    debouncer.mark("kept", 50)
    assert debouncer.discard("gone")
    assert not debouncer.discard("gone")
    assert "gone" not in debouncer
    assert "kept" in debouncer
    assert debouncer.next_deadline_ms() == 150
    assert debouncer.due(1000) == ["kept"]


def test_update_timing_moves_waiting_deadlines() -> None:
    debouncer = Debouncer(1000, 5000)
    debouncer.mark("s", 0)
    debouncer.mark("t", 400)
    debouncer.update_timing(100, 200)
    assert debouncer.next_deadline_ms() == 100
    assert debouncer.due(100) == ["s"]
    assert debouncer.due(499) == []
    assert debouncer.due(500) == ["t"]
    assert (debouncer.debounce_ms, debouncer.max_delay_ms) == (100, 200)


def test_zero_debounce_is_due_at_once() -> None:
    debouncer = Debouncer(0, 0)
    debouncer.mark("s", 10)
    assert debouncer.due(10) == ["s"]


def test_memory_stays_proportional_to_dirty_sessions() -> None:
    debouncer = Debouncer(250, 10**9)
    for now in range(100_000):
        debouncer.mark(f"s{now % 10}", now)
    assert debouncer.pending() == 10
    internal = len(debouncer._waiting) + len(debouncer._ready)
    assert internal <= 2 * 10 + 64 + 1


@pytest.mark.parametrize(("debounce_ms", "max_delay_ms"), [(-1, 10), (100, 50)])
def test_invalid_timing_is_rejected(debounce_ms: int, max_delay_ms: int) -> None:
    with pytest.raises(ValueError, match="must be >="):
        Debouncer(debounce_ms, max_delay_ms)
    with pytest.raises(ValueError, match="must be >="):
        Debouncer(0, 0).update_timing(debounce_ms, max_delay_ms)
