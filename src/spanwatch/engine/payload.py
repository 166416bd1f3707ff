"""Reading event payloads the way the reference (serde_json) reads them.

The reference parses every payload with `serde_json::from_str` and treats a
payload that does not parse as JSON `null`. orjson agrees with serde_json on
everything that matters here (NaN and Infinity rejected, numbers beyond the
double range rejected, unpaired surrogate escapes rejected, no trailing
content) except nesting depth: serde_json refuses 128 levels or more, orjson
allows more; and numbers at the very top of the double range, where serde_json's
arithmetic is not correctly rounded (see `serde_numbers`). Both are checked on
the parsed value while it is walked for paths. serde checks them while
parsing, so a deep value or an edge number under a key that a later duplicate
overwrites still fails, though the parsed value no longer holds it: texts with
duplicate keys that could hide either, and texts with an edge number, go to a
slow exact parse (the stdlib parser with serde_json's rules added).

This runs on every payload of a rebuild, so the text is looked at first:
payloads that cannot name a path key are not walked for paths, and tool
calls and results that cannot are not parsed at all. A payload is taken as
text or as its UTF-8 bytes, and looked at and parsed as bytes: the store
layer hands over the bytes it read (checked to be UTF-8), with no decoded
copy, which for a long non-ASCII tool output is a str of two or four bytes
a character, made and walked for nothing.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, TypeAlias

import orjson

from spanwatch.engine.serde_numbers import EDGE, serde_number_in_range

#: A payload as the engine takes it: text, or that text's UTF-8 bytes.
PayloadText: TypeAlias = str | bytes

#: serde_json's recursion limit: a document nested this deep does not parse.
MAX_DEPTH: Final = 128

#: Object keys whose non-empty string values are file paths.
PATH_KEYS: Final = frozenset(
    {"path", "file_path", "target_file", "file", "relative_workspace_path"}
)

#: The shortest JSON text that names a path: {"file":"x"} (longer in any other form).
_MIN_PATH_JSON: Final = len('{"file":"x"}')

#: First characters of a string that could parse to a JSON value holding paths.
#: Numbers, booleans and null parse too, but hold nothing, so are not tried.
_CONTAINER_STARTS: Final = frozenset('{["')
_JSON_SPACE: Final = " \t\n\r"
#: First characters of a string worth a closer look for JSON within.
_JSON_STARTS: Final = _CONTAINER_STARTS | frozenset(_JSON_SPACE)


_NOT_BRACKET: Final = re.compile(rb"[^\[\]{}]+")
_NOT_JSON_SPACE: Final = re.compile(r"[^ \t\n\r]")

#: A path key in quotes; the closing quote is escaped once per level of
#: JSON-in-a-string (the opening one too, but its backslashes come before it).
#: As text, for strings within a parsed payload, and as bytes, for payloads.
_PATH_KEY: Final = re.compile('"(?:' + "|".join(sorted(PATH_KEYS)) + r')\\*"')
_PATH_KEY_UTF8: Final = re.compile(_PATH_KEY.pattern.encode())

#: Where a number of magnitude 2**64 or more could be: 20 digits in a row, or
#: a digit before an exponent. Without either, no number can reach EDGE.
_MAY_BE_BIG: Final = re.compile(rb"[0-9]{20}|[0-9][eE]")


class Payload:
    """A payload parsed once, with its paths found on first use.

    `value` is None when the text is JSON `null` or does not parse under
    serde_json's rules (including the depth limit).
    """

    __slots__ = ("_paths", "value")

    def __init__(self, text: PayloadText, *, names_path: bool | None = None) -> None:
        value, paths = _parse(_utf8(text), names_path)
        self._paths: list[str] | None = paths
        self.value: Any = value

    def paths(self) -> list[str]:
        """The paths found in the payload, unsorted, possibly repeated."""
        if self._paths is None:
            self._paths = []
            if isinstance(self.value, str):
                _walk_strings([self.value], self._paths)
        return self._paths


def may_name_path(text: PayloadText) -> bool:
    """False when no key of PATH_KEYS can occur in the payload, at any depth.

    A path key shows in the text between quotes, or, where a letter of it or
    a quote or backslash around it is spelled as an escape, as `\\u00` (all
    of those are below U+0100). Texts with neither need no parse or walk for paths.
    """
    if isinstance(text, bytes):
        # Bytes are searched with `find`, not `in`: on Python 3.11, `needle in
        # data` first tries the needle as a byte value (an int) and raises,
        # formats and clears a TypeError: ~2,000 instructions, on every payload.
        return _PATH_KEY_UTF8.search(text) is not None or text.find(b"\\u00") >= 0
    return _PATH_KEY.search(text) is not None or "\\u00" in text


def payload_paths(text: PayloadText) -> list[str]:
    """The paths a payload names, unsorted, possibly repeated; parsed only if it may name one."""
    if not may_name_path(text):
        return []
    return Payload(text, names_path=True).paths()


def may_be_tool_hook(text: PayloadText) -> bool:
    """False when the payload cannot name a PreToolUse/PostToolUse hook (either spelling)."""
    if isinstance(text, bytes):
        # `find`, not `in`: see may_name_path.
        return text.find(b"ToolUse") >= 0 or text.find(b"tool_use") >= 0 or text.find(b"\\u") >= 0
    return "ToolUse" in text or "tool_use" in text or "\\u" in text


def parse_payload(text: PayloadText) -> Any:
    """The payload as serde_json would give it, or None for null or invalid text."""
    return Payload(text).value


def paths_from_payload(text: PayloadText) -> list[str]:
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


def _utf8(text: PayloadText) -> bytes:
    """A payload's UTF-8 bytes. A str that no UTF-8 spells (a lone surrogate, which
    no store row can hold) keeps its bytes, and fails to parse as JSON."""
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")


def _parse(utf8: bytes, names_path: bool | None = None) -> tuple[Any, list[str] | None]:
    """serde_json::from_str (None where it fails) and, for containers, the paths within,
    JSON in its string values included."""
    value, paths, strings = _parse_one(utf8, names_path)
    if strings and paths is not None:
        _walk_strings(strings, paths)
    return value, paths


def _parse_one(
    text: bytes, names_path: bool | None = None
) -> tuple[Any, list[str] | None, list[str]]:
    """serde_json::from_str (None where it fails), the paths of a container, and its
    string values that may hold JSON with paths (not walked yet).

    The parsed value is walked once for paths (skipped where the text names
    no path key), depth and numbers at the edge of the range. A duplicate key
    can hide a value the walk never sees; that matters only where the text
    could hold an edge number or nest too deep, and then the exact parse
    decides.
    """
    value = _loads(text)
    if not isinstance(value, dict | list):
        return value, None, []
    if names_path is None:
        names_path = may_name_path(text)
    walk = _Walk(collect=names_path)
    if not walk.container(value, 1):
        return None, None, []
    if walk.edge or _may_hide_values(text, value, walk):
        value = _loads_exact(text)
        if not isinstance(value, dict | list):
            return value, None, []
        walk = _Walk(collect=True)
        walk.container(value, 1)
    return value, walk.paths, walk.strings


def _may_hide_values(text: bytes, value: dict[str, Any] | list[Any], walk: _Walk) -> bool:
    """Whether duplicate keys may hide a value that serde_json would refuse.

    Only an edge number or nesting too deep can be refused there (orjson
    refuses all else serde does, hidden or not). Each object member in the
    text has one colon outside strings; every other colon is a character of a
    string. So with no duplicates, the text's colons are the parsed value's
    members plus the colons in its keys and strings, which is what the
    parsed value's keys and strings hold, and any more mean duplicates
    (unless `\\u003a` escapes spell colons: then colons outside strings are
    counted). The parsed value's are counted in orjson's writing of it, which
    escapes no colon: a walk in C. A payload longer than _WRITE_OUT_UNDER has
    most of its bytes in a few long strings, which `str.count` scans where
    they are, while orjson would copy them (as UTF-8, from two or four bytes
    a character); a walk of their own counts them.
    """
    colons = _occurrences(text, b":")
    if colons <= walk.members:
        return False
    if text.find(b"\\u003") >= 0:  # `find`, not `in`: see may_name_path
        duplicates = _occurrences(_outside_strings(text), b":") > walk.members
    elif len(text) <= _WRITE_OUT_UNDER:
        try:
            duplicates = colons > _occurrences(orjson.dumps(value), b":")
        except orjson.JSONEncodeError:  # not from orjson's parse; the exact parse decides
            duplicates = True
    else:
        duplicates = colons > walk.members + _colons_in_strings(value)
    if not duplicates:
        return False
    return _brackets(text) >= MAX_DEPTH or _MAY_BE_BIG.search(text) is not None


#: Payloads up to this size are written out by orjson to count the colons of
#: their parsed value; a longer one's few long strings are counted where they are.
_WRITE_OUT_UNDER: Final = 4096


def _occurrences(text: bytes, byte: bytes) -> int:
    """`text.count(byte)`, four times as fast on a long text with few of them.

    CPython counts one byte with a plain loop over the text, but finds it with
    memchr, which `replace` uses to count them before it copies the rest.
    """
    return len(text) - len(text.replace(byte, b""))


def _brackets(text: bytes) -> int:
    """The opening brackets of arrays and objects in `text`, inside strings or not."""
    return _occurrences(text, b"[") + _occurrences(text, b"{")


def _colons_in_strings(value: dict[str, Any] | list[Any]) -> int:
    """Colons in the keys and string values of a parsed container, at any depth.

    Recursive like `_Walk`, and called only on a value `_Walk` accepted, so
    never nested MAX_DEPTH deep.
    """
    count = 0
    if type(value) is dict:
        count += "".join(value).count(":")
        items: Any = value.values()
    else:
        items = value
    for item in items:
        kind = type(item)
        if kind is str:
            count += item.count(":")
        elif kind is dict or kind is list:
            count += _colons_in_strings(item)
    return count


def _loads(text: bytes) -> Any:
    """orjson's parse, with serde_json's verdict where they may differ."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # orjson refuses numbers that overflow; serde_json keeps a few of those.
        return _loads_exact(text) if "infinity" in str(exc) else None
    except RecursionError:
        return None
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


