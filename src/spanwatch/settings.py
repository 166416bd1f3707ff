"""Typed settings: defaults < TOML file < `SPANWATCH_*` environment < command-line flags.

Everything the daemon can be told lives in `Settings`, so that a value is
checked once, at start (and again on SIGHUP), instead of wherever it is used.
A bad value stops the start with a `SettingsError` that names the key, the
value, the reason and where the value came from; that is the whole point of
`load_settings` over a bare `Settings()`.

The configuration file is optional. Which file is read:

1. the path the caller passes (the CLI's `--config`), else
2. the path in `$SPANWATCH_CONFIG` (empty means none), else
3. no file: defaults, environment and flags only.

There is no search of well-known locations: a daemon whose behaviour depends on
which of several files happens to exist is hard to reason about.

Durations carry their unit in their name (`_ms`, `_s`). `config.example.toml`
at the repository root documents every key with its default.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "SPANWATCH_"
CONFIG_ENV_VAR = "SPANWATCH_CONFIG"

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["auto", "json", "console"]
Capture = Literal["rowid", "triggers"]

_CHOICES = frozenset(get_args(LogLevel) + get_args(LogFormat) + get_args(Capture))

# The TOML table being loaded, for `Settings.settings_customise_sources`, which
# is a classmethod and so cannot be handed per-call data any other way.
_toml_table: ContextVar[Mapping[str, Any] | None] = ContextVar("spanwatch_toml", default=None)


class Settings(BaseSettings):
    """Every knob of spanwatch, validated.

    Frozen: a reload builds a new `Settings` and the daemon compares the two.
    Build it with `load_settings`; `Settings()` alone reads defaults and the
    environment only.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    db: Path | None = Field(
        default=None,
        description="The SQLite event store to keep spans of.",
    )
    debounce_ms: int = Field(
        default=100,
        ge=0,
        description="A dirty session is rebuilt once it has had no new events for this long.",
    )
    max_delay_ms: int = Field(
        default=2000,
        ge=0,
        description="A session that never goes quiet is rebuilt at least this often.",
    )
    reconcile_interval_s: float = Field(
        default=300,
        gt=0,
        description="How often per-session counts are compared with the stored watermarks.",
    )
    poll_fallback: bool = Field(
        default=True,
        description="Also check the store every poll_interval_ms, whatever file events say.",
    )
    poll_interval_ms: int = Field(
        default=2000,
        ge=10,
        description="Period of the fallback check, and of stat polling when force_polling.",
    )
    force_polling: bool = Field(
        default=False,
        description="Stat the store files instead of using inotify.",
    )
    batch_max_sessions: int = Field(
        default=64,
        ge=1,
        description="Most sessions rebuilt in one batch.",
    )
    busy_timeout_ms: int = Field(
        default=5000,
        ge=0,
        le=2**31 - 1,
        description="SQLite busy timeout of the daemon's connections.",
    )
    write_retry_max_s: float = Field(
        default=30,
        ge=0,
        description="How long a busy write is retried (with backoff) before it is given up.",
    )
    log_level: LogLevel = Field(default="info", description="Lowest level logged.")
    log_format: LogFormat = Field(
        default="auto",
        description="auto: JSON lines off a TTY, coloured console on a TTY.",
    )
    capture: Capture = Field(
        default="rowid",
        description="How new events are found: by events rowid, or by triggers on events.",
    )
    status_interval_s: float = Field(
        default=5,
        gt=0,
        description="How often a STATUS= line is sent to systemd.",
    )
    cache_max_sessions: int = Field(
        default=256,
        ge=0,
        description="Sessions whose span state is kept in memory for incremental rebuilds.",
    )
    cache_max_spans: int = Field(
        default=150_000,
        ge=0,
        description="Spans kept in memory across those sessions (about 750 bytes each; "
        "finished spans a session has let go of do not count). The least recently "
        "rebuilt sessions go first; a long one is then read whole on its next change.",
    )
    long_read_rows: int = Field(
        default=5000,
        ge=0,
        description="Sessions of at least this many rows are read in full on a thread of "
        "their own, not holding up the others (0: never).",
    )

    @field_validator("db", mode="after")
    @classmethod
    def _expand_home(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @field_validator("log_level", "log_format", "capture", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        # Accept "INFO" but report a bad value exactly as it was written.
        return value.lower() if isinstance(value, str) and value.lower() in _CHOICES else value

    @field_validator("max_delay_ms", mode="after")
    @classmethod
    def _not_below_debounce(cls, value: int, info: ValidationInfo) -> int:
        # Fields validate in order, so debounce_ms is known here (if it was valid).
        debounce_ms = info.data.get("debounce_ms")
        if debounce_ms is not None and value < debounce_ms:
            raise ValueError(f"must be >= debounce_ms ({debounce_ms})")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest priority first: flags (init), environment, TOML. No dotenv, no secrets dir."""
        toml_settings = InitSettingsSource(settings_cls, init_kwargs=dict(_toml_table.get() or {}))
        return init_settings, env_settings, toml_settings


class SettingsError(ValueError):
    """Invalid configuration. `problems` has one line per bad value; str() joins them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(problems))


def default_config_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The configuration file to read when none is given: `$SPANWATCH_CONFIG`, else none."""
    value = environ.get(CONFIG_ENV_VAR, "")
    return Path(value).expanduser() if value else None


def load_settings(
    config_file: Path | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Build `Settings` from all sources, or raise `SettingsError` naming every bad value.

    `config_file` None means `default_config_file()`. A named file that is
    missing or is not valid TOML is an error, not silently skipped.
    `overrides` are the command-line flags, keyed by setting name; a None value
    means the flag was not given. Call again with the same arguments to reload.
    """
    path = config_file if config_file is not None else default_config_file()
    table = _read_toml(path) if path is not None else {}
    flags: dict[str, Any] = {k: v for k, v in (overrides or {}).items() if v is not None}

    unknown = [_unknown(key, f"in {path}") for key in table if key not in Settings.model_fields]
    unknown += [
        _unknown(key, "on the command line") for key in flags if key not in Settings.model_fields
    ]
    if unknown:
        raise SettingsError(unknown)

    try:
        with _loading_toml(table):
            return Settings(**flags)
    except ValidationError as exc:
        problems = [
            _describe(error, origin=_origin(error, path, table, flags)) for error in exc.errors()
        ]
        raise SettingsError(problems) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise SettingsError([f"{path}: configuration file not found"]) from None
    except OSError as exc:
        raise SettingsError([f"{path}: cannot read configuration file: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"{path}: not valid TOML: {exc}"]) from None


@contextmanager
def _loading_toml(table: Mapping[str, Any]) -> Iterator[None]:
    token = _toml_table.set(table)
    try:
        yield
    finally:
        _toml_table.reset(token)


def _unknown(key: str, origin: str) -> str:
    close = difflib.get_close_matches(key, Settings.model_fields, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{key}: unknown setting ({origin}){hint}"


def _origin(
    error: ErrorDetails,
    path: Path | None,
    table: Mapping[str, Any],
    flags: Mapping[str, object],
) -> str:
    """Which source supplied the failing value, in precedence order."""
    key = str(error["loc"][0]) if error["loc"] else ""
    if key in flags:
        return "from the command line"
    env_name = ENV_PREFIX.lower() + key
    for name in os.environ:
        if name.lower() == env_name:
            return f"from environment {name}"
    if key in table:
        return f"from {path}"
    return "default"


def _describe(error: ErrorDetails, origin: str) -> str:
    """`key: value: reason (origin)`, the line a user reads to fix their configuration."""
    key = ".".join(str(part) for part in error["loc"]) or "settings"
    return f"{key}: {_show(error['input'])}: {_reason(error)} ({origin})"


def _reason(error: ErrorDetails) -> str:
    ctx = error.get("ctx", {})
    kind = error["type"]
    bounds = {
        "greater_than_equal": ">=",
        "greater_than": ">",
        "less_than_equal": "<=",
        "less_than": "<",
    }
    if kind in bounds:
        bound = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {_show(bound)}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}"
    if kind in {"int_parsing", "int_type", "int_from_float"}:
        return "must be a whole number"
    if kind in {"float_parsing", "float_type"}:
        return "must be a number"
    if kind in {"bool_parsing", "bool_type"}:
        return "must be true or false"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    message = error["msg"]
    return message[:1].lower() + message[1:]


def _show(value: object) -> str:
    """A value as the user would have written it (TOML-like)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
