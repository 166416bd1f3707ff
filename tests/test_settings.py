"""Settings: precedence of the sources, error messages, and the example file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spanwatch.settings import (
    CONFIG_ENV_VAR,
    Settings,
    SettingsError,
    default_config_file,
    load_settings,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SPANWATCH_* variable of the machine running the tests may leak in."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("SPANWATCH_"):
            monkeypatch.delenv(name)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spanwatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_source() -> None:
    settings = load_settings(None, {})
    assert settings == Settings()
    assert settings.db is None
    assert settings.debounce_ms == 100
    assert settings.max_delay_ms == 2000
    assert settings.poll_fallback is True
    assert settings.log_format == "auto"
    assert settings.capture == "rowid"


def test_precedence_defaults_toml_environment_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml(
        tmp_path,
        "debounce_ms = 170\nmax_delay_ms = 5000\nbatch_max_sessions = 7\nlog_level = 'debug'\n",
    )
    monkeypatch.setenv("SPANWATCH_MAX_DELAY_MS", "4000")
    monkeypatch.setenv("SPANWATCH_BATCH_MAX_SESSIONS", "8")
    settings = load_settings(path, {"batch_max_sessions": 9})
    assert settings.debounce_ms == 170  # TOML over default
    assert settings.max_delay_ms == 4000  # environment over TOML
    assert settings.batch_max_sessions == 9  # flag over environment
    assert settings.log_level == "debug"
    assert settings.reconcile_interval_s == 300  # default


def test_flag_left_unset_does_not_override(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'db = "/data/events.db"\n')
    settings = load_settings(path, {"db": None, "force_polling": None})
    assert settings.db == Path("/data/events.db")
    assert settings.force_polling is False


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANWATCH_DB", "~/store/events.db")
    monkeypatch.setenv("SPANWATCH_FORCE_POLLING", "true")
    monkeypatch.setenv("SPANWATCH_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("SPANWATCH_STATUS_INTERVAL_S", "0.5")
    settings = load_settings(None, {})
    assert settings.db == Path("~/store/events.db").expanduser()
    assert settings.force_polling is True
    assert settings.log_level == "warning"
    assert settings.status_interval_s == 0.5


def test_empty_environment_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANWATCH_DB", "")
    assert load_settings(None, {}).db is None


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(tmp_path, "debounce_ms = 40\n")
    assert default_config_file() is None
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))
    assert default_config_file() == path
    assert load_settings(None, {}).debounce_ms == 40
    # An explicit file wins over $SPANWATCH_CONFIG.
    other = tmp_path / "other.toml"
    other.write_text("debounce_ms = 60\n")
    assert load_settings(other, {}).debounce_ms == 60


def test_toml_error_names_key_value_reason_and_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "debounce_ms = -5\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {})
    assert str(caught.value) == f"debounce_ms: -5: must be >= 0 (from {path})"


def test_environment_error_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANWATCH_DEBOUNCE_MS", "-5")
    with pytest.raises(SettingsError) as caught:
        load_settings(None, {})
    assert str(caught.value) == (
        'debounce_ms: "-5": must be >= 0 (from environment SPANWATCH_DEBOUNCE_MS)'
    )


def test_flag_error_names_the_command_line() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, {"poll_interval_ms": 0})
    assert str(caught.value) == "poll_interval_ms: 0: must be >= 10 (from the command line)"


def test_every_invalid_value_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(
        tmp_path,
        'debounce_ms = -5\nlog_level = "LOUD"\ncapture = "inotify"\nforce_polling = "maybe"\n',
    )
    monkeypatch.setenv("SPANWATCH_BATCH_MAX_SESSIONS", "many")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {"status_interval_s": 0})
    problems = caught.value.problems
    assert len(problems) == 6
    text = "\n".join(problems)
    assert f"debounce_ms: -5: must be >= 0 (from {path})" in text
    assert "log_level: \"LOUD\": must be one of 'debug', 'info', 'warning'" in text
    assert 'capture: "inotify": must be one of' in text
    assert 'force_polling: "maybe": must be true or false' in text
    assert 'batch_max_sessions: "many": must be a whole number (from environment' in text
    assert "status_interval_s: 0: must be > 0 (from the command line)" in text


def test_max_delay_below_debounce_is_rejected(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "debounce_ms = 500\nmax_delay_ms = 100\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {})
    assert str(caught.value) == (f"max_delay_ms: 100: must be >= debounce_ms (500) (from {path})")
    # Equal is fine: every session then waits exactly max_delay_ms.
    assert load_settings(path, {"max_delay_ms": 500}).max_delay_ms == 500


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("debounce_ms", -1),
        ("max_delay_ms", -1),
        ("reconcile_interval_s", 0),
        ("poll_interval_ms", 9),
        ("batch_max_sessions", 0),
        ("busy_timeout_ms", -1),
        ("busy_timeout_ms", 2**31),
        ("write_retry_max_s", -0.5),
        ("status_interval_s", -1),
        ("cache_max_sessions", -1),
        ("cache_max_spans", -1),
        ("log_format", "xml"),
    ],
)
def test_out_of_range_values(key: str, value: object) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, {key: value})
    assert str(caught.value).startswith(f"{key}: ")


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "debounce = 100\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {})
    assert str(caught.value) == (
        f"debounce: unknown setting (in {path}); did you mean debounce_ms?"
    )
    with pytest.raises(SettingsError, match="on the command line"):
        load_settings(None, {"no_such_setting": 1})


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(SettingsError, match="configuration file not found"):
        load_settings(missing, {})
    broken = write_toml(tmp_path, "debounce_ms = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(broken, {})


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.debounce_ms = 1


def test_example_file_loads_to_the_defaults() -> None:
    assert load_settings(EXAMPLE, {}) == Settings()


def test_example_file_documents_every_setting() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for name in Settings.model_fields:
        # `db` has no default, so it appears commented out; the rest are live keys.
        line = re.search(rf"^(# )?{name} = ", text, re.MULTILINE)
        assert line, name
        # Each key is preceded by a comment saying what it does.
        before = text[: line.start()]
        assert before.rstrip("\n").splitlines()[-1].startswith("#"), name
