"""Splitting a long reply into platform-sized parts, on line boundaries where possible, and
sending them in order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from channels.base import ChannelAck, FailureMode


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: in UTF-16 code units (an emoji can count two)."""
    return len(text.encode("utf-16-le")) // 2


def _cut(line: str, limit: int, measure: Callable[[str], int]) -> int:
    """The longest prefix of ``line`` (in characters) that measures at most ``limit``."""
    end = min(len(line), limit)
    while measure(line[:end]) > limit:
        end -= 1
    return max(end, 1)


def split_text(text: str, limit: int, measure: Callable[[str], int] = len) -> list[str]:
    """Parts measuring at most ``limit``; lines stay whole unless one alone is too long."""
    if measure(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while measure(line) > limit:  # a single over-long line is cut hard
            if current:
                parts.append(current)
                current = ""
            end = _cut(line, limit, measure)
            parts.append(line[:end])
            line = line[end:]
        if measure(current) + measure(line) > limit:
            parts.append(current)
            current = ""
        current += line
    if current:
        parts.append(current)
    return [p.rstrip("\n") or p for p in parts]


async def send_parts(
    parts: list[str], skip: int, send: Callable[[int, str], Awaitable[ChannelAck]]
) -> ChannelAck:
    """Send ``parts[skip:]`` in order with ``send(index, part)``, stopping at the first failure.

    ``parts_delivered`` counts the parts this call delivered, so a retry skips exactly those
    (the push's ``skip_parts`` grows by it) and never posts a part twice."""
    sent: list[str] = []
    delivered = 0
    for index in range(skip, len(parts)):
        ack = await send(index, parts[index])
        if not ack.ok:
            return ack.model_copy(update={"parts_delivered": delivered})
        sent += ack.platform_message_ids
        delivered += 1
    return ChannelAck(
        mode=FailureMode.DELIVERED, platform_message_ids=sent, parts_delivered=delivered
    )
