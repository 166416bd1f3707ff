"""Reading one session's events, and turning rows into engine events.

The reference reads each column with a fixed type and silently drops a row
whose value has another SQLite storage class. spanwatch drops the same rows,
but says so: every dropped row becomes a `SkippedRow` with its session, seq and
the reason, for the caller to log and count. A negative `ts_ms` is dropped too,
and a token count outside u32 reads as NULL (DESIGN.md "Integer edges").

The payload is read as its stored bytes (`_PAYLOAD`), checked to be UTF-8
here (or, for a whole session's read, by the engine's parse of the hook
payloads it parses anyway: `SessionRows.check_hook_payloads`), and handed
to the engine as they are: it looks at and parses payloads
as UTF-8 (orjson's own input), and most payload bytes are tool outputs that
nothing decodes. A decoded copy of a long non-ASCII one is a str of two or
four bytes a character, and made the rows' memory several times their size.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Final

from spanwatch.engine.events import U32_MAX, Event, EventKind, EventSource
from spanwatch.engine.payload import may_be_tool_hook
from spanwatch.store.connection import InvalidText, fetch_all, padded, read_snapshot
from spanwatch.store.schema import EventsShape

#: Kinds whose events never touch a span: validated and counted, not kept.
_INERT_KINDS: Final = frozenset({"Message", "Error", "Cost"})
_TEXT_COLUMNS: Final = {1: "session_id", 5: "kind", 6: "source", 7: "tool", 8: "tool_call_id"}
_TOKEN_COLUMNS: Final = {9: "tokens_in", 10: "tokens_out", 11: "reasoning_tokens"}
#: The payload column as read: a TEXT value's bytes as stored (UTF-8, not yet
#: checked), else the name of its storage class (a str), for the skip reason.
_PAYLOAD: Final = (
    "CASE typeof(payload) WHEN 'text' THEN CAST(payload AS BLOB) ELSE typeof(payload) END"
)
_STORAGE_CLASSES: Final = {"integer": "INTEGER", "real": "REAL", "blob": "BLOB"}
#: Why a row whose payload is not UTF-8 is skipped, when read or when checked later.
_PAYLOAD_NOT_UTF8: Final = "payload is not valid UTF-8"
#: A hook row's payload left unchecked (see `SessionRows.check_hook_payloads`):
#: (skipped rows and token notes before it, its id, session_id, seq, payload).
_Unchecked = tuple[int, int, int, str, int, bytes]
#: `EventKind.parse` and `EventSource.parse` as lookups (unknown values are hooks).
_KINDS: Final = {kind.value: kind for kind in EventKind}
_SOURCES: Final = {source.value: source for source in EventSource}


# Not frozen: compiled by mypyc (setup.py), a frozen dataclass cannot be
# unpickled, and these travel from the rebuild's worker processes.
@dataclass(slots=True)
class SkippedRow:
    """A row the rebuild could not use."""

    row_id: int | None
    session_id: str | None
    seq: Any
    """As stored: an int, unless the row is skipped for its seq."""
    reason: str


@dataclass(slots=True)
class TokenOutOfRange:
    """A token count outside 0..2^32-1, read as NULL."""

    row_id: int
    session_id: str
    seq: int
    column: str
    value: int


@dataclass(slots=True)
class SessionRows:
    """What one read of a session's rows gave."""

    events: list[Event] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)
    token_notes: list[TokenOutOfRange] = field(default_factory=list)
    row_count: int = 0
    max_seq: int = -(2**63)
    """Largest seq and rowid among the valid rows (unchecked ones included)."""
    max_id: int = 0
    unchecked: list[_Unchecked] = field(default_factory=list)
    """Rows whose payload is not yet checked to be UTF-8 (see `check_hook_payloads`)."""

    def check_hook_payloads(self, hooks_not_json: int) -> None:
        """Skip the unchecked rows whose payload is not UTF-8, in the place the
        check on reading would have put them (and drop their token notes).

        `load_session_rows(..., hooks_checked_by_parse=True)` leaves the payload
        of a row unchecked when the engine will parse it as a maybe tool hook:
        orjson parses only UTF-8, and the engine counts the hook payloads that
        did not parse (`SessionSpans.hooks_not_json`, passed here). While that
        is 0 every unchecked payload is UTF-8; else each is decoded. A hook
        that does not parse is no tool hook, so the rows skipped here changed no
        span; and as their seq and id are integers, the watermark read with
        them is the one SQL reads (`marks.live_mark`) for a skipped row.
        """
        unchecked, self.unchecked = self.unchecked, []
        if not hooks_not_json:
            return
        notes = self.token_notes
        for skipped_before, notes_before, row_id, session_id, seq, payload in reversed(unchecked):
            try:
                payload.decode()
            except UnicodeDecodeError:
                problem = SkippedRow(row_id, session_id, seq, _PAYLOAD_NOT_UTF8)
                self.skipped.insert(skipped_before, problem)
                while notes_before < len(notes) and notes[notes_before].row_id == row_id:
                    del notes[notes_before]


