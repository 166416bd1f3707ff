"""The WAL's checkpoints on a thread of their own, while a one-shot rebuild writes.

In WAL mode, the commit that leaves the log longer than `wal_autocheckpoint`
pages (1,000 by default) copies the log into the database file and syncs
both before the committing call returns. A one-shot rebuild commits
thousands of new rows at a time, so nearly every one of its commits paid for
a checkpoint: 2-3 s of the 8 s that writing the benchmark store's spans took
the one process that writes, spent waiting on the disk. With `background_checkpoints`, that
process's connection does not checkpoint; a thread, on a connection of its
own, runs a PASSIVE checkpoint every CHECKPOINT_EVERY_S, while the writing
goes on (a PASSIVE checkpoint takes no lock a writer or reader waits for,
and copies only what no reader still needs). The log stays about as short as
before, and the store as durable: every page still reaches the database file
through a synced checkpoint.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from spanwatch.store.connection import open_another

#: How often the thread checkpoints. A rebuild commits a few MB of pages about
#: as often; a checkpoint with nothing new to copy reads the WAL index and
#: syncs nothing.
CHECKPOINT_EVERY_S = 0.1


@contextlib.contextmanager
def background_checkpoints(conn: sqlite3.Connection, path: Path) -> Iterator[None]:
    """While inside, `conn` leaves checkpoints of the store at `path` to a thread.

    Nothing changes for a store that is not in WAL mode. On the way out the
    thread runs a last checkpoint and stops, and `conn` checkpoints as before.
    """
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != "wal":
        yield
        return
    previous = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    stop = threading.Event()
    thread = threading.Thread(
        target=_checkpoint_until, args=(path, stop), name="spanwatch-checkpoints", daemon=True
    )
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        conn.execute(f"PRAGMA wal_autocheckpoint = {int(previous)}")


def _checkpoint_until(path: Path, stop: threading.Event) -> None:
    """The thread: a PASSIVE checkpoint every CHECKPOINT_EVERY_S, and one at the end."""
    try:
        conn = open_another(path, readonly=False)
    except sqlite3.Error:
        return  # the writer's connection checkpoints on close (or the next writer's)
    try:
        with contextlib.suppress(sqlite3.Error):
            while not stop.wait(CHECKPOINT_EVERY_S):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        conn.close()
