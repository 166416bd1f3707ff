"""`spanwatch tree`: the printed tree and the JSON document, pinned on a fixture session.

The fixture is one Claude Code session seen by hooks, the transcript tail and
the proxy: a Read, a Task whose subagent greps and reads (the Read has its pre
hook but not its post hook, so its lead time differs from its duration), two
Edits called in parallel (the shorter one lies inside the longer one, so the
stored tree nests it there), and a Bash the user interrupted (no end).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spanwatch.cli.main import main
from spanwatch.cli.render_tree import (
    SpanView,
    build_tree,
    common_dir,
    format_cost,
    format_duration,
    format_tokens,
    render_tree,
    short_path,
)
from spanwatch.engine.events import Event, EventKind, EventSource
from spanwatch.store.rebuild_all import rebuild_store
from stores import insert_events, make_store

SESSION = "5e2a0c1d-7b3f-4e8a-9d6c-1f0e2d3c4b5a"
OTHER = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
CWD = "/home/dev/shop"
T0 = 1_732_500_000_000


@dataclass(frozen=True)
class Use:
    """One tool use: what the hooks and the transcript both name."""

    tool: str
    call_id: str
    tool_input: dict[str, Any]


def _hook(seq: int, at: int, phase: str, use: Use) -> Event:
    payload = {
        "session_id": SESSION,
        "cwd": CWD,
        "hook_event_name": phase,
        "tool_name": use.tool,
        "tool_input": use.tool_input,
        "tool_use_id": use.call_id,
    }
    return Event(
        SESSION,
        seq,
        T0 + at,
        EventKind.HOOK,
        EventSource.HOOK,
        tool_call_id=use.call_id,
        payload=json.dumps(payload),
    )


def _call(seq: int, at: int, use: Use, tokens: tuple[int, int], cost: int) -> Event:
    payload = {"type": "tool_use", "id": use.call_id, "name": use.tool, "input": use.tool_input}
    return Event(
        SESSION,
        seq,
        T0 + at,
        EventKind.TOOL_CALL,
        EventSource.TAIL,
        ts_exact=True,
        tool=use.tool,
        tool_call_id=use.call_id,
        tokens_in=tokens[0],
        tokens_out=tokens[1],
        cost_usd_e6=cost,
        payload=json.dumps(payload),
    )


def _result(seq: int, at: int, use: Use) -> Event:
    payload = {"type": "tool_result", "tool_use_id": use.call_id, "content": "ok"}
    return Event(
        SESSION,
        seq,
        T0 + at,
        EventKind.TOOL_RESULT,
        EventSource.TAIL,
        ts_exact=True,
        tool_call_id=use.call_id,
        payload=json.dumps(payload),
    )


def _message(seq: int, at: int, text: str) -> Event:
    return Event(
        SESSION, seq, T0 + at, EventKind.MESSAGE, EventSource.TAIL, payload=json.dumps(text)
    )


def fixture_events() -> list[Event]:
    """The session's rows; tail rows take transcript line numbers, hooks 1000 and up."""
    read = Use("Read", "toolu_read", {"file_path": f"{CWD}/README.md"})
    task = Use("Task", "toolu_task", {"prompt": "find the refund code"})
    grep = Use("Grep", "toolu_grep", {"pattern": "refund", "path": f"{CWD}/payments"})
    models = Use("Read", "toolu_models", {"file_path": f"{CWD}/payments/models.py"})
    edit1 = Use("Edit", "toolu_edit1", {"file_path": f"{CWD}/payments/stripe.py"})
    edit2 = Use("Edit", "toolu_edit2", {"file_path": f"{CWD}/payments/models.py"})
    bash = Use("Bash", "toolu_bash", {"command": "pytest -q payments"})
    cost = Event(
        SESSION,
        1002,
        T0 + 1100,
        EventKind.COST,
        EventSource.PROXY,
        tokens_in=12_000,
        tokens_out=150,
        cost_usd_e6=38_000,
        payload="{}",
    )
    return [
        _message(0, 0, "fix refunds"),
        _hook(1000, 1000, "PreToolUse", read),
        _call(1, 1005, read, (12_000, 150), 38_000),
        _result(2, 1040, read),
        _hook(1001, 1042, "PostToolUse", read),
        cost,
        _hook(1003, 2000, "PreToolUse", task),
        _call(3, 2003, task, (20_000, 800), 60_000),
        _call(4, 2500, grep, (1_500, 40), 2_500),
        _result(5, 2600, grep),
        _hook(1004, 3000, "PreToolUse", models),
        _call(6, 3010, models, (2_100, 60), 3_100),
        _result(7, 3400, models),
        _hook(1005, 9000, "PostToolUse", task),
        _result(8, 9005, task),
        _call(9, 9498, edit1, (25_000, 900), 70_000),
        _call(10, 9499, edit2, (25_000, 900), 70_000),
        _hook(1006, 9500, "PreToolUse", edit1),
        _hook(1007, 9502, "PreToolUse", edit2),
        _hook(1008, 9700, "PostToolUse", edit2),
        _hook(1009, 9800, "PostToolUse", edit1),
        _hook(1010, 12_000, "PreToolUse", bash),
        _call(11, 12_004, bash, (26_000, 30), 8_000),
        _message(12, 15_000, "[Request interrupted by user for tool use]"),
    ]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    db = tmp_path / "events.db"
    conn = make_store(db)
    insert_events(conn, sorted(fixture_events(), key=lambda e: e.seq))
    insert_events(conn, [Event(OTHER, 0, T0, EventKind.MESSAGE, payload='"hello"')])
    conn.close()
    summary = rebuild_store(db)
    assert summary.spans == 7
    return db


