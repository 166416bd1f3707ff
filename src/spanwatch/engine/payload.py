"""Reading event payloads the way the reference (serde_json) reads them.

The reference parses every payload with `serde_json::from_str` and treats a
payload that does not parse as JSON `null`. orjson agrees with serde_json on
everything that matters here (NaN and Infinity rejected, numbers beyond the
double range rejected, unpaired surrogate escapes rejected, no trailing
content) except nesting depth: serde_json refuses 128 levels or more, orjson
allows more; and numbers at the very top of the double range, where serde_json's
arithmetic is not correctly rounded (see `serde_numbers`). The depth is checked
on the text, not on the parsed value: serde counts it while parsing, so a deep
value under a key that a later duplicate overwrites still fails, though the
parsed value no longer holds it. A number at the edge of the range sends the
text to a slow exact parse (the stdlib parser with serde_json's rules added).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import orjson

from spanwatch.engine.serde_numbers import EDGE, serde_number_in_range

#: serde_json's recursion limit: a document nested this deep does not parse.
MAX_DEPTH = 128

#: Object keys whose non-empty string values are file paths.
PATH_KEYS = frozenset({"path", "file_path", "target_file", "file", "relative_workspace_path"})

#: The shortest JSON text that names a path: {"file":"x"} (longer in any other form).
_MIN_PATH_JSON = len('{"file":"x"}')

#: First characters of a string that could parse to a JSON value holding paths.
#: Numbers, booleans and null parse too, but hold nothing, so are not tried.
_CONTAINER_STARTS = frozenset('{["')
_JSON_SPACE = " \t\n\r"


_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class Payload:
    """A payload parsed once, with its paths found on first use.

    `value` is None when the text is JSON `null` or does not parse under
    serde_json's rules (including the depth limit).
    """

    __slots__ = ("_paths", "value")

    def __init__(self, text: str) -> None:
        value, paths = _parse(text)
        self._paths: list[str] | None = paths
        self.value: Any = value

    def paths(self) -> list[str]:
        """The paths found in the payload, unsorted, possibly repeated."""
        if self._paths is None:
            self._paths = []
            if isinstance(self.value, str):
                _walk_string(self.value, self._paths)
        return self._paths


def may_name_path(text: str) -> bool:
    """False when no key of PATH_KEYS can occur in the payload, at any depth.

    Every path key contains "path" or "file"; a key spelled with \\u escapes
    shows a backslash-u. Texts without any of these need no parse for paths.
    """
    return "path" in text or "file" in text or "\\u" in text


def may_be_tool_hook(text: str) -> bool:
    """False when the payload cannot name a PreToolUse/PostToolUse hook (either spelling)."""
    return "ToolUse" in text or "tool_use" in text or "\\u" in text


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


def _parse(text: str) -> tuple[Any, list[str] | None]:
    """serde_json::from_str (None where it fails) and, for containers, the paths within."""
    value = _loads(text)
    if not isinstance(value, dict | list):
        return value, None
    paths: list[str] = []
    members = [0]
    if _walk(value, paths, members) or _may_hide_values(text, members[0]):
        # A number at the edge of the range, or a duplicate key whose earlier
        # value the parse dropped unseen: let serde_json's rules decide.
        value = _loads_exact(text)
        if not isinstance(value, dict | list):
            return value, None
        paths = []
        _walk(value, paths, members)
    return value, paths


def _may_hide_values(text: str, members: int) -> bool:
    """Whether the text has more object members than the parsed value: duplicate keys.

    Every member has one colon outside strings, so the colon count of the
    whole text is a cheap upper bound; only when it exceeds `members` are the
    colons outside strings counted exactly.
    """
    if text.count(":") <= members:
        return False
    return _outside_strings(text).count(":") > members


def _loads(text: str) -> Any:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # orjson refuses numbers that overflow; serde_json keeps a few of those.
        return _loads_exact(text) if "infinity" in str(exc) else None
    except RecursionError:
        return None
    if isinstance(value, dict | list):
        return None if _too_deep(text) else value
    if isinstance(value, float) and abs(value) >= EDGE:
        return _loads_exact(text)
    return value


class _Refused(Exception):
    """serde_json would not parse this text."""


def _float(token: str) -> float:
    if not serde_number_in_range(token):
        raise _Refused
    return float(token)


def _int(token: str) -> int | float:
    """serde_json keeps integers that fit i64/u64 and reads longer ones as f64."""
    if not serde_number_in_range(token):
        raise _Refused
    if len(token) <= 20:
        value = int(token)
        if -(2**63) <= value < 2**64:
            return value
    return float(token)


def _constant(token: str) -> Any:
    raise _Refused  # NaN, Infinity, -Infinity


def _loads_exact(text: str) -> Any:
    """The slow path: the stdlib parser with serde_json's refusals added."""
    try:
        value = json.loads(
            text,
            parse_float=_float,
            parse_int=_int,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except (ValueError, _Refused, RecursionError):
        return None
    if _has_lone_surrogate(value):
        return None
    if isinstance(value, dict | list) and _too_deep(text):
        return None
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as serde_json builds it (the last duplicate wins), refusing what it
    refuses in every member, even one a later duplicate key overwrites."""
    for key, value in pairs:
        if _has_lone_surrogate(key) or _has_lone_surrogate(value):
            raise _Refused
    return dict(pairs)


def _has_lone_surrogate(value: Any) -> bool:
    """The stdlib decodes `"\\ud800"` to a lone surrogate; serde_json refuses it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def _too_deep(text: str) -> bool:
    """Whether valid JSON `text` nests MAX_DEPTH or more arrays and objects."""
    if text.count("[") + text.count("{") < MAX_DEPTH:
        return False
    outside = _outside_strings(text)
    if outside.count("[") + outside.count("{") < MAX_DEPTH:
        return False
    depth = 0
    for bracket in _NOT_BRACKET.sub("", outside):
        if bracket in "[{":
            depth += 1
            if depth >= MAX_DEPTH:
                return True
        else:
            depth -= 1
    return False


def _outside_strings(text: str) -> str:
    """The parts of valid JSON `text` that are not inside string literals.

    In valid JSON a backslash only starts an escape inside a string, so with
    escaped backslashes and escaped quotes gone, quotes alternate between
    opening and closing strings: every other piece is outside all strings.
    """
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    return "".join(unescaped.split('"')[0::2])


def _walk(value: dict[str, Any] | list[Any], out: list[str], members: list[int]) -> bool:
    """Collect paths from a container; True if a number at the edge of the range was seen.

    `members[0]` counts the object members walked. The container's depth is
    already known to be within serde_json's limit.
    This is the hottest loop of a rebuild, hence `type(...) is` over isinstance.
    """
    edge = False
    if type(value) is dict:
        members[0] += len(value)
        pairs: Iterable[tuple[str | None, Any]] = value.items()
    else:
        pairs = ((None, item) for item in value)
    for key, item in pairs:
        kind = type(item)
        if kind is str:
            if item and key in PATH_KEYS:
                out.append(item)
            if len(item) >= _MIN_PATH_JSON:
                _walk_string(item, out)
        elif kind is dict or kind is list:
            edge = _walk(item, out, members) or edge
        elif kind is float and not -EDGE < item < EDGE:
            edge = True
    return edge


def _walk_string(text: str, out: list[str]) -> None:
    """Walk JSON found inside a string value, with its own depth limit."""
    first = text[0] if text else ""
    if first in _JSON_SPACE:
        stripped = text.lstrip(_JSON_SPACE)
        first = stripped[0] if stripped else ""
    if first not in _CONTAINER_STARTS:
        return
    inner, paths = _parse(text)
    if isinstance(inner, str):
        if inner:
            _walk_string(inner, out)
    elif paths:
        out.extend(paths)
