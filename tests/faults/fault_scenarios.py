"""The faults, one function each: inject it for real, then check what spanwatch made of it.

Every function takes a fresh work directory and returns `Trial`s (see
`faultkit`). The tests run them and assert that no trial has problems;
`benchmarks/faults.py` runs them and prints the figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import badrows
from badrows import insert_raw
from faultkit import (
    IDLE_CPU_SHARE,
    PYTHON,
    TIMEOUT_S,
    Daemon,
    Trial,
    Writer,
    clean_env,
    dump_of_others,
    events_digest,
    fill_up,
    loud_lines,
    mark_problems,
    populate,
    problems_in_log,
    recovery,
    small_filesystem,
    wait_caught_up,
)

from spanwatch.store.rebuild_all import rebuild_store
from spanwatch.store.schema import SPAN_COLUMN_NAMES
from stores import backup, make_store

# Crashes ------------------------------------------------------------------------

#: A catch-up in several transactions, so that kills land between them too.
SMALL_BATCHES = {"batch_max_sessions": 2}


def crash_cycles(workdir: Path, cycles: int, *, seed: int = 0) -> list[Trial]:
    """kill -9 the daemon twice per cycle while a writer keeps filling the store.

    A cycle: the daemon is killed at a random moment of its normal work, then
    restarted and killed again at a random moment of its start-up (opening,
    reconcile, catch-up of what came meanwhile). After each kill the watermarks
    must describe exactly the rows their spans came from. Then the writer is
    paused, the daemon restarted, and once it has caught up the stored spans
    must equal a fresh rebuild. Recovery time is from that restart.
    """
    rng = random.Random(seed)
    db = workdir / "store" / "events.db"
    db.parent.mkdir()
    logs = workdir / "logs"
    logs.mkdir()
    # The writer's sessions start within 5% of its duration, and it stops at the end.
    writer = Writer(db, workdir, sessions=8, rate=200, duration=max(60, cycles * 4), seed=seed)
    trials: list[Trial] = []
    daemon: Daemon | None = None
    try:
        writer.wait_for_rows(50)
        daemon = Daemon(db, logs / "daemon-0.log", settings=SMALL_BATCHES)
        daemon.wait_for("ready")
        for cycle in range(cycles):
            trial = Trial("kill -9 (running, then in start-up)")
            trials.append(trial)
            kills: list[str] = []
            for moment in ("running", "start-up"):
                if moment == "start-up":
                    daemon = Daemon(db, logs / f"daemon-{cycle}-up.log", settings=SMALL_BATCHES)
                    daemon.wait_for("starting")
                # Start-up (open, reconcile, catch-up in batches) takes tens of ms.
                time.sleep(rng.uniform(0.0, 0.5 if moment == "running" else 0.08))
                kills.append(_last_event(daemon))
                daemon.kill9()
                daemon.close()
                trial.problems += problems_in_log(daemon)
                trial.problems += [
                    f"after the kill {moment}: {p}" for p in mark_problems(db, workdir)
                ]
            trial.details["killed_after"] = kills
            writer.pause()
            restarted = time.monotonic()
            daemon = Daemon(db, logs / f"daemon-{cycle}.log", settings=SMALL_BATCHES)
            recovery(db, workdir, trial, restarted, daemon=daemon, event="ready")
            trial.problems += problems_in_log(daemon)
            writer.resume()
    finally:
        if daemon is not None:
            daemon.close()
        stats = writer.stop()
    if trials:
        trials[-1].expect(stats.get("events"), f"the writer failed: {stats}")
    return trials


def _last_event(daemon: Daemon) -> str:
    """What the daemon was doing, by its last log line (or 'importing')."""
    lines = [line for line in daemon.lines() if "event" in line]
    return str(lines[-1]["event"]) if lines else "importing"


def kill_moments(trials: list[Trial]) -> dict[str, int]:
    """How many kills landed after each kind of log line."""
    return dict(Counter(event for t in trials for event in t.details.get("killed_after", [])))


# Lock contention ------------------------------------------------------------------

#: A writer committing two-row transactions as fast as it can, with the normal 5 s
#: busy timeout; prints its commits and errors. It pauses a moment between
#: transactions: without that, SQLite's busy handler (which sleeps, then retries)
#: lets one tight loop starve the others past 5 s with no daemon at all.
HAMMER = r"""
import json, sqlite3, sys, time
db, name, seconds, pause_s = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
conn = sqlite3.connect(db, isolation_level=None, timeout=5.0)
sql = ("INSERT INTO events (session_id, seq, ts_ms, kind, source, tool, tool_call_id, payload) "
       "VALUES (?, ?, ?, ?, 'Hook', 'Read', ?, ?)")
commits = errors = seq = 0
worst = 0.0
first_error = None
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    session, call, now = f"{name}-{seq // 40}", f"{name}-call-{seq}", int(time.time() * 1000)
    started = time.perf_counter()
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, (session, seq, now, "ToolCall", call, json.dumps({"file_path": call})))
        conn.execute(sql, (session, seq + 1, now + 3, "ToolResult", call, "{}"))
        conn.execute("COMMIT")
        commits += 1
    except sqlite3.Error as exc:
        errors += 1
        first_error = first_error or str(exc)
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    worst = max(worst, time.perf_counter() - started)
    seq += 2
    time.sleep(pause_s)
print(json.dumps({"commits": commits, "errors": errors, "first_error": first_error,
                  "worst_commit_s": round(worst, 4)}))
