"""Making a big store fast: whole sessions written in large transactions.

Benchmarks need stores of a million events and more, built in seconds. Writing
them the way live writers do (a transaction per burst) would take an hour, and
timing does not matter for a store that is built before anything watches it,
so `populate` streams sessions into `executemany` with few commits and
`synchronous=OFF`. The rows themselves are the same as a live writer's: the
same generator, the same seqs, the same arrival order within each session.
"""

from __future__ import annotations

import itertools
import math
import random
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spanwatch.simulate.rows import EventRow, values_getter
from spanwatch.simulate.schema import (
    connect,
    create_events_table,
    insert_sql,
    insertable_columns,
)
from spanwatch.simulate.sessions import DEFAULT_START_MS, session_id_for, stream_session

#: Rows per transaction while populating.
CHUNK_ROWS = 20_000
#: Ordinary sessions start this far apart on average (a busy developer machine).
SESSION_SPACING_MS = 20 * 60 * 1000
#: Rows an ordinary session makes per tool use, at least on average (hooks,
#: tail and proxy together make 5-6); used to size sessions to their quota.
ROWS_PER_TOOL_USE = 6.5


@dataclass(frozen=True, slots=True)
class PopulateStats:
    """What `populate` wrote."""

    events: int
    sessions: int
    big_session_id: str | None
    seconds: float
    db_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def populate(
    db_path: str | Path,
    sessions: int = 2_000,
    events_target: int = 1_000_000,
    seed: int = 0,
    *,
    big_session_events: int = 0,
    payload_scale: float = 0.25,
    task_depth: int = 2,
    big_task_depth: int = 3,
    version: str = "current",
    start_ms: int = DEFAULT_START_MS,
) -> PopulateStats:
    """Fill `db_path` with exactly `events_target` events and return what was written.

    `sessions` ordinary sessions share `events_target - big_session_events`
    events (sizes spread log-normally, like real ones: many short, a few long);
    with `big_session_events` one more session of that many events is added,
    with Tasks nested `big_task_depth` deep. `payload_scale` 1.0 gives real
    tool-output sizes (about 4 KB per event on average: 4 GB per million
    events); the default 0.25 makes a million-event store of about 1.6 GB. Creates the
    file and the `events` table of `version` as needed; the store is left in
    WAL mode, like the agents' stores. Deterministic for a seed.
    """
    if big_session_events > events_target:
        raise ValueError("big_session_events exceeds events_target")
    started = time.perf_counter()
    path = Path(db_path)
    conn = connect(path)
    try:
        create_events_table(conn, version)
        columns = insertable_columns(conn)
        _check_fresh(conn, [session_id_for(seed, i) for i in range(sessions + 1)])
        # No journal while bulk loading (a crash leaves a store to throw away,
        # which is fine for a benchmark store); WAL again afterwards. A store
        # that another program has open already (a daemon that waited for it)
        # cannot leave WAL mode, and stays in it.
        try:
            conn.execute("PRAGMA journal_mode = OFF")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -65536")
        rows = _all_rows(
            sessions,
            events_target - big_session_events,
            seed,
            big_session_events=big_session_events,
            payload_scale=payload_scale,
            task_depth=task_depth,
            big_task_depth=big_task_depth,
            start_ms=start_ms,
        )
        written = _insert(conn, columns, rows)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    finally:
        conn.close()
    big_id = session_id_for(seed, sessions) if big_session_events else None
    return PopulateStats(
        events=written,
        sessions=sessions + (1 if big_session_events else 0),
        big_session_id=big_id,
        seconds=round(time.perf_counter() - started, 3),
        db_bytes=path.stat().st_size,
    )


def _insert(conn: sqlite3.Connection, columns: tuple[str, ...], rows: Iterator[EventRow]) -> int:
    """Write `rows` in chunks; SQLite writes one chunk while Python makes the next.

    The sqlite3 module releases the GIL while SQLite runs, so a single writer
    thread overlaps the disk work with row generation in this one.
    """
    sql = insert_sql(columns)
    values = values_getter(columns)

    def write(chunk: list[tuple[Any, ...]]) -> int:
        conn.execute("BEGIN")
        conn.executemany(sql, chunk)
        conn.execute("COMMIT")
        return len(chunk)

    written = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="populate") as pool:
        pending: Future[int] | None = None
        while chunk := [values(row) for row in itertools.islice(rows, CHUNK_ROWS)]:
            if pending is not None:
                written += pending.result()
            pending = pool.submit(write, chunk)
        if pending is not None:
            written += pending.result()
    return written


def _check_fresh(conn: sqlite3.Connection, session_ids: list[str]) -> None:
    """Refuse to add sessions a store already has (the unique index would stop us midway)."""
    marks = ", ".join("?" for _ in session_ids)
    sql = f"SELECT session_id FROM events WHERE session_id IN ({marks}) LIMIT 1"
    found = conn.execute(sql, session_ids).fetchone()
    if found:
        raise ValueError(f"store already holds session {found[0]}: populate with another seed")


def session_quotas(sessions: int, events: int, seed: int) -> list[int]:
    """Split `events` over `sessions`, log-normally (many short sessions, some long)."""
    if sessions <= 0:
        if events:
            raise ValueError("events left for ordinary sessions but sessions=0")
        return []
    rng = random.Random(f"quotas:{seed}")
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(sessions)]
    total = math.fsum(weights)
    quotas = [int(events * w / total) for w in weights]
    quotas[-1] += events - sum(quotas)
    return quotas


def _all_rows(
    sessions: int,
    events: int,
    seed: int,
    *,
    big_session_events: int,
    payload_scale: float,
    task_depth: int,
    big_task_depth: int,
    start_ms: int,
) -> Iterator[EventRow]:
    """Every session's rows, session after session, `events` ordinary rows in total."""
    carry = 0
    quotas = session_quotas(sessions, events, seed)
    for index, quota in enumerate(quotas):
        want = quota + carry
        last = index == len(quotas) - 1
        # Size sessions to finish under quota (a finished session ends with its Stop
        # hook); the deficit moves on, and the last session is cut to the exact count.
        uses = want if last else max(1, int(want / ROWS_PER_TOOL_USE))
        rows = stream_session(
            session_id_for(seed, index),
            seed=seed,
            tool_uses=uses,
            task_depth=task_depth,
            payload_scale=payload_scale,
            start_ms=start_ms + index * SESSION_SPACING_MS,
        )
        made = 0
        for row in itertools.islice(rows, want):
            made += 1
            yield row
        carry = want - made
    if big_session_events:
        yield from itertools.islice(
            stream_session(
                session_id_for(seed, sessions),
                seed=seed,
                tool_uses=big_session_events,
                task_depth=big_task_depth,
                task_share=0.2,
                payload_scale=payload_scale,
                start_ms=start_ms,
            ),
            big_session_events,
        )
