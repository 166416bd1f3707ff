"""Payload texts written the way a hostile or merely odd writer might write them.

tests/strategies.py builds payloads from trees and dumps them with `json`;
this writes the text itself, character by character, so that everything the
text-level fast paths of `spanwatch.engine.payload` look at varies: keys and
values spelled with `\\uXXXX` escapes (either case of hex) and `\\/`, JSON in
string values nested several levels (each level escaped afresh), duplicate
keys hiding values, nesting at 125-129 levels, numbers at the edges of the
u64 and double ranges, every kind of whitespace (and some that JSON refuses),
control characters, lone surrogates, trailing commas, a BOM.
"""

from __future__ import annotations

import json
import random

from strategies import HOOK_NAMES, PATH_KEYS

OTHER_KEYS = ("x", "event", "hook_event_name", "tool_name", "tool", "name", "paths", "Path", "a:b")
STRINGS = ("/a", "b/c", "", "ü/日本", "x:y", "PreToolUse", 'a"b', "\\", "😀", "\x7f\u2028\ufeff")
EDGE_NUMBERS = (
    "-0", "1e400", "-1e400", "1E400", "1e-400", "1.7976931348623157e308",
    "1.7976931348623158e308", "1.7976931348623159e308", "1.79769313486231581e308",
    "18446744073709551615", "18446744073709551616", "18446744073709551616.0",
    "18446744073709551615.9", "-9223372036854775809", "1" + "0" * 308, "1" + "0" * 309,
    "0." + "0" * 400 + "1", "0e99999999999999999999", "1e99999999999999999999",
    "1e-99999999999999999999", "9" * 400 + "e-100",
)  # fmt: skip
REFUSED_BITS = ("NaN", "Infinity", "-Infinity", "nul", "01", "+1", "1.")


class PayloadWriter:
    """Writes payload texts from a seeded random source."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def payload(self) -> str:
        text = self.document(0)
        if self.rng.random() < 0.02:
            text = "\ufeff" + text
        return text

    def document(self, depth: int) -> str:
        """A JSON text, mostly an object, half the time a tool hook."""
        if self.rng.random() < 0.7:
            members = []
            if self.rng.random() < 0.5:
                key = self.rng.choice(("event", "hook_event_name"))
                members.append((self.string(key), self.string(self.rng.choice(HOOK_NAMES))))
            return self.space() + self.object(depth + 1, 8, members) + self.space()
        return self.space() + self.value(depth, 8) + self.space()

    def space(self) -> str:
        rng = self.rng
        if rng.random() < 0.7:
            return ""
        if rng.random() < 0.03:
            return rng.choice(("\x0c", "\x0b", "\u00a0", "\u2028"))  # not JSON whitespace
        return "".join(rng.choice(" \t\n\r") for _ in range(rng.randint(1, 3)))

    def string(self, text: str) -> str:
        """`text` as a JSON string literal, each character escaped or not at random."""
        rng = self.rng
        out = ['"']
        for char in text:
            code = ord(char)
            if char == '"':
                out.append(rng.choice(('\\"', "\\u0022")))
            elif char == "\\":
                out.append(rng.choice(("\\\\", "\\u005c", "\\u005C")))
            elif char == "/" and rng.random() < 0.3:
                out.append("\\/")
            elif code < 0x20:
                out.append(rng.choice((f"\\u{code:04x}", json.dumps(char)[1:-1])))
            elif rng.random() < 0.08:
                if code > 0xFFFF:
                    v = code - 0x10000
                    out.append(f"\\u{0xD800 + (v >> 10):04x}\\u{0xDC00 + (v & 0x3FF):04x}")
                else:
                    out.append(f"\\u{code:04X}" if rng.random() < 0.5 else f"\\u{code:04x}")
            else:
                out.append(char)
        if rng.random() < 0.01:
            out.append(rng.choice(("\\ud800", "\\udc00", "\\x", "\x01", "\\ud83d\\ud83d")))
        out.append('"')
        return "".join(out)

    def number(self) -> str:
        rng = self.rng
        if rng.random() < 0.4:
            return rng.choice(EDGE_NUMBERS)
        digits = rng.choice((0, 5, 18, 19, 20, 21, 25, 308, 309))
        integer = str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(digits))
        if rng.random() < 0.5:
            integer = rng.choice(("0", "1", "17"))
        fraction = ""
        if rng.random() < 0.5:
            length = rng.choice((1, 2, 16, 17, 20, 30))
            fraction = "." + "".join(rng.choice("0123456789") for _ in range(length))
        exponent = ""
        if rng.random() < 0.6:
            power = rng.choice((0, 1, 290, 292, 307, 308, 309, 323, 324, 400, 2147483648))
            exponent = rng.choice("eE") + rng.choice(("", "+", "-")) + str(power)
        return rng.choice(("", "", "-")) + integer + fraction + exponent

    def value(self, depth: int, budget: int) -> str:
        rng = self.rng
        r = rng.random()
        if depth > 6 or budget <= 0 or r < 0.25:
            leaf = rng.random()
            if leaf < 0.35:
                return self.number()
            if leaf < 0.37:
                return rng.choice(REFUSED_BITS)
            if leaf < 0.45:
                return rng.choice(("true", "false", "null"))
            return self.string(rng.choice(STRINGS))
        if r < 0.4:
            return self.string(self.document(depth + 1))  # JSON in a string
        if r < 0.5:
            return self.deep(depth)
        if r < 0.7:
            items = [self.value(depth + 1, budget - 2) for _ in range(rng.randint(0, 3))]
            comma = "," if rng.random() < 0.02 else ""
            return "[" + self.space() + ("," + self.space()).join(items) + comma + "]"
        return self.object(depth + 1, budget - 2, [])

    def object(self, depth: int, budget: int, members: list[tuple[str, str]]) -> str:
        rng = self.rng
        for _ in range(rng.randint(0, 4)):
            key = rng.choice(PATH_KEYS if rng.random() < 0.5 else OTHER_KEYS)
            members.append((self.string(key), self.value(depth, budget)))
        if members and rng.random() < 0.3:  # a duplicate key: the last one wins
            members.append((rng.choice(members)[0], self.value(depth, budget)))
        rng.shuffle(members)
        body = ("," + self.space()).join(
            self.space() + k + self.space() + ":" + self.space() + v for k, v in members
        )
        return "{" + body + ("," if rng.random() < 0.02 else "") + "}"

    def deep(self, depth: int) -> str:
        """A value whose nesting ends at 125-129 levels counted from the document's top."""
        rng = self.rng
        levels = rng.choice((125, 126, 127, 128, 129)) - depth
        inner = rng.choice(('{"path":"/deep"}', '"x"', "1", '{"file":"{\\"path\\":\\"/in\\"}"}'))
        for _ in range(max(levels, 0)):
            inner = "[" + inner + "]" if rng.random() < 0.5 else '{"k":' + inner + "}"
        return inner