#: Checked by hand: the session runs from the Read's pre hook (1000) to the first
#: Edit's post hook (9800); totals add up every span's own figures; the Task's
#: subtree holds the Grep and the Read; the Read inside it has no post hook, so
#: its lead time is call to result (390 ms) while its duration is hook to result.
EXPECTED = [
    f"session {SESSION} · 7 spans (1 orphaned) · 8.80 s · 111.6k in / 2.9k out · $0.2516",
    f"files under {CWD}",
    "├── Read · done · 42 ms · 12.0k in / 150 out · $0.0380 · README.md",
    "├── Task · done · 7.00 s · 20.0k in / 800 out · $0.0600 · subtree 24.5k tokens $0.0656",
    "│   ├── Grep · done · 100 ms · 1.5k in / 40 out · $0.0025 · payments",
    "│   └── Read · done · 400 ms (lead 390 ms) · 2.1k in / 60 out · $0.0031 · payments/models.py",
    "├── Edit · done · 300 ms · 25.0k in / 900 out · $0.0700 · subtree 51.8k tokens $0.1400 · "
    "payments/stripe.py",
    "│   └── Edit · done · 198 ms · 25.0k in / 900 out · $0.0700 · payments/models.py",
    "└── Bash · orphaned: no end · 26.0k in / 30 out · $0.0080",
]


