"""The README's promises: its demo command works on a fresh clone, and the demo is honest.

The slow test clones the repository (its committed HEAD) into a temporary
folder and runs the demo command exactly as README.md writes it, with a short
`--duration` appended: on a fresh clone that command makes the virtualenv and
installs spanwatch first, which is why it takes a while. The demo's store must
then hold exactly the spans a fresh rebuild gives. The other tests run the
demo from this checkout: off a terminal, stopped with Ctrl-C, and refusing to
touch an existing store.

The README marks its commands with an HTML comment before the fenced block
(`<!-- demo-command -->`, `<!-- test-command -->`), invisible when rendered.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spanwatch.cli.main import main
from spanwatch.simulate.agent import FEATURES, plan_sessions
from spanwatch.store.rebuild_all import rebuild_store
from spanwatch.store.schema import SPAN_COLUMN_NAMES

REPO = Path(__file__).resolve().parents[1]
DEMO_SECONDS = "8"


def readme_command(readme: Path, marker: str) -> str:
    """The one command in the fenced block after `<!-- marker -->`."""
    text = readme.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {marker} -->\s*```[a-z]*\n(.*?)\n```", text, re.DOTALL)
    assert found is not None, f"README.md has no fenced block marked <!-- {marker} -->"
    lines = [line for line in found.group(1).splitlines() if line.strip()]
    assert len(lines) == 1, f"the {marker} block should hold one command, not {lines}"
    return lines[0].strip()


def demo_store(output: str) -> Path:
    found = re.search(r"^spanwatch demo: store (.+)$", output, re.MULTILINE)
    assert found is not None, f"the demo did not say where its store is:\n{output}"
    return Path(found.group(1))


def daemon_pid(output: str) -> int:
    found = re.search(r"daemon: spanwatch run, pid (\d+),", output)
    assert found is not None, output
    return int(found.group(1))


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def rows(db: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    conn = sqlite3.connect(db)
    try:
        spans = conn.execute(
            f"SELECT {', '.join(SPAN_COLUMN_NAMES)} FROM tool_spans ORDER BY span_id"
        ).fetchall()
        paths = conn.execute("SELECT * FROM tool_span_paths ORDER BY span_id, path").fetchall()
    finally:
        conn.close()
    return spans, paths


def assert_equals_fresh_rebuild(db: Path, scratch: Path) -> int:
    """Copy the store, drop everything but `events`, rebuild it, compare; the span count."""
    copy = scratch / "fresh.db"
    source = sqlite3.connect(db)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
        tables = [
            name
            for (name,) in target.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if name not in ("events", "sqlite_sequence")
        ]
        for name in tables:
            target.execute(f'DROP TABLE "{name}"')
        target.commit()
    finally:
        source.close()
        target.close()
    rebuild_store(copy)
    stored, fresh = rows(db), rows(copy)
    assert stored == fresh
    assert fresh[0], "the demo wrote no spans"
    return len(fresh[0])


def test_readme_test_command_is_what_ci_runs() -> None:
    command = readme_command(REPO / "README.md", "test-command")
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(rf"^exec {re.escape(command)}$", ci, re.MULTILINE), (command, ci)


def test_demo_sessions_show_everything_spanwatch_handles() -> None:
    sessions = plan_sessions(3, 50_000)
    assert sessions[0].features == FEATURES
    assert len({s.session_id for s in sessions}) == 3
    assert all(s.length_ms + s.offset_ms <= 50_000 for s in sessions)
    taken = [sessions[0].session_id]
    assert sessions[0].session_id not in {
        s.session_id for s in plan_sessions(3, 50_000, taken=taken)
    }


def test_demo_refuses_an_existing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "events.db"
    store.write_bytes(b"someone's store")
    assert main(["demo", "--db", str(store), "--duration", "1"]) == 2
    assert "exists" in capsys.readouterr().err
    assert store.read_bytes() == b"someone's store"


@pytest.mark.slow
def test_demo_off_a_terminal_prints_final_trees(tmp_path: Path) -> None:
    db = tmp_path / "demo" / "agent.db"
    done = subprocess.run(
        [sys.executable, "-m", "spanwatch", "demo", "--db", str(db), "--duration", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert demo_store(out) == db
    assert not alive(daemon_pid(out))
    assert "daemon: stopped, exit code 0" in out
    assert re.search(r"^verify: \d+ spans in 3 sessions equal a fresh rebuild$", out, re.MULTILINE)
    assert out.count("\nsession ") + out.startswith("session ") == 3
    assert "├── Task · done" in out or "└── Task · done" in out
    assert "orphaned: no end" in out
    assert f"run --db {db}" in out
    assert_equals_fresh_rebuild(db, tmp_path)


@pytest.mark.slow
def test_ctrl_c_ends_the_demo_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    demo = subprocess.Popen(
        [sys.executable, "-m", "spanwatch", "demo", "--db", str(db), "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _has_events(db, at_least=20):
            time.sleep(0.2)
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, out + err
    pid = daemon_pid(out)
    for _ in range(50):
        if not alive(pid):
            break
        time.sleep(0.1)
    assert not alive(pid)
    assert "daemon: stopped, exit code 0" in out
    assert_equals_fresh_rebuild(db, tmp_path)


def _has_events(db: Path, *, at_least: int) -> bool:
    if not db.exists():
        return False
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        try:
            (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return int(count) >= at_least


@pytest.mark.slow
def test_readme_demo_command_on_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=300)
    command = readme_command(clone / "README.md", "demo-command")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["TMPDIR"] = str(scratch)
    done = subprocess.run(
        ["bash", "-c", f"{command} --duration {DEMO_SECONDS}"],
        cwd=clone,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, f"{command} failed:\n{out}\n{done.stderr}"
    db = demo_store(out)
    assert db.is_relative_to(scratch), "the demo store belongs in a temporary folder"
    verify = subprocess.run(
        [str(clone / ".venv" / "bin" / "spanwatch"), "verify", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert_equals_fresh_rebuild(db, tmp_path)
