"""The channel conformance kit (TCK): the pieces an adapter's fake platform provides.

The pytest suite itself is :mod:`channels.conformance` (it needs the test extras); this module
holds what a fake platform implements and how tests wait for it, and imports no test framework,
so the shipped package never pulls pytest in.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Literal, Protocol

Failure = Literal["rate_limited", "server_error", "timeout", "rejected", "unauthorized"]


@dataclass(frozen=True)
class Delivered:
    """One message the fake platform received from us."""

    conversation_id: str
    thread_id: str | None
    text: str


class FakePlatform(Protocol):
    base_url: str

    def fail_next(self, failure: Failure, retry_after_s: float = 1.0) -> None:
        """The next push answers with this failure, in the platform's own wire format."""
        ...

    @property
    def delivered(self) -> list[Delivered]: ...


async def wait_delivered(
    platform: FakePlatform, count: int, timeout: float = 30.0
) -> list[Delivered]:
    deadline = time.monotonic() + timeout
    while len(platform.delivered) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} deliveries, got {len(platform.delivered)}")
        await asyncio.sleep(0.05)
    return list(platform.delivered)
