"""The simulator's unit of output: one row of the agent store's `events` table.

A generated row carries, besides the table's columns, two facts a real store
never records: when the row reaches the store (`arrival_ms`, which is what makes
rows arrive out of `ts_ms` order) and the ground truth of which tool use it
belongs to and which Task that tool use ran inside. Tests compare what spanwatch
infers against that truth; writers drop it.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, NamedTuple

from spanwatch.engine.events import Event, EventKind, EventSource

#: Columns of the first store version, in table order.
BASE_COLUMNS: tuple[str, ...] = (
    "session_id",
    "seq",
    "ts_ms",
    "kind",
    "source",
    "tool",
    "tokens_in",
    "tokens_out",
    "cost_usd_e6",
    "payload",
)

#: Columns later store versions added with ALTER TABLE ADD COLUMN, in order,
#: with the SQL type clause each was added with. spanwatch reads the first
#: three; `stop_reason` and `latency_ms` stand for the columns it ignores.
ADDED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts_exact", "INTEGER NOT NULL DEFAULT 0"),
    ("tool_call_id", "TEXT"),
    ("reasoning_tokens", "INTEGER"),
    ("stop_reason", "TEXT"),
    ("latency_ms", "INTEGER"),
)

ALL_COLUMNS: tuple[str, ...] = BASE_COLUMNS + tuple(name for name, _ in ADDED_COLUMNS)

# Kinds and sources as writers spell them in the store.
TOOL_CALL = "ToolCall"
TOOL_RESULT = "ToolResult"
MESSAGE = "Message"
ERROR = "Error"
COST = "Cost"
HOOK = "Hook"
LIFECYCLE = "Lifecycle"

TAIL = "Tail"
PROXY = "Proxy"
HOOK_SOURCE = "Hook"


class EventRow(NamedTuple):
    """One generated `events` row plus the simulator's ground truth.

    A named tuple rather than a dataclass: stores of a million rows are made
    from these, and a tuple is several times cheaper to build.

    `arrival_ms` is when the row is committed to the store, on the same clock
    as `ts_ms` (never earlier). `call_id` is the tool use the row records (set
    even when the writer left `tool_call_id` NULL); `parent_call_id` is the Task
    whose subagent produced the row, None at the top level. Neither is a column.
    """

    session_id: str
    seq: int
    ts_ms: int
    kind: str
    source: str
    payload: str
    tool: str | None = None
    tool_call_id: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    reasoning_tokens: int | None = None
    cost_usd_e6: int | None = None
    ts_exact: int = 0
    stop_reason: str | None = None
    latency_ms: int | None = None
    arrival_ms: int = 0
    call_id: str | None = None
    parent_call_id: str | None = None

    def columns(self) -> dict[str, Any]:
        """The row as `{column: value}` for every column of the current store."""
        return {name: getattr(self, name) for name in ALL_COLUMNS}


def values_getter(columns: tuple[str, ...]) -> Callable[[EventRow], tuple[Any, ...]]:
    """A fast `row -> tuple of values` for `columns` (two or more), for executemany."""
    if len(columns) < 2:
        raise ValueError("a store has at least the ten base columns")
    getter: Callable[[EventRow], tuple[Any, ...]] = attrgetter(*columns)
    return getter


def row_event(row: EventRow) -> Event:
    """The engine's event for a generated row (as the store layer would read it)."""
    return Event(
        session_id=row.session_id,
        seq=row.seq,
        ts_ms=row.ts_ms,
        kind=EventKind.parse(row.kind),
        source=EventSource.parse(row.source),
        ts_exact=bool(row.ts_exact),
        tool=row.tool,
        tool_call_id=row.tool_call_id,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        reasoning_tokens=row.reasoning_tokens,
        cost_usd_e6=row.cost_usd_e6,
        payload=row.payload,
    )
