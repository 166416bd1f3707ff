"""Live measurement pieces: writer processes, the mark sampler, commit-to-span analysis.

The writer (`python -m spanwatch.simulate.writer --commit-log FILE`) logs every
commit: wall-clock time after COMMIT returned, session, seqs, last rowid. The
sampler polls `spanwatch_sessions` (the per-session watermark, committed in
the same transaction as the spans) every few milliseconds, read-only, and
records when each session's `max_id` moved. A commit is reflected in the spans
at the first observation where its session's `max_id` reached the commit's
last rowid; commit-to-span latency is the difference of the two wall-clock
times (resolution: the sampling interval plus one query).
"""

from __future__ import annotations

import bisect
import itertools
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from benchlib.common import percentile, rounded, weighted_percentiles


@dataclass(frozen=True, slots=True)
class WriterConfig:
    rate: float
    sessions: int
    duration_s: float
    seed: int
    payload_scale: float
    extend_existing: int = 0


class Writer:
    """One `spanwatch.simulate.writer` process with its commit log."""

    def __init__(self, db: Path, config: WriterConfig, log_dir: Path, name: str) -> None:
        self.config = config
        self.commit_log = log_dir / f"{name}.commits.jsonl"
        self.commit_log.unlink(missing_ok=True)
        self._out_path = log_dir / f"{name}.out"
        self._err_path = log_dir / f"{name}.err"
        self._out: IO[bytes] = self._out_path.open("wb")
        self._err: IO[bytes] = self._err_path.open("wb")
        argv = [
            sys.executable, "-m", "spanwatch.simulate.writer",
            "--db", str(db),
            "--sessions", str(config.sessions),
            "--rate", str(config.rate),
            "--duration", str(config.duration_s),
            "--seed", str(config.seed),
            "--payload-scale", str(config.payload_scale),
            "--commit-log", str(self.commit_log),
        ]  # fmt: skip
        if config.extend_existing:
            argv += ["--extend-existing", str(config.extend_existing)]
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err)

    def wait(self, timeout_s: float) -> dict[str, Any]:
        """The writer's closing statistics (its JSON line)."""
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(30)
        self._out.close()
        self._err.close()
        text = self._out_path.read_text().strip()
        if self.proc.returncode != 0 or not text:
            raise RuntimeError(
                f"writer failed (exit {self.proc.returncode}): {self._err_path.read_text()[-2000:]}"
            )
        stats: dict[str, Any] = json.loads(text.splitlines()[-1])
        return stats


@dataclass(slots=True)
class Commit:
    t_ms: float
    session_id: str
    events: int
    last_id: int
    commit_ms: float
    reflected_ms: float | None = None


def read_commits(paths: Sequence[Path]) -> list[Commit]:
    commits = []
    for path in paths:
        if not path.exists():
            continue
        with path.open() as fh:
            for line in fh:
                record = json.loads(line)
                commits.append(
                    Commit(
                        float(record["t_ms"]),
                        record["session_id"],
                        len(record["seqs"]),
                        int(record["last_id"]),
                        float(record["commit_ms"]),
                    )
                )
    commits.sort(key=lambda c: c.t_ms)
    return commits


class MarkSampler:
    """Polls `spanwatch_sessions` read-only and records when each session's max_id moved."""

    #: Only rows rebuilt this recently are fetched (the daemon stamps rebuilt_at_ms
    #: with its wall clock inside the write transaction, milliseconds before COMMIT).
    RECENT_MS = 5000
    #: Every this many polls, the whole table is read (see `_run`).
    FULL_EVERY = 50

    def __init__(self, db: Path, interval_s: float) -> None:
        self.interval_s = interval_s
        self.conn = sqlite3.connect(
            f"{db.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
        self.conn.execute("PRAGMA busy_timeout = 1000")
        self.last: dict[str, int] = {}
        self.observations: dict[str, tuple[list[float], list[int]]] = {}
        """session -> (wall ms of each observation, max_id seen then), both ascending"""
        self.polls = 0
        self.poll_s: list[float] = []
        if self._has_marks():
            for session_id, max_id in self.conn.execute(
                "SELECT session_id, max_id FROM spanwatch_sessions"
            ):
                self.last[session_id] = int(max_id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="mark-sampler")

    def _has_marks(self) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'spanwatch_sessions'"
        ).fetchone()
        return row is not None

    def start(self) -> MarkSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        sql = "SELECT session_id, max_id FROM spanwatch_sessions WHERE rebuilt_at_ms >= ?"
        while not self._stop.wait(self.interval_s):
            started = time.perf_counter()
            # Now and then the whole table, in case a write waited for the lock for
            # longer than RECENT_MS after stamping rebuilt_at_ms.
            since = 0 if self.polls % self.FULL_EVERY == 0 else time.time() * 1000 - self.RECENT_MS
            try:
                fetched = self.conn.execute(sql, (int(since),)).fetchall()
            except sqlite3.OperationalError:
                continue  # the table does not exist yet, or a busy moment
            seen_ms = time.time() * 1000
            self.polls += 1
            self.poll_s.append(time.perf_counter() - started)
            for session_id, max_id in fetched:
                if max_id > self.last.get(session_id, -1):
                    self.last[session_id] = max_id
                    times, ids = self.observations.setdefault(session_id, ([], []))
                    times.append(seen_ms)
                    ids.append(max_id)

    def covers(self, targets: dict[str, int]) -> bool:
        """Whether every session has been seen at or past its target max_id."""
        return all(self.last.get(s, -1) >= last_id for s, last_id in targets.items())

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self.conn.close()
        polls = sorted(self.poll_s)
        return {
            "interval_ms": self.interval_s * 1000,
            "polls": self.polls,
            "query_ms_p50": rounded(percentile(polls, 0.5) * 1000),
            "query_ms_p99": rounded(percentile(polls, 0.99) * 1000),
        }

    def reflect(self, commits: list[Commit]) -> None:
        """Set each commit's `reflected_ms`: the first observation covering its rows."""
        for commit in commits:
            found = self.observations.get(commit.session_id)
            if found is None:
                continue
            times, ids = found
            i = bisect.bisect_left(ids, commit.last_id)
            if i < len(ids):
                commit.reflected_ms = times[i]


