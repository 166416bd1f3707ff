"""Span ids across sessions: which session owns an id, and the id a span is stored under.

Span ids are the table's primary key across sessions. A resumed agent session
repeats the ids of the one it resumes: the first owner keeps its row and the
newcomer's span is stored as `<session_id>/<span_id>` (DESIGN.md).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Container, Iterable

from spanwatch.engine import SessionSpans, SpanTree
from spanwatch.engine.builder import SpanBuilder
from spanwatch.engine.records import SpanRecord
from spanwatch.store import spans as span_rows


def session_records(
    conn: sqlite3.Connection,
    session_id: str,
    session: SessionSpans,
    stored: Container[str],
) -> tuple[list[SpanRecord], list[tuple[str, str]]]:
    """The session's records as they are to be stored, and the span-id collisions."""
    owned_elsewhere: dict[str, str] = {}
    collisions = claimed_elsewhere(
        conn, session_id, session.spans, stored=stored, owned_elsewhere=owned_elsewhere
    )
    tree = SpanTree()
    tree.update(session.spans, ())
    return tree.records(stored_id=stored_id_for(session_id, owned_elsewhere)), collisions


def claimed_elsewhere(
    conn: sqlite3.Connection,
    session_id: str,
    span_ids: Iterable[str],
    *,
    stored: Container[str],
    owned_elsewhere: dict[str, str],
    pending_owners: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Find which of `span_ids` another session already owns; add them to `owned_elsewhere`.

    Ids stored by this session already (`stored`) are its own.
    """
    unknown = [span_id for span_id in span_ids if span_id not in stored]
    owners = span_rows.owners(conn, unknown)
    if pending_owners:  # written by this rebuild, not committed yet
        owners.update((i, pending_owners[i]) for i in unknown if i in pending_owners)
    found = sorted((span_id, owner) for span_id, owner in owners.items() if owner != session_id)
    owned_elsewhere.update(found)
    return found


def stored_id_for(
    session_id: str, owned_elsewhere: dict[str, str]
) -> Callable[[SpanBuilder], str] | None:
    """The id each span is stored under; None when every span keeps its own."""
    if not owned_elsewhere:
        return None

    def stored_id(span: SpanBuilder) -> str:
        if span.span_id in owned_elsewhere:
            return f"{session_id}/{span.span_id}"
        return span.span_id

    return stored_id
