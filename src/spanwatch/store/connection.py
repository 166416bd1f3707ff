"""Opening the shared store, and the two kinds of transaction spanwatch runs.

The store belongs to the agent's writers. Every connection here runs in
autocommit mode so that no read snapshot stays open between statements (an open
reader blocks WAL checkpoints); reads that need one snapshot use
`read_snapshot`, writes use `write_transaction` (BEGIN IMMEDIATE, retried with
backoff while another writer holds the lock).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from spanwatch.store.errors import StoreBusyError, StoreError

SQLITE_HEADER = b"SQLite format 3\x00"

#: Called before each retry of a busy write with (attempt, delay in seconds).
RetryHook = Callable[[int, float], None]
T = TypeVar("T")


def open_store(
    path: Path,
    *,
    busy_timeout_ms: int = 5000,
    readonly: bool = False,
    require_events: bool = True,
) -> sqlite3.Connection:
    """Open the store at `path`, checking it is a SQLite file with an `events` table.

    Raises StoreError with a one-line message for a missing file, a file that is
    not SQLite, or a store without `events`. Never creates the file: the agent's
    writers own it.
    """
    check_store_file(path)
    if not readonly and not os.access(path, os.W_OK):
        # SQLite would open it read-only without a word and fail at the first write.
        raise StoreError(
            f"{path} is read-only for this user: spanwatch needs write access to it "
            "and to its directory"
        )
    uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rw'}"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # Only this connection's commits: in WAL mode NORMAL skips the fsync per
        # commit and stays consistent; a power cut can lose the last commits,
        # and spans and their watermark are lost together, so the next start
        # simply rebuilds them.
        conn.execute("PRAGMA synchronous = NORMAL")
        has_events = has_table(conn, "events")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path} is not a usable SQLite database ({exc})") from exc
    if require_events and not has_events:
        conn.close()
        raise StoreError(f"{path} has no `events` table: is this the agent's event store?")
    return conn


def open_another(
    path: Path, *, readonly: bool = True, busy_timeout_ms: int = 5000
) -> sqlite3.Connection:
    """Another connection to a store this process has open already (read-only by default).

    Not `open_store`: its checks open and close the file from Python, and
    closing any descriptor of a file drops every POSIX lock the process holds
    on it, SQLite's shared lock of the connection already open included. The
    store's other users would then see no one else on it, and the last to
    close would delete the -wal file that connection still writes to.
    """
    uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rw'}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return conn


def check_store_file(path: Path) -> None:
    """Fail early, with a clear message, on paths that cannot be a store."""
    if not path.exists():
        raise StoreError(f"no store at {path}: check --db (the file does not exist)")
    if not path.is_file():
        raise StoreError(f"{path} is not a file")
    try:
        with path.open("rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
    if header and header != SQLITE_HEADER:
        raise StoreError(f"{path} is not a SQLite database")


class InvalidText(bytes):
    """A TEXT value whose bytes are not UTF-8: the reference cannot read it either."""


def _lenient_text(data: bytes) -> str | InvalidText:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidText(data)


def fetch_all(
    conn: sqlite3.Connection, sql: str, params: tuple[object, ...] = ()
) -> list[tuple[Any, ...]]:
    """`execute(...).fetchall()` that survives TEXT values which are not UTF-8.

    Writers can store any bytes as TEXT; Python's sqlite3 then fails the whole
    query. The fast path reads normally; only when that fails is the query
    read again with such values as `InvalidText`, for the caller to skip.
    """
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    conn.text_factory = _lenient_text
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.text_factory = str


def padded(values: list[T]) -> list[T]:
    """`values` (not empty) with its last one repeated up to a power of two in all.

    For an `IN (...)` list whose length varies from call to call: each length
    is a statement of its own in the connection's statement cache (128 of
    them, up to tens of kB each), so a handful of lengths serve every call.
    """
    return values + values[-1:] * ((1 << (len(values) - 1).bit_length()) - len(values))


def has_table(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return row is not None


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the store (not on our own commits)."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


@contextmanager
def read_snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Several reads from one snapshot; the transaction ends as soon as they are done."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


@contextmanager
def write_transaction(
    conn: sqlite3.Connection,
    *,
    retry_for_s: float = 30.0,
    on_retry: RetryHook | None = None,
) -> Iterator[sqlite3.Connection]:
    """A BEGIN IMMEDIATE transaction, waiting out other writers with backoff.

    The busy timeout already waits inside SQLite; this loop adds jittered
    exponential backoff on top, so a writer that holds the lock for seconds
    delays us instead of failing us. Gives up with StoreBusyError after
    `retry_for_s`. The body must be short: the agent's writers wait on it.
    """
    deadline = time.monotonic() + retry_for_s
    delay = 0.01
    attempt = 0
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            attempt += 1
            if time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"the store stayed locked by another writer for {retry_for_s:.0f} s"
                ) from exc
            if on_retry is not None:
                on_retry(attempt, delay)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)
    try:
        yield conn
    except BaseException:
        # SQLite has rolled back already after some errors (a full disk, an I/O
        # error); a ROLLBACK then would fail and hide the error that matters.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")
