"""`spanwatch demo`: watch the real daemon keep span trees fresh while an agent writes.

It makes a store (in a new temporary folder unless --db names a new file),
starts `spanwatch run` on it as a separate process, exactly as you would, and
has a simulated agent (`spanwatch.simulate.agent`) write a few Claude
Code-style sessions into it live: hook, transcript-tail and proxy rows, a Task
whose subagent runs tools, parallel calls, a tool the user interrupted. The
trees on screen are re-read from `tool_spans` twice a second, so they show what
the daemon wrote, nothing computed here.

At the end (after --duration, or on Ctrl-C) the agent stops, the daemon is
given time to catch up and is stopped with SIGTERM (it finishes its work and
exits 0), the stored spans are checked against a fresh rebuild, and the store
is left in place with the commands to look at it again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from spanwatch.cli.common import EXIT_OK, EXIT_PROBLEMS, fail, subcommand
from spanwatch.cli.render_tree import SessionTree, render_sessions, render_tree, session_label
from spanwatch.cli.tree import output_console, read_session_tree
from spanwatch.simulate.agent import (
    AgentStats,
    DemoSession,
    plan_sessions,
    prepare_store,
    write_live,
)
from spanwatch.store.connection import has_table, open_store
from spanwatch.store.errors import StoreError
from spanwatch.store.schema import events_shape
from spanwatch.store.status import store_status
from spanwatch.store.verify import check_store

EXAMPLE = """\
examples:
  spanwatch demo                      # a minute, in a temporary folder
  spanwatch demo --duration 20
  spanwatch demo --db /tmp/demo.db    # keep the store where you want it

