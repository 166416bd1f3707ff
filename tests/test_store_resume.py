"""A session without cached state, resumed from its stored spans and latest rows.

The rows written must be those of a full read (tests/test_reference_parity.py
checks that against the Rust reference on generated streams); here: where the
resume point goes, what makes an engine started there give up, and that a
long realistic session is resumed after reading a small part of its rows,
or read in full where its stored spans or rows cannot be trusted.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from spanwatch.engine import Event, SessionSpans
from spanwatch.engine.builder import RetiredSpanNeeded
from spanwatch.engine.events import EventKind as K
from spanwatch.engine.resume import resume_point
from spanwatch.simulate.rows import EventRow
from spanwatch.simulate.sessions import generate_session
from spanwatch.store import resume as store_resume
from spanwatch.store.connection import open_store
from spanwatch.store.rebuild import Rebuilder
from spanwatch.store.schema import ensure_schema
from stores import backup, compare_spans, event_row, insert_rows, make_store

# --------------------------------------------------------------------------
# The resume point
# --------------------------------------------------------------------------


def test_the_resume_point_is_the_latest_quiet_stretch_that_keeps_enough_spans() -> None:
    spans = [(0, 10), (20, 30), (100, 110), (120, 130), (300, 310)]
    # Two spans kept at least: before (120, 130) the gap to 110 is too short
    # for a margin of 5 on each side; before (100, 110) it is not.
    assert resume_point(spans, keep=2, open_age=0, margin=5) == (95, 2)
    assert resume_point(spans, keep=1, open_age=0, margin=5) == (295, 4)
    assert resume_point(spans, keep=1, open_age=0, margin=100) is None


def test_the_resume_point_goes_before_a_recent_span_still_open() -> None:
    spans = [(0, 10), (20, 30), (40, 50), (60, None), (80, 90), (100, 110)]
    assert resume_point(spans, keep=1, open_age=3, margin=1) == (59, 3)
    # An open span older than `open_age` spans is left behind the point.
    assert resume_point(spans, keep=1, open_age=2, margin=1) == (99, 5)


def test_no_resume_point_inside_a_span_that_covers_the_rest() -> None:
    spans = [(0, 1000), (10, 20), (30, 40), (50, 60)]
    assert resume_point(spans, keep=1, open_age=0, margin=0) is None


def test_no_resume_point_for_stored_times_that_are_not_integers() -> None:
    spans: list[tuple[object, object]] = [(0, 10), ("noon", 30), (100, 110), (200, 210)]
    assert resume_point(spans, keep=1, open_age=0, margin=0) is None


# --------------------------------------------------------------------------
# An engine started after the resume point
# --------------------------------------------------------------------------


def _resumed(open_tools: tuple[str, ...] = ()) -> SessionSpans:
    """An engine resumed after two spans, "before-1" and "before-2", the second
    still open if `open_tools` names its tool; events from ts 1000 on."""
    spans = SessionSpans(journal_events=8)
    spans.resume_after(["before-1", "before-2"], 2, (999, 2**64), open_tools)
    return spans


def _ev(kind: K, ts: int, seq: int, **kw: Any) -> Event:
    return Event("s", seq, ts, kind, **kw)


def test_a_resumed_engine_gives_up_on_an_event_naming_a_span_from_before() -> None:
    spans = _resumed()
    with pytest.raises(RetiredSpanNeeded):
        spans.feed(_ev(K.TOOL_RESULT, 1000, 1, tool="Read", tool_call_id="before-2"))


def test_a_resumed_engine_gives_up_on_a_call_looking_for_a_span_without_one() -> None:
    """Stored rows do not tell whether a span had its call: one from before may match."""
    spans = _resumed()
    with pytest.raises(RetiredSpanNeeded):
        spans.feed(_ev(K.TOOL_CALL, 1000, 1, tool="Read"))


def test_a_resumed_engine_finds_open_spans_of_a_tool_only_where_none_was_left_open() -> None:
    post_hook = json.dumps({"hook_event_name": "PostToolUse", "tool_name": "Bash"})
    spans = _resumed(open_tools=("Bash",))
    with pytest.raises(RetiredSpanNeeded):
        spans.feed(_ev(K.HOOK, 1000, 1, payload=post_hook))
    # No Read span was left open before the point: a post hook of Read opens its own.
    spans = _resumed(open_tools=("Bash",))
    spans.feed(_ev(K.HOOK, 1000, 1, payload=post_hook.replace("Bash", "Read")))
    assert [span.tool for span in spans.spans.values()] == ["Read"]
    assert spans.span_count == 3


def test_a_resumed_engine_gives_up_on_a_result_falling_back_on_the_latest_span() -> None:
    spans = _resumed()
    with pytest.raises(RetiredSpanNeeded):
        spans.feed(_ev(K.TOOL_RESULT, 1000, 1))
    # Once a span was opened after the point, that one is the latest.
    spans = _resumed()
    spans.feed(_ev(K.TOOL_CALL, 1000, 1, tool="Read", tool_call_id="after-1"))
    spans.feed(_ev(K.TOOL_RESULT, 1005, 2))
    assert spans.spans["after-1"].result_end_ms == 1005


# --------------------------------------------------------------------------
# A long realistic session in a store
# --------------------------------------------------------------------------

SESSION = "5e55a0b1-0000-4000-8000-000000000001"


@pytest.fixture(scope="module")
def session_rows() -> list[EventRow]:
    """About 8,000 rows: hooks, transcript tail and proxy, Tasks nested two deep."""
    return generate_session(SESSION, seed=7, tool_uses=1500, task_depth=2, payload_scale=0.01)


def _store_rebuilt_up_to(path: Path, rows: list[EventRow]) -> sqlite3.Connection:
    """A store holding `rows`, rebuilt in full once, as `spanwatch rebuild` leaves it
    (sessions in the order they first appear)."""
    conn = make_store(path)
    insert_rows(conn, (row._asdict() for row in rows))
    writer = open_store(path)
    ensure_schema(writer)
    for session_id in dict.fromkeys(row.session_id for row in rows):
        Rebuilder(writer).rebuild(session_id)
    writer.close()
    return conn


def _rebuild_without_cache(path: Path, session_id: str = SESSION) -> Any:
    """A daemon's first rebuild of the session (it has no state for it)."""
    conn = open_store(path)
    try:
        rebuilder = Rebuilder(conn, cache_sessions=8)
        result = rebuilder.rebuild(session_id)
        rebuilder.flush()
        return result
    finally:
        conn.close()


