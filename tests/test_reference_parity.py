"""The daemon's incremental path, the worker path and written payload texts against
the Rust reference.

tests/test_reference_rust.py compares one-shot rebuilds of fresh stores with
the reference. Here the rows spanwatch leaves are those of the paths that do
not start from an empty table: the daemon's store link fed rows in batches
(cached sessions extended by appended rows, full reads when rows arrive out
of order, sessions resumed from their stored spans after the cache is lost),
a rebuild over rows written before, and `rebuild --jobs 2` (worker
processes). Each must leave, column for column and storage class for storage
class, what the reference writes for the final events. And payload texts
written character by character (tests/payload_texts.py), hundreds to a store,
must give the paths and hook kinds the reference reads from them.

Hypothesis profiles: `parity-ci` (the default, what CI runs) keeps each test
to a few seconds; `SPANWATCH_PARITY_PROFILE=parity-deep` runs many more examples.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spanwatch.store.full_read as full_read_module
import spanwatch.store.resume as resume_module
from payload_texts import PayloadWriter
from reference_rust import (
    SpanDump,
    create_store,
    diff_dumps,
    dump_spans,
    insert_events,
    run_reference,
)
from spanwatch.daemon.store_link import StoreLink
from spanwatch.engine.events import Event
from spanwatch.store import session_state
from spanwatch.store.connection import open_store
from spanwatch.store.full_read import read_in_full
from spanwatch.store.rebuild import Rebuilder
from spanwatch.store.rebuild_all import PARALLEL_MIN_SESSIONS, rebuild_store
from spanwatch.store.schema import ensure_schema
from stores import event_row
from test_reference_rust import (
    CASES,
    Row,
    call,
    ev,
    reference,
    result,
    several_sessions,
    tied_intervals,
)

__all__ = ["reference"]  # the fixture, imported for the tests below

settings.register_profile(
    "parity-ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("parity-deep", settings.get_profile("parity-ci"), max_examples=500)
PARITY = settings.get_profile(os.environ.get("SPANWATCH_PARITY_PROFILE", "parity-ci"))


class _Log:
    """The store link's logger: problems are fine, a failed session is a test failure."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kw: None

    def exception(self, message: str, **kw: Any) -> None:
        raise AssertionError(f"{message}: {kw}")


def daemon_batches(db: Path, batches: Sequence[Sequence[Row]], journal: int | None = None) -> None:
    """Insert each batch, then do what the daemon does: rebuild the sessions it named.

    With `journal`, the engine journals that many events and retires spans as
    soon as it can (`engine.retire`), rather than from 64 events and spans on.
    """
    create_store(db)
    with pytest.MonkeyPatch.context() as patch:
        if journal is not None:
            patch.setattr(session_state, "JOURNAL_EVENTS", journal)
        link = StoreLink(
            db, log=_Log(), busy_timeout_ms=5000, write_retry_max_s=5, cache_sessions=8
        )
        if journal is not None:
            link.rebuilder.retire_min_spans = 1
        _feed_batches(link, batches)


def _feed_batches(link: StoreLink, batches: Sequence[Sequence[Row]]) -> None:
    db = link.path
    try:
        for batch in batches:
            insert_events(db, batch)
            assert link.changed()
            dirty = link.new_rows()
            report = link.rebuild(sorted(dirty))
            assert not report.failed and not report.busy
    finally:
        link.close()


def reference_of(directory: Path, rows: Sequence[Row]) -> SpanDump:
    db = directory / "reference.db"
    insert_events(db, rows)
    run_reference(db)
    expected = dump_spans(db)
    assert not tied_intervals(expected), "ill-formed case: the reference orders ties at random"
    return expected


def assert_same(expected: SpanDump, actual: SpanDump, rows: Sequence[Row]) -> None:
    differences = diff_dumps(expected, actual)
    assert not differences, "\n".join([*differences, "events:", *map(repr, rows)])


# --------------------------------------------------------------------------
# Stored rows that differ only where Python's hash cannot tell
# --------------------------------------------------------------------------


def test_cost_changed_from_minus_one_to_minus_two_by_an_appended_row_is_written(
    reference: Path, tmp_path: Path
) -> None:
    """hash(-1) == hash(-2) in CPython: a diff by tuple hash never wrote this change."""
    first = [call(1, 100, "Bash", "c1", cost_usd_e6=-1), result(2, 200, "Bash", "c1")]
    later = [result(3, 200, "Bash", "c1", cost_usd_e6=-2)]
    daemon_batches(tmp_path / "daemon.db", [first, later])
    assert_same(
        reference_of(tmp_path, first + later), dump_spans(tmp_path / "daemon.db"), first + later
    )


