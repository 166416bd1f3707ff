"""Stored span rows: reading them, diffing them against a rebuild, writing the difference.

The reference clears a session's spans and upserts them all. The table it
leaves is what `apply_diff` leaves too, but only rows that differ are written:
an unchanged session costs no write at all, and a grown one writes its new and
changed spans only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import orjson

from spanwatch.engine.records import SpanRecord, lead_time_ms, paths_json, record_status
from spanwatch.engine.tree import SpanTree
from spanwatch.store.connection import fetch_all, padded
from spanwatch.store.schema import SPAN_COLUMN_NAMES

#: One tool_spans row, in SPAN_COLUMN_NAMES order.
SpanRow = tuple[object, ...]

_PATHS_JSON: Final = SPAN_COLUMN_NAMES.index("paths_json")
#: Indexed columns of tool_spans besides span_id that a rebuild can change: a
#: row whose values here are unchanged is updated in place, leaving every index.
_PLACE: Final = (SPAN_COLUMN_NAMES.index("parent_span_id"), SPAN_COLUMN_NAMES.index("depth"))
_SESSION: Final = SPAN_COLUMN_NAMES.index("session_id")
_IN_PLACE: Final = tuple(
    i for i in range(1, len(SPAN_COLUMN_NAMES)) if i != _SESSION and i not in _PLACE
)
_COLUMNS: Final = ", ".join(SPAN_COLUMN_NAMES)
_UPSERT: Final = (
    f"INSERT INTO tool_spans ({_COLUMNS}) VALUES ({', '.join('?' * len(SPAN_COLUMN_NAMES))}) "
    "ON CONFLICT(span_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in SPAN_COLUMN_NAMES[1:])
    # Never take a row over from another session (see DESIGN.md on span-id collisions).
    + " WHERE tool_spans.session_id = excluded.session_id"
)
# The upsert rewrites the row's entries in every index of tool_spans (its SET
# names their columns): about 2.5x the pages this UPDATE writes.
_UPDATE_IN_PLACE: Final = (
    "UPDATE tool_spans SET "
    + ", ".join(f"{SPAN_COLUMN_NAMES[i]} = ?" for i in _IN_PLACE)
    + " WHERE span_id = ? AND session_id = ?"
)
_IN_CHUNK: Final = 512


def record_row(record: SpanRecord) -> SpanRow:
    return (
        record.span_id,
        record.session_id,
        record.tool,
        record.tool_call_id,
        record.status,
        record.started_at_ms,
        record.ended_at_ms,
        record.lead_time_ms,
        record.tokens_in,
        record.tokens_out,
        record.reasoning_tokens,
        record.cost_usd_e6,
        record.paths_json,
        record.parent_span_id,
        record.depth,
        record.subtree_cost_usd_e6,
        record.subtree_token_count,
    )


def stored_rows(conn: sqlite3.Connection, session_id: str) -> dict[str, SpanRow]:
    rows = fetch_all(conn, f"SELECT {_COLUMNS} FROM tool_spans WHERE session_id = ?", (session_id,))
    return {row[0]: tuple(row) for row in rows}


#: What a diff needs of a stored row: a hash of the whole row, of its
#: paths_json, and of its place in the tree (parent_span_id, depth: whether an
#: update in place will do), packed into one 192-bit integer (see `fingerprint`).
#: The daemon's cache keeps these instead of the rows (about 56 bytes a span
#: instead of 900; a tuple of the three hashes took 160); two different rows
#: hash alike with odds of about 2**-64.
Fingerprint = int

_HASH_BITS: Final = 64
_HASH_MASK: Final = (1 << _HASH_BITS) - 1


def fingerprint(row: SpanRow) -> Fingerprint:
    """The row hashed as its JSON text, which tells every value and storage class apart.

    Not `hash(row)`: Python hashes integers modulo 2**61 - 1 and -1 like -2, so
    a tuple hash cannot tell a cost of -1 from -2 (or 5 from 5.0), and a row
    changed only there would never be written.
    """
    return _pack(
        hash(orjson.dumps(row, default=_tagged)),
        hash(row[_PATHS_JSON]),
        hash(orjson.dumps((row[_PLACE[0]], row[_PLACE[1]]), default=_tagged)),
    )


def _pack(whole: int, paths: int, place: int) -> Fingerprint:
    """One int of three 64-bit hashes: whole row (high bits), paths, place (low bits).

    A single int is a third of the memory of a tuple of three, and the three
    parts are still compared apart by `paths_differ` and `place_differs`.
    """
    return (
        (whole & _HASH_MASK) << (2 * _HASH_BITS)
        | (paths & _HASH_MASK) << _HASH_BITS
        | (place & _HASH_MASK)
    )


def paths_differ(old: Fingerprint, new: Fingerprint) -> bool:
    """Whether the two rows' paths_json (or stored path rows) differ."""
    return bool((old ^ new) >> _HASH_BITS & _HASH_MASK)


