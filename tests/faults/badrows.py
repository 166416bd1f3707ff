"""Bad `events` rows: making them, telling which ones are valid, and what spans are due.

The rules come from DESIGN.md ("Integer edges"), applied here to what SQLite
actually stored (`typeof` of each value, and whether TEXT bytes are UTF-8), not
to what a test meant to insert: column affinity turns '12' into 12 and 1.0 into
1 on the way in. A row is valid when its session_id is UTF-8 TEXT, seq, ts_ms
INTEGER with ts_ms >= 0, kind, source and payload UTF-8 TEXT, tool and
tool_call_id NULL or UTF-8 TEXT, ts_exact and the token and cost columns NULL
or INTEGER. The spans due are what the engine makes of the valid rows alone.

Stored span ids may be namespaced (`<session>/<id>`) when sessions share a
tool-call id, and which session gets the plain id depends on which was stored
first; comparisons therefore use each span's raw id within its session.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faultkit  # noqa: F401  (first: it puts tests/ on the path, for `stores`)

from spanwatch.store.rebuild_all import rebuild_store
from stores import make_store

COLUMNS = (
    "session_id", "seq", "ts_ms", "ts_exact", "kind", "source", "tool", "tool_call_id",
    "tokens_in", "tokens_out", "reasoning_tokens", "cost_usd_e6", "payload",
)  # fmt: skip
TEXT_COLUMNS = frozenset({"session_id", "kind", "source", "tool", "tool_call_id", "payload"})
REQUIRED = frozenset({"session_id", "seq", "ts_ms", "kind", "source", "payload"})
AFTER_2100_MS = 4_102_444_800_000
I64_MAX = 2**63 - 1


class RawText(bytes):
    """A TEXT value stored from these bytes as they are (`CAST(? AS TEXT)`): maybe not UTF-8."""


_INVALID = object()


@dataclass(frozen=True)
class Verdict:
    row_id: int
    session_id: str | None
    """None when session_id is not UTF-8 TEXT: the row belongs to no session."""
    seq: object
    valid: bool
    values: dict[str, Any]


def insert_raw(conn: sqlite3.Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert rows in one transaction, values as given; RawText goes in through CAST.

    `id` may be given, to keep a row's id in another store.
    """
    present = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    conn.execute("BEGIN IMMEDIATE")
    for row in rows:
        names = [name for name in row if name in present]
        marks = ["CAST(? AS TEXT)" if isinstance(row[n], RawText) else "?" for n in names]
        conn.execute(
            f"INSERT INTO events ({', '.join(names)}) VALUES ({', '.join(marks)})",
            [bytes(row[n]) if isinstance(row[n], RawText) else row[n] for n in names],
        )
    conn.execute("COMMIT")


def verdicts(conn: sqlite3.Connection) -> list[Verdict]:
    """Every row of `events`, judged by what SQLite stored."""
    present = [c for c in COLUMNS if c in {r[1] for r in conn.execute("PRAGMA table_info(events)")}]
    select = ", ".join(
        f"typeof({c}), CASE WHEN typeof({c}) = 'text' THEN CAST({c} AS BLOB) ELSE {c} END"
        for c in present
    )
    out = []
    for raw in conn.execute(f"SELECT id, {select} FROM events ORDER BY id"):
        values: dict[str, Any] = {"ts_exact": 0}
        storage: dict[str, str] = {}
        for i, column in enumerate(present):
            kind, value = raw[1 + 2 * i], raw[2 + 2 * i]
            storage[column] = kind
            if kind == "text":
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    value = _INVALID
            values[column] = value
        session = values["session_id"] if storage["session_id"] == "text" else None
        if session is _INVALID:
            session = None
        out.append(Verdict(raw[0], session, values["seq"], _valid(values, storage), values))
    return out


def _valid(values: Mapping[str, Any], storage: Mapping[str, str]) -> bool:
    for column in COLUMNS:
        value = values.get(column)
        kind = storage.get(column, "null")
        if value is None or kind == "null":
            if column in REQUIRED:
                return False
            continue
        if value is _INVALID:
            return False
        wanted = "text" if column in TEXT_COLUMNS else "integer"
        if kind != wanted:
            return False
    return bool(values["ts_ms"] >= 0)


