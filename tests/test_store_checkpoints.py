"""A one-shot rebuild's WAL checkpoints run on a thread of their own and keep the log short."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from spanwatch.store.checkpoints import CHECKPOINT_EVERY_S, background_checkpoints
from spanwatch.store.connection import open_store
from stores import make_store

COMMITS = 10
COMMIT_BYTES = 1_000_000


def _commit_pages(writer: sqlite3.Connection, wal: Path) -> int:
    """Commit COMMITS transactions of about COMMIT_BYTES each; the -wal file's largest size."""
    writer.execute("CREATE TABLE IF NOT EXISTS filler (x BLOB)")
    largest = 0
    for _ in range(COMMITS):
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO filler VALUES (randomblob(?))", (COMMIT_BYTES,))
        writer.execute("COMMIT")
        time.sleep(3 * CHECKPOINT_EVERY_S)
        largest = max(largest, wal.stat().st_size)
    return largest


def test_the_writer_leaves_checkpoints_to_a_thread_and_the_log_stays_short(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    wal = Path(f"{db}-wal")
    agent = make_store(db)  # an agent's connection stays open, as it does in real use
    writer = open_store(db)
    before = writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    with background_checkpoints(writer, db):
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        largest = _commit_pages(writer, wal)
    assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == before
    # Every commit was copied into the database file and the log started over:
    # it never held more than a couple of commits.
    assert largest < 3 * COMMIT_BYTES
    assert agent.execute("SELECT count(*) FROM filler").fetchone()[0] == COMMITS

    # The same commits with nobody checkpointing: the log holds all of them.
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    assert _commit_pages(writer, wal) > COMMITS * COMMIT_BYTES
    writer.close()
    agent.close()


def test_a_store_not_in_wal_mode_is_left_as_it_is(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    agent = make_store(db)
    agent.execute("PRAGMA journal_mode = DELETE").fetchone()
    agent.close()
    writer = open_store(db)
    threads = threading.active_count()
    with background_checkpoints(writer, db):
        assert threading.active_count() == threads
        assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    writer.close()
