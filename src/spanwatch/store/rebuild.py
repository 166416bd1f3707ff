"""Rebuilding a session's spans: read its events, run the engine, write the difference.

`Rebuilder` is used by both `spanwatch rebuild` (every session once, see
`rebuild_all`) and the daemon (sessions as they change). With a cache, it keeps
the engine state of recently rebuilt sessions (`session_state`): when a session
grew by rows that sort after everything it has seen, only those rows are read
and fed; when some sort earlier, but after the last JOURNAL_EVENTS events fed,
the engine undoes those events and feeds them again with the new rows.
Anything else (deleted rows, older rows, replaced rows) falls back to a full
read (`full_read`), so the rows written are always those a full rebuild gives.
A cached session's finished spans are retired (`engine.retire`) as it grows,
so that a long session costs memory for its recent spans only; the rare row
that needs a retired span means a full read too.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import islice

from spanwatch.engine import SessionSpans
from spanwatch.engine.builder import Position, RetiredSpanNeeded, SpanBuilder
from spanwatch.engine.retire import retire_spans
from spanwatch.store import full_read, marks, session_state, triggers
from spanwatch.store import resume as store_resume
from spanwatch.store import spans as span_rows
from spanwatch.store.connection import RetryHook, read_snapshot, write_transaction
from spanwatch.store.events import (
    SessionRows,
    SkippedRow,
    TokenOutOfRange,
    load_rows_by_seq,
    load_session_rows,
)
from spanwatch.store.full_read import FullRead, LongFullRead, read_in_full
from spanwatch.store.marks import SessionMark
from spanwatch.store.owners import claimed_elsewhere, stored_id_for
from spanwatch.store.prepare import PreparedSession
from spanwatch.store.resume import resumed_state
from spanwatch.store.schema import build_indexes, events_shape
from spanwatch.store.session_state import SessionState, feed, fresh_state, position

#: New rows of a cached session are found by a rowid range scan (rather than by
#: walking the session's index) when its last row is at most this far back and
#: the scan is cheaper: a table row costs about ROWID_SCAN_COST index entries.
ROWID_SCAN_WINDOW = 20_000
ROWID_SCAN_COST = 4

#: At most this many spans are kept in memory across cached sessions (about
#: 750 bytes each in Python objects, with their stored rows' fingerprints), whatever
#: `cache_sessions` allows (the daemon's `cache_max_spans`). Generous on purpose:
#: evicting a long session costs a full read of it on its next change (seconds
#: of CPU for 50,000 events; the daemon does it on a thread of its own, but that
#: session waits for it).
MAX_CACHED_SPANS = 150_000

#: A cached session tries to retire spans once it holds this many in memory,
#: and again each time that grew by a quarter (at least RETIRE_STEP spans):
#: each try walks the session's spans once. Retiring needs a journal that no
#: longer reaches the first event, so short sessions keep all of theirs.
RETIRE_MIN_SPANS = 64
RETIRE_STEP = 16


@dataclass(slots=True)
class SessionResult:
    """What one session rebuild read, found and wrote."""

    session_id: str
    mode: str
    """"full", "incremental", or "vanished" (the session has no events any more)."""
    rows_read: int = 0
    spans: int = 0
    upserted: int = 0
    deleted: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)
    token_notes: list[TokenOutOfRange] = field(default_factory=list)
    collisions: list[tuple[str, str]] = field(default_factory=list)
    """(span id, session that owns it) for spans stored under a namespaced id."""
    wrote: bool = False
    rewound: bool = False
    """Incremental, but rows arrived that sort before events already fed: the
    engine undid those events and fed them again with the new rows."""
    reread: bool = False
    """Full, because a new row needed a span the cached state had retired."""
    resumed: bool = False
    """Incremental from a state rebuilt from the stored spans and the latest rows
    (`store.resume`), the session having no cached state."""


@dataclass(slots=True)
class _Write:
    """One session's writes, waiting for the transaction that carries them."""

    session_id: str
    diff: span_rows.SpanDiff
    mark: SessionMark | None
    """The new watermark; None: the session vanished (spans and mark are deleted)."""
    span_count: int = 0
    skipped_rows: int = 0
    flag_version: int | None = None