def test_tree_prints_the_session(
    store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["tree", "--db", str(store), SESSION]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == EXPECTED
    assert out.endswith("$0.0080\n")


def test_tree_writes_nothing(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = store.read_bytes()
    assert main(["tree", "--db", str(store), SESSION]) == 0
    assert main(["tree", "--db", str(store), SESSION, "--json"]) == 0
    assert store.read_bytes() == before
    wal = Path(f"{store}-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_tree_json_is_nested(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tree", "--db", str(store), SESSION, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["db"] == str(store)
    assert doc["session_id"] == SESSION
    assert (doc["spans"], doc["orphaned"]) == (7, 1)
    assert doc["cost_usd_e6"] == 251_600
    assert doc["cost_usd"] == pytest.approx(0.2516)
    assert (doc["tokens_in"], doc["tokens_out"]) == (111_600, 2_880)
    assert doc["root_dir"] == CWD
    assert [root["tool"] for root in doc["roots"]] == ["Read", "Task", "Edit", "Bash"]
    task = doc["roots"][1]
    assert [child["span_id"] for child in task["children"]] == ["toolu_grep", "toolu_models"]
    assert task["subtree_cost_usd_e6"] == 65_600
    assert task["subtree_cost_usd"] == pytest.approx(0.0656)
    read = task["children"][1]
    assert read == {
        "span_id": "toolu_models",
        "tool": "Read",
        "tool_call_id": "toolu_models",
        "status": "done",
        "started_at_ms": T0 + 3000,
        "ended_at_ms": T0 + 3400,
        "duration_ms": 400,
        "lead_time_ms": 390,
        "tokens_in": 2100,
        "tokens_out": 60,
        "reasoning_tokens": None,
        "cost_usd_e6": 3100,
        "cost_usd": 0.0031,
        "subtree_token_count": 2160,
        "subtree_cost_usd_e6": 3100,
        "subtree_cost_usd": 0.0031,
        "depth": 1,
        "parent_span_id": "toolu_task",
        "paths": [f"{CWD}/payments/models.py"],
        "children": [],
    }
    bash = doc["roots"][3]
    assert (bash["status"], bash["ended_at_ms"], bash["duration_ms"]) == ("orphaned", None, None)


def test_a_session_without_spans_is_shown_empty(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tree", "--db", str(store), OTHER]) == 0
    assert capsys.readouterr().out == f"session {OTHER} · 0 spans\n└── no tool spans (yet)\n"


def test_unknown_session_exits_1_with_one_line(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tree", "--db", str(store), "no-such-session"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "no session no-such-session" in captured.err


def test_store_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tree", "--db", str(tmp_path / "missing.db"), SESSION]) == 2
    assert capsys.readouterr().err.startswith("spanwatch: error: no store at")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all, just text" * 10)
    assert main(["tree", "--db", str(garbage), SESSION]) == 2
    assert "not a SQLite database" in capsys.readouterr().err


def test_a_store_never_rebuilt_still_shows_its_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "fresh.db"
    conn = make_store(db)
    insert_events(conn, fixture_events())
    conn.close()
    assert main(["tree", "--db", str(db), SESSION]) == 0
    assert "no tool spans (yet)" in capsys.readouterr().out


# -- the pure renderer ---------------------------------------------------------------


def _span(span_id: str, start: int | None, end: int | None, parent: str | None = None) -> SpanView:
    return SpanView(
        span_id, "Read", span_id, "done" if start is not None and end is not None else "orphaned",
        start, end, None, None, None, None, None, parent, 0, None, None,
    )  # fmt: skip


def test_children_in_start_order_and_lost_parents_become_roots() -> None:
    tree = build_tree(
        "s",
        [
            _span("late", 50, 60),
            _span("no-start", None, 70),
            _span("outer", 10, 40),
            _span("b", 20, 30, parent="outer"),
            _span("a", 12, 18, parent="outer"),
            _span("lost", 5, 6, parent="gone"),
        ],
    )
    assert [n.span.span_id for n in tree.roots] == ["lost", "outer", "late", "no-start"]
    assert [n.span.span_id for n in tree.roots[1].children] == ["a", "b"]
    assert (tree.spans, tree.orphaned) == (6, 1)


def test_the_live_view_keeps_the_latest_spans_that_fit() -> None:
    spans = [_span(f"s{i:02d}", i * 10, i * 10 + 5) for i in range(20)]
    spans.append(_span("child", 191, 192, parent="s19"))
    tree = build_tree("s", spans)
    from rich.console import Console

    console = Console(width=80, record=True, file=io.StringIO())
    console.print(render_tree(tree, max_lines=6))
    lines = console.export_text().splitlines()
    assert len(lines) == 6
    assert lines[1] == "├── … 17 earlier spans"
    assert [line.split(" · ")[0][-4:] for line in lines[2:]] == ["Read"] * 4


def test_figures() -> None:
    assert [format_duration(ms) for ms in (0, 999, 1000, 61_500, 3_725_000)] == [
        "0 ms", "999 ms", "1.00 s", "1m 01s", "1h 02m",
    ]  # fmt: skip
    assert [format_tokens(n) for n in (999, 1000, 123_456, 2_500_000)] == [
        "999", "1.0k", "123.5k", "2.50M",
    ]  # fmt: skip
    assert [format_cost(c) for c in (0, 38, 38_000, 1_234_567)] == [
        "$0.0000", "$0.000038", "$0.0380", "$1.2346",
    ]  # fmt: skip


def test_paths_are_shown_under_the_sessions_directory() -> None:
    assert common_dir(["/a/b/c.py", "/a/b/d/e.py", "rel.py"]) == "/a/b"
    assert common_dir(["/a/b/c.py"]) == "/a/b"
    assert common_dir(["/x/y", "/z"]) is None
    assert common_dir(["rel.py"]) is None
    assert short_path("/a/b/c.py", "/a/b") == "c.py"
    assert short_path("/a/b", "/a/b") == "."
    assert short_path("rel.py", "/a/b") == "rel.py"
    long = "/a/b/" + "x" * 60 + ".py"
    assert short_path(long, "/a/b") == "…" + ("x" * 60 + ".py")[-47:]
