"""A live agent-store writer, run as its own process: `python -m spanwatch.simulate.writer`.

It stands in for an agent's hooks, transcript tail and API proxy: it appends
the rows of several simulated sessions to a WAL-mode store while they happen,
one burst (a quick tool use's rows, or half of a slow one) per `BEGIN
IMMEDIATE` transaction, with a busy timeout, as hook processes do. Each
session's own pacing (bursts, then pauses while the model thinks) is kept, but
its clock is stretched or squeezed so that all sessions together write about
`--rate` events per second for `--duration` seconds; `ts_ms` is wall-clock time.

It stops when its schedule is done (after `--duration` seconds), when it has
fallen so far behind that the schedule cannot end within 10% (at least 2 s)
of that, when the `--stop-file` appears, or on SIGTERM/SIGINT, and then prints one JSON line of
statistics (events written, commit latency p50/p99/max in ms, how far it fell
behind its schedule). `--commit-log` records every commit (wall-clock time,
session, seqs) for measuring how soon spans reflect events.

`--bulk EVENTS` instead fills the store at once (`populate`) and exits.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from spanwatch.simulate.bulk import PopulateStats, populate
from spanwatch.simulate.rows import values_getter
from spanwatch.simulate.schema import (
    connect,
    create_events_table,
    event_columns,
    insert_sql,
    insertable_columns,
)
from spanwatch.simulate.sessions import (
    BURST_WINDOW_MS,
    Burst,
    natural_arrival_ms,
    session_id_for,
    stream_bursts,
    stream_session,
)

__all__ = ["LiveConfig", "PopulateStats", "WriterStats", "main", "populate", "run_live"]

#: How long the writer sleeps at most before checking the stop conditions again.
POLL_S = 0.05
#: Rows of a session planned (without payloads) to measure its natural pace.
CALIBRATION_ROWS = 20_000
#: A writer that cannot keep up gives up this long after its schedule's end.
LATE_GRACE_S = 2.0
LATE_GRACE_SHARE = 0.1
#: Wall-clock spread of the sessions' starts, as a share of the duration.
START_SPREAD = 0.05


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """What `run_live` writes and how."""

    db: Path
    sessions: int = 10
    rate: float = 200.0
    duration_s: float = 60.0
    seed: int = 0
    payload_scale: float = 0.1
    task_depth: int = 2
    extend_existing: int = 0
    stop_file: Path | None = None
    commit_log: Path | None = None
    busy_timeout_ms: int = 5000
    version: str = "current"


@dataclass(slots=True)
class WriterStats:
    """The writer's closing report (one JSON line on stdout)."""

    events: int = 0
    transactions: int = 0
    sessions: int = 0
    elapsed_s: float = 0.0
    events_per_s: float = 0.0
    commit_ms: dict[str, float] = field(default_factory=dict)
    behind_ms_max: float = 0.0
    busy_retries: int = 0
    stopped_by: str = "done"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Plan:
    session_id: str
    seed: int
    seq_base: int
    events: int


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _plans(conn: sqlite3.Connection, config: LiveConfig) -> list[_Plan]:
    """Which sessions to write: the largest existing ones to extend, then new ones.

    A session already in the store (extended, or left by an earlier run with the
    same seed) continues after its highest seq, with new content.
    """
    per_session = max(1, math.ceil(config.rate * config.duration_s / max(1, config.sessions)))
    ids: list[str] = []
    if config.extend_existing:
        ids = [
            str(sid)
            for (sid,) in conn.execute(
                "SELECT session_id FROM events GROUP BY session_id ORDER BY COUNT(*) DESC LIMIT ?",
                (config.extend_existing,),
            )
        ]
    index = 0
    while len(ids) < config.sessions:
        candidate = session_id_for(config.seed, index)
        index += 1
        if candidate not in ids:
            ids.append(candidate)
    plans = []
    for sid in ids[: config.sessions]:
        (top,) = conn.execute("SELECT MAX(seq) FROM events WHERE session_id = ?", (sid,)).fetchone()
        seq_base = 0 if top is None else int(top) + 1
        plans.append(_Plan(sid, config.seed * 1_000_003 + seq_base, seq_base, per_session))
    return plans


