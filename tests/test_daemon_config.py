"""`spanwatch run` end to end: configuration sources and errors, logs, read-only tools."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from daemon_harness import (
    LOG_KEYS,
    Harness,
    data_version_probe,
    harness,
    has_events,
    insert,
    live_marks,
    query,
    real_differences,
    spanwatch,
    tool_use,
    verify,
    wait_until,
    wait_verified,
)

pytestmark = pytest.mark.slow

FAST = ("--debounce-ms", "100", "--max-delay-ms", "1000")
#: Log events about one session: each must say which (`session_id`).
PER_SESSION_EVENTS = {
    "session rebuilt",
    "row skipped",
    "token count outside u32, read as NULL",
    "store busy, session will be retried",
    "session rebuild failed",
    "span id already owned by another session, stored under a namespaced id",
}


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def _without_time(record: dict[str, object]) -> tuple[tuple[str, object], ...]:
    return tuple((k, v) for k, v in record.items() if k != "timestamp")


def test_invalid_config_values_stop_the_start_with_key_value_and_reason(h: Harness) -> None:
    config = h.config('debounce_ms = -5\ncapture = "sometimes"\n')
    done = spanwatch(
        "run", "--db", str(h.db), "--config", str(config),
        env={"SPANWATCH_POLL_INTERVAL_MS": "soon"},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    problems = done.stderr.strip().splitlines()
    assert problems[0].startswith("spanwatch: error: invalid configuration:")
    text = done.stderr
    assert f"debounce_ms: -5: must be >= 0 (from {config})" in text
    assert "capture: \"sometimes\": must be one of 'rowid' or 'triggers'" in text
    assert 'poll_interval_ms: "soon": must be a whole number (from environment ' in text
    assert "SPANWATCH_POLL_INTERVAL_MS" in text
    assert "Traceback" not in text

    # A flag is checked the same way, and names where the value came from.
    done = spanwatch("run", "--db", str(h.db), "--debounce-ms", "3000", "--max-delay-ms", "100")
    assert done.returncode == 2
    assert "max_delay_ms: 100: must be >= debounce_ms (3000) (from the command line)" in done.stderr
    # So is a misspelt key.
    config.write_text("debounce = 100\n")
    done = spanwatch("run", "--db", str(h.db), "--config", str(config))
    assert done.returncode == 2
    assert "debounce: unknown setting" in done.stderr
    assert "did you mean debounce_ms?" in done.stderr
    assert not h.db.exists()


def test_environment_beats_toml_and_flags_beat_environment(h: Harness) -> None:
    config = h.config(f'db = "{h.db}"\ndebounce_ms = 111\nmax_delay_ms = 5000\n')

    def started_with(*args: str, env: dict[str, str]) -> dict[str, object]:
        daemon = h.daemon(*args, env=env, with_db=False)
        line = daemon.wait_for_log("starting")
        daemon.wait_for_log("waiting for the store to appear")  # no store: it waits
        assert daemon.stop() == 0
        return line

    toml = started_with(env={"SPANWATCH_CONFIG": str(config)})
    assert (toml["db"], toml["debounce_ms"], toml["max_delay_ms"]) == (str(h.db), 111, 5000)

    other_db = h.workdir / "other.db"
    env = {
        "SPANWATCH_CONFIG": str(config),
        "SPANWATCH_DEBOUNCE_MS": "222",
        "SPANWATCH_DB": str(other_db),
    }
    from_env = started_with(env=env)
    assert (from_env["db"], from_env["debounce_ms"], from_env["max_delay_ms"]) == (
        str(other_db), 222, 5000,
    )  # fmt: skip

    flags = started_with(
        "--config", str(config), "--debounce-ms", "333", "--db", str(h.db), env=env
    )
    assert (flags["db"], flags["debounce_ms"], flags["max_delay_ms"]) == (str(h.db), 333, 5000)


def test_every_log_line_is_json_and_session_lines_carry_session_id(h: Harness) -> None:
    secret = "SECRET-PAYLOAD-CONTENT"
    h.writer(sessions=3, rate=300, duration=1, seed=51).finish()
    # No --log-format: "auto" writes JSON lines when stderr is not a terminal (journald).
    daemon = h.daemon(*FAST, "--log-level", "debug", log_format=None)
    daemon.wait_for_log("ready")
    # Rows that make per-session warnings: a negative timestamp, a token count past u32.
    bad = tool_use("odd-session", 1, 5_000, "odd-call", path=f"/{secret}")
    bad[1]["tokens_in"] = 2**32
    insert(h.db, [*bad, {**bad[0], "seq": 7, "ts_ms": -1}])
    daemon.wait_for_log("row skipped")
    h.writer(sessions=2, rate=300, duration=1, seed=52).finish()
    wait_verified(h.db)
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0

    lines = daemon.raw_lines()
    records = [json.loads(line) for line in lines]  # each line is one JSON object
    assert len(records) == len(lines) > 10
    levels = {"debug", "info", "warning", "error", "critical"}
    for record in records:
        assert list(record)[:3] == list(LOG_KEYS), record
        assert record["level"] in levels
        assert isinstance(record["event"], str) and record["event"]
        assert datetime.fromisoformat(record["timestamp"]).utcoffset() is not None
        if record["event"] in PER_SESSION_EVENTS or {"seq", "span_id"} & record.keys():
            assert isinstance(record.get("session_id"), str), record
    events = {record["event"] for record in records}
    assert {"starting", "store opened", "ready", "batch", "session rebuilt", "stopped"} <= events
    # The same row each time it is read: its session, seq and the reason, never its payload.
    skipped = {_without_time(r) for r in records if r["event"] == "row skipped"}
    (row,) = (dict(fields) for fields in skipped)
    assert (row["session_id"], row["seq"], row["reason"]) == (
        "odd-session", 7, "ts_ms is negative (-1)",
    )  # fmt: skip
    tokens = {_without_time(r) for r in records if r["event"].startswith("token count")}
    (token,) = (dict(fields) for fields in tokens)
    assert (token["session_id"], token["column"], token["value"]) == (
        "odd-session", "tokens_in", 2**32,
    )  # fmt: skip
    rebuilt = {r["session_id"] for r in records if r["event"] == "session rebuilt"}
    assert rebuilt == set(live_marks(h.db))
    stopped = records[-1]
    assert stopped["event"] == "stopped"
    assert stopped["sessions_rebuilt"] >= 6 and stopped["skipped_rows"] >= 1
    assert secret not in "\n".join(lines)  # payload contents never reach the log


def test_status_and_verify_work_while_the_daemon_runs_and_write_nothing(h: Harness) -> None:
    writer = h.writer(sessions=5, rate=400, duration=4, seed=53)
    wait_until(lambda: has_events(h.db), what="the first events")
    daemon = h.daemon(*FAST)
    daemon.wait_for_log("ready")
    checks = 0
    while writer.alive:  # while events and spans are being written
        done = spanwatch("status", "--db", str(h.db), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["events"] > 0
        _, report = verify(h.db)
        assert real_differences(report) == []  # a difference is only ever "pending"
        checks += 1
    writer.finish()
    assert checks >= 1
    wait_verified(h.db)

    # Idle now: the daemon writes nothing when nothing changed, so any commit
    # between the two probes below would be one of the read-only tools.
    probe = data_version_probe(h.db)
    files = [h.db, h.db.with_name("events.db-wal")]

    def file_state() -> list[tuple[int, int]]:
        return [(os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]

    version, state = probe(), file_state()
    session = query(h.db, "SELECT session_id FROM events LIMIT 1")[0][0]
    runs = [
        spanwatch("status", "--db", str(h.db)),
        spanwatch("status", "--db", str(h.db), "--json", "--sessions"),
        spanwatch("verify", "--db", str(h.db)),
        spanwatch("verify", "--db", str(h.db), "--json", "--session", session),
    ]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], [run.stderr for run in runs]
    assert probe() == version
    assert file_state() == state

    status = json.loads(runs[1].stdout)
    assert status["stale_session_count"] == 0
    assert status["lag_events"] == 0
    assert status["sessions"] == len(status["sessions_detail"]) == 5
    assert status["events"] == sum(s["events"] for s in status["sessions_detail"])
    assert "0 sessions differ" in runs[2].stdout
    assert json.loads(runs[3].stdout)["sessions"] == 1
    assert daemon.alive


def test_a_file_that_is_not_a_store_stops_the_start_with_exit_2(h: Harness) -> None:
    h.db.write_bytes(b"just some text, not SQLite\n" * 10)
    daemon = h.daemon()
    assert daemon.wait_exit() == 2
    (error,) = daemon.events("cannot use the store")
    assert error["level"] == "error"
    assert "not a usable SQLite database" in error["error"]
    assert error["hint"] == "check --db: it must point at the agent's SQLite event store"
    assert h.db.read_bytes() == b"just some text, not SQLite\n" * 10  # left alone
