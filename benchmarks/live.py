"""How fast and how light is `spanwatch run`? (issue 3, "How fast and how light")

One run, on a store that already holds 1,000,000 events (the rebuild
benchmark's generator, plus 4 sessions of 25,000 events so that some of the
extended sessions are past 20,000 events), rebuilt once (the rebuilt store is
cached beside the generated one):

1. Without the daemon: a writer process (`spanwatch.simulate.writer`) writes
   2,000 events/s over 200 sessions for 60 s, 10 of them the store's largest
   sessions continued (`--extend-existing`), bursts of a tool use then pauses,
   one BEGIN IMMEDIATE transaction per burst, every commit logged.
2. With the daemon: the same on a fresh copy of the same store, with
   `spanwatch run` (default debounce and max delay, JSON logs to a file,
   READY=1 awaited on an sd_notify socket this benchmark binds) running.
   A sampler thread polls `spanwatch_sessions` every 5 ms, read-only, to find
   when each commit's rows are reflected in the spans: commit-to-span latency.
   The daemon's CPU and RSS come from psutil and /proc (VmHWM);
   `daemon.write_lock` from its log: how often it committed and which share
   of the time it held the store's write lock (what the writer's p99 meets).
3. Idle: the daemon's CPU over 30 s with no writes.
4. Rate steps (same daemon, same store): 2k, 5k, 10k, 20k, 50k events/s,
   with one writer process per 10,000 events/s (payload_scale 0.1, the
   writer's default, so that the writers themselves can go fast), 30 s each.
   The backlog (events committed but not yet in spans, in seconds of input)
   is bounded when it does not grow from the second to the fourth quarter of
   the step and everything is reflected after the writers stop; a step is
   sustained when it is bounded and the writers reached 90% of the offered
   rate (on 2 cores, writers and daemon share the CPU and the write lock:
   `achieved_events_per_s` says what was written). Stepping stops at the first
   step that is not sustained (`--all-steps` goes on).
5. Capacity: the daemon is stopped (SIGSTOP) while writers write at the top
   step's rate for 15 s (what the writers reach without the daemon), then
   resumed (SIGCONT) and timed until every commit is in the spans: the rate at
   which the daemon alone clears a backlog, an upper bound of what it can
   sustain on this machine.

Latency figures are per event (every event of a commit has the commit's
latency); `by_window_start_s_p50_p99_ms` splits them in 10 s windows of commit
time, which separates the warm-up (the first touch of each long session reads
it whole) from the steady state. `span_latency_floor` is the latency an ideal
daemon (noticing each commit at once, rebuilding in no time) would have under
the same debounce rule on the same commits: a session written again within
`debounce_ms` cannot be rebuilt before that, so the writer's pacing alone sets
this floor (see `benchlib.live.debounce_floor`).

Prints one JSON document on stdout; progress on stderr. `--quick`: a small
smoke version (under a minute). Stores live in `--workdir`, never in the repo.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from benchlib.common import (
    DEFAULT_WORKDIR,
    code_version,
    emit,
    machine,
    progress,
    rounded,
    run_worker,
    target,
)
from benchlib.daemon import DaemonProcess
from benchlib.live import (
    MarkSampler,
    Writer,
    WriterConfig,
    commit_latency,
    debounce_floor,
    last_ids,
    read_commits,
    span_latency,
    sustained,
)
from benchlib.stores import StoreInfo, StoreSpec, copy_store, ensure_store, remove_store, sidecar
from spanwatch.settings import Settings

TARGET_WRITER_RATIO = 1.2
TARGET_IDLE_CPU_PERCENT = 0.5
TARGET_RSS_MB = 100.0
TARGET_RATE = 50_000.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run (< 60 s)")
    store = parser.add_argument_group("the store")
    store.add_argument("--events", type=int, help="events already in the store (1,000,000)")
    store.add_argument("--sessions", type=int, help="ordinary sessions (3,000)")
    store.add_argument("--big-session-events", type=int, help="the big session (50,000)")
    store.add_argument("--long-sessions", type=int, help="extra long sessions (4)")
    store.add_argument("--long-session-events", type=int, help="events of each (25,000)")
    store.add_argument("--payload-scale", type=float, default=0.25, help="tool output size (0.25)")
    store.add_argument("--seed", type=int, default=0)
    store.add_argument("--store", type=Path, help="use (or create and keep) this store")
    store.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    store.add_argument("--regenerate", action="store_true", help="make the store again")
    live = parser.add_argument_group("the writer")
    live.add_argument("--rate", type=float, default=2000.0, help="events/s, all sessions (2000)")
    live.add_argument("--writer-sessions", type=int, default=200, help="concurrent sessions (200)")
    live.add_argument("--extend-existing", type=int, default=10, help="of them, continued (10)")
    live.add_argument("--duration", type=float, help="seconds per phase (60)")
    live.add_argument(
        "--writer-payload-scale", type=float, help="tool output size of written events (0.25)"
    )
    live.add_argument("--sample-ms", type=float, default=5.0, help="sampler interval (5)")
    daemon = parser.add_argument_group("the daemon")
    daemon.add_argument("--debounce-ms", type=int, help="passed to spanwatch run (default 250)")
    daemon.add_argument("--max-delay-ms", type=int, help="passed to spanwatch run (default 2000)")
    daemon.add_argument("--idle", type=float, help="seconds of idle CPU measurement (30)")
    steps = parser.add_argument_group("rate steps")
    steps.add_argument("--steps", help="events/s, comma-separated (2000,5000,10000,20000,50000)")
    steps.add_argument("--step-duration", type=float, help="seconds per step (30)")
    steps.add_argument("--per-writer-rate", type=float, default=10_000.0, help="per process")
    steps.add_argument("--step-payload-scale", type=float, default=0.1, help="(0.1)")
    steps.add_argument("--all-steps", action="store_true", help="go on after a failed step")
    steps.add_argument(
        "--capacity-duration", type=float, help="seconds of writing with the daemon stopped (15)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's store copies")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults: dict[str, Any] = {
        "events": (60_000, 1_000_000),
        "sessions": (100, 3_000),
        "big_session_events": (5_000, 50_000),
        "long_sessions": (2, 4),
        "long_session_events": (3_000, 25_000),
        "duration": (6.0, 60.0),
        "idle": (4.0, 30.0),
        "steps": ("2000,5000", "2000,5000,10000,20000,50000"),
        "step_duration": (5.0, 30.0),
        "capacity_duration": (3.0, 15.0),
    }
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.writer_payload_scale is None:
        args.writer_payload_scale = args.payload_scale
    if quick:
        args.writer_sessions = min(args.writer_sessions, 40)
        args.extend_existing = min(args.extend_existing, 3)
        args.rate = min(args.rate, 1000.0)
    return args


def rebuilt_store(info: StoreInfo, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The generated store, rebuilt once (cached beside it), and how it was rebuilt."""
    base = Path(info.path)
    path = workdir / (base.stem + ".rebuilt.db")
    meta = sidecar(path)
    if path.exists() and meta.exists() and meta.stat().st_mtime >= base.stat().st_mtime:
        progress(f"reusing the rebuilt store {path}")
        return path, json.loads(meta.read_text())
    progress(f"rebuilding a copy of the store once: {path}")
    copy_store(base, path)
    result = run_worker("rebuild", path).check().json()
    done = {"rebuild_s": round(float(result["seconds"]), 3), "rebuilt_with_code": code_version()}
    meta.write_text(json.dumps(done))
    progress(f"  rebuilt in {result['seconds']:.1f} s")
    return path, done


