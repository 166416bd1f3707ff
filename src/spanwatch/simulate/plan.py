"""The timeline of one simulated agent session, before seqs and arrival order.

An agent session is turns: the user prompts, the model answers in steps, each
step one API call that asks for one tool or several in parallel, until it ends
the turn. A Task tool runs a subagent whose steps (and Tasks, to `task_depth`)
happen inside the Task's own time window. A small share of tools is interrupted
by the user: they have a call and a pre hook but no result and no post hook.

Each tool use is recorded by up to three writers, each with its own timing:
hooks write at once (`ts_exact` 0), the transcript tail writes at its next poll
with the transcript's exact timestamps (`ts_exact` 1), the API proxy writes its
Cost rows late. The planner emits `Pending` rows in segments: every row of a
segment has `ts_ms` at or after the segment's start, and segments start in
time order, which is what lets `sessions` order rows by arrival lazily.

Times here are milliseconds on the session's own clock, starting at 0.
"""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

from spanwatch.simulate import payloads
from spanwatch.simulate.rows import (
    COST,
    ERROR,
    HOOK,
    HOOK_SOURCE,
    LIFECYCLE,
    MESSAGE,
    PROXY,
    TAIL,
    TOOL_CALL,
    TOOL_RESULT,
)
from spanwatch.simulate.text import sentence
from spanwatch.simulate.tools import TASK, TOOLS, Project, ToolSpec, ToolUse, log_uniform

#: Share of single-tool top-level steps the user interrupts.
INTERRUPT_SHARE = 0.02
#: Share of steps that call several tools at once.
PARALLEL_SHARE = 0.25
#: Share of top-level proxy calls that fail once (overloaded) before succeeding.
API_ERROR_SHARE = 0.01


@dataclass(slots=True)
class Pending:
    """A row whose seq and final arrival are not decided yet; payload rendered late."""

    ts_ms: int
    arrival_ms: int
    kind: str
    source: str
    render: Callable[[], str]
    ts_exact: int = 0
    seq_gap: int = 0
    tool: str | None = None
    tool_call_id: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    reasoning_tokens: int | None = None
    cost_usd_e6: int | None = None
    stop_reason: str | None = None
    latency_ms: int | None = None
    call_id: str | None = None
    parent_call_id: str | None = None


@dataclass(slots=True)
class Segment:
    """Rows planned together; none has `ts_ms` before `start_ms`."""

    start_ms: int
    rows: list[Pending] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Writers:
    """Which writers observe this session and how each behaves."""

    hooks: bool
    tail: bool
    proxy: bool
    hook_ids: bool  # hook payloads carry tool_use_id (older hook versions did not)
    tail_costs: bool  # the tail prices usage itself and fills cost_usd_e6
    result_tokens: bool  # the tail puts token counts on tool results too
    reasoning: bool  # the model reports reasoning tokens
    tail_poll_ms: int
    tail_phase_ms: int

    @classmethod
    def draw(cls, rng: random.Random) -> Writers:
        hooks = rng.random() < 0.9
        tail = rng.random() < 0.95 or not hooks
        poll = rng.randrange(50, 400)
        return cls(
            hooks=hooks,
            tail=tail,
            proxy=rng.random() < 0.8,
            hook_ids=rng.random() < 0.85,
            tail_costs=rng.random() < 0.4,
            result_tokens=rng.random() < 0.1,
            reasoning=rng.random() < 0.5,
            tail_poll_ms=poll,
            tail_phase_ms=rng.randrange(poll),
        )


@dataclass(frozen=True, slots=True)
class Usage:
    tokens_in: int
    tokens_out: int
    reasoning: int | None
    cost_usd_e6: int


def make_project(rng: random.Random) -> Project:
    name = rng.choice(("spanwatch", "billing-api", "webapp", "etl", "infra-tools"))
    pkg = name.replace("-", "_")
    dirs = (f"src/{pkg}", f"src/{pkg}/core", f"src/{pkg}/io", "tests", "docs")
    files = [f"{d}/{stem}.py" for d in dirs[:4] for stem in ("__init__", "main", "models", "util")]
    files += [f"tests/test_{stem}.py" for stem in ("main", "models", "io", "cli")]
    files += ["README.md", "pyproject.toml", "docs/design.md", "café/notes.md"]
    return Project(cwd=f"/home/dev/src/{name}", files=tuple(files), dirs=dirs)