"""


HAMMER_PAUSE_S = 0.001


def hammer(db: Path, writers: int, seconds: float, tag: str) -> tuple[list[dict[str, Any]], int]:
    """Run `writers` hammer processes for `seconds`; their reports and the largest -wal size."""
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", HAMMER, str(db), f"{tag}{n}", str(seconds), str(HAMMER_PAUSE_S)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for n in range(writers)
    ]
    wal = db.with_name(db.name + "-wal")
    largest = 0
    while any(proc.poll() is None for proc in procs):
        with contextlib.suppress(OSError):
            largest = max(largest, wal.stat().st_size)
        time.sleep(0.02)
    reports = []
    for proc in procs:
        out, err = proc.communicate()
        try:
            reports.append(json.loads(out.strip().splitlines()[-1]))
        except (json.JSONDecodeError, IndexError):
            reports.append({"commits": 0, "errors": 1, "first_error": err[-500:]})
    return reports, largest


def checkpoint_truncate(db: Path) -> tuple[int, int]:
    """`PRAGMA wal_checkpoint(TRUNCATE)` from a connection of its own: (busy, -wal bytes after)."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=5.0)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    wal = db.with_name(db.name + "-wal")
    return int(busy), wal.stat().st_size if wal.exists() else 0


def _lock_store(workdir: Path) -> tuple[Path, Path]:
    db = workdir / "store" / "events.db"
    db.parent.mkdir()
    logs = workdir / "logs"
    logs.mkdir()
    populate(db, 2000, sessions=8, seed=21)
    return db, logs


def _idle_checkpoints(trial: Trial, db: Path, tries: int = 5) -> None:
    """While the daemon idles, a TRUNCATE checkpoint from elsewhere always succeeds."""
    results = []
    for _ in range(tries):
        results.append(checkpoint_truncate(db))
        time.sleep(0.3)
    trial.details["idle_checkpoints"] = results
    trial.expect(
        all(result == (0, 0) for result in results),
        f"a checkpoint could not complete while the daemon idled: (busy, wal bytes) {results}",
    )


#: The daemon's default busy timeout, in seconds.
BUSY_TIMEOUT_S = 5.0


def lock_held_10s(workdir: Path, hold_s: float = 10.0) -> Trial:
    """Another writer takes the write lock just as the daemon has work, and sits on it."""
    trial = Trial(f"write lock held {hold_s:.0f} s")
    db, logs = _lock_store(workdir)
    # A longer debounce, so the lock is surely taken before the daemon writes.
    daemon = Daemon(db, logs / "daemon.log", settings={"debounce_ms": 300, "max_delay_ms": 600})
    holder = sqlite3.connect(db, isolation_level=None, timeout=5.0)
    try:
        trial.expect(daemon.wait_for("ready") and wait_caught_up(db), "daemon never ready")
        start = len(daemon.lines())
        _insert_tool_use(holder, "held-before", 0)
        holder.execute("BEGIN IMMEDIATE")
        _insert_tool_use(holder, "held-during", 0, commit=False)
        time.sleep(hold_s)
        holder.execute("COMMIT")
        released = time.monotonic()
        recovery(db, workdir, trial, released)
        lines = daemon.lines()[start:]
        trial.details["waits_logged"] = sum(
            line.get("event") == "store locked by another writer, waiting" for line in lines
        )
        if hold_s > BUSY_TIMEOUT_S:  # shorter waits end inside SQLite's busy handler, unlogged
            trial.expect(trial.details["waits_logged"], "the daemon never said it was waiting")
        trial.expect(
            not [line for line in lines if line.get("level") == "error"],
            f"errors logged: {[line for line in lines if line.get('level') == 'error'][:2]}",
        )
        trial.expect(daemon.alive, "the daemon exited")
        trial.problems += problems_in_log(daemon)
    finally:
        holder.close()
        daemon.close()
    return trial


def _insert_tool_use(
    conn: sqlite3.Connection, session: str, seq: int, *, commit: bool = True
) -> None:
    now = int(time.time() * 1000)
    rows = [
        (session, seq, now, "ToolCall", "Hook", "Edit", f"{session}-c{seq}",
         json.dumps({"file_path": f"/src/{session}.py"})),
        (session, seq + 1, now + 7, "ToolResult", "Hook", "Edit", f"{session}-c{seq}", "{}"),
    ]  # fmt: skip
    if commit:
        conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO events (session_id, seq, ts_ms, kind, source, tool, tool_call_id, payload) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    if commit:
        conn.execute("COMMIT")


def fast_writers(workdir: Path, writers: int = 6, seconds: float = 5.0) -> Trial:
    """Many writers committing as fast as they can: first without the daemon, then with it."""
    trial = Trial(f"{writers} writers at full speed")
    db, logs = _lock_store(workdir)
    alone, wal_alone = hammer(db, writers, seconds, "alone")
    checkpoint_truncate(db)
    daemon = Daemon(db, logs / "daemon.log")
    try:
        trial.expect(daemon.wait_for("ready"), "daemon never ready")
        started = time.monotonic()
        beside, wal_beside = hammer(db, writers, seconds, "beside")
        recovery(db, workdir, trial, started + seconds)
        trial.details.update(
            commits_alone=sum(r["commits"] for r in alone),
            commits_beside_daemon=sum(r["commits"] for r in beside),
            worst_commit_s_alone=max(r.get("worst_commit_s", 0) for r in alone),
            worst_commit_s_beside_daemon=max(r.get("worst_commit_s", 0) for r in beside),
            wal_max_bytes_alone=wal_alone,
            wal_max_bytes_beside_daemon=wal_beside,
        )
        errors = [r for r in alone + beside if r["errors"]]
        trial.details["writer_errors"] = sum(r["errors"] for r in errors)
        trial.expect(not errors, f"writers saw errors: {errors[:2]}")
        # The WAL is reused from its start once a checkpoint completes; readers that
        # stay in it (which spanwatch must not be) make it grow instead.
        bound = max(2 * wal_alone, wal_alone + 8 * 2**20)
        trial.expect(wal_beside <= bound, f"-wal grew to {wal_beside} bytes (alone: {wal_alone})")
        time.sleep(0.5)
        _idle_checkpoints(trial, db)
        trial.expect(daemon.alive, "the daemon exited")
        trial.problems += problems_in_log(daemon)
    finally:
        daemon.close()
    return trial


