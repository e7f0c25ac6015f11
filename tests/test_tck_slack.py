"""Slack passes the conformance kit against a local Web API; plus its own rules."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.signature import SignatureVerifier

from channels.conformance import ChannelConformance
from channels.slack import signature
from channels.tck import FakePlatform, wait_delivered
from tests.conftest import Stack
from tests.fakes import SLACK_TOKEN, FakeSlack, dumps, serve

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def signed(body: bytes, timestamp: float | None = None) -> dict[str, str]:
    """Headers exactly as Slack computes them (slack_sdk's own signer)."""
    ts = str(int(timestamp or time.time()))
    try:
        sig = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=ts, body=body.decode())
    except UnicodeDecodeError:  # slack_sdk signs text; Slack itself signs the raw bytes
        sig = signature(SIGNING_SECRET.encode(), ts, body)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
        "content-type": "application/json",
    }


def event_callback(event: dict[str, Any], event_id: str) -> bytes:
    return dumps(
        {"token": "x", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
         "event_id": event_id, "event_time": 1700000000, "event": event}
    )  # fmt: skip


class TestSlackConformance(ChannelConformance):
    channel = "slack"

    @pytest.fixture
    async def platform(self) -> AsyncIterator[FakePlatform]:
        async with serve(FakeSlack()) as fake:
            yield fake  # type: ignore[misc]

    def channel_settings(self, platform: FakePlatform) -> dict[str, Any]:
        return {
            "signing_secret": SIGNING_SECRET,
            "bot_token": SLACK_TOKEN,
            "api_base_url": platform.base_url,
        }

    def message(
        self, *, key: str, user: str, conversation: str, text: str, thread: str | None = None
    ) -> bytes:
        event: dict[str, Any] = {
            "type": "message", "channel_type": "im", "user": user, "text": text,
            "ts": f"{key}.000100", "channel": conversation,
        }  # fmt: skip
        if thread:
            event["thread_ts"] = thread
        return event_callback(event, f"Ev{key}")

    def sign(self, body: bytes, *, key: str, timestamp: float | None = None) -> dict[str, str]:
        return signed(body, timestamp)

    def redelivery_headers(self) -> dict[str, str]:
        return {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}

    def message_key(self, *, key: str, conversation: str) -> str:
        return f"{conversation}.{key}.000100"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with serve(FakeSlack()) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def settings_overrides(slack: FakeSlack) -> dict[str, Any]:
    section = {
        "signing_secret": SIGNING_SECRET,
        "bot_token": SLACK_TOKEN,
        "api_base_url": slack.base_url,
    }
    return {
        "channels": {"slack": section},
        "delivery": {"initial_interval_s": 0.2, "max_interval_s": 1.0},
    }


async def post(stack: Stack, body: bytes) -> tuple[int, str]:
    resp = await stack.http.post("/channels/slack", data=body, headers=signed(body))
    return resp.status, await resp.text()


