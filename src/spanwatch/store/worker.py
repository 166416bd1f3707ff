"""What a rebuild's worker processes run (see `store.prepare`), reading through apsw.

A worker reads and builds whole sessions, and fetching their rows is about a
quarter of its work. Python 3.11's sqlite3 module lets go of the GIL and
takes it back around every column of every row (a mutex and a condition
variable each time, for nothing: a worker has one thread); apsw converts a
row in one go, and fetches the same rows with about 40 % less CPU (10 % of
a worker's instructions).

apsw carries its own SQLite. Two SQLite libraries must never have the same
database open in one process: each keeps its POSIX locks as if it were alone,
and closing a file through one drops the other's locks
(https://sqlite.org/howtocorrupt.html, 2.2.1). So only worker processes open
the store through apsw, and nothing else in them opens it. File format, WAL
and WAL index are the same for every SQLite since 3.7: the workers, the
writing process and the agents' writers share the store as usual.

apsw refuses TEXT that is not UTF-8, which the sqlite3 module reads through a
text factory (`connection.fetch_all`) as a value to skip. A session with such
a value, or with any row the reference drops (its watermark is then SQL's,
read in the same snapshot: `marks.live_mark`), is left to the calling
process, which reads it as a serial rebuild does. Such sessions are rare.
"""

from __future__ import annotations

import sqlite3

import apsw

from spanwatch.store.events import SessionRows, session_rows, session_select
from spanwatch.store.prepare import PreparedSession, built_session, whole_mark
from spanwatch.store.schema import EventsShape

#: How much of the store a worker maps while it reads a chunk: SQLite's
#: limit (2 GB unless built otherwise); pages past it are read as usual.
MMAP_BYTES = 2**31

#: This process's connection to each store, kept between chunks.
_stores: dict[str, apsw.Connection] = {}


def prepare_chunk(
    db_path: str, busy_timeout_ms: int, shape: EventsShape, session_ids: list[str]
) -> list[PreparedSession | str]:
    """Each session prepared, or its id where it is left to the caller (see above)."""
    try:
        conn = _stores.get(db_path)
        if conn is None:
            conn = _stores[db_path] = open_reader(db_path, busy_timeout_ms)
        # The store is read through a memory map, which saves a read() call and a
        # copy per 4 KB page. Its pages count in the worker's resident size while
        # mapped, so the map is dropped after each chunk (mmap_size 0 unmaps it).
        run_pragma(conn, f"PRAGMA mmap_size = {MMAP_BYTES}")
        try:
            return [_prepare(conn, shape, session_id) for session_id in session_ids]
        finally:
            run_pragma(conn, "PRAGMA mmap_size = 0")
    except apsw.Error as exc:
        # The caller reports the store's errors as the sqlite3 module raises them.
        raise sqlite3.DatabaseError(f"{exc} (a rebuild worker reading {db_path})") from None


def _prepare(conn: apsw.Connection, shape: EventsShape, session_id: str) -> PreparedSession | str:
    rows = read_session(conn, shape, session_id)
    if rows is None:
        return session_id
    return built_session(session_id, whole_mark(session_id, rows), rows)


def open_reader(path: str, busy_timeout_ms: int) -> apsw.Connection:
    """A read-only connection to the store (the caller has checked it is one)."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(busy_timeout_ms)
    return conn


def run_pragma(conn: apsw.Connection, pragma: str) -> None:
    """Run a PRAGMA to its end: a statement left with a row to give holds its snapshot."""
    conn.execute(pragma).fetchall()


def read_session(conn: apsw.Connection, shape: EventsShape, session_id: str) -> SessionRows | None:
    """All the session's rows, in one snapshot, as `load_session_rows(...,
    hooks_checked_by_parse=True)` reads them; None if the session is left to
    the caller (see above)."""
    cursor = conn.cursor()
    try:
        fetched = cursor.execute(session_select(shape), (session_id,)).fetchall()
    except UnicodeDecodeError:
        return None
    finally:
        # A fetch that failed midway leaves its statement, and so its snapshot, open.
        cursor.close()
    rows = session_rows(fetched, hooks_checked_by_parse=True)
    return None if rows.skipped else rows
