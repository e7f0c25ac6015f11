"""Example tools for tests/test_tools.py, named in ``[agent] tools`` as ``tests.agent_tools:…``.

The worker runs in the test's process, so ``calls`` shows the test every call that ran.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import Field

from activities.tools import ToolContext

calls: list[tuple[str, dict[str, object]]] = []


def lookup_weather(city: Annotated[str, Field(description="a city name")]) -> str:
    """Today's weather in a city."""
    calls.append(("lookup_weather", {"city": city}))
    return f"sunny in {city}"


def broken(reason: str) -> str:
    """A tool that always fails."""
    calls.append(("broken", {"reason": reason}))
    raise RuntimeError(reason)


async def send_payment(amount: int, to: str, context: ToolContext) -> dict[str, object]:
    """Pay someone (needs the person's approval)."""
    calls.append(("send_payment", {"amount": amount, "to": to, "key": context.idempotency_key}))
    return {"paid": amount, "to": to, "idempotency_key": context.idempotency_key}


gate = asyncio.Event()  # a test opens it once it has seen the call running


async def wait_for_gate(topic: str) -> str:
    """Look something up, slowly: it returns once the test opens the gate."""
    calls.append(("wait_for_gate", {"topic": topic}))
    await gate.wait()
    return f"found {topic}"
