"""Logging what a session rebuild could not use, one line per problem.

Shared by the one-shot rebuild and the daemon, so both say the same thing about
the same row. Payload contents are never logged.
"""

from __future__ import annotations

from typing import Any

from spanwatch.store.rebuild import SessionResult


def log_problems(log: Any, result: SessionResult) -> None:
    for row in result.skipped:
        log.warning(
            "row skipped",
            session_id=row.session_id if row.session_id is not None else result.session_id,
            seq=row.seq if isinstance(row.seq, int | str | None) else repr(row.seq),
            row_id=row.row_id,
            reason=row.reason,
        )
    for note in result.token_notes:
        log.warning(
            "token count outside u32, read as NULL",
            session_id=note.session_id,
            seq=note.seq,
            row_id=note.row_id,
            column=note.column,
            value=note.value,
        )
    for span_id, owner in result.collisions:
        log.warning(
            "span id already owned by another session, stored under a namespaced id",
            session_id=result.session_id,
            span_id=span_id,
            owner_session_id=owner,
            stored_as=f"{result.session_id}/{span_id}",
        )
