"""Giving freed memory back to the system after a large read.

Reading a long session in full allocates its rows and events at once; when
they are freed, glibc keeps the pages for reuse, so a daemon that once read a
50,000-event session would stay that large. `malloc_trim` returns them. On a
libc without it this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache
from typing import Any


@cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_free_memory() -> None:
    # The young generations only: a full collection walks every object of the
    # span cache, about 0.1 s on the store thread with 50,000 spans cached,
    # and a read's garbage is young (and freed by reference counting anyway).
    gc.collect(1)
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