def _time_scale(plan: _Plan, config: LiveConfig) -> float:
    """How much faster than the agent's own pace this session must run to fit the duration.

    The pace is measured on the session itself (on its first rows only for very
    long sessions, whose planning twice would delay the start).
    """
    duration_ms = config.duration_s * 1000 * (1 - START_SPREAD)
    sample, natural_ms = natural_arrival_ms(
        plan.session_id,
        events=min(plan.events, CALIBRATION_ROWS),
        seed=plan.seed,
        tool_uses=plan.events,
        task_depth=config.task_depth,
    )
    return duration_ms / max(1.0, natural_ms * plan.events / max(1, sample))


def _bursts(plan: _Plan, config: LiveConfig, start_ms: int, scale: float) -> Iterator[Burst]:
    """A session's bursts on the wall clock from `start_ms`, its clock run `scale` times."""
    rows = stream_session(
        plan.session_id,
        seed=plan.seed,
        tool_uses=plan.events,
        task_depth=config.task_depth,
        payload_scale=config.payload_scale,
        start_ms=start_ms,
        time_scale=scale,
        seq_base=plan.seq_base,
    )
    window = max(1, int(BURST_WINDOW_MS * scale))
    return stream_bursts(itertools.islice(rows, plan.events), window_ms=window)


class _Stop:
    """Why to stop: a signal, the stop file, or the deadline."""

    def __init__(self, stop_file: Path | None, deadline: float) -> None:
        self.stop_file = stop_file
        self.deadline = deadline
        self.signalled = False
        self._next_file_check = 0.0

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True

    def reason(self) -> str | None:
        now = time.monotonic()
        if self.signalled:
            return "signal"
        if now >= self.deadline:
            return "deadline"
        if self.stop_file is not None and now >= self._next_file_check:
            self._next_file_check = now + POLL_S
            if self.stop_file.exists():
                return "stop-file"
        return None


def _commit(
    conn: sqlite3.Connection, sql: str, values: list[tuple[Any, ...]], stats: WriterStats
) -> tuple[float, int]:
    """One burst in one BEGIN IMMEDIATE transaction; retried while the store stays busy.

    Returns (commit latency in ms, last rowid). The latency is from BEGIN to the
    end of COMMIT, including any wait for the write lock: what an agent's hook
    would feel.
    """
    started = time.perf_counter()
    delay = 0.01
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, values)
            (last_id,) = conn.execute("SELECT last_insert_rowid()").fetchone()
            conn.execute("COMMIT")
            return (time.perf_counter() - started) * 1000, int(last_id)
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            stats.busy_retries += 1
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 1.0)


