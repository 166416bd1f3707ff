"""How a rebuild hands sessions to its worker processes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from spanwatch.engine import Event, SessionSpans, SpanTree
from spanwatch.store import marks
from spanwatch.store.connection import open_store
from spanwatch.store.events import load_session_rows
from spanwatch.store.prepare import (
    PreparedSession,
    _handout_order,
    _prepare_chunk,
    prepare_session,
    start_workers,
)
from spanwatch.store.schema import EventsShape, events_shape
from spanwatch.store.spans import built_rows, record_row
from stores import insert_events, insert_rows, make_store
from strategies import event_streams
from test_store_rebuild import task_session


def test_long_chunks_are_handed_out_first_the_rest_in_order() -> None:
    chunks = [["a"], ["b"], ["c"], ["d"], ["e"]]
    sizes = {"a": 10, "b": 5_000, "c": 10, "d": 900, "e": 10}
    assert _handout_order(chunks, sizes) == [1, 3, 0, 2, 4]


def test_without_sizes_chunks_go_in_order() -> None:
    assert _handout_order([["a"], ["b"], ["c"]], {}) == [0, 1, 2]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_streams(max_events=60))
def test_built_rows_are_the_rows_of_the_records(events: list[Event]) -> None:
    """`built_rows` skips making records; its rows must be those the records give."""
    spans = SessionSpans()
    spans.feed_all(events)
    tree = SpanTree()
    tree.update(spans.spans, ())
    expected = [(record_row(record), record.paths) for record in tree.records()]
    assert built_rows(tree) == expected
    assert [type(v) for row, _ in built_rows(tree) for v in row] == [
        type(v) for row, _ in expected for v in row
    ]


def _row(session_id: str, seq: object, ts_ms: object = 1000) -> dict[str, object]:
    return {"session_id": session_id, "seq": seq, "ts_ms": ts_ms, "kind": "ToolCall",
            "source": "Tail", "payload": "{}"}  # fmt: skip


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [_row("s", -5), _row("s", -9)],
        [_row("s", 30), _row("s", 70, ts_ms="noon")],
        [_row("s", 30), _row("s", "7b")],
        [_row("s", 30), _row("s", 2.5)],
        [_row("s", 30), _row("s", None)],
        [_row("s", 30), {**_row("s", 40), "payload": b"\xff"}],
    ],
    ids=["absent", "negative seqs", "bad ts", "text seq", "real seq", "null seq", "bad payload"],
)
def test_a_prepared_sessions_watermark_is_the_one_sql_reads(
    tmp_path: Path, rows: list[dict[str, object]]
) -> None:
    """The watermark written with a worker's spans is SQL's count(*), max(seq), max(id)."""
    conn = make_store(tmp_path / "events.db", loose=True)
    insert_events(conn, task_session("other", base=10))
    insert_events(conn, task_session("s", base=1000))
    insert_rows(conn, rows)
    insert_events(conn, task_session("third", base=5000, prefix="later-"))
    store = open_store(tmp_path / "events.db", readonly=True)
    for session_id in ("s", "other", "third", "absent"):
        prepared = prepare_session(store, events_shape(store), session_id)
        assert prepared.mark == marks.live_mark(store, session_id)


#: A maybe tool hook whose payload is not UTF-8 (and not JSON, once it is not).
_BAD_HOOK = b'{"hook_event_name": "PostToolUse", "tool_name": "Read", "out": "\xc3\x28"}'
#: A tool hook whose payload is UTF-8 but not ASCII: left to the parse, and kept.
_GOOD_HOOK = (
    '{"hook_event_name": "PreToolUse", "tool_name": "Read", "tool_input": {"file_path": "/é"}}'
)


@pytest.mark.parametrize("type_problem", [False, True], ids=["only payloads", "and a text seq"])
def test_a_hook_payload_that_is_not_utf8_is_skipped_as_on_reading(
    tmp_path: Path, type_problem: bool
) -> None:
    """A worker leaves maybe-tool-hook payloads to the engine's parse to check (orjson
    parses only UTF-8). One that is not UTF-8 is skipped all the same: in its place
    among the skipped rows, without its token notes, with the spans and the
    watermark of a session read with every payload checked."""
    conn = make_store(tmp_path / "events.db", loose=True)
    insert_events(conn, task_session("s", base=1000))
    raw = [  # (seq, kind, tool_call_id, tokens_in, payload bytes stored as TEXT)
        (20, "Hook", "h1", 2**40, _BAD_HOOK),
        (21, "ToolCall", "c1", None, b'{"x": "\xff"}'),
        (22, "PostToolUse", "h2", 5, _BAD_HOOK),
        (23, "Hook", "h3", 2**33, _GOOD_HOOK.encode()),
        (24, "Hook", "h4", None, _BAD_HOOK),
    ]
    conn.executemany(
        "INSERT INTO events (session_id, seq, ts_ms, kind, source, tool_call_id, tokens_in, "
        "payload) VALUES ('s', ?, ?, ?, 'Hook', ?, ?, CAST(? AS TEXT))",
        [(seq, 1000 + seq, kind, call, tokens, text) for seq, kind, call, tokens, text in raw],
    )
    if type_problem:
        insert_rows(conn, [_row("s", "7b")])
    conn.commit()
    store = open_store(tmp_path / "events.db", readonly=True)
    shape = events_shape(store)

    prepared = prepare_session(store, shape, "s")

    checked = load_session_rows(store, shape, "s")
    expected_seqs: list[object] = [20, 21, 22, 24] + (["7b"] if type_problem else [])
    assert [row.seq for row in checked.skipped] == expected_seqs
    assert prepared.skipped == checked.skipped
    assert prepared.token_notes == checked.token_notes
    assert [note.seq for note in prepared.token_notes] == [23]
    assert prepared.mark == marks.live_mark(store, "s")
    spans = SessionSpans()
    spans.feed_all(checked.events)
    tree = SpanTree()
    tree.update(spans.spans, ())
    assert prepared.rows == built_rows(tree)
    assert "h3" in prepared.span_ids


@pytest.fixture(scope="module")
def worker() -> Iterator[ProcessPoolExecutor]:
    """A real worker process: it opens stores through apsw, which this process must not."""
    pool = start_workers(1)
    yield pool
    pool.shutdown()


def in_worker(
    pool: ProcessPoolExecutor, path: Path, shape: EventsShape, session_ids: list[str]
) -> list[PreparedSession | str]:
    return pool.submit(_prepare_chunk, str(path), 5000, shape, session_ids).result()


def test_a_worker_prepares_a_session_as_this_process_does_or_leaves_it_here(
    tmp_path: Path, worker: ProcessPoolExecutor
) -> None:
    """A worker reads through apsw. It leaves to the calling process the sessions
    that need the sqlite3 module's lenient reading (TEXT that is not UTF-8) or
    SQL's watermark (a row skipped on reading); it prepares every other one,
    hook payloads that are not UTF-8 included, as `prepare_session` does."""
    conn = make_store(tmp_path / "events.db", loose=True)
    for n, session_id in enumerate(["plain", "bad hook", "text seq", "bad tool", "bad payload"]):
        insert_events(conn, task_session(session_id, base=1000 * (n + 1), prefix=f"{n}-"))
    insert_rows(conn, [_row("text seq", "7b")])
    conn.executemany(
        "INSERT INTO events (session_id, seq, ts_ms, kind, source, tool_call_id, tokens_in, "
        "payload) VALUES (?, ?, ?, 'Hook', 'Hook', ?, ?, CAST(? AS TEXT))",
        [("bad hook", 20, 2020, "h1", 2**40, _BAD_HOOK), ("bad hook", 23, 2023, "h3", 2**33,
         _GOOD_HOOK.encode())],
    )  # fmt: skip
    for session_id, column in (("bad tool", "tool"), ("bad payload", "payload")):
        conn.execute(  # TEXT that is not UTF-8
            f"INSERT INTO events (session_id, seq, ts_ms, kind, source, {column}) "
            "VALUES (?, 30, 2030, 'ToolCall', 'Tail', CAST(X'7bff7d' AS TEXT))",
            (session_id,),
        )
    conn.commit()
    store = open_store(tmp_path / "events.db", readonly=True)
    shape = events_shape(store)
    session_ids = ["plain", "bad hook", "text seq", "bad tool", "bad payload", "absent"]

    results = in_worker(worker, tmp_path / "events.db", shape, session_ids)

    left = {"text seq", "bad tool", "bad payload"}
    assert results == [
        session_id if session_id in left else prepare_session(store, shape, session_id)
        for session_id in session_ids
    ]
    bad_hook = results[1]
    assert isinstance(bad_hook, PreparedSession)
    assert [row.seq for row in bad_hook.skipped] == [20]
    assert bad_hook.mark == marks.live_mark(store, "bad hook")
    assert bad_hook.span_ids  # its other rows were built


def test_a_worker_that_leaves_a_session_here_holds_no_snapshot(
    tmp_path: Path, worker: ProcessPoolExecutor
) -> None:
    """apsw gives up on TEXT that is not UTF-8 halfway through a statement; the
    worker must end it, or its snapshot would keep the store's log from
    being checkpointed for as long as the worker lives."""
    conn = make_store(tmp_path / "events.db", loose=True)
    conn.execute(  # the first row of the session whichever way it is read: rows follow it
        "INSERT INTO events (session_id, seq, ts_ms, kind, source, tool) "
        "VALUES ('s', -1, 900, 'ToolCall', 'Tail', CAST(X'ff' AS TEXT))"
    )
    insert_events(conn, task_session("s", base=1000))
    shape = events_shape(conn)
    assert in_worker(worker, tmp_path / "events.db", shape, ["s"]) == ["s"]

    insert_events(conn, task_session("t", base=5000))  # the log grows past the worker's read
    conn.execute("PRAGMA busy_timeout = 200")
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0


def test_a_store_error_in_a_worker_is_raised_as_the_sqlite3_module_raises_it(
    tmp_path: Path, worker: ProcessPoolExecutor
) -> None:
    """The CLI reports sqlite3 errors in one line (`cli.main`); apsw's are turned into one."""
    path = tmp_path / "events.db"
    make_store(path).close()
    shape = events_shape(sqlite3.connect(path))
    path.write_bytes(b"this is not a database" * 1000)
    with pytest.raises(sqlite3.DatabaseError, match=r"not a database.*rebuild worker"):
        in_worker(worker, path, shape, ["s"])
