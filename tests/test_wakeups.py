"""Store wake-ups with real files: which changes wake the daemon, and clean stops.

Negative cases ("touching -shm does not wake") are checked without waiting for
nothing to happen: after the ignored change, a store file is written, and the
wake-up that follows must name only that file. Wake-ups merge while nobody
reads them, so an -shm event that got through would show up in it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from spanwatch.daemon import wakeups as wakeups_module
from spanwatch.daemon.wakeups import StoreWakeups, WakeReason, Wakeup

TIMEOUT_S = 10


async def next_wakeup(wakeups: StoreWakeups) -> Wakeup:
    return await asyncio.wait_for(anext(wakeups), TIMEOUT_S)


async def wait_for(wakeups: StoreWakeups, reason: WakeReason) -> Wakeup:
    """The next wake-up that has `reason` (others, e.g. stray ones, are skipped)."""
    while True:
        wakeup = await next_wakeup(wakeups)
        if reason in wakeup.reasons:
            return wakeup


def touch(path: Path, data: bytes = b"x") -> None:
    with path.open("ab") as file:
        file.write(data)


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[StoreWakeups, Path]]:
    """File events only (no fallback timer), already watching."""
    db = tmp_path / "events.db"
    async with StoreWakeups(db, poll_fallback=False, poll_interval_ms=50) as wakeups:
        await wait_for(wakeups, WakeReason.STARTED)
        yield wakeups, db


async def test_writing_the_db_file_wakes(watched: tuple[StoreWakeups, Path]) -> None:
    wakeups, db = watched
    touch(db)
    wakeup = await wait_for(wakeups, WakeReason.FILES)
    assert wakeup.paths == {db}


async def test_writing_the_wal_wakes(watched: tuple[StoreWakeups, Path]) -> None:
    wakeups, db = watched
    wal = db.with_name(db.name + "-wal")
    touch(wal)
    wakeup = await wait_for(wakeups, WakeReason.FILES)
    assert wakeup.paths == {wal}


async def test_shm_and_other_files_do_not_wake(watched: tuple[StoreWakeups, Path]) -> None:
    wakeups, db = watched
    touch(db.with_name(db.name + "-shm"))
    touch(db.with_name(db.name + "-journal"))
    touch(db.with_name("other.db"))
    touch(db.with_name("events.db.bak"))
    (db.parent / "subdir").mkdir()
    touch(db.parent / "subdir" / db.name)
    await asyncio.sleep(0.3)  # let those events reach the watcher first
    touch(db)
    wakeup = await wait_for(wakeups, WakeReason.FILES)
    assert wakeup.paths == {db}


async def test_a_sqlite_commit_from_another_connection_wakes(
    watched: tuple[StoreWakeups, Path],
) -> None:
    wakeups, db = watched
    writer = sqlite3.connect(db)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, session_id TEXT)")
        writer.commit()
        await wait_for(wakeups, WakeReason.FILES)
        writer.execute("INSERT INTO events (session_id) VALUES ('s1')")
        writer.commit()
        wakeup = await wait_for(wakeups, WakeReason.FILES)
        assert db.with_name(db.name + "-wal") in wakeup.paths
    finally:
        writer.close()


async def test_replacing_the_db_by_rename_wakes(watched: tuple[StoreWakeups, Path]) -> None:
    wakeups, db = watched
    replacement = db.with_name("incoming.tmp")
    replacement.write_bytes(b"new store")
    os.replace(replacement, db)
    wakeup = await wait_for(wakeups, WakeReason.FILES)
    assert db in wakeup.paths
    assert replacement not in wakeup.paths


async def test_wakeups_merge_while_nobody_reads(watched: tuple[StoreWakeups, Path]) -> None:
    wakeups, db = watched
    wal = db.with_name(db.name + "-wal")
    touch(db)
    await asyncio.sleep(0.3)
    touch(wal)
    await asyncio.sleep(0.3)
    wakeup = await wait_for(wakeups, WakeReason.FILES)
    if wakeup.paths != {db, wal}:  # a slow machine delivered them apart
        assert wakeup.paths == {db}
        assert (await wait_for(wakeups, WakeReason.FILES)).paths == {wal}


async def test_force_polling_sees_store_files_only(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    touch(db)
    async with StoreWakeups(
        db, poll_fallback=False, force_polling=True, poll_interval_ms=50
    ) as wakeups:
        await wait_for(wakeups, WakeReason.STARTED)
        touch(db.with_name(db.name + "-shm"))
        touch(tmp_path / "unrelated")
        await asyncio.sleep(0.3)
        wal = db.with_name(db.name + "-wal")
        touch(wal)
        wakeup = await wait_for(wakeups, WakeReason.FILES)
        assert wakeup.paths == {wal}


async def test_fallback_poll_wakes_without_file_events(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    async with StoreWakeups(db, poll_fallback=True, poll_interval_ms=20) as wakeups:
        first = await wait_for(wakeups, WakeReason.POLL)
        second = await wait_for(wakeups, WakeReason.POLL)
    assert first.paths == second.paths == frozenset()


async def test_waits_for_a_directory_that_does_not_exist_yet(tmp_path: Path) -> None:
    directory = tmp_path / "later" / "store"
    db = directory / "events.db"
    async with StoreWakeups(db, poll_fallback=False, poll_interval_ms=20) as wakeups:
        pending = asyncio.ensure_future(wait_for(wakeups, WakeReason.STARTED))
        await asyncio.sleep(0.2)
        assert not pending.done()
        directory.mkdir(parents=True)
        await pending
        touch(db)
        assert (await wait_for(wakeups, WakeReason.FILES)).paths == {db}


async def test_a_deleted_and_recreated_directory_is_watched_again(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    directory.mkdir()
    db = directory / "events.db"
    touch(db)
    async with StoreWakeups(db, poll_fallback=False, poll_interval_ms=20) as wakeups:
        await wait_for(wakeups, WakeReason.STARTED)
        shutil.rmtree(directory)
        deleted = await wait_for(wakeups, WakeReason.FILES)
        assert db in deleted.paths
        directory.mkdir()
        await wait_for(wakeups, WakeReason.STARTED)
        touch(db)
        assert (await wait_for(wakeups, WakeReason.FILES)).paths == {db}


async def test_symlinked_db_is_watched_where_sqlite_writes(tmp_path: Path) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    link_dir = tmp_path / "links"
    link_dir.mkdir()
    (link_dir / "events.db").symlink_to(real_dir / "events.db")
    async with StoreWakeups(link_dir / "events.db", poll_fallback=False) as wakeups:
        assert wakeups.db_path == real_dir / "events.db"
        await wait_for(wakeups, WakeReason.STARTED)
        touch(real_dir / "events.db-wal")
        assert (await wait_for(wakeups, WakeReason.FILES)).paths == {real_dir / "events.db-wal"}


async def test_stop_event_ends_iteration(tmp_path: Path) -> None:
    stop = asyncio.Event()
    seen: list[Wakeup] = []

    async def consume() -> None:
        async with StoreWakeups(tmp_path / "events.db", stop_event=stop) as wakeups:
            async for wakeup in wakeups:
                seen.append(wakeup)
                if WakeReason.STARTED in wakeup.reasons:
                    stop.set()

    await asyncio.wait_for(consume(), TIMEOUT_S)
    assert seen and WakeReason.STARTED in seen[-1].reasons


async def test_stop_while_waiting_for_the_directory(tmp_path: Path) -> None:
    stop = asyncio.Event()

    async def consume() -> list[Wakeup]:
        async with StoreWakeups(tmp_path / "missing" / "events.db", stop_event=stop) as wakeups:
            return [wakeup async for wakeup in wakeups]

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.1)
    stop.set()
    assert await asyncio.wait_for(task, TIMEOUT_S) == []


async def test_leaving_the_block_stops_the_watch(tmp_path: Path) -> None:
    wakeups = StoreWakeups(tmp_path / "events.db", poll_interval_ms=20)
    async with wakeups:
        await wait_for(wakeups, WakeReason.STARTED)
    await asyncio.sleep(0)
    assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("spanwatch-")]
    with pytest.raises(StopAsyncIteration):
        await anext(wakeups)
    with pytest.raises(RuntimeError, match="entered once"):
        await wakeups.__aenter__()


async def test_iterating_outside_the_block_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await anext(StoreWakeups(tmp_path / "events.db"))


async def test_falls_back_to_polling_when_file_events_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watchfiles import awatch as real_awatch

    modes: list[bool] = []

    def flaky_awatch(*args: Any, **kwargs: Any) -> Any:
        modes.append(kwargs["force_polling"])
        if not kwargs["force_polling"]:
            raise OSError(28, "OS file watch limit reached")
        return real_awatch(*args, **kwargs)

    monkeypatch.setattr("spanwatch.daemon.wakeups.awatch", flaky_awatch)
    db = tmp_path / "events.db"
    async with StoreWakeups(db, poll_fallback=False, poll_interval_ms=50) as wakeups:
        await wait_for(wakeups, WakeReason.STARTED)
        touch(db)
        wakeup = await wait_for(wakeups, WakeReason.FILES)
    assert wakeup.paths == {db}
    assert modes[0] is False
    assert modes[-1] is True


def test_poll_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="poll_interval_ms"):
        StoreWakeups(tmp_path / "events.db", poll_interval_ms=0)


async def test_a_quiet_store_is_watched_at_a_slower_pace_and_changes_still_wake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `_QUIET_AFTER_S` without changes the watch steps less often (idle
    CPU), and stays so while nothing changes; a change still wakes, and
    brings the short step back."""
    monkeypatch.setattr(wakeups_module, "_QUIET_AFTER_S", 0.3)
    monkeypatch.setattr(wakeups_module, "_DIRECTORY_CHECK_MS", 100)
    db = tmp_path / "events.db"

    def paces(logs: Sequence[Mapping[str, Any]]) -> list[int]:
        return [log["step_ms"] for log in logs if log["event"] == "watching store files"]

    short, slow = wakeups_module._STEP_MS, wakeups_module._QUIET_STEP_MS
    with structlog.testing.capture_logs() as logs:
        async with StoreWakeups(db, poll_fallback=False, poll_interval_ms=50) as wakeups:
            await wait_for(wakeups, WakeReason.STARTED)
            await wait_for(wakeups, WakeReason.STARTED)  # restarted: quiet
            await asyncio.sleep(1.0)  # ten directory checks, nothing changed
            assert paces(logs) == [short, slow]
            touch(db)
            assert (await wait_for(wakeups, WakeReason.FILES)).paths == {db}
            await wait_for(wakeups, WakeReason.STARTED)  # restarted: changes again
            touch(db)
            assert (await wait_for(wakeups, WakeReason.FILES)).paths == {db}
            # (quiet again, perhaps, before the second change: 0.3 s is short)
            assert paces(logs)[:3] == [short, slow, short] and paces(logs)[-1] == short
