"""`spanwatch run`: the daemon, in the foreground (systemd runs it like this too)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from spanwatch.cli.common import EXIT_ERROR, add_db_option, fail, subcommand
from spanwatch.daemon.service import Daemon
from spanwatch.logs import configure_logging
from spanwatch.settings import Settings, SettingsError, load_settings
from spanwatch.store.errors import StoreError

EXAMPLE = """\
examples:
  spanwatch run --db ~/.local/share/agent/events.db
  spanwatch run --config /etc/spanwatch/config.toml
  SPANWATCH_DEBOUNCE_MS=500 spanwatch run --db events.db --poll

Settings come from defaults < the TOML file (--config or $SPANWATCH_CONFIG)
< SPANWATCH_* environment variables < these flags. SIGHUP reloads them;
SIGTERM or Ctrl-C finishes the work in hand and exits 0 (a second one exits
at once). exit codes: 0 stopped cleanly, 2 bad configuration or unusable store
"""


def add_parser(subparsers: Any) -> None:
    parser = subcommand(
        subparsers, "run", help="run the daemon (keeps tool spans fresh)", doc=__doc__,
        example=EXAMPLE,
    )  # fmt: skip
    add_db_option(parser, required=False)
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    parser.add_argument("--debounce-ms", type=int, metavar="MS", help="quiet time before a rebuild")
    parser.add_argument(
        "--max-delay-ms", type=int, metavar="MS", help="longest wait of a busy session"
    )
    parser.add_argument(
        "--poll", action="store_true", default=None,
        help="poll the store instead of using file events (network filesystems)",
    )  # fmt: skip
    parser.set_defaults(handler=run)


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from every source; call again (on SIGHUP) to reload."""
    overrides = {
        "db": args.db,
        "debounce_ms": args.debounce_ms,
        "max_delay_ms": args.max_delay_ms,
        "force_polling": args.poll,
        "log_level": args.log_level,
        "log_format": args.log_format,
    }
    return load_settings(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except SettingsError as exc:
        return fail(f"invalid configuration: {exc}")
    configure_logging(settings.log_level, settings.log_format)
    try:
        daemon = Daemon(settings, reload_settings=lambda: settings_from(args))
    except StoreError as exc:
        return fail(str(exc))
    code = daemon.run()
    return EXIT_ERROR if code else 0