def place_differs(old: Fingerprint, new: Fingerprint) -> bool:
    """Whether the two rows differ in parent_span_id or depth."""
    return bool((old ^ new) & _HASH_MASK)


def _tagged(value: object) -> list[str]:
    """A stored value of a class a rebuilt row never holds (a BLOB): unlike any built value."""
    return [type(value).__name__, repr(value)]


def stored_fingerprints(
    conn: sqlite3.Connection, session_id: str, *, from_ms: int | None = None
) -> dict[str, Fingerprint]:
    """`fingerprint` of each of the session's stored rows, by span id (with `from_ms`,
    of those that start or end at that time or later).

    The paths part describes the span's rows in tool_span_paths as they are,
    not its paths_json: where another program added, removed or damaged path
    rows, they differ, and the diff rewrites them as the reference's
    delete-and-insert of every span's paths would.
    """
    params: tuple[object, ...] = (session_id,)
    rows_sql, paths_sql = _SESSION_ROWS, _SESSION_PATHS
    if from_ms is not None:
        params = (session_id, from_ms, from_ms)
        rows_sql, paths_sql = _SESSION_ROWS_FROM, _SESSION_PATHS_FROM
    found = {row[0]: fingerprint(row) for row in conn.execute(rows_sql, params)}
    if not found:
        return found
    paths: dict[object, list[object]] = {}
    for span_id, path in fetch_all(conn, paths_sql, params):
        paths.setdefault(span_id, []).append(path)
    for span_id, packed in found.items():
        actual = _pack(0, _paths_hash(paths.get(span_id, [])), 0)
        if paths_differ(packed, actual):
            # The paths part replaced by that of the path rows as they are.
            found[span_id] = packed & ~(_HASH_MASK << _HASH_BITS) | actual
    return found


_SESSION_ROWS: Final = f"SELECT {_COLUMNS} FROM tool_spans WHERE session_id = ?"
_SESSION_ROWS_FROM: Final = (
    f"SELECT {_COLUMNS} FROM tool_spans "
    "WHERE session_id = ? AND (started_at_ms >= ? OR ended_at_ms >= ?)"
)
_SESSION_PATHS: Final = (
    "SELECT p.span_id, p.path FROM tool_span_paths AS p "
    "JOIN tool_spans AS t ON t.span_id = p.span_id WHERE t.session_id = ?"
)
_SESSION_PATHS_FROM: Final = (
    "SELECT p.span_id, p.path FROM tool_span_paths AS p "
    "JOIN tool_spans AS t ON t.span_id = p.span_id "
    "WHERE t.session_id = ? AND (t.started_at_ms >= ? OR t.ended_at_ms >= ?)"
)


def _paths_hash(paths: list[object]) -> int:
    """The hash a rebuilt row's paths_json has when these are its path rows."""
    texts = [path for path in paths if type(path) is str]
    if len(texts) == len(paths):
        return hash(paths_json(sorted(texts)))
    return hash(("not text", len(paths)))  # a BLOB or non-UTF-8 path: never a rebuilt one


