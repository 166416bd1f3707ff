"""Errors a user can act on: each message is one line that says what to do."""


class StoreError(Exception):
    """The store cannot be used: missing, not SQLite, no `events` table, unwritable."""


class StoreBusyError(StoreError):
    """Another connection kept the write lock for longer than we were willing to wait."""
