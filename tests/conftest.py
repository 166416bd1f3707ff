"""Checks made once per test run."""

from __future__ import annotations

from pathlib import Path

import pytest

import spanwatch

PACKAGE = Path(spanwatch.__file__).parent


def stale_compiled_modules() -> list[str]:
    """Modules whose compiled build (setup.py) is older than their source.

    In an editable install the compiled module wins the import, so tests of
    an edited module would run its old code.
    """
    stale = []
    for compiled in PACKAGE.rglob("*.so"):
        source = compiled.with_name(compiled.name.split(".")[0] + ".py")
        if source.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
            stale.append(str(source.relative_to(PACKAGE)))
    return stale


def pytest_configure(config: pytest.Config) -> None:
    stale = stale_compiled_modules()
    if stale:
        pytest.exit(
            f"the compiled build of {', '.join(sorted(stale))} is older than its source: "
            "run ./dev test (it compiles it again), or pip install --no-deps -e .",
            returncode=2,
        )
