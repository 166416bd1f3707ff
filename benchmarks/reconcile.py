"""How long does the daemon's start-up reconcile take on a big store? (issue 5, item 6)

A store of 100,000 sessions and 10,000,000 events (session sizes log-normal,
as `populate` spreads them; tiny payloads, since this is about the count) is
made with `executemany` directly (`populate` renders realistic payloads and
would take far longer), then rebuilt once with `rebuild_store` so that
`tool_spans` and the watermarks are what a running installation has
(`--marks-only` instead inserts watermarks matching `events` with one INSERT
... SELECT and leaves `tool_spans` empty; the output says which was done).
The store is kept in `--workdir` and reused by later runs.

Then, `--repeat` times each, interleaved, every one in a child process of its own:

- baseline: a bare `SELECT count(*) FROM events GROUP BY session_id`; and a
  second one giving the figures a reconcile compares (count, max(seq),
  max(id) per session), the least any reconcile of this design can read;
- `spanwatch.store.marks.stale_sessions` over the whole store (nothing stale);
- `spanwatch run` from process start to READY=1, received on an sd_notify
  datagram socket this benchmark binds (then SIGTERM); its log's "starting"
  to "ready" gives the reconcile inside the daemon without interpreter start.

Times are the best of the runs (all are listed), peak RSS is VmHWM. Prints one
JSON document on stdout; progress on stderr. `--quick`: a small smoke version.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from itertools import islice
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
)
from benchlib.daemon import DaemonProcess
from benchlib.stores import remove_store, sidecar
from spanwatch.simulate.bulk import session_quotas
from spanwatch.simulate.schema import create_events_table

COLUMNS = (
    "session_id", "seq", "ts_ms", "kind", "source", "tool", "tool_call_id",
    "tokens_in", "tokens_out", "cost_usd_e6", "payload",
)  # fmt: skip
CHUNK = 50_000
START_MS = 1_700_000_000_000
PRE = '{"hook_event_name":"PreToolUse","tool_name":"Read"}'
POST = '{"hook_event_name":"PostToolUse","tool_name":"Read"}'
CALL = '{"file_path":"src/app.py"}'
RESULT = '"ok"'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run (< 60 s)")
    parser.add_argument("--sessions", type=int, help="sessions (100,000)")
    parser.add_argument("--events", type=int, help="events (10,000,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", type=Path, help="use (or create and keep) this store")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--regenerate", action="store_true", help="make the store again")
    parser.add_argument(
        "--marks-only",
        action="store_true",
        help="when making the store: insert matching watermarks instead of rebuilding",
    )
    parser.add_argument("--repeat", type=int, help="runs of each measurement (3)")
    args = parser.parse_args(argv)
    if args.sessions is None:
        args.sessions = 2_000 if args.quick else 100_000
    if args.events is None:
        args.events = 200_000 if args.quick else 10_000_000
    if args.repeat is None:
        args.repeat = 2 if args.quick else 3
    return args


def rows(sessions: int, events: int, seed: int) -> Iterator[tuple[Any, ...]]:
    """Small rows of whole sessions, one tool use per 5 rows (pre hook, call, result,
    post hook, cost), sessions one after the other in time."""
    rng = random.Random(f"reconcile:{seed}")
    quotas = [max(1, q) for q in session_quotas(sessions, events, seed)]
    quotas[quotas.index(max(quotas))] -= sum(quotas) - events  # every session has a row
    for index, quota in enumerate(quotas):
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        t = START_MS + index * 600_000
        call_id = ""
        for seq in range(quota):
            step = seq % 5
            t += 150
            if step == 0:
                call_id = f"toolu_{index:x}_{seq:x}"
                yield (sid, seq, t, "Hook", "Hook", None, call_id, None, None, None, PRE)
            elif step == 1:
                yield (sid, seq, t, "ToolCall", "Tail", "Read", call_id, None, None, None, CALL)
            elif step == 2:
                yield (sid, seq, t, "ToolResult", "Tail", None, call_id, None, None, None, RESULT)
            elif step == 3:
                yield (sid, seq, t, "Hook", "Hook", None, call_id, None, None, None, POST)
            else:
                yield (sid, seq, t, "Cost", "Proxy", None, None, 1200, 80, 1500, "{}")


def generate(path: Path, sessions: int, events: int, seed: int) -> float:
    """Write the store with executemany, one chunk written while the next is made."""
    remove_store(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    create_events_table(conn, "current")
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    sql = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"

    def write(chunk: list[tuple[Any, ...]]) -> int:
        conn.execute("BEGIN")
        conn.executemany(sql, chunk)
        conn.execute("COMMIT")
        return len(chunk)

    written = 0
    source = rows(sessions, events, seed)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future[int] | None = None
        while chunk := list(islice(source, CHUNK)):
            if pending is not None:
                written += pending.result()
                if written % 1_000_000 < CHUNK:
                    progress(f"  {written:,} events")
            pending = pool.submit(write, chunk)
        if pending is not None:
            written += pending.result()
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    return time.perf_counter() - started


def insert_marks(path: Path) -> float:
    """Watermarks matching `events` for every session, as a rebuild would leave them."""
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    from spanwatch.store.schema import ensure_schema

    ensure_schema(conn)
    now = int(time.time() * 1000)
    conn.execute(
        "INSERT OR REPLACE INTO spanwatch_sessions (session_id, max_seq, row_count, max_id, "
        "span_count, skipped_rows, rebuilt_at_ms) SELECT session_id, max(seq), count(*), "
        "max(id), 0, 0, ? FROM events GROUP BY session_id",
        (now,),
    )
    conn.close()
    return time.perf_counter() - started


def prepare_store(args: argparse.Namespace) -> dict[str, Any]:
    workdir: Path = args.workdir
    name = f"reconcile-{args.events}ev-{args.sessions}s-seed{args.seed}-v2.db"
    path: Path = args.store if args.store is not None else workdir / name
    meta_path = sidecar(path)
    if not args.regenerate and path.exists() and meta_path.exists():
        progress(f"reusing the store {path}")
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        meta["generated_now"] = False
        return meta
    progress(f"generating {args.events:,} events in {args.sessions:,} sessions into {path}")
    gen_s = generate(path, args.sessions, args.events, args.seed)
    progress(f"  generated in {gen_s:.1f} s ({path.stat().st_size / 1e9:.2f} GB)")
    if args.marks_only:
        progress("inserting watermarks that match events (no rebuild)")
        prep_s = insert_marks(path)
        prepared = "watermarks inserted to match events; tool_spans left empty"
        rebuild: dict[str, Any] | None = None
    else:
        progress("rebuilding the whole store once (rebuild_store, child process)")
        run = run_worker("rebuild", path).check()
        rebuild = run.json()
        prep_s = float(rebuild["seconds"])
        prepared = "rebuilt once with rebuild_store (tool_spans and watermarks filled)"
    progress(f"  prepared in {prep_s:.1f} s")
    conn = sqlite3.connect(path)
    try:
        events, sessions = conn.execute(
            "SELECT count(*), count(DISTINCT session_id) FROM events"
        ).fetchone()
    finally:
        conn.close()
    meta = {
        "path": str(path),
        "events": events,
        "sessions": sessions,
        "prepared_with_code": code_version(),
        "payloads": "tiny (2 to 60 bytes)",
        "generation": "executemany directly (not populate)",
        "generation_s": round(gen_s, 1),
        "prepared": prepared,
        "prepare_s": round(prep_s, 1),
        "rebuild": rebuild,
        "db_bytes": path.stat().st_size,
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    meta["generated_now"] = True
    return meta


def _log_times(log_path: Path) -> dict[str, float]:
    """Wall-clock time of the daemon's "starting", "store opened" and "ready" log lines."""
    found: dict[str, float] = {}
    for line in log_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        event = record.get("event")
        if event in ("starting", "store opened", "ready") and event not in found:
            found[event] = datetime.fromisoformat(record["timestamp"]).timestamp()
    return found


