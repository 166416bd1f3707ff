"""The store layer on real SQLite files: reads, validation, writes, watermarks."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spanwatch.engine import Event, build_span_records
from spanwatch.engine.events import EventKind as K
from spanwatch.store import marks, session_state
from spanwatch.store.connection import open_store
from spanwatch.store.errors import StoreError
from spanwatch.store.full_read import READ_PART_ROWS
from spanwatch.store.rebuild import RETIRE_MIN_SPANS, Rebuilder
from spanwatch.store.rebuild_all import rebuild_store
from spanwatch.store.schema import SPAN_COLUMN_NAMES, ensure_schema
from spanwatch.store.spans import record_row
from stores import insert_events, insert_rows, make_store, path_rows, span_table
from strategies import event_streams


def pre(session: str, seq: int, ts: int, call_id: str, tool: str, **extra: object) -> Event:
    body = {"hook_event_name": "PreToolUse", "tool_name": tool, **extra}
    return Event(session, seq, ts, K.HOOK, tool_call_id=call_id, payload=json.dumps(body))


def post(session: str, seq: int, ts: int, call_id: str, tool: str) -> Event:
    body = {"hook_event_name": "PostToolUse", "tool_name": tool}
    return Event(session, seq, ts, K.HOOK, tool_call_id=call_id, payload=json.dumps(body))


def task_session(session: str, base: int = 1000, prefix: str = "") -> list[Event]:
    """A Task that runs a Read and an Edit inside it, then an interrupted Bash."""
    return [
        pre(session, 1, base, f"{prefix}task", "Task"),
        Event(session, 2, base + 1, K.TOOL_CALL, tool="Task", tool_call_id=f"{prefix}task",
              ts_exact=True, tokens_in=100, tokens_out=20, cost_usd_e6=500),
        pre(session, 3, base + 10, f"{prefix}read", "Read", tool_input={"file_path": "/src/a.py"}),
        post(session, 4, base + 20, f"{prefix}read", "Read"),
        Event(session, 5, base + 30, K.TOOL_CALL, tool="Edit", tool_call_id=f"{prefix}edit",
              ts_exact=True, tokens_in=7, cost_usd_e6=30,
              payload=json.dumps({"target_file": "/src/b.py"})),
        Event(session, 6, base + 40, K.TOOL_RESULT, tool_call_id=f"{prefix}edit", ts_exact=True),
        post(session, 7, base + 100, f"{prefix}task", "Task"),
        Event(session, 8, base + 200, K.MESSAGE, payload='{"text":"hi"}'),
        Event(session, 9, base + 300, K.TOOL_CALL, tool="Bash", tool_call_id=f"{prefix}bash"),
    ]  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, sqlite3.Connection]:
    path = tmp_path / "events.db"
    return path, make_store(path)


def expected_rows(events: list[Event]) -> dict[str, tuple[object, ...]]:
    return {r.span_id: record_row(r) for r in build_span_records(events)}


def test_rebuild_writes_exactly_the_engine_rows_and_paths(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    path, conn = store
    events = task_session("s1") + task_session("s2", prefix="b-")
    insert_events(conn, events)
    summary = rebuild_store(path)
    assert summary.sessions == 2
    assert summary.skipped_rows == 0
    want = expected_rows(task_session("s1")) | expected_rows(task_session("s2", prefix="b-"))
    assert span_table(conn) == want
    assert path_rows(conn) == {
        ("read", "/src/a.py"), ("edit", "/src/b.py"),
        ("b-read", "/src/a.py"), ("b-edit", "/src/b.py"),
    }  # fmt: skip
    task = span_table(conn)["task"]
    assert task[SPAN_COLUMN_NAMES.index("subtree_cost_usd_e6")] == 530


def test_store_without_later_columns_reads_ts_exact_as_zero(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = make_store(path, later_columns=())
    insert_rows(conn, [
        {"session_id": "s", "seq": 1, "ts_ms": 10, "kind": "ToolCall", "source": "Tail",
         "tool": "Read", "payload": "{}"},
        {"session_id": "s", "seq": 2, "ts_ms": 30, "kind": "ToolResult", "source": "Tail",
         "tool": "Read", "payload": "{}"},
    ])  # fmt: skip
    assert rebuild_store(path).skipped_rows == 0
    (row,) = span_table(conn).values()
    assert row[0] == "s:1:10"  # no tool_call_id column: a synthetic id
    assert row[SPAN_COLUMN_NAMES.index("lead_time_ms")] is None  # not exact without ts_exact
    assert row[SPAN_COLUMN_NAMES.index("status")] == "done"


def test_older_tool_spans_table_gains_missing_columns_and_keeps_its_own(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    path, conn = store
    conn.execute(
        "CREATE TABLE tool_spans (span_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, "
        "tool TEXT, status TEXT NOT NULL, note TEXT)"
    )
    conn.execute("INSERT INTO tool_spans VALUES ('keep', 'other', 'Read', 'done', 'mine')")
    insert_events(conn, task_session("s1"))
    rebuild_store(path, ["s1"])
    columns = [row[1] for row in conn.execute("PRAGMA table_info(tool_spans)")]
    assert set(SPAN_COLUMN_NAMES) <= set(columns)
    assert "note" in columns
    assert conn.execute("SELECT note FROM tool_spans WHERE span_id = 'keep'").fetchone() == (
        "mine",
    )


def test_unchanged_session_is_not_written_again(store: tuple[Path, sqlite3.Connection]) -> None:
    path, conn = store
    insert_events(conn, task_session("s1"))
    rebuild_store(path)
    before = conn.execute("PRAGMA data_version").fetchone()[0]
    summary = rebuild_store(path, keep_results=True)
    assert [r.wrote for r in summary.results] == [False]
    assert conn.execute("PRAGMA data_version").fetchone()[0] == before


def test_changed_span_rewrites_only_that_span(store: tuple[Path, sqlite3.Connection]) -> None:
    path, conn = store
    insert_events(conn, task_session("s1"))
    rebuild_store(path)
    insert_events(conn, [Event("s1", 10, 1400, K.TOOL_RESULT, tool_call_id="bash")])
    (result,) = rebuild_store(path, keep_results=True).results
    assert result.upserted == 1
    assert span_table(conn)["bash"][SPAN_COLUMN_NAMES.index("status")] == "done"


def test_path_rows_another_program_changed_are_put_right_by_a_rebuild(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    # The reference deletes and re-inserts every span's path rows; a stray row
    # or a missing one must not outlive a rebuild of its session.
    path, conn = store
    insert_events(conn, task_session("s1"))
    rebuild_store(path)
    want = path_rows(conn)
    conn.execute("INSERT INTO tool_span_paths VALUES ('read', '/stray.py')")
    conn.execute("DELETE FROM tool_span_paths WHERE span_id = 'edit'")
    conn.execute("INSERT INTO tool_span_paths VALUES ('task', CAST(x'ff' AS TEXT))")
    assert path_rows_as_bytes(conn) != {(a.encode(), b.encode()) for a, b in want}
    (result,) = rebuild_store(path, keep_results=True).results
    assert result.upserted == 3  # read, edit, task: their rows again, and their paths
    assert path_rows(conn) == want


def path_rows_as_bytes(conn: sqlite3.Connection) -> set[tuple[bytes, bytes]]:
    rows = conn.execute("SELECT CAST(span_id AS BLOB), CAST(path AS BLOB) FROM tool_span_paths")
    return set(rows.fetchall())


def test_shared_span_id_first_session_keeps_it_newcomer_is_namespaced(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    path, conn = store
    insert_events(conn, task_session("old"))
    insert_events(conn, task_session("resumed", base=5000))
    summary = rebuild_store(path, keep_results=True)
    spans = span_table(conn)
    session = SPAN_COLUMN_NAMES.index("session_id")
    assert spans["task"][session] == "old"
    assert spans["resumed/task"][session] == "resumed"
    assert spans["resumed/task"][SPAN_COLUMN_NAMES.index("tool_call_id")] == "task"
    parent = SPAN_COLUMN_NAMES.index("parent_span_id")
    assert spans["resumed/read"][parent] == "resumed/task"
    assert spans["read"][parent] == "task"
    assert ("resumed/read", "/src/a.py") in path_rows(conn)
    collisions = {r.session_id: r.collisions for r in summary.results}
    assert ("task", "old") in collisions["resumed"]
    # Rebuilding again changes nothing: ownership is stable.
    assert rebuild_store(path).spans_written == 0


BAD_VALUES = [
    ("seq", None, "seq is NULL"),
    ("ts_ms", "noon", "ts_ms is TEXT, expected INTEGER"),
    ("ts_ms", -5, "ts_ms is negative (-5)"),
    ("ts_ms", 1.5, "ts_ms is REAL, expected INTEGER"),
    ("kind", None, "kind is NULL"),
    ("source", b"\x00", "source is BLOB, expected TEXT"),
    ("tool", 7, None),  # TEXT affinity turns 7 into '7': a valid row
    ("tokens_in", "many", "tokens_in is TEXT, expected INTEGER"),
    ("cost_usd_e6", 2.5, "cost_usd_e6 is REAL, expected INTEGER"),
    ("payload", None, "payload is NULL"),
    ("payload", b"{}", "payload is BLOB, expected TEXT"),
    ("ts_exact", "yes", "ts_exact is TEXT, expected INTEGER"),
]


@pytest.mark.parametrize(("column", "value", "reason"), BAD_VALUES)
def test_bad_row_is_skipped_with_reason_and_everything_else_rebuilt(
    tmp_path: Path, column: str, value: object, reason: str | None
) -> None:
    path = tmp_path / "bad.db"
    conn = make_store(path, loose=True)
    insert_events(conn, task_session("good"))
    insert_events(conn, task_session("mixed", prefix="m-"))
    bad = {"session_id": "mixed", "seq": 99, "ts_ms": 1150, "kind": "ToolCall",
           "source": "Tail", "tool": "Grep", "tool_call_id": "bad", "payload": "{}"}  # fmt: skip
    bad[column] = value
    insert_rows(conn, [bad])
    summary = rebuild_store(path, keep_results=True)
    skipped = [row for r in summary.results for row in r.skipped]
    if reason is None:
        assert skipped == []
        assert "bad" in span_table(conn)
        return
    assert [(s.session_id, s.seq, s.reason) for s in skipped] == [
        ("mixed", value if column == "seq" else 99, reason)
    ]
    assert summary.skipped_rows == 1
    spans = span_table(conn)
    assert "bad" not in spans
    assert {"task", "read", "edit", "bash", "m-task", "m-read", "m-edit", "m-bash"} <= set(spans)


def test_invalid_utf8_text_skips_only_that_row(store: tuple[Path, sqlite3.Connection]) -> None:
    path, conn = store
    insert_events(conn, task_session("s1"))
    conn.execute(
        "INSERT INTO events (session_id, seq, ts_ms, kind, source, tool, payload) "
        "VALUES ('s1', 50, 1050, 'ToolCall', 'Tail', 'Read', CAST(X'7B2280FF223A317D' AS TEXT))"
    )
    conn.execute(
        "INSERT INTO events (session_id, seq, ts_ms, kind, source, tool, payload) "
        "VALUES ('s1', 51, 1051, 'ToolCall', 'Tail', 'Glob', 'text, not json')"
    )
    summary = rebuild_store(path, keep_results=True)
    (result,) = summary.results
    assert [(s.seq, s.reason) for s in result.skipped] == [(50, "payload is not valid UTF-8")]
    assert "s1:51:1051" in span_table(conn)  # not JSON is fine: a null payload


def test_token_outside_u32_reads_as_null_and_is_noted(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    path, conn = store
    insert_events(conn, [
        Event("s", 1, 10, K.TOOL_CALL, tool="Read", tool_call_id="a", tokens_in=2**32,
              tokens_out=5),
        Event("s", 2, 20, K.TOOL_CALL, tool="Read", tool_call_id="b", tokens_in=-1,
              tokens_out=2**32 - 1),
    ])  # fmt: skip
    (result,) = rebuild_store(path, keep_results=True).results
    assert [(n.seq, n.column, n.value) for n in result.token_notes] == [
        (1, "tokens_in", 2**32),
        (2, "tokens_in", -1),
    ]
    spans = span_table(conn)
    tokens_in = SPAN_COLUMN_NAMES.index("tokens_in")
    tokens_out = SPAN_COLUMN_NAMES.index("tokens_out")
    assert (spans["a"][tokens_in], spans["a"][tokens_out]) == (None, 5)
    assert (spans["b"][tokens_in], spans["b"][tokens_out]) == (None, 2**32 - 1)


@pytest.mark.parametrize(
    "payload",
    [
        "[" * 10_000 + "]" * 10_000,
        json.dumps({"file_path": "/big", "out": "x" * 20_000_000}),
        "not json at all",
    ],
    ids=["nested-10000", "20MB", "not-json"],
)
def test_hostile_payloads_do_not_stop_the_rebuild(
    store: tuple[Path, sqlite3.Connection], payload: str
) -> None:
    path, conn = store
    insert_events(conn, task_session("s1"))
    insert_events(conn, [Event("s1", 60, 1060, K.TOOL_CALL, tool="Read", tool_call_id="x",
                               payload=payload)])  # fmt: skip
    summary = rebuild_store(path)
    assert summary.skipped_rows == 0
    paths = [p for s, p in path_rows(conn) if s == "x"]
    assert paths == (["/big"] if payload.startswith("{") else [])


def test_rows_without_text_session_id_are_never_read(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    path, conn = store
    insert_events(conn, task_session("s1"))
    conn.execute(
        "INSERT INTO events (session_id, seq, ts_ms, kind, source, payload) "
        "VALUES (X'00', 1, 1, 'ToolCall', 'Tail', '{}')"
    )
    summary = rebuild_store(path)
    assert summary.sessions == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no store at"),
        (b"this is not sqlite, just text\n" * 10, "is not a SQLite database"),
        (b"", "has no `events` table"),
    ],
)
def test_unusable_store_gives_one_line_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "store.db"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StoreError, match=message):
        open_store(path)


# Incremental rebuilds: the daemon's cache must give the rows a full rebuild gives.


def rebuilder(path: Path, retire_min_spans: int = RETIRE_MIN_SPANS) -> Rebuilder:
    conn = open_store(path)
    ensure_schema(conn)
    return Rebuilder(conn, cache_sessions=8, retire_min_spans=retire_min_spans)


def test_appended_rows_are_read_incrementally_and_match_a_full_rebuild(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    path, conn = store
    events = task_session("s1")
    insert_events(conn, events[:4])
    rb = rebuilder(path)
    assert rb.rebuild("s1").mode == "full"
    insert_events(conn, events[4:])
    result = rb.rebuild("s1")
    assert result.mode == "incremental"
    assert result.rows_read == len(events) - 4
    assert span_table(conn) == expected_rows(events)


@pytest.mark.parametrize(
    ("journal", "moved_ts", "outcome"),
    [
        (None, None, ("incremental", True)),  # only the events after the late row are read again
        (2, None, ("full", False)),  # later than the journal reaches: the session is read whole
        (None, 1250, ("full", False)),  # a row to read again moved meanwhile (a writer's upsert)
    ],
    ids=["rewound", "beyond-the-journal", "rows-changed"],
)
def test_a_row_sorting_before_seen_rows(
    store: tuple[Path, sqlite3.Connection],
    monkeypatch: pytest.MonkeyPatch,
    journal: int | None,
    moved_ts: int | None,
    outcome: tuple[str, bool],
) -> None:
    """The transcript tail commits after the hooks: its rows sort before rows
    already fed. The engine undoes what followed and takes them in, unless its
    journal does not reach back that far or those rows changed since."""
    if journal is not None:
        monkeypatch.setattr(session_state, "JOURNAL_EVENTS", journal)
    path, conn = store
    events = task_session("s1")
    insert_events(conn, events)
    rb = rebuilder(path)
    rb.rebuild("s1")
    if moved_ts is not None:
        conn.execute("UPDATE events SET ts_ms = ? WHERE session_id = 's1' AND seq = 9", (moved_ts,))
        events = [e if e.seq != 9 else replace(e, ts_ms=moved_ts) for e in events]
    early = Event("s1", 100, 1005, K.TOOL_CALL, tool="Glob", tool_call_id="early")
    insert_events(conn, [early])
    result = rb.rebuild("s1")
    assert (result.mode, result.rewound) == outcome
    if result.rewound:
        assert result.rows_read == 1
    in_load_order = sorted([*events, early], key=lambda e: (e.ts_ms, e.seq))
    assert span_table(conn) == expected_rows(in_load_order)
    assert rb.rebuild("s1").mode == "incremental"  # nothing new: nothing read


def test_a_rewind_deletes_the_spans_the_late_row_makes_vanish(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    """A call without id opened a span of its own; a pre hook of its tool that
    arrives late but sorts before it takes the call in, and the call's own span
    must go from the table."""
    path, conn = store
    call = Event("s1", 2, 300, K.TOOL_CALL, tool="Read", payload='{"file_path": "/a"}')
    insert_events(conn, [call])
    rb = rebuilder(path)
    rb.rebuild("s1")
    assert list(span_table(conn)) == ["s1:2:300"]
    hook = Event(
        "s1", 1, 200, K.HOOK, payload='{"hook_event_name": "PreToolUse", "tool_name": "Read"}'
    )
    insert_events(conn, [hook])
    result = rb.rebuild("s1")
    assert result.rewound and result.deleted == 1
    assert span_table(conn) == expected_rows([hook, call])
    assert list(span_table(conn)) == ["s1:1:200"]
    assert path_rows(conn) == {("s1:1:200", "/a")}


def test_deleted_rows_and_vanished_sessions_are_noticed(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    path, conn = store
    insert_events(conn, task_session("s1"))
    insert_events(conn, task_session("s2", prefix="b-"))
    rb = rebuilder(path)
    rb.rebuild("s1")
    rb.rebuild("s2")
    conn.execute("DELETE FROM events WHERE session_id = 's1' AND seq = 9")
    assert rb.rebuild("s1").mode == "full"
    assert "bash" not in span_table(conn)
    conn.execute("DELETE FROM events WHERE session_id = 's2'")
    result = rb.rebuild("s2")
    assert result.mode == "vanished"
    assert not any(k.startswith("b-") for k in span_table(conn))
    assert conn.execute("SELECT count(*) FROM spanwatch_sessions").fetchone() == (1,)
    assert not any(s.startswith("b-") for s, _ in path_rows(conn))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), events=event_streams(max_events=50))
def test_cached_rebuilds_after_each_write_leave_the_table_a_fresh_rebuild_leaves(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, events: list[Event]
) -> None:
    """Rows arrive in chunks, sometimes out of order; after each chunk the daemon's
    cached rebuild must leave exactly what a one-shot rebuild of a copy leaves,
    watermarks and span counts included, also when it retires spans as it goes
    (a short journal lets it retire early)."""
    directory = tmp_path_factory.mktemp("cached")
    path = directory / "events.db"
    conn = make_store(path)
    arrival = data.draw(st.permutations(events)) if data.draw(st.booleans()) else events
    cuts = sorted(data.draw(st.lists(st.integers(0, len(arrival)), max_size=8)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(session_state, "JOURNAL_EVENTS", data.draw(st.sampled_from([2, 8, 64])))
        rb = rebuilder(path, retire_min_spans=data.draw(st.sampled_from([1, 64])))
        previous = 0
        for cut in [*cuts, len(arrival)]:
            insert_events(conn, arrival[previous:cut])
            previous = cut
            if cut:
                rb.rebuild(events[0].session_id)
    if not events:
        return
    incremental = span_table(conn), path_rows(conn), span_counts(conn)
    fresh_path = directory / "fresh.db"
    fresh = make_store(fresh_path)
    insert_events(fresh, arrival)
    rebuild_store(fresh_path)
    assert incremental == (span_table(fresh), path_rows(fresh), span_counts(fresh))


def span_counts(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT session_id, span_count, row_count FROM spanwatch_sessions ORDER BY session_id"
    ).fetchall()


def read_calls(session: str, uses: range, base: int = 1000) -> list[Event]:
    """Read calls one after another, each with its result: all finished at once."""
    events = []
    for n in uses:
        call_id = f"read-{n}"
        events += [
            Event(session, 2 * n, base + 10 * n, K.TOOL_CALL, tool="Read", tool_call_id=call_id,
                  tokens_in=n, payload=json.dumps({"file_path": f"/src/{n}.py"})),
            Event(session, 2 * n + 1, base + 10 * n + 5, K.TOOL_RESULT, tool_call_id=call_id),
        ]  # fmt: skip
    return events


def test_a_cached_session_keeps_only_its_recent_spans_in_memory(
    store: tuple[Path, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finished spans older than the journal are retired as the session grows;
    their rows, and the session's span count, stay as a full rebuild has them."""
    monkeypatch.setattr(session_state, "JOURNAL_EVENTS", 8)
    path, conn = store
    rb = rebuilder(path, retire_min_spans=16)
    events: list[Event] = []
    for chunk in range(10):
        new = read_calls("s1", range(chunk * 20, chunk * 20 + 20))
        insert_events(conn, new)
        events += new
        assert rb.rebuild("s1").mode == ("full" if chunk == 0 else "incremental")
        assert span_table(conn) == expected_rows(events)
    assert rb.cached_spans < 40  # of 200
    assert span_counts(conn) == [("s1", 200, 400)]


