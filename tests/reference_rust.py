"""The Rust reference span rebuild as a test oracle.

`tests/reference_rs` is a small cargo crate around a verbatim copy of the
store's `tool_span_index.rs`. Its binary rebuilds every session of a SQLite
store the way the production store does, so spanwatch's rows can be compared
with the real thing instead of with our reading of it.

The crate is built offline against Debian's packaged crates (see
`scripts/system-deps`), in a copy outside the repository: cargo writes a
`Cargo.lock` beside the manifest, and the tests must not dirty the tree.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from spanwatch.engine.events import Event
from stores import event_row

CRATE_DIR = Path(__file__).resolve().parent / "reference_rs"
REFERENCE_COPY = CRATE_DIR / "src" / "tool_span_index.rs"
#: The spec the copy must equal: ../shared/reference/ seen from the repository root.
SHARED_REFERENCE = CRATE_DIR.parents[2] / "shared" / "reference" / "tool_span_index.rs"
DEBIAN_REGISTRY = Path("/usr/share/cargo/registry")
#: Crates the build needs from the registry, with the apt package providing each.
NEEDED_CRATES = {
    "anyhow": "librust-anyhow-dev",
    "rusqlite": "librust-rusqlite-dev",
    "serde_json": "librust-serde-json-dev",
}
#: The reference uses `Option::is_none_or` (Rust 1.82).
MIN_RUSTC = (1, 82)
BINARY_NAME = "tool-span-reference"
#: What cargo writes into a crate directory: never copied, never hashed.
BUILD_PRODUCTS = frozenset({"target", "Cargo.lock"})

EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    tool TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    cost_usd_e6 INTEGER,
    payload TEXT NOT NULL,
    ts_exact INTEGER NOT NULL DEFAULT 0,
    tool_call_id TEXT,
    reasoning_tokens INTEGER,
    UNIQUE(session_id, seq)
)
"""
EVENT_COLUMNS = (
    "session_id",
    "seq",
    "ts_ms",
    "kind",
    "source",
    "tool",
    "tokens_in",
    "tokens_out",
    "cost_usd_e6",
    "payload",
    "ts_exact",
    "tool_call_id",
    "reasoning_tokens",
)
#: The columns of `tool_spans`, in the reference's order.
SPAN_COLUMNS = (
    "span_id",
    "session_id",
    "tool",
    "tool_call_id",
    "status",
    "started_at_ms",
    "ended_at_ms",
    "lead_time_ms",
    "tokens_in",
    "tokens_out",
    "reasoning_tokens",
    "cost_usd_e6",
    "paths_json",
    "parent_span_id",
    "depth",
    "subtree_cost_usd_e6",
    "subtree_token_count",
)


class ReferenceUnavailable(Exception):
    """The reference binary cannot be built here; the message says what is missing."""


class Sql(NamedTuple):
    """A column value given as SQL, for what Python cannot bind: CAST(X'FF' AS TEXT)."""

    expr: str


class SpanDump(NamedTuple):
    """Everything a rebuild wrote: `tool_spans` rows by span id, and the path rows."""

    spans: dict[str, tuple[Any, ...]]
    paths: set[tuple[str, str]]


def reference_binary() -> Path:
    """The built reference binary; raises ReferenceUnavailable saying what is missing.

    Built once per process (and cached across runs, keyed by the crate's sources).
    """
    result = _build_once()
    if isinstance(result, ReferenceUnavailable):
        raise result
    return result