def long_reader(workdir: Path, hold_s: float = 10.0, writers: int = 3) -> Trial:
    """A reader keeps one read transaction open while writers and the daemon carry on."""
    trial = Trial(f"read transaction held {hold_s:.0f} s")
    db, logs = _lock_store(workdir)
    daemon = Daemon(db, logs / "daemon.log")
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        trial.expect(daemon.wait_for("ready"), "daemon never ready")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()
        opened = time.monotonic()
        reports, wal_max = hammer(db, writers, hold_s * 0.6, "reading")
        ended = time.monotonic()
        # The daemon does not wait for the reader: it catches up while the reader stays.
        recovery(db, workdir, trial, ended, timeout=max(1.0, hold_s - (ended - opened)))
        trial.expect(reader.in_transaction, "the reader's transaction ended early")
        reader.execute("COMMIT")
        trial.details.update(writer_errors=sum(r["errors"] for r in reports), wal_max_bytes=wal_max)
        trial.expect(not trial.details["writer_errors"], f"writers saw errors: {reports}")
        time.sleep(0.5)
        _idle_checkpoints(trial, db)
        trial.expect(daemon.alive, "the daemon exited")
        trial.problems += problems_in_log(daemon)
    finally:
        reader.close()
        daemon.close()
    return trial


# The file -------------------------------------------------------------------------

#: How long a bad state is watched: CPU, and whether log lines keep coming.
BAD_STATE_S = 3.0


