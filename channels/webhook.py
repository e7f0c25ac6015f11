"""Generic signed channel: Standard Webhooks in both directions.

Inbound ``POST /channels/webhook`` must carry ``webhook-id``, ``webhook-timestamp`` (within five
minutes) and a ``v1,`` signature; the ``webhook-id`` is the message key, so the sender's retries
collapse onto one run. Replies are POSTed to ``callback_url``, signed the same way, with the
delivery's idempotency key as ``webhook-id``.
"""

from __future__ import annotations

import json
import time
from typing import Literal

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
from channels.http_push import HttpResult, classify_status, parse_retry_after, post
from channels.inbound_body import BodyError, PlatformBody, parse_body
from channels.standard_webhooks import SignatureError, secret_bytes, signed_headers, verify
from hosting.models import ChannelRequest, PushRequest, ReplyAddress, SubmitResult
from hosting.settings import WebhookChannelSettings, require_secret


class _Party(PlatformBody):
    id: str = Field(min_length=1, max_length=200)


class _Conversation(_Party):
    type: Literal["direct", "group"] = "direct"
    thread_id: str | None = Field(default=None, max_length=200)


class WebhookMessage(PlatformBody):
    type: Literal["message"]
    user: _Party
    conversation: _Conversation
    text: str = Field(max_length=100_000)


class WebhookChannel(BaseChannel):
    name = "webhook"

    def __init__(self, *, settings: WebhookChannelSettings) -> None:
        super().__init__(settings=settings)
        self.settings: WebhookChannelSettings = settings
        self._key = secret_bytes(
            require_secret(settings.secret, "channels.webhook.secret", "whsec_ + base64")
        )

    async def receive(self, http: InboundHttp) -> InboundOutcome:
        try:
            message_key = verify(self._key, http.headers, http.body, http.received_at)
        except SignatureError:
            return Refused(401, "invalid signature")
        try:
            msg = parse_body(WebhookMessage, http.body)
        except BodyError as exc:
            return Refused(400, str(exc))
        conv = msg.conversation
        return Accepted(
            ChannelRequest(
                tenant=http.tenant,
                channel=self.name,
                message_key=message_key,
                user_id=msg.user.id,
                conversation_id=conv.id,
                thread_id=conv.thread_id,
                is_direct=conv.type == "direct",
                text=msg.text,
                reply_to=ReplyAddress(
                    channel=self.name,
                    user_id=msg.user.id,
                    conversation_id=conv.id,
                    thread_id=conv.thread_id,
                ),
            )
        )

    def acknowledge(self, request: ChannelRequest, result: SubmitResult) -> HttpAnswer:
        if not result.accepted:
            return json_answer(409, {"error": result.reason or "busy", "run_id": result.run_id})
        return json_answer(
            202,
            {"run_id": result.run_id, "duplicate": result.duplicate, "deferred": result.deferred},
        )

    def refuse(self, request: ChannelRequest) -> HttpAnswer:
        return json_answer(403, {"error": "forbidden"})

    async def push(self, http: aiohttp.ClientSession, push: PushRequest) -> ChannelAck:
        url = self.settings.callback_url
        if not url:
            return ChannelAck(mode=FailureMode.REJECTED, detail="no callback_url configured")
        addr = push.address
        body = json.dumps(
            {
                "type": "message",
                "phase": push.phase,
                "run_id": push.run_id,
                "user": {"id": addr.user_id},
                "conversation": {"id": addr.conversation_id, "thread_id": addr.thread_id},
                "text": push.text,
            }
        ).encode()
        headers = signed_headers(self._key, push.idempotency_key, int(time.time()), body)
        headers["content-type"] = "application/json"
        result = await post(http, url, body=body, headers=headers, timeout_s=push.policy.timeout_s)
        if not isinstance(result, HttpResult):
            return result
        if result.status == 410:  # Standard Webhooks: the receiver asks us to stop.
            return ChannelAck(mode=FailureMode.REJECTED, detail="410")
        return classify_status(result.status, parse_retry_after(result.headers.get("retry-after")))
