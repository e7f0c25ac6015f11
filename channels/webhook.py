"""Generic signed channel: Standard Webhooks in both directions.

Inbound ``POST /channels/webhook`` must carry ``webhook-id``, ``webhook-timestamp`` (within five
minutes) and a ``v1,`` signature; the ``webhook-id`` is the message key, so the sender's retries
collapse onto one run. Replies are POSTed to ``callback_url``, signed the same way, with the
delivery's idempotency key as ``webhook-id``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from pydantic import Field, SecretStr, field_validator

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
from hosting.settings import ChannelSettings, decode_b64, require_secret


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


class WebhookChannelSettings(ChannelSettings):
    """``[channels.webhook]``: the Standard Webhooks secret, and where replies are posted."""

    secret: SecretStr = SecretStr("")
    callback_url: str | None = None

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw:
            body = raw.removeprefix("whsec_")
            if len(decode_b64(body, "secret")) < 16:
                raise ValueError("secret must be whsec_ followed by base64 of at least 16 bytes")
        return value


class WebhookChannel(BaseChannel):
    name = "webhook"
    public = False  # callers hold a secret or key this deployment issued

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

    # -- development aids (``switchboard dev`` and ``switchboard send``) -------------------

    def dev_hints(self, gateway_url: str) -> list[str]:
        return [
            f"  signed webhook    POST {gateway_url}/channels/{self.name}",
            '  try it            .venv/bin/switchboard send "hello"',
        ]

    def sample_request(self, text: str, user: str) -> tuple[dict[str, str], bytes]:
        body = json.dumps(
            {"type": "message", "user": {"id": user}, "conversation": {"id": user}, "text": text}
        ).encode()
        headers = signed_headers(self._key, f"cli_{uuid.uuid4().hex}", int(time.time()), body)
        headers["content-type"] = "application/json"
        return headers, body

    def dev_receiver(self) -> tuple[int, web.Application] | None:
        """A local ``callback_url`` gets a receiver that verifies and prints reply metadata
        (never the text); any other URL is somebody's real server."""
        parts = urlsplit(self.settings.callback_url or "")
        if parts.scheme != "http" or parts.hostname != "127.0.0.1" or parts.port is None:
            return None

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                verify(self._key, request.headers, body, time.time())
            except SignatureError:
                return web.Response(status=401)
            webhook_id = request.headers["webhook-id"]
            print(f"  reply received  webhook-id={webhook_id}  ({len(body)} bytes)")
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post(parts.path or "/", hook)
        return parts.port, app
