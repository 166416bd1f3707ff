"""Real processes for the daemon tests: `spanwatch run`, agent writers, a notify socket.

Nothing here is a mock. The daemon runs as `python -m spanwatch run --log-format
json` in its own process and is driven with real signals; the agent side is the
simulator's live writer (`python -m spanwatch.simulate.writer`), or a small
helper process; systemd's end of sd_notify is a bound AF_UNIX datagram socket.

Tests never assert how long something took (the machine is shared): they wait
for a condition with a generous timeout (`wait_until`), then check what a user
would check: `spanwatch verify` passes and the stored spans equal a fresh
rebuild of a copy of the store taken with SQLite's backup API.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from stores import backup, compare_spans

T = TypeVar("T")

PYTHON = sys.executable
#: How long a test waits for something that should take well under a second.
TIMEOUT_S = 60.0
#: Keys of a daemon JSON log line that every line has.
LOG_KEYS = ("timestamp", "level", "event")
#: Environment variables of the test run that must not leak into a daemon.
_LEAKY_PREFIXES = ("SPANWATCH_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float = TIMEOUT_S,
    interval: float = 0.05,
    what: str = "a condition",
) -> T:
    """Poll `condition` until it returns something truthy; that value. AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without spanwatch/systemd variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    env.update(extra or {})
    return env


# The daemon --------------------------------------------------------------------


