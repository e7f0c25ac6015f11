"""Splitting a long reply into platform-sized parts, on line boundaries where possible."""

from __future__ import annotations


def split_text(text: str, limit: int) -> list[str]:
    """Parts of at most ``limit`` characters; lines stay whole unless one alone is too long."""
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > limit:  # a single over-long line is cut hard
            if current:
                parts.append(current)
                current = ""
            parts.append(line[:limit])
            line = line[limit:]
        if len(current) + len(line) > limit:
            parts.append(current)
            current = ""
        current += line
    if current:
        parts.append(current)
    return [p.rstrip("\n") or p for p in parts]
