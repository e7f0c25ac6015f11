"""A Microsoft Agent Framework agent for Switchboard, with one tool that needs approval.

Configured with ``[agent] kind = "agent_framework"`` and
``callable = "examples.agent_framework_agent:build_agent"``. The model is any OpenAI-compatible
Chat Completions server, named by the framework's own environment variables:
``OPENAI_BASE_URL``, ``OPENAI_API_KEY`` and ``OPENAI_MODEL``.
"""

from __future__ import annotations

import os
from typing import Annotated

from agent_framework import Agent, tool
from agent_framework.openai import OpenAIChatCompletionClient
from pydantic import Field

# What send_payment did in this process: a stand-in for a payments API.
payments: list[dict[str, object]] = []


@tool
def lookup_weather(city: Annotated[str, Field(description="a city name")]) -> str:
    """Today's weather in a city."""
    return f"sunny in {city}"


@tool(approval_mode="always_require")
def send_payment(
    amount: Annotated[int, Field(description="whole euros")],
    to: Annotated[str, Field(description="who is paid")],
) -> str:
    """Pay someone. Runs only once the person has approved this very call."""
    payments.append({"amount": amount, "to": to})
    return f"paid {amount} to {to}"


def build_agent() -> Agent:
    """Called once per worker, when it starts."""
    client = OpenAIChatCompletionClient(model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"))
    return Agent(
        client,
        name="assistant",
        instructions="You are a helpful assistant. Ask before you pay anyone.",
        tools=[lookup_weather, send_payment],
    )
