"""The fault suite's scenarios, run once each, with their figures. (issue 5, Report)

Runs what `tests/faults/` tests, from the same code (`tests/faults/
fault_scenarios.py`): kill -9 at random points while a writer fills the store,
lock contention, damage to the store file, bad rows and schemas, writers that
change rows in place, and the security checks. Each injected fault is a trial:
did spanwatch recover, how many spans did it lose (spans a fresh rebuild has
that the store lacks or holds differently), and how long did it take, from the
repair (or restart) to a caught-up store.

Prints one JSON document on stdout (every trial, its problems and details) and
a table on stderr (`--markdown`: the table, in Markdown, on stdout instead).
`--quick`: fewer crash cycles, fewer bad-row stores, 6 s lock holds (about two
minutes).
Needs root for the read-only faults (the daemon runs as `nobody`) and a tmpfs
mount for the real full disk; without them those trials are marked skipped.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "faults"))

import fault_scenarios as scenarios
from faultkit import Trial

from benchlib.common import DEFAULT_WORKDIR, emit, machine, progress

#: What a row of the table says about a fault that is not about recovering.
NOTES = {
    "rows changed in place (capture=rowid)": "by design: verify reports it",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run (about two minutes)")
    parser.add_argument("--crash-cycles", type=int, help="kill -9 cycles (50; --quick 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", action="append", metavar="NAME", help="scenarios to run")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--keep", action="store_true", help="keep stores and daemon logs")
    parser.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> dict[str, Callable[[Path], list[Trial]]]:
    quick = args.quick
    cycles = args.crash_cycles or (8 if quick else 50)
    hold = 6.0 if quick else 10.0  # over the 5 s busy timeout: the daemon's retries show
    seed = args.seed

    def one(trial: Trial | None) -> list[Trial]:
        return [] if trial is None else [trial]

    return {
        "crash": lambda d: scenarios.crash_cycles(d, cycles, seed=seed),
        "lock-held": lambda d: [scenarios.lock_held_10s(d, hold_s=hold)],
        "fast-writers": lambda d: [scenarios.fast_writers(d, seconds=hold / 2)],
        "long-reader": lambda d: [scenarios.long_reader(d, hold_s=hold)],
        "deleted": lambda d: [scenarios.store_deleted_and_recreated(d)],
        "replaced": lambda d: [scenarios.store_replaced_by_rename(d)],
        "moved": lambda d: [scenarios.store_moved_away(d)],
        "read-only-at-start": lambda d: [scenarios.read_only_at_start(d)],
        "read-only-running": lambda d: [scenarios.made_read_only_while_running(d)],
        "full-disk-tmpfs": lambda d: one(scenarios.full_disk(d, "tmpfs")),
        "full-disk-page-limit": lambda d: one(scenarios.full_disk(d, "page-limit")),
        "garbage": lambda d: [scenarios.store_truncated_to_garbage(d)],
        "not-sqlite": lambda d: [scenarios.store_replaced_by_non_sqlite(d)],
        "unusable-at-start": scenarios.unusable_at_start,
        "bad-rows": lambda d: [
            scenarios.bad_rows(_subdir(d, n), seed=seed + n) for n in range(2 if quick else 5)
        ],
        "events-schemas": scenarios.events_schemas,
        "old-tool-spans": lambda d: [scenarios.old_tool_spans(d)],
        "in-place-rowid": lambda d: [scenarios.in_place_writer(d, "rowid", seed=seed)],
        "in-place-triggers": lambda d: [scenarios.in_place_writer(d, "triggers", seed=seed)],
        "security": lambda d: [scenarios.security(d)],
    }


def _subdir(parent: Path, n: int) -> Path:
    path = parent / str(n)
    path.mkdir()
    return path


def run(name: str, scenario: Callable[[Path], list[Trial]], workdir: Path) -> list[Trial]:
    where = workdir / name
    where.mkdir(parents=True)
    started = time.monotonic()
    try:
        trials = scenario(where)
    except Exception as exc:  # a broken scenario is a finding too: report it, carry on
        trial = Trial(name, problems=[f"scenario failed: {exc!r}"])
        trial.details["traceback"] = traceback.format_exc()[-3000:]
        trials = [trial]
    progress(
        f"{name}: {len(trials)} trials, {sum(t.recovered for t in trials)} recovered, "
        f"{sum(len(t.problems) for t in trials)} problems, {time.monotonic() - started:.1f} s"
    )
    for trial in trials:
        for problem in trial.problems[:3]:
            progress(f"  problem: {problem[:300]}")
    return trials


def table(trials: list[Trial]) -> list[dict[str, Any]]:
    """One row per fault: trials, recovered, rows lost, max time to recover."""
    rows: dict[str, dict[str, Any]] = {}
    for trial in trials:
        row = rows.setdefault(
            trial.fault,
            {"fault": trial.fault, "trials": 0, "recovered": 0, "rows_lost": 0,
             "max_recover_s": None, "problems": 0},
        )  # fmt: skip
        row["trials"] += 1
        row["recovered"] += trial.recovered
        row["rows_lost"] += trial.rows_lost
        row["problems"] += len(trial.problems)
        if trial.recover_s is not None:
            row["max_recover_s"] = max(row["max_recover_s"] or 0.0, trial.recover_s)
    for row in rows.values():
        row["note"] = NOTES.get(row["fault"], "")
    return list(rows.values())


def render(rows: list[dict[str, Any]], markdown: bool) -> str:
    head = ["fault", "trials", "recovered", "rows lost", "max time to recover (s)", "problems"]
    lines = [
        [
            row["fault"] + (f" ({row['note']})" if row["note"] else ""),
            str(row["trials"]),
            str(row["recovered"]),
            str(row["rows_lost"]),
            "-" if row["max_recover_s"] is None else f"{row['max_recover_s']:.2f}",
            str(row["problems"]),
        ]
        for row in rows
    ]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(x) for x in column) for column in zip(head, *lines, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in [head, *lines]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenario_plan = plan(args)
    chosen = args.only or list(scenario_plan)
    unknown = [name for name in chosen if name not in scenario_plan]
    if unknown:
        sys.exit(f"unknown scenarios {unknown}; known: {', '.join(scenario_plan)}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="faults-", dir=args.workdir))
    progress(f"fault scenarios {', '.join(chosen)} in {workdir}")
    trials: list[Trial] = []
    started = time.monotonic()
    try:
        for name in chosen:
            trials += run(name, scenario_plan[name], workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = table(trials)
    if args.markdown:
        print(render(rows, markdown=True))
    else:
        emit(
            {
                "benchmark": "faults",
                "machine": machine(),
                "quick": args.quick,
                "seconds": round(time.monotonic() - started, 1),
                "table": rows,
                "kill_moments": scenarios.kill_moments(trials),
                "trials": [asdict(trial) for trial in trials],
            }
        )
        print(render(rows, markdown=False), file=sys.stderr)
    return 1 if any(t.problems for t in trials) else 0


if __name__ == "__main__":
    sys.exit(main())
