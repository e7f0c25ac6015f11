"""The Standard Webhooks channel passes the conformance kit."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels.conformance import ChannelConformance
from channels.standard_webhooks import secret_bytes, signed_headers
from channels.tck import FakePlatform
from tests.fakes import FakeWebhookReceiver, dumps, serve
from tests.support import WEBHOOK_SECRET


class TestWebhookConformance(ChannelConformance):
    channel = "webhook"
    base_url_key = "callback_url"

    @pytest.fixture
    async def platform(self) -> AsyncIterator[FakePlatform]:
        async with serve(FakeWebhookReceiver()) as fake:
            yield fake  # type: ignore[misc]

    def channel_settings(self, platform: FakePlatform) -> dict[str, Any]:
        return {"secret": WEBHOOK_SECRET, "callback_url": platform.base_url}

    def message(
        self, *, key: str, user: str, conversation: str, text: str, thread: str | None = None
    ) -> bytes:
        conv: dict[str, Any] = {"id": conversation, "type": "direct"}
        if thread:
            conv["thread_id"] = thread
        return dumps({"type": "message", "user": {"id": user}, "conversation": conv, "text": text})

    def sign(self, body: bytes, *, key: str, timestamp: float | None = None) -> dict[str, str]:
        headers = signed_headers(
            secret_bytes(WEBHOOK_SECRET), key, int(timestamp or time.time()), body
        )
        return {**headers, "content-type": "application/json"}