def stored_paths(conn: sqlite3.Connection, span_ids: Iterable[str]) -> dict[str, set[object]]:
    """The path rows of each span, as stored (TEXT that is not UTF-8 comes as InvalidText)."""
    out: dict[str, set[object]] = {}
    for chunk in _chunks(list(span_ids)):
        marks = ", ".join("?" * len(chunk))
        for span_id, path in fetch_all(
            conn,
            f"SELECT span_id, path FROM tool_span_paths WHERE span_id IN ({marks})",
            tuple(chunk),
        ):
            out.setdefault(span_id, set()).add(path)
    return out


def owners(conn: sqlite3.Connection, span_ids: Sequence[str]) -> dict[str, str]:
    """The session that owns each of `span_ids` that is stored already.

    The daemon asks this for every rebuild's new spans, a different number
    each time: the IN list is `padded`.
    """
    out: dict[str, str] = {}
    for chunk in _chunks(list(span_ids)):
        ids = padded(chunk)
        marks = ", ".join("?" * len(ids))
        out.update(
            conn.execute(
                f"SELECT span_id, session_id FROM tool_spans WHERE span_id IN ({marks})", ids
            ).fetchall()
        )
    return out


@dataclass(slots=True)
class SpanDiff:
    """What to write so the stored rows equal the rebuilt ones."""

    upserts: list[SpanRow] = field(default_factory=list)
    """New rows, and stored rows that moved in the tree (another parent or depth)."""
    updates: list[SpanRow] = field(default_factory=list)
    """Stored rows of the session that changed in place (same parent and depth)."""
    deletes: list[str] = field(default_factory=list)
    path_rewrites: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    new_spans: bool = False
    """Every span of `upserts` is new to the table: it has no stored paths to delete first."""

    def __bool__(self) -> bool:
        return bool(self.upserts or self.updates or self.deletes)

    def apply_to(self, stored: dict[str, Fingerprint]) -> None:
        """Update the stored rows' fingerprints as the database will be once this is written."""
        for span_id in self.deletes:
            del stored[span_id]
        for row in self.upserts:
            stored[str(row[0])] = fingerprint(row)
        for row in self.updates:
            stored[str(row[0])] = fingerprint(row)


def diff_rows(
    stored: Mapping[str, Fingerprint], records: Sequence[SpanRecord], *, complete: bool = True
) -> SpanDiff:
    """The writes that turn the rows `stored` describes into `records`.

    With `complete`, `records` is every span of the session and stored rows
    missing from it are deleted; otherwise it is only the spans that may have
    changed, and nothing is deleted.
    """
    return diff_built_rows(
        stored, [(record_row(record), record.paths) for record in records], complete=complete
    )


#: A rebuilt span as it is to be stored: its tool_spans row and its paths.
BuiltRow = tuple[SpanRow, tuple[str, ...]]


def built_rows(tree: SpanTree) -> list[BuiltRow]:
    """`(record_row(record), record.paths)` for each of `tree.records()`, in its order.

    The same values, without a `SpanRecord` in between: a rebuild of a whole
    session makes one row per span, and a frozen dataclass of 17 fields costs
    more to make than the row itself. `make_record` says what each value is.
    """
    out: list[BuiltRow] = []
    append = out.append
    for span in tree.ordered:
        parent = span.parent
        started = span.start_ms
        ended = span.end_ms
        paths = span.paths or ()  # sorted and distinct already
        row = (
            span.span_id,
            span.session_id,
            span.tool,
            span.tool_call_id,
            record_status(started, ended),
            started,
            ended,
            lead_time_ms(span),
            span.tokens_in,
            span.tokens_out,
            span.reasoning_tokens,
            span.cost_usd_e6,
            paths_json(paths),
            None if parent is None else parent.span_id,
            span.depth,
            span.subtree_cost_usd_e6,
            span.subtree_token_count,
        )
        append((row, paths))
    return out


