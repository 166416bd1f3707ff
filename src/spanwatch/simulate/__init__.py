"""Simulated AI-coding-agent sessions and the stores they fill.

Used by the tests, the benchmarks and `spanwatch demo`. It plays the agent's
side: the `events` table of the store (`schema`), sessions as the hooks,
transcript tail and API proxy record them (`sessions`, built from `plan`,
`tools`, `payloads` and `text`), a live writer process and a bulk loader
(`writer`, `bulk`). Nothing here is used by the daemon itself.
"""

from spanwatch.simulate.bulk import PopulateStats, populate
from spanwatch.simulate.rows import ALL_COLUMNS, BASE_COLUMNS, EventRow
from spanwatch.simulate.schema import connect, create_events_table, event_columns
from spanwatch.simulate.sessions import (
    DEFAULT_START_MS,
    Burst,
    generate_session,
    session_id_for,
    stream_bursts,
    stream_session,
)

__all__ = [
    "ALL_COLUMNS",
    "BASE_COLUMNS",
    "DEFAULT_START_MS",
    "Burst",
    "EventRow",
    "PopulateStats",
    "connect",
    "create_events_table",
    "event_columns",
    "generate_session",
    "populate",
    "session_id_for",
    "stream_bursts",
    "stream_session",
]