class DaemonProcess:
    """`spanwatch run --log-format json` as a subprocess; its stderr goes to a log file.

    `log_format=None` leaves the format to spanwatch ("auto": JSON off a TTY).
    """

    def __init__(
        self,
        db: Path | None,
        log_path: Path,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_format: str | None = "json",
    ) -> None:
        self.db = db
        self.log_path = log_path
        command = [PYTHON, "-m", "spanwatch", "run"]
        if log_format is not None:
            command += ["--log-format", log_format]
        if db is not None:
            command += ["--db", str(db)]
        self.command = [*command, *args]
        self._log_file = log_path.open("w")
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
            env=clean_env(env),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def raw_lines(self) -> list[str]:
        """Complete lines written so far (a line still being written is left out)."""
        text = self.log_path.read_text()
        lines = text.split("\n")
        return [line for line in lines[:-1] if line.strip()]

    def logs(self) -> list[dict[str, Any]]:
        """Every log line so far, parsed (a line that is not JSON fails the test here)."""
        out = []
        for line in self.raw_lines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AssertionError(f"daemon log line is not JSON: {line!r}") from exc
            assert isinstance(record, dict), line
            out.append(record)
        return out

    def events(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """Log lines of `event` whose `fields` have the given values."""
        return [
            line
            for line in self.logs()
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
        ]

    def wait_for_log(
        self, event: str, *, count: int = 1, timeout: float = TIMEOUT_S, **fields: Any
    ) -> dict[str, Any]:
        """The `count`-th line of `event`, once logged. Fails early if the daemon exits."""

        def found() -> dict[str, Any] | None:
            lines = self.events(event, **fields)
            if len(lines) >= count:
                return lines[count - 1]
            if not self.alive:
                lines = self.events(event, **fields)  # written just before the exit?
                if len(lines) >= count:
                    return lines[count - 1]
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) before logging {event!r}:\n"
                    + self.log_path.read_text()[-4000:]
                )
            return None

        return wait_until(found, timeout=timeout, what=f"daemon log {event!r} x{count}")

    def send(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float = TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon did not exit within {timeout:.0f} s:\n" + self.log_path.read_text()[-4000:]
            ) from None

    def stop(self, timeout: float = TIMEOUT_S) -> int:
        """SIGTERM and wait for the exit code."""
        if self.alive:
            self.send(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        if self.alive:
            self.send(signal.SIGKILL)
        self.proc.wait(TIMEOUT_S)

    def close(self) -> None:
        if self.alive:
            self.proc.kill()
            self.proc.wait(TIMEOUT_S)
        self._log_file.close()


# The agent side ------------------------------------------------------------------


class WriterProcess:
    """The simulator's live writer (`python -m spanwatch.simulate.writer`)."""

    def __init__(self, db: Path, stop_file: Path, args: Sequence[str]) -> None:
        self.stop_file = stop_file
        self.command = [
            PYTHON, "-m", "spanwatch.simulate.writer", "--db", str(db),
            "--stop-file", str(stop_file), *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def finish(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """Wait for the writer to end on its own; its closing statistics."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError(f"writer did not finish within {timeout:.0f} s") from None
        assert self.proc.returncode == 0, f"writer failed ({self.proc.returncode}):\n{err}"
        stats: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return stats

    def stop(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """Ask it to stop (its stop file) and wait for its statistics."""
        self.stop_file.touch()
        return self.finish(timeout)

    def close(self) -> None:
        if self.alive:
            self.proc.kill()
            self.proc.communicate()


class LockHolder:
    """Another process that takes the store's write lock (BEGIN IMMEDIATE) and sits on it.

    It first commits `before` rows (so the daemon has work), then takes the lock,
    inserts `during` more rows and says "locked". It commits when told to
    (`release`), so a test holds the lock for as long as it needs, not a guess.
    """

    SCRIPT = r"""
import json, sqlite3, sys
db, rows = sys.argv[1], json.loads(sys.argv[2])
conn = sqlite3.connect(db, isolation_level=None, timeout=30)
cols = ", ".join(rows["columns"])
sql = f"INSERT INTO events ({cols}) VALUES ({', '.join('?' * len(rows['columns']))})"
conn.execute("BEGIN IMMEDIATE")
conn.executemany(sql, rows["before"])
conn.execute("COMMIT")
conn.execute("BEGIN IMMEDIATE")
conn.executemany(sql, rows["during"])
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""

    def __init__(
        self,
        db: Path,
        columns: Sequence[str],
        before: Sequence[Sequence[Any]],
        during: Sequence[Sequence[Any]],
    ) -> None:
        rows = json.dumps({"columns": list(columns), "before": before, "during": during})
        self.proc = subprocess.Popen(
            [PYTHON, "-c", self.SCRIPT, str(db), rows],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "locked":
            _, err = self.proc.communicate(timeout=TIMEOUT_S)
            raise AssertionError(f"lock holder failed: {line!r} {err}")

    def release(self, timeout: float = TIMEOUT_S) -> None:
        """Commit and end; the lock is free once this returns."""
        out, err = self.proc.communicate("release\n", timeout=timeout)
        assert self.proc.returncode == 0, err
        assert out.strip() == "released", out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


# systemd's side of sd_notify -------------------------------------------------------


class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd's `$NOTIFY_SOCKET`.

    A thread collects datagrams as they arrive, in order.
    """

    def __init__(self) -> None:
        # A short path: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be long.
        self._dir = tempfile.mkdtemp(prefix="sw-notify-")
        self.path = os.path.join(self._dir, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.1)
        self._messages: list[str] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._messages.append(data.decode())

    def messages(self) -> list[str]:
        with self._lock:
            return list(self._messages)

    def wait_for(self, assignment: str, *, count: int = 1, timeout: float = TIMEOUT_S) -> int:
        """Index of the `count`-th message holding `assignment` (e.g. "READY=1"), once received."""

        def found() -> int | None:
            hits = [i for i, m in enumerate(self.messages()) if assignment in m.split("\n")]
            return hits[count - 1] + 1 if len(hits) >= count else None

        return wait_until(found, timeout=timeout, what=f"notify {assignment!r} x{count}") - 1

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def notify_fields(message: str) -> dict[str, str]:
    """`KEY=value` lines of one datagram as a dict."""
    return dict(line.split("=", 1) for line in message.split("\n") if line)


# The store, as a user checks it --------------------------------------------------------


def spanwatch(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run a `spanwatch` subcommand to the end (stdout and stderr captured)."""
    return subprocess.run(
        [PYTHON, "-m", "spanwatch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(env),
        check=False,
    )


def verify(db: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """`spanwatch verify --db DB --json`: exit code and report."""
    done = spanwatch("verify", "--db", str(db), "--json", *args)
    assert done.returncode in (0, 1), f"verify failed ({done.returncode}): {done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


def real_differences(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Differences of a verify report that are not "pending" (i.e. wrong stored spans)."""
    return [d for d in report["differences"] if not d["pending"]]


def wait_verified(db: Path, *, timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """Wait until the daemon has caught up: `spanwatch verify` passes and no mark is stale.

    verify alone is not enough: it reports a session only when its spans
    differ, and a session can be behind with the same spans (say, new Message
    rows). So every watermark must also equal its session's figures, which is
    what `spanwatch status` calls 0 sessions behind. Returns verify's report.
    No difference may ever be other than pending.
    """

    def passes() -> dict[str, Any] | None:
        code, report = verify(db)
        assert not real_differences(report), report
        return report if code == 0 and marks(db) == live_marks(db) else None

    return wait_until(passes, timeout=timeout, interval=0.2, what=f"the daemon to catch up on {db}")


def assert_spans_equal_fresh_rebuild(db: Path, workdir: Path) -> int:
    """Stored spans and paths of `db` (one snapshot) equal a rebuild from nothing; span count."""
    copy = backup(db, workdir / f"snapshot-{time.monotonic_ns()}.db")
    comparison = compare_spans(copy)
    assert not comparison, comparison.describe()
    return comparison.spans


def data_version_probe(db: Path) -> Callable[[], int]:
    """A connection of its own; each call returns its `PRAGMA data_version`.

    The value changes exactly when some other connection commits to the file.
    """
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    return lambda: int(conn.execute("PRAGMA data_version").fetchone()[0])


def query(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """One read of the live store on a short-lived connection."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def has_events(db: Path) -> bool:
    """Whether the store exists and its `events` table has rows (False while it is being made)."""
    if not db.exists():
        return False
    try:
        return bool(query(db, "SELECT count(*) FROM events")[0][0])
    except sqlite3.Error:
        return False


def execute(db: Path, *statements: tuple[str, Sequence[Any]]) -> None:
    """Statements in one write transaction of a writer's own (busy timeout 30 s)."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for sql, params in statements:
            conn.execute(sql, params)
        conn.execute("COMMIT")
    finally:
        conn.close()


def tool_use(
    session_id: str, seq: int, ts_ms: int, call_id: str, *, tool: str = "Read", path: str = "/x"
) -> list[dict[str, Any]]:
    """The rows of one tool use as a transcript tail writes them: a call, then its result."""
    call = {
        "session_id": session_id, "seq": seq, "ts_ms": ts_ms, "kind": "ToolCall",
        "source": "Tail", "tool": tool, "tool_call_id": call_id,
        "payload": json.dumps({"file_path": path}),
    }  # fmt: skip
    result = {
        "session_id": session_id, "seq": seq + 1, "ts_ms": ts_ms + 5, "kind": "ToolResult",
        "source": "Tail", "tool": tool, "tool_call_id": call_id, "tokens_in": 10,
        "tokens_out": 3, "payload": "{}",
    }  # fmt: skip
    return [call, result]


def insert(db: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append rows (column -> value) in one write transaction, as an agent's hook does."""
    execute(
        db,
        *(
            (
                f"INSERT INTO events ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
            for row in rows
        ),
    )


def marks(db: Path) -> dict[str, tuple[Any, int, int]]:
    """spanwatch's per-session watermarks: session -> (max seq, row count, max id)."""
    rows = query(db, "SELECT session_id, max_seq, row_count, max_id FROM spanwatch_sessions")
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def live_marks(db: Path) -> dict[str, tuple[Any, int, int]]:
    rows = query(
        db, "SELECT session_id, max(seq), count(*), max(id) FROM events GROUP BY session_id"
    )
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def populate(db: Path, events: int, *, sessions: int, seed: int = 7) -> dict[str, Any]:
    """Fill a store at once with the simulator's bulk loader (a backlog for the daemon)."""
    command = [
        PYTHON, "-m", "spanwatch.simulate.writer", "--db", str(db), "--bulk", str(events),
        "--sessions", str(sessions), "--seed", str(seed), "--payload-scale", "0.05",
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=clean_env(), check=True
    )
    stats: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return stats


def assert_marks_match_their_spans(db: Path, workdir: Path) -> dict[str, Any]:
    """No watermark is ahead of (or behind) the spans stored with it.

    In a copy of the store, each marked session is cut back to the rows its
    mark covers (ids up to its max_id: ids grow with commits, so these are the
    rows the daemon read). `spanwatch verify` of the copy must then find every
    marked session exact, and only never-rebuilt sessions pending. Returns the
    verify report.
    """
    copy = backup(db, workdir / f"marks-{time.monotonic_ns()}.db")
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        stored_marks = conn.execute("SELECT session_id, max_id FROM spanwatch_sessions").fetchall()
        for session_id, max_id in stored_marks:
            conn.execute("DELETE FROM events WHERE session_id = ? AND id > ?", (session_id, max_id))
    finally:
        conn.close()
    _, report = verify(copy)
    marked = {session_id for session_id, _ in stored_marks}
    wrong = [d for d in report["differences"] if not d["pending"] or d["session_id"] in marked]
    assert not wrong, wrong[:3]
    return report


# One test's processes ---------------------------------------------------------------


class Harness:
    """The processes and files of one test, all cleaned up on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.db = workdir / "agent" / "events.db"
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self._daemons: list[DaemonProcess] = []
        self._closables: list[WriterProcess | LockHolder | NotifySocket] = []
        self._probes = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for item in reversed(self._closables):
            item.close()
        for daemon in self._daemons:
            daemon.close()
        # What each daemon said last: pytest shows captured stderr when a test fails.
        for daemon in self._daemons:
            sys.stderr.write(f"--- end of {daemon.log_path}\n")
            sys.stderr.write(daemon.log_path.read_text()[-3000:])

    def daemon(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        with_db: bool = True,
        log_format: str | None = "json",
    ) -> DaemonProcess:
        """Start `spanwatch run --db <store>` with `args` (a new log file per start).

        `with_db=False` leaves out `--db` (for tests of the configuration sources).
        """
        log = self.workdir / f"daemon-{len(self._daemons)}.log"
        daemon = DaemonProcess(self.db if with_db else None, log, args, env, log_format)
        self._daemons.append(daemon)
        return daemon

    def writer(
        self,
        *,
        sessions: int = 6,
        rate: float = 300,
        duration: float = 3,
        seed: int = 1,
        db: Path | None = None,
        extra: Sequence[str] = (),
    ) -> WriterProcess:
        """Start the simulator's live writer on the store (created if missing)."""
        stop_file = self.workdir / f"stop-writer-{len(self._closables)}"
        args = [
            "--sessions", str(sessions), "--rate", str(rate), "--duration", str(duration),
            "--seed", str(seed), "--payload-scale", "0.05", *extra,
        ]  # fmt: skip
        writer = WriterProcess(db or self.db, stop_file, args)
        self._closables.append(writer)
        return writer

    def populate(self, events: int, *, sessions: int, seed: int = 7) -> dict[str, Any]:
        return populate(self.db, events, sessions=sessions, seed=seed)

    def lock_holder(
        self,
        columns: Sequence[str],
        before: Sequence[Sequence[Any]],
        during: Sequence[Sequence[Any]],
    ) -> LockHolder:
        holder = LockHolder(self.db, columns, before, during)
        self._closables.append(holder)
        return holder

    def notify_socket(self) -> NotifySocket:
        sock = NotifySocket()
        self._closables.append(sock)
        return sock

    def config(self, text: str, name: str = "spanwatch.toml") -> Path:
        path = self.workdir / name
        path.write_text(text)
        return path

    def assert_spans_equal_fresh_rebuild(self, db: Path | None = None) -> int:
        return assert_spans_equal_fresh_rebuild(db or self.db, self.workdir)


def harness(tmp_path: Path) -> Iterator[Harness]:
    """Body of a `h` fixture: `yield from harness(tmp_path)`."""
    with Harness(tmp_path) as h:
        yield h
