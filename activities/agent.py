"""The agent activity: one call to the configured backend, heartbeating while it thinks."""

from __future__ import annotations

import asyncio

from temporalio import activity

from activities.agent_backends import AgentBackend
from hosting.models import AgentReply, AgentRequest

HEARTBEAT_EVERY_S = 1.0  # the SDK throttles the actual calls to the server


class AgentActivities:
    def __init__(self, backend: AgentBackend) -> None:
        self._backend = backend

    @activity.defn(name="invoke_agent")
    async def invoke_agent(self, request: AgentRequest) -> AgentReply:
        # Heartbeats let Temporal notice a dead worker quickly and deliver cancellation.
        task = asyncio.ensure_future(self._backend.reply(request))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
                if done:
                    return task.result()
                activity.heartbeat()
        finally:
            if not task.done():
                task.cancel()
