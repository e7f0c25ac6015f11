"""DingTalk passes the conformance kit against a local DingTalk; plus its own rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from channels.base import FailureMode, InboundHttp
from channels.conformance import ChannelConformance
from channels.dingtalk import DingTalkChannel, DingTalkChannelSettings
from channels.registry import build_channel
from channels.tck import Delivered, FakePlatform, wait_delivered
from hosting.models import DeliveryPolicy, PushRequest, ReplyAddress, RunInput
from tests.conftest import Stack
from tests.fakes import dumps, serve
from tests.fakes_dingtalk import APP_KEY, APP_SECRET, ROBOT_CODE, FakeDingTalk

HOUR_MS = 3_600_000


def signed(timestamp: float | None = None, secret: str = APP_SECRET) -> dict[str, str]:
    """Headers as DingTalk computes them: base64 HMAC-SHA256 of ``timestamp\\nsecret``."""
    stamp = str(int((timestamp if timestamp is not None else time.time()) * 1000))
    mac = hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(), hashlib.sha256)
    return {
        "timestamp": stamp,
        "sign": base64.b64encode(mac.digest()).decode(),
        "content-type": "application/json",
    }


def callback(
    msg_id: str,
    user: str,
    conversation: str,
    text: str,
    *,
    webhook: str | None,
    group: bool = False,
    mentioned: bool = False,
    expires_ms: int | None = None,
) -> bytes:
    """A robot callback body in DingTalk's shape (a subset of its fields)."""
    body: dict[str, Any] = {
        "msgId": msg_id,
        "msgtype": "text",
        "text": {"content": f" {text}"},  # DingTalk leaves a space where the @name was
        "conversationId": conversation,
        "conversationType": "2" if group else "1",
        "senderId": f"$:LWCP_v1:${user}",
        "senderStaffId": user,
        "senderNick": "Tester",
        "chatbotUserId": "$:LWCP_v1:$robot",
        "robotCode": ROBOT_CODE,
        "isAdmin": False,
        "createAt": int(time.time() * 1000),
        "isInAtList": mentioned,
    }
    if group:
        body["conversationTitle"] = "test group"
    if webhook is not None:
        body["sessionWebhook"] = webhook
        body["sessionWebhookExpiredTime"] = (
            expires_ms if expires_ms is not None else int(time.time() * 1000) + HOUR_MS
        )
    return dumps(body)


def section(fake: FakeDingTalk, **extra: Any) -> dict[str, Any]:
    return {
        "app_secret": APP_SECRET,
        "app_key": APP_KEY,
        "robot_code": ROBOT_CODE,
        "api_base_url": fake.base_url,
        **extra,
    }


class TestDingTalkConformance(ChannelConformance):
    channel = "dingtalk"
    signs_body = False  # the sign covers the timestamp and the secret, not the body

    @pytest.fixture
    async def platform(self) -> AsyncIterator[FakePlatform]:
        async with serve(FakeDingTalk()) as fake:
            self.fake: FakeDingTalk = fake  # type: ignore[assignment]
            yield fake  # type: ignore[misc]

    def channel_settings(self, platform: FakePlatform) -> dict[str, Any]:
        assert isinstance(platform, FakeDingTalk)
        return section(platform)

    def message(
        self, *, key: str, user: str, conversation: str, text: str, thread: str | None = None
    ) -> bytes:
        # DingTalk has no threads: ``thread`` has nowhere to go on its wire.
        webhook = self.fake.session_webhook(conversation)
        return callback(f"msg{key}", user, conversation, text, webhook=webhook)

    def sign(self, body: bytes, *, key: str, timestamp: float | None = None) -> dict[str, str]:
        return signed(timestamp)

    def message_key(self, *, key: str, conversation: str) -> str:
        return f"msg{key}"

    async def test_request_becomes_one_run_with_identity_conversation_thread_and_key(
        self, stack: Any, platform: FakePlatform
    ) -> None:
        """The kit's version with ``thread_id`` None: DingTalk conversations have no threads."""
        key, _ = await self._say(stack, "who am I", thread="301")
        [reply] = await wait_delivered(platform, 1)
        assert (reply.conversation_id, reply.thread_id) == (self.conversation, None)
        history = await stack.client.get_workflow_handle(self._run_id(key)).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        [inp] = await stack.client.data_converter.decode(started.input.payloads, [RunInput])
        request = inp.submit.request
        assert request.channel == self.channel
        assert (request.user_id, request.conversation_id, request.thread_id) == (
            self.user,
            self.conversation,
            None,
        )
        assert request.message_key == f"msg{key}"
        assert request.text == "who am I"
        assert request.is_direct


