"""`spanwatch run` as a measured child process, with an sd_notify socket of our own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import psutil  # type: ignore[import-untyped,unused-ignore]

from benchlib.common import percentile, rounded, spanwatch_argv, vm_hwm_mb


class NotifySocket:
    """A datagram socket playing systemd's side of sd_notify: records every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        """(time.monotonic() on arrival, message text)"""
        self._arrived = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._arrived:
                self.messages.append((time.monotonic(), data.decode(errors="replace")))
                self._arrived.notify_all()

    def wait_for(self, assignment: str, timeout_s: float, after: float = 0.0) -> float | None:
        """Arrival time of the first message after `after` holding the line `assignment`."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while True:
                for arrived, text in self.messages:
                    if arrived >= after and assignment in text.splitlines():
                        return arrived
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._arrived.wait(left)

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        self._thread.join(timeout=1)
        self.path.unlink(missing_ok=True)


class DaemonProcess:
    """`spanwatch run --db DB` with JSON logs to a file, READY=1 awaited on our socket."""

    def __init__(
        self,
        db: Path,
        *,
        log_path: Path,
        notify_path: Path,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.notify = NotifySocket(notify_path)
        self.log_path = log_path
        env = dict(os.environ)
        env["NOTIFY_SOCKET"] = str(notify_path)
        self._log: IO[bytes] = log_path.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [*spanwatch_argv(), "run", "--db", str(db), "--log-format", "json", *extra_args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.last_hwm_mb = 0.0
        self._rss_peak = 0.0
        self.rss_samples: list[tuple[float, float]] = []
        """(wall-clock time, RSS in MB) every 100 ms once `watch_rss` runs."""
        self._watching = threading.Event()
        self._watcher: threading.Thread | None = None

    def wait_ready(self, timeout_s: float) -> float | None:
        """Seconds from the start of the process to READY=1, None if it did not come."""
        arrived = self.notify.wait_for("READY=1", timeout_s)
        return None if arrived is None else arrived - self.started

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def hwm_mb(self) -> float:
        """Peak RSS since the process started (VmHWM)."""
        value = vm_hwm_mb(self.proc.pid)
        if value is not None:
            self.last_hwm_mb = value
        return self.last_hwm_mb

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20

    def watch_rss(self) -> None:
        """Sample RSS every 100 ms from now on (see `take_rss_peak`)."""
        if self._watcher is not None:
            return

        def loop() -> None:
            while not self._watching.wait(0.1):
                try:
                    rss = self.rss_mb()
                    self._rss_peak = max(self._rss_peak, rss)
                    self.rss_samples.append((time.time(), rss))
                    self.hwm_mb()
                except psutil.Error:
                    return

        self._watcher = threading.Thread(target=loop, daemon=True)
        self._watcher.start()

    def rss_by_window(self, start_s: float, end_s: float, window_s: float = 10.0) -> list[float]:
        """Peak RSS (MB) sampled in each `window_s` between two wall-clock times."""
        peaks: dict[int, float] = {}
        for stamp, rss in self.rss_samples:
            if start_s <= stamp <= end_s:
                slot = int((stamp - start_s) // window_s)
                peaks[slot] = max(peaks.get(slot, 0.0), rss)
        return [round(peaks[slot], 1) for slot in sorted(peaks)]

    def take_rss_peak(self) -> float:
        """Highest RSS sampled since the last call (the window's peak), then reset it."""
        peak, self._rss_peak = max(self._rss_peak, self.rss_mb()), 0.0
        return peak

    def _batches(self, start_s: float, end_s: float) -> Iterator[dict[str, Any]]:
        """The daemon's `batch` log records between two wall-clock times."""
        with self.log_path.open() as fh:
            for line in fh:
                if '"batch"' not in line:
                    continue
                record = json.loads(line)
                stamp = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
                if record.get("event") == "batch" and start_s <= stamp.timestamp() <= end_s:
                    yield record

    def write_lock(self, start_s: float, end_s: float) -> dict[str, Any]:
        """How the daemon held the store's write lock between two wall-clock times.

        From its `batch` log lines (`commits`, `locked_ms`: BEGIN IMMEDIATE
        acquired to COMMIT returned, an upper bound: see `BatchReport`).
        `share` is the fraction of the time it held the lock: roughly the
        chance that a writer's BEGIN IMMEDIATE finds it taken, and then waits
        at least the 1 ms of SQLite's first busy sleep.
        """
        commits = 0
        total_ms = 0.0
        per_commit: list[float] = []
        for record in self._batches(start_s, end_s):
            n = int(record.get("commits", 0))
            if n:
                commits += n
                total_ms += float(record["locked_ms"])
                per_commit.append(float(record["locked_ms"]) / n)
        window_s = max(end_s - start_s, 1e-9)
        per_commit.sort()
        return {
            "commits": commits,
            "commits_per_s": round(commits / window_s, 1),
            "held_ms_per_commit_p50": rounded(percentile(per_commit, 0.5)),
            "share": round(total_ms / 1000 / window_s, 4),
        }

    def cache(self, start_s: float, end_s: float) -> dict[str, Any]:
        """The daemon's session cache between two times, from its `batch` log lines.

        `cached_spans`: spans it held in memory after a batch (retired ones
        not counted); `reread`: sessions read in full again because a row
        needed a span it had retired.
        """
        cached: list[int] = []
        reread = 0
        for record in self._batches(start_s, end_s):
            cached.append(int(record.get("cached_spans", 0)))
            reread += int(record.get("reread", 0))
        return {
            "cached_spans_max": max(cached, default=0),
            "cached_spans_last": cached[-1] if cached else 0,
            "reread_sessions": reread,
        }

    def pause(self) -> None:
        """SIGSTOP: the daemon stops running (its file events and work queue up)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (drain and exit), SIGKILL if it does not exit in time."""
        self.hwm_mb()
        self._watching.set()
        if self.proc.poll() is None:
            self.resume()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.notify.close()
        return int(self.proc.returncode)
