"""Hints that the store may have changed: file events on the DB and its WAL, and a timer.

A wake-up only says "look now". Whether anything changed is for the daemon to
confirm (`PRAGMA data_version`, then the high-water marks): file events can be
spurious (the daemon's own commits touch the same files), late, or missing
altogether (network filesystems, bind mounts, an exhausted inotify limit).
Hence two sources, merged into one stream:

- watchfiles on the DB's directory, filtered to the DB file and its `-wal`.
  The `-shm` file is ignored: every reader touches it, so it would wake the
  daemon on its own queries. Other files in the directory are ignored too.
- a fallback timer every `poll_interval_ms` (on by default), for filesystems
  whose events never arrive.

`force_polling` makes watchfiles stat the files every `poll_interval_ms`
instead of using inotify; the same happens on its own when inotify fails.
A directory that does not exist yet is waited for, and a directory that is
deleted or replaced is watched again when it reappears.

Wake-ups that arrive while the consumer is busy are merged into one, so a slow
rebuild never builds a queue of stale hints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog
from watchfiles import Change, awatch

log = structlog.get_logger(__name__)

# How watchfiles groups file events: it yields once no new change arrived for
# `_STEP_MS`, or after `_GROUP_MS` while changes keep coming. Short, because the
# debouncer, not the watcher, decides when a session is rebuilt, and it counts
# a session's quiet window from when the daemon noticed the change: under
# continuous writes every wake-up comes `_GROUP_MS` after the first change it
# carries. 20 ms rather than 100: on the live benchmark (alternating runs) the
# daemon's share of the write lock fell ~10% (smaller, more frequent commits)
# and the writer's commit p99 with it; each extra wake-up costs a PRAGMA
# data_version and a rowid-range query. A quiet store is watched at a slower
# pace (below).
_STEP_MS = 20
_GROUP_MS = 20
# Once the store files have been quiet this long, the watch steps every
# `_QUIET_STEP_MS` instead, until the next change: each step wakes a thread
# that takes the GIL, which was most of an idle daemon's CPU (on an idle store:
# 0.55 % of a core with 20 ms, 0.20-0.25 % with 100 ms). The first change after
# a quiet spell is then seen up to `_QUIET_STEP_MS` later; the watch restarts
# at the short step with it (and signals STARTED, as any restart does).
_QUIET_AFTER_S = 10.0
_QUIET_STEP_MS = 100
# How often the watch checks that its directory is still the one on disk.
_DIRECTORY_CHECK_MS = 2000
# Backoff after the file watch fails, doubled per failure up to the maximum.
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 30.0


class WakeReason(StrEnum):
    STARTED = "started"  # the file watch (re)started: the store may have changed unseen
    FILES = "files"  # the DB file or its -wal changed
    POLL = "poll"  # the fallback timer


@dataclass(frozen=True, slots=True)
class Wakeup:
    """One "the store may have changed" hint; several merged ones if the consumer was busy."""

    reasons: frozenset[WakeReason]
    paths: frozenset[Path]  # store files named by file events (empty for STARTED and POLL)


class StoreWakeups:
    """Async iterator of `Wakeup`s for the store at `db_path`; use inside `async with`.

    Iteration ends when `stop_event` is set (or the block is left); the file
    watch is stopped through watchfiles' own `stop_event`, so leaving never
    waits for a pending filesystem event. Settings are fixed for the life of
    the object, which runs once: on a reload with different ones, leave the
    block and enter a new one.

        async with StoreWakeups(db, stop_event=stop, poll_interval_ms=2000) as wakeups:
            async for wakeup in wakeups:
                ...  # check data_version, then the high-water marks
    """

    def __init__(
        self,
        db_path: Path,
        *,
        stop_event: asyncio.Event | None = None,
        poll_interval_ms: int = 2000,
        poll_fallback: bool = True,
        force_polling: bool = False,
    ) -> None:
        if poll_interval_ms <= 0:
            raise ValueError(f"poll_interval_ms must be > 0, got {poll_interval_ms}")
        # The real file: SQLite writes the -wal next to the target of a symlink.
        self.db_path = db_path.expanduser().resolve()
        self.directory = self.db_path.parent
        self.poll_interval_ms = poll_interval_ms
        self.poll_fallback = poll_fallback
        self.force_polling = force_polling
        self._store_files = frozenset({self.db_path.name, self.db_path.name + "-wal"})
        self._external_stop = stop_event
        self._halt = asyncio.Event()  # ends everything: external stop, or leaving the block
        self._wake = asyncio.Event()
        self._reasons: set[WakeReason] = set()
        self._paths: set[Path] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._log = log.bind(db=str(self.db_path))

    async def __aenter__(self) -> Self:
        if self._tasks or self._halt.is_set():
            raise RuntimeError("a StoreWakeups can be entered once; make a new one")
        self._tasks = [asyncio.create_task(self._watch_files(), name="spanwatch-watch-files")]
        if self.poll_fallback:
            self._tasks.append(asyncio.create_task(self._poll(), name="spanwatch-poll"))
        if self._external_stop is not None:
            self._tasks.append(asyncio.create_task(self._follow_stop(self._external_stop)))
        for task in self._tasks:
            task.add_done_callback(lambda _: self._wake.set())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._halt.set()
        tasks, self._tasks = self._tasks, []
        # The file watch is not cancelled but halted: watchfiles notices its stop
        # event within _STEP_MS, whereas a cancel would wait for its thread.
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Wakeup:
        if not self._tasks and not self._halt.is_set():
            raise RuntimeError("iterate StoreWakeups inside 'async with'")
        while True:
            if self._halt.is_set():
                raise StopAsyncIteration
            self._raise_if_failed()
            if self._reasons:
                wakeup = Wakeup(frozenset(self._reasons), frozenset(self._paths))
                self._reasons.clear()
                self._paths.clear()
                return wakeup
            self._wake.clear()
            await self._wake.wait()

    def _signal(self, reason: WakeReason, paths: set[Path] | None = None) -> None:
        self._reasons.add(reason)
        if paths:
            self._paths.update(paths)
        self._wake.set()

    def _raise_if_failed(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error

    async def _follow_stop(self, stop_event: asyncio.Event) -> None:
        await stop_event.wait()
        self._halt.set()

    async def _poll(self) -> None:
        while not await self._halted_within(self.poll_interval_ms / 1000):
            self._signal(WakeReason.POLL)

    async def _watch_files(self) -> None:
        """Run the file watch for as long as not halted, through missing directories and errors."""
        force_polling = self.force_polling
        retry_s = _RETRY_FIRST_S
        step_ms = _STEP_MS
        new_pace = False
        last_change = time.monotonic()
        while not self._halt.is_set():
            if not await self._wait_for_directory():
                return
            identity = _identity(self.directory)
            (self._log.debug if new_pace else self._log.info)(
                "watching store files",
                directory=str(self.directory),
                mode="polling" if force_polling else "inotify",
                step_ms=step_ms,
            )
            new_pace = False
            try:
                # No await between this signal and the watch being set up (awatch
                # registers it before its first suspension), so a change made
                # after the consumer sees STARTED is always caught.
                self._signal(WakeReason.STARTED)
                changes_stream = awatch(
                    self.directory,
                    watch_filter=self._is_store_file_or_directory,
                    stop_event=self._halt,
                    recursive=False,
                    debounce=_GROUP_MS,
                    step=step_ms,
                    rust_timeout=_DIRECTORY_CHECK_MS,
                    yield_on_timeout=True,  # an empty batch now and then: check the directory
                    force_polling=force_polling,
                    poll_delay_ms=self.poll_interval_ms,
                )
                async with contextlib.aclosing(changes_stream):
                    async for changes in changes_stream:
                        retry_s = _RETRY_FIRST_S
                        paths = {Path(path) for _, path in changes} - {self.directory}
                        if paths:
                            self._signal(WakeReason.FILES, paths)
                            last_change = time.monotonic()
                        if _identity(self.directory) != identity:
                            self._log.info("store directory deleted or replaced")
                            break
                        quiet = time.monotonic() - last_change >= _QUIET_AFTER_S
                        pace = _QUIET_STEP_MS if quiet else _STEP_MS
                        if pace != step_ms:
                            step_ms, new_pace = pace, True
                            break
            except (OSError, RuntimeError) as exc:
                if not self.directory.is_dir():
                    continue  # gone while starting: wait for it again
                error = f"{type(exc).__name__}: {exc}"
                if not force_polling:
                    # E.g. the inotify watch limit (fs.inotify.max_user_watches) is reached.
                    self._log.warning(
                        "file events unavailable; polling the store files", error=error
                    )
                    force_polling = True
                    continue
                self._log.warning("file watch failed", error=error, retry_in_s=retry_s)
                if await self._halted_within(retry_s):
                    return
                retry_s = min(retry_s * 2, _RETRY_MAX_S)

    async def _wait_for_directory(self) -> bool:
        """Wait until the store's directory exists. False if halted first."""
        if self.directory.is_dir():
            return True
        self._log.warning("waiting for the store directory to exist", directory=str(self.directory))
        check_s = min(self.poll_interval_ms, 1000) / 1000
        while not self.directory.is_dir():
            if await self._halted_within(check_s):
                return False
        return True

    async def _halted_within(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True (at once) if halted meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._halt.wait(), seconds)
        return self._halt.is_set()

    def _is_store_file_or_directory(self, change: Change, path: str) -> bool:
        # The directory itself is kept so that its deletion restarts the watch.
        return os.path.basename(path) in self._store_files or path == str(self.directory)


def _identity(directory: Path) -> tuple[int, int] | None:
    try:
        stat = directory.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
