"""The span record: one row of `tool_spans` (plus its `tool_span_paths`)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from spanwatch.engine.builder import SpanBuilder


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


def record_status(started_at_ms: int | None, ended_at_ms: int | None) -> str:
    """ "done" for a span with a start and an end, else "orphaned"."""
    return "done" if started_at_ms is not None and ended_at_ms is not None else "orphaned"


def lead_time_ms(span: SpanBuilder) -> int | None:
    """Hook-measured time when both hooks were seen; else call-to-result when both are exact."""
    if span.hook_start_ms is not None and span.hook_end_ms is not None:
        return max(0, span.hook_end_ms - span.hook_start_ms)
    if (
        span.call_start_exact
        and span.result_end_exact
        and span.call_start_ms is not None
        and span.result_end_ms is not None
    ):
        return max(0, span.result_end_ms - span.call_start_ms)
    return None


def make_record(
    span: SpanBuilder,
    *,
    span_id: str,
    parent_span_id: str | None,
    depth: int,
    subtree_cost_usd_e6: int | None,
    subtree_token_count: int | None,
) -> SpanRecord:
    """The reference's `ToolSpanRecord::from_builder`, under the id it is stored as."""
    started = span.start_ms
    ended = span.end_ms
    return SpanRecord(
        span_id=span_id,
        session_id=span.session_id,
        tool=span.tool,
        tool_call_id=span.tool_call_id,
        status=record_status(started, ended),
        started_at_ms=started,
        ended_at_ms=ended,
        lead_time_ms=lead_time_ms(span),
        tokens_in=span.tokens_in,
        tokens_out=span.tokens_out,
        reasoning_tokens=span.reasoning_tokens,
        cost_usd_e6=span.cost_usd_e6,
        paths=span.paths or (),
        parent_span_id=parent_span_id,
        depth=depth,
        subtree_cost_usd_e6=subtree_cost_usd_e6,
        subtree_token_count=subtree_token_count,
    )
