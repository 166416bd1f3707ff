"""The simulated agent of `spanwatch demo`: a few whole sessions, written live.

`simulate.writer` is made for load: it spreads as many events as a rate asks
over a duration and cuts sessions wherever the count runs out. A demo wants the
opposite: a few complete sessions that each show what spanwatch has to deal
with, paced to finish within the demo's time. So `plan_sessions` picks, among
the simulator's seeded sessions, ones whose spans (built by the span engine,
as the daemon will build them) have:

- rows from all three writers (hooks, transcript tail, API proxy),
- a Task whose subagent runs tools inside it,
- tools running in parallel,
- a tool the user interrupted (a start and no end: an orphaned span),

and squeezes each session's own clock to fit. `write_live` then commits their
rows on the wall clock, one burst (a tool use's rows) per `BEGIN IMMEDIATE`
transaction, as hook processes do. It runs in a thread and stops when told to.
"""

from __future__ import annotations

import heapq
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanwatch.engine import Event, build_span_records
from spanwatch.engine.records import SpanRecord
from spanwatch.simulate.rows import HOOK_SOURCE, PROXY, TAIL, EventRow, row_event, values_getter
from spanwatch.simulate.schema import connect, create_events_table, insert_sql, insertable_columns
from spanwatch.simulate.sessions import (
    BURST_WINDOW_MS,
    Burst,
    session_id_for,
    stream_bursts,
    stream_session,
)

#: The seed the demo's sessions are drawn from: the same sessions every run.
DEMO_SEED = 4
#: Tool uses per session (subagents' included): a tree that fits a screen or two.
TOOL_USES = 16
#: Tool output size factor: real outputs are 10-100 KB; the demo's store stays small.
PAYLOAD_SCALE = 0.05
#: Each session starts this share of the writing window after the previous one.
STAGGER_SHARE = 0.12
#: Candidates tried per session before settling for the best one seen.
MAX_CANDIDATES = 200

WRITERS = "hooks, tail and proxy"
TASK = "Task with nested tools"
PARALLEL = "parallel calls"
INTERRUPTED = "interrupted tool"
FEATURES = frozenset({WRITERS, TASK, PARALLEL, INTERRUPTED})


@dataclass(frozen=True, slots=True)
class DemoSession:
    """One session to write: its rows in arrival order, times in ms from its own start."""

    session_id: str
    offset_ms: int
    """When the session starts, after the writing starts."""
    scale: float
    """How much faster than the agent's own pace the session runs."""
    rows: tuple[EventRow, ...]
    features: frozenset[str]

    @property
    def length_ms(self) -> int:
        return self.rows[-1].arrival_ms if self.rows else 0


def plan_sessions(
    count: int,
    window_ms: int,
    *,
    seed: int = DEMO_SEED,
    tool_uses: int = TOOL_USES,
    taken: Iterable[str] = (),
) -> list[DemoSession]:
    """`count` sessions that together (the first alone) show every one of `FEATURES`.

    Their starts are staggered and each is squeezed to end within `window_ms`.
    Session ids in `taken` (already in the store) are skipped.
    """
    skip = set(taken)
    chosen: list[DemoSession] = []
    index = 0
    stagger = int(window_ms * STAGGER_SHARE)
    for slot in range(count):
        offset = slot * stagger
        wanted = FEATURES if slot == 0 else frozenset({WRITERS, TASK})
        best: DemoSession | None = None
        for _ in range(MAX_CANDIDATES):
            session_id = session_id_for(seed, index)
            index += 1
            if session_id in skip:
                continue
            candidate = _candidate(session_id, seed, tool_uses, offset, window_ms - offset)
            if wanted <= candidate.features:
                best = candidate
                break
            if best is None or len(candidate.features) > len(best.features):
                best = candidate
        assert best is not None
        chosen.append(best)
        skip.add(best.session_id)
    return chosen


def _candidate(
    session_id: str, seed: int, tool_uses: int, offset_ms: int, length_ms: int
) -> DemoSession:
    def rows(scale: float, render: bool) -> Iterator[EventRow]:
        return stream_session(
            session_id,
            seed=seed,
            tool_uses=tool_uses,
            payload_scale=PAYLOAD_SCALE,
            start_ms=0,
            time_scale=scale,
            render=render,
        )

    natural = max(row.arrival_ms for row in rows(1.0, render=False))
    scale = max(1, length_ms) / max(1, natural)
    planned = tuple(rows(scale, render=True))
    return DemoSession(session_id, offset_ms, scale, planned, session_features(planned))


