"""Bad rows and bad schemas: fuzzed `events` rows, old and odd table shapes.

Two hypothesis fuzzes: `rebuild_store` on a fresh store per example, and one
long-running daemon that meets every example's rows as new sessions. Both must
keep going, skip and count exactly the rows DESIGN.md says to skip, and store
the spans the engine makes of the valid rows alone (`badrows`).
"""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import badrows
import fault_scenarios as scenarios
import pytest
from badrows import AFTER_2100_MS, I64_MAX, RawText, insert_raw
from faultkit import Daemon, problems_in_log, wait_caught_up
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spanwatch.store.rebuild_all import rebuild_store
from spanwatch.store.schema import SPAN_COLUMN_NAMES
from stores import make_store
from strategies import IDS, PAYLOADS, TOOLS, hook_payloads

ANY_VALUE: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=I64_MAX),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.binary(max_size=8),
    st.builds(RawText, st.binary(min_size=1, max_size=8)),  # TEXT that may not be UTF-8
    st.builds(  # a maybe tool hook as TEXT that may not be UTF-8 (or JSON)
        lambda tail: RawText(b'{"hook_event_name": "PostToolUse", "x": "' + tail + b'"}'),
        st.binary(min_size=1, max_size=3),
    ),
    st.sampled_from(["12", "1.5", " 7 ", "ToolCall"]),  # affinity turns some into numbers
)
TIMESTAMPS = st.one_of(
    st.integers(min_value=0, max_value=2_000_000_000_000),
    st.sampled_from([-1, -(2**63), 0, AFTER_2100_MS, I64_MAX, 2**53 + 1]),
)
BIG_PAYLOADS = st.one_of(
    st.integers(min_value=100_000, max_value=1_500_000).map(
        lambda n: '{"file_path": "/huge", "content": "' + "x" * n + '"}'
    ),
    st.sampled_from([126, 127, 128, 5000, 200_000]).map(
        lambda depth: '{"path": "/deep", "v": ' + "[" * depth + "]" * depth + "}"
    ),
)
COLUMNS_TO_BREAK = [c for c in badrows.COLUMNS if c != "session_id"]


