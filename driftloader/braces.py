"""Shell-style brace expansion of shard URL patterns (``a-{000..002}.tar``, ``{x,y}/s.tar``),
as webdataset's ``braceexpand`` gives them."""

from __future__ import annotations

import re

_BRACE_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def braceexpand(pattern: str) -> list[str]:
    """Expand shell-style braces: ``a-{000..002}.tar``, ``{x,y}/s.tar``; nested braces too."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    end = _matching_brace(pattern, start)
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    rests = braceexpand(tail)
    return [head + alt + rest for alt in _brace_alternatives(body) for rest in rests]


def _matching_brace(pattern: str, start: int) -> int:
    depth = 0
    for i in range(start, len(pattern)):
        depth += {"{": 1, "}": -1}.get(pattern[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced brace in URL pattern {pattern!r}")


def _brace_alternatives(body: str) -> list[str]:
    match = _BRACE_RANGE.match(body)
    if match:
        lo, hi = match.groups()
        width = len(lo) if lo.lstrip("-").startswith("0") else 0
        step = 1 if int(hi) >= int(lo) else -1
        return [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    parts, depth, current = [], 0, ""
    for char in body:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [expanded for part in parts for expanded in braceexpand(part)]
