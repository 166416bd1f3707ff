"""Reading event payloads the way the reference (serde_json) reads them.

The reference parses every payload with `serde_json::from_str` and treats a
payload that does not parse as JSON `null`. orjson agrees with serde_json on
everything that matters here (NaN and Infinity rejected, numbers beyond the
double range rejected, unpaired surrogate escapes rejected, no trailing
content) except nesting depth: serde_json refuses 128 levels or more, orjson
allows more. The depth is checked while the parsed value is walked, which the
path search does anyway.
"""

from __future__ import annotations

from typing import Any

import orjson

#: serde_json's recursion limit: a document nested this deep does not parse.
MAX_DEPTH = 128

#: Object keys whose non-empty string values are file paths.
PATH_KEYS = frozenset({"path", "file_path", "target_file", "file", "relative_workspace_path"})

#: First characters of a string that could parse to a JSON value holding paths.
#: Numbers, booleans and null parse too, but hold nothing, so are not tried.
_CONTAINER_STARTS = frozenset('{["')
_JSON_SPACE = " \t\n\r"


class _TooDeep(Exception):
    """Raised inside a walk when a document is nested past serde_json's limit."""


class Payload:
    """A payload parsed once, with its paths found on first use.

    `value` is None when the text is JSON `null` or does not parse under
    serde_json's rules (including the depth limit).
    """

    __slots__ = ("_paths", "value")

    def __init__(self, text: str) -> None:
        value = _loads(text)
        self._paths: list[str] | None = None
        if isinstance(value, dict | list):
            try:
                paths: list[str] = []
                _walk(value, 0, paths)
            except _TooDeep:
                value = None
            else:
                self._paths = paths
        self.value: Any = value

    def paths(self) -> list[str]:
        """The paths found in the payload, unsorted, possibly repeated."""
        if self._paths is None:
            self._paths = []
            if isinstance(self.value, str):
                _walk_string(self.value, self._paths)
        return self._paths


def parse_payload(text: str) -> Any:
    """The payload as serde_json would give it, or None for null or invalid text."""
    return Payload(text).value


def paths_from_payload(text: str) -> list[str]:
    """Sorted unique file paths named anywhere in the payload (DESIGN.md rules)."""
    return sorted(set(Payload(text).paths()))


def hook_kind(value: Any) -> str | None:
    """ "pre" or "post" for a tool hook payload; None for any other payload.

    A string `event` key wins; a missing or non-string one falls through to
    `hook_event_name`.
    """
    if not isinstance(value, dict):
        return None
    raw = value.get("event")
    if not isinstance(raw, str):
        raw = value.get("hook_event_name")
        if not isinstance(raw, str):
            return None
    if raw in ("PreToolUse", "pre_tool_use"):
        return "pre"
    if raw in ("PostToolUse", "post_tool_use"):
        return "post"
    return None


def hook_tool(value: Any) -> str | None:
    """The tool a hook payload names: the first of tool_name, tool, name that is a string."""
    if not isinstance(value, dict):
        return None
    for key in ("tool_name", "tool", "name"):
        tool = value.get(key)
        if isinstance(tool, str):
            return tool
    return None


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except (orjson.JSONDecodeError, RecursionError):
        return None


def _walk(value: dict[str, Any] | list[Any], depth: int, out: list[str]) -> None:
    """Collect paths from a container; raise _TooDeep at serde_json's depth limit."""
    depth += 1
    if depth >= MAX_DEPTH:
        raise _TooDeep
    items = value.values() if isinstance(value, dict) else value
    if isinstance(value, dict):
        for key, item in value.items():
            if key in PATH_KEYS and isinstance(item, str) and item:
                out.append(item)
    for item in items:
        if isinstance(item, str):
            if item:
                _walk_string(item, out)
        elif isinstance(item, dict | list):
            _walk(item, depth, out)


def _walk_string(text: str, out: list[str]) -> None:
    """Walk JSON found inside a string value, with its own depth limit."""
    first = text[0] if text else ""
    if first in _JSON_SPACE:
        stripped = text.lstrip(_JSON_SPACE)
        first = stripped[0] if stripped else ""
    if first not in _CONTAINER_STARTS:
        return
    inner = _loads(text)
    if isinstance(inner, str):
        if inner:
            _walk_string(inner, out)
    elif isinstance(inner, dict | list):
        found: list[str] = []
        try:
            _walk(inner, 0, found)
        except _TooDeep:
            return
        out.extend(found)
