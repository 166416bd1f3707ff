"""`spanwatch status`: how far the stored spans are behind the events. Writes nothing."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from spanwatch.cli.common import (
    EXIT_OK,
    add_db_option,
    add_json_option,
    fail,
    print_json,
    subcommand,
)
from spanwatch.store.connection import open_store
from spanwatch.store.errors import StoreError
from spanwatch.store.status import StoreStatus, store_status

EXAMPLE = """\
examples:
  spanwatch status --db events.db
  spanwatch status --db events.db --sessions --json

"behind" counts sessions whose stored spans do not yet reflect all their
events, and those events; a running daemon brings it back to 0 within its
debounce window. exit codes: 0 ok, 2 usage or store error
"""


def add_parser(subparsers: Any) -> None:
    parser = subcommand(
        subparsers, "status", help="watermarks, lag and stale sessions", doc=__doc__,
        example=EXAMPLE,
    )  # fmt: skip
    add_db_option(parser)
    parser.add_argument(
        "--sessions", action="store_true", help="also show every session's watermark"
    )
    add_json_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        conn = open_store(args.db, readonly=True)
        try:
            status = store_status(conn)
        finally:
            conn.close()
    except StoreError as exc:
        return fail(str(exc))
    if args.json:
        print_json(_as_json(status, args.db, with_sessions=args.sessions))
    else:
        _print(status, args.db, with_sessions=args.sessions)
    return EXIT_OK


def _as_json(status: StoreStatus, db: object, *, with_sessions: bool) -> dict[str, Any]:
    out = asdict(status)
    details = out.pop("sessions_detail")
    out["db"] = str(db)
    out["stale_session_count"] = len(status.stale_sessions)
    if with_sessions:
        out["sessions_detail"] = details
    return out


def _print(status: StoreStatus, db: object, *, with_sessions: bool) -> None:
    print(f"store         {db}")
    print(f"events        {status.events:,} in {status.sessions:,} sessions")
    print(f"spans         {status.spans:,}")
    print(
        f"behind        {len(status.stale_sessions):,} sessions, "
        f"{status.lag_events:,} events not yet in spans"
    )
    if status.stale_sessions:
        shown = ", ".join(status.stale_sessions[:5])
        more = len(status.stale_sessions) - 5
        print(f"              {shown}" + (f" and {more} more" if more > 0 else ""))
    if status.vanished_sessions:
        print(f"vanished      {len(status.vanished_sessions):,} sessions still have spans")
    print(f"last rebuild  {_when(status.last_rebuild_ms)}")
    print(f"skipped rows  {status.skipped_rows:,} (see the daemon's log for each)")
    capture = "triggers (installed)" if status.triggers_installed else "rowid"
    print(f"capture       {capture}")
    if with_sessions:
        print()
        print(f"{'session':<40} {'events':>8} {'in spans':>8} {'spans':>7} {'skipped':>7}  rebuilt")
        for lag in status.sessions_detail:
            marked = "-" if lag.marked_events is None else f"{lag.marked_events:,}"
            spans = "-" if lag.span_count is None else f"{lag.span_count:,}"
            print(
                f"{lag.session_id:<40} {lag.events:>8,} {marked:>8} {spans:>7} "
                f"{lag.skipped_rows or 0:>7}  {_when(lag.rebuilt_at_ms)}"
            )


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    at = datetime.fromtimestamp(ms / 1000, tz=UTC)
    ago = max(0.0, time.time() - ms / 1000)
    return f"{at:%Y-%m-%d %H:%M:%S} UTC ({ago:.0f} s ago)"
