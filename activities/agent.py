"""The agent activity: one call to the configured backend, heartbeating while it thinks, and
recording the answer so far in its run at a bounded rate (live replies)."""

from __future__ import annotations

import asyncio
import time

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError

from activities.agent_backends import AgentBackend
from activities.names import AGENT_PROGRESS_SIGNAL
from hosting.models import AgentProgress, AgentReply, AgentRequest

HEARTBEAT_EVERY_S = 1.0  # the SDK throttles the actual calls to the server


class ProgressBatches:
    """Collects deltas and signals them to the run at most every ``every_s``: one history
    event per batch, however many tokens the model produces."""

    def __init__(self, client: Client, run_id: str, attempt: int, every_s: float) -> None:
        self._handle = client.get_workflow_handle(run_id)
        self._attempt = attempt
        self._every = every_s
        self._pending: list[str] = []
        self._seq = 0
        self._last = 0.0

    async def add(self, delta: str) -> None:
        self._pending.append(delta)
        if time.monotonic() - self._last >= self._every:
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        batch = AgentProgress(attempt=self._attempt, seq=self._seq, text="".join(self._pending))
        self._pending, self._seq, self._last = [], self._seq + 1, time.monotonic()
        try:
            await self._handle.signal(AGENT_PROGRESS_SIGNAL, batch)
        except RPCError:
            # Progress is a courtesy: the final answer comes from the activity's result.
            activity.logger.warning("could not record agent progress")


class AgentActivities:
    def __init__(self, backend: AgentBackend, client: Client | None = None) -> None:
        self._backend = backend
        self._client = client

    @activity.defn(name="invoke_agent")
    async def invoke_agent(self, request: AgentRequest) -> AgentReply:
        progress: ProgressBatches | None = None
        if request.progress_every_ms and self._client is not None:
            progress = ProgressBatches(
                self._client,
                request.run_id,
                activity.info().attempt,
                request.progress_every_ms / 1000,
            )
        on_delta = progress.add if progress is not None else _ignore
        # Heartbeats let Temporal notice a dead worker quickly and deliver cancellation.
        task = asyncio.ensure_future(self._backend.reply(request, on_delta))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
                if done:
                    reply = task.result()
                    if progress is not None:
                        await progress.flush()
                    return reply
                activity.heartbeat()
        finally:
            if not task.done():
                task.cancel()


async def _ignore(delta: str) -> None:
    return None