def _loads_exact(text: bytes) -> Any:
    """The slow path: the stdlib parser with serde_json's refusals added.

    Depth is checked first, on the text: a value nested hundreds deep would
    take the stdlib parser and the surrogate check (both recursive) close to
    Python's recursion limit, and past it from a deep enough caller. A text
    that is not JSON at all may be called too deep; it is refused either way.
    """
    if _too_deep(text):
        return None
    try:
        value = json.loads(
            text.decode("utf-8"),
            parse_float=_float,
            parse_int=_int,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except (ValueError, _Refused, RecursionError):  # UnicodeDecodeError included
        return None
    if _has_lone_surrogate(value):
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


def _too_deep(text: bytes) -> bool:
    """Whether valid JSON `text` nests MAX_DEPTH or more arrays and objects (for text
    that is not JSON, the answer means nothing)."""
    if _brackets(text) < MAX_DEPTH:
        return False
    outside = _outside_strings(text)
    if _brackets(outside) < MAX_DEPTH:
        return False
    depth = 0
    for bracket in _NOT_BRACKET.sub(b"", outside):
        if bracket in b"[{":
            depth += 1
            if depth >= MAX_DEPTH:
                return True
        else:
            depth -= 1
    return False


def _outside_strings(text: bytes) -> bytes:
    """The parts of valid JSON `text` that are not inside string literals.

    In valid JSON a backslash only starts an escape inside a string, so with
    escaped backslashes and escaped quotes gone, quotes alternate between
    opening and closing strings: every other piece is outside all strings.
    """
    unescaped = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(unescaped.split(b'"')[0::2])


class _Walk:
    """One walk over a parsed container: paths (if collected), members, depth, edge numbers.

    This is the hottest loop of a rebuild, hence `type(...) is` over isinstance,
    and objects and arrays walked by loops of their own.
    """

    __slots__ = ("collect", "edge", "members", "paths", "strings")

    def __init__(self, *, collect: bool) -> None:
        self.collect = collect
        self.paths: list[str] = []
        self.strings: list[str] = []
        """String values that may hold JSON naming paths, for `_walk_strings`: walked
        after this walk, not within it, so that Python's recursion never holds one
        128-deep walk inside another (serde_json's depth limit is per parse)."""
        self.members = 0
        """Object members walked, to compare with the text's (duplicate keys)."""
        self.edge = False
        """Whether a number at the edge of the range was seen."""

    def container(self, value: dict[str, Any] | list[Any], depth: int) -> bool:
        """Walk `value`, nested `depth` deep; False if it nests as deep as serde refuses."""
        if isinstance(value, dict):
            return self.object(value, depth)
        return self.array(value, depth)

    def object(self, value: dict[str, Any], depth: int) -> bool:
        if depth >= MAX_DEPTH:
            return False
        self.members += len(value)
        collect = self.collect
        for key, item in value.items():
            kind = type(item)
            if kind is str:
                if collect:
                    if item and key in PATH_KEYS:
                        self.paths.append(item)
                    if len(item) >= _MIN_PATH_JSON and item[0] in _JSON_STARTS:
                        self.strings.append(item)
            elif kind is dict:
                if not self.object(item, depth + 1):
                    return False
            elif kind is list:
                if not self.array(item, depth + 1):
                    return False
            elif kind is float and not -EDGE < item < EDGE:
                self.edge = True
        return True

    def array(self, value: list[Any], depth: int) -> bool:
        if depth >= MAX_DEPTH:
            return False
        collect = self.collect
        for item in value:
            kind = type(item)
            if kind is str:
                if collect and len(item) >= _MIN_PATH_JSON and item[0] in _JSON_STARTS:
                    self.strings.append(item)
            elif kind is dict:
                if not self.object(item, depth + 1):
                    return False
            elif kind is list:
                if not self.array(item, depth + 1):
                    return False
            elif kind is float and not -EDGE < item < EDGE:
                self.edge = True
        return True


def _walk_strings(pending: list[str], out: list[str]) -> None:
    """Walk JSON found inside string values (each with its own depth limit), and
    the JSON inside theirs, one after another: no recursion, however deep."""
    while pending:
        text = pending.pop()
        first = text[0] if text else ""
        if first in _JSON_SPACE:  # found without copying the text, often a long one
            found = _NOT_JSON_SPACE.search(text)
            first = found.group() if found else ""
        if first not in _CONTAINER_STARTS or not may_name_path(text):
            continue
        inner, paths, strings = _parse_one(text.encode(), names_path=True)
        if isinstance(inner, str):
            if inner:
                pending.append(inner)
        elif paths:
            out.extend(paths)
        pending.extend(strings)
