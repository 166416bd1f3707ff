"""A daemon whose log reader went away still stops on SIGTERM (and still works)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stores import make_store

pytestmark = pytest.mark.slow


def test_sigterm_stops_the_daemon_after_its_stderr_pipe_closed(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    make_store(db).close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spanwatch", "run", "--db", str(db), "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("SPANWATCH_")},
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while b'"ready"' not in proc.stderr.readline():  # wait until it is up
        assert time.monotonic() < deadline and proc.poll() is None
    proc.stderr.close()  # the reader goes away: every later log write fails
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
