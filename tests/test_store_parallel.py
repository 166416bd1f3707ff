"""A rebuild with worker processes leaves exactly what a serial rebuild leaves.

Real processes (spawned, with their own read-only connections) on a real WAL
store with enough sessions to take the parallel path.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

from spanwatch.engine import Event
from spanwatch.engine.events import EventKind as K
from spanwatch.store import marks
from spanwatch.store.prepare import WORKER_NICENESS, start_workers
from spanwatch.store.rebuild_all import PARALLEL_MIN_SESSIONS, StoreSummary, rebuild_store
from stores import insert_events, insert_rows, make_store, path_rows, span_table
from test_store_rebuild import task_session

SESSIONS = PARALLEL_MIN_SESSIONS + 8


def mark_rows(conn: sqlite3.Connection) -> set[tuple[object, ...]]:
    """The watermarks, without the time they were written."""
    return set(
        conn.execute(
            "SELECT session_id, max_seq, row_count, max_id, span_count, skipped_rows "
            "FROM spanwatch_sessions"
        )
    )


def busy_store(path: Path) -> sqlite3.Connection:
    """Many sessions, with everything that takes a rebuild off its common path."""
    conn = make_store(path, loose=True)
    for n in range(SESSIONS):
        insert_events(conn, task_session(f"s{n:03}", base=1000 + n, prefix=f"p{n}-"))
    # A resumed session repeats the ids of the first: it must be namespaced.
    insert_events(conn, task_session("resumed", base=9000, prefix="p0-"))
    # A bad row and a token out of range, each noted with its session.
    bad = {"session_id": "s001", "seq": 50, "ts_ms": "noon", "kind": "ToolCall",
           "source": "Tail", "payload": "{}"}  # fmt: skip
    insert_rows(conn, [bad])
    insert_events(conn, [Event("s002", 60, 1500, K.TOOL_CALL, tool="Grep",
                               tool_call_id="big", tokens_in=2**40)])  # fmt: skip
    # TEXT that is not UTF-8, which the workers' apsw refuses: read by the writer.
    conn.execute(
        "INSERT INTO events (session_id, seq, ts_ms, kind, source, tool, payload) "
        "VALUES ('s003', 70, 1600, 'ToolCall', 'Tail', CAST(X'ff' AS TEXT), '{}')"
    )
    return conn


def rebuilt(path: Path, jobs: int) -> tuple[StoreSummary, sqlite3.Connection]:
    summary = rebuild_store(path, jobs=jobs, keep_results=True)
    return summary, sqlite3.connect(path)


def test_workers_write_the_rows_paths_and_marks_a_serial_rebuild_writes(tmp_path: Path) -> None:
    busy_store(tmp_path / "serial.db").close()
    busy_store(tmp_path / "parallel.db").close()
    serial, serial_conn = rebuilt(tmp_path / "serial.db", jobs=1)
    parallel, parallel_conn = rebuilt(tmp_path / "parallel.db", jobs=2)

    assert span_table(parallel_conn) == span_table(serial_conn)
    assert path_rows(parallel_conn) == path_rows(serial_conn)
    assert mark_rows(parallel_conn) == mark_rows(serial_conn)
    assert "resumed/p0-task" in span_table(parallel_conn)
    figures = ("sessions", "events", "spans", "spans_written", "skipped_rows")
    assert [getattr(parallel, f) for f in figures] == [getattr(serial, f) for f in figures]
    assert parallel.sessions == SESSIONS + 1
    assert parallel.skipped_rows == 2
    by_session = {r.session_id: r for r in parallel.results}
    assert [s.seq for s in by_session["s001"].skipped] == [50]
    assert [s.seq for s in by_session["s003"].skipped] == [70]
    assert [n.column for n in by_session["s002"].token_notes] == ["tokens_in"]
    assert ("p0-task", "s000") in by_session["resumed"].collisions
    # Results come back in the order a serial rebuild takes the sessions.
    assert [r.session_id for r in parallel.results] == [r.session_id for r in serial.results]


def test_second_parallel_rebuild_writes_nothing_and_drops_vanished_sessions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    busy_store(path).close()
    rebuild_store(path, jobs=2)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM events WHERE session_id = 's005'")
    conn.commit()
    summary = rebuild_store(path, jobs=2)
    assert (summary.spans_written, summary.vanished) == (0, 1)
    assert not any(row[1] == "s005" for row in span_table(conn).values())
    assert list(marks.stale_sessions(conn)) == []


def test_cli_rebuild_with_jobs_reports_the_serial_figures(tmp_path: Path) -> None:
    for name in ("a.db", "b.db"):
        busy_store(tmp_path / name).close()

    def cli(name: str, jobs: str) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "spanwatch", "rebuild", "--db", str(tmp_path / name),
             "--json", "--jobs", jobs],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr  # rows skipped
        figures: dict[str, object] = json.loads(done.stdout)
        figures.pop("seconds")
        return figures

    assert cli("a.db", "2") == cli("b.db", "1")
    assert span_table(sqlite3.connect(tmp_path / "a.db")) == span_table(
        sqlite3.connect(tmp_path / "b.db")
    )


def test_workers_give_way_to_the_process_that_holds_the_write_lock() -> None:
    pool = start_workers(2)
    try:
        niceness = {pool.submit(os.nice, 0).result() for _ in range(6)}
    finally:
        pool.shutdown()
    assert niceness == {min(os.nice(0) + WORKER_NICENESS, 19)}


def test_workers_of_the_console_script_do_not_load_the_cli(tmp_path: Path) -> None:
    """A spawned worker first imports the script its parent ran: `spanwatch`'s
    must not bring the CLI (pydantic, rich, the daemon) into every worker."""
    (script,) = entry_points(group="console_scripts", name="spanwatch")
    path = tmp_path / "spanwatch"
    path.write_text(  # what pip writes for the console script, then a rebuild's workers
        f"from {script.module} import {script.attr}\n"
        + textwrap.dedent(
            """
            if __name__ == "__main__":
                from spanwatch.store.prepare import start_workers
                pool = start_workers(1)
                print(*pool.submit(eval, "sorted(__import__('sys').modules)").result())
                pool.shutdown()
            """
        )
    )
    run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, check=True)
    modules = run.stdout.split()
    assert "spanwatch.store.prepare" in modules
    heavy = ("pydantic", "rich", "structlog", "spanwatch.cli.", "spanwatch.daemon")
    assert [name for name in modules if name.startswith(heavy)] == []


def test_only_the_workers_load_apsw(tmp_path: Path) -> None:
    """The writing process opens the store through the sqlite3 module: a second
    SQLite library in it could drop its locks (see `store.worker`)."""
    busy_store(tmp_path / "events.db").close()
    script = tmp_path / "rebuild.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from spanwatch.store import rebuild_all

            if __name__ == "__main__":
                rebuild_all.rebuild_store(sys.argv[1], jobs=2)
                print("spanwatch.store.prepare" in sys.modules, "apsw" in sys.modules)
            """
        )
    )
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "events.db")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert run.stdout.split() == ["True", "False"]
