"""kill -9 at random points, many times in a row, on a store a writer keeps filling.

The number of cycles is `SPANWATCH_FAULT_CRASH_CYCLES` (default 50; each cycle
kills the daemon twice and takes a few seconds).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import fault_scenarios as scenarios
import pytest
from faultkit import mark_problems, populate

from spanwatch.store.rebuild_all import rebuild_store
from stores import backup

CYCLES = int(os.environ.get("SPANWATCH_FAULT_CRASH_CYCLES", "50"))


@pytest.mark.slow
def test_kill_9_at_random_points_loses_nothing(tmp_path: Path) -> None:
    trials = scenarios.crash_cycles(tmp_path, CYCLES, seed=CYCLES)
    problems = [(n, t.problems) for n, t in enumerate(trials) if t.problems]
    assert problems == [], scenarios.kill_moments(trials)
    assert all(t.recovered and t.rows_lost == 0 for t in trials)
    assert len(trials) == CYCLES


def test_the_mark_check_sees_marks_and_spans_that_disagree(tmp_path: Path) -> None:
    """The check above is only as good as its power to see a mark ahead of its spans."""
    db = tmp_path / "events.db"
    populate(db, 600, sessions=3, seed=4)
    rebuild_store(db)
    assert mark_problems(db, tmp_path) == []
    good = backup(db, tmp_path / "good.db")
    for tamper in (
        # A mark claiming more rows than its spans came from (a row appended after).
        "UPDATE spanwatch_sessions SET row_count = row_count + 1, max_id = max_id + 1000 "
        "WHERE rowid = 1",
        # Spans written without their mark.
        "DELETE FROM spanwatch_sessions WHERE rowid = 2",
        # A span lost while the mark says it is there.
        "DELETE FROM tool_spans WHERE rowid = 3",
    ):
        copy = backup(good, tmp_path / "tampered.db")
        conn = sqlite3.connect(copy, isolation_level=None)
        if "max_id + 1000" in tamper:
            conn.execute(
                "INSERT INTO events (session_id, seq, ts_ms, kind, source, payload) "
                "SELECT session_id, 10000, 1, 'ToolCall', 'Tail', '{}' "
                "FROM spanwatch_sessions WHERE rowid = 1"
            )
        conn.execute(tamper)
        conn.close()
        assert mark_problems(copy, tmp_path), tamper
        copy.unlink()