def last_ids(commits: list[Commit]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in commits:
        if c.last_id > out.get(c.session_id, -1):
            out[c.session_id] = c.last_id
    return out


#: Commit latencies whose share `commit_latency` counts: 1 ms is SQLite's first
#: busy sleep (a commit that met another's write lock takes at least that), 8 ms
#: its first three (1 + 2 + 5), 20 ms about what a checkpoint of 1,000 pages costs
#: the commit that runs it. Which of them holds 1 % of the commits decides the p99.
SLOW_COMMIT_MS = (1, 8, 20)


def commit_latency(commits: list[Commit]) -> dict[str, Any]:
    """The writers' own commit latency (BEGIN IMMEDIATE to end of COMMIT), per commit."""
    values = sorted(c.commit_ms for c in commits)
    return {
        "commits": len(values),
        "p50_ms": rounded(percentile(values, 0.5)),
        "p99_ms": rounded(percentile(values, 0.99)),
        "max_ms": rounded(values[-1] if values else None),
        "total_s": round(sum(values) / 1000, 2),
        "share_slower_than_ms": {
            str(limit): round(sum(v > limit for v in values) / max(len(values), 1), 4)
            for limit in SLOW_COMMIT_MS
        },
    }


def span_latency(commits: list[Commit], end_ms: float, window_s: float = 10.0) -> dict[str, Any]:
    """Commit-to-span latency per event (each event of a commit counts once).

    `by_window` gives [start s, p50 ms, p99 ms] per `window_s` of commits, to tell
    a warm-up (first touches of long sessions) from the steady state.
    """
    pairs = [(c.reflected_ms - c.t_ms, c.events) for c in commits if c.reflected_ms is not None]
    missing = [c for c in commits if c.reflected_ms is None]
    p50, p90, p99 = weighted_percentiles(pairs, (0.5, 0.9, 0.99))
    by_commit = sorted(v for v, _ in pairs)
    windows = []
    if commits:
        first = commits[0].t_ms
        buckets: dict[int, list[tuple[float, int]]] = {}
        for c in commits:
            if c.reflected_ms is not None:
                index = int((c.t_ms - first) // (window_s * 1000))
                buckets.setdefault(index, []).append((c.reflected_ms - c.t_ms, c.events))
        for index in sorted(buckets):
            w50, w99 = weighted_percentiles(buckets[index], (0.5, 0.99))
            windows.append([index * window_s, round(w50), round(w99)])
    return {
        "events": sum(c.events for c in commits),
        "commits": len(commits),
        "p50_ms": round(p50, 1),
        "p90_ms": round(p90, 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(by_commit[-1], 1) if by_commit else None,
        "per_commit_p50_ms": round(percentile(by_commit, 0.5), 1),
        "per_commit_p99_ms": round(percentile(by_commit, 0.99), 1),
        "unreflected_commits": len(missing),
        "unreflected_events": sum(c.events for c in missing),
        "unreflected_oldest_age_ms": (
            round(end_ms - min(c.t_ms for c in missing), 1) if missing else None
        ),
        "by_window_start_s_p50_p99_ms": windows,
    }


def debounce_floor(
    commits: list[Commit], debounce_ms: float, max_delay_ms: float
) -> dict[str, Any]:
    """The commit-to-span latency of an ideal daemon under the debounce rule, per event.

    The ideal daemon sees every commit the moment it is made and rebuilds and
    commits in no time: a session is rebuilt once no commit of it came for
    `debounce_ms`, or `max_delay_ms` after its first unreflected commit, and
    that rebuild reflects every commit made before it. This is what the
    writer's pacing and the rule alone imply; what the measured latency
    exceeds it by is the daemon's own cost (noticing, queueing, rebuilding).
    (A real daemon can come out a little below it: a rebuild that starts late
    also reflects the commits made meanwhile.)
    `gap_under_debounce` is the share of commits followed by another commit
    of their session within `debounce_ms`: those cannot be rebuilt before the
    next one.
    """
    by_session: dict[str, list[Commit]] = {}
    for c in commits:
        by_session.setdefault(c.session_id, []).append(c)
    pairs: list[tuple[float, int]] = []
    close = gaps = 0
    for own in by_session.values():
        own.sort(key=lambda c: c.t_ms)
        for before, after in itertools.pairwise(own):
            gaps += 1
            close += after.t_ms - before.t_ms < debounce_ms
        i = 0
        while i < len(own):
            first = last = own[i].t_ms
            j = i
            while j + 1 < len(own) and own[j + 1].t_ms < min(
                last + debounce_ms, first + max_delay_ms
            ):
                j += 1
                last = own[j].t_ms
            rebuilt = min(last + debounce_ms, first + max_delay_ms)
            pairs += [(rebuilt - c.t_ms, c.events) for c in own[i : j + 1]]
            i = j + 1
    p50, p90, p99 = weighted_percentiles(pairs, (0.5, 0.9, 0.99))
    return {
        "p50_ms": round(p50, 1),
        "p90_ms": round(p90, 1),
        "p99_ms": round(p99, 1),
        "gap_under_debounce": round(close / gaps, 3) if gaps else None,
    }


@dataclass(slots=True)
class Backlog:
    """Events committed but not yet reflected in spans, over time."""

    times_ms: list[float] = field(default_factory=list)
    events: list[int] = field(default_factory=list)


def backlog_series(commits: list[Commit], step_ms: float = 100.0) -> Backlog:
    """Backlog sampled every `step_ms` from the first commit to the last one."""
    if not commits:
        return Backlog()
    deltas: list[tuple[float, int]] = []
    for c in commits:
        deltas.append((c.t_ms, c.events))
        if c.reflected_ms is not None:
            deltas.append((c.reflected_ms, -c.events))
    deltas.sort()
    start, end = commits[0].t_ms, commits[-1].t_ms
    out = Backlog()
    level = 0
    i = 0
    t = start
    while t <= end:
        while i < len(deltas) and deltas[i][0] <= t:
            level += deltas[i][1]
            i += 1
        out.times_ms.append(t)
        out.events.append(level)
        t += step_ms
    return out


def _mean(values: Sequence[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def sustained(commits: list[Commit], offered_rate: float) -> dict[str, Any]:
    """Whether the daemon kept up with the writers at `offered_rate`.

    The window from the first to the last commit is cut in quarters (the first
    is ramp-up). The backlog, in seconds of input (events / achieved rate), is
    compared between the second and the fourth quarter: bounded if it grew by
    at most max(0.5 s, 25%) and nothing was left unreflected after the drain.
    The step is sustained if the backlog stayed bounded and the writers wrote
    at least 90% of the offered rate (`writer_limited` otherwise: the rate was
    not reached, so it cannot be claimed).
    """
    if len(commits) < 2:
        return {"bounded": False, "reason": "no commits"}
    series = backlog_series(commits)
    start, end = commits[0].t_ms, commits[-1].t_ms
    span_s = (end - start) / 1000
    lo, hi = start + 0.1 * (end - start), end - 0.1 * (end - start)
    inner = [c for c in commits if lo <= c.t_ms <= hi]
    achieved = sum(c.events for c in inner) / max(1e-9, 0.8 * span_s)
    n = len(series.events)
    q2 = series.events[n // 4 : n // 2]
    q4 = series.events[3 * n // 4 :]
    lag_q2 = _mean(q2) / max(achieved, 1e-9)
    lag_q4 = _mean(q4) / max(achieved, 1e-9)
    unreflected = sum(1 for c in commits if c.reflected_ms is None)
    growth = lag_q4 - lag_q2
    bounded = growth <= max(0.5, 0.25 * lag_q2) and unreflected == 0
    writer_limited = achieved < 0.9 * offered_rate
    return {
        "offered_events_per_s": offered_rate,
        "achieved_events_per_s": round(achieved),
        "writer_limited": writer_limited,
        "window_s": round(span_s, 2),
        "backlog_events_mean_q2": round(_mean(q2)),
        "backlog_events_mean_q4": round(_mean(q4)),
        "backlog_events_max": max(series.events) if series.events else 0,
        "lag_s_q2": round(lag_q2, 3),
        "lag_s_q4": round(lag_q4, 3),
        "lag_growth_s": round(growth, 3),
        "unreflected_commits": unreflected,
        "bounded": bounded,
        "sustained": bounded and not writer_limited,
    }