def expected_store(verdicts_: Sequence[Verdict], path: Path) -> Path:
    """A clean store holding only the valid rows (same ids), rebuilt from nothing."""
    conn = make_store(path)
    rows = []
    for verdict in verdicts_:
        if verdict.valid:
            row = {c: verdict.values.get(c) for c in COLUMNS}
            row["ts_exact"] = row["ts_exact"] if row["ts_exact"] is not None else 0
            rows.append({"id": verdict.row_id, **row})
    insert_raw(conn, rows)
    conn.close()
    rebuild_store(path)
    return path


@dataclass
class CanonicalSpans:
    rows: dict[tuple[str, str | None], tuple[Any, ...]]
    paths: set[tuple[str, str | None, str]]


def canonical_spans(conn: sqlite3.Connection, columns: Sequence[str]) -> CanonicalSpans:
    """tool_spans by (session, raw span id), with namespaced ids and parents made raw."""
    names = ", ".join(columns)
    position = {name: i for i, name in enumerate(columns)}
    rows: dict[tuple[str, str | None], tuple[Any, ...]] = {}
    for row in conn.execute(f"SELECT {names} FROM tool_spans"):
        values = list(row)
        session = values[position["session_id"]]
        values[position["span_id"]] = _raw(session, values[position["span_id"]])
        values[position["parent_span_id"]] = _raw(session, values[position["parent_span_id"]])
        rows[(session, values[position["span_id"]])] = tuple(values)
    paths = {
        (session, _raw(session, span_id), path)
        for session, span_id, path in conn.execute(
            "SELECT s.session_id, p.span_id, p.path FROM tool_span_paths p "
            "JOIN tool_spans s USING (span_id)"
        )
    }
    return CanonicalSpans(rows, paths)


def _raw(session: str, span_id: str | None) -> str | None:
    prefix = f"{session}/"
    if span_id is not None and span_id.startswith(prefix):
        return span_id[len(prefix) :]
    return span_id


def span_differences(
    got: CanonicalSpans, want: CanonicalSpans, sessions: Iterable[str] | None = None
) -> list[str]:
    """What differs between two canonical span sets (of `sessions` only, if given)."""
    keep = None if sessions is None else set(sessions)

    def mine(key: tuple[Any, ...]) -> bool:
        return keep is None or key[0] in keep

    have = {k: v for k, v in got.rows.items() if mine(k)}
    due = {k: v for k, v in want.rows.items() if mine(k)}
    found = [f"missing span {k}" for k in sorted(due.keys() - have.keys())]
    found += [f"unexpected span {k}" for k in sorted(have.keys() - due.keys())]
    found += [
        f"span {k} differs: stored {have[k]}, expected {due[k]}"
        for k in sorted(due.keys() & have.keys())
        if have[k] != due[k]
    ]
    paths_got = {p for p in got.paths if mine(p)}
    paths_want = {p for p in want.paths if mine(p)}
    found += [f"path row missing {p}" for p in sorted(paths_want - paths_got)]
    found += [f"path row unexpected {p}" for p in sorted(paths_got - paths_want)]
    return found


# A random mix of good and bad rows, for the daemon (the pytest fuzz uses hypothesis) --


def messy_sessions(rng: random.Random, sessions: int, prefix: str) -> list[dict[str, Any]]:
    """Rows of `sessions` sessions: tool uses, hooks, and one of each kind of bad row.

    Tool-call ids repeat across sessions (resumed sessions do that).
    """
    rows: list[dict[str, Any]] = []
    for n in range(sessions):
        session = f"{prefix}-{n}"
        seq = 0
        ts = rng.choice([1_700_000_000_000, AFTER_2100_MS, 5])
        for use in range(rng.randint(3, 8)):
            call = f"call-{rng.randint(0, 5)}"  # shared across sessions on purpose
            tool = rng.choice(["Read", "Edit", "Bash", "Task"])
            payload = _payload(rng, use)
            end = ts + rng.randint(1, 900)
            hook = json.dumps({"hook_event_name": "PreToolUse", "tool_name": tool, "path": "/h"})
            rows += [
                _row(rng, session, seq, ts, "ToolCall", tool, call, payload),
                _row(rng, session, seq + 1, end, "ToolResult", tool, call, "{}"),
                _row(rng, session, seq + 2, ts + 3, "Hook", None, None, hook),
            ]
            seq += 3
            ts += rng.randint(0, 2000)
        for bad in _bad_rows(rng, session, seq):
            rows.append(bad)
            seq += 1
    rng.shuffle(rows)
    return rows


