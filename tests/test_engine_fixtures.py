"""Realistic sessions (tests/fixtures/sessions.py): what a user of the span tree checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import oracle
from fixtures import sessions as s
from spanwatch.engine import build_span_records
from spanwatch.engine.events import Event, EventKind, EventSource
from spanwatch.engine.records import SpanRecord


def spans_of(events: list[Event]) -> dict[str, SpanRecord]:
    records = build_span_records(events)
    by_id = {r.span_id: r for r in records}
    assert len(by_id) == len(records)
    return by_id


@pytest.fixture(scope="module")
def session() -> dict[str, SpanRecord]:
    return spans_of(s.interleaved())


def ids(uses: list[s.ToolUse]) -> list[str]:
    return [u.id for u in uses]


def test_one_span_per_tool_use(session: dict[str, SpanRecord]) -> None:
    assert sorted(session) == sorted(ids(s.TOOL_USES))
    assert {r.session_id for r in session.values()} == {s.SESSION}
    assert all(r.tool_call_id == r.span_id for r in session.values())
    assert {r.span_id: r.tool for r in session.values()} == {u.id: u.tool for u in s.TOOL_USES}


def test_task_span_is_parent_of_subagent_tools(session: dict[str, SpanRecord]) -> None:
    task = session[s.TASK.id]
    assert (task.parent_span_id, task.depth) == (None, 0)
    for use in s.SUBAGENT_TOOL_USES:
        child = session[use.id]
        assert (child.parent_span_id, child.depth) == (s.TASK.id, 1), use.id


def test_main_agent_tools_are_top_level(session: dict[str, SpanRecord]) -> None:
    for use in s.MAIN_AGENT_TOOL_USES:
        assert (session[use.id].parent_span_id, session[use.id].depth) == (None, 0), use.id


def test_parallel_calls_with_crossing_intervals_are_siblings(
    session: dict[str, SpanRecord],
) -> None:
    stripe, models = session[s.SUB_READ_STRIPE.id], session[s.SUB_READ_MODELS.id]
    assert stripe.started_at_ms < models.started_at_ms < stripe.ended_at_ms < models.ended_at_ms  # type: ignore[operator]
    assert stripe.parent_span_id == models.parent_span_id == s.TASK.id
    edit_a, edit_b = session[s.EDIT_STRIPE.id], session[s.EDIT_MODELS.id]
    assert edit_a.parent_span_id is None and edit_b.parent_span_id is None


def test_task_subtree_cost_and_tokens_add_up(session: dict[str, SpanRecord]) -> None:
    task = session[s.TASK.id]
    # Task 41_000 + Grep 9_500 + Read stripe 10_800; Read models carries no cost.
    assert task.cost_usd_e6 == 41_000
    assert task.subtree_cost_usd_e6 == 61_300
    # (13_000 + 420) + (3_000 + 60) + (3_400 + 90); Read models has no tokens.
    assert task.subtree_token_count == 19_970


def test_root_subtrees_cover_every_span_cost(session: dict[str, SpanRecord]) -> None:
    roots = [r for r in session.values() if r.parent_span_id is None]
    all_costs = sum(r.cost_usd_e6 or 0 for r in session.values())
    assert sum(r.subtree_cost_usd_e6 or 0 for r in roots) == all_costs == 261_300


def test_proxy_cost_rows_are_not_span_costs() -> None:
    assert spans_of(s.proxy_only()) == {}
    store = s.interleaved()
    assert any(e.kind is EventKind.COST for e in store)
    without_proxy = [e for e in store if e.source is not EventSource.PROXY]
    assert spans_of(store) == spans_of(without_proxy)


def test_files_touched(session: dict[str, SpanRecord]) -> None:
    assert session[s.READ_README.id].paths == (s.README,)
    # The Grep's path input, and the file named in the JSON text of its result.
    assert session[s.SUB_GREP.id].paths == (s.PAYMENTS_DIR, s.STRIPE)
    assert session[s.EDIT_STRIPE.id].paths == (s.STRIPE,)
    assert session[s.EDIT_MODELS.id].paths == (s.MODELS,)
    assert session[s.WRITE_TEST.id].paths == (s.TEST_REFUND,)
    # filePath (tool_response) and filenames are not path keys.
    assert session[s.TASK.id].paths == ()
    assert session[s.BASH_INTERRUPTED.id].paths == ()
    touched = sorted({p for r in session.values() for p in r.paths})
    assert touched == sorted({s.README, s.PAYMENTS_DIR, s.STRIPE, s.MODELS, s.TEST_REFUND})
    assert session[s.SUB_GREP.id].paths_json == (
        '["/home/dev/shop/payments","/home/dev/shop/payments/stripe.py"]'
    )


def test_interrupted_tool_is_orphaned(session: dict[str, SpanRecord]) -> None:
    bash = session[s.BASH_INTERRUPTED.id]
    assert (bash.status, bash.started_at_ms, bash.ended_at_ms, bash.lead_time_ms) == (
        "orphaned",
        s.T0 + 5000,
        None,
        None,
    )
    assert (bash.cost_usd_e6, bash.subtree_token_count) == (49_000, 16_090)
    assert [r.span_id for r in session.values() if r.status != "done"] == [bash.span_id]


def test_lead_times_come_from_the_hook_pair(session: dict[str, SpanRecord]) -> None:
    lead = {u.id: session[u.id].lead_time_ms for u in s.TOOL_USES}
    assert lead == {
        s.READ_README.id: 42,
        s.TASK.id: 1005,
        s.SUB_GREP.id: 51,
        s.SUB_READ_STRIPE.id: 57,
        s.SUB_READ_MODELS.id: 91,
        s.EDIT_STRIPE.id: 61,
        s.EDIT_MODELS.id: 100,
        s.WRITE_TEST.id: 92,
        s.BASH_INTERRUPTED.id: None,
    }
    task = session[s.TASK.id]
    assert (task.started_at_ms, task.ended_at_ms) == (s.T0 + 2000, s.T0 + 3005)


def test_tail_only_results_without_tool_name_match_by_id() -> None:
    spans = spans_of(s.tail_only())
    assert sorted(spans) == sorted(ids(s.TOOL_USES))
    for use in s.TOOL_USES:
        span = spans[use.id]
        assert span.tool == use.tool
        assert span.started_at_ms == s.T0 + use.call
        assert span.ended_at_ms == (None if use.result is None else s.T0 + use.result)


def test_tail_only_lead_times_from_exact_call_and_result() -> None:
    spans = spans_of(s.tail_only())
    for use in s.TOOL_USES:
        expected = None if use.result is None else use.result - use.call
        assert spans[use.id].lead_time_ms == expected, use.id
    assert spans[s.TASK.id].lead_time_ms == 997


def test_every_recording_gives_the_same_tree() -> None:
    def tree(events: list[Event]) -> dict[str, tuple[str | None, int, str]]:
        return {k: (r.parent_span_id, r.depth, r.status) for k, r in spans_of(events).items()}

    full = tree(s.interleaved())
    assert tree(s.hooks_only()) == full
    assert tree(s.tail_only()) == full


def test_hooks_only_has_no_tokens_or_cost_but_all_input_paths() -> None:
    spans = spans_of(s.hooks_only())
    assert all(r.tokens_in is None and r.cost_usd_e6 is None for r in spans.values())
    assert all(r.subtree_cost_usd_e6 is None for r in spans.values())
    # Only the tail's result held the JSON text naming stripe.py.
    assert spans[s.SUB_GREP.id].paths == (s.PAYMENTS_DIR,)


def test_writer_without_ids_matches_by_tool_name() -> None:
    spans = spans_of(s.codex_session())
    shell = spans["codex-7:1:100"]
    assert (shell.tool, shell.tool_call_id, shell.status) == ("shell", None, "done")
    # The ToolCall joined the hook's span; the post hook (149) came before the result.
    assert (shell.started_at_ms, shell.ended_at_ms, shell.lead_time_ms) == (100, 149, 49)
    assert (shell.tokens_in, shell.cost_usd_e6, shell.subtree_token_count) == (500, 1_500, 520)
    patch = spans["codex-7:5:200"]
    assert (patch.started_at_ms, patch.ended_at_ms, patch.lead_time_ms) == (200, 260, None)
    assert patch.paths == ("src/lib.rs",)


def test_writer_without_ids_post_hook_after_result_is_a_separate_orphan() -> None:
    # The apply_patch span had ended (its result came first), so its post hook
    # found no open span of that tool and opened one with an end only.
    spans = spans_of(s.codex_session())
    assert set(spans) == {"codex-7:1:100", "codex-7:5:200", "codex-7:8:261"}
    late = spans["codex-7:8:261"]
    assert (late.tool, late.status, late.started_at_ms, late.ended_at_ms) == (
        "apply_patch",
        "orphaned",
        None,
        261,
    )
    assert (late.parent_span_id, late.depth) == (None, 0)


@pytest.mark.parametrize(
    "recording",
    [s.interleaved, s.hooks_only, s.tail_only, s.proxy_only, s.codex_session],
    ids=lambda f: f.__name__,
)
def test_fixture_matches_oracle(recording: Callable[[], list[Event]]) -> None:
    events = recording()
    assert set(build_span_records(events)) == set(oracle.oracle_records(events))