# -- DingTalk's own rules ------------------------------------------------------------------


@pytest.fixture
async def dingtalk() -> AsyncIterator[FakeDingTalk]:
    async with serve(FakeDingTalk()) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def settings_overrides(dingtalk: FakeDingTalk, request: pytest.FixtureRequest) -> dict[str, Any]:
    extra: dict[str, Any] = getattr(request, "param", {})
    return {
        "channels": {"dingtalk": section(dingtalk, **extra)},
        "delivery": {"initial_interval_s": 0.2, "max_interval_s": 1.0, "max_attempts": 3},
    }


async def delivered(fake: FakeDingTalk, count: int) -> list[Delivered]:
    """:func:`wait_delivered` for the fake itself (its ``base_url`` is read-only)."""
    platform: FakePlatform = fake  # type: ignore[assignment]
    return await wait_delivered(platform, count)


def ids() -> tuple[str, str, str]:
    """A fresh msgId, staff id and conversation id: sessions outlive a test."""
    n = uuid.uuid4().hex[:12]
    return f"msg{n}", f"staff{n}", f"cid{n}"


async def post(stack: Stack, body: bytes, headers: dict[str, str] | None = None) -> int:
    resp = await stack.http.post(
        "/channels/dingtalk", data=body, headers=signed() if headers is None else headers
    )
    return resp.status


async def run_exists(stack: Stack, msg_id: str) -> bool:
    try:
        await stack.client.get_workflow_handle(f"run/default/dingtalk/{msg_id}").describe()
    except Exception:
        return False
    return True


def push_request(address: ReplyAddress, text: str = "hello", skip_parts: int = 0) -> PushRequest:
    return PushRequest(
        idempotency_key="k", run_id="run/default/dingtalk/x", phase="response",
        address=address, text=text, created_at=datetime.now(UTC), max_age_s=60,
        policy=DeliveryPolicy(timeout_s=2.0), skip_parts=skip_parts,
    )  # fmt: skip


def channel_of(stack: Stack) -> DingTalkChannel:
    channel = stack.registry.get("dingtalk")
    assert isinstance(channel, DingTalkChannel)
    return channel


async def test_bad_missing_or_stale_signatures_are_401_and_start_nothing(
    stack: Stack, dingtalk: FakeDingTalk
) -> None:
    msg_id, user, conv = ids()
    body = callback(msg_id, user, conv, "hi", webhook=dingtalk.session_webhook(conv))
    now = time.time()
    attempts = [
        {"content-type": "application/json"},  # no timestamp, no sign
        {**signed(), "sign": ""},
        signed(secret="some-other-app-secret"),
        signed(now - 2 * 3600),  # replayed two hours later
        signed(now + 2 * 3600),  # from the future
        {**signed(), "timestamp": str(int(now))},  # seconds, not milliseconds
    ]
    for headers in attempts:
        assert await post(stack, body, headers) == 401, headers
    assert not await run_exists(stack, msg_id)
    assert dingtalk.calls == [] and dingtalk.token_requests == 0


async def test_redelivered_msg_id_is_one_run(stack: Stack, dingtalk: FakeDingTalk) -> None:
    msg_id, user, conv = ids()
    webhook = dingtalk.session_webhook(conv)
    body = callback(msg_id, user, conv, "once", webhook=webhook)
    assert await post(stack, body, signed(time.time() - 5)) == 200
    assert await post(stack, body, signed()) == 200  # DingTalk's retry: new timestamp and sign
    later, _, _ = ids()
    assert await post(stack, callback(later, user, conv, "after", webhook=webhook)) == 200
    replies = await delivered(dingtalk, 2)
    assert [r.text for r in replies] == ["echo: once", "echo: after"]


async def test_group_message_is_answered_only_when_the_robot_is_mentioned(
    stack: Stack, dingtalk: FakeDingTalk
) -> None:
    quiet, user, conv = ids()
    webhook = dingtalk.session_webhook(conv)
    body = callback(quiet, user, conv, "chatting", webhook=webhook, group=True)
    assert await post(stack, body) == 200
    asked, _, _ = ids()
    body = callback(asked, user, conv, "robot, help", webhook=webhook, group=True, mentioned=True)
    assert await post(stack, body) == 200
    [reply] = await delivered(dingtalk, 1)
    assert (reply.conversation_id, reply.text) == (conv, "echo: robot, help")
    assert not await run_exists(stack, quiet)
    history = await stack.client.get_workflow_handle(
        f"run/default/dingtalk/{asked}"
    ).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [inp] = await stack.client.data_converter.decode(started.input.payloads, [RunInput])
    assert inp.submit.request.is_direct is False


