"""The daemon stopped while busy: kill -9, SIGTERM, and a second SIGTERM.

Each test starts the daemon on a store with a backlog (tens of thousands of
events it has never seen), rebuilt one session per batch, so that the daemon is
in the middle of its work when the signal lands; a writer process keeps
appending meanwhile.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_harness import (
    Harness,
    assert_marks_match_their_spans,
    harness,
    live_marks,
    marks,
    populate,
    real_differences,
    verify,
    wait_verified,
)

pytestmark = pytest.mark.slow

FAST = ("--debounce-ms", "100", "--max-delay-ms", "1000")
ONE_SESSION_PER_BATCH = {"SPANWATCH_BATCH_MAX_SESSIONS": "1"}
BACKLOG_SESSIONS = 40


@pytest.fixture(scope="module")
def backlog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 60,000 events in 40 sessions that no daemon has seen (made once)."""
    path = tmp_path_factory.mktemp("backlog") / "events.db"
    populate(path, 60_000, sessions=BACKLOG_SESSIONS, seed=7)
    assert not path.with_name("events.db-wal").exists()  # one self-contained file to copy
    return path


@pytest.fixture
def h(tmp_path: Path, backlog: Path) -> Iterator[Harness]:
    for item in harness(tmp_path):
        shutil.copyfile(backlog, item.db)
        yield item


def test_kill_9_mid_batch_then_restart_resumes_from_marks(h: Harness) -> None:
    backlog_sessions = set(live_marks(h.db))
    writer = h.writer(sessions=4, rate=300, duration=60, seed=31)
    for pause in (0.0, 0.03, 0.07):
        daemon = h.daemon(*FAST, env=ONE_SESSION_PER_BATCH)
        daemon.wait_for_log("batch", count=2)  # committed two sessions, working on the next
        time.sleep(pause)
        daemon.kill()
        assert daemon.proc.returncode == -signal.SIGKILL
        # Whatever the kill interrupted, every mark describes exactly the spans beside it.
        assert_marks_match_their_spans(h.db, h.workdir)

    live = live_marks(h.db)
    done = {s for s, mark in marks(h.db).items() if s in backlog_sessions and live[s] == mark}
    assert done
    daemon = h.daemon(*FAST, env=ONE_SESSION_PER_BATCH)
    opened = daemon.wait_for_log("store opened")
    daemon.wait_for_log("ready")
    # It resumes from its marks: backlog sessions already rebuilt are not redone
    # (the writer's 4 sessions may have new rows whatever happened).
    assert opened["stale_sessions"] <= len(backlog_sessions) - len(done) + 4
    events = [line["event"] for line in daemon.logs()]
    catch_up = events[events.index("store opened") : events.index("ready")]
    assert catch_up.count("batch") == opened["stale_sessions"]
    writer.stop()
    wait_verified(h.db)
    h.assert_spans_equal_fresh_rebuild()
    assert daemon.stop() == 0


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_mid_batch_exits_0_with_a_consistent_store(
    h: Harness, stop: signal.Signals
) -> None:
    backlog_sessions = set(live_marks(h.db))
    writer = h.writer(sessions=4, rate=300, duration=60, seed=32)
    daemon = h.daemon(*FAST, env=ONE_SESSION_PER_BATCH)
    daemon.wait_for_log("batch", count=2)
    daemon.send(stop)
    assert daemon.wait_exit() == 0
    writer.stop()

    logged = [line["event"] for line in daemon.logs()]
    assert daemon.events("stop requested; finishing the work in hand", signal=stop.name)
    assert logged[-1] == "stopped"
    _, report = verify(h.db)
    assert real_differences(report) == []
    assert_marks_match_their_spans(h.db, h.workdir)
    # The sessions already due (the whole backlog) were finished before the exit;
    # only the writer's latest rows can still be pending.
    pending = {d["session_id"] for d in report["differences"]}
    assert not pending & backlog_sessions
    assert marks(h.db).keys() >= backlog_sessions


def test_a_second_sigterm_exits_at_once(h: Harness) -> None:
    daemon = h.daemon(*FAST, env=ONE_SESSION_PER_BATCH)
    daemon.wait_for_log("batch", count=2)
    daemon.send(signal.SIGTERM)
    daemon.wait_for_log("stop requested; finishing the work in hand")
    daemon.send(signal.SIGTERM)
    code = daemon.wait_exit()
    assert code > 0  # its own exit, not killed by the signal, and not "stopped cleanly"
    logged = [line["event"] for line in daemon.logs()]
    assert "second stop signal: exiting at once" in logged
    assert "stopped" not in logged
    # It left the rest of the backlog for the next start, and nothing half-written.
    code, report = verify(h.db)
    assert code == 1
    assert report["sessions_pending"] > 0
    assert real_differences(report) == []
    assert_marks_match_their_spans(h.db, h.workdir)
    # The next start picks up where it stopped.
    h.daemon(*FAST).wait_for_log("ready")
    wait_verified(h.db)
