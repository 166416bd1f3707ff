"""Generated stores: made once, cached in the work directory, copied for each run.

A store is made by `spanwatch.simulate.bulk.populate` (the same rows live
writers produce) and described by a sidecar `<store>.json`, written only once
the store is complete, so a half-written store is never reused.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchlib.common import progress
from spanwatch.simulate.bulk import populate


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """What a realistic store holds.

    `sessions` ordinary sessions (log-normal sizes) plus one session of
    `big_session_events` events with Tasks nested `big_task_depth` deep, plus
    `long_sessions` sessions of `long_session_events` each; `events` in all.
    `payload_scale` multiplies tool-output sizes (1.0: real sizes, about 4 KB
    per event on average; 0.25: about 1.6 KB).
    """

    events: int
    sessions: int
    big_session_events: int
    big_task_depth: int = 3
    long_sessions: int = 0
    long_session_events: int = 0
    payload_scale: float = 0.25
    seed: int = 0

    def file_name(self) -> str:
        long = f"-long{self.long_sessions}x{self.long_session_events}" if self.long_sessions else ""
        return (
            f"agent-{self.events}ev-{self.sessions}s-big{self.big_session_events}"
            f"d{self.big_task_depth}{long}-ps{self.payload_scale:g}-seed{self.seed}.db"
        )


@dataclass(slots=True)
class StoreInfo:
    path: str
    events: int
    sessions: int
    big_session_id: str | None
    big_session_events: int
    payload_scale: float | None
    db_bytes: int
    generated_now: bool
    generation_s: float | None
    spec: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    sidecar(path).unlink(missing_ok=True)


def checkpoint(path: Path) -> None:
    """Fold the WAL into the main file, so that copying the main file copies the store."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def copy_store(src: Path, dst: Path) -> Path:
    """A fresh copy of `src` at `dst` (whatever was at `dst` is removed).

    Synced to disk before it is measured: the first fsync of a run on it (a
    checkpoint's) would otherwise write back the whole 1.6 GB copy and bill
    that run for it.
    """
    checkpoint(src)
    remove_store(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    with dst.open("rb") as copied:
        os.fsync(copied.fileno())
    return dst


def generate(path: Path, spec: StoreSpec) -> float:
    """Fill a new store at `path` per `spec`; returns the seconds it took."""
    remove_store(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    long_total = spec.long_sessions * spec.long_session_events
    progress(
        f"generating {spec.events:,} events ({spec.sessions:,} sessions, one of "
        f"{spec.big_session_events:,}, {spec.long_sessions} of {spec.long_session_events:,}; "
        f"payload_scale {spec.payload_scale:g}) into {path}"
    )
    populate(
        path,
        spec.sessions,
        spec.events - long_total,
        spec.seed,
        big_session_events=spec.big_session_events,
        payload_scale=spec.payload_scale,
        big_task_depth=spec.big_task_depth,
    )
    for i in range(spec.long_sessions):
        # Another seed gives other session ids; one "big" session of the chosen size each.
        populate(
            path,
            0,
            spec.long_session_events,
            spec.seed + 1 + i,
            big_session_events=spec.long_session_events,
            payload_scale=spec.payload_scale,
            big_task_depth=2,
        )
    seconds = time.perf_counter() - started
    progress(f"generated in {seconds:.1f} s ({path.stat().st_size / 1e9:.2f} GB)")
    return seconds


def ensure_store(
    spec: StoreSpec, *, store: Path | None, workdir: Path, regenerate: bool = False
) -> StoreInfo:
    """The store to measure: `store` if given and present, else the cached one for `spec`.

    A missing store is generated (at `store`, or in `workdir`) and kept for
    the next run. A store given with `--store` is used as it is: its figures
    are read from it, not taken from `spec`.
    """
    path = store if store is not None else workdir / spec.file_name()
    meta_path = sidecar(path)
    generated_now = False
    seconds: float | None = None
    meta: dict[str, Any] = {}
    if regenerate or not path.exists() or (store is None and not meta_path.exists()):
        seconds = generate(path, spec)
        generated_now = True
        meta = {"spec": asdict(spec), "generation_s": round(seconds, 3)}
        meta_path.write_text(json.dumps(meta, indent=2))
    else:
        progress(f"reusing the store {path}")
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            seconds = meta.get("generation_s")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
        big = conn.execute(
            "SELECT session_id, count(*) AS n FROM events GROUP BY session_id "
            "ORDER BY n DESC LIMIT 1"
        ).fetchone()
        (sessions,) = conn.execute("SELECT count(DISTINCT session_id) FROM events").fetchone()
    finally:
        conn.close()
    saved_spec = meta.get("spec")
    return StoreInfo(
        path=str(path),
        events=int(events),
        sessions=int(sessions),
        big_session_id=None if big is None else str(big[0]),
        big_session_events=0 if big is None else int(big[1]),
        payload_scale=None if saved_spec is None else float(saved_spec["payload_scale"]),
        db_bytes=path.stat().st_size,
        generated_now=generated_now,
        generation_s=seconds,
        spec=saved_spec,
    )
