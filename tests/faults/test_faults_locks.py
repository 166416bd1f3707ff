"""Lock contention: a writer on the lock for 10 s, writers at full speed, a long reader.

spanwatch waits and retries; the writers (5 s busy timeout) see no error; and
the daemon never keeps a read transaction open while it idles, so a TRUNCATE
checkpoint from another connection always completes.
"""

from __future__ import annotations

from pathlib import Path

import fault_scenarios as scenarios
import pytest

pytestmark = pytest.mark.slow


def test_a_writer_holding_the_lock_10_s_is_waited_out(tmp_path: Path) -> None:
    trial = scenarios.lock_held_10s(tmp_path)
    assert trial.problems == [], trial.details
    assert trial.recovered


def test_writers_at_full_speed_see_no_error_and_the_wal_stays_bounded(tmp_path: Path) -> None:
    trial = scenarios.fast_writers(tmp_path)
    assert trial.problems == [], trial.details
    assert trial.details["writer_errors"] == 0
    assert trial.recovered


def test_a_long_reader_does_not_stop_the_daemon(tmp_path: Path) -> None:
    trial = scenarios.long_reader(tmp_path)
    assert trial.problems == [], trial.details
    assert trial.recovered
