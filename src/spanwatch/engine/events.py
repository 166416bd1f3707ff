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
from typing import Final


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


_KINDS: Final = {k.value: k for k in EventKind}
_SOURCES: Final = {s.value: s for s in EventSource}

U32_MAX: Final = 2**32 - 1
U64_MOD: Final = 2**64


@dataclass(slots=True, init=False)
class Event:
    """One row of `events`, as the span engine sees it.

    Not frozen, though never changed: a rebuild makes one per row, and a frozen
    dataclass takes five times as long to make. `__init__` is written out for
    the same reason: mypyc compiles it, where the dataclass's own is Python
    code it generates at import (4,800 instructions an event, under 800 compiled).

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

    def __init__(  # noqa: PLR0917 (the dataclass's own signature, fields in order)
        self,
        session_id: str,
        seq: int,
        ts_ms: int,
        kind: EventKind,
        source: EventSource = EventSource.HOOK,
        ts_exact: bool = False,
        tool: str | None = None,
        tool_call_id: str | None = None,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        reasoning_tokens: int | None = None,
        cost_usd_e6: int | None = None,
        payload: str | bytes = "null",
    ) -> None:
        self.session_id = session_id
        self.seq = seq
        self.ts_ms = ts_ms
        self.kind = kind
        self.source = source
        self.ts_exact = ts_exact
        self.tool = tool
        self.tool_call_id = tool_call_id
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out
        self.reasoning_tokens = reasoning_tokens
        self.cost_usd_e6 = cost_usd_e6
        self.payload = payload


def synthetic_span_id(event: Event) -> str:
    """The id of a span opened by an event without a tool-call id.

    Formatted as the reference does, with `seq` read as an unsigned 64-bit value.
    """
    return f"{event.session_id}:{event.seq % U64_MOD}:{event.ts_ms}"
