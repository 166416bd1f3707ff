"""Errors a user can act on: each message is one line that says what to do."""


class StoreError(Exception):
    """The store cannot be used: missing, not SQLite, no `events` table, unwritable."""


class StoreBusyError(StoreError):
    """Another connection kept the write lock for longer than we were willing to wait."""


def advice(error: BaseException) -> str:
    """What a user can do about a store error, in a few words."""
    text = str(error).lower()
    if "readonly" in text or "read-only" in text or "permission" in text:
        return "spanwatch needs write access to the store file and its directory"
    if "not a sqlite" in text or "not a database" in text or "not a usable" in text:
        return "check --db: it must point at the agent's SQLite event store"
    if "malformed" in text or "corrupt" in text:
        return "the store file is damaged: restore it from a backup; spanwatch rebuilds the spans"
    if "full" in text:
        return "the disk holding the store is full: free some space"
    if "locked" in text or "busy" in text:
        return "another program held the store's write lock: try again"
    return "check --db and the file's permissions"
