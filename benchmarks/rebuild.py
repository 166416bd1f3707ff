"""How fast is `spanwatch rebuild`? (issue 2, "How fast")

One run, on one realistic store (default: 1,000,000 events in 3,000 ordinary
sessions plus one session of 50,000 events with Tasks nested 3 deep; tool
output at payload_scale 0.25, about 1.6 KB per event on average, post-tool
payloads up to about 25 KB, about 1.7 GB for the store):

a. the floor: every row of `events` read into Python with a bare SELECT of the
   columns spanwatch reads, through Python's sqlite3 module (best of the runs
   before, between and after the runs of b: four by default); beside it, not
   in the ratio, the same SELECT through apsw, which the workers of b read
   with (best of two);
b. `rebuild_store` of the whole store into a fresh copy, in a child process of
   its own, with `--jobs` worker processes (default: as `spanwatch rebuild`;
   peak RSS is the highest sum over the child and its workers, CPU includes
   the workers'); best of `--rebuild-repeat` runs (3), each on a fresh copy
   and between two floor runs, so that both figures of the ratio are taken
   alike on a machine whose speed moves from minute to minute (every run's
   time is printed). Also `spanwatch rebuild --json` end to end on another fresh
   copy, a second `rebuild_store` of the rebuilt copy (nothing to write), and
   one without workers (`--jobs 1`) on a third copy;
c. the big session: spanwatch's engine (`build_span_records`) against the test
   oracle (`tests/oracle.py`, quadratic) on the same events. The oracle runs on
   1/8, 1/4 and 1/2 of the events first; if the whole session would not fit in
   `--oracle-budget` seconds, its time is extrapolated from those runs with the
   fitted exponent (the output says so).

Prints one JSON document on stdout; progress goes to stderr. Every figure is
compared with a baseline measured in the same run, because the machine is
shared and noisy. `--quick` is a small smoke version (under a minute).
Stores live in `--workdir` (default /tmp/spanwatch-bench), never in the repo;
the generated store is kept there and reused by later runs (`--store` names
one explicitly, `--regenerate` makes it again).
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import sys
from pathlib import Path
from typing import Any

from benchlib.common import (
    DEFAULT_WORKDIR,
    Measured,
    emit,
    machine,
    progress,
    rounded,
    run_measured,
    run_worker,
    spanwatch_argv,
    target,
)
from benchlib.stores import StoreSpec, copy_store, ensure_store, remove_store
from spanwatch.cli.rebuild import default_jobs

TARGET_RATIO = 3.0
TARGET_SPEEDUP = 20.0
TARGET_RSS_MB = 500.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run (< 60 s)")
    parser.add_argument("--events", type=int, help="events in the store (1,000,000)")
    parser.add_argument("--sessions", type=int, help="ordinary sessions (3,000)")
    parser.add_argument("--big-session-events", type=int, help="events of the big session (50,000)")
    parser.add_argument("--big-task-depth", type=int, default=3, help="Task nesting of it (3)")
    parser.add_argument(
        "--payload-scale", type=float, default=0.25, help="tool output size factor (1.0: real)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", type=Path, help="use (or create and keep) this store")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--regenerate", action="store_true", help="make the store again")
    parser.add_argument("--oracle-budget", type=float, help="seconds for oracle runs (1200)")
    parser.add_argument("--engine-repeat", type=int, default=3, help="engine runs (best taken)")
    parser.add_argument(
        "--rebuild-repeat", type=int, default=3, help="whole-store rebuilds (best taken)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the rebuilt copy")
    parser.add_argument(
        "--jobs",
        type=int,
        default=default_jobs(),
        help="as `spanwatch rebuild --jobs` (its default)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if args.events is None:
        args.events = 60_000 if quick else 1_000_000
    if args.sessions is None:
        args.sessions = 150 if quick else 3_000
    if args.big_session_events is None:
        args.big_session_events = 5_000 if quick else 50_000
    if args.oracle_budget is None:
        args.oracle_budget = 30.0 if quick else 1200.0
    return args


def per_second(count: int, seconds: float) -> float:
    return round(count / seconds) if seconds > 0 else 0.0


def floor_run(db: Path) -> dict[str, Any]:
    result = run_worker("floor", db).check()
    doc: dict[str, Any] = result.json()
    doc["child_wall_s"] = round(result.wall_s, 3)
    return doc


def measured_summary(run: Measured, doc: dict[str, Any]) -> dict[str, Any]:
    seconds = float(doc["seconds"])
    return {
        "seconds": round(seconds, 3),
        "process_wall_s": round(run.wall_s, 3),
        "process_cpu_s": round(run.cpu_s, 3),
        "events_per_s": per_second(int(doc["rows"]), seconds),
        "jobs": doc["jobs"],
        "peak_rss_mb": round(max(float(doc["max_rss_mb"]), run.max_tree_rss_mb), 1),
        "peak_rss_main_mb": float(doc["max_rss_mb"]),
        "sessions": doc["sessions"],
        "events": doc["rows"],
        "spans": doc["spans"],
        "spans_written": doc["spans_written"],
        "skipped_rows": doc["skipped_rows"],
    }


def big_session(db: Path, session_id: str, budget_s: float, repeat: int) -> dict[str, Any]:
    """The engine against the oracle on the big session (extrapolating if need be)."""
    progress(f"engine on the big session {session_id}")
    engine_full = run_worker("engine", db, session_id, 0, repeat).check().json()
    n = int(engine_full["events"])
    points: list[dict[str, Any]] = []
    spent = 0.0
    for size in (n // 8, n // 4, n // 2):
        if size < 100:
            continue
        left = budget_s - spent
        if points and _predict(points, size) > left:
            progress(f"oracle on {size:,} events would exceed the budget; stopping here")
            break
        progress(f"oracle on the first {size:,} events (budget left {left:.0f} s)")
        run = run_worker("oracle", db, session_id, size, 1, timeout_s=max(1.0, left))
        spent += run.wall_s
        if run.timed_out:
            progress("oracle timed out")
            break
        oracle_doc = run.check().json()
        engine_doc = run_worker("engine", db, session_id, size, repeat).check().json()
        points.append(
            {
                "events": size,
                "oracle_s": round(oracle_doc["seconds"], 3),
                "engine_s": round(engine_doc["seconds"], 4),
                "speedup": round(oracle_doc["seconds"] / engine_doc["seconds"], 1),
                "same_rows": oracle_doc["digest"] == engine_doc["digest"],
            }
        )
        progress(f"  oracle {oracle_doc['seconds']:.2f} s, engine {engine_doc['seconds']:.3f} s")
    oracle_s: float | None = None
    extrapolated = False
    same_rows: bool | None = None
    predicted = _predict(points, n) if points else None
    left = budget_s - spent
    if predicted is None or predicted <= left:
        progress(f"oracle on all {n:,} events (predicted {predicted or 0:.0f} s)")
        run = run_worker("oracle", db, session_id, 0, 1, timeout_s=max(1.0, left))
        if not run.timed_out:
            doc = run.check().json()
            oracle_s = float(doc["seconds"])
            same_rows = doc["digest"] == engine_full["digest"]
    if oracle_s is None and predicted is not None:
        oracle_s = predicted
        extrapolated = True
    exponent = _exponent(points)
    engine_s = float(engine_full["seconds"])
    return {
        "session_id": session_id,
        "session_rows": engine_full["session_rows"],
        "events_fed": n,
        "spans": engine_full["spans"],
        "max_depth": engine_full["max_depth"],
        "engine_s": round(engine_s, 4),
        "engine_runs": engine_full["runs"],
        "engine_events_per_s": per_second(n, engine_s),
        "oracle_s": rounded(oracle_s),
        "oracle_extrapolated": extrapolated,
        "oracle_note": (
            f"the oracle did not run on all {n:,} events: its time is extrapolated from the "
            f"prefix runs as t ~ n^{exponent:.2f}"
            if extrapolated and exponent is not None
            else "measured on all events"
        ),
        "oracle_exponent_fitted": rounded(exponent, 2),
        "same_rows_as_oracle": same_rows,
        "speedup": None if oracle_s is None else round(oracle_s / engine_s, 1),
        "prefix_runs": points,
    }


def _exponent(points: list[dict[str, Any]]) -> float | None:
    if len(points) < 2:
        return None
    a, b = points[-2], points[-1]
    if a["oracle_s"] <= 0 or b["oracle_s"] <= 0:
        return None
    return math.log(b["oracle_s"] / a["oracle_s"]) / math.log(b["events"] / a["events"])


def _predict(points: list[dict[str, Any]], size: int) -> float:
    """The oracle's time on `size` events, from the largest prefix run (quadratic if unknown)."""
    exponent = _exponent(points) or 2.0
    last = points[-1]
    return float(last["oracle_s"]) * math.pow(size / int(last["events"]), max(exponent, 1.0))