@functools.cache
def _build_once() -> Path | ReferenceUnavailable:
    try:
        _check_toolchain()
    except ReferenceUnavailable as missing:
        return missing
    build_dir = _build_dir()
    if not (build_dir / "Cargo.toml").exists():
        # Copy to a fresh directory, then rename: a concurrent run sees all or nothing.
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=build_dir.parent))
        shutil.copytree(
            CRATE_DIR, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*BUILD_PRODUCTS)
        )
        try:
            staging.rename(build_dir)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another run got there first
    proc = subprocess.run(
        [
            "cargo",
            "build",
            "--release",
            "--offline",
            "--quiet",
            "--manifest-path",
            str(build_dir / "Cargo.toml"),
        ],
        cwd=build_dir,  # cargo finds .cargo/config.toml from the cwd, not the manifest
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if proc.returncode != 0:
        # Tools and crates are present, so this is a real failure, not a missing feature.
        raise RuntimeError(f"cargo build of {build_dir} failed:\n{proc.stderr}")
    return build_dir / "target" / "release" / BINARY_NAME


def _check_toolchain() -> None:
    """Raise ReferenceUnavailable naming the first missing tool or crate."""
    for tool in ("cargo", "rustc"):
        if shutil.which(tool) is None:
            raise ReferenceUnavailable(f"{tool} not found on PATH (scripts/system-deps)")
    version = subprocess.run(
        ["rustc", "--version"], capture_output=True, text=True, check=False
    ).stdout
    found = re.search(r"(\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) < MIN_RUSTC:
        need = ".".join(map(str, MIN_RUSTC))
        raise ReferenceUnavailable(f"rustc >= {need} needed, found {version.strip()!r}")
    have = {p.name.rsplit("-", 1)[0] for p in DEBIAN_REGISTRY.glob("*-*")}
    missing = sorted(pkg for crate, pkg in NEEDED_CRATES.items() if crate not in have)
    if missing:
        raise ReferenceUnavailable(
            f"Rust crates missing from {DEBIAN_REGISTRY}: apt-get install {' '.join(missing)}"
        )


def _build_dir() -> Path:
    """A per-source-version directory in the user's cache (or the temp dir)."""
    digest = hashlib.sha256()
    for path in sorted(_source_files()):
        digest.update(str(path.relative_to(CRATE_DIR)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    name = digest.hexdigest()[:16]
    override = os.environ.get("SPANWATCH_REFERENCE_BUILD_DIR")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    roots = [Path(override)] if override else []
    roots += [
        Path(cache) / "spanwatch" / "reference-rs",
        Path(tempfile.gettempdir()) / f"spanwatch-reference-rs-{os.getuid()}",
    ]
    for root in roots:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK):
            return root / name
    raise ReferenceUnavailable(f"no writable build directory among {roots}")


def _source_files() -> list[Path]:
    return [
        p
        for p in CRATE_DIR.rglob("*")
        if p.is_file() and not BUILD_PRODUCTS & set(p.relative_to(CRATE_DIR).parts)
    ]


def run_reference(db_path: str | Path) -> None:
    """Rebuild every session of the store at db_path with the reference."""
    proc = subprocess.run(
        [str(reference_binary()), str(db_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reference rebuild of {db_path} failed:\n{proc.stderr}")


def create_store(db_path: str | Path) -> None:
    """Create an empty store with the full `events` schema."""
    with _connect(db_path) as conn:
        conn.execute(EVENTS_SCHEMA)


def insert_events(db_path: str | Path, events: Iterable[Event | Mapping[str, Any]]) -> None:
    """Append events to the store (creating it if needed), in the order given.

    A mapping is a raw row: any of EVENT_COLUMNS (others default as the schema
    does), for values an `Event` cannot hold (unknown kinds, wrong storage classes,
    `Sql` expressions).
    """
    create_store(db_path)
    with _connect(db_path) as conn:
        for event in events:
            row = event_row(event) if isinstance(event, Event) else dict(event)
            unknown = set(row) - set(EVENT_COLUMNS)
            if unknown:
                raise ValueError(f"not an events column: {sorted(unknown)}")
            columns = ", ".join(row)
            marks = ", ".join(v.expr if isinstance(v, Sql) else "?" for v in row.values())
            values = [v for v in row.values() if not isinstance(v, Sql)]
            conn.execute(f"INSERT INTO events ({columns}) VALUES ({marks})", values)


def dump_spans(db_path: str | Path) -> SpanDump:
    """Every `tool_spans` and `tool_span_paths` row of the store."""
    with _connect(db_path) as conn:
        cols = ", ".join(SPAN_COLUMNS)
        spans = {row[0]: tuple(row) for row in conn.execute(f"SELECT {cols} FROM tool_spans")}
        paths = {(s, p) for s, p in conn.execute("SELECT span_id, path FROM tool_span_paths")}
    return SpanDump(spans, paths)


def diff_dumps(expected: SpanDump, actual: SpanDump) -> list[str]:
    """Readable differences, cell by cell; storage classes count (5 is not 5.0 or '5')."""
    out: list[str] = []
    for span_id in sorted(expected.spans.keys() | actual.spans.keys()):
        want, got = expected.spans.get(span_id), actual.spans.get(span_id)
        if want is None or got is None:
            which = "missing" if got is None else "unexpected"
            out.append(f"span {span_id!r} {which}: {want if got is None else got}")
            continue
        for column, w, g in zip(SPAN_COLUMNS, want, got, strict=True):
            if (type(w), w) != (type(g), g):
                out.append(f"span {span_id!r} {column}: expected {w!r}, got {g!r}")
    out += [f"path row missing: {row!r}" for row in sorted(expected.paths - actual.paths)]
    out += [f"path row unexpected: {row!r}" for row in sorted(actual.paths - expected.paths)]
    return out


@contextmanager
def _connect(db_path: str | Path) -> Iterator[sqlite3.Connection]:
    """A connection that commits on success and is always closed."""
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()
