"""Realistic agent sessions as `events` rows, in the order a store receives them.

`plan.Planner` decides what happens and when; this module turns its segments
into rows: it gives each row its `seq` and delivers rows in arrival order.

seq. Hooks and the proxy write `MAX(seq)+1` of the rows already in the store;
the transcript tail writes the transcript line index, which skips lines it does
not store (so seqs have gaps). The simulator allocates every seq in the order
the rows are *read* by their writer and steps over numbers already taken, where
a real tail writer would upsert; so seqs are unique per session. Now and then
the tail's commit is held up for a second or more (a busy lock, a slow disk)
while it keeps the line numbers it read: its rows then reach the store after
rows with higher seqs. Rows never arrive in `ts_ms` order: hooks commit at once,
the tail at its next poll, the proxy late.

Laziness. Rows are produced one segment at a time and payloads (tool output,
often 10-100 KB) are rendered only when a row is delivered, so a generator of
a 50,000-event session holds one step's plan, not the session's bytes.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from spanwatch.simulate.plan import Pending, Planner, new_session_id
from spanwatch.simulate.rows import TAIL, EventRow

#: Start of the session clock by default: a fixed instant, so runs are reproducible.
DEFAULT_START_MS = 1_750_000_000_000
#: Rows arriving within this window of a burst's first row commit together.
BURST_WINDOW_MS = 500
#: Share of transcript-tail rows whose commit is held up (see the module docstring).
TAIL_STALL_SHARE = 0.01

__all__ = [
    "DEFAULT_START_MS",
    "Burst",
    "generate_session",
    "natural_arrival_ms",
    "session_id_for",
    "stream_bursts",
    "stream_session",
]


@dataclass(frozen=True, slots=True)
class Burst:
    """Rows one writer transaction commits: one tool use's rows, or part of a slow one.

    `due_ms` is when the transaction should commit, on the rows' clock (the
    arrival of its last row).
    """

    due_ms: int
    rows: tuple[EventRow, ...]


def session_id_for(seed: int, index: int) -> str:
    """The id of the `index`-th session of a seeded batch (UUID4-shaped, stable)."""
    return new_session_id(random.Random(f"session-id:{seed}:{index}"))


def generate_session(
    session_id: str,
    *,
    seed: int = 0,
    tool_uses: int = 40,
    task_depth: int = 2,
    payload_scale: float = 1.0,
    task_share: float = 0.06,
    start_ms: int = DEFAULT_START_MS,
    time_scale: float = 1.0,
    seq_base: int = 0,
) -> list[EventRow]:
    """A whole session as rows, in arrival order. See `stream_session` for the knobs."""
    return list(
        stream_session(
            session_id,
            seed=seed,
            tool_uses=tool_uses,
            task_depth=task_depth,
            payload_scale=payload_scale,
            task_share=task_share,
            start_ms=start_ms,
            time_scale=time_scale,
            seq_base=seq_base,
        )
    )


def stream_session(
    session_id: str,
    *,
    seed: int = 0,
    tool_uses: int = 40,
    task_depth: int = 2,
    payload_scale: float = 1.0,
    task_share: float = 0.06,
    start_ms: int = DEFAULT_START_MS,
    time_scale: float = 1.0,
    seq_base: int = 0,
    render: bool = True,
) -> Iterator[EventRow]:
    """Yield a session's rows lazily, in the order they reach the store.

    `tool_uses` counts every tool use, subagents' included; `task_depth` is how
    deep Tasks may nest (0: no Task tool); `task_share` the chance that a tool
    use is a Task where nesting allows; `payload_scale` multiplies tool output
    sizes (1.0: real sizes; post-tool payloads often 10-100 KB). The session's
    clock starts at `start_ms` and runs `time_scale` times as fast as the agent's
    own (0.1: ten times faster), for `ts_ms` and `arrival_ms` alike. `seq_base`
    is the first seq (to continue a session already in a store). With
    `render=False` payloads are left empty (for measuring a session's timing).
    The same arguments always give the same rows.
    """
    rng = random.Random(f"{seed}:{session_id}")
    planner = Planner(
        session_id,
        rng,
        tool_uses=tool_uses,
        task_depth=task_depth,
        task_share=task_share,
        payload_scale=payload_scale,
    )
    stalls = random.Random(f"{seed}:{session_id}:stalls")

    def row(p: Pending, seq: int, arrival: int) -> EventRow:
        if time_scale == 1.0:
            ts, arrived = start_ms + p.ts_ms, start_ms + arrival
        else:
            ts, arrived = start_ms + int(p.ts_ms * time_scale), start_ms + int(arrival * time_scale)
        return EventRow(
            session_id,
            seq,
            ts,
            p.kind,
            p.source,
            p.render() if render else "",
            p.tool,
            p.tool_call_id,
            p.tokens_in,
            p.tokens_out,
            p.reasoning_tokens,
            p.cost_usd_e6,
            p.ts_exact,
            p.stop_reason,
            p.latency_ms,
            arrived,
            p.call_id,
            p.parent_call_id,
        )

    # Rows wait in `reading` until their writer reads them (seq allocation, in
    # read order), then in `arriving` until they are committed (delivery).
    reading: list[tuple[int, int, int, Pending]] = []
    arriving: list[tuple[int, int, Pending]] = []
    order = itertools.count()
    last_seq = seq_base - 1
    stall_until = -1

    def settle(bound: int) -> Iterator[EventRow]:
        """Deliver every row that arrives before `bound` (no later segment can precede it)."""
        nonlocal last_seq, stall_until
        while reading and reading[0][0] < bound:
            read_at, _, _, p = heapq.heappop(reading)
            last_seq += 1 + p.seq_gap
            arrival = read_at
            if p.source == TAIL:
                if read_at < stall_until:
                    arrival = stall_until
                elif stalls.random() < TAIL_STALL_SHARE:
                    stall_until = read_at + stalls.randrange(1_000, 4_000)
                    arrival = stall_until
            heapq.heappush(arriving, (arrival, last_seq, p))
        while arriving and arriving[0][0] < bound:
            arrival, seq, p = heapq.heappop(arriving)
            yield row(p, seq, arrival)

    for segment in planner.segments():
        yield from settle(segment.start_ms)
        for p in segment.rows:
            heapq.heappush(reading, (p.arrival_ms, p.ts_ms, next(order), p))
    yield from settle(2**62)


def stream_bursts(rows: Iterator[EventRow], *, window_ms: int = BURST_WINDOW_MS) -> Iterator[Burst]:
    """Group a session's rows (in arrival order) into writer transactions.

    A burst holds the rows arriving within `window_ms` of its first row, so a
    quick tool use (pre hook, call, result, post hook) commits as one
    transaction and a slow one as two; pauses separate bursts.
    """
    batch: list[EventRow] = []
    for event in rows:
        if batch and event.arrival_ms - batch[0].arrival_ms > window_ms:
            yield Burst(batch[-1].arrival_ms, tuple(batch))
            batch = []
        batch.append(event)
    if batch:
        yield Burst(batch[-1].arrival_ms, tuple(batch))


def natural_arrival_ms(
    session_id: str,
    *,
    events: int,
    seed: int = 0,
    tool_uses: int = 40,
    task_depth: int = 2,
    task_share: float = 0.06,
) -> tuple[int, int]:
    """(rows produced up to `events`, arrival of the last of them) on the agent's own clock.

    Lets a live writer stretch or squeeze a session so it spreads a given
    number of events over a given time. Cheap: payloads are not rendered.
    """
    count, last = 0, 0
    for event in itertools.islice(
        stream_session(
            session_id,
            seed=seed,
            tool_uses=tool_uses,
            task_depth=task_depth,
            task_share=task_share,
            start_ms=0,
            render=False,
        ),
        events,
    ):
        count, last = count + 1, event.arrival_ms
    return count, last
