"""The agent activity: one call to the configured backend, heartbeating while it thinks,
recording the answer so far in its run at a bounded rate, and showing it on the platform the
reply goes to (live replies)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.agent_backends import AgentBackend, OnDelta, ResumesAfterApproval, StepsWithTools
from activities.names import AGENT_PROGRESS_SIGNAL, AGENT_REJECTED
from channels.base import PROGRESS_TIMEOUT_S, LiveReply, ProgressState, ShowsProgress
from hosting.logs import get_logger
from hosting.models import (
    AgentProgress,
    AgentReply,
    AgentRequest,
    AgentResume,
    AgentStep,
    ReplyAddress,
)
from hosting.targets import destination_key

if TYPE_CHECKING:
    import aiohttp

    from channels.registry import ChannelRegistry

HEARTBEAT_EVERY_S = 1.0  # the SDK throttles the actual calls to the server
FIRST_PAUSE_S = 2.0  # after a refused progress call; doubles per refusal, up to MAX_PAUSE_S
MAX_PAUSE_S = 60.0
SETTLE_S = 2.0  # how long a finished answer waits for a frame in flight (a stream being made)
log = get_logger("switchboard.agent")


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


class ConversationClock:
    """When this worker last showed progress in each conversation: two replies in one
    conversation (two people in a group) share its interval."""

    HORIZON_S = 120.0  # longer than any interval; older entries are forgotten
    PRUNE_AT = 4096

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def since(self, key: str, now: float) -> float:
        return now - self._last.get(key, -math.inf)

    def mark(self, key: str, now: float) -> None:
        self._last[key] = now
        if len(self._last) > self.PRUNE_AT:
            self._last = {k: t for k, t in self._last.items() if now - t < self.HORIZON_S}


class LiveProgress:
    """Shows one reply being produced where it will land: a working indicator, and the text
    so far where the platform shows it. Fire-and-forget from the worker: no history event
    per update, at most one call in flight per reply, at most one call per interval per
    conversation, and no failure of it can reach the answer."""

    def __init__(
        self,
        channel: ShowsProgress,
        http: aiohttp.ClientSession,
        address: ReplyAddress,
        every_s: float,
        clock: ConversationClock,
        tasks: set[asyncio.Task[Any]],
    ) -> None:
        self._channel, self._http, self._address = channel, http, address
        self._key = destination_key(address)
        self._every = every_s
        self._renew = max(every_s, channel.progress_renew_s)
        self._streams = channel.streams_text(address)
        self._clock, self._tasks = clock, tasks
        self._text = ""
        self._shown: str | None = None  # the text of the last frame sent
        self._last = -math.inf  # when this reply last sent a frame
        self._paused_until = -math.inf
        self._refusals = 0
        self._call: asyncio.Task[Any] | None = None
        self._live = LiveReply()

    def add(self, delta: str) -> None:
        self._text += delta
        self.tick()

    def tick(self) -> None:
        """Send a frame if one is due: new text after the interval, or a renewal."""
        now = time.monotonic()
        busy = self._call is not None and not self._call.done()
        if busy or now < self._paused_until or self._clock.since(self._key, now) < self._every:
            return
        new_text = self._streams and self._text != self._shown
        if new_text or now - self._last >= self._renew:
            self._shown, self._last = self._text, now
            self._clock.mark(self._key, now)
            text = self._text or None
            state = ProgressState.STREAMING if text else ProgressState.WORKING
            self._call = self._spawn(self._frame(text, state))

    async def pause(self) -> None:
        """The step ended with tool calls: the turn goes on, and the next step shows its own
        progress. A message this step's text was streamed into is removed (the answer comes
        later, in a message of its own); a working indicator is left to the next step."""
        await self._settle()
        if self._live.message is not None:
            self._spawn(self._show(None, ProgressState.DONE))

    async def finish(self, final_text: str | None) -> str | None:
        """The agent stopped (``None``: without an answer). A frame still in flight gets a
        moment to land (it may be creating the live message), then is dropped, so no stale
        draft lands after the reply. Returns the live message the reply's push completes."""
        await self._settle()
        self._spawn(self._show(final_text, ProgressState.DONE))
        return self._live.message

    async def _settle(self) -> None:
        if self._call is not None and not self._call.done():
            await asyncio.wait({self._call}, timeout=SETTLE_S)
            self._call.cancel()

    async def _frame(self, text: str | None, state: ProgressState) -> None:
        if await self._show(text, state):
            self._refusals = 0
            return
        # Refused or failed (a 429, say): slow down, so progress never costs the reply's quota.
        self._refusals += 1
        pause = min(MAX_PAUSE_S, FIRST_PAUSE_S * 2 ** (self._refusals - 1))
        self._paused_until = time.monotonic() + pause

    async def _show(self, text: str | None, state: ProgressState) -> bool:
        try:
            call = self._channel.progress(self._http, self._address, text, state, self._live)
            return await asyncio.wait_for(call, PROGRESS_TIMEOUT_S + 1)
        except Exception as exc:  # the contract says never; a broken adapter costs a frame only
            log.warning(
                "progress call failed", channel=self._channel.name, error=type(exc).__name__
            )
            return False

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)  # a reference, or the loop may drop it mid-call
        task.add_done_callback(self._tasks.discard)
        return task


