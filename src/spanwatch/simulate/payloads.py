"""The `payload` column of each kind of row, as each writer records it.

Hooks store the JSON their hook script received on stdin (Claude Code's hook
input), the transcript tail stores the content block of the transcript line,
the proxy stores a summary of the API exchange. Every function returns the
payload text; the tool output inside post-hook and tool-result payloads is
rendered here, at the moment the row is written, never kept in the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from spanwatch.simulate.tools import ToolUse, render_response


@dataclass(frozen=True, slots=True)
class Envelope:
    """What every hook payload of a session repeats."""

    session_id: str
    cwd: str
    transcript_path: str
    model: str

    def hook(self, event_name: str) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "transcript_path": self.transcript_path,
            "cwd": self.cwd,
            "permission_mode": "default",
            "hook_event_name": event_name,
        }


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def pre_tool_hook(env: Envelope, use: ToolUse, *, with_id: bool) -> str:
    body = env.hook("PreToolUse")
    body["tool_name"] = use.name
    body["tool_input"] = use.tool_input
    if with_id:
        body["tool_use_id"] = use.call_id
    return _dumps(body)


def post_tool_hook(env: Envelope, use: ToolUse, *, with_id: bool) -> str:
    body = env.hook("PostToolUse")
    body["tool_name"] = use.name
    body["tool_input"] = use.tool_input
    body["tool_response"] = render_response(use)[0]
    if with_id:
        body["tool_use_id"] = use.call_id
    return _dumps(body)


def tail_tool_call(use: ToolUse) -> str:
    body: dict[str, Any] = {
        "type": "tool_use",
        "id": use.call_id,
        "name": use.name,
        "input": use.tool_input,
        "isSidechain": use.parent_call_id is not None,
    }
    if use.parent_call_id is not None:
        body["parent_tool_use_id"] = use.parent_call_id
    return _dumps(body)


def tail_tool_result(use: ToolUse) -> str:
    body: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": use.call_id,
        "content": render_response(use)[1],
        "is_error": False,
        "isSidechain": use.parent_call_id is not None,
    }
    return _dumps(body)


def message(role: str, text: str, *, parent_call_id: str | None) -> str:
    body: dict[str, Any] = {
        "type": role,
        "message": {"role": role, "content": [{"type": "text", "text": text}]},
        "isSidechain": parent_call_id is not None,
    }
    if parent_call_id is not None:
        body["parent_tool_use_id"] = parent_call_id
    return _dumps(body)


def cost(env: Envelope, request_id: str, tokens_in: int, tokens_out: int, stop: str) -> str:
    usage = {"input_tokens": tokens_in, "output_tokens": tokens_out}
    return _dumps({"model": env.model, "request_id": request_id, "usage": usage, "stop": stop})


def api_error(env: Envelope, request_id: str) -> str:
    error = {"type": "overloaded_error", "message": "Overloaded"}
    return _dumps({"model": env.model, "request_id": request_id, "status": 529, "error": error})


def lifecycle(env: Envelope, event_name: str, **extra: Any) -> str:
    return _dumps({**env.hook(event_name), **extra})


def prompt_hook(env: Envelope, prompt: str) -> str:
    return _dumps({**env.hook("UserPromptSubmit"), "prompt": prompt})