def load_session_rows(
    conn: sqlite3.Connection,
    shape: EventsShape,
    session_id: str,
    *,
    after_id: int | None = None,
    by_rowid: bool = False,
    from_ts: int | None = None,
    up_to_id: int | None = None,
    hooks_checked_by_parse: bool = False,
) -> SessionRows:
    """The session's rows, events in the reference's order (ts_ms, seq), in one statement.

    With `after_id`, only rows appended after that rowid are read; with
    `from_ts` and `up_to_id`, only rows at that ts_ms or later, up to that
    rowid (a resumed session's, see `store.resume`). `hooks_checked_by_parse`:
    payloads that the engine parses as maybe tool hooks are not checked to be
    UTF-8 here, where decoding them was most of the check, as the parse checks
    them (the caller feeds every event to one `SessionSpans`, then calls
    `check_hook_payloads`). The rows are sorted here rather than by `ORDER BY
    ts_ms, seq`: SQLite would copy every row, payload and all, through a
    sorter first. Only valid rows are sorted, and their ts_ms and seq are
    integers, which order as SQLite's do.
    """
    sql = session_select(shape)
    params: tuple[Any, ...] = (session_id,)
    if after_id is not None and by_rowid:
        # "+session_id" keeps SQLite off the session index: a range scan of the
        # newest rowids is cheaper than walking a long session's index entries.
        sql = f"SELECT {_select_list(shape)} FROM events WHERE id > ? AND +session_id = ?"
        params = (after_id, session_id)
    elif after_id is not None:
        sql += " AND id > ?"
        params = (session_id, after_id)
    elif from_ts is not None and up_to_id is not None:
        sql += " AND ts_ms >= ? AND id <= ?"
        params = (session_id, from_ts, up_to_id)
    return session_rows(fetch_all(conn, sql, params), hooks_checked_by_parse)


def session_select(shape: EventsShape) -> str:
    """The statement that reads all of a session's rows (its one parameter: the
    session id), for `session_rows`."""
    return f"SELECT {_select_list(shape)} FROM events WHERE session_id = ?"


def session_rows(
    fetched: list[tuple[Any, ...]], hooks_checked_by_parse: bool = False
) -> SessionRows:
    """Rows fetched by `session_select`, in any order, as `load_session_rows` gives
    them (`fetched` is emptied)."""
    rows = convert_rows(_drain(fetched), hooks_checked_by_parse)
    rows.events.sort(key=_load_order)
    return rows


def load_rows_by_seq(
    conn: sqlite3.Connection, shape: EventsShape, session_id: str, positions: list[tuple[int, int]]
) -> SessionRows | None:
    """The session's rows at these (ts_ms, seq) positions, again; None if any is gone or changed.

    For a rewind (see `SessionSpans.rewind`): the events undone are read back
    through the (session_id, seq) index rather than kept with their payloads.
    Each must still be there, valid, with the same ts_ms.
    """
    wanted = dict((seq, ts) for ts, seq in positions)
    fetched: list[tuple[Any, ...]] = []
    seqs = list(wanted)
    for start in range(0, len(seqs), _IN_CHUNK):
        chunk = padded(seqs[start : start + _IN_CHUNK])
        marks = ", ".join("?" * len(chunk))
        fetched += fetch_all(
            conn,
            f"SELECT {_select_list(shape)} FROM events WHERE session_id = ? AND seq IN ({marks})",
            (session_id, *chunk),
        )
    rows = convert_rows(fetched)
    if rows.skipped or len(rows.events) != len(wanted):
        return None
    if any(wanted.get(event.seq) != event.ts_ms for event in rows.events):
        return None
    rows.events.sort(key=_load_order)
    return rows


def _key_order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """A `row_keys` row's place in load order: (ts_ms, seq, id)."""
    return (key[1], key[2], key[0])