def span_facts(db: Path, session_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        spans, depth = conn.execute(
            "SELECT count(*), max(depth) FROM tool_spans WHERE session_id = ?", (session_id,)
        ).fetchone()
        (total,) = conn.execute("SELECT count(*) FROM tool_spans").fetchone()
    finally:
        conn.close()
    return {"tool_spans_rows": total, "big_session_spans": spans, "big_session_max_depth": depth}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    spec = StoreSpec(
        events=args.events,
        sessions=args.sessions,
        big_session_events=args.big_session_events,
        big_task_depth=args.big_task_depth,
        payload_scale=args.payload_scale,
        seed=args.seed,
    )
    info = ensure_store(spec, store=args.store, workdir=workdir, regenerate=args.regenerate)
    base = Path(info.path)
    work = workdir / "rebuild-bench-work.db"
    cli_copy = workdir / "rebuild-bench-cli.db"
    serial_copy = workdir / "rebuild-bench-serial.db"
    fresh_copy = workdir / "rebuild-bench-again.db"
    doc: dict[str, Any] = {
        "benchmark": "rebuild",
        "quick": args.quick,
        "machine": machine(),
        "store": info.as_dict(),
    }
    try:
        progress("copying the store for the rebuild")
        copy_store(base, work)
        progress("floor run 1")
        floors = [floor_run(work)]
        rebuilds = []
        for i in range(args.rebuild_repeat):
            # The first run's copy is kept for the runs below; later ones get their own.
            copy = copy_store(base, fresh_copy) if i else work
            progress(f"rebuild_store of the whole store, {args.jobs} jobs, run {i + 1}")
            run = run_worker("rebuild", copy, args.jobs).check()
            done = measured_summary(run, run.json())
            rebuilds.append(done)
            progress(f"  {done['seconds']:.1f} s, peak RSS {done['peak_rss_mb']:.0f} MB")
            if copy != work:
                remove_store(copy)
            progress(f"floor run {len(floors) + 1}")
            floors.append(floor_run(work))
        while len(floors) < 3:
            progress(f"floor run {len(floors) + 1}")
            floors.append(floor_run(work))
        progress("the floor's SELECT through apsw, twice")
        apsw_floors = [run_worker("floor_apsw", work).check().json() for _ in range(2)]
        rebuild = min(rebuilds, key=lambda r: float(r["seconds"]))
        rebuild["runs_s"] = [r["seconds"] for r in rebuilds]
        rebuild["peak_rss_mb"] = max(float(r["peak_rss_mb"]) for r in rebuilds)
        progress("rebuild_store again (nothing to write)")
        run = run_worker("rebuild", work, args.jobs).check()
        again = measured_summary(run, run.json())
        progress("rebuild_store of a fresh copy without workers (--jobs 1)")
        copy_store(base, serial_copy)
        run = run_worker("rebuild", serial_copy, 1).check()
        serial = measured_summary(run, run.json())
        remove_store(serial_copy)
        facts = span_facts(work, info.big_session_id or "")

        progress("copying the store for the CLI run")
        copy_store(base, cli_copy)
        progress("spanwatch rebuild --json, end to end")
        cli_run = run_measured(
            [
                *spanwatch_argv(),
                "rebuild",
                "--db",
                str(cli_copy),
                "--json",
                "--jobs",
                str(args.jobs),
            ]
        )
        cli_run.check()
        cli_doc = cli_run.json()
        remove_store(cli_copy)
        cli = {
            "wall_s": round(cli_run.wall_s, 3),
            "reported_s": cli_doc.get("seconds"),
            "events_per_s": per_second(int(cli_doc["events"]), cli_run.wall_s),
            "peak_rss_mb": round(max(cli_run.max_rss_mb, cli_run.max_tree_rss_mb), 1),
            "cpu_s": round(cli_run.cpu_s, 3),
            "exit_code": cli_run.returncode,
            "output": cli_doc,
        }

        big = big_session(base, info.big_session_id or "", args.oracle_budget, args.engine_repeat)
    finally:
        remove_store(cli_copy)
        remove_store(serial_copy)
        remove_store(fresh_copy)
        if not args.keep:
            remove_store(work)

    floor_s = min(float(f["seconds"]) for f in floors)
    rows = int(floors[0]["rows"])
    doc["floor"] = {
        "seconds": round(floor_s, 3),
        "runs_s": [round(float(f["seconds"]), 3) for f in floors],
        "events": rows,
        "events_per_s": per_second(rows, floor_s),
        "payload_mb": round(int(floors[0]["payload_chars"]) / 1e6, 1),
        "peak_rss_mb": max(float(f["max_rss_mb"]) for f in floors),
    }
    doc["floor_through_apsw"] = {
        "seconds": round(min(float(f["seconds"]) for f in apsw_floors), 3),
        "runs_s": [round(float(f["seconds"]), 3) for f in apsw_floors],
        "note": "the workers read through apsw; the ratio's floor is Python's sqlite3 module",
    }
    doc["rebuild"] = rebuild
    doc["rebuild_cli"] = cli
    doc["rebuild_again_nothing_to_write"] = again
    doc["rebuild_without_workers"] = serial
    doc["spans"] = facts
    doc["big_session"] = big
    ratio = rebuild["seconds"] / floor_s
    doc["ratios"] = {
        "rebuild_over_floor": round(ratio, 2),
        "cli_end_to_end_over_floor": round(cli["wall_s"] / floor_s, 2),
        "rebuild_again_over_floor": round(again["seconds"] / floor_s, 2),
        "rebuild_without_workers_over_floor": round(serial["seconds"] / floor_s, 2),
    }
    doc["targets"] = {
        "rebuild_within_3x_of_floor": target(ratio, "<=", TARGET_RATIO, "x"),
        "big_session_speedup_over_oracle": target(big["speedup"], ">=", TARGET_SPEEDUP, "x"),
        "rebuild_peak_rss": target(rebuild["peak_rss_mb"], "<", TARGET_RSS_MB, "MB"),
    }
    emit(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
