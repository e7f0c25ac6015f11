"""Shared HTTP plumbing for pushes: one POST, every failure turned into an ack."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from channels.base import ChannelAck, FailureMode

MAX_RETRY_AFTER_S = 3600.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds, from either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (now if now is not None else time.time())
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        try:
            return json.loads(self.body)
        except ValueError:
            return None


async def post(
    http: aiohttp.ClientSession,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    max_body: int = 1 << 20,
) -> HttpResult | ChannelAck:
    """POST and read the answer; connection problems come back as a transient ack."""
    try:
        async with http.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            content = await resp.content.read(max_body)
            return HttpResult(resp.status, {k.lower(): v for k, v in resp.headers.items()}, content)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return ChannelAck(mode=FailureMode.TRANSIENT, detail=type(exc).__name__)


def classify_status(status: int, retry_after_s: float | None = None) -> ChannelAck:
    """The usual meaning of an HTTP status for a push."""
    if 200 <= status < 300:
        return ChannelAck(mode=FailureMode.DELIVERED)
    if status == 429:
        return ChannelAck(mode=FailureMode.RATE_LIMITED, retry_after_s=retry_after_s, detail="429")
    if status in (401, 403):
        return ChannelAck(mode=FailureMode.UNAUTHORIZED, detail=str(status))
    if status in (408, 409, 425) or status >= 500:
        return ChannelAck(
            mode=FailureMode.TRANSIENT, retry_after_s=retry_after_s, detail=str(status)
        )
    return ChannelAck(mode=FailureMode.REJECTED, detail=str(status))