def run_live(
    config: LiveConfig, out: TextIO | None = None, *, handle_signals: bool = False
) -> WriterStats:
    """Write sessions live into `config.db` (see the module docstring).

    With `handle_signals` (the command line), SIGTERM and SIGINT end the run
    cleanly: the burst in progress commits and the statistics are printed.
    """
    conn = connect(config.db, busy_timeout_ms=config.busy_timeout_ms)
    stats = WriterStats()
    log = config.commit_log.open("a", buffering=1) if config.commit_log else None
    try:
        if not event_columns(conn):
            create_events_table(conn, config.version)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        columns = insertable_columns(conn)
        sql, values = insert_sql(columns), values_getter(columns)
        plans = _plans(conn, config)
        stats.sessions = len(plans)
        scales = [_time_scale(plan, config) for plan in plans]
        spread = random.Random(f"spread:{config.seed}")
        spread_ms = int(config.duration_s * 1000 * START_SPREAD)
        start_ms = time.time_ns() // 1_000_000
        streams = [
            _bursts(plan, config, start_ms + spread.randrange(spread_ms + 1), scale)
            for plan, scale in zip(plans, scales, strict=True)
        ]
        queue: list[tuple[int, int, Burst]] = []
        for index, stream in enumerate(streams):
            first = next(stream, None)
            if first is not None:
                queue.append((first.due_ms, index, first))
        heapq.heapify(queue)
        grace_s = max(LATE_GRACE_S, config.duration_s * LATE_GRACE_SHARE)
        stop = _Stop(config.stop_file, time.monotonic() + config.duration_s + grace_s)
        if handle_signals:
            signal.signal(signal.SIGTERM, stop.on_signal)
            signal.signal(signal.SIGINT, stop.on_signal)
        latencies = _drive(
            conn,
            sql=sql,
            values=values,
            queue=queue,
            streams=streams,
            stop=stop,
            stats=stats,
            log=log,
        )
        stats.elapsed_s = round((time.time_ns() // 1_000_000 - start_ms) / 1000, 3)
    finally:
        conn.close()
        if log is not None:
            log.close()
    latencies.sort()
    stats.commit_ms = {
        "p50": round(percentile(latencies, 0.50), 3),
        "p99": round(percentile(latencies, 0.99), 3),
        "max": round(latencies[-1] if latencies else 0.0, 3),
    }
    stats.events_per_s = round(stats.events / max(stats.elapsed_s, 1e-9), 1)
    if out is not None:
        out.write(json.dumps(stats.as_dict()) + "\n")
        out.flush()
    return stats


def _drive(
    conn: sqlite3.Connection,
    *,
    sql: str,
    values: Any,
    queue: list[tuple[int, int, Burst]],
    streams: list[Iterator[Burst]],
    stop: _Stop,
    stats: WriterStats,
    log: TextIO | None,
) -> list[float]:
    """Commit bursts when due until the schedule ends or something says stop."""
    latencies: list[float] = []
    while queue:
        reason = stop.reason()
        if reason is not None:
            stats.stopped_by = reason
            break
        due, index, burst = queue[0]
        now_ms = time.time_ns() / 1_000_000
        if due > now_ms:
            time.sleep(min((due - now_ms) / 1000, POLL_S))
            continue
        heapq.heappop(queue)
        stats.behind_ms_max = max(stats.behind_ms_max, round(now_ms - due, 1))
        latency, last_id = _commit(conn, sql, [values(row) for row in burst.rows], stats)
        latencies.append(latency)
        stats.events += len(burst.rows)
        stats.transactions += 1
        if log is not None:
            record = {
                "t_ms": time.time_ns() // 1_000_000,
                "session_id": burst.rows[0].session_id,
                "seqs": [row.seq for row in burst.rows],
                "last_id": last_id,
                "commit_ms": round(latency, 3),
            }
            log.write(json.dumps(record) + "\n")
        following = next(streams[index], None)
        if following is not None:
            heapq.heappush(queue, (following.due_ms, index, following))
    return latencies


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spanwatch.simulate.writer",
        description="Append simulated agent sessions to a WAL-mode event store, live.",
        epilog="example: python -m spanwatch.simulate.writer --db /tmp/agent.db "
        "--sessions 20 --rate 500 --duration 30",
    )
    parser.add_argument("--db", type=Path, required=True, help="the store (created if missing)")
    parser.add_argument("--sessions", type=int, default=10, help="concurrent sessions")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second, all sessions")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to write for")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop-file", type=Path, help="stop as soon as this file exists")
    parser.add_argument("--commit-log", type=Path, help="append one JSON line per commit here")
    parser.add_argument(
        "--payload-scale", type=float, default=0.1, help="tool output size factor (1.0: real)"
    )
    parser.add_argument("--task-depth", type=int, default=2, help="how deep Tasks nest")
    parser.add_argument(
        "--extend-existing",
        type=int,
        default=0,
        metavar="K",
        help="make K of the sessions the store's largest existing ones, continued",
    )
    parser.add_argument("--busy-timeout-ms", type=int, default=5000)
    parser.add_argument("--store-version", default="current", help="v1, v2, v3 or current")
    parser.add_argument(
        "--bulk", type=int, metavar="EVENTS", help="populate EVENTS events at once, then exit"
    )
    parser.add_argument(
        "--big-session-events", type=int, default=0, help="with --bulk: one session this big"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.bulk is not None:
        result = populate(
            args.db,
            args.sessions,
            args.bulk,
            args.seed,
            big_session_events=args.big_session_events,
            payload_scale=args.payload_scale,
            task_depth=args.task_depth,
            version=args.store_version,
        )
        print(json.dumps(result.as_dict()))
        return 0
    config = LiveConfig(
        db=args.db,
        sessions=args.sessions,
        rate=args.rate,
        duration_s=args.duration,
        seed=args.seed,
        payload_scale=args.payload_scale,
        task_depth=args.task_depth,
        extend_existing=args.extend_existing,
        stop_file=args.stop_file,
        commit_log=args.commit_log,
        busy_timeout_ms=args.busy_timeout_ms,
        version=args.store_version,
    )
    run_live(config, out=sys.stdout, handle_signals=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