class Run:
    """One measured stretch of writing, with or without the daemon."""

    def __init__(self, args: argparse.Namespace, db: Path, logs: Path) -> None:
        self.args = args
        self.db = db
        self.logs = logs

    def write(
        self,
        label: str,
        configs: list[WriterConfig],
        daemon: DaemonProcess | None,
        drain_timeout_s: float,
    ) -> dict[str, Any]:
        sampler = MarkSampler(self.db, self.args.sample_ms / 1000).start()
        cpu0 = daemon.cpu_s() if daemon else 0.0
        if daemon:
            daemon.take_rss_peak()
        started = time.time()
        writers = [
            Writer(self.db, config, self.logs, f"{label}-w{i}") for i, config in enumerate(configs)
        ]
        longest = max(c.duration_s for c in configs)
        stats = [w.wait(longest * 1.5 + 120) for w in writers]
        writers_done = time.time()
        commits = read_commits([w.commit_log for w in writers])
        drain_s: float | None = None
        if daemon is not None:
            targets = last_ids(commits)
            deadline = time.monotonic() + drain_timeout_s
            while time.monotonic() < deadline and not sampler.covers(targets):
                time.sleep(0.01)
            if sampler.covers(targets):
                drain_s = time.time() - writers_done
        ended = time.time()
        sampler_stats = sampler.stop()
        sampler.reflect(commits)
        out: dict[str, Any] = {
            "writers": stats,
            "events": sum(int(s["events"]) for s in stats),
            "writing_s": round(writers_done - started, 2),
            "writer_commit_latency": commit_latency(commits),
        }
        if daemon is not None:
            cpu = daemon.cpu_s() - cpu0
            out["span_latency"] = span_latency(commits, ended * 1000)
            out["span_latency_floor"] = debounce_floor(
                commits, self.args.debounce_ms_value, self.args.max_delay_ms_value
            )
            out["drain_s_after_writers_stopped"] = rounded(drain_s)
            out["daemon"] = {
                "cpu_s": round(cpu, 2),
                "cpu_percent_of_one_core": round(100 * cpu / (ended - started), 1),
                "peak_rss_mb_sampled": round(daemon.take_rss_peak(), 1),
                "peak_rss_mb_since_start": round(daemon.hwm_mb(), 1),
                "peak_rss_mb_by_10s": daemon.rss_by_window(started, ended),
            }
            out["daemon"]["write_lock"] = daemon.write_lock(started, ended)
            out["daemon"]["cache"] = daemon.cache(started, ended)
            out["sampler"] = sampler_stats
            out["_commits"] = commits
        return out