def _store(workdir: Path, seed: int = 11, events: int = 1500) -> tuple[Path, Path]:
    db = workdir / "store" / "events.db"
    db.parent.mkdir(exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    populate(db, events, sessions=5, seed=seed)
    return db, logs


def _bad_state(
    trial: Trial, daemon: Daemon, start: int, *, lines: tuple[int, int] = (1, 2)
) -> None:
    """In the bad state: alive, near idle, a clear line or two, not one per retry."""
    time.sleep(1.0)
    early = len(loud_lines(daemon, start))
    share = daemon.cpu_share(BAD_STATE_S)
    loud = loud_lines(daemon, start)
    trial.details["cpu_share_waiting"] = round(share, 3)
    trial.details["log"] = [_summary(line) for line in loud]
    trial.expect(daemon.alive, f"the daemon exited ({daemon.proc.returncode})")
    trial.expect(share < IDLE_CPU_SHARE, f"busy loop: {share:.0%} of a CPU while waiting")
    low, high = lines
    trial.expect(
        low <= len(loud) <= high,
        f"expected {low}-{high} warning/error lines, got {trial.details['log']}",
    )
    trial.expect(len(loud) == early, f"log lines keep coming while waiting: {trial.details['log']}")


def _summary(line: dict[str, Any]) -> str:
    extra = {k: v for k, v in line.items() if k in ("error", "hint")}
    return f"{line.get('level')}: {line.get('event')} {extra if extra else ''}".strip()


def _wait_then_recover(
    workdir: Path,
    fault: str,
    damage: Callable[[Path], None],
    repair: Callable[[Path], None],
    *,
    lines: tuple[int, int] = (1, 2),
    settings: dict[str, object] | None = None,
    same_events: bool = True,
    cold: bool = False,
) -> Trial:
    """Damage a watched store, check the daemon waits quietly, repair it, check it recovers.

    With `same_events`, the repaired store must hold exactly the events it held
    before the damage (no stale -wal replayed into it, nothing lost). With
    `cold`, the damage meets a daemon restarted after the catch-up.
    """
    trial = Trial(fault)
    db, logs = _store(workdir)
    daemon = Daemon(db, logs / "daemon.log", settings=settings)
    try:
        if not trial.expect(daemon.wait_for("ready") and wait_caught_up(db), "never ready"):
            return trial
        if cold:  # a daemon that had nothing to do since it started: little in its page cache
            daemon.stop()
            daemon.close()
            daemon = Daemon(db, logs / "daemon-cold.log", settings=settings)
            trial.expect(daemon.wait_for("ready"), "never ready after a restart")
        before = events_digest(db)
        start = len(daemon.lines())
        damage(db)
        _bad_state(trial, daemon, start, lines=lines)
        repaired, line = time.monotonic(), len(daemon.lines())
        repair(db)
        recovery(db, workdir, trial, repaired, daemon=daemon, after_line=line)
        if same_events:
            after = events_digest(db)
            trial.expect(after == before, f"the store's events changed: {after} != {before}")
        trial.problems += problems_in_log(daemon)
        trial.expect(daemon.stop() == 0, "the daemon did not stop cleanly afterwards")
    finally:
        daemon.close()
    return trial


def _remove_store(db: Path) -> None:
    for path in (db, *_sidecars(db)):
        path.unlink(missing_ok=True)


def _sidecars(db: Path) -> tuple[Path, Path]:
    return db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")


def store_deleted_and_recreated(workdir: Path) -> Trial:
    """The store is deleted (with its -wal and -shm); later an agent makes a new one."""
    return _wait_then_recover(
        workdir,
        "store deleted, then recreated",
        _remove_store,
        lambda db: populate(db, 800, sessions=3, seed=12),
        same_events=False,
    )


def store_replaced_by_rename(workdir: Path) -> Trial:
    """Another complete store is renamed over the watched one."""
    trial = Trial("store replaced by rename")
    db, logs = _store(workdir)
    other = db.with_name("other.db")
    populate(other, 800, sessions=3, seed=13)
    expected = events_digest(other)
    daemon = Daemon(db, logs / "daemon.log")
    try:
        if not trial.expect(daemon.wait_for("ready") and wait_caught_up(db), "never ready"):
            return trial
        start = len(daemon.lines())
        replaced = time.monotonic()
        other.replace(db)
        recovery(db, workdir, trial, replaced, daemon=daemon, after_line=start)
        loud = loud_lines(daemon, start)
        trial.details["log"] = [_summary(line) for line in loud]
        trial.expect(len(loud) == 1, f"expected one warning, got {trial.details['log']}")
        trial.expect(
            marks_session_count(db) == 3, "the new store's marks are not its own sessions'"
        )
        held = events_digest(db)
        trial.expect(held == expected, f"the new store's events changed: {held} != {expected}")
        trial.problems += problems_in_log(daemon)
        trial.expect(daemon.stop() == 0, "the daemon did not stop cleanly afterwards")
    finally:
        daemon.close()
    return trial


def marks_session_count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM spanwatch_sessions").fetchone()[0])
    finally:
        conn.close()


def store_moved_away(workdir: Path) -> Trial:
    """The store is moved to another name, then back."""
    away: dict[str, Path] = {}

    def move(db: Path) -> None:
        away["to"] = db.with_name("moved.db")
        db.rename(away["to"])

    def move_back(db: Path) -> None:
        away["to"].rename(db)

    return _wait_then_recover(workdir, "store moved away, then back", move, move_back)


def _append_rows(db: Path, session: str, tool_uses: int = 1) -> None:
    conn = sqlite3.connect(db, isolation_level=None, timeout=5.0)
    try:
        for n in range(tool_uses):
            _insert_tool_use(conn, session, 2 * n)
    finally:
        conn.close()


def store_truncated_to_garbage(workdir: Path) -> Trial:
    """The file (same inode) is cut short and overwritten with random bytes, then restored."""
    saved: dict[str, bytes] = {}

    def ruin(db: Path) -> None:
        copy = backup(db, db.with_name("good.db"))
        saved["bytes"] = copy.read_bytes()
        copy.unlink()
        with db.open("r+b") as fh:
            fh.truncate(0)
            fh.write(random.Random(5).randbytes(100))

    def restore(db: Path) -> None:
        with db.open("r+b") as fh:
            fh.truncate(0)
            fh.write(saved["bytes"])

    # SQLite answers from its page cache while the wal-index says nothing changed:
    # a daemon that has read the store may not notice (0 lines) until it needs a
    # page it lacks; one restarted since (`cold`) reads and must say so once.
    return _wait_then_recover(
        workdir,
        "store truncated to garbage",
        ruin,
        restore,
        lines=(1, 1),
        settings={"reconcile_interval_s": 1},
        cold=True,
    )


def store_replaced_by_non_sqlite(workdir: Path) -> Trial:
    """A file that is not SQLite at all is renamed over the store, then the store comes back."""
    saved: dict[str, Path] = {}

    def replace(db: Path) -> None:
        saved["good"] = backup(db, db.with_name("good.db"))
        text = db.with_name("notes.txt")
        text.write_text("these are not the events you are looking for\n" * 2000)
        text.replace(db)

    def restore(db: Path) -> None:
        saved["good"].replace(db)

    return _wait_then_recover(workdir, "store replaced by a non-SQLite file", replace, restore)


def unusable_at_start(workdir: Path) -> list[Trial]:
    """A daemon started on garbage, or on a file that is not SQLite, exits 2 and says why."""
    trials = []
    for fault, content in (
        ("garbage store at start", b"SQLite format 3\x00" + random.Random(6).randbytes(5000)),
        ("non-SQLite file at start", b"name,value\nthis,is a csv\n" * 100),
    ):
        trial = Trial(fault)
        trials.append(trial)
        case = workdir / fault.replace(" ", "-")
        case.mkdir()
        db = case / "events.db"
        db.write_bytes(content)
        daemon = Daemon(db, case / "daemon.log")
        try:
            _expect_exit_2(trial, daemon, ("--db",))
        finally:
            daemon.close()
        populate(db.with_name("good.db"), 500, sessions=2, seed=14)
        db.with_name("good.db").replace(db)
        fixed = time.monotonic()
        daemon = Daemon(db, case / "daemon-fixed.log")
        try:
            recovery(db, case, trial, fixed, daemon=daemon, event="ready")
            trial.problems += problems_in_log(daemon)
        finally:
            daemon.close()
    return trials


def _expect_exit_2(trial: Trial, daemon: Daemon, says: tuple[str, ...]) -> None:
    code = daemon.exit_code(TIMEOUT_S)
    loud = loud_lines(daemon)
    trial.details["exit_code"] = code
    trial.details["log"] = [_summary(line) for line in loud]
    trial.expect(code == 2, f"exit code {code}, expected 2")
    trial.expect(len(loud) == 1, f"expected one error line, got {trial.details['log']}")
    text = " ".join(trial.details["log"])
    trial.expect(all(word in text for word in says), f"the message does not mention {says}")
    trial.problems += problems_in_log(daemon)


def _nobody() -> int | None:
    """The uid to run a daemon as for permission faults (root ignores file modes)."""
    return 65534 if os.geteuid() == 0 else None


@contextlib.contextmanager
def _directory_for(user: int | None) -> Iterator[Path]:
    """A directory `user` can reach and write (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="spanwatch-fault-"))
    try:
        base.chmod(0o755)
        if user is not None:
            os.chown(base, user, user)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _give(paths: Sequence[Path], user: int | None) -> None:
    for path in paths:
        if user is not None and path.exists():
            os.chown(path, user, user)


def read_only_at_start(workdir: Path) -> Trial:
    """A store the daemon's user cannot write: exit 2 saying so, even with nothing to rebuild."""
    trial = Trial("read-only store at start")
    user = _nobody()
    with _directory_for(user) as base:
        db = base / "events.db"
        populate(db, 800, sessions=3, seed=15)
        rebuild_store(db)  # nothing stale: the daemon would have nothing to write at first
        _give([db, *_sidecars(db)], user)
        db.chmod(0o444)
        daemon = Daemon(db, workdir / "daemon.log", user=user)
        try:
            _expect_exit_2(trial, daemon, ("write",))
        finally:
            daemon.close()
        db.chmod(0o644)
        _append_rows(db, "after-chmod")
        _give([db, *_sidecars(db)], user)
        fixed = time.monotonic()
        daemon = Daemon(db, workdir / "daemon-fixed.log", user=user)
        try:
            recovery(db, workdir, trial, fixed, daemon=daemon, event="ready")
            trial.problems += problems_in_log(daemon)
        finally:
            daemon.close()
    return trial


def made_read_only_while_running(workdir: Path) -> Trial:
    """The store is swapped for a read-only copy under a running daemon, then made writable."""
    trial = Trial("store made read-only while running")
    user = _nobody()
    with _directory_for(user) as base:
        db = base / "events.db"
        populate(db, 800, sessions=3, seed=16)
        _give([db], user)
        daemon = Daemon(db, workdir / "daemon.log", user=user)
        try:
            if not trial.expect(daemon.wait_for("ready") and wait_caught_up(db), "never ready"):
                return trial
            start = len(daemon.lines())
            # An open file stays writable whatever its mode: the daemon meets the new
            # mode when it reopens, here because the file is replaced.
            copy = backup(db, base / "copy.db")
            _append_rows(copy, "while-read-only")
            _give([copy], user)
            copy.chmod(0o444)
            expected = events_digest(copy)
            copy.replace(db)
            _bad_state(trial, daemon, start)
            text = " ".join(trial.details["log"])
            trial.expect("write" in text, "no line says spanwatch cannot write the store")
            fixed, line = time.monotonic(), len(daemon.lines())
            db.chmod(0o644)
            recovery(db, workdir, trial, fixed, daemon=daemon, after_line=line)
            held = events_digest(db)
            trial.expect(held == expected, f"the copy's events changed: {held} != {expected}")
            trial.problems += problems_in_log(daemon)
            trial.expect(daemon.stop() == 0, "the daemon did not stop cleanly afterwards")
        finally:
            daemon.close()
    return trial


#: `spanwatch` with a page limit on the daemon's own connection: `PRAGMA
#: max_page_count` is per connection, so only the daemon meets a "full disk".
#: Before each write transaction, the limit is set to the store's current size
#: plus the number of pages in the file $FAULT_PAGE_LIMIT.
PAGE_LIMIT_WRAPPER = r"""
import contextlib, os
from pathlib import Path
from spanwatch.store import rebuild
from spanwatch.cli.main import entry
limit = Path(os.environ["FAULT_PAGE_LIMIT"])
original = rebuild.write_transaction
@contextlib.contextmanager
def limited(conn, **kwargs):
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + int(limit.read_text())}")
    with original(conn, **kwargs) as inside:
        yield inside
rebuild.write_transaction = limited
entry()
"""


def full_disk(workdir: Path, method: str = "tmpfs") -> Trial | None:
    """The disk fills up just as the daemon has spans to write; later space is freed.

    `method` "tmpfs": the store lives on a small tmpfs that a filler file fills
    (None if mounting is not permitted here). "page-limit": the daemon's own
    connection gets `PRAGMA max_page_count` at its current size.
    """
    trial = Trial(f"full disk ({method})")
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        command: list[str] | None = None
        if method == "tmpfs":
            mount = stack.enter_context(small_filesystem(workdir, "8m"))
            if mount is None:
                return None
            db = mount / "events.db"
        else:
            db = workdir / "store" / "events.db"
            db.parent.mkdir()
            limit = workdir / "page-limit"
            limit.write_text("1000000")
            env["FAULT_PAGE_LIMIT"] = str(limit)
            command = [PYTHON, "-c", PAGE_LIMIT_WRAPPER]
        populate(db, 1500, sessions=4, seed=17)
        daemon = stack.enter_context(
            contextlib.closing(Daemon(db, workdir / "daemon.log", command=command, env=env))
        )
        if not trial.expect(daemon.wait_for("ready") and wait_caught_up(db), "never ready"):
            return trial
        start = len(daemon.lines())
        if method == "tmpfs":
            os.kill(daemon.pid, signal.SIGSTOP)  # so that it meets the full disk with work to do
            for n in range(3):
                _append_rows(db, f"disk-full-{n}")
            checkpoint_truncate(db)  # an empty -wal: the daemon's write needs new space
            filler = fill_up(db.parent)
            os.kill(daemon.pid, signal.SIGCONT)
        else:
            limit.write_text("0")
            for n in range(3):  # enough spans that the daemon needs new pages
                _append_rows(db, f"disk-full-{n}", tool_uses=100)
        _bad_state(trial, daemon, start)
        text = " ".join(trial.details["log"])
        trial.expect("full" in text, "no line says the disk is full")
        freed, line = time.monotonic(), len(daemon.lines())
        if method == "tmpfs":
            filler.unlink()
        else:
            limit.write_text("1000000")
        recovery(db, workdir, trial, freed, daemon=daemon, after_line=line)
        trial.problems += problems_in_log(daemon)
        trial.expect(daemon.stop() == 0, "the daemon did not stop cleanly afterwards")
    return trial


# Bad rows and bad schemas -------------------------------------------------------


def bad_rows(workdir: Path, *, seed: int = 0, rounds: int = 3) -> Trial:
    """A loose store filled with good rows and every kind of bad one, some while the daemon runs.

    The daemon must keep running, skip and count each bad row (a log line with
    its session and seq), and store exactly the spans the valid rows make.
    """
    trial = Trial("bad rows (fuzzed types, NULLs, bytes, huge/deep payloads)")
    rng = random.Random(seed)
    db = workdir / "store" / "events.db"
    db.parent.mkdir()
    writer = make_store(db, loose=True)
    daemon: Daemon | None = None
    try:
        insert_raw(writer, badrows.messy_sessions(rng, 4, "before"))
        daemon = Daemon(db, workdir / "daemon.log")
        if not trial.expect(daemon.wait_for("ready"), "never ready"):
            return trial
        for n in range(rounds):
            insert_raw(writer, badrows.messy_sessions(rng, 3, f"during{n}"))
        done = time.monotonic()
        _check_bad_rows(trial, daemon, db, workdir)
        trial.recover_s = round(time.monotonic() - done, 3) if trial.recovered else None
        trial.expect(daemon.alive, "the daemon exited")
        trial.problems += problems_in_log(daemon)
    finally:
        writer.close()
        if daemon is not None:
            daemon.close()
    return trial


def _check_bad_rows(trial: Trial, daemon: Daemon, db: Path, workdir: Path) -> None:
    caught_up = wait_caught_up(db)
    if not trial.expect(caught_up, "did not catch up"):
        return
    conn = sqlite3.connect(db)
    try:
        judged = badrows.verdicts(conn)
        got = badrows.canonical_spans(conn, SPAN_COLUMN_NAMES)
        counted = dict(conn.execute("SELECT session_id, skipped_rows FROM spanwatch_sessions"))
    finally:
        conn.close()
    expected = badrows.expected_store(judged, workdir / "expected.db")
    conn = sqlite3.connect(expected)
    try:
        want = badrows.canonical_spans(conn, SPAN_COLUMN_NAMES)
    finally:
        conn.close()
    differences = badrows.span_differences(got, want)
    trial.rows_lost = sum(not d.startswith("unexpected") for d in differences)
    trial.expect(not differences, f"spans differ from the valid rows' ({differences[:3]})")
    bad = [v for v in judged if not v.valid and v.session_id is not None]
    due = Counter(v.session_id for v in bad)
    trial.details.update(rows=len(judged), bad_rows=len(bad), sessions=len(counted))
    trial.expect(
        all(counted.get(s) == n for s, n in due.items()),
        f"skipped_rows per session {counted} differ from the bad rows {dict(due)}",
    )
    logged = {
        (line.get("session_id"), line.get("row_id"))
        for line in daemon.events("row skipped")
        if "seq" in line
    }
    unlogged = [v.row_id for v in bad if (v.session_id, v.row_id) not in logged]
    trial.expect(not unlogged, f"bad rows never logged with session and seq: {unlogged[:5]}")
    trial.recovered = not differences


def _rows_as_current(source: Path, dest: Path) -> Path:
    """`source`'s events in a store of the current schema: the rows an old store stands for."""
    conn = sqlite3.connect(source)
    present = [r[1] for r in conn.execute("PRAGMA table_info(events)")]
    wanted = [c for c in ("id", *badrows.COLUMNS) if c in present]
    rows = [dict(zip(wanted, row, strict=True)) for row in conn.execute(
        f"SELECT {', '.join(wanted)} FROM events"
    )]  # fmt: skip
    conn.close()
    target = make_store(dest)
    insert_raw(target, rows)
    target.close()
    rebuild_store(dest)
    return dest


def _compare_spans_with(trial: Trial, db: Path, expected: Path) -> None:
    conns = [sqlite3.connect(db), sqlite3.connect(expected)]
    try:
        got, want = (badrows.canonical_spans(c, SPAN_COLUMN_NAMES) for c in conns)
    finally:
        for conn in conns:
            conn.close()
    differences = badrows.span_differences(got, want)
    trial.rows_lost = sum(not d.startswith("unexpected") for d in differences)
    trial.recovered = trial.expect(not differences, f"spans differ: {differences[:3]}")


def events_schemas(workdir: Path) -> list[Trial]:
    """`events` of the first store version (no optional columns), and with extra columns."""
    trials = []
    for fault, version, extra in (
        ("events without the optional columns (v1)", "v1", ()),
        ("events with extra columns", "current", ("notes BLOB", "mood TEXT NOT NULL DEFAULT 'ok'")),
    ):
        trial = Trial(fault)
        trials.append(trial)
        case = workdir / version
        case.mkdir()
        db = case / "events.db"
        populate(db, 1200, sessions=4, seed=18, version=version)
        conn = sqlite3.connect(db, isolation_level=None)
        for column in extra:
            conn.execute(f"ALTER TABLE events ADD COLUMN {column}")
        conn.close()
        daemon = Daemon(db, case / "daemon.log")
        try:
            started = time.monotonic()
            if not trial.expect(daemon.wait_for("ready") and wait_caught_up(db), "never ready"):
                continue
            trial.recover_s = round(time.monotonic() - started, 3)
            _compare_spans_with(trial, db, _rows_as_current(db, case / "expected.db"))
            trial.problems += problems_in_log(daemon)
        finally:
            daemon.close()
    return trials


#: tool_spans as an older version left it: fewer columns, one of its own, stale rows.
OLD_TOOL_SPANS = (
    "CREATE TABLE tool_spans (span_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, tool TEXT, "
    "status TEXT NOT NULL, started_at_ms INTEGER, ended_at_ms INTEGER, "
    "paths_json TEXT NOT NULL DEFAULT '[]', legacy_note TEXT DEFAULT 'kept')",
    "CREATE TABLE tool_span_paths (span_id TEXT NOT NULL, path TEXT NOT NULL, "
    "PRIMARY KEY (span_id, path))",
    "INSERT INTO tool_spans (span_id, session_id, tool, status, legacy_note) "
    "VALUES ('stale-span', 'gone-session', 'Read', 'completed', 'mine')",
)


def old_tool_spans(workdir: Path) -> Trial:
    """A tool_spans table from an older version: missing columns added, nothing dropped."""
    trial = Trial("tool_spans from an older version")
    db = workdir / "events.db"
    populate(db, 1200, sessions=4, seed=19)
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in OLD_TOOL_SPANS:
        conn.execute(statement)
    conn.close()
    daemon = Daemon(db, workdir / "daemon.log")
    try:
        started = time.monotonic()
        if not trial.expect(daemon.wait_for("ready") and wait_caught_up(db), "never ready"):
            return trial
        trial.recover_s = round(time.monotonic() - started, 3)
        _compare_spans_with(trial, db, _rows_as_current(db, workdir / "expected.db"))
        conn = sqlite3.connect(db)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(tool_spans)")]
        notes = {row[0] for row in conn.execute("SELECT DISTINCT legacy_note FROM tool_spans")}
        conn.close()
        trial.expect("legacy_note" in columns, "a column of the older table was dropped")
        trial.expect(set(SPAN_COLUMN_NAMES) <= set(columns), f"columns missing: {columns}")
        trial.expect(notes <= {"kept", None}, f"legacy values: {notes}")
        trial.problems += problems_in_log(daemon)
    finally:
        daemon.close()
    return trial


# Writers that change rows in place ------------------------------------------------

#: A recorder that upserts on (session_id, seq): rows change without a new rowid.
UPSERT = (
    "INSERT INTO events (session_id, seq, ts_ms, kind, source, tool, tool_call_id, payload) "
    "VALUES (?, ?, ?, 'ToolCall', 'Tail', ?, ?, ?) ON CONFLICT(session_id, seq) DO UPDATE SET "
    "tool = excluded.tool, payload = excluded.payload"
)


def in_place_writer(workdir: Path, capture: str, *, rounds: int = 40, seed: int = 0) -> Trial:
    """Rows rewritten in place (and new ones appended) under a daemon with `capture`.

    "rowid" cannot see the rewrites: `spanwatch verify` must then name the
    sessions as wrong (not pending). "triggers" must catch them all, keep
    `spanwatch_dirty` drained, and `spanwatch triggers remove` must take the
    triggers and the table out.
    """
    trial = Trial(f"rows changed in place (capture={capture})")
    rng = random.Random(seed)
    db, logs = _store(workdir, seed=20, events=1200)
    daemon = Daemon(db, logs / "daemon.log", settings={"capture": capture})
    writer = sqlite3.connect(db, isolation_level=None, timeout=5.0)
    try:
        if not trial.expect(daemon.wait_for("ready") and wait_caught_up(db), "never ready"):
            return trial
        calls = writer.execute(
            "SELECT session_id, seq, ts_ms, tool_call_id FROM events WHERE kind = 'ToolCall' "
            "AND tool_call_id IS NOT NULL"
        ).fetchall()
        dirty_max = 0
        for n in range(rounds):
            session, seq, ts, call = rng.choice(calls)
            payload = json.dumps({"file_path": f"/rewritten/{n}.py"})
            writer.execute(UPSERT, (session, seq, ts, rng.choice(["Edit", "Write"]), call, payload))
            if n % 5 == 0:
                _insert_tool_use(writer, session, 1_000_000 + n * 2)
            dirty_max = max(dirty_max, _dirty_rows(db))
            time.sleep(0.02)
        changed = time.monotonic()
        time.sleep(1.0)  # several debounce windows and polls: whatever the daemon will see
        wait_caught_up(db)
        code, report = spanwatch_json("verify", db)
        trial.details.update(verify_exit=code, dirty_rows_max=dirty_max)
        wrong = [d for d in report.get("differences", []) if not d["pending"]]
        if capture == "rowid":
            trial.rows_lost = sum(len(d["differences"]) for d in wrong)
            trial.expect(code == 1 and wrong, f"verify did not report the rewrites: {report}")
        else:
            trial.recover_s = round(time.monotonic() - changed, 3)
            trial.recovered = trial.expect(code == 0, f"verify found differences: {wrong[:2]}")
            trial.expect(_dirty_rows(db) == 0, "spanwatch_dirty was not drained")
            trial.expect(dirty_max <= len(calls), f"spanwatch_dirty grew to {dirty_max} rows")
        trial.problems += problems_in_log(daemon)
        trial.expect(daemon.stop() == 0, "the daemon did not stop cleanly")
        if capture == "triggers":
            _remove_triggers(trial, db, writer)
    finally:
        writer.close()
        daemon.close()
    return trial


def _dirty_rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'spanwatch_dirty'"
        ).fetchone()
        if not row[0]:
            return 0
        return int(conn.execute("SELECT count(*) FROM spanwatch_dirty").fetchone()[0])
    finally:
        conn.close()


