"""Tools for tests/test_tool_crash.py, run by a worker in its own process.

Every call appends one line to the file named by ``SWITCHBOARD_TEST_TOOL_LOG``: the test
counts side effects there, since the worker it kills is not in its process.
"""

from __future__ import annotations

import os
from pathlib import Path

from activities.tools import ToolContext


def _record(line: str) -> None:
    with Path(os.environ["SWITCHBOARD_TEST_TOOL_LOG"]).open("a") as log:
        log.write(line + "\n")
        log.flush()
        os.fsync(log.fileno())


def lookup_weather(city: str) -> str:
    """Today's weather in a city."""
    _record(f"lookup_weather {city}")
    return f"sunny in {city}"


def send_payment(amount: int, to: str, context: ToolContext) -> str:
    """Pay someone (needs the person's approval)."""
    _record(f"send_payment {amount} {to} {context.idempotency_key}")
    return f"paid {amount} to {to}"