@st.composite
def event_rows(draw: st.DrawFn, sessions: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of a few sessions: mostly well-formed tool uses, some columns of any type."""
    rows = []
    seqs = itertools.count(draw(st.integers(min_value=-5, max_value=5)))
    for _ in range(draw(st.integers(min_value=1, max_value=25))):
        kind = draw(st.sampled_from(["ToolCall", "ToolResult", "Hook", "Lifecycle", "Message"]))
        tool = draw(st.sampled_from([*TOOLS, None]))
        row: dict[str, Any] = {
            "session_id": draw(st.sampled_from(sessions)),
            "seq": next(seqs),
            "ts_ms": draw(TIMESTAMPS),
            "ts_exact": draw(st.sampled_from([0, 1, None])),
            "kind": kind,
            "source": draw(st.sampled_from(["Tail", "Hook", "Proxy", "Cursor"])),
            "tool": tool,
            "tool_call_id": draw(st.sampled_from([*IDS[:3], None])),  # shared by sessions
            "tokens_in": draw(st.one_of(st.none(), st.integers(-(2**40), 2**40))),
            "tokens_out": draw(st.one_of(st.none(), st.integers(0, 2**33))),
            "reasoning_tokens": draw(st.one_of(st.none(), st.integers(0, 100))),
            "cost_usd_e6": draw(st.one_of(st.none(), st.integers(-(2**63), I64_MAX))),
            "payload": draw(
                st.one_of(
                    hook_payloads(kind=draw(st.sampled_from(["pre", "post"])), tool=tool)
                    if kind in ("Hook", "Lifecycle")
                    else PAYLOADS,
                    BIG_PAYLOADS if draw(st.integers(0, 30)) == 0 else PAYLOADS,
                )
            ),
        }
        for column in draw(st.lists(st.sampled_from(COLUMNS_TO_BREAK), max_size=2)):
            row[column] = draw(ANY_VALUE)
        if draw(st.integers(0, 15)) == 0:  # a row no session can own
            row["session_id"] = draw(ANY_VALUE)
        rows.append(row)
    return rows


def insert_each(conn: sqlite3.Connection, rows: list[dict[str, Any]]) -> None:
    """Insert rows that the store's UNIQUE(session_id, seq) accepts (affinity may merge seqs)."""
    for row in rows:
        try:
            insert_raw(conn, [row])
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK")


def expected_spans(judged: list[badrows.Verdict], workdir: Path) -> badrows.CanonicalSpans:
    path = badrows.expected_store(judged, workdir / f"expected-{time.monotonic_ns()}.db")
    conn = sqlite3.connect(path)
    try:
        return badrows.canonical_spans(conn, SPAN_COLUMN_NAMES)
    finally:
        conn.close()


FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@settings(FUZZ, max_examples=200)
@given(rows=event_rows(("s1", "s2", "ünï")))
def test_rebuild_store_skips_counts_and_keeps_the_valid_rows(rows: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "events.db"
        conn = make_store(db, loose=True)
        insert_each(conn, rows)
        judged = badrows.verdicts(conn)
        conn.close()
        summary = rebuild_store(db, keep_results=True)
        conn = sqlite3.connect(db)
        got = badrows.canonical_spans(conn, SPAN_COLUMN_NAMES)
        conn.close()
        assert badrows.span_differences(got, expected_spans(judged, Path(scratch))) == []
        bad = {v.row_id: v for v in judged if not v.valid and v.session_id is not None}
        skipped = [row for result in summary.results for row in result.skipped]
        assert {row.row_id for row in skipped} == bad.keys()
        for row in skipped:
            assert row.row_id is not None and row.session_id == bad[row.row_id].session_id
            assert row.reason


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    """One daemon watching a loose store for the whole fuzz."""
    workdir = tmp_path_factory.mktemp("fuzz-daemon")
    db = workdir / "events.db"
    make_store(db, loose=True).close()
    daemon = Daemon(db, workdir / "daemon.log")
    assert daemon.wait_for("ready"), daemon.text()[-2000:]
    yield daemon, db
    assert daemon.alive, daemon.text()[-3000:]
    assert problems_in_log(daemon) == []
    daemon.close()


EXAMPLES = itertools.count()


@pytest.mark.slow
@settings(FUZZ, max_examples=50)
@given(data=st.data())
def test_a_running_daemon_skips_counts_and_keeps_the_valid_rows(
    watched: tuple[Daemon, Path], data: st.DataObject
) -> None:
    daemon, db = watched
    tag = f"x{next(EXAMPLES)}"
    sessions = (f"{tag}-a", f"{tag}-b")
    rows = data.draw(event_rows(sessions))
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        insert_each(conn, rows)
    finally:
        conn.close()
    assert wait_caught_up(db), daemon.text()[-3000:]
    assert daemon.alive, daemon.text()[-3000:]
    conn = sqlite3.connect(db)
    try:
        judged = [v for v in badrows.verdicts(conn) if v.session_id in sessions]
        got = badrows.canonical_spans(conn, SPAN_COLUMN_NAMES)
        counted = dict(conn.execute("SELECT session_id, skipped_rows FROM spanwatch_sessions"))
    finally:
        conn.close()
    want = expected_spans(judged, db.parent)
    assert badrows.span_differences(got, want, sessions) == []
    due = Counter(v.session_id for v in judged if not v.valid)
    assert {s: counted.get(s, 0) for s in due} == dict(due)
    logged = {line.get("row_id") for line in daemon.events("row skipped") if "seq" in line}
    assert {v.row_id for v in judged if not v.valid} <= logged


@pytest.mark.slow
def test_bad_rows_while_the_daemon_runs(tmp_path: Path) -> None:
    trial = scenarios.bad_rows(tmp_path, seed=3)
    assert trial.problems == [], trial.details
    assert trial.recovered and trial.details["bad_rows"] > 20


def test_events_without_optional_columns_or_with_extra_ones(tmp_path: Path) -> None:
    trials = scenarios.events_schemas(tmp_path)
    assert [t.problems for t in trials] == [[], []]
    assert all(t.recovered for t in trials)


def test_an_older_tool_spans_gains_its_columns_and_keeps_its_own(tmp_path: Path) -> None:
    trial = scenarios.old_tool_spans(tmp_path)
    assert trial.problems == []
    assert trial.recovered
