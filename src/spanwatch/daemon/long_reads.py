"""Full reads of long sessions, off the store thread.

A session whose state is not in memory (the first change after the daemon
started, or after its state was evicted, or rows that sort before what was
seen) is read whole on its next rebuild: seconds for 50,000 events. On the
store thread that would hold up every other session's rebuild for as long.
Sessions of at least `long_read_rows` rows are read here instead, one at a
time on a thread with its own read-only connection, and fed to the engine
(`read_in_full`: short snapshots, a long session a part at a time). The
store thread diffs and writes the result with its next batch
(`Rebuilder.rebuild_read`), from the stored rows it alone writes.

The reading thread is paused while the store thread holds the write lock: it
waits at its next pace point (a millisecond or two of feeding later), and the
write transaction starts once it does. Both threads need the GIL; were they to
share it then, each SQLite step of the transaction could wait for the reader's
switch interval (5 ms), and the agents' writers would wait on a write lock held
that much longer. Outside write transactions the two threads share the GIL:
other sessions' rebuilds slow down while a long read runs, but never stop.

While a session is being read here, the daemon does not rebuild it on the
store thread; changes that arrive meanwhile are rebuilt after it lands.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from spanwatch.daemon.store_link import Landed, file_identity
from spanwatch.store.connection import open_another
from spanwatch.store.errors import StoreError
from spanwatch.store.full_read import FullRead, read_in_full
from spanwatch.store.schema import EventsShape

#: The longest a write waits for the reading thread to pause (it takes a few ms).
PARK_TIMEOUT_S = 0.05

#: The reading connection's page cache: 256 KiB, not SQLite's 2 MiB. A long
#: read visits each page of its rows once, so a bigger cache only holds pages
#: that are not read again (a 50,000-event read took the same CPU time).
READER_CACHE_PRAGMA = "PRAGMA cache_size = -256"


class LongReads:
    """One reading thread and its connection to the store at `path`."""

    def __init__(
        self,
        path: Path,
        shape: EventsShape,
        *,
        identity: tuple[int, int] | None,
        busy_timeout_ms: int,
        on_landed: Callable[[], None],
    ) -> None:
        self.path = path
        self.identity = identity
        """(device, inode) of the file the store thread has open: reads must be of it."""
        self.shape = shape
        self.busy_timeout_ms = busy_timeout_ms
        self._on_landed = on_landed
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spanwatch-read")
        self._conn: sqlite3.Connection | None = None
        self._flights: dict[str, Future[FullRead]] = {}
        self._may_run = threading.Event()
        self._may_run.set()
        self._parked = threading.Event()
        self._reading = False
        self._closing = False

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the reading thread at its next pace point meanwhile (see the module docstring)."""
        self._may_run.clear()
        try:
            if self._reading:
                self._parked.wait(PARK_TIMEOUT_S)
            yield
        finally:
            self._may_run.set()

    def submit(self, session_id: str) -> None:
        future = self._executor.submit(self._read, session_id)
        self._flights[session_id] = future
        # Called on the reading thread: the callback must be thread-safe.
        future.add_done_callback(lambda _: self._on_landed())

    def landed(self) -> list[Landed]:
        """The reads finished since the last call, with their sessions."""
        done = [s for s, future in self._flights.items() if future.done()]
        return [self._take(session_id) for session_id in done]

    def wait(self) -> list[Landed]:
        """Every read in flight, once finished (for a drain)."""
        return [self._take(session_id) for session_id in list(self._flights)]

    def close(self) -> list[str]:
        """Stop, giving up the reads in flight; the sessions whose reads are lost.

        The connection is closed by the reading thread if a read is under way
        (it stops at its next pace point), else when this object is dropped.
        """
        lost = list(self._flights)
        self._flights.clear()
        self._closing = True
        self._may_run.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        return lost

    def _take(self, session_id: str) -> Landed:
        future = self._flights.pop(session_id)
        error = future.exception()
        return (session_id, error) if error is not None else (session_id, future.result())

    def _read(self, session_id: str) -> FullRead:
        self._reading = True
        try:
            self._pace()
            if self._conn is None:
                conn = open_another(self.path, busy_timeout_ms=self.busy_timeout_ms)
                if file_identity(self.path) != self.identity:
                    conn.close()
                    raise StoreError(f"{self.path} was replaced, moved or deleted")
                conn.execute(READER_CACHE_PRAGMA)
                self._conn = conn
            return read_in_full(self._conn, self.shape, session_id, pace=self._pace)
        finally:
            self._reading = False
            if self._closing and self._conn is not None:
                self._conn.close()
                self._conn = None

    def _pace(self) -> None:
        if not self._may_run.is_set():
            self._parked.set()
            self._may_run.wait()
            self._parked.clear()
        if self._closing:
            raise _Abandoned


class _Abandoned(Exception):
    """A read given up because its `LongReads` was closed."""