def _row(  # noqa: PLR0917
    rng: random.Random, session: str, seq: int, ts: int, kind: str, tool: str | None,
    call: str | None, payload: str,
) -> dict[str, Any]:  # fmt: skip
    return {
        "session_id": session, "seq": seq, "ts_ms": ts, "kind": kind,
        "source": rng.choice(["Tail", "Hook", "Proxy", "Lifecycle"]), "tool": tool,
        "tool_call_id": call, "tokens_in": rng.choice([None, 10, 2**32 - 1, 2**32, -1]),
        "tokens_out": rng.choice([None, 5]), "reasoning_tokens": rng.choice([None, 3]),
        "cost_usd_e6": rng.choice([None, 100, I64_MAX, -I64_MAX]), "payload": payload,
        "ts_exact": rng.choice([0, 1]),
    }  # fmt: skip


def _payload(rng: random.Random, use: int) -> str:
    choice = rng.randint(0, 5)
    if choice == 0:  # huge
        return json.dumps({"file_path": f"/big/{use}", "content": "x" * 1_500_000})
    if choice == 1:  # deep: past serde_json's limit, so the payload reads as null
        return '{"file_path": "/deep", "a": ' + "[" * 5000 + "]" * 5000 + "}"
    if choice == 2:  # just within the limit
        return '{"path": "/edge", "a": ' + "[" * 126 + "]" * 126 + "}"
    if choice == 3:  # JSON inside a string
        return json.dumps({"input": json.dumps({"target_file": f"/in/{use}"})})
    if choice == 4:
        return "not json at all {"
    return json.dumps({"file_path": f"/src/{use}.py", "edits": [{"path": "/src/b.py"}]})


def _bad_rows(rng: random.Random, session: str, seq: int) -> list[dict[str, Any]]:
    base = {"session_id": session, "ts_ms": 1_700_000_000_000, "kind": "ToolCall",
            "source": "Tail", "tool": "Read", "tool_call_id": "bad", "payload": "{}"}  # fmt: skip
    mutations: list[dict[str, Any]] = [
        {"ts_ms": -1},  # before 1970
        {"ts_ms": "soon"},
        {"ts_ms": 1.5},
        {"ts_ms": None},
        {"seq": None},
        {"seq": "seven"},
        {"seq": b"\x00\x01"},
        {"kind": None},
        {"kind": 7},
        {"source": b"Hook"},
        {"tool": 3.25},
        {"tool": RawText(b"Re\xffad")},
        {"tool_call_id": 12},
        {"payload": None},
        {"payload": b"{}"},
        {"payload": RawText(b'{"path": "\xc3\x28"}')},
        # A maybe tool hook: a worker leaves its payload to the parse to check.
        {"kind": "Hook", "payload": RawText(b'{"hook_event_name": "PostToolUse", "x": "\xff"}')},
        {"tokens_in": "many"},
        {"cost_usd_e6": 0.5},
        {"ts_exact": "yes"},
        {"session_id": RawText(session.encode() + b"\xfe")},  # belongs to no session
        {"session_id": 42},
        {"session_id": None},
    ]
    rows = []
    for mutation in rng.sample(mutations, k=rng.randint(4, len(mutations))):
        # Rows without a usable session get a seq of their own: UNIQUE(session_id, seq).
        own = "session_id" in mutation and mutation["session_id"] is not None
        rows.append({**base, "seq": rng.getrandbits(48) if own else seq, **mutation})
        seq += 1
    return rows
