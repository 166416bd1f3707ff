"""Progress, JSON output, measured child processes, percentiles and targets."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO = BENCH_DIR.parent
#: Stores, copies and logs go here, never into the repository.
DEFAULT_WORKDIR = Path(os.environ.get("SPANWATCH_BENCH_DIR", "/tmp/spanwatch-bench"))

_STARTED = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr, with the time since the benchmark started."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def emit(document: Mapping[str, Any]) -> None:
    """The benchmark's result: one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


def code_version() -> dict[str, Any]:
    """The commit measured, and whether `src/` had uncommitted changes."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return ""
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or None
    return {"commit": commit, "src_modified": bool(git("status", "--porcelain", "--", "src"))}


def machine() -> dict[str, Any]:
    """What the figures were measured on (the load average says how noisy it was)."""
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "load_avg_1_5_15": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "code": code_version(),
    }


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def weighted_percentiles(
    values: Iterable[tuple[float, int]], fractions: Sequence[float]
) -> list[float]:
    """Nearest-rank percentiles of values that each stand for `weight` observations."""
    pairs = sorted(values)
    total = sum(weight for _, weight in pairs)
    if total == 0:
        return [0.0 for _ in fractions]
    out = []
    for fraction in fractions:
        rank = max(1, math.ceil(fraction * total))
        seen = 0
        for value, weight in pairs:
            seen += weight
            if seen >= rank:
                out.append(value)
                break
    return out


def target(value: float | None, op: str, limit: float, unit: str = "") -> dict[str, Any]:
    """A target and whether `value` meets it (None: not measured)."""
    met: bool | None
    if value is None:
        met = None
    elif op == "<":
        met = value < limit
    elif op == "<=":
        met = value <= limit
    elif op == ">=":
        met = value >= limit
    else:
        raise ValueError(op)
    text = f"{op} {limit:g}" + (f" {unit}" if unit else "")
    return {"value": rounded(value), "target": text, "met": met}


def vm_hwm_mb(pid: int) -> float | None:
    """Peak RSS of a live process's address space (VmHWM), None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants now, summed (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total / 2**20


@dataclass(slots=True)
class Measured:
    """A finished child process: wall time, its own CPU time (wait4) and peak RSS.

    `max_rss_mb` is the child's VmHWM, read every 20 ms while it runs (not
    wait4's ru_maxrss: Linux carries the parent's high-water mark over fork and
    exec, so a child of a big parent would report the parent's size).
    """

    argv: list[str]
    returncode: int
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    max_tree_rss_mb: float
    """The highest sum of VmRSS over the child and its own children (worker
    processes), sampled every 20 ms."""
    stdout: str
    stderr: str
    timed_out: bool

    def json(self) -> Any:
        """The child's stdout as one JSON document."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise RuntimeError(
                f"{' '.join(self.argv[:4])}... gave no JSON (exit {self.returncode}):\n"
                f"{self.stderr[-2000:]}"
            ) from exc

    def check(self) -> Measured:
        if self.timed_out or self.returncode not in (0, 1):
            raise RuntimeError(
                f"{' '.join(self.argv)} failed (exit {self.returncode}, "
                f"timed out {self.timed_out}):\n{self.stderr[-3000:]}"
            )
        return self


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> Measured:
    """Run `argv` to completion; wall time, CPU and peak RSS of that child alone.

    `os.wait4` gives the resource usage of exactly this child (not of every
    child so far, as RUSAGE_CHILDREN would). After `timeout_s` the child is
    killed and `timed_out` is set.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env)
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)

        peak = [0.0]
        tree_peak = [0.0]
        done = threading.Event()

        def watch_rss() -> None:
            while not done.is_set():
                value = vm_hwm_mb(proc.pid)
                if value is not None:
                    peak[0] = max(peak[0], value)
                tree_peak[0] = max(tree_peak[0], tree_rss_mb(proc.pid))
                done.wait(0.02)

        watcher = threading.Thread(target=watch_rss, daemon=True)
        watcher.start()
        timer = threading.Timer(timeout_s, kill) if timeout_s is not None else None
        if timer is not None:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            done.set()
            if timer is not None:
                timer.cancel()
        watcher.join()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            argv=list(argv),
            returncode=proc.returncode,
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            max_rss_mb=peak[0],
            max_tree_rss_mb=tree_peak[0],
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            timed_out=expired.is_set(),
        )


def worker_env() -> dict[str, str]:
    """The environment for `python -m benchlib.workers` children."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p)
    return env


def worker_argv(name: str, *args: object) -> list[str]:
    return [sys.executable, "-m", "benchlib.workers", name, *(str(a) for a in args)]


def run_worker(name: str, *args: object, timeout_s: float | None = None) -> Measured:
    return run_measured(worker_argv(name, *args), env=worker_env(), timeout_s=timeout_s)


def spanwatch_argv() -> list[str]:
    """The `spanwatch` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("spanwatch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "spanwatch"]
