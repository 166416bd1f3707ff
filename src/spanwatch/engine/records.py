"""The span record: one row of `tool_spans` (plus its `tool_span_paths`)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(slots=True, frozen=True)
class SpanRecord:
    """A finished span, field for field the reference's `ToolSpanRecord`."""

    span_id: str
    session_id: str
    tool: str | None
    tool_call_id: str | None
    status: str
    started_at_ms: int | None
    ended_at_ms: int | None
    lead_time_ms: int | None
    tokens_in: int | None
    tokens_out: int | None
    reasoning_tokens: int | None
    cost_usd_e6: int | None
    paths: tuple[str, ...]
    parent_span_id: str | None
    depth: int
    subtree_cost_usd_e6: int | None
    subtree_token_count: int | None

    @property
    def paths_json(self) -> str:
        """The paths as serde_json writes a `Vec<String>`: compact, non-ASCII kept."""
        return paths_json(self.paths)


def paths_json(paths: tuple[str, ...] | list[str]) -> str:
    return orjson.dumps(list(paths)).decode()
