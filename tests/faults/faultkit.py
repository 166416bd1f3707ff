"""The fault suite's machinery: real daemons, real writers, real damage, and the checks.

Shared by the tests beside this file and by `benchmarks/faults.py`, which runs
the same scenarios and prints their figures. Nothing is mocked: the daemon is
`python -m spanwatch run` in its own process, killed with real signals; the
agent side is the simulator's live writer or plain SQLite connections; a full
disk is a small tmpfs.

Each scenario returns `Trial`s: whether spanwatch recovered, how many spans a
fresh rebuild has that the store lacks or holds differently (rows lost), how
long recovery took, and every broken expectation in `problems`. The tests
assert that `problems` is empty; they never assert a time (the machine is
shared); the benchmark prints the times.

This folder has no `__init__.py` on purpose: `benchmarks/faults.py` would
otherwise be a second module named `faults` for mypy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil  # type: ignore[import-untyped]  # no stubs among the test tools

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # `stores` lives there; pytest puts only this folder on the path
    sys.path.insert(0, str(TESTS))

from spanwatch.store import marks  # noqa: E402
from stores import SpanComparison, backup, compare_spans  # noqa: E402

T = TypeVar("T")

PYTHON = sys.executable
#: Generous: how long a check waits for something that takes well under a second.
TIMEOUT_S = 60.0
#: Daemon timing for the suite: rebuild soon, poll often, so that cycles are short.
FAST: dict[str, object] = {
    "debounce_ms": 20,
    "max_delay_ms": 200,
    "poll_interval_ms": 200,
}
#: spanwatch's tables: everything else in a store must stay byte-identical.
OWN_TABLES = ("tool_spans", "tool_span_paths")
OWN_PREFIX = "spanwatch_"
#: A daemon waiting on a broken store may use at most this share of one CPU.
IDLE_CPU_SHARE = 0.10
_LEAKY_ENV = ("SPANWATCH_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")


@dataclass
class Trial:
    """One injected fault and what came of it."""

    fault: str
    recovered: bool = False
    rows_lost: int = 0
    recover_s: float | None = None
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def expect(self, ok: object, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return bool(ok)


def wait_until(
    condition: Callable[[], T | None], *, timeout: float = TIMEOUT_S, interval: float = 0.05
) -> T | None:
    """Poll `condition` until it returns something truthy; None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def clean_env(settings: Mapping[str, object] | None = None) -> dict[str, str]:
    """This environment without spanwatch and systemd variables, plus SPANWATCH_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_ENV)}
    for key, value in (settings or {}).items():
        env[f"SPANWATCH_{key.upper()}"] = str(value)
    return env


# The daemon ----------------------------------------------------------------------


class Daemon:
    """`spanwatch run --log-format json` in its own process; stdout and stderr go to a file.

    `user` runs it under another uid (the tests run as root, which file
    permissions do not stop). `command` replaces the program, e.g. a wrapper.
    """

    def __init__(
        self,
        db: Path,
        log_path: Path,
        *,
        settings: Mapping[str, object] | None = None,
        user: int | None = None,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.db = db
        self.log_path = log_path
        program = list(command) if command else [PYTHON, "-m", "spanwatch"]
        if user is not None:
            # Not Popen(user=): its child cannot exec the venv's python here, setpriv can.
            program = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *program]
        args = [*program, "run", "--log-format", "json", "--db", str(db)]
        environment = clean_env({**FAST, **(settings or {})})
        environment.update(env or {})
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=environment,
            cwd=log_path.parent,
        )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[dict[str, Any]]:
        """Complete log lines so far, parsed; a line that is not JSON becomes {"raw": line}."""
        out: list[dict[str, Any]] = []
        for line in self.text().split("\n")[:-1]:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            out.append(record if isinstance(record, dict) else {"raw": line})
        return out

    def events(self, event: str, start: int = 0) -> list[dict[str, Any]]:
        return [line for line in self.lines()[start:] if line.get("event") == event]

    def wait_for(
        self, event: str, *, start: int = 0, timeout: float = TIMEOUT_S
    ) -> dict[str, Any] | None:
        """The first line of `event` from line `start` on; None on timeout or exit."""

        def found() -> dict[str, Any] | None:
            hits = self.events(event, start)
            if hits:
                return hits[0]
            if not self.alive:
                hits = self.events(event, start)
                return hits[0] if hits else {"exited": self.proc.returncode}
            return None

        hit = wait_until(found, timeout=timeout)
        return None if hit is None or "exited" in hit else hit

    def exit_code(self, timeout: float = TIMEOUT_S) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill9(self) -> None:
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(TIMEOUT_S)

    def stop(self, timeout: float = TIMEOUT_S) -> int | None:
        """SIGTERM; the exit code, or None if it did not exit in time (then it is killed)."""
        if self.alive:
            os.kill(self.pid, signal.SIGTERM)
        code = self.exit_code(timeout)
        if code is None:
            self.kill9()
        return code

    def cpu_share(self, seconds: float) -> float:
        """Share of one CPU the daemon used over the next `seconds`."""
        proc = psutil.Process(self.pid)
        before = proc.cpu_times()
        time.sleep(seconds)
        after = proc.cpu_times()
        return float(after.user + after.system - before.user - before.system) / seconds

    def sockets(self) -> set[str]:
        """Address families of the daemon's sockets (psutil reads them from /proc)."""
        connections = psutil.Process(self.pid).net_connections(kind="all")
        return {connection.family.name for connection in connections}

    def close(self) -> None:
        if self.alive:
            self.kill9()
        self._log.close()