@pytest.mark.parametrize(
    ("column", "before", "after"),
    [("cost_usd_e6", -1, -2), ("cost_usd_e6", 3, 3 + 2**61 - 1), ("ts_ms", 5, 5 + 2**61 - 1)],
    ids=["cost-minus-one-minus-two", "cost-modulo-2**61-1", "start-modulo-2**61-1"],
)
def test_rebuild_over_stored_rows_rewrites_values_that_hash_alike(
    reference: Path, tmp_path: Path, column: str, before: int, after: int
) -> None:
    """A row changed in place, then `spanwatch rebuild`: the stored span must follow,
    even where the old and new values have equal Python hashes."""
    rows: list[Row] = [
        call(1, 1, "Task", "a", cost_usd_e6=0),
        call(2, 5, "Bash", "b", **{column: before}),
        result(3, 2**62 + 10, "Bash", "b"),
        result(4, 2**62 + 20, "Task", "a"),
    ]
    db = tmp_path / "store.db"
    insert_events(db, rows)
    rebuild_store(db)
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE events SET {column} = ? WHERE seq = 2", (after,))
    conn.close()
    rebuild_store(db)
    changed = [rows[0], call(2, 5, "Bash", "b", **{column: after}), *rows[2:]]
    assert_same(reference_of(tmp_path, changed), dump_spans(db), changed)


# --------------------------------------------------------------------------
# The daemon's batches, in and out of order
# --------------------------------------------------------------------------

#: Costs whose Python hashes collide (-1 and -2; n and n + 2**61 - 1).
COLLIDING_COSTS = st.sampled_from([None, -1, -2, 3, 3 + 2**61 - 1, 0])
#: Values of a storage class the reference cannot read in that column: it drops the row.
UNREADABLE = st.sampled_from(
    [
        ("tokens_in", 1.5),
        ("tokens_out", "many"),
        ("reasoning_tokens", b"\x01"),
        ("cost_usd_e6", 2.5),
        ("ts_exact", "yes"),
        ("ts_ms", 1.5),
        ("ts_ms", "noon"),
        ("tool", b"Read"),
        ("tool_call_id", b"toolu_01"),
        ("kind", b"ToolCall"),
        ("payload", b"{}"),
    ]
)


@st.composite
def batched_arrivals(
    draw: st.DrawFn, max_events: int = 40, late_rows: bool = False
) -> tuple[list[Row], list[list[Row]]]:
    """Several sessions' events, a few rows unreadable, arriving in batches, in order
    or shuffled; with `late_rows`, in order but for a few rows each held back a little."""
    rows: list[Row] = []
    for drawn in draw(several_sessions(max_events)):
        event = replace(drawn, cost_usd_e6=draw(COLLIDING_COSTS))
        if draw(st.integers(0, 15)) == 0:
            column, value = draw(UNREADABLE)
            rows.append(event_row(event) | {column: value})
        else:
            rows.append(event)
    if late_rows and rows:
        arrival = list(rows)
        for at in draw(st.lists(st.integers(0, len(rows) - 1), max_size=4)):
            arrival.insert(min(len(arrival), at + draw(st.integers(1, 8))), arrival.pop(at))
    else:
        arrival = draw(st.permutations(rows)) if draw(st.booleans()) else rows
    cuts = sorted(draw(st.lists(st.integers(0, len(arrival)), max_size=6)))
    batches, previous = [], 0
    for cut in [*cuts, len(arrival)]:
        if cut > previous:
            batches.append(list(arrival[previous:cut]))
        previous = cut
    return rows, batches


@PARITY
@given(arrival=batched_arrivals(), journal=st.sampled_from([None, 2, 6]))
def test_daemon_batches_leave_what_the_reference_writes(
    reference: Path, tmp_path_factory: pytest.TempPathFactory, arrival: Any, journal: int | None
) -> None:
    """Also with a short journal, so that the cached sessions retire spans early."""
    events, batches = arrival
    directory = tmp_path_factory.mktemp("batches")
    daemon_batches(directory / "daemon.db", batches, journal)
    assert_same(reference_of(directory, events), dump_spans(directory / "daemon.db"), events)


@PARITY
@given(
    arrival=batched_arrivals(max_events=80, late_rows=True),
    knobs=st.tuples(
        st.sampled_from([1, 2, 4]), st.sampled_from([0, 1, 3]), st.sampled_from([0, 2])
    ),
)
def test_sessions_resumed_from_stored_rows_leave_what_the_reference_writes(
    reference: Path,
    tmp_path_factory: pytest.TempPathFactory,
    arrival: Any,
    knobs: tuple[int, int, int],
) -> None:
    """A daemon that lost its cache before each batch (a restart, say): every
    session is resumed from its stored spans and the rows after a resume point
    (`store.resume`) wherever that checks out, with resume points as close to
    the stored times as can be (`knobs`: spans kept after it, margin, age of
    the open spans it must not pass), so that hidden calls and results,
    lookups and late rows reach back before them; else it is read in full."""
    keep, margin, open_age = knobs
    rows, batches = arrival
    directory = tmp_path_factory.mktemp("resumed")
    db = directory / "daemon.db"
    create_store(db)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resume_module, "RESUME_MIN_ROWS", 1)
        patch.setattr(resume_module, "RESUME_TRIES", ((keep, margin), (3 * keep, margin)))
        patch.setattr(resume_module, "RESUME_OPEN_AGE", open_age)
        link = StoreLink(
            db, log=_Log(), busy_timeout_ms=5000, write_retry_max_s=5, cache_sessions=8
        )
        try:
            for batch in batches:
                insert_events(db, batch)
                assert link.changed()
                dirty = link.new_rows()
                link.rebuilder.forget()
                report = link.rebuild(sorted(dirty))
                assert not report.failed and not report.busy
        finally:
            link.close()
    assert_same(reference_of(directory, rows), dump_spans(db), rows)


