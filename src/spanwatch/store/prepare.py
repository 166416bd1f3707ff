"""Reading and building sessions in worker processes, for a rebuild of many sessions.

Reading rows and parsing payloads is most of a rebuild's work and needs no
lock, while writing must happen in one process. So a rebuild of a whole store
hands sessions to worker processes, each with its own read-only connection
(through apsw: see `store.worker`), and takes their spans back in the order it
asked for them: writing stays in the calling process, in the same order as a
serial rebuild (which decides who keeps a span id two sessions share).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from spanwatch.engine import SessionSpans, SpanTree
from spanwatch.store import marks
from spanwatch.store.connection import read_snapshot
from spanwatch.store.events import SessionRows, SkippedRow, TokenOutOfRange, load_session_rows
from spanwatch.store.marks import SessionMark
from spanwatch.store.schema import EventsShape
from spanwatch.store.spans import BuiltRow, built_rows

#: Sessions handed to a worker at a time: enough to make each hand-over worth
#: its cost, few enough that the long sessions spread over the workers.
CHUNK_SESSIONS = 8
#: Chunks in flight per worker: keeps workers busy while a long session holds
#: up the in-order hand-back, and bounds the memory of results waiting for it.
CHUNKS_AHEAD = 4
#: How much nicer than the writing process the workers run (see `_init_worker`).
WORKER_NICENESS = 5
#: A chunk with at least this share of all rows is handed out first (longest
#: first): one taken last would keep one worker busy while the others idle.
LONG_CHUNK_SHARE = 0.01


@dataclass(slots=True)
class PreparedSession:
    """A session read in one snapshot and built from all its rows, not yet written."""

    session_id: str
    mark: SessionMark
    rows_read: int
    skipped: list[SkippedRow]
    token_notes: list[TokenOutOfRange]
    span_ids: list[str]
    """Raw span ids, in the order the spans were opened."""
    rows: list[BuiltRow]
    """Rows with raw span ids: the writer re-builds the rare session whose ids collide."""


def prepare_session(
    conn: sqlite3.Connection, shape: EventsShape, session_id: str
) -> PreparedSession:
    """Read all of a session's rows in one snapshot and build its spans.

    The session's watermark is what `marks.live_mark` would read in the same
    snapshot, taken from the rows themselves: SQL's max(seq) is the largest
    valid seq when every row is valid (else it is asked: a seq of another
    type orders as SQL orders types). Hook payloads are checked to be UTF-8
    by the engine's parse (see `SessionRows.check_hook_payloads`).
    """
    with read_snapshot(conn):
        rows = load_session_rows(conn, shape, session_id, hooks_checked_by_parse=True)
        mark = marks.live_mark(conn, session_id) if rows.skipped else whole_mark(session_id, rows)
    return built_session(session_id, mark, rows)


def whole_mark(session_id: str, rows: SessionRows) -> SessionMark:
    """The watermark of a session read whole, none of its rows skipped on reading."""
    max_seq = rows.max_seq if rows.row_count else None
    return SessionMark(session_id, max_seq, rows.row_count, rows.max_id)


def built_session(session_id: str, mark: SessionMark, rows: SessionRows) -> PreparedSession:
    """The session's spans, built from all its rows, read in one snapshot with `mark`."""
    spans = SessionSpans()
    spans.feed_all(rows.events)
    rows.check_hook_payloads(spans.hooks_not_json)
    tree = SpanTree()
    tree.update(spans.spans, ())
    return PreparedSession(
        session_id,
        mark,
        rows.row_count,
        rows.skipped,
        rows.token_notes,
        list(spans.spans),
        built_rows(tree),
    )


def start_workers(jobs: int) -> ProcessPoolExecutor:
    """A pool of `jobs` worker processes, started now (each takes ~0.3 s to import
    spanwatch: the caller lists the sessions meanwhile). Shut it down when done."""
    # spawn, not fork: the caller may hold SQLite connections and threads.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker)
    for _ in range(jobs):
        pool.submit(_started)
    return pool


def prepared_sessions(
    db_path: Path,
    session_ids: Sequence[str],
    *,
    shape: EventsShape,
    read_here: Callable[[str], PreparedSession],
    jobs: int,
    busy_timeout_ms: int = 5000,
    pool: ProcessPoolExecutor | None = None,
    sizes: Mapping[str, int] | None = None,
) -> Iterator[PreparedSession]:
    """`prepare_session` of each session by `jobs` worker processes, yielded in the given order.

    `read_here(session_id)`: `prepare_session` in this process, for the
    sessions a worker leaves to it (see `store.worker`). `pool`: from
    `start_workers(jobs)`, shut down here at the end. `sizes`: rows per
    session, if known; chunks of long sessions are then handed out first.
    """
    chunks = [
        list(session_ids[start : start + CHUNK_SESSIONS])
        for start in range(0, len(session_ids), CHUNK_SESSIONS)
    ]
    handout = deque(_handout_order(chunks, sizes or {}))
    if pool is None:
        pool = start_workers(jobs)
    try:
        futures: dict[int, Future[list[PreparedSession | str]]] = {}

        def submit(index: int) -> None:
            futures[index] = pool.submit(
                _prepare_chunk, str(db_path), busy_timeout_ms, shape, chunks[index]
            )

        for index in range(len(chunks)):
            while handout and len(futures) < jobs * CHUNKS_AHEAD:
                submit(handout.popleft())
            if index not in futures:  # long chunks filled the window
                handout.remove(index)
                submit(index)
            for prepared in futures.pop(index).result():
                yield read_here(prepared) if isinstance(prepared, str) else prepared
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _handout_order(chunks: list[list[str]], sizes: Mapping[str, int]) -> list[int]:
    """Chunk indexes in the order to hand them out: long ones first, then in order."""
    rows = [sum(sizes.get(session_id, 0) for session_id in chunk) for chunk in chunks]
    long_from = LONG_CHUNK_SHARE * sum(rows)
    long = sorted((i for i, n in enumerate(rows) if n and n >= long_from), key=lambda i: -rows[i])
    first = set(long)
    return long + [i for i in range(len(chunks)) if i not in first]


def _init_worker() -> None:
    """Ctrl-C reaches the whole process group; the parent alone decides what it means.

    Workers also give way to the writing process: it holds the store's write
    lock while it runs, and the agents' writers wait for that lock. With as
    many workers as cores, the writer had a fair share of a core, fell behind,
    held the lock longer (40 commits of the benchmark store: 5.5-6.3 s in all,
    3.5-3.9 s with nicer workers) and wrote a backlog at the end while the
    workers had nothing left to do.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(WORKER_NICENESS)


def _started() -> None:
    """Submitted once per worker, so that all of them start now."""


def _prepare_chunk(
    db_path: str, busy_timeout_ms: int, shape: EventsShape, session_ids: list[str]
) -> list[PreparedSession | str]:
    """`worker.prepare_chunk`, in a worker process.

    Imported here, not at the top: only workers load apsw, and with it a
    second SQLite library, which a process that opens the store through the
    sqlite3 module must never use on it (see `store.worker`).
    """
    from spanwatch.store import worker  # noqa: PLC0415 (see above)

    return worker.prepare_chunk(db_path, busy_timeout_ms, shape, session_ids)