def problems_in_log(daemon: Daemon, start: int = 0) -> list[str]:
    """Tracebacks, non-JSON output and exceptions logged: none is acceptable."""
    found = []
    if "Traceback" in daemon.text():
        found.append("the daemon printed a traceback")
    for line in daemon.lines()[start:]:
        if "raw" in line:
            found.append(f"output that is not a JSON log line: {line['raw'][:200]!r}")
        elif "exception" in line:
            found.append(f"exception logged: {line.get('event')}: {line['exception'][-300:]}")
    return found


def loud_lines(daemon: Daemon, start: int = 0) -> list[dict[str, Any]]:
    return [line for line in daemon.lines()[start:] if line.get("level") in ("warning", "error")]


# The agent side --------------------------------------------------------------------


class Writer:
    """The simulator's live writer; pausable (SIGSTOP) outside its write transactions."""

    def __init__(
        self,
        db: Path,
        workdir: Path,
        *,
        sessions: int = 6,
        rate: float = 150,
        duration: float = 3600,
        seed: int = 1,
        version: str = "current",
    ) -> None:
        self.db = db
        self.stop_file = workdir / f"writer-{seed}-{time.monotonic_ns()}.stop"
        command = [
            PYTHON, "-m", "spanwatch.simulate.writer", "--db", str(db),
            "--sessions", str(sessions), "--rate", str(rate), "--duration", str(duration),
            "--seed", str(seed), "--payload-scale", "0.05", "--stop-file", str(self.stop_file),
            "--store-version", version,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        self.paused = False

    def wait_for_rows(self, rows: int = 1) -> bool:
        def enough() -> bool:
            try:
                return event_count(self.db) >= rows
            except sqlite3.Error:
                return False

        return bool(wait_until(enough, timeout=TIMEOUT_S))

    def pause(self) -> None:
        """Stop the writer between two of its transactions (never while it holds the lock)."""
        for _ in range(1000):
            os.kill(self.proc.pid, signal.SIGSTOP)
            if not write_locked(self.db):
                self.paused = True
                return
            os.kill(self.proc.pid, signal.SIGCONT)
            time.sleep(0.005)
        raise AssertionError("the writer could not be paused outside a transaction")

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """Ask it to finish; its closing statistics (empty if it failed)."""
        self.stop_file.touch()
        if self.paused:
            self.resume()
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        try:
            stats: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            return {"failed": self.proc.returncode, "stderr": err[-2000:]}
        return stats

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def write_locked(db: Path) -> bool:
    """Whether another connection holds the store's write lock right now."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return True
        raise
    finally:
        conn.close()


def populate(db: Path, events: int, *, sessions: int, seed: int, version: str = "current") -> None:
    """Fill a store at once with the simulator's bulk loader."""
    command = [
        PYTHON, "-m", "spanwatch.simulate.writer", "--db", str(db), "--bulk", str(events),
        "--sessions", str(sessions), "--seed", str(seed), "--payload-scale", "0.05",
        "--store-version", version,
    ]  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, timeout=300, env=clean_env())
    if done.returncode:
        raise AssertionError(
            f"populating {db} failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
        )


# Reading and checking stores ----------------------------------------------------------


def connect_ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)


def event_count(db: Path) -> int:
    conn = connect_ro(db)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def events_digest(db: Path) -> str:
    """A hash of every events row, and the integrity check: what a store holds, in one value."""
    conn = connect_ro(db)
    try:
        digest = hashlib.sha256()
        for row in conn.execute("SELECT * FROM events ORDER BY id"):
            digest.update(repr(row).encode())
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    return f"{digest.hexdigest()[:16]} integrity {check}"


def compare_with_fresh_rebuild(db: Path, workdir: Path) -> SpanComparison:
    copy = backup(db, workdir / f"snapshot-{time.monotonic_ns()}.db")
    try:
        return compare_spans(copy)
    finally:
        copy.unlink()


