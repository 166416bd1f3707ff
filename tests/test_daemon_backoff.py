"""The daemon's backoff during a long outage of the store, with real processes.

While the store is unusable the daemon retries with a growing pause (0.5 s
doubling up to 30 s) so it never spins. But once the store's file is put back,
waiting out the rest of a long pause would leave the spans stale for no reason:
a change to the store's files ends the pause (never before its first 0.5 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_harness import Harness, harness, wait_verified
from stores import backup

pytestmark = pytest.mark.slow

#: The pause the daemon announces before the store is put back; retrying only
#: when it is over would take this long.
LONG_PAUSE_S = 8.0


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def test_a_store_put_back_ends_a_long_backoff_at_once(h: Harness) -> None:
    h.writer(sessions=3, rate=300, duration=1, seed=61).finish()
    daemon = h.daemon("--log-level", "debug")
    daemon.wait_for_log("ready")
    wait_verified(h.db)

    good = backup(h.db, h.workdir / "good.db")
    notes = h.db.with_name("notes.txt")
    notes.write_text("these are not the events you are looking for\n" * 2000)
    notes.replace(h.db)
    daemon.wait_for_log("store error; reopening after a pause", retry_in_s=LONG_PAUSE_S, timeout=60)
    opened = len(daemon.events("store opened"))
    put_back = time.monotonic()
    good.replace(h.db)
    daemon.wait_for_log("store opened", count=opened + 1, timeout=60)
    waited = time.monotonic() - put_back
    # Generous against a loaded machine, yet well short of the announced pause.
    assert waited < LONG_PAUSE_S * 0.6, f"reopened {waited:.1f} s after the store came back"
    wait_verified(h.db)
    h.assert_spans_equal_fresh_rebuild()
    assert daemon.alive
