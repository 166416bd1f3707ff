"""The daemon's link to the store: one connection, and what it has seen so far.

All of it runs on the daemon's single store thread (SQLite connections are not
shared between threads here), so none of it is async. It answers three
questions cheaply: has anyone committed since we last looked (`PRAGMA
data_version`), which sessions got new rows (the global rowid mark), and is the
file still the one we opened (device and inode).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from spanwatch.daemon.memory import release_free_memory
from spanwatch.store import marks, triggers
from spanwatch.store.connection import data_version, open_store
from spanwatch.store.errors import StoreBusyError, StoreError
from spanwatch.store.full_read import FullRead, LongFullRead
from spanwatch.store.problems import log_problems
from spanwatch.store.rebuild import Rebuilder, SessionResult, Tally
from spanwatch.store.schema import ensure_schema

#: Rows looked at per step of the new-rows scan; a backlog is taken in steps.
SCAN_STEP = 200_000
#: A full read of at least this many rows is followed by returning freed memory.
LARGE_READ_ROWS = 5_000
#: A read finished elsewhere: the session, and its read or the error it raised.
Landed = tuple[str, FullRead | BaseException]
#: Span rows per write transaction: a batch of sessions shares one commit.
#: A few milliseconds at p50 on the live benchmark, but a commit of 400-700
#: rows (dozens of sessions due at once, as after a start) held the lock
#: 100-370 ms on its 1M-event store under a concurrent writer. 200 was tried
#: (2 pairs of runs): lock share 0.93-0.95x, latency no better; not kept.
WRITE_BATCH_ROWS = 2000
#: ... and a transaction goes once its first session has waited this long. A
#: batch of dozens of sessions (after a start, or on a loaded machine) took
#: 1-2 s, and every session in it waited for the one commit at its end.
WRITE_BATCH_S = 0.05


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the store file, or None when it is not there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


@dataclass(slots=True)
class BatchReport(Tally):
    """What one batch of session rebuilds did, for the log line and the status."""

    busy: list[str] = field(default_factory=list)
    """Sessions whose write gave up on a locked store: to be tried again."""
    failed: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    """Long sessions to be read in full elsewhere (see `rebuild`)."""
    ms: float = 0.0
    commits: int = 0
    locked_ms: float = 0.0
    """Write transactions, and how long they held the store's write lock in all.

    From BEGIN IMMEDIATE acquired to COMMIT returned. A COMMIT that takes the
    WAL past SQLite's autocheckpoint size also runs a checkpoint, after
    releasing the lock, and that time is counted too: an upper bound. (With
    the checkpoints moved out of the commit, it came out about 40% lower on
    the live benchmark.)
    """


class StoreLink:
    """An open store, the daemon's view of it, and the rebuilds it runs."""

    def __init__(
        self,
        path: Path,
        *,
        log: Any,
        busy_timeout_ms: int,
        write_retry_max_s: float,
        cache_sessions: int,
        cache_spans: int = 150_000,
        capture: str = "rowid",
    ) -> None:
        self.path = path
        self.log = log
        self.identity = file_identity(path)
        self.progress_at = time.monotonic()
        """When the store thread last finished a piece of work (for the watchdog)."""
        self.conn: sqlite3.Connection = open_store(path, busy_timeout_ms=busy_timeout_ms)
        try:
            ensure_schema(self.conn, retry_for_s=write_retry_max_s)
            self.rebuilder = Rebuilder(
                self.conn,
                cache_sessions=cache_sessions,
                cache_spans=cache_spans,
                write_batch_rows=WRITE_BATCH_ROWS,
                write_batch_s=WRITE_BATCH_S,
                retry_for_s=write_retry_max_s,
                on_retry=self._on_retry,
            )
            self.capture = capture
            if capture == "triggers":
                if triggers.install_triggers(self.conn):
                    log.info("capture triggers installed on events", db=str(path))
            elif triggers.triggers_installed(self.conn):
                log.warning(
                    "capture triggers are installed but capture is 'rowid'; "
                    "remove them with `spanwatch triggers remove`",
                    db=str(path),
                )
            self.seen_version = data_version(self.conn)
            # Taken before the reconcile: rows after it are found by the rowid scan.
            self.global_mark = marks.max_event_id(self.conn)
            self.rebuilder.latest_event_id = self.global_mark
        except BaseException:
            self.conn.close()
            raise

    def close(self) -> None:
        if not self.still_same_file():
            # SQLite neither checkpoints nor deletes the -wal of a file that was
            # replaced, moved or deleted: closing leaves it, and the -shm, at the
            # old path, where the next connection to whatever file is there now
            # would replay those pages into it (a replacement comes out corrupt, a
            # moved store loses its last commits). Write them into the file they
            # belong to, through this connection, and leave an empty -wal.
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        self.conn.close()

    def still_same_file(self) -> bool:
        return file_identity(self.path) == self.identity

    def changed(self) -> bool:
        """Whether another connection committed since the last call."""
        version = data_version(self.conn)
        if version == self.seen_version:
            return False
        self.seen_version = version
        return True

    def new_rows(self) -> dict[str, int]:
        """Sessions with rows past the global mark (and how many), advancing the mark."""
        dirty: dict[str, int] = {}
        while True:
            mark, sessions = marks.sessions_with_new_rows(self.conn, self.global_mark, SCAN_STEP)
            for session_id, count in sessions.items():
                dirty[session_id] = dirty.get(session_id, 0) + count
            if mark == self.global_mark:
                self.rebuilder.latest_event_id = mark
                return dirty
            self.global_mark = mark

    def flagged(self) -> dict[str, int]:
        """Sessions the capture triggers flagged (empty in rowid mode)."""
        if self.capture != "triggers":
            return {}
        return triggers.flagged_sessions(self.conn)

    def stale_sessions(self) -> list[str]:
        """The reconcile: sessions whose watermark disagrees with `events`, oldest first.

        Oldest means first to appear in `events` (smallest rowid; vanished
        sessions last), the order of `spanwatch rebuild`: when a resumed session
        repeats the span ids of the one it resumes, the older one keeps them.
        """
        stale = list(marks.stale_sessions(self.conn))
        first_id = {
            session_id: self.conn.execute(
                "SELECT min(id) FROM events WHERE session_id = ?", (session_id,)
            ).fetchone()[0]
            for session_id in stale
        }
        return sorted(stale, key=lambda s: (first_id[s] is None, first_id[s] or 0))

    def rebuild(
        self,
        sessions: list[str],
        flags: dict[str, int] | None = None,
        landed: list[Landed] | None = None,
        defer_full_from: int | None = None,
    ) -> BatchReport:
        """Rebuild `sessions`; `flags` holds the trigger counters of flagged ones.

        `landed`: sessions read in full elsewhere (see `LongReads`), to diff
        and write first. With `defer_full_from`, a session that would be read
        in full and has at least that many rows is left out and reported in
        `deferred`. The writes share transactions of about WRITE_BATCH_ROWS
        rows. A session whose write found the store locked for too long is
        reported in `busy`, to be tried again.
        """
        report = BatchReport()
        started = time.perf_counter()
        commits, locked_s = self.rebuilder.commits, self.rebuilder.locked_s
        results: list[SessionResult] = []
        work: list[tuple[str, Callable[[], SessionResult]]] = [
            (session_id, self._landed_work(read)) for session_id, read in landed or ()
        ]
        for session_id in sessions:
            flag = flags.get(session_id) if flags else None
            rebuild = partial(
                self.rebuilder.rebuild,
                session_id,
                flag_version=flag,
                defer_full_from=defer_full_from,
            )
            work.append((session_id, rebuild))
        for session_id, run in work:
            try:
                results.append(run())
            except LongFullRead:
                report.deferred.append(session_id)
            except StoreBusyError as exc:
                self._busy(report, exc)
            except (sqlite3.DatabaseError, OSError, StoreError):
                raise  # the store itself is in trouble: the daemon reopens it
            except Exception as exc:  # a bug must cost one session, not the daemon
                self.rebuilder.forget(session_id)
                self.log.exception("session rebuild failed", session_id=session_id,
                                   error=repr(exc))  # fmt: skip
                report.failed.append(session_id)
            finally:
                self.progress_at = time.monotonic()
        try:
            self.rebuilder.flush()
        except StoreBusyError as exc:
            self._busy(report, exc)
        busy = set(report.busy)
        for result in results:
            if result.session_id not in busy:
                self._count(report, result)
        if any(r.mode == "full" and r.rows_read >= LARGE_READ_ROWS for r in results):
            release_free_memory()
        report.ms = (time.perf_counter() - started) * 1000
        report.commits = self.rebuilder.commits - commits
        report.locked_ms = (self.rebuilder.locked_s - locked_s) * 1000
        return report

    def _landed_work(self, read: FullRead | BaseException) -> Callable[[], SessionResult]:
        """Diff and write a read done elsewhere; re-raise the error it raised there."""
        if isinstance(read, BaseException):

            def fail() -> SessionResult:
                raise read

            return fail
        return partial(self.rebuilder.rebuild_read, read)

    def _busy(self, report: BatchReport, exc: StoreBusyError) -> None:
        for session_id in self.rebuilder.unwritten:
            self.log.warning("store busy, session will be retried", session_id=session_id,
                             error=str(exc))  # fmt: skip
            report.busy.append(session_id)

    def _count(self, report: BatchReport, result: SessionResult) -> None:
        log_problems(self.log, result)
        report.add(result)
        self.log.debug(
            "session rebuilt",
            session_id=result.session_id,
            mode=result.mode,
            events=result.rows_read,
            spans=result.spans,
            spans_written=result.upserted,
            spans_deleted=result.deleted,
        )

    def _on_retry(self, attempt: int, delay_s: float) -> None:
        if attempt == 1 or attempt % 10 == 0:
            self.log.info("store locked by another writer, waiting", attempt=attempt,
                          delay_ms=round(delay_s * 1000))  # fmt: skip