def test_a_row_that_needs_a_retired_span_means_a_full_read(
    store: tuple[Path, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result for a span retired long ago (a tail that lagged far behind, with
    its own late timestamp): the session is read again, and its rows are right."""
    monkeypatch.setattr(session_state, "JOURNAL_EVENTS", 8)
    path, conn = store
    events = read_calls("s1", range(100))
    insert_events(conn, events)
    rb = rebuilder(path, retire_min_spans=16)
    rb.rebuild("s1")
    assert rb.cached_spans < 20
    late = Event("s1", 1000, 9000, K.TOOL_RESULT, tool_call_id="read-3", tokens_out=99)
    insert_events(conn, [late])
    result = rb.rebuild("s1")
    assert (result.mode, result.reread) == ("full", True)
    assert span_table(conn) == expected_rows([*events, late])
    assert span_table(conn)["read-3"] != expected_rows(events)["read-3"]


def test_rows_deleted_while_others_arrive_are_caught_by_the_reconcile(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    """Appends are read without counting the whole session; a deletion in between
    leaves the mark off, the reconcile sees that, and the next rebuild reads in full."""
    path, conn = store
    events = task_session("s1")
    insert_events(conn, events[:-1])
    rb = rebuilder(path)
    rb.rebuild("s1")
    conn.execute("DELETE FROM events WHERE session_id = 's1' AND seq = 3")  # the Read's pre hook
    insert_events(conn, events[-1:])
    assert rb.rebuild("s1").mode == "incremental"
    assert list(marks.stale_sessions(rb.conn)) == ["s1"]
    assert rb.rebuild("s1").mode == "full"
    assert list(marks.stale_sessions(rb.conn)) == []
    remaining = [e for e in events if e.seq != 3]
    assert span_table(conn) == expected_rows(remaining)


def test_writes_wait_for_company_at_most_write_batch_s(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    """Sessions rebuilt in one batch share a transaction, but one that waited
    `write_batch_s` is committed without waiting for the rest of the batch."""
    path, conn = store
    for n in range(3):
        insert_events(conn, task_session(f"s{n}", prefix=f"{n}-"))
    sharing = Rebuilder(rebuilder(path).conn, write_batch_rows=10_000)
    for n in range(3):
        sharing.rebuild(f"s{n}")
    assert (sharing.commits, count_spans(conn)) == (0, 0)  # all still queued
    sharing.flush()
    assert sharing.commits == 1
    conn.execute("DELETE FROM tool_spans")
    conn.execute("DELETE FROM spanwatch_sessions")
    prompt = Rebuilder(rebuilder(path).conn, write_batch_rows=10_000, write_batch_s=0.0)
    prompt.rebuild("s0")
    assert prompt.commits == 1  # written before the batch ends
    assert count_spans(conn) == len(expected_rows(task_session("s0")))
    for n in (1, 2):
        prompt.rebuild(f"s{n}")
    prompt.flush()
    assert prompt.commits == 3


def count_spans(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM tool_spans").fetchone()[0])


def test_the_span_budget_drops_the_least_recently_rebuilt_sessions_first(
    store: tuple[Path, sqlite3.Connection],
) -> None:
    """`cache_max_spans`: past it, the sessions rebuilt longest ago leave memory;
    the next change to one of them reads it in full, the others stay incremental."""
    path, conn = store
    for n in range(3):
        insert_events(conn, task_session(f"s{n}", prefix=f"{n}-"))
    per_session = len(expected_rows(task_session("s0")))
    rb = Rebuilder(rebuilder(path).conn, cache_sessions=8, cache_spans=2 * per_session)
    for n in range(3):
        rb.rebuild(f"s{n}")  # s0 leaves memory when s2 comes in
    for n in range(3):
        late = Event(f"s{n}", 50, 5000, K.MESSAGE, payload="{}")
        insert_events(conn, [late])
    assert [rb.rebuild(f"s{n}").mode for n in (1, 2, 0)] == ["incremental", "incremental", "full"]


def test_a_long_session_read_whole_is_read_a_part_at_a_time(
    store: tuple[Path, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session of more than READ_PART_ROWS rows is never fetched with all its
    payloads at once, on its first read nor when a late row sends a cached one
    back to its start; its rows are those of a full rebuild either way."""
    monkeypatch.setattr(session_state, "JOURNAL_EVENTS", 8)
    path, conn = store
    events = read_calls("s1", range(400))  # 800 rows
    assert len(events) > READ_PART_ROWS
    insert_events(conn, events)
    rb = rebuilder(path)
    statements: list[str] = []
    rb.conn.set_trace_callback(statements.append)

    def payload_reads(where: str) -> list[str]:
        return [s for s in statements if "typeof(payload)" in s and f"FROM events {where}" in s]

    def whole_reads() -> list[str]:  # not the read of the rows appended since (`id >`)
        return [s for s in payload_reads("WHERE session_id") if "AND id >" not in s]

    def part_reads() -> list[str]:
        return payload_reads("WHERE id IN")

    assert rb.rebuild("s1").mode == "full"
    assert (len(whole_reads()), len(part_reads())) == (0, 2)
    assert span_table(conn) == expected_rows(events)
    statements.clear()
    late = Event("s1", 5000, 1003, K.TOOL_CALL, tool="Grep", tool_call_id="late",
                 payload='{"path": "/src/late.py"}')  # fmt: skip
    insert_events(conn, [late])  # sorts before all but the first span: beyond the journal
    assert rb.rebuild("s1").mode == "full"
    assert (len(whole_reads()), len(part_reads())) == (0, 2)
    assert span_table(conn) == expected_rows([*events, late])
