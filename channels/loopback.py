"""In-memory channel for tests and local experiments: no signature, no network.

Pushes land in an :class:`Outbox` that tests read; a test can script the acks the "platform"
answers with, to exercise retries and dead letters without a network.
"""

from __future__ import annotations

import asyncio
from collections import deque

import aiohttp
from pydantic import Field

from channels.base import (
    Accepted,
    BaseChannel,
    ChannelAck,
    FailureMode,
    HttpAnswer,
    InboundHttp,
    InboundOutcome,
    Refused,
    json_answer,
)
from channels.inbound_body import BodyError, OwnBody, parse_body
from hosting.models import ChannelRequest, PushRequest, ReplyAddress, SubmitResult
from hosting.settings import ChannelSettings


class LoopbackMessage(OwnBody):
    message_id: str = Field(min_length=1, max_length=200)
    user: str = Field(min_length=1, max_length=200)
    conversation: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=100_000)
    direct: bool = True


class Outbox:
    """What the loopback channel "sent", in order, plus scripted answers."""

    def __init__(self) -> None:
        self.sent: list[PushRequest] = []
        self.attempts: list[PushRequest] = []
        self.script: deque[ChannelAck] = deque()
        self._changed = asyncio.Event()

    def record(self, push: PushRequest) -> ChannelAck:
        self.attempts.append(push)
        ack = self.script.popleft() if self.script else ChannelAck(mode=FailureMode.DELIVERED)
        if ack.ok:
            self.sent.append(push)
        self._changed.set()
        return ack

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[PushRequest]:
        async def _wait() -> None:
            while len(self.sent) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)
        return list(self.sent)


class LoopbackChannelSettings(ChannelSettings):
    """In-memory channel for tests; never enable it on a public gateway."""


class LoopbackChannel(BaseChannel):
    name = "loopback"
    public = False  # callers hold a secret or key this deployment issued

    def __init__(self, *, settings: LoopbackChannelSettings, outbox: Outbox | None = None) -> None:
        super().__init__(settings=settings)
        self.outbox = outbox or Outbox()

    async def receive(self, http: InboundHttp) -> InboundOutcome:
        try:
            msg = parse_body(LoopbackMessage, http.body)
        except BodyError as exc:
            return Refused(400, str(exc))
        return Accepted(
            ChannelRequest(
                tenant=http.tenant,
                channel=self.name,
                message_key=msg.message_id,
                user_id=msg.user,
                conversation_id=msg.conversation,
                is_direct=msg.direct,
                text=msg.text,
                reply_to=ReplyAddress(
                    channel=self.name, user_id=msg.user, conversation_id=msg.conversation
                ),
            )
        )

    def acknowledge(self, request: ChannelRequest, result: SubmitResult) -> HttpAnswer:
        status = 202 if result.accepted else 409
        return json_answer(status, {"run_id": result.run_id, "accepted": result.accepted})

    async def push(self, http: aiohttp.ClientSession, push: PushRequest) -> ChannelAck:
        return self.outbox.record(push)