def _session_of(row: Row) -> str:
    return row.session_id if isinstance(row, Event) else str(row["session_id"])


@PARITY
@given(
    arrival=batched_arrivals(),
    part_rows=st.sampled_from([1, 2, 5]),
    long_reads=st.lists(st.booleans(), min_size=1, max_size=8),
)
def test_long_reads_in_parts_leave_what_the_reference_writes(
    reference: Path,
    tmp_path_factory: pytest.TempPathFactory,
    arrival: Any,
    part_rows: int,
    long_reads: list[bool],
) -> None:
    """The daemon's long-read path: `read_in_full` on a connection of its own,
    reading a few rows at a time, then `rebuild_read` diffing and writing, mixed
    with ordinary (cached, incremental) rebuilds of the same sessions, whose
    whole reads go a few rows at a time too."""
    rows, batches = arrival
    directory = tmp_path_factory.mktemp("long-reads")
    db = directory / "daemon.db"
    create_store(db)
    conn, reader = open_store(db), open_store(db)
    try:
        ensure_schema(conn)
        rebuilder = Rebuilder(conn, cache_sessions=8)
        with mock.patch.object(full_read_module, "READ_PART_ROWS", part_rows):
            for number, batch in enumerate(batches):
                insert_events(db, batch)
                for session_id in sorted({_session_of(row) for row in batch}):
                    if long_reads[number % len(long_reads)]:
                        read = read_in_full(reader, rebuilder.shape, session_id)
                        rebuilder.rebuild_read(read)
                    else:
                        rebuilder.rebuild(session_id)
                rebuilder.flush()
    finally:
        conn.close()
        reader.close()
    assert_same(reference_of(directory, rows), dump_spans(db), rows)


# --------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------


def _case_rows() -> list[Row]:
    """Every hand-written case of test_reference_rust, each in sessions of its own."""
    rows: list[Row] = []
    for number, case in enumerate(CASES.values()):
        for original in case:
            row = dict(original)
            session = row.get("session_id")
            if isinstance(session, str):
                row["session_id"] = f"case{number}-{session}"
            call_id = row.get("tool_call_id")
            if isinstance(call_id, str):  # ids stay apart across sessions
                row["tool_call_id"] = f"case{number}/{call_id}"
            rows.append(row)
    return rows


def test_rebuild_with_workers_leaves_what_the_reference_writes(
    reference: Path, tmp_path: Path
) -> None:
    rows = _case_rows()
    sessions = {row["session_id"] for row in rows if isinstance(row, Mapping)}
    assert len(sessions) >= PARALLEL_MIN_SESSIONS  # else the workers are not used
    expected = reference_of(tmp_path, rows)
    for jobs in (2, 1):
        db = tmp_path / f"jobs{jobs}.db"
        shutil.copyfile(tmp_path / "reference.db", db)
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM tool_spans")
            conn.execute("DELETE FROM tool_span_paths")
        conn.close()
        rebuild_store(db, jobs=jobs)
        assert_same(expected, dump_spans(db), rows)


# --------------------------------------------------------------------------
# Payload texts
# --------------------------------------------------------------------------

PAYLOADS_PER_STORE = 300


@settings(PARITY, max_examples=max(PARITY.max_examples // 3, 1))  # 300 payloads each
@given(seed=st.integers(0, 2**32 - 1))
def test_written_payload_texts_give_the_paths_and_hook_kinds_the_reference_reads(
    reference: Path, tmp_path_factory: pytest.TempPathFactory, seed: int
) -> None:
    """Each payload on a span of its own: a call (its paths), or a hook (a span
    only if its kind reads as a tool hook, then its paths)."""
    writer = PayloadWriter(random.Random(seed))
    rows: list[Row] = []
    texts: dict[str, str] = {}
    for n in range(PAYLOADS_PER_STORE):
        span_id = f"p{n}"
        texts[span_id] = writer.payload()
        kind = "ToolCall" if n % 3 == 0 else "Hook"
        rows.append(ev(n, n * 10, kind, raw=texts[span_id], tool="T", tool_call_id=span_id))
    directory = tmp_path_factory.mktemp("payloads")
    db = directory / "spanwatch.db"
    insert_events(db, rows)
    rebuild_store(db)
    differences = diff_dumps(reference_of(directory, rows), dump_spans(db))
    culprits = {span_id for line in differences for span_id in texts if f"'{span_id}'" in line}
    assert not differences, "\n".join(
        [*differences[:20], *(f"{i}: {texts[i]!r}" for i in sorted(culprits)[:5])]
    )