def _remove_triggers(trial: Trial, db: Path, writer: sqlite3.Connection) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "spanwatch", "triggers", "remove", "--db", str(db)],
        capture_output=True, text=True, env=clean_env(), timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    left = writer.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE 'spanwatch_events_%' "
        "OR name = 'spanwatch_dirty'"
    ).fetchall()
    trial.expect(done.returncode == 0, f"triggers remove failed: {done.stderr}")
    trial.expect(not left, f"left behind: {left}")
    session = writer.execute("SELECT session_id FROM events LIMIT 1").fetchone()[0]
    _insert_tool_use(writer, session, 2_000_000)  # the recorder still writes without them


def spanwatch_json(command: str, db: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run `spanwatch COMMAND --db DB --json`; its exit code and output."""
    done = subprocess.run(
        [PYTHON, "-m", "spanwatch", command, "--db", str(db), "--json", *args],
        capture_output=True, text=True, env=clean_env(), timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError:
        return done.returncode, {"stdout": done.stdout, "stderr": done.stderr}


# Security ------------------------------------------------------------------------

#: The agent's other tables, a view, an index and a trigger of its own: none may change.
AGENT_OBJECTS = (
    "CREATE TABLE agent_sessions (id TEXT PRIMARY KEY, title TEXT, started_ms INTEGER, blob BLOB)",
    "INSERT INTO agent_sessions VALUES ('a', 'fix the build', 1700000000000, x'00ff10'), "
    "('b', 'naïve ünïcode\nnewline', NULL, NULL)",
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "INSERT INTO settings VALUES ('theme', 'dark'), ('limit', 3.5)",
    "CREATE TABLE event_counts (session_id TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    "CREATE TRIGGER agent_count AFTER INSERT ON events BEGIN INSERT INTO event_counts "
    "VALUES (NEW.session_id, 1) ON CONFLICT(session_id) DO UPDATE SET n = n + 1; END",
    "CREATE INDEX agent_events_ts ON events(ts_ms)",
    "CREATE VIEW agent_recent AS SELECT session_id, max(ts_ms) AS last FROM events "
    "GROUP BY session_id",
    "PRAGMA user_version = 7",
)


def security(workdir: Path) -> Trial:
    """Other tables byte-identical after runs in both capture modes; private files; no sockets.

    The store file is 0600 and its -wal and -shm are gone before the daemon
    starts, so every file the daemon makes is its own: none may be readable by
    others. The daemon's sockets are listed while it works: AF_UNIX only (its
    sd_notify datagrams), no network.
    """
    trial = Trial("security: other tables, file modes, sockets")
    db = workdir / "store" / "events.db"
    db.parent.mkdir()
    populate(db, 1500, sessions=5, seed=22)
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in AGENT_OBJECTS:
        conn.execute(statement)
    conn.close()
    db.chmod(0o600)
    before = dump_of_others(db)
    files_before = set(os.listdir(db.parent))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # systemd's end of sd_notify
    notify.bind(str(workdir / "notify.sock"))
    env = {"NOTIFY_SOCKET": str(workdir / "notify.sock")}
    with contextlib.closing(notify):
        for settings in ({"capture": "rowid"}, {"capture": "triggers"}):
            log = workdir / f"daemon-{settings['capture']}.log"
            with contextlib.closing(Daemon(db, log, settings=settings, env=env)) as daemon:
                ready = daemon.wait_for("ready") and wait_caught_up(db)
                if not trial.expect(ready, "never ready"):
                    return trial
                _check_private_files(trial, db.parent, files_before)
                sockets = daemon.sockets()
                trial.details.setdefault("sockets", []).append(sorted(sockets))
                trial.expect(sockets <= {"AF_UNIX"}, f"the daemon has sockets {sockets}")
                os.kill(daemon.pid, signal.SIGHUP)
                trial.expect(daemon.stop() == 0, "the daemon did not stop cleanly")
            _check_private_files(trial, db.parent, files_before)
    subprocess.run(
        [PYTHON, "-m", "spanwatch", "triggers", "remove", "--db", str(db)],
        capture_output=True, env=clean_env(), timeout=TIMEOUT_S, check=True,
    )  # fmt: skip
    after = dump_of_others(db)
    changed = sorted(set(before) ^ set(after))
    trial.details["dump_statements"] = len(before)
    trial.recovered = trial.expect(
        before == after, f"other tables changed: {[s[:120] for s in changed[:4]]}"
    )
    return trial


def _check_private_files(trial: Trial, directory: Path, before: set[str]) -> None:
    for name in sorted(set(os.listdir(directory)) - before):
        mode = (directory / name).stat().st_mode & 0o777
        trial.details.setdefault("files_made", {})[name] = oct(mode)
        trial.expect(not mode & 0o007, f"{name} is open to others ({oct(mode)})")