async def test_url_verification_echoes_the_challenge_after_checking_the_signature(
    stack: Stack,
) -> None:
    body = dumps(
        {
            "token": "x",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    )
    status, text = await post(stack, body)
    assert status == 200 and json.loads(text)["challenge"].startswith("3eZbrw")
    unsigned = await stack.http.post("/channels/slack", data=body)
    assert unsigned.status == 401


async def test_message_and_app_mention_of_one_message_are_one_run(
    stack: Stack, slack: FakeSlack
) -> None:
    im = {
        "type": "message",
        "channel_type": "im",
        "user": "U1",
        "text": "hi <@UBOT>",
        "ts": "1700000001.000100",
        "channel": "D1",
    }
    mention = {
        "type": "app_mention",
        "user": "U1",
        "text": "<@UBOT> hi",
        "ts": "1700000001.000100",
        "channel": "D1",
        "channel_type": "im",
    }
    assert (await post(stack, event_callback(im, "Ev1")))[0] == 200
    assert (await post(stack, event_callback(mention, "Ev2")))[0] == 200
    later = {**im, "text": "later", "ts": "1700000002.000100"}
    assert (await post(stack, event_callback(later, "Ev3")))[0] == 200
    replies = await wait_delivered(slack, 2)
    assert [r.text for r in replies] == ["echo: hi", "echo: later"]


async def test_bots_and_non_user_subtypes_are_ignored(stack: Stack, slack: FakeSlack) -> None:
    ours = {
        "type": "message",
        "channel_type": "im",
        "bot_id": "B1",
        "user": "UBOT",
        "text": "echo: x",
        "ts": "1.1",
        "channel": "D2",
    }
    edited = {
        "type": "message",
        "channel_type": "im",
        "subtype": "message_changed",
        "user": "U2",
        "text": "x",
        "ts": "1.2",
        "channel": "D2",
    }
    joined = {
        "type": "message",
        "subtype": "channel_join",
        "user": "U2",
        "text": "joined",
        "ts": "1.3",
        "channel": "C2",
    }
    plain_channel = {
        "type": "message",
        "channel_type": "channel",
        "user": "U2",
        "text": "not for you",
        "ts": "1.4",
        "channel": "C2",
    }
    for i, event in enumerate([ours, edited, joined, plain_channel]):
        assert (await post(stack, event_callback(event, f"EvI{i}")))[0] == 200
    mention = {
        "type": "app_mention",
        "user": "U2",
        "text": "<@UBOT> for you",
        "ts": "1.5",
        "channel": "C2",
        "thread_ts": "1.0",
    }
    assert (await post(stack, event_callback(mention, "EvI9")))[0] == 200
    [reply] = await wait_delivered(slack, 1)
    assert (reply.conversation_id, reply.thread_id, reply.text) == ("C2", "1.0", "echo: for you")


async def test_pushes_to_a_user_open_a_dm_first(stack: Stack, slack: FakeSlack) -> None:
    from datetime import UTC, datetime

    import aiohttp

    from hosting.models import DeliveryPolicy, PushRequest, ReplyAddress

    channel = stack.registry.get("slack")
    assert channel is not None
    push = PushRequest(
        idempotency_key="k", run_id="r", phase="response",
        address=ReplyAddress(channel="slack", user_id="U9", conversation_id="U9"),
        text="hello", created_at=datetime.now(UTC), max_age_s=60, policy=DeliveryPolicy(),
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        ack = await channel.push(http, push)
    assert ack.ok
    assert [m for m, _ in slack.calls] == ["conversations.open", "chat.postMessage"]
    assert slack.delivered[0].conversation_id == "DU9"


async def test_ok_false_errors_map_to_the_failure_enum(stack: Stack, slack: FakeSlack) -> None:
    from datetime import UTC, datetime

    import aiohttp

    from channels.base import FailureMode
    from hosting.models import DeliveryPolicy, PushRequest, ReplyAddress

    channel = stack.registry.get("slack")
    assert channel is not None
    push = PushRequest(
        idempotency_key="k", run_id="r", phase="response",
        address=ReplyAddress(channel="slack", user_id="U9", conversation_id="C9"),
        text="hello", created_at=datetime.now(UTC), max_age_s=60, policy=DeliveryPolicy(),
    )  # fmt: skip

    async def answer_with(
        body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
    ) -> FailureMode:
        from aiohttp import web

        async def handler(request: web.Request) -> web.Response:
            return web.json_response(body, status=status, headers=headers or {})

        app = web.Application()
        app.router.add_post("/api/{method}", handler)
        from aiohttp.test_utils import TestServer

        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            one_off = type(channel)(
                settings=channel.settings.model_copy(
                    update={"api_base_url": str(server.make_url("/api"))}
                )
            )  # type: ignore[call-arg]
            async with aiohttp.ClientSession() as http:
                ack = await one_off.push(http, push)
            return ack.mode
        finally:
            await server.close()

    assert (
        await answer_with({"ok": False, "error": "ratelimited"}, headers={"Retry-After": "3"})
        is FailureMode.RATE_LIMITED
    )
    assert await answer_with({"ok": False, "error": "is_archived"}) is FailureMode.REJECTED
    assert await answer_with({"ok": False, "error": "invalid_auth"}) is FailureMode.UNAUTHORIZED
    assert await answer_with({"ok": False, "error": "internal_error"}) is FailureMode.TRANSIENT
    assert await answer_with({"ok": True, "ts": "1.2"}) is FailureMode.DELIVERED


async def test_markup_characters_are_unescaped_in_and_escaped_out(
    stack: Stack, slack: FakeSlack
) -> None:
    event = {"type": "message", "channel_type": "im", "user": "U5", "text": "a &lt;b&gt; &amp; c",
             "ts": "1700000009.000100", "channel": "D5"}  # fmt: skip
    assert (await post(stack, event_callback(event, "EvX")))[0] == 200
    [reply] = await wait_delivered(slack, 1)
    assert reply.text == "echo: a &lt;b&gt; &amp; c"  # the agent saw "a <b> & c"