The demo never touches an existing store: --db must name a file that does not
exist yet. exit codes: 0 done (also after Ctrl-C), 1 the daemon did not stop
cleanly or the stored spans differ from a fresh rebuild, 2 the demo could not
run (see the message)
"""

SESSIONS = 3
REFRESH_S = 0.5
#: Plain output (off a terminal) reports progress this often.
PROGRESS_S = 10.0
READY_TIMEOUT_S = 30.0
CATCH_UP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0


class DemoError(Exception):
    """The demo cannot run; the message says why and what to do."""


def add_parser(subparsers: Any) -> None:
    parser = subcommand(
        subparsers, "demo", help="watch spanwatch keep spans of a simulated agent fresh",
        doc=__doc__, example=EXAMPLE,
    )  # fmt: skip
    parser.add_argument(
        "--db", type=Path, metavar="PATH",
        help="make the demo store here (a new file); default: a new temporary folder",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=_seconds, default=60.0, metavar="SECONDS",
        help="how long the demo runs (default 60)",
    )  # fmt: skip
    parser.set_defaults(handler=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 24 * 3600:
        raise argparse.ArgumentTypeError("must be more than 0 and at most a day")
    return value


def run(args: argparse.Namespace) -> int:
    try:
        db = _new_store_path(args.db)
        taken = prepare_store(db)
    except (DemoError, sqlite3.Error, OSError) as exc:
        return fail(str(exc))
    writing_s = _writing_time(args.duration)
    sessions = plan_sessions(SESSIONS, int(writing_s * 1000), taken=taken)
    demo = Demo(db, sessions, output_console(), temporary=args.db is None)
    with _stop_on_sigterm():
        try:
            return demo.run(args.duration, writing_s)
        finally:
            demo.daemon.ensure_stopped()


def _new_store_path(given: Path | None) -> Path:
    if given is None:
        return Path(tempfile.mkdtemp(prefix="spanwatch-demo-")) / "agent.db"
    db = given.expanduser().absolute()
    if db.exists() and (not db.is_file() or db.stat().st_size > 0):
        raise DemoError(
            f"{db} exists; the demo writes simulated sessions, so it only makes new stores: "
            "give a path that does not exist yet"
        )
    db.parent.mkdir(parents=True, exist_ok=True)
    return db


def _writing_time(duration_s: float) -> float:
    """The agent writes for most of the demo; the end shows the settled trees."""
    return max(0.5, duration_s - min(5.0, max(1.0, duration_s * 0.15)))


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the demo like Ctrl-C, so the daemon it started is stopped too."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Demo:
    """One run: the store, the agent thread, the daemon process and the display."""

    def __init__(
        self, db: Path, sessions: list[DemoSession], console: Console, *, temporary: bool
    ) -> None:
        self.db = db
        self.temporary = temporary
        self.sessions = sessions
        self.console = console
        self.live = console.is_terminal
        self.daemon = DaemonProcess(db, db.with_name(f"{db.stem}-spanwatch.log"))
        self.stats = AgentStats()
        self._stop_agent = threading.Event()
        self._agent: threading.Thread | None = None
        self._started = time.monotonic()
        self._duration_s = 0.0

    def run(self, duration_s: float, writing_s: float) -> int:
        self._duration_s = duration_s
        self._say(
            f"spanwatch demo: store {self.db}\n"
            f"  daemon: spanwatch run, pid {self.daemon.pid}, log {self.daemon.log_path}\n"
            f"  agent: {len(self.sessions)} simulated sessions written live for {writing_s:.0f} s"
        )
        if not self.daemon.wait_ready(READY_TIMEOUT_S):
            return fail(f"the daemon did not start: {self.daemon.last_lines()}")
        self._started = time.monotonic()
        self._agent = threading.Thread(
            target=write_live,
            args=(self.db, self.sessions),
            kwargs={"stop": self._stop_agent, "stats": self.stats},
            name="spanwatch-demo-agent",
            daemon=True,
        )
        self._agent.start()
        with self._display() as show:
            self._watch(self._started + duration_s, show)
            self._finish_agent()
            caught_up = self._wait_caught_up(show)
            show("stopping the daemon (SIGTERM: it finishes its work, then exits)")
            died = not self.daemon.running()
            daemon_code = self.daemon.stop(STOP_TIMEOUT_S)
        return self._report(caught_up, daemon_code, died=died)

    # -- phases ----------------------------------------------------------------------

    def _watch(self, deadline: float, show: Callable[[str], None]) -> None:
        """Show the trees until the deadline, Ctrl-C, or the daemon's death."""
        next_progress = time.monotonic() + PROGRESS_S
        try:
            while time.monotonic() < deadline:
                if not self.daemon.running():
                    return
                left = deadline - time.monotonic()
                show(f"{left:.0f} s left · Ctrl-C stops early")
                if not self.live and time.monotonic() >= next_progress:
                    next_progress += PROGRESS_S
                    self._say(f"  {self._progress()}")
                time.sleep(min(REFRESH_S, max(0.0, left)))
        except KeyboardInterrupt:
            show("stopping early (Ctrl-C)")

    def _finish_agent(self) -> None:
        self._stop_agent.set()
        if self._agent is not None:
            self._agent.join()

    def _wait_caught_up(self, show: Callable[[str], None]) -> bool:
        """Let the daemon rebuild what the agent wrote last (SIGTERM drains only what it saw)."""
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        try:
            while time.monotonic() < deadline and self.daemon.running():
                behind = self._sessions_behind()
                if behind == 0:
                    return True
                show(f"the agent stopped; waiting for the daemon ({behind} sessions behind)")
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        return self._sessions_behind() == 0

    def _report(self, caught_up: bool, daemon_code: int | None, *, died: bool) -> int:
        trees = self._trees()
        for session in self.sessions:
            tree = trees.get(session.session_id)
            if tree is not None:
                self.console.print(render_tree(tree))
                self.console.print()
        code = EXIT_OK
        if self.stats.error is not None:
            self._say(f"the agent stopped on an error: {self.stats.error}")
        waits = self.stats.busy_retries
        self._say(
            f"agent: {self.stats.events} events in {self.stats.transactions} transactions"
            + (f" ({waits} waits for the write lock)" if waits else "")
        )
        if died:
            log = self.daemon.log_path
            self._say(f"daemon: exited on its own, code {daemon_code} (log: {log})")
        elif daemon_code is None:
            self._say(f"daemon: did not stop within {STOP_TIMEOUT_S:.0f} s and was killed")
        else:
            self._say(f"daemon: stopped, exit code {daemon_code}")
        if daemon_code != 0:
            code = EXIT_PROBLEMS
        if not caught_up:
            self._say("daemon: had not caught up with the agent when it was stopped")
        checked = self._verify()
        self._say(checked[1])
        if not checked[0]:
            code = EXIT_PROBLEMS
        self._say(self._next_steps())
        return code

    # -- what is shown -------------------------------------------------------------

    @contextmanager
    def _display(self) -> Iterator[Callable[[str], None]]:
        """`show(status)` redraws the live view on a terminal; off one it does nothing."""
        if not self.live:
            yield lambda status: None
            return
        with Live(console=self.console, auto_refresh=False, transient=True) as live:

            def show(status: str) -> None:
                live.update(self._frame(status), refresh=True)

            yield show

    def _frame(self, status: str) -> RenderableType:
        elapsed = time.monotonic() - self._started
        head = Text()
        head.append("spanwatch demo", style="bold")
        head.append(f" · {elapsed:.0f} s of {self._duration_s:.0f} s · {status}\n", style="dim")
        head.append(f"store {self.db} · daemon pid {self.daemon.pid} · {self._progress()}")
        head.no_wrap, head.overflow = True, "ellipsis"  # two lines, whatever the width
        trees = self._trees()
        counts = self._counts()
        shown: list[tuple[Text, SessionTree]] = []
        for session in self.sessions:
            tree = trees.get(session.session_id)
            if tree is None:
                continue
            events, in_spans = counts.get(session.session_id, (0, 0))
            state = "done" if session.session_id in self.stats.finished else "writing"
            behind = events - in_spans
            lag = "all in spans" if behind <= 0 else f"{behind} not yet in spans"
            title = session_label(tree, [state, f"{events} events, {lag}"], compact=True)
            shown.append((title, tree))
        height = max(10, self.console.size.height - 3)
        return Group(head, Text(), render_sessions(shown, height))

    def _progress(self) -> str:
        return f"agent wrote {self.stats.events} events in {self.stats.transactions} commits"

    def _say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    # -- reading the store ---------------------------------------------------------

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        conn = open_store(self.db, readonly=True)
        try:
            yield conn
        finally:
            conn.close()

    def _trees(self) -> dict[str, SessionTree]:
        out: dict[str, SessionTree] = {}
        with self._reader() as conn:
            for session in self.sessions:
                tree = read_session_tree(conn, session.session_id)
                if tree is not None:
                    out[session.session_id] = tree
        return out

    def _counts(self) -> dict[str, tuple[int, int]]:
        """Per session: events in the store, and events the stored spans reflect."""
        with self._reader() as conn:
            events = dict(
                conn.execute("SELECT session_id, count(*) FROM events GROUP BY session_id")
            )
            marked: dict[str, int] = {}
            if has_table(conn, "spanwatch_sessions"):
                marked = dict(conn.execute("SELECT session_id, row_count FROM spanwatch_sessions"))
        return {sid: (count, marked.get(sid, 0)) for sid, count in events.items()}

    def _sessions_behind(self) -> int:
        with self._reader() as conn:
            return len(store_status(conn).stale_sessions)

    def _verify(self) -> tuple[bool, str]:
        try:
            with self._reader() as conn:
                if not has_table(conn, "tool_spans"):
                    return False, "verify: the daemon wrote no spans"
                checks = list(check_store(conn, events_shape(conn)))
        except (StoreError, sqlite3.Error) as exc:
            return False, f"verify: could not check the store: {exc}"
        differing = [check for check in checks if check.differences]
        spans = sum(check.spans for check in checks)
        if differing:
            return False, (
                f"verify: {len(differing)} of {len(checks)} sessions differ from a fresh rebuild "
                f"(details: {_spanwatch()} verify --db {shlex.quote(str(self.db))})"
            )
        return True, f"verify: {spans} spans in {len(checks)} sessions equal a fresh rebuild"

    def _next_steps(self) -> str:
        spanwatch = _spanwatch()
        db = shlex.quote(str(self.db))
        first = self.sessions[0].session_id
        return "\n".join(
            [
                "",
                f"The demo store is kept at {self.db}"
                + (" (a temporary folder: delete it when done)." if self.temporary else "."),
                "Look at it again:",
                f"  {spanwatch} tree --db {db} {first}",
                f"  {spanwatch} status --db {db} --sessions",
                f"  {spanwatch} verify --db {db}",
                "Run the daemon on it yourself (Ctrl-C stops it):",
                f"  {spanwatch} run --db {db}",
                "Point spanwatch at your own agent's store (the SQLite file with `events`):",
                f"  {spanwatch} run --db /path/to/your/events.db",
                "(README.md: configuration, systemd units, troubleshooting.)",
            ]
        )