def _same_as_a_full_rebuild(path: Path, tmp_path: Path) -> None:
    differences = compare_spans(backup(path, tmp_path / "copy.db"))
    assert not differences, differences.describe()


def test_a_long_session_without_cached_state_is_resumed_from_its_latest_rows(
    tmp_path: Path, session_rows: list[EventRow]
) -> None:
    assert len(session_rows) > 7_000
    path = tmp_path / "events.db"
    split = len(session_rows) * 9 // 10
    conn = _store_rebuilt_up_to(path, session_rows[:split])
    insert_rows(conn, (row._asdict() for row in session_rows[split:]))
    result = _rebuild_without_cache(path)
    assert result.resumed and result.mode == "incremental" and not result.reread
    # The appended tenth and the rows since the resume point, not the whole session.
    assert result.rows_read < len(session_rows) // 4
    assert result.upserted > 0
    _same_as_a_full_rebuild(path, tmp_path)


def test_a_resumed_session_that_repeats_another_ones_span_ids_keeps_them_namespaced(
    tmp_path: Path, session_rows: list[EventRow]
) -> None:
    """An agent session resumed from an earlier one repeats its tool-call ids: the
    earlier session keeps the rows, the later one's spans are stored under
    `<session>/<id>` (DESIGN.md), resumed or not."""
    path = tmp_path / "events.db"
    later = "5e55a0b1-0000-4000-8000-000000000002"
    day_ms = 86_400_000
    repeated = [row._replace(session_id=later, ts_ms=row.ts_ms + day_ms) for row in session_rows]
    split = len(repeated) * 9 // 10
    conn = _store_rebuilt_up_to(path, [*session_rows, *repeated[:split]])
    namespaced = conn.execute(
        "SELECT count(*) FROM tool_spans WHERE session_id = ? AND span_id LIKE ?",
        (later, f"{later}/%"),
    ).fetchone()[0]
    assert namespaced > 100
    insert_rows(conn, (row._asdict() for row in repeated[split:]))
    result = _rebuild_without_cache(path, later)
    assert result.resumed and not result.reread
    assert result.collisions  # the new rows' spans too
    _same_as_a_full_rebuild(path, tmp_path)


