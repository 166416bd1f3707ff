"""The tools a simulated agent uses: what each takes, how long it runs, what it returns.

Shapes follow Claude Code's hook payloads (`tool_input`, `tool_response`), so
file paths turn up where real ones do: `file_path` in Read/Edit/Write input,
`path` in Grep/Glob input, camelCase `filePath` in responses (which spanwatch's
path rule does not collect), `target_file` and `relative_workspace_path` in
IDE-style MCP tools, and JSON documents inside string values (MCP responses,
`jq` output of Bash). Tool output is sliced from a shared corpus at render time
so a session's plan stays small however large its payloads are.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from spanwatch.simulate.text import sentence, snippet

JsonObj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Project:
    """The repository a session works in: its directory and some of its files."""

    cwd: str
    files: tuple[str, ...]  # relative paths
    dirs: tuple[str, ...]  # relative paths

    def abs(self, rel: str) -> str:
        return f"{self.cwd}/{rel}"


@dataclass(slots=True)
class ToolUse:
    """One planned tool use: the plan's unit, rendered into up to four rows.

    `end_ms` is None for an interrupted use (no result, no post hook).
    `output_bytes` is the size of the tool's output text after payload scaling.
    """

    call_id: str
    spec: ToolSpec
    tool_input: JsonObj
    parent_call_id: str | None
    level: int
    project: Project
    start_ms: int = 0
    end_ms: int | None = None
    output_bytes: int = 0
    output_offset: int = 0
    children: int = 0

    @property
    def name(self) -> str:
        return self.spec.name


#: Builds a tool's input from the session's RNG and project.
InputMaker = Callable[[random.Random, Project], JsonObj]
#: Renders (post hook `tool_response`, transcript tool_result `content`) from a use.
ResponseMaker = Callable[[ToolUse], tuple[Any, str]]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool: selection weights, run time and output size ranges (log-uniform)."""

    name: str
    weight: float
    sub_weight: float
    duration_ms: tuple[int, int]
    output_bytes: tuple[int, int]
    make_input: InputMaker = field(repr=False)
    make_response: ResponseMaker = field(repr=False)


def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    """A value in [lo, hi] whose logarithm is uniform: many small, some large."""
    if hi <= lo:
        return lo
    low = math.log(max(lo, 1))
    return min(hi, max(lo, round(math.exp(rng.uniform(low, math.log(hi))))))


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _output(use: ToolUse) -> str:
    return snippet(use.output_offset, use.output_bytes)


def _pick_file(rng: random.Random, project: Project) -> str:
    return project.abs(rng.choice(project.files))