class _ReadInParts(Exception):
    """The session is to be read whole a part at a time (`read_in_full`), outside
    the read snapshot `rebuild` holds: its rows, payloads and all, are never all
    in memory at once (a 4,000-row session's traced peak: 13 MB in one piece,
    5 MB in parts)."""


class Rebuilder:
    """Rebuilds sessions of one store, keeping up to `cache_sessions` of them in memory.

    With `write_batch_rows`, the writes of several sessions share a transaction
    of about that many rows (call `flush()` at the end): a one-shot rebuild of a
    whole store then commits hundreds of times instead of once per session.
    Without it, each session is written as soon as it is rebuilt. With
    `write_batch_s` too, a transaction also goes once its first session has
    waited that long: what is rebuilt shows soon even in a long batch.

    `fresh`: the store held no spans and no watermarks when this rebuild began
    (a first `spanwatch rebuild`). Then what is stored is what this Rebuilder
    wrote, so a prepared session's stored rows, span-id owners and watermark
    are known without reading them, and its spans are written without a diff.
    Each write transaction checks that no other process wrote spans meanwhile
    (a running daemon, say); if one did, the sessions of that transaction are
    rebuilt the ordinary way and so is the rest.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        cache_sessions: int = 0,
        cache_spans: int = MAX_CACHED_SPANS,
        retry_for_s: float = 30.0,
        on_retry: RetryHook | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        write_batch_rows: int = 0,
        write_batch_s: float | None = None,
        fresh: bool = False,
        retire_min_spans: int = RETIRE_MIN_SPANS,
    ) -> None:
        self.conn = conn
        self.fresh = fresh
        self._written_ids: set[int] = set()
        """In a fresh rebuild: the hash of every span id written or queued so far
        (about half the memory of the ids; two ids that hash alike only
        send a session down the ordinary path, which looks the ids up)."""
        self._marks_written = 0
        """In a fresh rebuild: the watermarks committed so far (all of spanwatch_sessions)."""
        self.write_batch_rows = write_batch_rows
        self.write_batch_s = write_batch_s
        self._pending_since = 0.0
        self._pending: list[_Write] = []
        self._pending_rows = 0
        self._pending_owners: dict[str, str] = {}
        self.unwritten: list[str] = []
        """Sessions whose queued write failed in the last failed `flush()`."""
        self.shape = events_shape(conn)
        self.cache_sessions = cache_sessions
        self.cache_spans = cache_spans
        self.retire_min_spans = retire_min_spans
        self.retry_for_s = retry_for_s
        self.on_retry = on_retry
        self.clock_ms = clock_ms
        self.write_guard: Callable[[], AbstractContextManager[object]] = nullcontext
        """Entered around each write transaction (the daemon pauses a reading thread)."""
        self._cache: OrderedDict[str, SessionState] = OrderedDict()
        self._cached_spans = 0
        self.latest_event_id = 0
        """The newest events rowid the caller knows of: how far a rowid scan would go."""
        self.indexes_deferred = False
        """Set while the caller keeps the store's secondary indexes away
        (`schema.indexes_deferred`): the ordinary path builds them first."""
        self.commits = 0
        self.locked_s = 0.0
        """Write transactions committed, and the time they held the write lock."""

    @property
    def cached_spans(self) -> int:
        """Spans held in memory across the cached sessions (retired ones not counted)."""
        return self._cached_spans

    def forget(self, session_id: str | None = None) -> None:
        """Drop cached state (all of it without an argument), e.g. after a reopen."""
        if session_id is None:
            self._cache.clear()
            self._cached_spans = 0
        else:
            state = self._cache.pop(session_id, None)
            if state is not None:
                self._cached_spans -= len(state.spans.spans)

    def rebuild(
        self,
        session_id: str,
        *,
        flag_version: int | None = None,
        defer_full_from: int | None = None,
        resume: bool = True,
    ) -> SessionResult:
        """Bring the session's stored spans up to date with its events.

        With a cache, a long session without cached state is resumed from its
        stored spans and latest rows (`store.resume`) where that checks out,
        rather than read in full; `resume=False` forbids it.

        `defer_full_from`: rather than read the session in full when it has at
        least this many rows, raise `LongFullRead` (its cached state is then
        dropped): the caller has the read done elsewhere (`read_in_full`).

        `flag_version`: the session was flagged by the capture triggers at this
        counter. A row may have changed in place, which watermarks cannot show,
        so the session is read in full, and the flag is cleared in the same
        transaction as the spans.
        """
        self.restore_indexes()
        cached = self._cache.pop(session_id, None)
        if cached is not None:
            self._cached_spans -= len(cached.spans.spans)
        if flag_version is not None:
            cached = None
        rewind_to: Position | None = None
        removed: list[SpanBuilder] = []
        resumed: tuple[SessionState, int] | None = None
        try:
            with read_snapshot(self.conn):
                if cached is None and resume and flag_version is None:
                    resumed = self._resume(session_id)
                    if resumed is not None:
                        cached = resumed[0]
                appended = self._read_appended(session_id, cached) if cached is not None else None
                if appended is not None:
                    rows, mark, rewind_to = appended
                    extended = True
                else:
                    mark = marks.live_mark(self.conn, session_id)
                    defer = defer_full_from if flag_version is None else None
                    rows, extended = self._read(
                        session_id, mark, cached, defer, in_parts=flag_version is None
                    )
        except _ReadInParts:
            return self.rebuild_read(read_in_full(self.conn, self.shape, session_id))
        if mark.row_count == 0:
            return self._vanish(session_id, flag_version)
        if extended and cached is not None:
            state = cached
            result = SessionResult(session_id, "incremental", resumed=resumed is not None)
            previous_mark: SessionMark | None = cached.mark
            state.mark = mark
            if rewind_to is not None:
                removed = state.spans.rewind(rewind_to)
                state.tree.forget(removed)
                result.rewound = True
        else:
            journal = session_state.JOURNAL_EVENTS if self.cache_sessions > 0 else 0
            state = fresh_state(mark, journal)
            state.stored = span_rows.stored_fingerprints(self.conn, session_id)
            result = SessionResult(session_id, "full")
            previous_mark = marks.read_mark(self.conn, session_id)
        known = len(state.spans.spans)
        try:
            changed = feed(state, rows)
        except RetiredSpanNeeded:
            # The cached state is dropped (it was popped above): read it all again.
            result = self.rebuild(
                session_id,
                flag_version=flag_version,
                defer_full_from=defer_full_from,
                resume=False,
            )
            result.reread = True
            return result
        result = self._finish(
            state, result, rows, known=known, changed=changed,
            previous_mark=previous_mark, flag_version=flag_version,
            gone=[s.span_id for s in removed if s.span_id not in state.spans.spans],
        )  # fmt: skip
        if resumed is not None:
            result.rows_read += resumed[1]
        return result

    def _resume(self, session_id: str) -> tuple[SessionState, int] | None:
        """A state for a session not in the cache, from its stored spans and latest
        rows (`store.resume`), and the rows read for it; None where that does not
        check out, or without a cache (a one-shot rebuild reads every row)."""
        if self.cache_sessions <= 0:
            return None
        return resumed_state(
            self.conn, self.shape, session_id,
            journal_events=session_state.JOURNAL_EVENTS,
            tries=store_resume.RESUME_TRIES,
            min_rows=store_resume.RESUME_MIN_ROWS,
        )  # fmt: skip

    def rebuild_read(self, read: FullRead) -> SessionResult:
        """`rebuild` of a session already read in full and fed (see `read_in_full`).

        Only the check for span ids another session owns, the diff of the
        rows built there with the stored ones and the write happen here.
        """
        session_id = read.session_id
        self.forget(session_id)
        if read.state.mark.row_count == 0:
            return self._vanish(session_id, None)
        previous_mark = marks.read_mark(self.conn, session_id)
        result = SessionResult(session_id, "full")
        return self._finish(
            read.state, result, read.rows, known=0, changed=read.changed,
            previous_mark=previous_mark, flag_version=None, built=read.built,
        )  # fmt: skip

    def _finish(
        self,
        state: SessionState,
        result: SessionResult,
        rows: SessionRows,
        *,
        known: int,
        changed: set[str],
        previous_mark: SessionMark | None,
        flag_version: int | None,
        built: list[span_rows.BuiltRow] | None = None,
        gone: Iterable[str] = (),
    ) -> SessionResult:
        """Diff the session's fed state with its stored rows, queue the write, cache it.

        `built`: all its rows, made already under their raw span ids (used
        unless another session owns one of them). `gone`: ids of spans that a
        rewind removed and the events fed since did not make again.
        """
        session_id = result.session_id
        mark = state.mark
        result.rows_read = rows.row_count
        result.skipped = rows.skipped
        result.token_notes = rows.token_notes

        new_ids = list(islice(state.spans.spans, known, None))
        result.collisions = claimed_elsewhere(
            self.conn, session_id, new_ids, stored=state.stored,
            owned_elsewhere=state.owned_elsewhere, pending_owners=self._pending_owners,
        )  # fmt: skip
        stored_id = stored_id_for(session_id, state.owned_elsewhere)
        if built is not None and stored_id is None:
            diff = span_rows.diff_built_rows(state.stored, built)
        else:
            whole = result.mode == "full"
            if whole:
                records = state.tree.records(stored_id=stored_id)
            else:
                records = state.tree.records(changed, stored_id=stored_id)
            diff = span_rows.diff_rows(state.stored, records, complete=whole)
            for raw_id in gone:
                gone_id = f"{session_id}/{raw_id}" if raw_id in state.owned_elsewhere else raw_id
                if gone_id in state.stored:
                    diff.deletes.append(gone_id)
        result.spans = state.spans.span_count
        result.upserted = len(diff.upserts) + len(diff.updates)
        result.deleted = len(diff.deletes)
        if diff or mark != previous_mark or flag_version is not None:
            self._queue(
                _Write(session_id, diff, mark, result.spans, state.skipped_rows, flag_version)
            )
            result.wrote = True
        if self.cache_sessions > 0:
            diff.apply_to(state.stored)
            if result.mode == "full":
                state.stored = span_rows.keyed_by_span_ids(state.stored, state.spans.spans)
            self._retire(state, stored_id)
            self._cache[session_id] = state
            self._cached_spans += len(state.spans.spans)
            while self._cache and (
                len(self._cache) > self.cache_sessions or self._cached_spans > self.cache_spans
            ):
                _, evicted = self._cache.popitem(last=False)
                self._cached_spans -= len(evicted.spans.spans)
        return result

    def _retire(self, state: SessionState, stored_id: Callable[[SpanBuilder], str] | None) -> None:
        """Retire the cached session's finished spans, now and then (see RETIRE_MIN_SPANS)."""
        live = len(state.spans.spans)
        if live < max(self.retire_min_spans, state.retire_at):
            return
        for span in retire_spans(state.spans, state.tree):
            state.stored.pop(span.span_id if stored_id is None else stored_id(span), None)
        live = len(state.spans.spans)
        state.retire_at = live + max(RETIRE_STEP, live // 4)

    def rebuild_prepared(self, prepared: PreparedSession) -> SessionResult:
        """Write a session that a worker read and built in full (see `store.prepare`).

        The result is what `rebuild` gives. A session whose span ids another
        session owns is rebuilt here instead: its stored ids depend on that.
        """
        session_id = prepared.session_id
        self.forget(session_id)
        if prepared.mark.row_count == 0:
            return self._vanish(session_id, None)
        if self.fresh:
            return self._write_fresh(prepared)
        stored = span_rows.stored_fingerprints(self.conn, session_id)
        if claimed_elsewhere(
            self.conn, session_id, prepared.span_ids, stored=stored,
            owned_elsewhere={}, pending_owners=self._pending_owners,
        ):  # fmt: skip
            return self.rebuild(session_id)
        result = SessionResult(
            session_id, "full", prepared.rows_read, len(prepared.span_ids),
            skipped=prepared.skipped, token_notes=prepared.token_notes,
        )  # fmt: skip
        diff = span_rows.diff_built_rows(stored, prepared.rows)
        result.upserted = len(diff.upserts) + len(diff.updates)
        result.deleted = len(diff.deletes)
        if diff or prepared.mark != marks.read_mark(self.conn, session_id):
            self._queue(
                _Write(session_id, diff, prepared.mark, result.spans, len(prepared.skipped))
            )
            result.wrote = True
        return result

    def _write_fresh(self, prepared: PreparedSession) -> SessionResult:
        """`rebuild_prepared` in a fresh rebuild: nothing of the session is stored yet."""
        session_id = prepared.session_id
        written = self._written_ids
        if any(hash(span_id) in written for span_id in prepared.span_ids):
            return self.rebuild(session_id)  # it may store some spans under namespaced ids
        diff = span_rows.new_spans_diff(prepared.rows)
        result = SessionResult(
            session_id, "full", prepared.rows_read, len(prepared.span_ids),
            upserted=len(diff.upserts), skipped=prepared.skipped,
            token_notes=prepared.token_notes, wrote=True,
        )  # fmt: skip
        self._queue(_Write(session_id, diff, prepared.mark, result.spans, len(prepared.skipped)))
        return result

    def flush(self) -> None:
        """Write every queued session in one transaction.

        If the write fails, the queued sessions' cached state is dropped (it
        described rows that were not written) and their ids are left in
        `unwritten` for the caller to try again; the error is re-raised.
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._pending_rows = 0
        self._pending_owners.clear()
        try:
            self._write(pending)
        except _SpansWrittenElsewhere:
            # The pending diffs assumed nothing stored: redo their sessions
            # against what is stored now, and every later one the same way.
            self.fresh = False
            for write in pending:
                self.rebuild(write.session_id)
            self.flush()
        except BaseException:
            self.unwritten = [write.session_id for write in pending]
            for session_id in self.unwritten:
                self.forget(session_id)
            raise

    def _write(self, pending: list[_Write]) -> None:
        now_ms = self.clock_ms()
        with (
            self.write_guard(),
            write_transaction(self.conn, retry_for_s=self.retry_for_s, on_retry=self.on_retry),
        ):
            locked_at = time.perf_counter()
            if self.fresh and marks.count_marks(self.conn) != self._marks_written:
                raise _SpansWrittenElsewhere
            for write in pending:
                if write.mark is None:
                    span_rows.delete_session_spans(self.conn, write.session_id)
                    marks.delete_mark(self.conn, write.session_id)
                else:
                    span_rows.apply_diff(self.conn, write.diff)
                    marks.write_mark(
                        self.conn,
                        write.mark,
                        span_count=write.span_count,
                        skipped_rows=write.skipped_rows,
                        now_ms=now_ms,
                    )
                if write.flag_version is not None:
                    triggers.clear_flag(self.conn, write.session_id, write.flag_version)
        self.locked_s += time.perf_counter() - locked_at
        self.commits += 1
        self._marks_written += sum(write.mark is not None for write in pending)

    def restore_indexes(self) -> None:
        """The indexes, if deferred (`schema.indexes_deferred`): before the first lookup of
        stored spans by session, or when the caller has time to spare."""
        if self.indexes_deferred:
            build_indexes(self.conn, retry_for_s=self.retry_for_s)
            self.indexes_deferred = False

    def _queue(self, write: _Write) -> None:
        if not self._pending:
            self._pending_since = time.perf_counter()
        self._pending.append(write)
        diff = write.diff
        self._pending_rows += len(diff.upserts) + len(diff.updates) + len(diff.deletes) + 1
        for row in write.diff.upserts:
            self._pending_owners[str(row[0])] = write.session_id
        if self.fresh:
            self._written_ids.update(hash(str(row[0])) for row in write.diff.upserts)
        if self._pending_rows >= self.write_batch_rows or (
            self.write_batch_s is not None
            and time.perf_counter() - self._pending_since >= self.write_batch_s
        ):
            self.flush()

    def _read_appended(
        self, session_id: str, cached: SessionState
    ) -> tuple[SessionRows, SessionMark, Position | None] | None:
        """The common case, cheaply: rows appended after the cached ones, and the new mark.

        The mark is the cached one plus the new rows, without counting the
        whole session: rows deleted meanwhile are left to the reconcile, which
        compares marks with `events` and then forces a full read. None when
        this does not apply (nothing new, an odd row, a row that sorts before
        more than the engine can undo): the caller then reads the live mark
        and decides.

        When new rows sort before events already fed, the position to rewind
        the engine to comes third, and the rows include those events, read
        again, to be fed after the rewind.
        """
        old = cached.mark
        # Walking the session's index costs about its row count; a rowid range
        # scan costs every row written since, of every session. Take the cheaper.
        gap = self.latest_event_id - old.max_id
        near = gap <= ROWID_SCAN_WINDOW and gap * ROWID_SCAN_COST < old.row_count
        rows = load_session_rows(
            self.conn, self.shape, session_id, after_id=old.max_id, by_rowid=near
        )
        if rows.row_count == 0 or rows.skipped or type(old.max_seq) is not int:
            return None
        rewind_to = None
        if rows.events and position(rows.events[0]) <= cached.last_position:
            rewind_to = position(rows.events[0])
            if not self._take_back(session_id, cached.spans, rewind_to, rows):
                return None
        mark = SessionMark(
            session_id,
            max(old.max_seq, rows.max_seq),
            old.row_count + rows.row_count,
            max(old.max_id, rows.max_id),
        )
        return rows, mark, rewind_to

    def _take_back(
        self, session_id: str, spans: SessionSpans, since: Position, rows: SessionRows
    ) -> bool:
        """Add to `rows` the events fed after `since`, read again, for a rewind.

        False when the engine cannot undo that far, or those rows are no longer
        what was fed.
        """
        if not spans.can_rewind(since):
            return False
        again = load_rows_by_seq(self.conn, self.shape, session_id, spans.journaled_after(since))
        if again is None:
            return False
        rows.events = sorted(again.events + rows.events, key=position)
        return True

    def _read(
        self,
        session_id: str,
        mark: SessionMark,
        cached: SessionState | None,
        defer_full_from: int | None = None,
        *,
        in_parts: bool = False,
    ) -> tuple[SessionRows, bool]:
        """New rows only when the session just grew past what was seen; else all rows.

        All rows of a session with at least `defer_full_from` rows: `LongFullRead`.
        With `in_parts`, all rows of a session of more than
        `full_read.READ_PART_ROWS` rows: `_ReadInParts`.
        """
        if mark.row_count == 0:
            return SessionRows(), False
        if cached is not None and mark == cached.mark:
            return SessionRows(), True
        if cached is not None and mark.row_count > cached.mark.row_count:
            rows = load_session_rows(self.conn, self.shape, session_id, after_id=cached.mark.max_id)
            if rows.row_count == mark.row_count - cached.mark.row_count and (
                not rows.events or position(rows.events[0]) > cached.last_position
            ):
                return rows, True
        if defer_full_from is not None and mark.row_count >= defer_full_from:
            raise LongFullRead(session_id)
        if in_parts and mark.row_count > full_read.READ_PART_ROWS:
            raise _ReadInParts
        return load_session_rows(self.conn, self.shape, session_id), False

    def _vanish(self, session_id: str, flag_version: int | None) -> SessionResult:
        self.restore_indexes()
        result = SessionResult(session_id, "vanished")
        result.deleted = span_rows.count_session_spans(self.conn, session_id)
        self._queue(_Write(session_id, span_rows.SpanDiff(), None, flag_version=flag_version))
        result.wrote = True
        return result


class _SpansWrittenElsewhere(Exception):
    """In a fresh rebuild, another process wrote spans to the store."""


@dataclass(slots=True)
class Tally:
    """Counts over many session rebuilds: a one-shot rebuild's, a daemon batch's."""

    sessions: int = 0
    """Sessions rebuilt (vanished ones are counted apart)."""
    vanished: int = 0
    incremental: int = 0
    rewound: int = 0
    """Of the incremental ones, those that took rows in among events already fed."""
    reread: int = 0
    """Sessions read in full again because a row needed a retired span."""
    resumed: int = 0
    """Sessions without cached state resumed from their stored spans (`store.resume`)."""
    events: int = 0
    """Event rows read."""
    spans: int = 0
    spans_written: int = 0
    spans_deleted: int = 0
    skipped_rows: int = 0

    def add(self, result: SessionResult) -> None:
        self.sessions += result.mode != "vanished"
        self.vanished += result.mode == "vanished"
        self.incremental += result.mode == "incremental"
        self.rewound += result.rewound
        self.reread += result.reread
        self.resumed += result.resumed
        self.events += result.rows_read
        self.spans += result.spans
        self.spans_written += result.upserted
        self.spans_deleted += result.deleted
        self.skipped_rows += len(result.skipped)

    def merge(self, other: Tally) -> None:
        self.sessions += other.sessions
        self.vanished += other.vanished
        self.incremental += other.incremental
        self.rewound += other.rewound
        self.reread += other.reread
        self.resumed += other.resumed
        self.events += other.events
        self.spans += other.spans
        self.spans_written += other.spans_written
        self.spans_deleted += other.spans_deleted
        self.skipped_rows += other.skipped_rows