def diff_built_rows(
    stored: Mapping[str, Fingerprint], built: Iterable[BuiltRow], *, complete: bool = True
) -> SpanDiff:
    """`diff_rows` for spans already turned into rows (by a worker process, say)."""
    diff = SpanDiff()
    seen: set[str] = set()
    for row, paths in built:
        span_id = str(row[0])
        seen.add(span_id)
        old = stored.get(span_id)
        new = fingerprint(row)
        if old != new:
            if old is None or place_differs(old, new):
                diff.upserts.append(row)
            else:
                diff.updates.append(row)
            if old is None or paths_differ(old, new):
                diff.path_rewrites.append((span_id, paths))
    if complete:
        diff.deletes = [span_id for span_id in stored if span_id not in seen]
    return diff


def new_spans_diff(built: Iterable[BuiltRow]) -> SpanDiff:
    """The diff that writes `built` into a table that holds none of their span ids.

    What `diff_built_rows` gives against no stored rows, without fingerprinting
    rows that nothing is compared with: the one-shot rebuild of a store
    without spans (see `Rebuilder`, `fresh`).
    """
    diff = SpanDiff(new_spans=True)
    for row, paths in built:
        diff.upserts.append(row)
        if paths:
            diff.path_rewrites.append((str(row[0]), paths))
    return diff


def apply_diff(conn: sqlite3.Connection, diff: SpanDiff) -> None:
    """Write a diff. Call inside a write transaction."""
    if diff.deletes:
        params = [(span_id,) for span_id in diff.deletes]
        conn.executemany("DELETE FROM tool_span_paths WHERE span_id = ?", params)
        conn.executemany("DELETE FROM tool_spans WHERE span_id = ?", params)
    if diff.upserts:
        conn.executemany(_UPSERT, diff.upserts)
    if diff.updates:
        conn.executemany(
            _UPDATE_IN_PLACE,
            [(*(row[i] for i in _IN_PLACE), row[0], row[_SESSION]) for row in diff.updates],
        )
    if diff.path_rewrites:
        if not diff.new_spans:
            conn.executemany(
                "DELETE FROM tool_span_paths WHERE span_id = ?",
                [(span_id,) for span_id, _ in diff.path_rewrites],
            )
        conn.executemany(
            "INSERT OR IGNORE INTO tool_span_paths (span_id, path) VALUES (?, ?)",
            [(span_id, path) for span_id, paths in diff.path_rewrites for path in paths],
        )


def count_session_spans(conn: sqlite3.Connection, session_id: str) -> int:
    return int(
        conn.execute(
            "SELECT count(*) FROM tool_spans WHERE session_id = ?", (session_id,)
        ).fetchone()[0]
    )


def delete_session_spans(conn: sqlite3.Connection, session_id: str) -> int:
    """The reference's clear_session_spans. Call inside a write transaction."""
    conn.execute(
        "DELETE FROM tool_span_paths WHERE span_id IN "
        "(SELECT span_id FROM tool_spans WHERE session_id = ?)",
        (session_id,),
    )
    return conn.execute("DELETE FROM tool_spans WHERE session_id = ?", (session_id,)).rowcount


def keyed_by_span_ids(
    stored: dict[str, Fingerprint], spans: Iterable[str]
) -> dict[str, Fingerprint]:
    """`stored` again, keyed by the engine's own span id strings where they are equal.

    Stored rows read from the table bring a copy of every span id (about 80
    bytes each); a cached session keeps one. Ids of no span (a namespaced id,
    a row to delete) keep their own.
    """
    out: dict[str, Fingerprint] = {}
    for span_id in spans:
        found = stored.get(span_id)
        if found is not None:
            out[span_id] = found
    if len(out) != len(stored):
        for span_id, found in stored.items():
            out.setdefault(span_id, found)
    return out


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