@pytest.mark.parametrize("settings_overrides", [{"accept_in_group": "all"}], indirect=True)
async def test_accept_in_group_all_answers_group_messages_without_a_mention(
    stack: Stack, dingtalk: FakeDingTalk
) -> None:
    msg_id, user, conv = ids()
    body = callback(
        msg_id, user, conv, "anyone?", webhook=dingtalk.session_webhook(conv), group=True
    )
    assert await post(stack, body) == 200
    [reply] = await delivered(dingtalk, 1)
    assert reply.text == "echo: anyone?"


async def test_reply_goes_through_the_session_webhook_as_a_text_message(
    stack: Stack, dingtalk: FakeDingTalk
) -> None:
    msg_id, user, conv = ids()
    body = callback(msg_id, user, conv, "hi", webhook=dingtalk.session_webhook(conv))
    assert await post(stack, body) == 200
    [reply] = await delivered(dingtalk, 1)
    assert reply.conversation_id == conv
    assert dingtalk.calls == [
        ("sendBySession", {"msgtype": "text", "text": {"content": "echo: hi"}})
    ]
    assert dingtalk.token_requests == 0  # the sessionWebhook URL carries the authority


async def test_expired_session_webhook_falls_back_to_the_robot_api_with_a_cached_token(
    stack: Stack, dingtalk: FakeDingTalk
) -> None:
    expired = int(time.time() * 1000) - 1000
    msg_id, user, conv = ids()
    body = callback(
        msg_id, user, conv, "late", webhook=dingtalk.session_webhook(conv), expires_ms=expired
    )
    assert await post(stack, body) == 200
    await delivered(dingtalk, 1)
    group_msg, _, group = ids()
    body = callback(group_msg, user, group, "late too", webhook=dingtalk.session_webhook(group),
                    group=True, mentioned=True, expires_ms=expired)  # fmt: skip
    assert await post(stack, body) == 200
    replies = await delivered(dingtalk, 2)
    assert [(r.conversation_id, r.text) for r in replies] == [
        (user, "echo: late"),  # 1:1 sends address the staff id
        (group, "echo: late too"),
    ]
    [(one, direct), (many, grouped)] = dingtalk.calls
    assert (one, many) == ("oToMessages/batchSend", "groupMessages/send")
    assert direct["userIds"] == [user] and grouped["openConversationId"] == group
    for payload in (direct, grouped):
        assert payload["robotCode"] == ROBOT_CODE and payload["msgKey"] == "sampleText"
    assert json.loads(direct["msgParam"]) == {"content": "echo: late"}
    assert dingtalk.token_requests == 1  # fetched once, reused by the second send


async def test_send_too_fast_is_rate_limited_with_a_long_back_off(
    stack: Stack, dingtalk: FakeDingTalk
) -> None:
    channel = channel_of(stack)
    address = ReplyAddress(
        channel="dingtalk", user_id="staff1", conversation_id="cid1",
        extra={"conversation_type": "1", "session_webhook": dingtalk.session_webhook("cid1"),
               "session_webhook_expires_ms": str(int(time.time() * 1000) + HOUR_MS)},
    )  # fmt: skip
    dingtalk.fail_next("rate_limited")
    async with aiohttp.ClientSession() as http:
        ack = await channel.push(http, push_request(address))
        assert ack.mode is FailureMode.RATE_LIMITED
        assert ack.retry_after_s is not None and ack.retry_after_s >= 60
        dingtalk.fail_next("server_error")  # errcode -1, "system busy"
        assert (await channel.push(http, push_request(address))).mode is FailureMode.TRANSIENT
        dingtalk.fail_next("rejected")
        assert (await channel.push(http, push_request(address))).mode is FailureMode.REJECTED
        assert (await channel.push(http, push_request(address))).ok
    assert [d.text for d in dingtalk.delivered] == ["hello"]


