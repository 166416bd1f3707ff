"""The store file: deleted, replaced, moved, read-only, full, garbage, not SQLite.

Each fault must give a clear log line or two and the right behaviour: wait
(alive, near idle, no line per retry) and reopen once the file is back, or exit
2 at start with a message that says what to do. Never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fault_scenarios as scenarios
import pytest
from faultkit import Trial

pytestmark = pytest.mark.slow

WAITS: list[Callable[[Path], Trial]] = [
    scenarios.store_deleted_and_recreated,
    scenarios.store_replaced_by_rename,
    scenarios.store_moved_away,
    scenarios.store_truncated_to_garbage,
    scenarios.store_replaced_by_non_sqlite,
    scenarios.made_read_only_while_running,
    scenarios.read_only_at_start,
]


@pytest.mark.parametrize("fault", WAITS, ids=lambda f: f.__name__)
def test_file_fault(tmp_path: Path, fault: Callable[[Path], Trial]) -> None:
    trial = fault(tmp_path)
    assert trial.problems == [], trial.details
    assert trial.recovered and trial.rows_lost == 0


def test_unusable_files_at_start_exit_2_with_a_message(tmp_path: Path) -> None:
    trials = scenarios.unusable_at_start(tmp_path)
    assert [t.problems for t in trials] == [[], []], [t.details for t in trials]
    assert all(t.recovered for t in trials)


@pytest.mark.parametrize("method", ["tmpfs", "page-limit"])
def test_full_disk(tmp_path: Path, method: str) -> None:
    trial = scenarios.full_disk(tmp_path, method)
    if trial is None:
        pytest.skip("mounting a tmpfs is not permitted here; the page-limit case covers it")
    assert trial.problems == [], trial.details
    assert trial.recovered and trial.rows_lost == 0
