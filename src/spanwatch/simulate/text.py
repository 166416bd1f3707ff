"""Filler text for generated payloads: tool output, prompts, assistant replies.

Tool output dominates a store's size, so producing it must be cheap: one
code-like corpus is built once per process (deterministically, from a fixed
seed) and outputs are slices of it. Lines look like Claude Code's Read output
(`   42→code`), so payloads contain newlines, quotes, tabs and non-ASCII text
that JSON has to escape, as real ones do.
"""

from __future__ import annotations

import random
from functools import cache

CORPUS_CHARS = 1 << 20

_WORDS = tuple(
    " ".join(
        (
            "session span store event tool hook proxy tail result call parent child depth",
            "token cost path file index watch debounce batch commit reader writer config",
            "parse build assign rollup record status error retry cache buffer stream queue",
            "schema column table migrate version value payload output input request reply",
        )
    ).split(" ")
)
_KEYWORDS = ("def", "class", "return", "if", "for", "while", "with", "raise", "yield", "assert")
_PUNCT = ("(", ")", ":", ", ", " = ", ".", '"', "'", "[", "]", "{", "}", " + ", "\t")


@cache
def corpus() -> str:
    """About one MiB of numbered, code-like lines; the same text in every process."""
    rng = random.Random(20240611)
    lines: list[str] = []
    size = 0
    number = 1
    while size < CORPUS_CHARS:
        indent = "    " * rng.randrange(4)
        parts = [rng.choice(_KEYWORDS)]
        for _ in range(rng.randrange(2, 9)):
            parts.append(rng.choice(_WORDS))
            parts.append(rng.choice(_PUNCT))
        if rng.random() < 0.02:
            parts.append("  # naïve → fixed")
        line = f"{number:>6}→{indent}{''.join(parts)}\n"
        lines.append(line)
        size += len(line)
        number += 1
    return "".join(lines)[:CORPUS_CHARS]


def snippet(offset: int, length: int) -> str:
    """`length` characters of the corpus from `offset` (wrapping around)."""
    text = corpus()
    start = offset % len(text)
    if length <= 0:
        return ""
    if start + length <= len(text):
        return text[start : start + length]
    parts = [text[start:]]
    remaining = length - len(parts[0])
    while remaining > 0:
        parts.append(text[:remaining])
        remaining -= len(parts[-1])
    return "".join(parts)


def sentence(rng: random.Random, max_chars: int) -> str:
    """A prose-like line of at most `max_chars` characters (at least one word)."""
    target = rng.randrange(max(2, max_chars // 4), max(3, max_chars))
    words = rng.choices(_WORDS, k=max(1, target // 7))
    return (" ".join(words).capitalize() + ".")[:max_chars]