async def test_session_webhook_on_a_foreign_host_is_never_posted_to(
    stack: Stack, dingtalk: FakeDingTalk
) -> None:
    async with serve(FakeDingTalk()) as foreign:
        assert isinstance(foreign, FakeDingTalk)
        msg_id, user, conv = ids()
        body = callback(msg_id, user, conv, "hi", webhook=foreign.session_webhook(conv))
        assert await post(stack, body) == 200
        [reply] = await delivered(dingtalk, 1)
        assert (reply.conversation_id, reply.text) == (user, "echo: hi")
        assert [name for name, _ in dingtalk.calls] == ["oToMessages/batchSend"]
        # Without proactive credentials there is nowhere safe to send: a final rejection.
        no_api = build_channel(
            "dingtalk",
            channel_of(stack).settings.model_copy(update={"app_key": "", "robot_code": ""}),
            stack.settings,
        )
        address = ReplyAddress(
            channel="dingtalk", user_id=user, conversation_id=conv,
            extra={"conversation_type": "1", "session_webhook": foreign.session_webhook(conv)},
        )  # fmt: skip
        async with aiohttp.ClientSession() as http:
            ack = await no_api.push(http, push_request(address))
        assert ack.mode is FailureMode.REJECTED
        assert ack.detail is not None and "allowed origin" in ack.detail
        assert foreign.calls == [] and foreign.token_requests == 0


async def test_expired_webhook_without_robot_credentials_is_rejected_with_a_reason(
    stack: Stack, dingtalk: FakeDingTalk
) -> None:
    settings = channel_of(stack).settings
    assert isinstance(settings, DingTalkChannelSettings)
    channel = DingTalkChannel(
        settings=settings.model_copy(update={"app_key": "", "robot_code": ""})
    )
    expired = str(int(time.time() * 1000) - 1000)
    address = ReplyAddress(
        channel="dingtalk", user_id="staff2", conversation_id="cid2",
        extra={"conversation_type": "1", "session_webhook": dingtalk.session_webhook("cid2"),
               "session_webhook_expires_ms": expired},
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        ack = await channel.push(http, push_request(address))
    assert ack.mode is FailureMode.REJECTED
    assert ack.detail == "sessionWebhook expired, and no app_key/robot_code for proactive sends"
    assert dingtalk.calls == []


async def test_long_replies_are_split_and_resume_after_delivered_parts(
    stack: Stack, dingtalk: FakeDingTalk
) -> None:
    channel = channel_of(stack)
    address = ReplyAddress(
        channel="dingtalk", user_id="staff3", conversation_id="cid3",
        extra={"conversation_type": "1", "session_webhook": dingtalk.session_webhook("cid3")},
    )  # fmt: skip
    text = "\n".join(f"第{i}行 " + "字" * 300 for i in range(60))  # about 54,000 UTF-8 bytes
    async with aiohttp.ClientSession() as http:
        dingtalk.fail_at[dingtalk.pushes + 2] = ("server_error", 1.0)
        first = await channel.push(http, push_request(address, text))
        assert (first.mode, first.parts_delivered) == (FailureMode.TRANSIENT, 1)
        rest = await channel.push(http, push_request(address, text, skip_parts=1))
    assert rest.ok
    parts = [d.text for d in dingtalk.delivered]
    assert len(parts) >= 4 and all(len(p.encode()) <= 16_000 for p in parts)
    assert "\n".join(parts) == text


async def test_rejected_token_is_fetched_again_on_the_next_attempt(
    stack: Stack, dingtalk: FakeDingTalk
) -> None:
    channel = channel_of(stack)
    address = ReplyAddress(channel="dingtalk", user_id="staff4", conversation_id="cid4")
    async with aiohttp.ClientSession() as http:
        assert (await channel.push(http, push_request(address))).ok
        dingtalk.tokens.clear()  # DingTalk revoked it
        ack = await channel.push(http, push_request(address))
        assert ack.mode is FailureMode.UNAUTHORIZED and ack.detail == "InvalidAuthentication"
        assert (await channel.push(http, push_request(address))).ok
    assert dingtalk.token_requests == 2


async def test_signed_sample_request_is_accepted(stack: Stack) -> None:
    channel = channel_of(stack)
    headers, body = channel.sample_request("ping", "staff5")
    outcome = await channel.receive(
        InboundHttp(method="POST", path="/channels/dingtalk", headers=headers, query={},
                    body=body, received_at=time.time())
    )  # fmt: skip
    request = getattr(outcome, "request", None)
    assert request is not None
    assert (request.user_id, request.text, request.is_direct) == ("staff5", "ping", True)
