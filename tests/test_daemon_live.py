"""`spanwatch run` against a live store: a real writer process, the daemon as a real process.

Each test waits (with a generous timeout, never a duration assertion) until
`spanwatch verify` passes, then checks that the stored spans equal a fresh
rebuild of a consistent copy of the store.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_harness import (
    Harness,
    harness,
    has_events,
    insert,
    live_marks,
    marks,
    query,
    real_differences,
    tool_use,
    verify,
    wait_until,
    wait_verified,
)
from stores import make_store

pytestmark = pytest.mark.slow

FAST = ("--debounce-ms", "100", "--max-delay-ms", "1000")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def span_sessions(db: Path) -> set[str]:
    return {row[0] for row in query(db, "SELECT DISTINCT session_id FROM tool_spans")}


@pytest.mark.parametrize(
    ("store_version", "polling"),
    [("current", False), ("v1", True)],
    ids=["current-store-file-events", "v1-store-polling"],
)
def test_spans_equal_a_fresh_rebuild_shortly_after_the_writer_stops(
    h: Harness, store_version: str, polling: bool
) -> None:
    # v1: the first store version, without ts_exact, tool_call_id, reasoning_tokens.
    writer = h.writer(
        sessions=8, rate=400, duration=4, seed=11, extra=["--store-version", store_version]
    )
    wait_until(lambda: has_events(h.db), what="the first events")
    if polling:  # --poll: stat the files instead of inotify (e.g. network filesystems)
        daemon = h.daemon(*FAST, "--poll", env={"SPANWATCH_POLL_INTERVAL_MS": "100"})
    else:
        daemon = h.daemon(*FAST)
    daemon.wait_for_log("ready")
    watching = daemon.wait_for_log("watching store files")
    assert watching["mode"] == ("polling" if polling else "inotify")
    stats = writer.finish()
    assert stats["events"] > 500
    sources = {row[0] for row in query(h.db, "SELECT DISTINCT source FROM events")}
    assert sources == {"Tail", "Hook", "Proxy"}

    report = wait_verified(h.db)
    spans = h.assert_spans_equal_fresh_rebuild()
    assert report["spans"] == spans > 100
    # Hooks, tail and proxy rows of nested Tasks: spans at several depths.
    assert {row[0] for row in query(h.db, "SELECT DISTINCT depth FROM tool_spans")} >= {0, 1}
    assert len(span_sessions(h.db)) == 8
    assert marks(h.db) == live_marks(h.db)
    assert daemon.alive
    batches = daemon.events("batch")
    assert sum(b["events"] for b in batches) >= stats["events"]


def test_sessions_read_in_full_on_the_long_read_thread_give_the_same_spans(h: Harness) -> None:
    # Every session counts as long and one state at most stays in memory: nearly
    # every rebuild reads its session in full, on the long-read thread.
    writer = h.writer(sessions=6, rate=400, duration=4, seed=21)
    wait_until(lambda: has_events(h.db), what="the first events")
    env = {"SPANWATCH_LONG_READ_ROWS": "20", "SPANWATCH_CACHE_MAX_SESSIONS": "1"}
    daemon = h.daemon(*FAST, env=env)
    daemon.wait_for_log("ready")
    writer.finish()
    wait_verified(h.db)
    h.assert_spans_equal_fresh_rebuild()
    assert marks(h.db) == live_marks(h.db)
    assert sum(b["long_reads"] for b in daemon.events("batch")) > 5
    assert not daemon.events("session rebuild failed")


def test_long_sessions_let_go_of_finished_spans_and_their_rows_stay_right(h: Harness) -> None:
    # Two sessions of a few thousand events: the daemon keeps in memory only
    # the spans still in play (`engine.retire`) and goes on extending them.
    writer = h.writer(sessions=2, rate=1500, duration=4, seed=5)
    wait_until(lambda: has_events(h.db), what="the first events")
    daemon = h.daemon(*FAST)
    daemon.wait_for_log("ready")
    stats = writer.finish()
    assert stats["events"] > 4000
    report = wait_verified(h.db)
    spans = h.assert_spans_equal_fresh_rebuild()
    assert report["spans"] == spans > 800
    assert marks(h.db) == live_marks(h.db)
    batches = daemon.events("batch")
    assert sum(b["incremental"] for b in batches) >= 4
    assert batches[-1]["cached_spans"] < spans // 2


def test_a_restarted_daemon_resumes_long_sessions_from_their_stored_spans(h: Harness) -> None:
    # Two sessions of a few thousand events, rebuilt by a first daemon, which is
    # then stopped. The same writer goes on with them while a second daemon
    # starts with nothing in memory: it resumes them from their stored spans
    # and latest rows (`store.resume`) rather than reading them whole.
    h.writer(sessions=2, rate=1500, duration=3, seed=5).finish()
    first = h.daemon(*FAST)
    first.wait_for_log("ready")
    wait_verified(h.db)
    first.send(signal.SIGTERM)
    assert first.wait_exit() == 0
    assert min(row[0] for row in query(h.db, "SELECT row_count FROM spanwatch_sessions")) > 1000
    writer = h.writer(sessions=2, rate=400, duration=3, seed=5)
    second = h.daemon(*FAST)
    second.wait_for_log("ready")
    writer.finish()
    wait_verified(h.db)
    h.assert_spans_equal_fresh_rebuild()
    assert marks(h.db) == live_marks(h.db)
    batches = second.events("batch")
    assert sum(b["resumed"] for b in batches) == 2
    # Rows read: what the first writer left after each resume point, and the
    # second writer's, far fewer than both sessions hold.
    assert sum(b["events"] for b in batches) < 4500


def test_a_session_that_never_stops_writing_is_still_rebuilt(h: Harness) -> None:
    make_store(h.db).close()
    # debounce_ms cannot exceed max_delay_ms; with both at 4 s, a session that
    # never pauses for 4 s gets rebuilt only because of max_delay_ms.
    daemon = h.daemon("--debounce-ms", "4000", "--max-delay-ms", "4000")
    daemon.wait_for_log("ready")
    commits = h.workdir / "commits.jsonl"
    writer = h.writer(
        sessions=2, rate=150, duration=60, seed=12, extra=["--commit-log", str(commits)]
    )

    def rebuilt_while_writing() -> bool:
        assert writer.alive, "the writer stopped before any rebuild"
        return any(b["spans_written"] > 0 for b in daemon.events("batch"))

    wait_until(rebuilt_while_writing, what="a rebuild while the writer runs")
    spans = query(h.db, "SELECT count(*) FROM tool_spans")[0][0]
    assert writer.alive
    assert spans > 0
    _, report = verify(h.db)
    assert real_differences(report) == []
    writer.stop()

    # The premise: no session went quiet for debounce_ms while the spans appeared.
    times: dict[str, list[int]] = {}
    for line in commits.read_text().splitlines():
        record = json.loads(line)
        times.setdefault(record["session_id"], []).append(record["t_ms"])
    for stamps in times.values():
        assert max(b - a for a, b in itertools.pairwise(stamps)) < 4000

    wait_verified(h.db)  # the last events, too, wait at most max_delay_ms
    h.assert_spans_equal_fresh_rebuild()


def test_a_store_created_after_the_daemon_starts_is_caught_up_then_ready(h: Harness) -> None:
    notify = h.notify_socket()
    daemon = h.daemon(
        *FAST, env={"NOTIFY_SOCKET": notify.path, "SPANWATCH_POLL_INTERVAL_MS": "100"}
    )
    daemon.wait_for_log("waiting for the store to appear")
    assert not h.db.exists()
    assert daemon.alive

    writer = h.writer(sessions=4, rate=300, duration=3, seed=13)  # creates the store
    ready = notify.wait_for("READY=1")
    daemon.wait_for_log("ready")
    writer.finish()
    wait_verified(h.db)
    h.assert_spans_equal_fresh_rebuild()

    assert len(daemon.events("waiting for the store to appear")) == 1
    assert len(daemon.events("store opened")) == 1
    assert len(daemon.events("ready")) == 1
    order = [line["event"] for line in daemon.logs()]
    assert order.index("store opened") < order.index("ready")
    messages = notify.messages()
    assert messages[0].startswith("STATUS=waiting for")
    assert sum("READY=1" in m.split("\n") for m in messages) == 1
    assert ready > 0


def test_a_session_deleted_while_running_loses_its_spans_and_watermark(h: Harness) -> None:
    daemon = h.daemon(*FAST, env={"SPANWATCH_RECONCILE_INTERVAL_S": "1"})
    h.writer(sessions=5, rate=300, duration=2, seed=14).finish()
    wait_verified(h.db)
    dropped, retired, *kept = sorted(span_sessions(h.db))
    assert kept

    # One session's events vanish (a cleanup tool), another goes by retention:
    # events, spans and paths in one transaction, leaving spanwatch's mark behind.
    conn = sqlite3.connect(h.db, isolation_level=None, timeout=30)
    conn.execute("DELETE FROM events WHERE session_id = ?", (dropped,))
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "DELETE FROM tool_span_paths WHERE span_id IN "
        "(SELECT span_id FROM tool_spans WHERE session_id = ?)",
        (retired,),
    )
    conn.execute("DELETE FROM tool_spans WHERE session_id = ?", (retired,))
    conn.execute("DELETE FROM events WHERE session_id = ?", (retired,))
    conn.execute("COMMIT")
    conn.close()

    wait_until(
        lambda: not ({dropped, retired} & (marks(h.db).keys() | span_sessions(h.db))),
        what="the deleted sessions' spans and watermarks to go",
    )
    wait_verified(h.db)
    h.assert_spans_equal_fresh_rebuild()
    assert span_sessions(h.db) == set(kept)
    assert marks(h.db).keys() == set(kept)
    assert daemon.events("reconcile found stale sessions")


def test_deleted_rows_are_noticed_by_the_reconcile(h: Harness) -> None:
    daemon = h.daemon(*FAST, env={"SPANWATCH_RECONCILE_INTERVAL_S": "1"})
    h.writer(sessions=3, rate=300, duration=2, seed=15).finish()
    wait_verified(h.db)
    session = sorted(span_sessions(h.db))[0]
    # The results of the session's tool calls go: its spans lose their ends.
    results = query(
        h.db,
        "SELECT id FROM events WHERE session_id = ? AND kind = 'ToolResult' ORDER BY id LIMIT 5",
        (session,),
    )
    assert results
    before = marks(h.db)[session]
    conn = sqlite3.connect(h.db, isolation_level=None, timeout=30)
    conn.executemany("DELETE FROM events WHERE id = ?", results)
    conn.close()

    wait_until(
        lambda: marks(h.db).get(session) == live_marks(h.db)[session],
        what="the session's watermark to follow the deletion",
    )
    assert marks(h.db)[session][1] == before[1] - len(results)
    wait_verified(h.db)
    h.assert_spans_equal_fresh_rebuild()
    assert daemon.events("reconcile found stale sessions")


def test_a_row_with_a_lower_seq_is_rebuilt(h: Harness) -> None:
    daemon = h.daemon(*FAST)  # the default reconcile interval: the rowid scan must see it
    h.writer(sessions=3, rate=300, duration=2, seed=16).finish()
    wait_verified(h.db)
    session = sorted(span_sessions(h.db))[0]
    (first_ts,) = query(h.db, "SELECT min(ts_ms) FROM events WHERE session_id = ?", (session,))[0]
    # A late transcript line: lower seqs than anything stored, an earlier timestamp.
    insert(h.db, tool_use(session, -10, first_ts - 1000, "late-call", path="/late/file.py"))

    wait_until(
        lambda: query(h.db, "SELECT 1 FROM tool_spans WHERE span_id = 'late-call'"),
        what="the late tool use's span",
    )
    wait_verified(h.db)
    h.assert_spans_equal_fresh_rebuild()
    assert query(h.db, "SELECT path FROM tool_span_paths WHERE span_id = 'late-call'") == [
        ("/late/file.py",)
    ]
    assert marks(h.db)[session][0] == live_marks(h.db)[session][0]
    assert not daemon.events("reconcile found stale sessions")


def test_a_store_file_replaced_by_rename_is_reopened(h: Harness) -> None:
    daemon = h.daemon(*FAST)
    h.writer(sessions=3, rate=300, duration=2, seed=17).finish()
    wait_verified(h.db)
    old_sessions = span_sessions(h.db)

    # A new store, made beside the old one and renamed over it. SQLite's -wal
    # and -shm belong to the path, so the old WAL is emptied first: the safe
    # way to swap a WAL database (https://www.sqlite.org/howtocorrupt.html).
    replacement = h.db.with_name("events.db.new")
    h.writer(sessions=3, rate=300, duration=2, seed=18, db=replacement).finish()
    conn = sqlite3.connect(h.db, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.replace(replacement, h.db)

    daemon.wait_for_log("store file was replaced, moved or deleted; reopening")
    daemon.wait_for_log("store opened", count=2)
    wait_verified(h.db)
    # And it keeps following the new file.
    h.writer(sessions=2, rate=300, duration=2, seed=19).finish()
    wait_verified(h.db)
    h.assert_spans_equal_fresh_rebuild()
    new_sessions = span_sessions(h.db)
    assert len(new_sessions) == 5
    assert not new_sessions & old_sessions
    assert daemon.alive


def test_a_writer_holding_the_write_lock_for_seconds_is_waited_out(h: Harness) -> None:
    daemon = h.daemon(
        *FAST,
        env={"SPANWATCH_BUSY_TIMEOUT_MS": "200", "SPANWATCH_WRITE_RETRY_MAX_S": "1"},
    )
    h.writer(sessions=3, rate=300, duration=2, seed=20).finish()
    wait_verified(h.db)
    session = sorted(span_sessions(h.db))[0]
    (top,) = query(h.db, "SELECT max(seq) FROM events WHERE session_id = ?", (session,))[0]
    (last_ts,) = query(h.db, "SELECT max(ts_ms) FROM events WHERE session_id = ?", (session,))[0]
    waiting = tool_use(session, top + 1, last_ts + 10, "waits-1")
    held = tool_use(session, top + 3, last_ts + 20, "held-1")
    columns = list(waiting[1])

    # Committed rows the daemon wants to rebuild, then a writer sits on the lock.
    holder = h.lock_holder(
        columns,
        before=[[row.get(c) for c in columns] for row in waiting],
        during=[[row.get(c) for c in columns] for row in held],
    )
    daemon.wait_for_log("store locked by another writer, waiting")
    # After write_retry_max_s it gives the write up for now ("store busy, ...
    # will be retried"), and tries again later.
    wait_until(
        lambda: [line for line in daemon.logs() if line["event"].startswith("store busy")],
        what="the write given up for now",
    )
    daemon.wait_for_log("store locked by another writer, waiting", count=2)
    assert daemon.alive
    assert not query(h.db, "SELECT 1 FROM tool_spans WHERE span_id = 'waits-1'")
    holder.release()

    wait_verified(h.db)
    h.assert_spans_equal_fresh_rebuild()
    stored = {row[0] for row in query(h.db, "SELECT span_id FROM tool_spans")}
    assert {"waits-1", "held-1"} <= stored
    assert daemon.alive
    assert not daemon.events("store error; reopening after a pause")


def test_triggers_capture_sees_rows_upserted_in_place(h: Harness) -> None:
    upsert = (
        "INSERT INTO events (session_id, seq, ts_ms, kind, source, tool, tool_call_id, payload) "
        "VALUES (?, ?, ?, 'ToolCall', 'Tail', ?, ?, ?) ON CONFLICT(session_id, seq) "
        "DO UPDATE SET tool = excluded.tool, payload = excluded.payload"
    )
    make_store(h.db).close()
    insert(h.db, tool_use("s-upsert", 1, 1_000, "call-1", tool="Read", path="/v1"))

    # Default capture (rowid): a row rewritten in place keeps its rowid, seq and
    # count, so nothing shows it changed. This blind spot is documented.
    rowid_daemon = h.daemon(*FAST)
    rowid_daemon.wait_for_log("ready")
    wait_verified(h.db)
    conn = sqlite3.connect(h.db, isolation_level=None, timeout=30)
    conn.execute(upsert, ("s-upsert", 1, 1_000, "Edit", "call-1", '{"file_path": "/v2"}'))
    insert(h.db, tool_use("s-other", 1, 2_000, "call-2"))  # proof the daemon is awake
    wait_until(
        lambda: query(h.db, "SELECT 1 FROM tool_spans WHERE span_id = 'call-2'"),
        what="the other session's span",
    )
    code, report = verify(h.db)
    assert code == 1
    (missed,) = report["differences"]
    assert missed["session_id"] == "s-upsert"
    assert not missed["pending"]  # the watermark cannot tell
    assert rowid_daemon.stop() == 0

    # capture = "triggers": triggers on events flag the session in the writer's
    # own transaction, and the daemon rebuilds it in full.
    config = h.config('capture = "triggers"\n')
    daemon = h.daemon("--config", str(config), *FAST)
    daemon.wait_for_log("capture triggers installed on events")
    daemon.wait_for_log("ready")
    writer = h.writer(sessions=3, rate=300, duration=2, seed=21)
    conn.execute(upsert, ("s-upsert", 1, 1_000, "Write", "call-1", '{"file_path": "/v3"}'))
    wait_until(
        lambda: (
            query(h.db, "SELECT path FROM tool_span_paths WHERE span_id = 'call-1'") == [("/v3",)]
        ),
        what="the upserted row's span",
    )
    writer.finish()
    conn.close()
    wait_verified(h.db)
    h.assert_spans_equal_fresh_rebuild()
    assert query(h.db, "SELECT tool FROM tool_spans WHERE span_id = 'call-1'") == [("Write",)]
    assert query(h.db, "SELECT count(*) FROM spanwatch_dirty") == [(0,)]


def test_a_store_moved_away_or_replaced_by_junk_is_waited_for_and_followed_back(
    h: Harness,
) -> None:
    daemon = h.daemon(*FAST)
    h.writer(sessions=3, rate=300, duration=1.5, seed=22).finish()
    wait_verified(h.db)
    conn = sqlite3.connect(h.db, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # see the rename test
    conn.close()

    waited = len(daemon.events("waiting for the store to appear"))  # 0 or 1 at start
    away = h.db.with_name("moved-away.db")
    os.replace(h.db, away)
    daemon.wait_for_log("store file was replaced, moved or deleted; reopening")
    daemon.wait_for_log("waiting for the store to appear", count=waited + 1)
    h.writer(sessions=2, rate=300, duration=1.5, seed=23, db=away).finish()  # written meanwhile
    # Something that is not a store takes its place: logged, backed off, never fatal.
    h.db.write_bytes(b"not a database " * 100)
    error = daemon.wait_for_log("store error; reopening after a pause")
    assert "not a usable SQLite database" in error["error"]
    assert daemon.alive

    os.replace(away, h.db)
    daemon.wait_for_log("store opened", count=2)
    wait_verified(h.db)  # the reopen's reconcile found what was written while away
    h.assert_spans_equal_fresh_rebuild()
    assert len(span_sessions(h.db)) == 5
    assert daemon.alive
    assert daemon.stop() == 0


def test_a_span_id_shared_by_a_resumed_session_stays_with_the_older_session(h: Harness) -> None:
    # A resumed agent session repeats the tool-call ids of the one it resumes.
    # Whoever is rebuilt first keeps the id, so the daemon's catch-up must go in
    # order of first appearance, as `spanwatch rebuild` does; here the resumed
    # session's id sorts first.
    make_store(h.db).close()
    insert(h.db, tool_use("zz-original", 1, 1_000, "toolu_shared", path="/original"))
    insert(h.db, tool_use("aa-resumed", 1, 9_000, "toolu_shared", path="/resumed"))
    daemon = h.daemon(*FAST)
    daemon.wait_for_log("ready")
    wait_verified(h.db)
    h.assert_spans_equal_fresh_rebuild()
    assert query(h.db, "SELECT span_id, session_id FROM tool_spans ORDER BY span_id") == [
        ("aa-resumed/toolu_shared", "aa-resumed"),
        ("toolu_shared", "zz-original"),
    ]
    collision = daemon.wait_for_log(
        "span id already owned by another session, stored under a namespaced id"
    )
    assert (collision["session_id"], collision["owner_session_id"]) == (
        "aa-resumed", "zz-original",
    )  # fmt: skip
