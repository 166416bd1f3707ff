"""The event model the span engine consumes.

An `Event` is one already-validated row of the store's `events` table. The
store layer does the validation (storage classes, NULLs, token ranges); by the
time a row becomes an `Event`, every field holds a value the reference would
have read. The payload stays unparsed: most events (messages, costs, errors)
never need it parsed, and parsing is the most expensive step of a rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class EventKind(Enum):
    TOOL_CALL = "ToolCall"
    TOOL_RESULT = "ToolResult"
    MESSAGE = "Message"
    ERROR = "Error"
    COST = "Cost"
    HOOK = "Hook"

    @classmethod
    def parse(cls, raw: str) -> EventKind:
        """Read a `kind` column the way the reference does: unknown kinds are hooks."""
        return _KINDS.get(raw, EventKind.HOOK)


class EventSource(Enum):
    TAIL = "Tail"
    HOOK = "Hook"
    PROXY = "Proxy"

    @classmethod
    def parse(cls, raw: str) -> EventSource:
        """Read a `source` column the way the reference does: unknown sources are hooks."""
        return _SOURCES.get(raw, EventSource.HOOK)


_KINDS = {k.value: k for k in EventKind}
_SOURCES = {s.value: s for s in EventSource}

U32_MAX = 2**32 - 1
U64_MOD = 2**64


@dataclass(slots=True)
class Event:
    """One row of `events`, as the span engine sees it.

    Not frozen, though never changed: a rebuild makes one per row, and a frozen
    dataclass takes five times as long to make.

    `seq` keeps the stored (signed) value; the reference reads it as `u64`, which
    only shows in synthetic span ids (see `synthetic_span_id`). `ts_ms` is never
    negative (the store layer skips such rows). Token values are within u32.
    """

    session_id: str
    seq: int
    ts_ms: int
    kind: EventKind
    source: EventSource = EventSource.HOOK
    ts_exact: bool = False
    tool: str | None = None
    tool_call_id: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    reasoning_tokens: int | None = None
    cost_usd_e6: int | None = None
    payload: str | bytes = "null"
    """The payload's text, or its UTF-8 bytes: the store layer passes the bytes
    it read, checked, undecoded (see `spanwatch.engine.payload`)."""


def synthetic_span_id(event: Event) -> str:
    """The id of a span opened by an event without a tool-call id.

    Formatted as the reference does, with `seq` read as an unsigned 64-bit value.
    """
    return f"{event.session_id}:{event.seq % U64_MOD}:{event.ts_ms}"
