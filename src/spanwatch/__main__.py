"""`python -m spanwatch` works like the `spanwatch` command."""

from spanwatch.cli.main import entry

entry()