def test_simulated_sessions_resumed_at_tight_points_get_the_rows_of_a_full_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hooks with and without ids, tail rows committed late, parallel calls, Tasks
    and interrupted tools, resumed at points with little or no margin: whatever
    the resume takes in or refuses, the rows equal a full read's."""
    monkeypatch.setattr(store_resume, "RESUME_MIN_ROWS", 1)
    monkeypatch.setattr(store_resume, "RESUME_TRIES", ((8, 0), (8, 30), (32, 30)))
    monkeypatch.setattr(store_resume, "RESUME_OPEN_AGE", 0)
    rebuilds = resumed = 0
    for seed in range(8):
        rows = generate_session(SESSION, seed=seed, tool_uses=200, payload_scale=0.01)
        path = tmp_path / f"events-{seed}.db"
        first, second = len(rows) // 2, len(rows) * 3 // 4
        conn = _store_rebuilt_up_to(path, rows[:first])
        for part in (rows[first:second], rows[second:]):
            insert_rows(conn, (row._asdict() for row in part))
            resumed += _rebuild_without_cache(path).resumed
            rebuilds += 1
            _same_as_a_full_rebuild(path, tmp_path)
            (tmp_path / "copy.db").unlink()
        conn.close()
    assert resumed >= rebuilds // 2  # 11 of 16 when written; the rest read in full


@pytest.mark.parametrize(
    "change",
    [
        # Another program deletes an early span: the stored spans no longer match
        # the watermark's count, and resuming would leave the row missing for good.
        "DELETE FROM tool_spans WHERE span_id = "
        "(SELECT span_id FROM tool_spans ORDER BY started_at_ms LIMIT 1)",
        # A row before the watermark is gone: the stored spans describe other rows.
        "DELETE FROM events WHERE id = 5",
    ],
    ids=["span deleted elsewhere", "row deleted"],
)
def test_a_session_whose_stored_state_does_not_hold_is_read_in_full(
    tmp_path: Path, session_rows: list[EventRow], change: str
) -> None:
    path = tmp_path / "events.db"
    split = len(session_rows) * 9 // 10
    conn = _store_rebuilt_up_to(path, session_rows[:split])
    conn.execute(change)
    insert_rows(conn, (row._asdict() for row in session_rows[split:]))
    result = _rebuild_without_cache(path)
    assert not result.resumed and result.mode == "full"
    _same_as_a_full_rebuild(path, tmp_path)


def test_a_new_row_for_a_span_before_the_resume_point_means_a_full_read(
    tmp_path: Path, session_rows: list[EventRow]
) -> None:
    path = tmp_path / "events.db"
    conn = _store_rebuilt_up_to(path, session_rows)
    (first_call,) = conn.execute(
        "SELECT tool_call_id FROM events "
        "WHERE kind = 'ToolCall' AND tool_call_id IS NOT NULL ORDER BY ts_ms LIMIT 1"
    ).fetchone()
    last_seq, last_ts = conn.execute("SELECT max(seq), max(ts_ms) FROM events").fetchone()
    # A result for the session's first tool call, long after: its span ends again.
    late = Event(SESSION, last_seq + 1, last_ts + 1000, K.TOOL_RESULT,
                 tool_call_id=first_call, tokens_out=7)  # fmt: skip
    insert_rows(conn, [event_row(late)])
    result = _rebuild_without_cache(path)
    assert result.reread and result.mode == "full" and not result.resumed
    _same_as_a_full_rebuild(path, tmp_path)