def _listing(use: ToolUse, per_entry: int) -> list[str]:
    files = use.project.files
    count = max(1, use.output_bytes // per_entry)
    return [use.project.abs(files[(use.output_offset + 7 * k) % len(files)]) for k in range(count)]


# -- Read -------------------------------------------------------------------------


def _read_input(rng: random.Random, project: Project) -> JsonObj:
    args: JsonObj = {"file_path": _pick_file(rng, project)}
    if rng.random() < 0.2:
        args["offset"] = rng.randrange(1, 400)
        args["limit"] = rng.choice((50, 100, 200))
    return args


def _read_response(use: ToolUse) -> tuple[Any, str]:
    text = _output(use)
    lines = text.count("\n")
    path = use.tool_input["file_path"]
    file = {"filePath": path, "content": text, "numLines": lines, "startLine": 1}
    return {"type": "text", "file": {**file, "totalLines": lines}}, text


# -- Edit, MultiEdit, Write -------------------------------------------------------


def _edit_pair(rng: random.Random) -> JsonObj:
    old = snippet(rng.randrange(1 << 20), rng.randrange(20, 140))
    return {"old_string": old, "new_string": old.replace("return", "yield", 1) + "  # fix"}


def _edit_input(rng: random.Random, project: Project) -> JsonObj:
    return {"file_path": _pick_file(rng, project), **_edit_pair(rng)}


def _patch(use: ToolUse) -> list[JsonObj]:
    start = 1 + use.output_offset % 300
    return [{"oldStart": start, "oldLines": 3, "newStart": start, "newLines": 3, "lines": []}]


def _edit_response(use: ToolUse) -> tuple[Any, str]:
    args = use.tool_input
    response = {
        "filePath": args["file_path"],
        "oldString": args["old_string"],
        "newString": args["new_string"],
        "originalFile": _output(use),
        "structuredPatch": _patch(use),
        "userModified": False,
        "replaceAll": False,
    }
    content = f"The file {args['file_path']} has been updated."
    return response, content


def _multi_edit_input(rng: random.Random, project: Project) -> JsonObj:
    edits = [_edit_pair(rng) for _ in range(rng.randrange(2, 4))]
    return {"file_path": _pick_file(rng, project), "edits": edits}


def _multi_edit_response(use: ToolUse) -> tuple[Any, str]:
    args = use.tool_input
    response = {
        "filePath": args["file_path"],
        "edits": args["edits"],
        "originalFileContents": _output(use),
        "structuredPatch": _patch(use),
    }
    return response, f"Applied {len(args['edits'])} edits to {args['file_path']}"


def _write_input(rng: random.Random, project: Project) -> JsonObj:
    rel = rng.choice(project.dirs) + f"/new_{rng.randrange(1000)}.py"
    return {"file_path": project.abs(rel), "content": snippet(rng.randrange(1 << 20), 300)}


def _write_response(use: ToolUse) -> tuple[Any, str]:
    path = use.tool_input["file_path"]
    response = {"type": "create", "filePath": path, "content": use.tool_input["content"]}
    return {**response, "structuredPatch": []}, f"File created successfully at: {path}"


# -- Bash -------------------------------------------------------------------------

_COMMANDS = (
    ("python -m pytest -q", "Run the test suite"),
    ("git status --short", "Show working tree status"),
    ("git diff --stat", "Summarise changes"),
    ("ls -la {dir}", "List directory"),
    ("ruff check {dir}", "Lint"),
    ("grep -rn TODO {dir}", "Find TODOs"),
    ("cat {file}", "Show file"),
)
#: A command whose output is a JSON document with "path" keys (JSON inside a string).
_JQ_COMMAND = "jq -c '{files: [.files[] | {path, size}]}' build/manifest.json"


def _bash_input(rng: random.Random, project: Project) -> JsonObj:
    if rng.random() < 0.15:
        # Output is a JSON document with "path" keys: JSON inside a string value.
        return {"command": _JQ_COMMAND, "description": "List build outputs"}
    command, description = rng.choice(_COMMANDS)
    command = command.format(dir=rng.choice(project.dirs), file=rng.choice(project.files))
    args: JsonObj = {"command": command, "description": description}
    if rng.random() < 0.1:
        args["timeout"] = 120000
    return args


def _bash_response(use: ToolUse) -> tuple[Any, str]:
    if use.tool_input["command"] == _JQ_COMMAND:
        entries = [{"path": p, "size": 1000 + i} for i, p in enumerate(_listing(use, 60))]
        stdout = _dumps({"files": entries})
    else:
        stdout = _output(use)
    response = {"stdout": stdout, "stderr": "", "interrupted": False, "isImage": False}
    return response, stdout


# -- Grep, Glob -------------------------------------------------------------------


def _grep_input(rng: random.Random, project: Project) -> JsonObj:
    args: JsonObj = {"pattern": rng.choice(("def rebuild", "TODO", "session_id", r"class \w+"))}
    if rng.random() < 0.6:
        args["path"] = project.abs(rng.choice(project.dirs))
    if rng.random() < 0.3:
        args["glob"] = "*.py"
    args["output_mode"] = rng.choice(("content", "files_with_matches"))
    return args


def _grep_response(use: ToolUse) -> tuple[Any, str]:
    if use.tool_input["output_mode"] == "content":
        text = _output(use)
        return {"mode": "content", "numFiles": 0, "filenames": [], "content": text}, text
    names = _listing(use, 70)
    response = {"mode": "files_with_matches", "filenames": names, "numFiles": len(names)}
    return response, f"Found {len(names)} files\n" + "\n".join(names)


def _glob_input(rng: random.Random, project: Project) -> JsonObj:
    args: JsonObj = {"pattern": rng.choice(("**/*.py", "src/**/*.py", "tests/test_*.py", "*.md"))}
    if rng.random() < 0.5:
        args["path"] = project.abs(rng.choice(project.dirs))
    return args


def _glob_response(use: ToolUse) -> tuple[Any, str]:
    names = _listing(use, 60)
    response = {"filenames": names, "durationMs": 12, "numFiles": len(names), "truncated": False}
    return response, "\n".join(names)


# -- WebFetch, TodoWrite ----------------------------------------------------------


def _web_fetch_input(rng: random.Random, project: Project) -> JsonObj:
    page = rng.choice(("sqlite/wal", "python/sqlite3", "systemd/sd_notify", "structlog"))
    return {"url": f"https://docs.example.org/{page}", "prompt": sentence(rng, 120)}


def _web_fetch_response(use: ToolUse) -> tuple[Any, str]:
    text = _output(use)
    response = {"bytes": len(text), "code": 200, "codeText": "OK", "result": text}
    return {**response, "durationMs": 640, "url": use.tool_input["url"]}, text


def _todo_input(rng: random.Random, project: Project) -> JsonObj:
    todos = [
        {
            "content": sentence(rng, 60),
            "status": rng.choice(("pending", "in_progress", "completed")),
            "activeForm": sentence(rng, 40),
        }
        for _ in range(rng.randrange(2, 6))
    ]
    return {"todos": todos}


def _todo_response(use: ToolUse) -> tuple[Any, str]:
    return {"oldTodos": [], "newTodos": use.tool_input["todos"]}, "Todos have been modified."


# -- IDE-style MCP tools (target_file, relative_workspace_path) --------------------


def _mcp_read_input(rng: random.Random, project: Project) -> JsonObj:
    return {"target_file": rng.choice(project.files), "should_read_entire_file": True}


def _mcp_text(document: JsonObj) -> str:
    """An MCP tool result: a JSON string whose text block is itself JSON."""
    return _dumps([{"type": "text", "text": _dumps(document)}])


def _mcp_read_response(use: ToolUse) -> tuple[Any, str]:
    text = _mcp_text({"file": use.tool_input["target_file"], "contents": _output(use)})
    return text, text


def _mcp_search_input(rng: random.Random, project: Project) -> JsonObj:
    return {"query": sentence(rng, 80), "target_directories": [rng.choice(project.dirs)]}


def _mcp_search_response(use: ToolUse) -> tuple[Any, str]:
    files = use.project.files
    count = max(1, use.output_bytes // 400)
    results = [
        {
            "relative_workspace_path": files[(use.output_offset + 3 * k) % len(files)],
            "snippet": snippet(use.output_offset + 977 * k, 300),
        }
        for k in range(count)
    ]
    text = _mcp_text({"results": results})
    return text, text


# -- Task (its duration is its subagent's) ----------------------------------------


def _task_input(rng: random.Random, project: Project) -> JsonObj:
    return {
        "description": sentence(rng, 40),
        "prompt": sentence(rng, 400),
        "subagent_type": rng.choice(("general-purpose", "Explore", "code-reviewer")),
    }


def _task_response(use: ToolUse) -> tuple[Any, str]:
    text = _output(use)
    response = {
        "status": "completed",
        "content": [{"type": "text", "text": text}],
        "totalDurationMs": (use.end_ms or use.start_ms) - use.start_ms,
        "totalToolUseCount": use.children,
    }
    return response, text


TASK = ToolSpec("Task", 0.0, 0.0, (0, 0), (300, 4_000), _task_input, _task_response)

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("Read", 28, 35, (3, 80), (300, 100_000), _read_input, _read_response),
    ToolSpec("Edit", 14, 6, (5, 150), (500, 60_000), _edit_input, _edit_response),
    ToolSpec("MultiEdit", 2, 1, (10, 250), (500, 60_000), _multi_edit_input, _multi_edit_response),
    ToolSpec("Write", 4, 1, (4, 120), (0, 0), _write_input, _write_response),
    ToolSpec("Bash", 18, 15, (40, 60_000), (20, 80_000), _bash_input, _bash_response),
    ToolSpec("Grep", 9, 18, (10, 1_500), (100, 30_000), _grep_input, _grep_response),
    ToolSpec("Glob", 6, 12, (5, 400), (100, 8_000), _glob_input, _glob_response),
    ToolSpec(
        "WebFetch", 2, 3, (300, 9_000), (2_000, 100_000), _web_fetch_input, _web_fetch_response
    ),
    ToolSpec("TodoWrite", 5, 0, (1, 12), (0, 0), _todo_input, _todo_response),
    ToolSpec(
        "mcp__ide__read_file", 1, 2, (15, 600), (300, 40_000), _mcp_read_input, _mcp_read_response
    ),
    ToolSpec(
        "mcp__ide__codebase_search",
        1,
        2,
        (80, 3_000),
        (300, 12_000),
        _mcp_search_input,
        _mcp_search_response,
    ),
)

#: Every tool's spec by name, Task included.
BY_NAME: dict[str, ToolSpec] = {spec.name: spec for spec in (*TOOLS, TASK)}


def render_response(use: ToolUse) -> tuple[Any, str]:
    """(post hook `tool_response`, transcript `content`) of a finished use."""
    return use.spec.make_response(use)
