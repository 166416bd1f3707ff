"""The simulator makes sessions and stores shaped like real ones, reproducibly."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from spanwatch.simulate import (
    ALL_COLUMNS,
    BASE_COLUMNS,
    EventRow,
    create_events_table,
    event_columns,
    generate_session,
    populate,
    session_id_for,
    stream_bursts,
    stream_session,
)
from spanwatch.simulate.schema import connect
from spanwatch.simulate.tools import BY_NAME

SEEDS = range(6)


def _session(seed: int, **kwargs: object) -> list[EventRow]:
    options: dict[str, object] = {"tool_uses": 120, "task_depth": 2, "payload_scale": 0.2}
    options.update(kwargs)
    return generate_session(f"sess-{seed}", seed=seed, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sessions() -> list[list[EventRow]]:
    return [_session(seed) for seed in SEEDS]


def _hook_event(row: EventRow) -> str | None:
    if row.source != "Hook":
        return None
    value = json.loads(row.payload).get("hook_event_name")
    return value if isinstance(value, str) else None


def _by_call(rows: list[EventRow]) -> dict[str, list[EventRow]]:
    grouped: dict[str, list[EventRow]] = defaultdict(list)
    for row in rows:
        if row.call_id is not None:
            grouped[row.call_id].append(row)
    return grouped


# -- well-formed rows -------------------------------------------------------------


def test_seq_is_unique_per_session_and_has_gaps(sessions: list[list[EventRow]]) -> None:
    for rows in sessions:
        seqs = [row.seq for row in rows]
        assert len(set(seqs)) == len(seqs)
        assert min(seqs) == 0
    assert any(max(r.seq for r in rows) + 1 > len(rows) for rows in sessions), "no seq gaps"


def test_rows_arrive_in_arrival_order_not_ts_order(sessions: list[list[EventRow]]) -> None:
    for rows in sessions:
        arrivals = [row.arrival_ms for row in rows]
        assert arrivals == sorted(arrivals)
        assert all(row.ts_ms <= row.arrival_ms for row in rows)
        ts = [row.ts_ms for row in rows]
        assert ts != sorted(ts)


def test_some_rows_arrive_below_the_highest_seq_already_stored() -> None:
    # Held-up transcript-tail commits: rare, so look at a long session.
    rows = _session(11, tool_uses=3000, payload_scale=0.0)
    highest, lower = -1, 0
    for row in rows:
        lower += row.seq < highest
        highest = max(highest, row.seq)
    assert 0 < lower < len(rows) * 0.05


def test_every_row_matches_the_store_columns(sessions: list[list[EventRow]]) -> None:
    kinds = Counter(row.kind for rows in sessions for row in rows)
    assert set(kinds) == {"Hook", "ToolCall", "ToolResult", "Message", "Cost", "Lifecycle"}
    for rows in sessions:
        for row in rows:
            assert row.source in {"Hook", "Tail", "Proxy"}
            assert row.ts_exact == (1 if row.source == "Tail" else 0)
            assert isinstance(row.payload, str)
            json.loads(row.payload)
            assert set(row.columns()) == set(ALL_COLUMNS)


def test_the_three_writers_record_what_they_see(sessions: list[list[EventRow]]) -> None:
    rows = [row for session in sessions for row in session]
    calls = [row for row in rows if row.kind == "ToolCall"]
    results = [row for row in rows if row.kind == "ToolResult"]
    costs = [row for row in rows if row.kind == "Cost"]
    assert all(
        row.tool and row.tool_call_id and row.tool_call_id.startswith("toolu_") for row in calls
    )
    assert all(row.tool_call_id for row in results)
    assert 0.5 < sum(row.tool is None for row in results) / len(results) < 0.9
    assert all(row.tokens_in and row.tokens_out and row.cost_usd_e6 for row in costs)
    assert any(row.reasoning_tokens for row in costs + calls)
    assert all(row.stop_reason in {"tool_use", "end_turn"} and row.latency_ms for row in costs)
    lifecycle = Counter(_hook_event(row) for row in rows if row.kind == "Lifecycle")
    assert {"SessionStart", "Stop", "SubagentStop", "SessionEnd"} <= set(lifecycle)
    roles = Counter(json.loads(row.payload)["type"] for row in rows if row.kind == "Message")
    assert roles["user"] and roles["assistant"]


def test_hook_payloads_look_like_claude_code_hook_input(sessions: list[list[EventRow]]) -> None:
    for rows in sessions:
        for row in rows:
            event = _hook_event(row)
            if event not in {"PreToolUse", "PostToolUse"}:
                continue
            body = json.loads(row.payload)
            assert body["session_id"] == row.session_id
            assert body["cwd"].startswith("/home/dev/src/")
            assert body["tool_name"] == row.tool
            assert isinstance(body["tool_input"], dict)
            assert ("tool_response" in body) == (event == "PostToolUse")
            assert body.get("tool_use_id") == row.tool_call_id


def test_pre_and_post_hooks_pair_up_by_id(sessions: list[list[EventRow]]) -> None:
    paired = interrupted = 0
    for rows in sessions:
        for call_id, group in _by_call(rows).items():
            events = Counter(_hook_event(row) for row in group)
            if not events["PreToolUse"]:
                continue  # a session without hooks
            assert events["PreToolUse"] == 1
            assert events["PostToolUse"] <= 1
            if events["PostToolUse"]:
                pre = next(r for r in group if _hook_event(r) == "PreToolUse")
                post = next(r for r in group if _hook_event(r) == "PostToolUse")
                assert pre.ts_ms <= post.ts_ms
                assert pre.tool_call_id == post.tool_call_id in {call_id, None}
                paired += 1
            else:
                interrupted += 1
                assert not any(r.kind == "ToolResult" for r in group), call_id
    assert paired > 100
    assert interrupted >= 1


def test_interrupted_tools_have_a_call_but_no_result() -> None:
    orphans = 0
    for seed in range(20):
        for call_id, group in _by_call(_session(seed, payload_scale=0.0)).items():
            kinds = {row.kind for row in group}
            if "ToolResult" not in kinds and not any(
                _hook_event(r) == "PostToolUse" for r in group
            ):
                orphans += 1
                assert kinds & {"ToolCall", "Hook"}, call_id
    assert orphans >= 3


def test_parallel_calls_open_before_their_results(sessions: list[list[EventRow]]) -> None:
    widest = 0
    for rows in sessions:
        open_calls: set[str] = set()
        for row in sorted(rows, key=lambda r: (r.ts_ms, r.seq)):
            if row.kind == "ToolCall" and row.call_id:
                open_calls.add(row.call_id)
                widest = max(widest, len(open_calls))
            elif row.kind == "ToolResult" and row.call_id:
                open_calls.discard(row.call_id)
    assert widest >= 3


def test_task_children_run_inside_the_task_window() -> None:
    rows = _session(3, tool_uses=600, task_depth=3, task_share=0.25, payload_scale=0.0)
    groups = _by_call(rows)
    tasks = {cid: g for cid, g in groups.items() if g[0].tool == "Task"}
    assert tasks
    depth: dict[str, int] = {}

    def level(call_id: str) -> int:
        parent = groups[call_id][0].parent_call_id
        return 0 if parent is None else 1 + level(parent)

    for row in rows:
        if row.parent_call_id is None:
            continue
        task_rows = tasks[row.parent_call_id]
        assert min(r.ts_ms for r in task_rows) < row.ts_ms < max(r.ts_ms for r in task_rows)
        if row.call_id is not None:
            depth[row.call_id] = level(row.call_id)
        # Both interval rules spanwatch may apply (hooks, or call/result) contain the child.
        for kind in ("ToolCall", "ToolResult"):
            edge = [r.ts_ms for r in task_rows if r.kind == kind]
            if edge and kind == "ToolCall":
                assert edge[0] < row.ts_ms
            elif edge:
                assert row.ts_ms < edge[0]
    assert max(depth.values()) == 3


def test_tasks_do_not_nest_deeper_than_task_depth() -> None:
    for task_depth in (0, 1):
        rows = _session(5, tool_uses=300, task_depth=task_depth, task_share=0.5, payload_scale=0)
        tasks = {r.call_id for r in rows if r.tool == "Task"}
        if task_depth == 0:
            assert not tasks
        else:
            assert tasks
            assert all(r.parent_call_id is None for r in rows if r.call_id in tasks)


def test_tool_uses_counts_every_tool_use_subagents_included() -> None:
    rows = _session(2, tool_uses=77, task_depth=2, task_share=0.3, payload_scale=0)
    assert len({row.call_id for row in rows if row.call_id}) == 77


def test_paths_appear_under_every_key_spanwatch_collects(sessions: list[list[EventRow]]) -> None:
    payloads = [row.payload for rows in sessions for row in rows]
    for key in ('"file_path":', '"path":', '"target_file":', '"relative_workspace_path'):
        assert any(key in p for p in payloads), key
    # JSON documents inside string values (MCP responses, jq output of Bash).
    assert any('\\"path\\":' in p or '\\"file\\":' in p for p in payloads)
    tools = {row.tool for rows in sessions for row in rows if row.kind == "ToolCall"}
    assert {"Read", "Edit", "Write", "Grep", "Glob", "Bash", "Task"} <= tools


# -- sizes ------------------------------------------------------------------------


def _is_output(row: EventRow) -> bool:
    return row.kind == "ToolResult" or _hook_event(row) == "PostToolUse"


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_payload_sizes_follow_the_configured_ranges(scale: float) -> None:
    rows = [row for seed in range(3) for row in _session(seed, tool_uses=300, payload_scale=scale)]
    small = [len(row.payload.encode()) for row in rows if not _is_output(row)]
    assert sum(size < 1024 for size in small) / len(small) > 0.95
    assert max(small) < 4096
    groups = _by_call(rows)
    for row in rows:
        if not _is_output(row):
            continue
        spec = BY_NAME[groups[row.call_id or ""][0].tool or ""]
        limit = spec.output_bytes[1] * scale * 1.3 + 4096  # JSON escaping, envelope, filenames
        assert len(row.payload.encode()) <= limit, (row.tool, len(row.payload))
    outputs = [len(row.payload.encode()) for row in rows if _is_output(row)]
    if scale == 1.0:
        assert sum(10_000 <= size <= 130_000 for size in outputs) / len(outputs) > 0.15
        assert sum(size < 1024 for size in (small + outputs)) / len(small + outputs) > 0.6


def test_payload_scale_changes_sizes_only() -> None:
    big = _session(4, payload_scale=1.0)
    tiny = _session(4, payload_scale=0.01)
    strip = [(r.seq, r.ts_ms, r.kind, r.tool_call_id, r.arrival_ms) for r in big]
    assert strip == [(r.seq, r.ts_ms, r.kind, r.tool_call_id, r.arrival_ms) for r in tiny]
    assert sum(len(r.payload) for r in big) > 10 * sum(len(r.payload) for r in tiny)


# -- determinism, streaming ---------------------------------------------------------


def test_the_same_seed_gives_the_same_rows() -> None:
    assert _session(9) == _session(9)
    assert _session(9) != _session(10)
    assert session_id_for(3, 1) == session_id_for(3, 1) != session_id_for(3, 2)


def test_streaming_matches_the_list_and_is_lazy() -> None:
    rows = _session(8)
    streamed = stream_session("sess-8", seed=8, tool_uses=120, task_depth=2, payload_scale=0.2)
    assert list(itertools.islice(streamed, 10)) == rows[:10]
    huge = stream_session("huge", seed=1, tool_uses=10**9, payload_scale=1.0)
    assert len(list(itertools.islice(huge, 500))) == 500


def test_time_scale_and_seq_base_shift_the_clock_and_the_seqs() -> None:
    base = _session(6)
    fast = _session(6, time_scale=0.1, start_ms=1000, seq_base=500)
    assert [r.seq + 500 for r in base] == [r.seq for r in fast]
    assert fast[0].ts_ms == 1000
    span = base[-1].arrival_ms - base[0].ts_ms
    assert abs((fast[-1].arrival_ms - fast[0].ts_ms) - span * 0.1) <= 2


def test_bursts_group_rows_arriving_together() -> None:
    rows = _session(7)
    bursts = list(stream_bursts(iter(rows), window_ms=500))
    assert [row for burst in bursts for row in burst.rows] == rows
    assert 1 < len(bursts) < len(rows)
    for burst in bursts:
        assert burst.due_ms == burst.rows[-1].arrival_ms
        assert burst.rows[-1].arrival_ms - burst.rows[0].arrival_ms <= 500


# -- the store ----------------------------------------------------------------------


def test_store_versions_add_columns_the_way_migrations_did(tmp_path: Path) -> None:
    conn = connect(tmp_path / "v.db")
    assert create_events_table(conn, "v1") == BASE_COLUMNS
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert create_events_table(conn, "v2") == (*BASE_COLUMNS, "ts_exact", "tool_call_id")
    assert create_events_table(conn, "current") == ALL_COLUMNS
    assert create_events_table(conn, "v1") == ALL_COLUMNS  # never goes back
    indexes = conn.execute("PRAGMA index_list('events')").fetchall()
    assert any(unique for (_, _, unique, *_) in indexes)
    with pytest.raises(ValueError, match="unknown store version"):
        create_events_table(conn, "v9")


@pytest.mark.parametrize("version", ["v1", "current"])
def test_populate_writes_exactly_the_target(tmp_path: Path, version: str) -> None:
    db = tmp_path / "bulk.db"
    stats = populate(db, 12, 4_000, seed=5, big_session_events=1_500, version=version)
    assert stats.events == 4_000 and stats.sessions == 13
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (4_000,)
    big = conn.execute(
        "SELECT COUNT(*) FROM events WHERE session_id = ?", (stats.big_session_id,)
    ).fetchone()
    assert big == (1_500,)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert tuple(event_columns(conn)) == (BASE_COLUMNS if version == "v1" else ALL_COLUMNS)
    with pytest.raises(ValueError, match="already holds"):
        populate(db, 12, 100, seed=5)


def test_populate_is_deterministic(tmp_path: Path) -> None:
    dumps = []
    for name in ("a.db", "b.db"):
        populate(tmp_path / name, 5, 1_000, seed=2)
        conn = sqlite3.connect(tmp_path / name)
        dumps.append(conn.execute("SELECT * FROM events ORDER BY id").fetchall())
    assert dumps[0] == dumps[1]


# -- the writer process ---------------------------------------------------------------


def _writer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "spanwatch.simulate.writer", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _count(reader: sqlite3.Connection) -> int:
    try:
        return int(reader.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:  # table not created yet
        return 0


def test_writer_appends_live_to_a_wal_store_while_others_read(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    log = tmp_path / "commits.jsonl"
    proc = _writer(
        "--db", str(db), "--sessions", "6", "--rate", "300", "--duration", "4",
        "--commit-log", str(log), "--seed", "3",
    )  # fmt: skip
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if db.exists():
                reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
                seen.append(_count(reader))
                reader.close()
            time.sleep(0.2)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    stats = json.loads(out)
    assert stats["stopped_by"] == "done"
    assert stats["events"] == 1_200
    assert set(stats["commit_ms"]) == {"p50", "p99", "max"}
    assert stats["transactions"] > 50
    growth = [n for n in seen if n > 0]
    assert len(set(growth)) >= 5 and growth == sorted(growth), seen
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (1_200,)
    now_ms = time.time() * 1000
    (low, high) = conn.execute("SELECT MIN(ts_ms), MAX(ts_ms) FROM events").fetchone()
    assert now_ms - 60_000 < low <= high <= now_ms  # wall-clock timestamps
    commits = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(len(c["seqs"]) for c in commits) == 1_200
    assert commits[-1]["last_id"] == 1_200


def test_writer_stops_on_the_stop_file_and_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "stop.db"
    stop_file = tmp_path / "stop"
    proc = _writer(
        "--db", str(db), "--rate", "100", "--duration", "60", "--stop-file", str(stop_file)
    )
    time.sleep(1.5)
    stop_file.touch()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out)["stopped_by"] == "stop-file"

    proc = _writer("--db", str(db), "--rate", "100", "--duration", "60", "--seed", "1")
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stats = json.loads(out)
    assert stats["stopped_by"] == "signal"
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] >= stats["events"]


def test_writer_continues_sessions_already_in_the_store(tmp_path: Path) -> None:
    db = tmp_path / "extend.db"
    stats = populate(db, 4, 2_000, seed=1, big_session_events=800)
    proc = _writer(
        "--db", str(db), "--sessions", "3", "--extend-existing", "2",
        "--rate", "200", "--duration", "2", "--seed", "1",
    )  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    conn = sqlite3.connect(db)
    total = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert total == 2_000 + json.loads(out)["events"]
    big = conn.execute(
        "SELECT COUNT(*), COUNT(DISTINCT seq) FROM events WHERE session_id = ?",
        (stats.big_session_id,),
    ).fetchone()
    assert big[0] > 800 and big[0] == big[1]
    # Running the same seed again continues its sessions instead of colliding.
    again = _writer("--db", str(db), "--sessions", "3", "--rate", "200", "--duration", "1")
    assert again.wait(timeout=60) == 0


def test_writer_writes_into_an_old_store_without_the_later_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    proc = _writer(
        "--db", str(db), "--store-version", "v1", "--rate", "200", "--duration", "1",
    )  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    conn = sqlite3.connect(db)
    assert tuple(event_columns(conn)) == BASE_COLUMNS
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == json.loads(out)["events"]


def test_writer_waits_for_a_busy_store_instead_of_failing(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    create_events_table(connect(db))
    holder = connect(db)
    holder.execute("BEGIN IMMEDIATE")
    proc = _writer("--db", str(db), "--rate", "200", "--duration", "3")
    time.sleep(1.5)
    holder.execute("COMMIT")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    stats = json.loads(out)
    assert stats["commit_ms"]["max"] > 500
    assert stats["events"] == 600
