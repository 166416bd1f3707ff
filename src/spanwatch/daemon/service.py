"""The daemon: watch the store, debounce the sessions that changed, rebuild them.

One `Daemon` object owns the whole lifecycle, in the spirit of uvicorn's
`Server`: `serve()` waits for the store, catches up, reports ready, then loops
until a signal asks it to stop, and finally drains the sessions already dirty.

Time and signals live here; SQL runs on one dedicated store thread (see
`StoreLink`), so a slow rebuild never stalls signal handling, the watchdog or
file events. Errors from the store back off and retry: the daemon never exits
because the store misbehaved, and never spins.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from spanwatch.daemon.debounce import Debouncer
from spanwatch.daemon.long_reads import LongReads
from spanwatch.daemon.notify import Notifier, watchdog_interval
from spanwatch.daemon.store_link import BatchReport, Landed, StoreLink, file_identity
from spanwatch.daemon.wakeups import StoreWakeups
from spanwatch.logs import configure_logging
from spanwatch.settings import Settings, SettingsError
from spanwatch.store.connection import has_table, is_busy
from spanwatch.store.errors import StoreBusyError, StoreError, advice
from spanwatch.store.rebuild import Tally

T = TypeVar("T")

#: How long systemd should wait per step of a long catch-up (EXTEND_TIMEOUT_USEC).
CATCH_UP_EXTEND_S = 60
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0


def _now_ms() -> float:
    return time.monotonic() * 1000


class Daemon:
    """`spanwatch run`: keeps tool spans fresh until told to stop."""

    def __init__(
        self,
        settings: Settings,
        *,
        reload_settings: Callable[[], Settings] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        if settings.db is None:
            raise StoreError("no store given: pass --db PATH or set `db` in the configuration")
        self.settings = settings
        self.db: Path = settings.db
        self._reload_settings = reload_settings
        self.notifier = notifier or Notifier.from_environment()
        self.log = structlog.get_logger("spanwatch.daemon")
        self.debouncer = Debouncer(settings.debounce_ms, settings.max_delay_ms)
        self.ready = False
        self._signals = 0
        self._wake = asyncio.Event()
        self._exit_requested = asyncio.Event()
        self._stop = asyncio.Event()
        self._last_error: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._store_busy_since: float | None = None
        self._flags: dict[str, int] = {}  # trigger counters of flagged sessions (triggers mode)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spanwatch-store")
        self._link: StoreLink | None = None
        self._long: LongReads | None = None
        self._after_flight: set[str] = set()
        """Sessions that changed while being read on the long-read thread."""
        self._next_reconcile = 0.0
        self._waiting_logged = False
        self._totals = Tally()

    @property
    def should_exit(self) -> bool:
        return self._exit_requested.is_set()

    # Lifecycle -----------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; the exit code for the process."""
        return asyncio.run(self.serve())

    async def serve(self) -> int:
        self._install_signal_handlers()
        self.log.info("starting", db=str(self.db), pid=os.getpid(), **self._timing())
        tasks = self._tasks
        tasks.append(asyncio.create_task(self._watch_files(), name="spanwatch-wakeups"))
        interval = watchdog_interval()
        if interval is not None:
            tasks.append(asyncio.create_task(self._watchdog(interval), name="spanwatch-watchdog"))
        if self.notifier.enabled:
            tasks.append(asyncio.create_task(self._report_status(), name="spanwatch-status"))
        code = 0
        try:
            code = await self._main_loop()
            if code == 0:
                await self._drain()
        finally:
            self.notifier.stopping("stopping")
            self._stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._long is not None:
                self._long.close()
                self._long = None
            if self._link is not None:
                await self._on_store(self._link.close)
                self._link = None
            self._executor.shutdown(wait=True)
            self.notifier.close()
        self.log.info(
            "stopped",
            sessions_rebuilt=self._totals.sessions,
            events=self._totals.events,
            spans_written=self._totals.spans_written,
            skipped_rows=self._totals.skipped_rows,
        )
        return code

    async def _main_loop(self) -> int:
        """Loop until asked to stop; 2 if the store is unusable at start (a setup error)."""
        backoff = BACKOFF_MIN_S
        while not self.should_exit:
            try:
                if self._link is None:
                    await self._connect()
                    continue
                await self._cycle()
                backoff = BACKOFF_MIN_S
                self._last_error = None
            except (StoreError, sqlite3.Error, OSError) as exc:
                if not self.ready and not _transient(exc):
                    self.log.error("cannot use the store", db=str(self.db), error=str(exc),
                                   hint=advice(exc))  # fmt: skip
                    return 2
                # Once running, trouble with the store is waited out, never a crash loop.
                # One error line when it starts; while it lasts, a changed message
                # (a damaged file reads differently on reopening) at info, repeats at debug.
                message = str(exc)
                if self._last_error is None:
                    level = self.log.error
                elif message != self._last_error:
                    level = self.log.info
                else:
                    level = self.log.debug
                level("store error; reopening after a pause", error=message, hint=advice(exc),
                      retry_in_s=backoff)  # fmt: skip
                self._last_error = message
                await self._disconnect()
                await self._back_off(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        return 0

    async def _back_off(self, seconds: float) -> None:
        """Wait before trying the store again, but not longer than the trouble lasts.

        The backoff grows to BACKOFF_MAX_S during a long outage. A change to the
        store's files (the file put back, a writer at work) may mean the
        trouble is over, so it ends the wait early, though never before
        BACKOFF_MIN_S: retries stay spaced however often the files change.
        """
        self._wake.clear()  # changes made by our own failed attempt and disconnect
        await self._sleep(BACKOFF_MIN_S)
        if seconds > BACKOFF_MIN_S:
            await self._sleep(seconds - BACKOFF_MIN_S, wake_early=True)

    async def _connect(self) -> None:
        """Wait for the store, open it, reconcile and catch up; READY=1 the first time."""
        if not await self._store_exists():
            if not self._waiting_logged:
                self.log.info("waiting for the store to appear", db=str(self.db))
                self.notifier.status(f"waiting for {self.db}")
                self._waiting_logged = True
            await self._sleep(self.settings.poll_interval_ms / 1000, wake_early=True)
            return
        self._waiting_logged = False
        settings = self.settings
        self._link = await self._on_store(
            lambda: StoreLink(
                self.db,
                log=self.log,
                busy_timeout_ms=settings.busy_timeout_ms,
                write_retry_max_s=settings.write_retry_max_s,
                cache_sessions=settings.cache_max_sessions,
                cache_spans=settings.cache_max_spans,
                capture=settings.capture,
            )
        )
        loop = asyncio.get_running_loop()
        self._long = LongReads(
            self.db,
            self._link.rebuilder.shape,
            identity=self._link.identity,
            busy_timeout_ms=settings.busy_timeout_ms,
            on_landed=lambda: _call_soon(loop, self._wake.set),
        )
        self._link.rebuilder.write_guard = self._long.paused
        stale = await self._on_store(self._link.stale_sessions)
        flagged = await self._on_store(self._link.flagged)
        self._flags.update(flagged)
        stale += [session_id for session_id in flagged if session_id not in set(stale)]
        self.log.info("store opened", db=str(self.db), stale_sessions=len(stale))
        self._next_reconcile = time.monotonic() + settings.reconcile_interval_s
        await self._catch_up(stale)
        if not self.ready and not self.should_exit:
            self.ready = True
            self.notifier.ready(self._status_text())
            self.log.info("ready", **self._timing())

    async def _store_exists(self) -> bool:
        if file_identity(self.db) is None:
            return False
        try:
            conn = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True)
            try:
                exists = has_table(conn, "events")
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            if is_busy(exc):
                raise StoreBusyError(f"{self.db} is locked by another writer") from exc
            raise StoreError(f"{self.db} is not a usable SQLite database ({exc})") from exc
        return exists

    async def _disconnect(self) -> None:
        if self._long is not None:
            # Reads in flight are of the file being left: dropped, and done again.
            self._mark_due_now([*self._long.close(), *self._after_flight])
            self._after_flight.clear()
            self._long = None
        link, self._link = self._link, None
        if link is not None:
            await self._on_store(link.close)

    # The work ------------------------------------------------------------------

    async def _cycle(self) -> None:
        """Wait for a reason to act, then look for changes and rebuild what is due."""
        await self._wait_for_work()
        link = self._link
        assert link is not None
        if not link.still_same_file():
            self.log.warning(
                "store file was replaced, moved or deleted; reopening", db=str(self.db)
            )
            self.debouncer = Debouncer(self.settings.debounce_ms, self.settings.max_delay_ms)
            await self._disconnect()
            return
        if await self._on_store(link.changed):
            new = await self._on_store(link.new_rows)
            flagged = await self._on_store(link.flagged)
            self._flags.update(flagged)
            now = _now_ms()
            for session_id in new.keys() | flagged.keys():
                self.debouncer.mark(session_id, now)
        if time.monotonic() >= self._next_reconcile:
            self._next_reconcile = time.monotonic() + self.settings.reconcile_interval_s
            stale = await self._on_store(link.stale_sessions)
            self._mark_due_now(s for s in stale if s not in self.debouncer)
            if stale:
                self.log.info("reconcile found stale sessions", sessions=len(stale))
        while not self.should_exit:
            due = self.debouncer.due(_now_ms(), self.settings.batch_max_sessions)
            landed = self._long.landed() if self._long is not None else []
            if not due and not landed:
                break
            due = self._hold_long_reads(due)
            if due or landed:
                await self._rebuild(due, landed, defer_long=True)
            for session_id, _ in landed:
                if session_id in self._after_flight:
                    self._after_flight.discard(session_id)
                    self._mark_due_now([session_id])

    def _hold_long_reads(self, due: list[str]) -> list[str]:
        """`due` without the sessions being read in full: those wait for their read to land."""
        long_reads = self._long
        if long_reads is None:
            return due
        held = {s for s in due if s in long_reads}
        self._after_flight |= held
        return [s for s in due if s not in held]

    async def _wait_for_work(self) -> None:
        # The fallback poll: file events never arrive on some filesystems.
        timeout = self.settings.poll_interval_ms / 1000 if self.settings.poll_fallback else None
        deadline = self.debouncer.next_deadline_ms()
        if deadline is not None:
            until_due = max(0.0, (deadline - _now_ms()) / 1000)
            timeout = until_due if timeout is None else min(timeout, until_due)
        until_reconcile = max(0.0, self._next_reconcile - time.monotonic())
        timeout = until_reconcile if timeout is None else min(timeout, until_reconcile)
        await self._sleep(timeout, wake_early=True)

    async def _rebuild(
        self, sessions: list[str], landed: list[Landed] | None = None, *, defer_long: bool = False
    ) -> BatchReport:
        """Rebuild on the store thread; with `defer_long`, long full reads go to `self._long`."""
        link, long_reads = self._link, self._long
        assert link is not None
        flags = {s: self._flags.pop(s) for s in sessions if s in self._flags}
        rows = self.settings.long_read_rows
        defer = rows if defer_long and long_reads is not None and rows > 0 else None
        report = await self._on_store(lambda: link.rebuild(sessions, flags, landed, defer))
        if long_reads is not None:
            for session_id in report.deferred:
                long_reads.submit(session_id)
        now = _now_ms()
        for session_id in report.busy:
            self.debouncer.mark(session_id, now)
            if session_id in flags:
                self._flags.setdefault(session_id, flags[session_id])
        self._totals.merge(report)
        self.log.info(
            "batch",
            sessions=report.sessions,
            incremental=report.incremental,
            rewound=report.rewound,
            reread=report.reread,
            resumed=report.resumed,
            events=report.events,
            spans_written=report.spans_written,
            spans_deleted=report.spans_deleted,
            skipped_rows=report.skipped_rows,
            busy=len(report.busy),
            failed=len(report.failed),
            long_reads=len(report.deferred),
            ms=round(report.ms, 1),
            commits=report.commits,
            locked_ms=round(report.locked_ms, 2),
            cached_spans=link.rebuilder.cached_spans,
        )
        return report

    async def _catch_up(self, sessions: list[str]) -> None:
        """Rebuild every stale session before reporting ready, in batches."""
        step = max(1, self.settings.batch_max_sessions)
        for start in range(0, len(sessions), step):
            if self.should_exit:
                self._mark_due_now(sessions[start:])
                return
            self.notifier.send(
                f"EXTEND_TIMEOUT_USEC={CATCH_UP_EXTEND_S * 1_000_000}",
                f"STATUS=catching up: {start}/{len(sessions)} sessions",
            )
            await self._rebuild(sessions[start : start + step])

    async def _drain(self) -> None:
        """On shutdown: rebuild the sessions already dirty (and being read), then stop."""
        if self._link is None:
            return
        landed: list[Landed] = []
        if self._long is not None and len(self._long):
            landed = await asyncio.get_running_loop().run_in_executor(None, self._long.wait)
        self._mark_due_now(self._after_flight)
        self._after_flight.clear()
        if not self.debouncer.pending() and not landed:
            return
        pending = self.debouncer.due(float("inf"))
        self.log.info("draining dirty sessions before exit", sessions=len(pending) + len(landed))
        try:
            await self._rebuild(pending[: self.settings.batch_max_sessions], landed)
            for start in range(
                self.settings.batch_max_sessions, len(pending), self.settings.batch_max_sessions
            ):
                await self._rebuild(pending[start : start + self.settings.batch_max_sessions])
        except (StoreError, sqlite3.Error, OSError) as exc:
            self.log.error("could not drain; the next start catches up", error=str(exc))

    def _mark_due_now(self, sessions: Iterable[str]) -> None:
        # Marked far enough in the past that the debounce window is already over.
        past = _now_ms() - self.settings.max_delay_ms - 1
        for session_id in sessions:
            self.debouncer.mark(session_id, past)

    # Signals, reload, watchdog ---------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        # Act first, report after: nothing that reporting does may stop the stop.
        self._signals += 1
        if self._signals > 1:
            with contextlib.suppress(Exception):
                self.log.warning("second stop signal: exiting at once", signal=sig.name)
            os._exit(1)
        self._exit_requested.set()
        self._wake.set()
        self.log.info("stop requested; finishing the work in hand", signal=sig.name)
        self.notifier.stopping("finishing the work in hand")

    def _on_reload_signal(self) -> None:
        self._reload()
        self._wake.set()

    def _reload(self) -> None:
        # RELOADING=1 ... READY=1 is for a service that is up: before the first
        # catch-up (or once stopping), READY=1 would tell systemd it is ready.
        started = self.ready and not self.should_exit
        if started:
            self.notifier.reloading("reloading configuration")
        try:
            self._apply_reload()
        finally:
            if started:
                self.notifier.ready(self._status_text())

    def _apply_reload(self) -> None:
        if self._reload_settings is None:
            return
        try:
            new = self._reload_settings()
        except SettingsError as exc:
            self.log.error("reload failed; keeping the running configuration", problems=str(exc))
            return
        changed = {
            key: value
            for key, value in new.model_dump().items()
            if value != getattr(self.settings, key)
        }
        if "db" in changed:
            self.log.warning("`db` cannot change on reload; restart to watch another store")
            changed.pop("db")
            new = new.model_copy(update={"db": self.db})
        self.settings = new
        configure_logging(new.log_level, new.log_format)
        self.debouncer.update_timing(new.debounce_ms, new.max_delay_ms)
        if "reconcile_interval_s" in changed:
            # A shorter interval applies now, not after the reconcile already scheduled.
            self._next_reconcile = min(
                self._next_reconcile, time.monotonic() + new.reconcile_interval_s
            )
        if {"poll_interval_ms", "force_polling"} & changed.keys():
            self._restart_watcher()
        self.log.info("configuration reloaded", changed={k: str(v) for k, v in changed.items()})

    async def _report_status(self) -> None:
        """STATUS= with the latest figures when they changed, at most every status_interval_s."""
        sent: str | None = None
        while True:
            await asyncio.sleep(self.settings.status_interval_s)
            text = self._status_text()
            if self.ready and not self.should_exit and text != sent:
                self.notifier.status(text)
                sent = text

    async def _watchdog(self, interval_s: float) -> None:
        """WATCHDOG=1 while the daemon makes progress.

        This task alone would prove only that the event loop runs. So a ping is
        withheld once the store thread has been inside one piece of work (one
        session's rebuild, one scan) for longer than a locked store can
        legitimately hold it (write_retry_max_s and one busy_timeout_ms) plus
        the watchdog period: a hung store thread then lets systemd restart the
        service.
        """
        stuck_logged = False
        while True:
            busy_since = self._store_busy_since
            progress = max(busy_since or 0.0, self._link.progress_at if self._link else 0.0)
            s = self.settings
            allowed = s.write_retry_max_s + s.busy_timeout_ms / 1000 + 2 * interval_s
            if busy_since is None or time.monotonic() - progress < allowed:
                self.notifier.watchdog()
                stuck_logged = False
            elif not stuck_logged:
                self.log.error("store thread made no progress; withholding WATCHDOG=1",
                               stuck_s=round(time.monotonic() - progress))  # fmt: skip
                stuck_logged = True
            await asyncio.sleep(interval_s)

    async def _watch_files(self) -> None:
        """Turn file events into wake-ups of the main loop (which also polls on a timer)."""
        settings = self.settings
        while not self._stop.is_set():
            try:
                async with StoreWakeups(
                    self.db,
                    stop_event=self._stop,
                    poll_interval_ms=settings.poll_interval_ms,
                    poll_fallback=False,
                    force_polling=settings.force_polling,
                ) as wakeups:
                    async for _ in wakeups:
                        self._wake.set()
            except Exception as exc:  # the watcher is a hint; the poll carries on
                self.log.warning("file watching failed; relying on polling", error=repr(exc))
                await self._sleep(settings.poll_interval_ms / 1000)

    def _restart_watcher(self) -> None:
        for task in self._tasks:
            if task.get_name() == "spanwatch-wakeups":
                task.cancel()
                self._tasks.remove(task)
                break
        self._tasks.append(asyncio.create_task(self._watch_files(), name="spanwatch-wakeups"))

    # Helpers ---------------------------------------------------------------------

    async def _on_store(self, work: Callable[[], T]) -> T:
        """Run SQL on the store thread."""
        self._store_busy_since = time.monotonic()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finally:
            self._store_busy_since = None

    async def _sleep(self, seconds: float | None, *, wake_early: bool = False) -> None:
        """Sleep, but wake for a stop request (and, if asked, for a file event)."""
        events = [self._exit_requested, self._wake] if wake_early else [self._exit_requested]
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if wake_early:
            self._wake.clear()

    def _timing(self) -> dict[str, Any]:
        s = self.settings
        return {"debounce_ms": s.debounce_ms, "max_delay_ms": s.max_delay_ms}

    def _status_text(self) -> str:
        t = self._totals
        return (
            f"watching {self.db.name}: {t.sessions} session rebuilds, "
            f"{t.spans_written} spans written, {self.debouncer.pending()} sessions dirty"
        )


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """`call_soon_threadsafe` from another thread, which may outlive the loop."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(callback)


def _transient(exc: BaseException) -> bool:
    """A locked store is waited out, even at start; other errors at start are setup errors."""
    if isinstance(exc, StoreBusyError):
        return True
    return isinstance(exc, sqlite3.OperationalError) and is_busy(exc)