def daemon_start(db: Path, workdir: Path, run: int) -> dict[str, Any]:
    log_path = workdir / f"reconcile-daemon-{run}.jsonl"
    daemon = DaemonProcess(db, log_path=log_path, notify_path=workdir / "reconcile-notify.sock")
    try:
        ready_s = daemon.wait_ready(1800)
        peak = daemon.hwm_mb()
        rss = daemon.rss_mb()
        cpu = daemon.cpu_s()
    finally:
        code = daemon.stop()
    if ready_s is None:
        raise RuntimeError(f"spanwatch run never sent READY=1; see {log_path}")
    times = _log_times(log_path)
    in_log = (
        times["ready"] - times["starting"] if "ready" in times and "starting" in times else None
    )
    opened = (
        times["store opened"] - times["starting"]
        if "store opened" in times and "starting" in times
        else None
    )
    return {
        "start_to_ready_s": ready_s,
        "logged_starting_to_ready_s": in_log,
        "logged_starting_to_store_opened_s": opened,
        "peak_rss_mb": peak,
        "rss_mb_at_ready": rss,
        "cpu_s_to_ready": cpu,
        "exit_code": code,
    }


def summary(runs: list[dict[str, Any]], key: str = "seconds") -> dict[str, Any]:
    values = [float(r[key]) for r in runs]
    return {"seconds": round(min(values), 3), "runs_s": [round(v, 3) for v in values]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    meta = prepare_store(args)
    db = Path(meta["path"])
    baseline_runs: list[dict[str, Any]] = []
    figures_runs: list[dict[str, Any]] = []
    stale_runs: list[dict[str, Any]] = []
    daemon_runs: list[dict[str, Any]] = []
    for i in range(args.repeat):
        progress(f"round {i + 1}/{args.repeat}: baseline GROUP BY")
        baseline_runs.append(run_worker("group_count", db).check().json())
        figures_runs.append(run_worker("group_figures", db).check().json())
        progress(f"  {baseline_runs[-1]['seconds']:.2f} s; stale_sessions")
        stale_runs.append(run_worker("stale", db).check().json())
        progress(f"  {stale_runs[-1]['seconds']:.2f} s; spanwatch run to READY=1")
        daemon_runs.append(daemon_start(db, args.workdir, i))
        progress(f"  {daemon_runs[-1]['start_to_ready_s']:.2f} s")
    base = summary(baseline_runs)
    figures = summary(figures_runs)
    stale = summary(stale_runs)
    ready = summary(daemon_runs, "start_to_ready_s")
    logged = [r["logged_starting_to_ready_s"] for r in daemon_runs]
    logged_s = min((float(v) for v in logged if v is not None), default=None)
    doc: dict[str, Any] = {
        "benchmark": "reconcile",
        "quick": args.quick,
        "machine": machine(),
        "store": meta,
        "baseline_group_count": {
            **base,
            "groups": baseline_runs[0]["groups"],
            "peak_rss_mb": max(float(r["max_rss_mb"]) for r in baseline_runs),
        },
        "baseline_group_figures": {
            **figures,
            "sql": "SELECT session_id, count(*), max(seq), max(id) FROM events GROUP BY session_id",
            "peak_rss_mb": max(float(r["max_rss_mb"]) for r in figures_runs),
        },
        "stale_sessions": {
            **stale,
            "stale_found": stale_runs[0]["stale_sessions"],
            "peak_rss_mb": max(float(r["max_rss_mb"]) for r in stale_runs),
            "over_baseline": round(stale["seconds"] / base["seconds"], 2),
            "over_figures_baseline": round(stale["seconds"] / figures["seconds"], 2),
        },
        "daemon_start_to_ready": {
            **ready,
            "logged_starting_to_ready_s": rounded(logged_s),
            "over_baseline": round(ready["seconds"] / base["seconds"], 2),
            "peak_rss_mb": round(max(float(r["peak_rss_mb"]) for r in daemon_runs), 1),
            "cpu_s_to_ready": round(min(float(r["cpu_s_to_ready"]) for r in daemon_runs), 2),
            "exit_codes": [r["exit_code"] for r in daemon_runs],
            "runs": [
                {k: rounded(v) if isinstance(v, float) else v for k, v in r.items()}
                for r in daemon_runs
            ],
        },
    }
    emit(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