def idle_cpu(daemon: DaemonProcess, seconds: float) -> dict[str, Any]:
    time.sleep(min(3.0, seconds))
    cpu0 = daemon.cpu_s()
    started = time.monotonic()
    time.sleep(seconds)
    cpu = daemon.cpu_s() - cpu0
    wall = time.monotonic() - started
    return {
        "seconds": round(wall, 1),
        "cpu_s": round(cpu, 3),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 3),
        "rss_mb": round(daemon.rss_mb(), 1),
    }


def rate_steps(
    args: argparse.Namespace, run: Run, daemon: DaemonProcess
) -> tuple[list[dict[str, Any]], float | None]:
    results = []
    best: float | None = None
    for index, rate in enumerate(float(r) for r in args.steps.split(",")):
        processes = max(1, math.ceil(rate / args.per_writer_rate))
        per_process_sessions = max(1, args.writer_sessions // processes)
        configs = [
            WriterConfig(
                rate=rate / processes,
                sessions=per_process_sessions,
                duration_s=args.step_duration,
                seed=2000 + 100 * index + w,
                payload_scale=args.step_payload_scale,
                extend_existing=args.extend_existing if w == 0 else 0,
            )
            for w in range(processes)
        ]
        progress(f"step {rate:,.0f} events/s: {processes} writer(s), {args.step_duration:.0f} s")
        phase = run.write(f"step{index}", configs, daemon, drain_timeout_s=30.0)
        commits = phase.pop("_commits")
        verdict = sustained(commits, rate)
        step = {
            "offered_events_per_s": rate,
            "writer_processes": processes,
            **{k: v for k, v in verdict.items() if k != "offered_events_per_s"},
            "span_latency": phase["span_latency"],
            "span_latency_floor": phase["span_latency_floor"],
            "writer_commit_latency": phase["writer_commit_latency"],
            "drain_s_after_writers_stopped": phase["drain_s_after_writers_stopped"],
            "daemon": phase["daemon"],
            "writers_behind_ms_max": max(float(s["behind_ms_max"]) for s in phase["writers"]),
        }
        results.append(step)
        progress(
            f"  achieved {verdict['achieved_events_per_s']:,} events/s, lag "
            f"{verdict.get('lag_s_q2')} -> {verdict.get('lag_s_q4')} s, "
            f"bounded: {verdict['bounded']}, sustained: {verdict['sustained']}"
        )
        if verdict["sustained"]:
            best = rate if best is None else max(best, rate)
        elif not args.all_steps:
            break
    return results, best


def capacity(args: argparse.Namespace, run: Run, daemon: DaemonProcess) -> dict[str, Any]:
    """The daemon's own throughput: a backlog written while it is stopped, then cleared.

    The daemon is paused (SIGSTOP) while writers write at the top step's rate
    for `--capacity-duration` s (which also shows what the writers reach
    without the daemon competing for the CPU and the write lock); then it is
    resumed and timed until every commit is reflected in the spans.
    """
    rate = max(float(r) for r in args.steps.split(","))
    processes = max(1, math.ceil(rate / args.per_writer_rate))
    configs = [
        WriterConfig(
            rate=rate / processes,
            sessions=max(1, args.writer_sessions // processes),
            duration_s=args.capacity_duration,
            seed=3000 + w,
            payload_scale=args.step_payload_scale,
            extend_existing=args.extend_existing if w == 0 else 0,
        )
        for w in range(processes)
    ]
    time.sleep(1.0)  # let the last batch finish: never stop the daemon holding the write lock
    sampler = MarkSampler(run.db, args.sample_ms / 1000).start()
    daemon.pause()
    try:
        progress(f"capacity: {processes} writer(s) at {rate:,.0f} events/s, daemon stopped")
        writers = [
            Writer(run.db, config, run.logs, f"capacity-w{i}") for i, config in enumerate(configs)
        ]
        stats = [w.wait(args.capacity_duration * 1.5 + 120) for w in writers]
    finally:
        cpu0 = daemon.cpu_s()
        resumed = time.time()
        daemon.resume()
    commits = read_commits([w.commit_log for w in writers])
    targets = last_ids(commits)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline and not sampler.covers(targets):
        time.sleep(0.01)
    caught_up = sampler.covers(targets)
    took = time.time() - resumed
    cpu = daemon.cpu_s() - cpu0
    sampler.stop()
    events = sum(c.events for c in commits)
    window = (commits[-1].t_ms - commits[0].t_ms) / 1000 if len(commits) > 1 else 0.0
    progress(f"  {events:,} events cleared in {took:.1f} s")
    return {
        "offered_events_per_s": rate,
        "writer_processes": processes,
        "writers_alone_events_per_s": round(events / window) if window > 0 else None,
        "writers_behind_ms_max": max(float(s["behind_ms_max"]) for s in stats),
        "backlog_events": events,
        "backlog_sessions": len(targets),
        "caught_up": caught_up,
        "catch_up_s": round(took, 2),
        "catch_up_events_per_s": round(events / took) if caught_up and took > 0 else None,
        "daemon_cpu_s": round(cpu, 2),
        "daemon_cpu_percent_of_one_core": round(100 * cpu / took, 1) if took > 0 else None,
        "daemon_peak_rss_mb_since_start": round(daemon.hwm_mb(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    spec = StoreSpec(
        events=args.events,
        sessions=args.sessions,
        big_session_events=args.big_session_events,
        long_sessions=args.long_sessions,
        long_session_events=args.long_session_events,
        payload_scale=args.payload_scale,
        seed=args.seed,
    )
    info = ensure_store(spec, store=args.store, workdir=workdir, regenerate=args.regenerate)
    rebuilt, rebuilt_meta = rebuilt_store(info, workdir)
    defaults = Settings()
    debounce_ms = args.debounce_ms if args.debounce_ms is not None else defaults.debounce_ms
    max_delay_ms = args.max_delay_ms if args.max_delay_ms is not None else defaults.max_delay_ms
    args.debounce_ms_value, args.max_delay_ms_value = debounce_ms, max_delay_ms
    daemon_args: tuple[str, ...] = ()
    if args.debounce_ms is not None:
        daemon_args += ("--debounce-ms", str(args.debounce_ms))
    if args.max_delay_ms is not None:
        daemon_args += ("--max-delay-ms", str(args.max_delay_ms))

    rundir = workdir / "live-run"
    store_dir = rundir / "store"  # alone in its directory: the daemon watches it
    logs = rundir / "logs"
    store_dir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    db = store_dir / "events.db"
    writer = WriterConfig(
        rate=args.rate,
        sessions=args.writer_sessions,
        duration_s=args.duration,
        seed=1000,
        payload_scale=args.writer_payload_scale,
        extend_existing=args.extend_existing,
    )
    doc: dict[str, Any] = {
        "benchmark": "live",
        "quick": args.quick,
        "machine": machine(),
        "store": {**info.as_dict(), "rebuilt_copy": str(rebuilt), **rebuilt_meta},
        "settings": {"debounce_ms": debounce_ms, "max_delay_ms": max_delay_ms},
        "writer": {
            "rate_events_per_s": args.rate,
            "sessions": args.writer_sessions,
            "extend_existing": args.extend_existing,
            "duration_s": args.duration,
            "payload_scale": args.writer_payload_scale,
        },
    }
    run = Run(args, db, logs)
    daemon: DaemonProcess | None = None
    try:
        progress("phase 1: writer without the daemon")
        copy_store(rebuilt, db)
        without = run.write("without", [writer], None, drain_timeout_s=0)
        progress(f"  writer commit p99 {without['writer_commit_latency']['p99_ms']} ms")

        progress("phase 2: writer with spanwatch run")
        copy_store(rebuilt, db)
        daemon = DaemonProcess(
            db,
            log_path=logs / "daemon.jsonl",
            notify_path=rundir / "notify.sock",
            extra_args=daemon_args,
        )
        daemon.watch_rss()
        ready_s = daemon.wait_ready(600)
        if ready_s is None:
            raise RuntimeError(f"spanwatch run never sent READY=1; see {logs / 'daemon.jsonl'}")
        progress(f"  READY=1 after {ready_s:.2f} s")
        start_rss = daemon.hwm_mb()
        with_daemon = run.write("with", [writer], daemon, drain_timeout_s=max_delay_ms / 1000 + 30)
        with_daemon.pop("_commits")
        latency = with_daemon["span_latency"]
        floor = with_daemon["span_latency_floor"]
        progress(f"  an ideal daemon: p50 {floor['p50_ms']} ms p99 {floor['p99_ms']} ms")
        progress(
            f"  latency p50 {latency['p50_ms']} ms p99 {latency['p99_ms']} ms; writer commit "
            f"p99 {with_daemon['writer_commit_latency']['p99_ms']} ms"
        )
        with_daemon["daemon"]["start_to_ready_s"] = round(ready_s, 3)
        with_daemon["daemon"]["peak_rss_mb_at_ready"] = round(start_rss, 1)

        progress(f"phase 3: idle CPU over {args.idle:.0f} s")
        idle = idle_cpu(daemon, args.idle)
        progress(f"  {idle['cpu_percent_of_one_core']} % of one core")

        progress("phase 4: rate steps")
        steps, best = rate_steps(args, run, daemon)
        progress("phase 5: the daemon's catch-up throughput")
        catch_up = capacity(args, run, daemon)
        peak_all = daemon.hwm_mb()
        code = daemon.stop()
        daemon_exit = {"exit_code": code, "peak_rss_mb_whole_run": round(peak_all, 1)}
        daemon = None
    finally:
        if daemon is not None:
            daemon.stop()
        if not args.keep:
            remove_store(db)

    ratio = (
        with_daemon["writer_commit_latency"]["p99_ms"] / without["writer_commit_latency"]["p99_ms"]
    )
    doc["without_daemon"] = without
    doc["with_daemon"] = with_daemon
    doc["writer_commit_p99_ratio_with_over_without"] = round(ratio, 3)
    doc["idle"] = idle
    doc["steps"] = steps
    doc["highest_sustained_events_per_s"] = best
    doc["capacity"] = catch_up
    doc["daemon_exit"] = daemon_exit
    rss = float(with_daemon["daemon"]["peak_rss_mb_since_start"])
    doc["targets"] = {
        "latency_p50_ms": target(latency["p50_ms"], "<", debounce_ms + 50, "ms"),
        "latency_p99_ms": target(latency["p99_ms"], "<", max_delay_ms + 100, "ms"),
        "writer_commit_p99_ratio": target(ratio, "<", TARGET_WRITER_RATIO),
        "idle_cpu_percent_of_one_core": target(
            idle["cpu_percent_of_one_core"], "<", TARGET_IDLE_CPU_PERCENT, "%"
        ),
        "daemon_peak_rss_mb": target(rss, "<", TARGET_RSS_MB, "MB"),
        "highest_sustained_events_per_s": target(best, ">=", TARGET_RATE, "events/s"),
    }
    emit(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
