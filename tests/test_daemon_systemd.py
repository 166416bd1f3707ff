"""The daemon as systemd sees it: sd_notify datagrams on a real socket, SIGHUP reloads."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_harness import (
    Harness,
    harness,
    insert,
    notify_fields,
    query,
    tool_use,
    verify,
    wait_until,
    wait_verified,
)
from stores import make_store

pytestmark = pytest.mark.slow


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def has_span(db: Path, span_id: str) -> bool:
    return bool(query(db, "SELECT 1 FROM tool_spans WHERE span_id = ?", (span_id,)))


def test_sd_notify_messages_arrive_in_order(h: Harness) -> None:
    h.writer(sessions=4, rate=300, duration=2, seed=41).finish()  # a backlog to catch up
    notify = h.notify_socket()
    daemon = h.daemon(
        "--debounce-ms", "100", "--max-delay-ms", "1000",
        env={
            "NOTIFY_SOCKET": notify.path,
            "WATCHDOG_USEC": "400000",
            "SPANWATCH_STATUS_INTERVAL_S": "0.2",
        },
    )  # fmt: skip
    ready = notify.wait_for("READY=1")
    # READY=1 means caught up: nothing is pending once it has arrived.
    code, report = verify(h.db)
    assert code == 0, report
    notify.wait_for("WATCHDOG=1", count=3)  # every 0.2 s: half of WATCHDOG_USEC

    insert(h.db, tool_use("after-ready", 1, 1_000, "c-after"))
    wait_until(lambda: has_span(h.db, "c-after"), what="a span written after READY=1")
    wait_until(
        lambda: any(set(notify_fields(m)) == {"STATUS"} for m in notify.messages()[ready + 1 :]),
        what="a STATUS= line after the batch",
    )
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0

    messages = [notify_fields(m) for m in notify.messages()]
    for message in messages:
        assert message, "an empty datagram"
    kinds = [next(iter(m)) for m in messages]
    # Start-up: catch-up progress (with more start-up time asked for), then READY=1 once.
    first_ready = kinds.index("READY")
    assert first_ready == ready
    assert kinds.count("READY") == 1
    catching_up = [m for m in messages[:ready] if "EXTEND_TIMEOUT_USEC" in m]
    assert catching_up
    assert catching_up[0]["STATUS"] == "catching up: 0/4 sessions"
    assert messages[ready]["STATUS"].startswith("watching events.db")
    # Running: a STATUS= line per batch; the watchdog keeps pinging.
    statuses = [m["STATUS"] for m in messages[ready + 1 :] if set(m) == {"STATUS"}]
    assert any(s.startswith("watching events.db") for s in statuses)
    assert kinds.count("WATCHDOG") >= 3
    assert all(m == {"WATCHDOG": "1"} for m in messages if "WATCHDOG" in m)
    # Stopping: STOPPING=1 as the signal arrives and as the last word.
    stopping = kinds.index("STOPPING")
    assert stopping > ready
    assert messages[-1]["STOPPING"] == "1"
    assert "READY" not in kinds[stopping:]


def test_sighup_reloads_the_debounce(h: Harness) -> None:
    make_store(h.db).close()
    insert(h.db, tool_use("s", 1, 1_000, "c1"))
    config = h.config("debounce_ms = 100\nmax_delay_ms = 1000\n")
    notify = h.notify_socket()
    daemon = h.daemon("--config", str(config), env={"NOTIFY_SOCKET": notify.path})
    notify.wait_for("READY=1")
    assert daemon.wait_for_log("starting")["debounce_ms"] == 100
    insert(h.db, tool_use("s", 3, 2_000, "c2"))
    wait_until(lambda: has_span(h.db, "c2"), what="a rebuild with the short debounce")

    config.write_text("debounce_ms = 60000\nmax_delay_ms = 60000\n")
    before_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    daemon.send(signal.SIGHUP)
    reloaded = daemon.wait_for_log("configuration reloaded")
    assert reloaded["changed"] == {"debounce_ms": "60000", "max_delay_ms": "60000"}
    ready_again = notify.wait_for("READY=1", count=2)
    after_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading = notify.wait_for("RELOADING=1")
    messages = notify.messages()
    assert reloading < ready_again
    assert before_usec <= int(notify_fields(messages[reloading])["MONOTONIC_USEC"]) <= after_usec

    # With a minute of debounce, a new event waits (the old 100 ms has long passed).
    insert(h.db, tool_use("s", 5, 3_000, "c3"))
    time.sleep(3)
    assert not has_span(h.db, "c3")
    code, report = verify(h.db)
    assert code == 1 and all(d["pending"] for d in report["differences"])

    # And back: the waiting session is due at once under the short debounce.
    config.write_text("debounce_ms = 100\nmax_delay_ms = 1000\n")
    daemon.send(signal.SIGHUP)
    reloaded = daemon.wait_for_log("configuration reloaded", count=2)
    assert reloaded["changed"] == {"debounce_ms": "100", "max_delay_ms": "1000"}
    wait_until(lambda: has_span(h.db, "c3"), what="the rebuild after the second reload")
    wait_verified(h.db)
    notify.wait_for("READY=1", count=3)

    # A broken edit is refused, and the running configuration stays.
    config.write_text("debounce_ms = 100\nmax_delay_ms = 10\n")
    daemon.send(signal.SIGHUP)
    failed = daemon.wait_for_log("reload failed; keeping the running configuration")
    assert "max_delay_ms: 10: must be >= debounce_ms (100)" in failed["problems"]
    notify.wait_for("READY=1", count=4)  # the reload is over, whatever its outcome
    insert(h.db, tool_use("s", 7, 4_000, "c4"))
    wait_until(lambda: has_span(h.db, "c4"), what="a rebuild after the refused reload")
    assert len(daemon.events("configuration reloaded")) == 2
    assert daemon.alive
    assert daemon.stop() == 0


def test_status_lines_carry_the_latest_figures_at_most_every_status_interval_s(
    h: Harness,
) -> None:
    notify = h.notify_socket()
    make_store(h.db).close()
    started = time.monotonic()
    daemon = h.daemon(
        "--debounce-ms", "50", "--max-delay-ms", "200",
        env={"NOTIFY_SOCKET": notify.path, "SPANWATCH_STATUS_INTERVAL_S": "2"},
    )  # fmt: skip
    ready = notify.wait_for("READY=1")
    h.writer(sessions=4, rate=400, duration=3, seed=42).finish()  # many small batches
    wait_verified(h.db)
    batches = daemon.events("batch")
    rebuilds = sum(b["sessions"] for b in batches)
    spans = sum(b["spans_written"] for b in batches)
    latest = f"watching events.db: {rebuilds} session rebuilds, {spans} spans written"

    def statuses() -> list[str]:
        return [
            notify_fields(m)["STATUS"]
            for m in notify.messages()[ready + 1 :]
            if set(notify_fields(m)) == {"STATUS"}
        ]

    # The figures systemd shows catch up with the daemon's...
    wait_until(lambda: statuses() and statuses()[-1].startswith(latest), what=latest)
    elapsed = time.monotonic() - started
    # ...without a datagram per batch: at most one per status_interval_s.
    assert len(statuses()) <= elapsed / 2 + 2


def test_sighup_before_the_first_catch_up_does_not_report_ready(h: Harness) -> None:
    config = h.config("debounce_ms = 100\nmax_delay_ms = 1000\n")
    notify = h.notify_socket()
    daemon = h.daemon("--config", str(config), env={"NOTIFY_SOCKET": notify.path})
    daemon.wait_for_log("waiting for the store to appear")
    config.write_text("debounce_ms = 50\nmax_delay_ms = 1000\n")
    daemon.send(signal.SIGHUP)
    assert daemon.wait_for_log("configuration reloaded")["changed"] == {"debounce_ms": "50"}
    time.sleep(0.5)  # room for a wrong READY=1 to arrive
    # Not started yet: systemd must not take the service for ready (or reloading).
    assert all(set(notify_fields(m)) == {"STATUS"} for m in notify.messages())

    h.writer(sessions=3, rate=300, duration=1, seed=43).finish()
    notify.wait_for("READY=1")
    wait_verified(h.db)
    kinds = [next(iter(notify_fields(m))) for m in notify.messages()]
    assert kinds.count("READY") == 1
    assert "RELOADING" not in kinds
    events = [line["event"] for line in daemon.logs()]
    assert events.index("store opened") < events.index("ready")


def test_sighup_applies_a_shorter_reconcile_interval_at_once(h: Harness) -> None:
    config = h.config("debounce_ms = 100\nmax_delay_ms = 1000\n")  # reconcile every 300 s
    daemon = h.daemon("--config", str(config))
    h.writer(sessions=3, rate=300, duration=1.5, seed=44).finish()
    wait_verified(h.db)
    config.write_text("debounce_ms = 100\nmax_delay_ms = 1000\nreconcile_interval_s = 1\n")
    daemon.send(signal.SIGHUP)
    reloaded = daemon.wait_for_log("configuration reloaded")
    assert reloaded["changed"] == {"reconcile_interval_s": "1.0"}

    # Deleted rows: only a reconcile can see them.
    (session,) = query(h.db, "SELECT session_id FROM events ORDER BY id LIMIT 1")[0]
    conn = sqlite3.connect(h.db, isolation_level=None, timeout=30)
    conn.execute("DELETE FROM events WHERE session_id = ? AND kind = 'ToolResult'", (session,))
    conn.close()
    wait_verified(h.db)  # well before the 300 s of the old interval
    h.assert_spans_equal_fresh_rebuild()
    assert daemon.events("reconcile found stale sessions")
