"""`spanwatch triggers install|remove`: the opt-in capture of rows changed in place."""

from __future__ import annotations

import argparse
from typing import Any

from spanwatch.cli.common import EXIT_OK, add_db_option, fail, subcommand
from spanwatch.store.connection import open_store
from spanwatch.store.errors import StoreError
from spanwatch.store.triggers import install_triggers, remove_triggers

EXAMPLE = """\
examples:
  spanwatch triggers install --db events.db
  spanwatch triggers remove --db events.db

Writers that upsert on (session_id, seq) change a row without a new rowid,
seq or count, which the default capture cannot see. With `capture =
"triggers"` the daemon installs AFTER INSERT/UPDATE/DELETE triggers on
`events` that flag the changed session in `spanwatch_dirty`; it drains that
table as it rebuilds. `remove` drops the triggers and the table.
exit codes: 0 done, 2 usage or store error
"""


def add_parser(subparsers: Any) -> None:
    parser = subcommand(
        subparsers, "triggers", help="install or remove the change-capture triggers",
        doc=__doc__, example=EXAMPLE,
    )  # fmt: skip
    parser.add_argument("action", choices=["install", "remove"])
    add_db_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        conn = open_store(args.db)
        try:
            if args.action == "install":
                changed = install_triggers(conn)
                print("triggers installed" if changed else "triggers were already installed")
            else:
                changed = remove_triggers(conn)
                print("triggers removed" if changed else "no triggers were installed")
        finally:
            conn.close()
    except StoreError as exc:
        return fail(str(exc))
    return EXIT_OK