def mark_problems(db: Path, workdir: Path) -> list[str]:
    """Watermarks that do not describe exactly the rows their spans were built from.

    In a copy of the store, each session is cut back to the rows with ids up to
    its mark's max_id (all of them go for a session without a mark). Ids grow
    with commits, so these are the rows the daemon read. The mark's row count
    and max seq must then be those rows' figures, and the stored spans must be
    what a rebuild from nothing makes of them: a mark ahead of its spans, or
    spans ahead of their mark, shows as a difference.
    """
    copy = backup(db, workdir / f"marks-{time.monotonic_ns()}.db")
    try:
        conn = sqlite3.connect(copy, isolation_level=None)
        try:
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'spanwatch_sessions'"
            ).fetchone():
                return []
            conn.execute(
                "DELETE FROM events WHERE id > coalesce((SELECT max_id FROM spanwatch_sessions m "
                "WHERE m.session_id = events.session_id), -1)"
            )
            stored = {
                row[0]: tuple(row[1:])
                for row in conn.execute(
                    "SELECT session_id, max_seq, row_count, max_id FROM spanwatch_sessions"
                )
            }
            live = {
                row[0]: tuple(row[1:])
                for row in conn.execute(
                    "SELECT session_id, max(seq), count(*), max(id) FROM events GROUP BY session_id"
                )
            }
        finally:
            conn.close()
        found = [
            f"mark of {session} is {mark} (max_seq, row_count, max_id) but its rows give "
            f"{live.get(session)}"
            for session, mark in stored.items()
            if live.get(session) != mark
        ]
        comparison = compare_spans(copy)
        if comparison:
            found.append(f"spans differ from their marks' rows: {comparison.describe()}")
        return found
    finally:
        copy.unlink()


def stale_sessions(db: Path) -> list[str] | None:
    """Sessions whose watermark disagrees with their events (None: no marks table yet)."""
    conn = connect_ro(db)
    try:
        return list(marks.stale_sessions(conn))
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def wait_caught_up(db: Path, *, timeout: float = TIMEOUT_S) -> bool:
    """Wait until no session is stale; False on timeout."""

    def caught_up() -> bool:
        try:
            return stale_sessions(db) == []
        except sqlite3.Error:
            return False

    return bool(wait_until(caught_up, timeout=timeout, interval=0.05))


def recovery(
    db: Path,
    workdir: Path,
    trial: Trial,
    since: float,
    *,
    timeout: float = TIMEOUT_S,
    daemon: Daemon | None = None,
    event: str = "store opened",
    after_line: int = 0,
) -> None:
    """Wait for the daemon to (re)open the store and catch up; record the time and lost spans.

    With `daemon`, recovery starts with its `event` log line after line `after_line`.
    """
    if daemon is not None:
        opened = daemon.wait_for(event, start=after_line, timeout=timeout)
        if not trial.expect(opened, f"the daemon never logged {event!r} after the repair"):
            return
    if not trial.expect(wait_caught_up(db, timeout=timeout), "did not catch up"):
        return
    trial.recover_s = round(time.monotonic() - since, 3)
    comparison = compare_with_fresh_rebuild(db, workdir)
    trial.rows_lost = comparison.lost
    trial.recovered = trial.expect(not comparison, f"spans after recovery: {comparison.describe()}")


# Dumps -----------------------------------------------------------------------------


def dump_of_others(db: Path) -> list[str]:
    """`sqlite3 DB .dump`, without spanwatch's tables, indexes and triggers: one SQL per item."""
    out = subprocess.run(
        ["sqlite3", str(db), ".dump"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    statements: list[str] = []
    pending = ""
    for line in out.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return [s for s in statements if not _is_spanwatch_statement(s)]


def _is_spanwatch_statement(statement: str) -> bool:
    words = statement.replace("(", " ").replace('"', " ").split()
    upper = [word.upper() for word in words]
    if upper[:2] == ["INSERT", "INTO"] or upper[:2] == ["CREATE", "TABLE"]:
        name = words[2] if upper[2] != "IF" else words[5]
        return _owned(name)
    if upper[:1] == ["CREATE"] and "ON" in upper:  # an index or trigger: by its table or name
        name = words[upper.index("ON") + 1]
        created = words[2] if upper[1] in ("INDEX", "TRIGGER") else words[3]
        return _owned(name) or created.startswith(OWN_PREFIX)
    return False


def _owned(name: str) -> bool:
    return name in OWN_TABLES or name.startswith(OWN_PREFIX)


# Small filesystems --------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(parent: Path, size: str = "4m") -> Iterator[Path | None]:
    """A tmpfs of `size` mounted under `parent` (None when mounting is not permitted)."""
    mount_point = Path(tempfile.mkdtemp(prefix="tmpfs-", dir=parent))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        mount_point.rmdir()
        yield None
        return
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            mount_point.rmdir()


def fill_up(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last page; the filler file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as fh:
        for size in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * size)
    return filler