def new_session_id(rng: random.Random) -> str:
    """A UUID4-shaped session id, as Claude Code uses, drawn from `rng`."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _tool_use_id(rng: random.Random) -> str:
    """A `toolu_01...` id: Anthropic's prefix and 22 random characters."""
    return f"toolu_01{rng.getrandbits(88):022x}"


def _text(value: str) -> Callable[[], str]:
    return lambda: value


class Planner:
    """Plans one session, segment by segment (see the module docstring)."""

    def __init__(
        self,
        session_id: str,
        rng: random.Random,
        *,
        tool_uses: int,
        task_depth: int,
        task_share: float,
        payload_scale: float,
    ) -> None:
        self.rng = rng
        self.budget = tool_uses
        self.task_depth = task_depth
        self.task_share = task_share
        self.payload_scale = payload_scale
        self.writers = Writers.draw(rng)
        self.project = make_project(rng)
        slug = self.project.cwd.replace("/", "-")
        self.env = payloads.Envelope(
            session_id=session_id,
            cwd=self.project.cwd,
            transcript_path=f"/home/dev/.claude/projects/{slug}/{session_id}.jsonl",
            model=rng.choice(("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5")),
        )
        self.context = rng.randrange(8_000, 20_000)
        self._requests = itertools.count(1)
        self._top = list(itertools.accumulate(spec.weight for spec in TOOLS))
        self._sub = list(itertools.accumulate(spec.sub_weight for spec in TOOLS))

    # -- segments ------------------------------------------------------------

    def segments(self) -> Iterator[Segment]:
        """The whole session: start, turns of steps, end."""
        rng = self.rng
        seg = Segment(0)
        if self.writers.hooks:
            self._hook(
                seg, 0, LIFECYCLE, payloads.lifecycle(self.env, "SessionStart", source="startup")
            )
        t = self._prompt(seg, log_uniform(rng, 300, 5_000))
        yield seg
        while True:
            interrupted = False
            for _ in range(rng.randint(1, 12)):
                if self.budget <= 0:
                    break
                seg = Segment(t)
                t, interrupted = self._step(seg, t, None, 0)
                yield seg
                if interrupted:
                    break
            seg = Segment(t)
            if not interrupted:
                t = self._final_answer(seg, t, None)
                if self.writers.hooks:
                    self._hook(seg, t, LIFECYCLE, payloads.lifecycle(self.env, "Stop"))
            yield seg
            t += log_uniform(rng, 3_000, 120_000)
            if self.budget <= 0:
                break
            seg = Segment(t)
            t = self._prompt(seg, t)
            yield seg
        if self.writers.hooks:
            seg = Segment(t)
            end = payloads.lifecycle(self.env, "SessionEnd", reason="prompt_input_exit")
            self._hook(seg, t, LIFECYCLE, end)
            yield seg

    # -- the agent's moves -----------------------------------------------------

    def _prompt(self, seg: Segment, t: int) -> int:
        """The user types a prompt at `t`; returns when the model starts on it."""
        text = sentence(self.rng, 400)
        if self.writers.hooks:
            self._hook(seg, t, HOOK, payloads.prompt_hook(self.env, text))
        self._tail(seg, t + 2, MESSAGE, _text(payloads.message("user", text, parent_call_id=None)))
        return t + self.rng.randrange(5, 40)

    def _step(
        self, seg: Segment, t: int, parent: ToolUse | None, level: int, limit: int | None = None
    ) -> tuple[int, bool]:
        """One API call that asks for tools, and those tools running.

        Returns when the step is over (all its tools done) and whether the user
        interrupted it.
        """
        rng = self.rng
        parent_id = parent.call_id if parent else None
        gen = log_uniform(rng, 700, 12_000)
        if self.writers.proxy and parent is None and rng.random() < API_ERROR_SHARE:
            request = f"req_{next(self._requests):06d}"
            self._proxy(seg, t + 300, ERROR, payloads.api_error(self.env, request), parent_id)
            gen += log_uniform(rng, 1_000, 6_000)
        ready = t + gen
        count = 1 if rng.random() >= PARALLEL_SHARE else rng.randint(2, 4)
        count = max(1, min(count, self.budget, limit or count))
        uses = [self._choose(level, parent_id) for _ in range(count)]
        usage = self._usage()
        self._cost(seg, ready, usage, stop="tool_use", gen_ms=gen, parent_id=parent_id)
        if rng.random() < 0.35:
            text = payloads.message("assistant", sentence(rng, 600), parent_call_id=parent_id)
            self._tail(seg, ready - 1, MESSAGE, _text(text), parent_id=parent_id)
        ends: list[int] = []
        interrupted = False
        for i, use in enumerate(uses):
            call_ts = ready + i
            start = call_ts + log_uniform(rng, 3, 40)
            use.start_ms = start
            if use.spec is TASK:
                end = self._subagent(seg, use, start, level)
            else:
                end = start + log_uniform(rng, *use.spec.duration_ms)
            lo, hi = use.spec.output_bytes
            # The real size drives the plan (context growth); the scaled one only the
            # payload, so a session's events and timing do not depend on payload_scale.
            real_bytes = log_uniform(rng, lo, hi) if hi else 0
            use.output_bytes = int(real_bytes * self.payload_scale)
            use.output_offset = rng.getrandbits(20)
            self.context += real_bytes // 4
            self._tool_call(seg, call_ts, use, usage)
            if self.writers.hooks:
                pre = partial(payloads.pre_tool_hook, self.env, use, with_id=self.writers.hook_ids)
                self._hook_use(seg, start, use, pre)
            if count == 1 and parent is None and use.spec is not TASK:
                interrupted = rng.random() < INTERRUPT_SHARE
            if interrupted:
                stop_at = start + rng.randrange(1, max(2, end - start))
                note = payloads.message(
                    "user", "[Request interrupted by user for tool use]", parent_call_id=None
                )
                self._tail(seg, stop_at, MESSAGE, _text(note))
                ends.append(stop_at)
                continue
            use.end_ms = end
            if self.writers.hooks:
                post = partial(
                    payloads.post_tool_hook, self.env, use, with_id=self.writers.hook_ids
                )
                self._hook_use(seg, end, use, post)
            self._tool_result(seg, end + rng.randrange(1, 20), use)
            ends.append(end + 20)
        return max(ends) + rng.randrange(5, 60), interrupted

    def _subagent(self, seg: Segment, task: ToolUse, start: int, level: int) -> int:
        """The Task's subagent, run from `start`; returns when the Task ends."""
        rng = self.rng
        quota = min(self.budget, rng.randint(3, 25))
        before = self.budget
        t = start + rng.randrange(60, 400)
        while self.budget > 0 and before - self.budget < quota:
            t, _ = self._step(seg, t, task, level + 1, limit=quota - (before - self.budget))
        task.children = before - self.budget
        t = self._final_answer(seg, t, task.call_id)
        end = t + rng.randrange(20, 80)
        if self.writers.hooks:
            done = payloads.lifecycle(self.env, "SubagentStop", stop_hook_active=False)
            self._hook(seg, end - 5, LIFECYCLE, done)
        return end

    def _final_answer(self, seg: Segment, t: int, parent_id: str | None) -> int:
        """The model's closing text of a turn (or of a subagent); returns when done."""
        gen = log_uniform(self.rng, 1_000, 8_000)
        self._cost(seg, t + gen, self._usage(), stop="end_turn", gen_ms=gen, parent_id=parent_id)
        text = payloads.message("assistant", sentence(self.rng, 600), parent_call_id=parent_id)
        self._tail(seg, t + gen, MESSAGE, _text(text), parent_id=parent_id)
        return t + gen + 1

    def _choose(self, level: int, parent_id: str | None) -> ToolUse:
        rng = self.rng
        self.budget -= 1
        if level < self.task_depth and self.budget >= 1 and rng.random() < self.task_share:
            spec: ToolSpec = TASK
        else:
            weights = self._top if level == 0 else self._sub
            spec = TOOLS[bisect.bisect(weights, rng.random() * weights[-1])]
        return ToolUse(
            call_id=_tool_use_id(rng),
            spec=spec,
            tool_input=spec.make_input(rng, self.project),
            parent_call_id=parent_id,
            level=level,
            project=self.project,
        )

    def _usage(self) -> Usage:
        rng = self.rng
        tokens_out = log_uniform(rng, 20, 3_000)
        reasoning = None
        if self.writers.reasoning:
            reasoning = log_uniform(rng, 50, 4_000) if rng.random() < 0.6 else 0
        tokens_in = self.context
        self.context += tokens_out + rng.randrange(100, 2_000)
        if self.context > 180_000:  # the agent compacts its context
            self.context = rng.randrange(20_000, 40_000)
        cost = tokens_in * 3 // 10 + (tokens_out + (reasoning or 0)) * 15
        return Usage(tokens_in, tokens_out, reasoning, cost)

    # -- rows, by writer ---------------------------------------------------------

    def _hook(self, seg: Segment, ts: int, kind: str, payload: str) -> None:
        arrival = ts + self.rng.randrange(0, 5)
        seg.rows.append(Pending(ts, arrival, kind, HOOK_SOURCE, _text(payload)))

    def _hook_use(self, seg: Segment, ts: int, use: ToolUse, render: Callable[[], str]) -> None:
        row = Pending(ts, ts + self.rng.randrange(0, 5), HOOK, HOOK_SOURCE, render, tool=use.name)
        row.tool_call_id = use.call_id if self.writers.hook_ids else None
        row.call_id = use.call_id
        row.parent_call_id = use.parent_call_id
        seg.rows.append(row)

    def _tail(
        self,
        seg: Segment,
        ts: int,
        kind: str,
        render: Callable[[], str],
        *,
        parent_id: str | None = None,
    ) -> Pending:
        """A transcript line, seen by the tail at its next poll after `ts`."""
        w = self.writers
        arrival = ((ts - w.tail_phase_ms) // w.tail_poll_ms + 1) * w.tail_poll_ms + w.tail_phase_ms
        # Transcript lines the tail does not store (progress, snapshots) leave seq gaps.
        gap = self.rng.randint(1, 3) if self.rng.random() < 0.15 else 0
        row = Pending(ts, arrival, kind, TAIL, render, ts_exact=1, seq_gap=gap)
        row.parent_call_id = parent_id
        if w.tail:
            seg.rows.append(row)
        return row

    def _tool_call(self, seg: Segment, ts: int, use: ToolUse, usage: Usage) -> None:
        row = self._tail(
            seg, ts, TOOL_CALL, partial(payloads.tail_tool_call, use), parent_id=use.parent_call_id
        )
        row.tool = use.name
        row.tool_call_id = row.call_id = use.call_id
        row.tokens_in, row.tokens_out = usage.tokens_in, usage.tokens_out
        row.reasoning_tokens = usage.reasoning
        row.cost_usd_e6 = usage.cost_usd_e6 if self.writers.tail_costs else None

    def _tool_result(self, seg: Segment, ts: int, use: ToolUse) -> None:
        row = self._tail(
            seg,
            ts,
            TOOL_RESULT,
            partial(payloads.tail_tool_result, use),
            parent_id=use.parent_call_id,
        )
        # Transcript tool results name the tool_use id but usually not the tool.
        row.tool = use.name if self.rng.random() < 0.3 else None
        row.tool_call_id = row.call_id = use.call_id
        if self.writers.result_tokens:
            row.tokens_in = use.output_bytes // 4
            row.tokens_out = 0

    def _proxy(
        self, seg: Segment, ts: int, kind: str, payload: str, parent_id: str | None
    ) -> Pending:
        """A proxy row: written after the response, and late (the proxy batches)."""
        arrival = ts + self.rng.randrange(150, 2_500)
        row = Pending(ts, arrival, kind, PROXY, _text(payload), parent_call_id=parent_id)
        seg.rows.append(row)
        return row

    def _cost(
        self, seg: Segment, ts: int, usage: Usage, *, stop: str, gen_ms: int, parent_id: str | None
    ) -> None:
        if not self.writers.proxy:
            return
        request = f"req_{next(self._requests):06d}"
        payload = payloads.cost(self.env, request, usage.tokens_in, usage.tokens_out, stop)
        row = self._proxy(seg, ts, COST, payload, parent_id)
        row.tokens_in, row.tokens_out = usage.tokens_in, usage.tokens_out
        row.reasoning_tokens = usage.reasoning
        row.cost_usd_e6 = usage.cost_usd_e6
        row.stop_reason = stop
        row.latency_ms = gen_ms
