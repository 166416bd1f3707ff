"""Work that runs in a child process of its own, so its time and memory are measured alone.

`python -m benchlib.workers NAME ARGS...` (with `benchmarks/` on PYTHONPATH)
prints one JSON document: what it did, how long the measured part took
(`seconds`, timed inside the child, so interpreter start-up is not in it) and
the child's peak RSS.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import resource
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import apsw

from spanwatch.engine import build_span_records
from spanwatch.engine.events import Event
from spanwatch.engine.records import SpanRecord
from spanwatch.store.connection import open_store
from spanwatch.store.events import load_session_rows
from spanwatch.store.marks import stale_sessions
from spanwatch.store.rebuild_all import rebuild_store
from spanwatch.store.schema import events_shape

REPO = Path(__file__).resolve().parents[2]


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM of its address space since exec).

    Not getrusage's ru_maxrss: Linux carries the parent's high-water mark
    over fork/vfork and exec into it, so a child of a big parent would report
    the parent's size.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def floor(db: str) -> dict[str, Any]:
    """Every row of `events`, the columns spanwatch reads, into Python: the floor."""
    conn = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
    shape = events_shape(conn)
    started = time.perf_counter()
    rows = 0
    payload_chars = 0
    cursor = conn.execute(f"SELECT {shape.select_list} FROM events")
    while batch := cursor.fetchmany(2000):
        rows += len(batch)
        payload_chars += sum(len(row[-1]) for row in batch)
    seconds = time.perf_counter() - started
    conn.close()
    return {"seconds": seconds, "rows": rows, "payload_chars": payload_chars}


def floor_apsw(db: str) -> dict[str, Any]:
    """The floor's SELECT through apsw, which the rebuild's workers read with: not the
    floor of the ratio (that is Python's own sqlite3 module), a figure beside it."""
    # The sqlite3 module's connection is closed before apsw opens the file: two
    # SQLite libraries must not have it open at once (see `spanwatch.store.worker`).
    with contextlib.closing(
        sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
    ) as conn:
        shape = events_shape(conn)
    reader = apsw.Connection(str(Path(db).resolve()), flags=apsw.SQLITE_OPEN_READONLY)
    started = time.perf_counter()
    rows = 0
    payload_chars = 0
    for row in reader.execute(f"SELECT {shape.select_list} FROM events"):
        rows += 1
        payload_chars += len(row[-1])
    seconds = time.perf_counter() - started
    reader.close()
    return {"seconds": seconds, "rows": rows, "payload_chars": payload_chars}


def rebuild(db: str, jobs: str = "1") -> dict[str, Any]:
    """`rebuild_store` of every session, as `spanwatch rebuild --jobs N` runs it."""
    started = time.perf_counter()
    summary = rebuild_store(db, jobs=int(jobs))
    return {
        "jobs": int(jobs),
        "seconds": time.perf_counter() - started,
        "sessions": summary.sessions,
        "rows": summary.events,
        "spans": summary.spans,
        "spans_written": summary.spans_written,
        "spans_deleted": summary.spans_deleted,
        "skipped_rows": summary.skipped_rows,
    }


def _session_events(db: str, session_id: str, limit: int) -> tuple[int, list[Event]]:
    conn = open_store(Path(db), readonly=True)
    try:
        rows = load_session_rows(conn, events_shape(conn), session_id)
    finally:
        conn.close()
    events = rows.events if limit <= 0 else rows.events[:limit]
    return rows.row_count, events


def _digest(records: Sequence[SpanRecord]) -> str:
    ordered = sorted(records, key=lambda r: r.span_id)
    return hashlib.sha256(repr(ordered).encode()).hexdigest()[:16]


def _timed(
    build: Callable[[list[Event]], list[SpanRecord]], events: list[Event], repeat: int
) -> dict[str, Any]:
    runs = []
    records: list[SpanRecord] = []
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        records = build(events)
        runs.append(time.perf_counter() - started)
    return {
        "seconds": min(runs),
        "runs": [round(r, 4) for r in runs],
        "events": len(events),
        "spans": len(records),
        "max_depth": max((r.depth for r in records), default=0),
        "digest": _digest(records),
    }


def engine(db: str, session_id: str, limit: str, repeat: str) -> dict[str, Any]:
    """spanwatch's engine on a session's events (the first `limit`; 0: all)."""
    row_count, events = _session_events(db, session_id, int(limit))
    return {"session_rows": row_count, **_timed(build_span_records, events, int(repeat))}


def _oracle_records() -> Callable[[list[Event]], list[SpanRecord]]:
    path = REPO / "tests" / "oracle.py"
    spec = importlib.util.spec_from_file_location("spanwatch_test_oracle", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the test oracle from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    build: Callable[[list[Event]], list[SpanRecord]] = module.oracle_records
    return build


def oracle(db: str, session_id: str, limit: str, repeat: str) -> dict[str, Any]:
    """The test oracle (tests/oracle.py, quadratic) on the same events as `engine`."""
    build = _oracle_records()
    row_count, events = _session_events(db, session_id, int(limit))
    return {"session_rows": row_count, **_timed(build, events, int(repeat))}


def group_count(db: str) -> dict[str, Any]:
    """The reconcile's baseline: a bare per-session count over the whole store."""
    conn = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
    started = time.perf_counter()
    groups = conn.execute("SELECT count(*) FROM events GROUP BY session_id").fetchall()
    seconds = time.perf_counter() - started
    conn.close()
    return {"seconds": seconds, "groups": len(groups)}


def group_figures(db: str) -> dict[str, Any]:
    """What a reconcile compares, per session, in one bare GROUP BY: its floor."""
    conn = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
    started = time.perf_counter()
    groups = conn.execute(
        "SELECT session_id, count(*), max(seq), max(id) FROM events GROUP BY session_id"
    ).fetchall()
    seconds = time.perf_counter() - started
    conn.close()
    return {"seconds": seconds, "groups": len(groups)}


def stale(db: str) -> dict[str, Any]:
    """The daemon's start-up reconcile: `stale_sessions` over the whole store."""
    conn = open_store(Path(db))
    started = time.perf_counter()
    found = sum(1 for _ in stale_sessions(conn))
    seconds = time.perf_counter() - started
    conn.close()
    return {"seconds": seconds, "stale_sessions": found}


WORKERS: dict[str, Callable[..., dict[str, Any]]] = {
    "floor": floor,
    "floor_apsw": floor_apsw,
    "rebuild": rebuild,
    "engine": engine,
    "oracle": oracle,
    "group_count": group_count,
    "group_figures": group_figures,
    "stale": stale,
}


def main(argv: Sequence[str]) -> int:
    name, *args = argv
    result = WORKERS[name](*args)
    result["max_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