def _spanwatch() -> str:
    """How to run spanwatch the way this process was started, as a shell command."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "spanwatch":
        found = shutil.which("spanwatch")
        if found is not None and Path(found).resolve() == argv0.resolve():
            return "spanwatch"
        return shlex.quote(str(argv0.absolute()))
    return f"{shlex.quote(sys.executable)} -m spanwatch"


class DaemonProcess:
    """`spanwatch run` on the demo store, in a process of its own, logging JSON to a file.

    Started in a new session so that Ctrl-C reaches the demo only: the demo
    stops the agent first and the daemon last, with SIGTERM, once it has seen
    every event. SPANWATCH_* settings of the environment are left out so the
    demo shows the defaults.
    """

    def __init__(self, db: Path, log_path: Path) -> None:
        self.log_path = log_path
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("SPANWATCH_")
            and key not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        }
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "spanwatch", "run", "--db", str(db), "--log-format", "json"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.pid = self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait for the daemon's `ready` log line (its first catch-up is done)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(line.get("event") == "ready" for line in self._log_lines()):
                return True
            if not self.running():
                return False
            time.sleep(0.05)
        return False

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM, as systemd stops it; the exit code, or None if it had to be killed."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def ensure_stopped(self) -> None:
        if self.running():
            self.stop(5.0)

    def last_lines(self, count: int = 3) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return f"see {self.log_path}"
        return " | ".join(lines[-count:]) or f"no output; see {self.log_path}"

    def _log_lines(self) -> Iterator[dict[str, Any]]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return
        for line in text.splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value
