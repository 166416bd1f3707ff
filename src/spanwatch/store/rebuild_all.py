"""`spanwatch rebuild`: every session of a store once, with worker processes.

Workers (`prepare`) read and build sessions while this process writes them
through one `Rebuilder`, in transactions of REBUILD_BATCH_ROWS rows. A store
without spans yet takes the fresh path (see `Rebuilder`, `fresh`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from spanwatch.store import marks
from spanwatch.store.checkpoints import background_checkpoints
from spanwatch.store.connection import open_store
from spanwatch.store.prepare import (
    CHUNK_SESSIONS,
    CHUNKS_AHEAD,
    prepare_session,
    prepared_sessions,
    start_workers,
)
from spanwatch.store.rebuild import Rebuilder, SessionResult, Tally
from spanwatch.store.schema import ensure_schema, indexes_deferred

#: SQLite page cache of a one-shot rebuild: 64 MiB (a negative size is in KiB).
REBUILD_CACHE_PRAGMA = "PRAGMA cache_size = -65536"

#: Rows written per transaction by a one-shot rebuild. Each commit writes every
#: page it dirtied, and new span ids land all over the primary-key index, so
#: few big transactions write less than many small ones; but the agents'
#: writers wait while one holds the write lock, so it stays at tens of
#: milliseconds (20,000 rows held it for a few hundred).
REBUILD_BATCH_ROWS = 5_000

#: Worker processes pay off from this many sessions on (they take ~0.3 s to start).
PARALLEL_MIN_SESSIONS = 32


@dataclass(slots=True)
class StoreSummary(Tally):
    """What a rebuild of many sessions did."""

    seconds: float = 0.0
    results: list[SessionResult] = field(default_factory=list)
    unreadable_rows: list[tuple[int, object]] = field(default_factory=list)
    """(id, seq) of rows whose session_id is not readable TEXT (counted in `skipped_rows`)."""


def _nothing_stored(conn: sqlite3.Connection) -> bool:
    """Whether the store has no spans, paths or watermarks (see `Rebuilder`, `fresh`)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM tool_spans) OR EXISTS (SELECT 1 FROM tool_span_paths) "
        "OR EXISTS (SELECT 1 FROM spanwatch_sessions)"
    ).fetchone()
    return not row[0]


def rebuild_store(
    db_path: str | Path,
    sessions: Iterable[str] | None = None,
    *,
    on_session: Callable[[SessionResult, int, int], None] | None = None,
    busy_timeout_ms: int = 5000,
    keep_results: bool = False,
    jobs: int = 1,
) -> StoreSummary:
    """Rebuild the named sessions, or every session (and drop spans of vanished ones).

    Sessions are rebuilt in order of first appearance, so when two sessions
    share a span id the older one keeps it. `on_session(result, done, total)`
    is called after each session. With `jobs` > 1, that many worker processes
    read and build sessions while this one writes (for many sessions only).
    """
    started = time.perf_counter()
    conn = open_store(Path(db_path), busy_timeout_ms=busy_timeout_ms)
    # Every session is many sessions: start the workers while they are listed.
    pool = start_workers(jobs) if jobs > 1 and sessions is None else None
    try:
        with background_checkpoints(conn, Path(db_path)):
            # Index pages of tool_spans stay cached for a one-shot rebuild that
            # writes rows all over them (SQLite's default keeps 2 MB).
            conn.execute(REBUILD_CACHE_PRAGMA)
            ensure_schema(conn)
            fresh = _nothing_stored(conn)
            todo, sizes, unreadable = _sessions_to_rebuild(conn, sessions, fresh=fresh)
            rebuilder = Rebuilder(conn, write_batch_rows=REBUILD_BATCH_ROWS, fresh=fresh)
            summary = StoreSummary(unreadable_rows=unreadable, skipped_rows=len(unreadable))
            # A first rebuild of the whole store builds the secondary indexes once, at the end.
            first = rebuilder.fresh and sessions is None
            with indexes_deferred(conn) if first else nullcontext():
                rebuilder.indexes_deferred = first
                results: Iterator[SessionResult]
                indexes_after = len(todo)  # sessions written before the deferred indexes
                if jobs > 1 and len(todo) >= PARALLEL_MIN_SESSIONS:
                    # Once the workers have the last chunks, this process mostly
                    # waits for them: it builds the indexes then, not after them.
                    indexes_after -= jobs * CHUNKS_AHEAD * CHUNK_SESSIONS
                    shape = rebuilder.shape
                    prepared = prepared_sessions(
                        Path(db_path), todo, shape=shape,
                        read_here=lambda session_id: prepare_session(conn, shape, session_id),
                        jobs=jobs, busy_timeout_ms=busy_timeout_ms, pool=pool, sizes=sizes,
                    )  # fmt: skip
                    pool = None
                    results = map(rebuilder.rebuild_prepared, prepared)
                else:
                    results = _serial_results(rebuilder, todo)
                for done, result in enumerate(results, start=1):
                    summary.add(result)
                    if keep_results:
                        summary.results.append(result)
                    if on_session is not None:
                        on_session(result, done, len(todo))
                    if done >= indexes_after:
                        rebuilder.restore_indexes()
                rebuilder.flush()
    finally:
        conn.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    summary.seconds = time.perf_counter() - started
    return summary


def _sessions_to_rebuild(
    conn: sqlite3.Connection, sessions: Iterable[str] | None, *, fresh: bool
) -> tuple[list[str], dict[str, int] | None, list[tuple[int, object]]]:
    """The sessions in the order to rebuild them, their sizes when all are
    listed, and the rows no session can be read from.

    All sessions are those of `events`, then those only stored spans or
    watermarks still name (vanished: their spans go). A `fresh` store stores
    none, so the scan for those is skipped.
    """
    if sessions is not None:
        return list(dict.fromkeys(sessions)), None, []
    sizes, unreadable = marks.listed_sessions(conn)
    todo = list(sizes)
    if not fresh:
        known = set(todo)
        todo += [s for s in marks.stale_sessions(conn) if s not in known]
    return todo, sizes, unreadable


def _serial_results(rebuilder: Rebuilder, todo: list[str]) -> Iterator[SessionResult]:
    """Each session rebuilt in this process, in order."""
    if rebuilder.fresh:
        shape = rebuilder.shape
        return (rebuilder.rebuild_prepared(prepare_session(rebuilder.conn, shape, s)) for s in todo)
    return map(rebuilder.rebuild, todo)