def _drain(rows: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """The rows in order, each let go of as it is taken.

    The events keep the rows' values (payloads included), not copies, but
    each row's tuple is freed once converted rather than all of a long
    session's at the end.
    """
    rows.reverse()
    while rows:
        yield rows.pop()


class RowsChanged(Exception):
    """A row read in an earlier snapshot was gone or different in a later one."""


def row_keys(conn: sqlite3.Connection, session_id: str) -> list[tuple[Any, ...]]:
    """(id, ts_ms, seq) of each of the session's rows: what orders them, without payloads."""
    return fetch_all(conn, "SELECT id, ts_ms, seq FROM events WHERE session_id = ?", (session_id,))


def session_rows_in_parts(
    conn: sqlite3.Connection,
    shape: EventsShape,
    session_id: str,
    keys: list[tuple[Any, ...]],
    part_rows: int,
) -> Iterator[SessionRows]:
    """The rows `keys` name, in load order, `part_rows` at a time, each part in its own snapshot.

    What `load_session_rows` gives, cut in parts, without ever holding all the
    payloads in memory. `keys` come from `row_keys` in an earlier snapshot;
    every row must still be there with the same session, ts_ms and seq, else
    `RowsChanged` is raised (the caller then reads the session whole). Rows
    that cannot be sorted (their ts_ms or seq is not an integer) are skipped
    anyway; they come last.
    """
    # Nothing here outlives the sort but the ids in order and `keys`' own tuples:
    # a 50,000-row session's keys are 8 MB, and copies of them cost as much again.
    order = [
        key[0]
        for key in sorted(
            (key for key in keys if type(key[1]) is int and type(key[2]) is int),
            key=_key_order,
        )
    ]
    order += [row_id for row_id, ts, seq in keys if not (type(ts) is int and type(seq) is int)]
    expected = {key[0]: key for key in keys}
    # Every part's IN list is `part_rows` long (the last padded with its last id):
    # each length is a prepared statement of its own in the connection's cache,
    # some 100 kB for 500 ids, and every session's last part had another one.
    marks = ", ".join("?" * part_rows)
    for start in range(0, len(order), part_rows):
        ids = order[start : start + part_rows]
        params = (*ids, *ids[-1:] * (part_rows - len(ids)))
        with read_snapshot(conn):
            fetched = fetch_all(
                conn, f"SELECT {_select_list(shape)} FROM events WHERE id IN ({marks})", params
            )
        by_id = {row[0]: row for row in fetched}
        # Columns 1 to 3 of the select list: session_id, seq, ts_ms.
        if len(by_id) != len(ids) or any(
            row[1] != session_id or (row[0], row[3], row[2]) != expected[row[0]] for row in fetched
        ):
            raise RowsChanged(session_id)
        yield convert_rows(by_id[row_id] for row_id in ids)


#: Values bound per `IN (...)` list, well under SQLite's limit on parameters.
_IN_CHUNK: Final = 500


def _select_list(shape: EventsShape) -> str:
    """The shape's columns, with the payload read as `_PAYLOAD` (the last column)."""
    assert shape.columns[-1] == "payload"
    return ", ".join((*shape.columns[:-1], _PAYLOAD))


#: An event's place in load order, (ts_ms, seq), taken in C rather than by a call each.
_load_order: Final = attrgetter("ts_ms", "seq")


def convert_rows(
    rows: Iterable[tuple[Any, ...]], hooks_checked_by_parse: bool = False
) -> SessionRows:
    """Rows read with `_select_list` into events, the rows the reference drops skipped
    (`hooks_checked_by_parse`: see `load_session_rows`).

    Runs once per row of a rebuild: counters live in locals until the end, and
    kinds and sources are looked up as `EventKind.parse` and `EventSource.parse`
    would, without a call each.
    """
    out = SessionRows()
    append = out.events.append
    kinds, hook = _KINDS, EventKind.HOOK
    sources, hook_source = _SOURCES, EventSource.HOOK
    row_count, max_seq, max_id = 0, out.max_seq, out.max_id
    for row in rows:
        row_count += 1
        (_id, session_id, seq, ts_ms, ts_exact, kind, source, tool, call_id,
         tokens_in, tokens_out, reasoning, cost, payload) = row  # fmt: skip
        # The common case in one expression; `_row_problem` says what is wrong.
        if not (
            type(session_id) is str
            and type(seq) is int
            and type(ts_ms) is int
            and ts_ms >= 0
            and type(kind) is str
            and type(source) is str
            and type(payload) is bytes
            and (ts_exact is None or type(ts_exact) is int)
            and (tool is None or type(tool) is str)
            and (call_id is None or type(call_id) is str)
            and (tokens_in is None or type(tokens_in) is int)
            and (tokens_out is None or type(tokens_out) is int)
            and (reasoning is None or type(reasoning) is int)
            and (cost is None or type(cost) is int)
        ):
            problem = _row_problem(row) or "unreadable row"
            session = session_id if isinstance(session_id, str) else None
            out.skipped.append(SkippedRow(_id, session, seq, problem))
            continue
        if not payload.isascii():
            if (
                hooks_checked_by_parse
                and kinds.get(kind, hook) is hook
                and may_be_tool_hook(payload)
            ):
                unchecked = (len(out.skipped), len(out.token_notes), _id, session_id, seq, payload)
                out.unchecked.append(unchecked)
            else:
                try:
                    payload.decode()  # only to check: the bytes are what the engine takes
                except UnicodeDecodeError:
                    out.skipped.append(SkippedRow(_id, session_id, seq, _PAYLOAD_NOT_UTF8))
                    continue
        if seq > max_seq:
            max_seq = seq
        if _id > max_id:
            max_id = _id
        if kind in _INERT_KINDS:
            continue
        if not (
            (tokens_in is None or 0 <= tokens_in <= U32_MAX)
            and (tokens_out is None or 0 <= tokens_out <= U32_MAX)
            and (reasoning is None or 0 <= reasoning <= U32_MAX)
        ):
            tokens_in, tokens_out, reasoning = _tokens_in_range(
                out, row, (tokens_in, tokens_out, reasoning)
            )
        append(
            Event(
                session_id,
                seq,
                ts_ms,
                kinds.get(kind, hook),
                sources.get(source, hook_source),
                bool(ts_exact),
                tool,
                call_id,
                tokens_in,
                tokens_out,
                reasoning,
                cost,
                payload,
            )
        )
    out.row_count, out.max_seq, out.max_id = row_count, max_seq, max_id
    return out


def _tokens_in_range(
    out: SessionRows, row: tuple[Any, ...], tokens: tuple[int | None, int | None, int | None]
) -> tuple[int | None, int | None, int | None]:
    """Token counts outside u32 read as NULL (DESIGN.md), each one noted."""
    kept: list[int | None] = []
    for offset, value in enumerate(tokens):
        if value is not None and not 0 <= value <= U32_MAX:
            column = _TOKEN_COLUMNS[9 + offset]
            out.token_notes.append(TokenOutOfRange(row[0], row[1], row[2], column, value))
            kept.append(None)
        else:
            kept.append(value)
    return kept[0], kept[1], kept[2]


def _row_problem(row: tuple[Any, ...]) -> str | None:
    """Why the reference would drop this row (or DESIGN.md says to), or None."""
    if type(row[1]) is not str:
        return _type_problem("session_id", row[1], "TEXT")
    if type(row[2]) is not int:
        return _type_problem("seq", row[2], "INTEGER")
    ts_ms = row[3]
    if type(ts_ms) is not int:
        return _type_problem("ts_ms", ts_ms, "INTEGER")
    if ts_ms < 0:
        return f"ts_ms is negative ({ts_ms})"
    if row[4] is not None and type(row[4]) is not int:
        return _type_problem("ts_exact", row[4], "INTEGER")
    for index in (5, 6):
        if type(row[index]) is not str:
            return _type_problem(_TEXT_COLUMNS[index], row[index], "TEXT")
    for index in (7, 8):
        if row[index] is not None and type(row[index]) is not str:
            return _type_problem(_TEXT_COLUMNS[index], row[index], "TEXT")
    for index in (9, 10, 11):
        if row[index] is not None and type(row[index]) is not int:
            return _type_problem(_TOKEN_COLUMNS[index], row[index], "INTEGER")
    if row[12] is not None and type(row[12]) is not int:
        return _type_problem("cost_usd_e6", row[12], "INTEGER")
    payload = row[13]
    if type(payload) is not bytes:  # the name of its storage class (see _PAYLOAD)
        if payload == "null":
            return "payload is NULL"
        return f"payload is {_STORAGE_CLASSES.get(payload, '?')}, expected TEXT"
    return None


def _type_problem(column: str, value: object, wanted: str) -> str:
    if value is None:
        return f"{column} is NULL"
    if isinstance(value, InvalidText):
        return f"{column} is not valid UTF-8"
    found = {int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB"}.get(type(value), "?")
    return f"{column} is {found}, expected {wanted}"
