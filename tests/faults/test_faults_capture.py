"""Writers that upsert on (session_id, seq), against both capture modes."""

from __future__ import annotations

from pathlib import Path

import fault_scenarios as scenarios
import pytest

pytestmark = pytest.mark.slow


def test_rowid_capture_misses_rows_changed_in_place_and_verify_says_so(tmp_path: Path) -> None:
    trial = scenarios.in_place_writer(tmp_path, "rowid")
    assert trial.problems == [], trial.details
    assert trial.details["verify_exit"] == 1 and trial.rows_lost > 0


def test_triggers_capture_catches_them_and_drains_its_table(tmp_path: Path) -> None:
    trial = scenarios.in_place_writer(tmp_path, "triggers")
    assert trial.problems == [], trial.details
    assert trial.recovered and trial.details["verify_exit"] == 0