class AgentActivities:
    def __init__(
        self,
        backend: AgentBackend,
        client: Client | None = None,
        *,
        channels: ChannelRegistry | None = None,
        http: aiohttp.ClientSession | None = None,
        progress_every_ms: int = 0,
    ) -> None:
        self._backend = backend
        self._client = client
        self._channels = channels
        self._http = http
        self._progress_every_s = progress_every_ms / 1000
        self._clock = ConversationClock()
        self._progress_tasks: set[asyncio.Task[Any]] = set()

    def _live_progress(self, request: AgentRequest) -> LiveProgress | None:
        address = request.progress_to
        if address is None or self._http is None:
            return None
        channel = self._channels.get(address.channel) if self._channels is not None else None
        if not isinstance(channel, ShowsProgress):
            return None
        every_s = channel.progress_every_s  # the platform's own, else the deployment's
        every_s = self._progress_every_s if every_s is None else every_s
        if not every_s:
            return None
        return LiveProgress(
            channel, self._http, address, every_s, self._clock, self._progress_tasks
        )

    @activity.defn(name="invoke_agent")
    async def invoke_agent(self, request: AgentRequest) -> AgentReply:
        return await self._streamed(request, partial(self._backend.reply, request))

    @activity.defn(name="resume_agent")
    async def resume_agent(self, resume: AgentResume) -> AgentReply:
        """The rest of a framework agent's turn after the person answered its approvals,
        streamed like the first step."""
        backend = self._backend
        if not isinstance(backend, ResumesAfterApproval):
            raise ApplicationError(
                "this agent kind does not pause for approvals",
                type=AGENT_REJECTED,
                non_retryable=True,
            )
        return await self._streamed(
            resume.request, partial(backend.resume, resume), resume.progress_attempt_base
        )

    async def _streamed(
        self,
        request: AgentRequest,
        produce: Callable[[OnDelta], Awaitable[AgentReply]],
        attempt_base: int = 0,
    ) -> AgentReply:
        progress: ProgressBatches | None = None
        if request.progress_every_ms and self._client is not None:
            progress = ProgressBatches(
                self._client,
                request.run_id,
                attempt_base + activity.info().attempt,
                request.progress_every_ms / 1000,
            )
        live = self._live_progress(request)

        async def on_delta(delta: str) -> None:
            if live is not None:
                live.add(delta)
            if progress is not None:
                await progress.add(delta)

        if live is not None:
            live.tick()  # "working" at once
        # Heartbeats let Temporal notice a dead worker quickly and deliver cancellation.
        task = asyncio.ensure_future(produce(on_delta))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
                if done:
                    reply = task.result()
                    if live is not None and reply.tool_calls:  # the turn goes on
                        await live.pause()
                    elif live is not None:  # paused for an approval: no answer yet
                        paused = bool(reply.approval_requests)
                        shown = await live.finish(None if paused else reply.text)
                        if shown is not None and not paused:
                            reply = reply.model_copy(update={"live_message": shown})
                    live = None
                    if progress is not None and (reply.tool_calls or reply.approval_requests):
                        # The turn goes on: readers see this step's text meanwhile. A final
                        # answer needs no last batch, the result carries all of it.
                        await progress.flush()
                    return reply
                activity.heartbeat()
                if live is not None:
                    live.tick()  # renews the working indicator while the agent thinks
        finally:
            if not task.done():
                task.cancel()
            if live is not None:
                await live.finish(None)

    @activity.defn(name="model_step")
    async def model_step(self, step: AgentStep) -> AgentReply:
        """One model call after the first of a turn with tools (the first is ``invoke_agent``):
        its answer, or the next tool calls, streamed like the first step. Once recorded, it
        is never asked again."""
        backend = self._backend
        if not isinstance(backend, StepsWithTools):
            raise ApplicationError(
                "this agent kind has no tool steps", type=AGENT_REJECTED, non_retryable=True
            )
        return await self._streamed(
            step.request, partial(backend.step, step), step.progress_attempt_base
        )