def session_features(rows: Sequence[EventRow]) -> frozenset[str]:
    """Which of `FEATURES` the session's spans show, as the span engine builds them."""
    found: set[str] = set()
    if {HOOK_SOURCE, TAIL, PROXY} <= {row.source for row in rows}:
        found.add(WRITERS)
    records = build_span_records(sorted((row_event(row) for row in rows), key=_load_order))
    parents = {record.parent_span_id for record in records}
    if any(record.tool == "Task" and record.span_id in parents for record in records):
        found.add(TASK)
    if any(r.started_at_ms is not None and r.ended_at_ms is None for r in records):
        found.add(INTERRUPTED)
    if _overlapping_tools(records):
        found.add(PARALLEL)
    return frozenset(found)


def _overlapping_tools(records: Sequence[SpanRecord]) -> bool:
    """Two tools other than Task (which contains its subagent's tools) run at once."""
    intervals = sorted(
        (r.started_at_ms, r.ended_at_ms)
        for r in records
        if r.tool != "Task" and r.started_at_ms is not None and r.ended_at_ms is not None
    )
    latest_end = -1
    for start, end in intervals:
        if start < latest_end:
            return True
        latest_end = max(latest_end, end)
    return False


def _load_order(event: Event) -> tuple[int, int]:
    return (event.ts_ms, event.seq)


# -- the store -------------------------------------------------------------------------


def prepare_store(db: Path) -> list[str]:
    """Create the store (WAL, current `events` table) if needed; the session ids it holds."""
    conn = connect(db)
    try:
        create_events_table(conn)
        return [str(sid) for (sid,) in conn.execute("SELECT DISTINCT session_id FROM events")]
    finally:
        conn.close()


@dataclass(slots=True)
class AgentStats:
    """What `write_live` wrote; `error` is set if it stopped on one."""

    events: int = 0
    transactions: int = 0
    busy_retries: int = 0
    finished: set[str] = field(default_factory=set)
    """Sessions whose every row is written."""
    error: str | None = None


def write_live(
    db: Path,
    sessions: Sequence[DemoSession],
    *,
    stop: threading.Event,
    start_ms: int | None = None,
    stats: AgentStats | None = None,
) -> AgentStats:
    """Commit the sessions' bursts as they fall due, from `start_ms` (now) on the wall clock.

    Returns when every row is written or `stop` is set. Errors end the run and
    are put in `stats.error` rather than raised: this runs in a thread.
    """
    stats = stats if stats is not None else AgentStats()
    base = start_ms if start_ms is not None else time.time_ns() // 1_000_000
    conn = connect(db)
    try:
        columns = insertable_columns(conn)
        sql, values = insert_sql(columns), values_getter(columns)
        streams = [_wall_bursts(session, base) for session in sessions]
        queue: list[tuple[int, int, Burst]] = []
        for index, stream in enumerate(streams):
            first = next(stream, None)
            if first is not None:
                queue.append((first.due_ms, index, first))
        heapq.heapify(queue)
        while queue and not stop.is_set():
            due, index, burst = queue[0]
            wait_s = (due - time.time_ns() / 1_000_000) / 1000
            if wait_s > 0:
                stop.wait(min(wait_s, 0.1))
                continue
            heapq.heappop(queue)
            _commit(conn, sql, [values(row) for row in burst.rows], stats)
            stats.events += len(burst.rows)
            stats.transactions += 1
            following = next(streams[index], None)
            if following is None:
                stats.finished.add(sessions[index].session_id)
            else:
                heapq.heappush(queue, (following.due_ms, index, following))
    except (sqlite3.Error, OSError) as exc:
        stats.error = str(exc)
    finally:
        conn.close()
    return stats


def _wall_bursts(session: DemoSession, base_ms: int) -> Iterator[Burst]:
    shift = base_ms + session.offset_ms
    rows = (
        row._replace(ts_ms=row.ts_ms + shift, arrival_ms=row.arrival_ms + shift)
        for row in session.rows
    )
    return stream_bursts(rows, window_ms=max(1, int(BURST_WINDOW_MS * session.scale)))


def _commit(
    conn: sqlite3.Connection, sql: str, values: list[tuple[Any, ...]], stats: AgentStats
) -> None:
    """One burst in one BEGIN IMMEDIATE transaction, retried while another writer holds the lock."""
    delay = 0.01
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, values)
            conn.execute("COMMIT")
            return
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            stats.busy_retries += 1
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 1.0)
