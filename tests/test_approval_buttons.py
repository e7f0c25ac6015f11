"""Approval buttons: the approval prompt carries Approve/Deny buttons on the web chat, Telegram,
Slack, Discord and Teams, and a press is the presser's ``/approve CODE`` (or ``/deny CODE``).

For each platform: its fake receives the approval push with the platform's buttons (checked
against what the platform accepts), and a press built the way the platform sends it, signed
as it signs, becomes exactly one run whose request is ``/approve CODE`` from the presser; a
forged press is 401 and starts nothing; after the press the buttons are gone from the
message. One test per platform goes the whole way with a tool that needs approval (a fake Chat
Completions model asks for it): the press runs the tool once.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import Browser, async_playwright, expect
from temporalio.client import Client

from channels.base import Channel, FailureMode
from channels.tck import Delivered, wait_delivered
from channels.telegram import TelegramChannel
from hosting.models import DeliveryPolicy, PushRequest, ReplyAddress, RunInput, ToolCall
from tests import agent_tools
from tests.conftest import Stack
from tests.fakes import TELEGRAM_TOKEN, FakeSlack, FakeTelegram, serve
from tests.fakes_activity import FakeBotFramework, SigningKeyPair
from tests.fakes_discord import APPLICATION_ID, BOT_TOKEN, FakeDiscord, public_key_hex
from tests.fakes_discord import sign_interaction as discord_signed
from tests.support import eventually
from tests.test_tck_activity import BOT_ID, activity, bearer, section
from tests.test_tck_slack import SIGNING_SECRET
from tests.test_tck_slack import signed as slack_signed
from tests.test_tck_telegram import SECRET as TELEGRAM_SECRET
from tests.test_web_browser import CHROMIUM, CHROMIUM_ARGS, serve_site
from workflows.agent_loop import approval_prompt

DISCORD_KEY = Ed25519PrivateKey.generate()
CODE = "K7QX2M"
INVALID = "That approval code is not valid or has expired."
PAYMENT = 'use send_payment {"amount": 5, "to": "bob"}'


class FakeModel:
    """Chat Completions with ``tools``: ``use TOOL {json}`` asks for the tool once, then
    answers ``final: <result>``; anything else is answered ``plain: <text>``."""

    def __init__(self) -> None:
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        messages = (await request.json())["messages"]
        user = next(m for m in reversed(messages) if m["role"] == "user")["content"]
        results = [m["content"] for m in messages if m["role"] == "tool"]
        if user.startswith("use ") and not results:
            name, args = user[4:].split(" ", 1)
            call = {"id": "call_0", "type": "function",
                    "function": {"name": name, "arguments": args}}  # fmt: skip
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        else:
            text = "final: " + " | ".join(results) if results else f"plain: {user}"
            message = {"role": "assistant", "content": text}
        return web.json_response({"choices": [{"index": 0, "message": message}]})


@pytest.fixture
async def model() -> AsyncIterator[FakeModel]:
    fake = FakeModel()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("/v1"))
    agent_tools.calls.clear()
    yield fake
    await server.close()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with serve(FakeTelegram()) as fake:
        assert isinstance(fake, FakeTelegram)
        yield fake


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with serve(FakeSlack()) as fake:
        assert isinstance(fake, FakeSlack)
        yield fake


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with serve(FakeDiscord()) as fake:
        assert isinstance(fake, FakeDiscord)
        yield fake


@pytest.fixture
async def bot() -> AsyncIterator[FakeBotFramework]:
    async with serve(FakeBotFramework()) as fake:
        assert isinstance(fake, FakeBotFramework)
        yield fake


@pytest.fixture
def settings_overrides(
    model: FakeModel,
    telegram: FakeTelegram,
    slack: FakeSlack,
    discord: FakeDiscord,
    bot: FakeBotFramework,
) -> dict[str, Any]:
    return {
        "agent": {
            "kind": "openai",
            "base_url": model.url,
            "tools": ["tests.agent_tools:send_payment"],
            "approval_required": ["send_payment"],
            "tools_not_idempotent": ["send_payment"],
            "max_steps": 3,
        },
        "channels": {
            "telegram": {
                "bot_token": TELEGRAM_TOKEN,
                "secret_token": TELEGRAM_SECRET,
                "bot_username": "switch_test_bot",
                "api_base_url": telegram.base_url,
            },
            "slack": {
                "signing_secret": SIGNING_SECRET,
                "bot_token": "xoxb-test-token",
                "api_base_url": slack.base_url,
            },
            "discord": {
                "public_key": public_key_hex(DISCORD_KEY),
                "application_id": APPLICATION_ID,
                "bot_token": BOT_TOKEN,
                "api_base_url": discord.base_url,
            },
            "activity": section(bot),
        },
    }


def ident() -> int:
    """A fresh numeric id: every test talks as new people, in sessions no other test used."""
    return 10**9 + uuid.uuid4().int % 10**9


def prompt(code: str = CODE) -> str:
    call = ToolCall(call_id="call_0", name="send_payment", arguments='{"amount": 5, "to": "bob"}')
    return approval_prompt(call, code)


async def push_approval(
    stack: Stack, address: ReplyAddress, text: str | None = None, phase: str = "approval"
) -> None:
    """The approval message exactly as a waiting run delivers it (or another message)."""
    channel: Channel = stack.registry.get(address.channel)
    push = PushRequest(
        idempotency_key=f"approval-{uuid.uuid4().hex}",
        run_id="run/default/x/y",
        phase=phase,  # type: ignore[arg-type]
        address=address,
        text=prompt() if text is None else text,
        created_at=datetime.now(UTC),
        max_age_s=60,
        policy=DeliveryPolicy(timeout_s=5.0),
    )
    async with aiohttp.ClientSession() as http:
        ack = await channel.push(http, push)
    assert ack.mode is FailureMode.DELIVERED, ack


async def request_of(stack: Stack, run_id: str) -> Any:
    async def started() -> bool:
        await stack.client.get_workflow_handle(run_id).describe()
        return True

    await eventually(started)
    history = await stack.client.get_workflow_handle(run_id).fetch_history()
    attrs = history.events[0].workflow_execution_started_event_attributes
    [inp] = await stack.client.data_converter.decode(attrs.input.payloads, [RunInput])
    return inp.submit.request


async def exists(stack: Stack, run_id: str) -> bool:
    try:
        await stack.client.get_workflow_handle(run_id).describe()
    except Exception:
        return False
    return True


# -- Telegram ------------------------------------------------------------------------------


async def post_telegram(stack: Stack, body: dict[str, Any], secret: str = TELEGRAM_SECRET) -> Any:
    return await stack.http.post(
        "/channels/telegram",
        data=json.dumps(body),
        headers={"X-Telegram-Bot-Api-Secret-Token": secret, "content-type": "application/json"},
    )


async def test_telegram_inline_keyboard_and_a_press_is_one_approve_run(
    stack: Stack, telegram: FakeTelegram
) -> None:
    user = ident()
    address = ReplyAddress(channel="telegram", user_id=str(user), conversation_id=str(user))
    await push_approval(stack, address)
    [message] = telegram.messages
    assert message["text"] == prompt()
    assert message["reply_markup"] == {
        "inline_keyboard": [
            [
                {"text": "Approve", "callback_data": f"approve:{CODE}"},
                {"text": "Deny", "callback_data": f"deny:{CODE}"},
            ]
        ]
    }

    # A forged press (wrong secret token) is refused and starts nothing.
    press = telegram.press(message, f"approve:{CODE}", user=user, update_id=ident())
    query_id = press["callback_query"]["id"]
    run_id = f"run/default/telegram/cb-{query_id}"
    assert (await post_telegram(stack, press, secret="not-the-secret")).status == 401
    assert not await exists(stack, run_id)

    # The real press, delivered twice (Telegram redelivers until it gets a 2xx): one run.
    for _ in range(2):
        started = time.monotonic()
        resp = await post_telegram(stack, press)
        assert resp.status == 200
        assert time.monotonic() - started < 3.0
        # The webhook's answer stops the button's spinner: answerCallbackQuery.
        assert await resp.json() == {"method": "answerCallbackQuery", "callback_query_id": query_id}
    request = await request_of(stack, run_id)
    assert request.text == f"/approve {CODE}"
    assert (request.user_id, request.conversation_id, request.is_direct) == (
        str(user),
        str(user),
        True,
    )
    replies = await wait_delivered(telegram, 2)
    assert replies[1] == Delivered(str(user), None, INVALID)  # no run waits for this code
    # The press's answer first took the buttons off the prompt (the callback was answered
    # in the webhook's answer already).
    edits = [p for m, p in telegram.calls if m == "editMessageReplyMarkup"]
    assert edits == [
        {
            "chat_id": str(user),
            "message_id": message["message_id"],
            "reply_markup": {"inline_keyboard": []},
        }
    ]
    assert "reply_markup" not in telegram.messages[0]  # the buttons are gone
    assert telegram.messages[0]["text"] == prompt()  # the prompt stays
    last = [p for m, p in telegram.calls if m == "sendMessage"][-1]
    assert last["reply_parameters"]["message_id"] == message["message_id"]  # quotes the prompt
    assert "reply_markup" not in last  # only approval prompts have buttons
    await post_telegram(stack, {"update_id": ident(), "message": {
        "message_id": 5, "date": 1, "from": {"id": user, "is_bot": False, "first_name": "T"},
        "chat": {"id": user, "type": "private"}, "text": "after"}})  # fmt: skip
    replies = await wait_delivered(telegram, 3)
    assert [r.text for r in replies] == [prompt(), INVALID, "plain: after"]  # the press ran once
    # The press's address outlives it (a session's home): later pushes leave the prompt be.
    await push_approval(stack, request.reply_to, "later", phase="response")
    assert [m for m, _ in telegram.calls].count("editMessageReplyMarkup") == 1


async def test_telegram_deny_in_a_group_topic_and_foreign_buttons(
    stack: Stack, telegram: FakeTelegram
) -> None:
    user, group = ident(), -(10**12 + ident())
    address = ReplyAddress(
        channel="telegram", user_id=str(user), conversation_id=str(group), thread_id="42"
    )
    await push_approval(stack, address)
    [message] = telegram.messages
    assert message["message_thread_id"] == 42
    presser = ident()  # anyone in the group may press; the approval decides who counts
    press = telegram.press(message, f"deny:{CODE}", user=presser, update_id=ident())
    assert (await post_telegram(stack, press)).status == 200
    request = await request_of(stack, f"run/default/telegram/cb-{press['callback_query']['id']}")
    assert request.text == f"/deny {CODE}"
    assert (request.user_id, request.conversation_id, request.thread_id) == (
        str(presser),
        str(group),
        "42",
    )
    assert request.is_direct is False
    # Buttons that are not ours are answered and start nothing.
    other = {**press, "update_id": ident()}
    other["callback_query"] = {**press["callback_query"], "id": "999", "data": "vote:up"}
    resp = await post_telegram(stack, other)
    assert resp.status == 200
    assert (await resp.json())["method"] == "answerCallbackQuery"
    assert not await exists(stack, "run/default/telegram/cb-999")


async def test_telegram_webhook_asks_for_callback_queries(
    stack: Stack, telegram: FakeTelegram
) -> None:
    channel = stack.registry.get("telegram")
    assert isinstance(channel, TelegramChannel)
    async with aiohttp.ClientSession() as http:
        assert (await channel.register(http, "https://bot.example.org/channels/telegram"))[0]
    [(method, payload)] = telegram.calls
    assert method == "setWebhook"
    assert set(payload["allowed_updates"]) == {"message", "callback_query"}


# -- Slack ---------------------------------------------------------------------------------


def form_signed(body: bytes, timestamp: float | None = None) -> dict[str, str]:
    return {
        **slack_signed(body, timestamp),
        "content-type": "application/x-www-form-urlencoded",
    }


def action_ts(body: bytes) -> str:
    payload = json.loads(parse_qs(body.decode())["payload"][0])
    return str(payload["actions"][0]["action_ts"])


async def test_slack_block_kit_buttons_and_a_press_is_one_approve_run(
    stack: Stack, slack: FakeSlack
) -> None:
    user, presser = f"U{ident()}", f"U{ident()}"
    channel, thread = f"C{ident()}", "1700000000.000100"
    address = ReplyAddress(channel="slack", user_id=user, conversation_id=channel, thread_id=thread)
    await push_approval(stack, address)
    [message] = slack.messages
    assert message["text"] == prompt()  # the fallback: notifications, old clients
    section, actions = message["blocks"]
    assert section == {"type": "section", "text": {"type": "mrkdwn", "text": prompt()}}
    assert [(e["action_id"], e["value"], e["text"]["text"]) for e in actions["elements"]] == [
        ("approve", CODE, "Approve"),
        ("deny", CODE, "Deny"),
    ]

    body = slack.press(message, "approve", presser)
    run_id = f"run/default/slack/{channel}.{action_ts(body)}.approve"
    # Forged: a wrong signature, a tampered body (the signature covers the raw form body),
    # a stale timestamp. All 401, nothing starts.
    good = form_signed(body)
    tampered = body.replace(b"approve", b"deny")
    for attempt_body, headers in [
        (body, {**good, "X-Slack-Signature": good["X-Slack-Signature"][:-2] + "00"}),
        (tampered, good),
        (body, form_signed(body, time.time() - 3600)),
        (body, {"content-type": "application/x-www-form-urlencoded"}),
    ]:
        resp = await stack.http.post("/channels/slack", data=attempt_body, headers=headers)
        assert resp.status == 401
    assert not await exists(stack, run_id)

    started = time.monotonic()
    resp = await stack.http.post("/channels/slack", data=body, headers=form_signed(body))
    assert resp.status == 200
    assert time.monotonic() - started < 3.0  # Slack's deadline for interactivity too
    resp = await stack.http.post("/channels/slack", data=body, headers=form_signed(body))
    assert resp.status == 200  # the same press again: the same run
    request = await request_of(stack, run_id)
    assert request.text == f"/approve {CODE}"
    assert (request.user_id, request.conversation_id, request.thread_id) == (
        presser,
        channel,
        thread,
    )
    replies = await wait_delivered(slack, 2)
    assert replies[1] == Delivered(channel, thread, INVALID)
    # The press's answer first replaced the prompt with itself, without the buttons.
    [update] = [p for m, p in slack.calls if m == "chat.update"]
    section = {"type": "section", "text": {"type": "mrkdwn", "text": prompt()}}
    assert update == {
        "channel": channel,
        "ts": message["ts"],
        "text": prompt(),
        "blocks": [section],
    }
    assert slack.messages[0]["blocks"] == [section]  # the buttons are gone, the prompt stays
    await push_approval(stack, request.reply_to, "later", phase="response")
    assert [m for m, _ in slack.calls].count("chat.update") == 1  # only the press's answer
    last = [p for m, p in slack.calls if m == "chat.postMessage"][-1]
    assert "blocks" not in last  # only approval prompts have buttons


async def test_slack_other_interactions_are_acknowledged_and_start_nothing(
    stack: Stack, slack: FakeSlack
) -> None:
    from urllib.parse import urlencode

    for payload in [
        {"type": "view_submission", "user": {"id": "U1"}},
        {"type": "block_actions", "user": {"id": "U1"}, "channel": {"id": "C1"},
         "actions": [{"action_id": "vote", "value": "up", "action_ts": "1.2"}]},
        {"type": "block_actions", "user": {"id": "U1"}, "channel": {"id": "C1"},
         "actions": [{"action_id": "approve", "value": "no/slash", "action_ts": "1.2"}]},
    ]:  # fmt: skip
        body = urlencode({"payload": json.dumps(payload)}).encode()
        resp = await stack.http.post("/channels/slack", data=body, headers=form_signed(body))
        assert resp.status == 200
    for bad in (b"payload=%7Bnot+json", b"other=1", b"payload=" + b"%ff" * 4):
        resp = await stack.http.post("/channels/slack", data=bad, headers=form_signed(bad))
        assert resp.status == 400
    assert slack.delivered == []


async def test_a_failed_button_removal_never_loses_the_press(
    stack: Stack, telegram: FakeTelegram, slack: FakeSlack
) -> None:
    """The prompt is gone by the time the press is answered (deleted by someone, say): the
    removal is refused, and the press's answer still arrives, once."""
    user = ident()
    await push_approval(stack, ReplyAddress(channel="telegram", user_id=str(user),
                                            conversation_id=str(user)))  # fmt: skip
    [asking] = telegram.messages
    telegram.messages.clear()
    press = telegram.press(asking, f"approve:{CODE}", user=user, update_id=ident())
    assert (await post_telegram(stack, press)).status == 200
    replies = await wait_delivered(telegram, 2)
    assert replies[1].text == INVALID
    assert [m for m, _ in telegram.calls].count("editMessageReplyMarkup") == 1

    presser, channel = f"U{ident()}", f"D{ident()}"
    address = ReplyAddress(channel="slack", user_id=presser, conversation_id=channel)
    await push_approval(stack, address)
    [message] = slack.messages
    slack.messages.clear()
    body = slack.press(message, "deny", presser)
    assert (await stack.http.post("/channels/slack", data=body, headers=form_signed(body))).ok
    replies = await wait_delivered(slack, 2)
    assert replies[1] == Delivered(channel, None, INVALID)
    assert [m for m, _ in slack.calls].count("chat.update") == 1


# -- Discord -------------------------------------------------------------------------------


async def post_discord(stack: Stack, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return await stack.http.post(
        "/channels/discord", data=body, headers=headers or discord_signed(DISCORD_KEY, body)
    )


async def test_discord_components_and_a_press_is_one_approve_run(
    stack: Stack, discord: FakeDiscord
) -> None:
    user, presser, channel = str(ident()), str(ident()), str(ident())
    token = discord.new_token(channel)
    address = ReplyAddress(
        channel="discord",
        user_id=user,
        conversation_id=channel,
        extra={"interaction_token": token, "received_at": f"{time.time():.3f}"},
    )
    await push_approval(stack, address)
    [message] = discord.messages
    assert message["content"] == prompt()
    assert message["components"] == [
        {
            "type": 1,
            "components": [
                {"type": 2, "style": 3, "label": "Approve", "custom_id": f"approve:{CODE}"},
                {"type": 2, "style": 4, "label": "Deny", "custom_id": f"deny:{CODE}"},
            ],
        }
    ]

    key = str(ident())
    body = discord.press(message, f"approve:{CODE}", interaction_id=key, user=presser)
    run_id = f"run/default/discord/{key}"
    forged = {**discord_signed(DISCORD_KEY, body)}
    forged["X-Signature-Ed25519"] = Ed25519PrivateKey.generate().sign(b"x").hex()
    assert (await post_discord(stack, body, forged)).status == 401
    assert (await post_discord(stack, body.replace(b"approve", b"deny"), discord_signed(
        DISCORD_KEY, body))).status == 401  # fmt: skip
    assert not await exists(stack, run_id)

    started = time.monotonic()
    resp = await post_discord(stack, body)
    assert resp.status == 200
    assert time.monotonic() - started < 3.0
    answer = await resp.json()
    # The answer itself takes the buttons off the pressed message (within the 3 s).
    assert answer == {"type": 7, "data": {"components": []}}
    discord.answer_press(message, answer)
    assert message["components"] == [] and message["content"] == prompt()
    assert (await post_discord(stack, body)).status == 200  # the same interaction: one run
    request = await request_of(stack, run_id)
    assert request.text == f"/approve {CODE}"
    assert (request.user_id, request.conversation_id, request.is_direct) == (
        presser,
        channel,
        True,
    )
    replies = await wait_delivered(discord, 2)
    assert replies[1] == Delivered(channel, None, INVALID)  # a followup on the press's token
    assert discord.messages[-1]["components"] == []


async def test_discord_press_in_a_server_and_unknown_buttons(
    stack: Stack, discord: FakeDiscord
) -> None:
    user, presser, channel, guild = str(ident()), str(ident()), str(ident()), str(ident())
    token = discord.new_token(channel)
    address = ReplyAddress(
        channel="discord",
        user_id=user,
        conversation_id=channel,
        extra={"interaction_token": token, "received_at": f"{time.time():.3f}"},
    )
    await push_approval(stack, address)
    [message] = discord.messages
    key = str(ident())
    body = discord.press(message, f"deny:{CODE}", interaction_id=key, user=presser, guild=guild)
    assert (await post_discord(stack, body)).status == 200
    request = await request_of(stack, f"run/default/discord/{key}")
    assert request.text == f"/deny {CODE}"
    assert (request.user_id, request.conversation_id, request.is_direct) == (
        presser,
        channel,
        False,
    )
    unknown = json.loads(body)
    unknown |= {"id": str(ident()), "data": {"custom_id": "vote:up", "component_type": 2}}
    raw = json.dumps(unknown).encode()
    resp = await post_discord(stack, raw)
    answer = await resp.json()
    assert answer["type"] == 4 and answer["data"]["flags"] == 64  # ephemeral
    assert not await exists(stack, f"run/default/discord/{unknown['id']}")


# -- the whole way: a press approves the waiting tool call -----------------------------------


async def wait_text(platform: Any, text: str, timeout: float = 30.0) -> list[Delivered]:
    async def seen() -> bool:
        return any(text in d.text for d in platform.delivered)

    await eventually(seen, timeout)
    return list(platform.delivered)


def paid_once() -> bool:
    return [name for name, _ in agent_tools.calls] == ["send_payment"]


async def test_telegram_press_approves_the_waiting_tool(
    stack: Stack, telegram: FakeTelegram
) -> None:
    user = ident()
    await post_telegram(stack, {"update_id": ident(), "message": {
        "message_id": 7, "date": 1, "from": {"id": user, "is_bot": False, "first_name": "T"},
        "chat": {"id": user, "type": "private"}, "text": PAYMENT}})  # fmt: skip
    await wait_text(telegram, "Reply /approve")
    asking = next(m for m in telegram.messages if "reply_markup" in m)
    data = asking["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert data.startswith("approve:")
    press = telegram.press(asking, data, user=user, update_id=ident())
    assert (await post_telegram(stack, press)).status == 200
    await wait_text(telegram, "final: ")
    assert paid_once()


async def test_slack_press_approves_the_waiting_tool(stack: Stack, slack: FakeSlack) -> None:
    from tests.test_tck_slack import event_callback

    user, channel, ts = f"U{ident()}", f"D{ident()}", f"{ident()}.000100"
    event = {"type": "message", "channel_type": "im", "user": user, "text": PAYMENT,
             "ts": ts, "channel": channel}  # fmt: skip
    body = event_callback(event, f"Ev{ident()}")
    assert (await stack.http.post("/channels/slack", data=body, headers=slack_signed(body))).ok
    await wait_text(slack, "Reply /approve")
    asking = next(m for m in slack.messages if "blocks" in m)
    press = slack.press(asking, "approve", user)
    resp = await stack.http.post("/channels/slack", data=press, headers=form_signed(press))
    assert resp.status == 200
    await wait_text(slack, "final: ")
    assert paid_once()


async def test_discord_press_approves_the_waiting_tool(stack: Stack, discord: FakeDiscord) -> None:
    from tests.test_tck_discord import interaction

    user, channel = str(ident()), str(ident())
    ask = interaction(str(ident()), discord.new_token(channel), user=user, channel=channel,
                      options={"text": PAYMENT})  # fmt: skip
    assert (await post_discord(stack, ask)).status == 200
    await wait_text(discord, "Reply /approve")
    asking = next(m for m in discord.messages if m["components"])
    custom_id = asking["components"][0]["components"][0]["custom_id"]
    press = discord.press(asking, custom_id, interaction_id=str(ident()), user=user)
    resp = await post_discord(stack, press)
    assert await resp.json() == {"type": 7, "data": {"components": []}}
    await wait_text(discord, "final: ")
    assert paid_once()


# -- Teams ---------------------------------------------------------------------------------


def teams_address(bot: FakeBotFramework, user: str, conversation: str) -> ReplyAddress:
    """Where a personal chat's reply goes, as the channel records it from a message."""
    extra = {
        "service_url": bot.base_url,
        "channel_id": "msteams",
        "conversation": conversation,
        "conversation_type": "personal",
        "bot_id": BOT_ID,
        "bot_name": "Switchboard",
    }
    return ReplyAddress(channel="activity", user_id=user, conversation_id=conversation, extra=extra)


def teams_card(code: str = CODE) -> dict[str, Any]:
    data = {"code": code, "prompt": prompt(code)}
    return {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": [{"type": "TextBlock", "text": prompt(code), "wrap": True}],
        "actions": [
            {"type": "Action.Execute", "title": "Approve", "verb": "approve", "style": "positive",
             "data": data},
            {"type": "Action.Execute", "title": "Deny", "verb": "deny", "style": "destructive",
             "data": data},
        ],
    }  # fmt: skip


async def post_teams(stack: Stack, body: bytes, token: str) -> Any:
    return await stack.http.post("/channels/activity", data=body, headers=bearer(token))


async def test_teams_adaptive_card_and_a_press_is_one_approve_run(
    stack: Stack, bot: FakeBotFramework
) -> None:
    from channels.activity import message_key

    n = uuid.uuid4().hex[:10]
    user, presser, conversation = f"29:u-{n}", f"29:p-{n}", f"a:conv-{n}"
    await push_approval(stack, teams_address(bot, user, conversation))
    [message] = bot.messages
    assert message["attachments"] == [
        {"contentType": "application/vnd.microsoft.card.adaptive", "content": teams_card()}
    ]
    assert "text" not in message  # the card shows the prompt; a text would repeat it

    key = f"f:{n}"
    press = bot.press(message, "approve", user=presser, activity_id=key)
    run_id = f"run/default/activity/{message_key('msteams', conversation, key)}"
    # Forged: a token signed by a key Microsoft never published, no token, another audience.
    for token in (
        bot.inbound_token(key=SigningKeyPair(kid=bot.key.kid)),
        "",
        bot.inbound_token(aud="someone-else"),
    ):
        assert (await post_teams(stack, press, token)).status == 401
    assert not await exists(stack, run_id)

    answered = {k: v for k, v in teams_card().items() if k != "actions"}
    note = {"type": "TextBlock", "text": f"Answered: /approve {CODE}", "wrap": True}
    answered["body"] = [*answered["body"], {**note, "isSubtle": True}]
    for _ in range(2):  # the same invoke delivered twice: one run, the same answer
        started = time.monotonic()
        resp = await post_teams(stack, press, bot.inbound_token())
        assert resp.status == 200
        assert time.monotonic() - started < 5.0  # Teams' deadline for an invoke's answer
        answer = await resp.json()
        assert answer == {"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive",
                          "value": answered}  # fmt: skip
    bot.answer_press(message, answer)
    assert "actions" not in message["attachments"][0]["content"]  # the buttons are gone

    request = await request_of(stack, run_id)
    assert request.text == f"/approve {CODE}"
    assert (request.user_id, request.conversation_id, request.is_direct) == (
        presser,
        conversation,
        True,
    )
    replies = await wait_delivered(bot, 2)
    assert replies[1] == Delivered(conversation, None, INVALID)
    raw_path = next(path for path, _, p in bot.connector_calls if p.get("text") == INVALID)
    assert raw_path.endswith(f"/activities/{message['id']}")  # under the card


async def test_teams_other_card_actions_are_answered_and_start_nothing(
    stack: Stack, bot: FakeBotFramework
) -> None:
    n = uuid.uuid4().hex[:10]
    await push_approval(stack, teams_address(bot, f"29:u-{n}", f"a:conv-{n}"))
    [message] = bot.messages
    press = json.loads(bot.press(message, "approve", user=f"29:p-{n}", activity_id=f"x:{n}"))
    press["value"]["action"]["verb"] = "vote"
    resp = await post_teams(stack, json.dumps(press).encode(), bot.inbound_token())
    answer = await resp.json()
    assert resp.status == 200 and answer["type"] == "application/vnd.microsoft.activity.message"
    press["value"] = {"no": "action"}
    resp = await post_teams(stack, json.dumps(press).encode(), bot.inbound_token())
    assert resp.status == 400
    assert bot.delivered == [Delivered(f"a:conv-{n}", None, prompt())]


async def test_a_refused_teams_press_keeps_the_card_and_says_why(
    stack: Stack, bot: FakeBotFramework
) -> None:
    """Policy, a busy session and a rate limit answer the invoke with a message to the
    presser (HTTP 200, as Teams expects of an invoke), never with the buttonless card."""
    from channels.base import Accepted, InboundHttp
    from hosting.models import SubmitResult

    n = uuid.uuid4().hex[:10]
    await push_approval(stack, teams_address(bot, f"29:u-{n}", f"a:conv-{n}"))
    body = bot.press(bot.messages[-1], "deny", user=f"29:p-{n}", activity_id=f"r:{n}")
    channel = stack.registry.get("activity")
    outcome = await channel.receive(
        InboundHttp("POST", "/channels/activity", bearer(bot.inbound_token()), {}, body,
                    time.time())
    )  # fmt: skip
    assert isinstance(outcome, Accepted) and outcome.request.text == f"/deny {CODE}"
    busy = SubmitResult(run_id="run/x", accepted=False)
    for answer in (
        channel.refuse(outcome.request),
        channel.too_many(outcome.request, 2.0),
        channel.acknowledge(outcome.request, busy),
    ):
        assert answer.status == 200
        reply = json.loads(answer.body)
        assert reply["statusCode"] == 200
        assert reply["type"] == "application/vnd.microsoft.activity.message"
        assert isinstance(reply["value"], str) and reply["value"]


async def test_teams_press_approves_the_waiting_tool(stack: Stack, bot: FakeBotFramework) -> None:
    n = uuid.uuid4().hex[:10]
    user, conversation = f"29:u-{n}", f"a:conv-{n}"
    ask = activity(bot, key=f"m:{n}", user=user, conversation=conversation, text=PAYMENT)
    assert (await post_teams(stack, ask, bot.inbound_token())).status == 200
    await wait_text(bot, "Reply /approve")
    asking = next(m for m in bot.messages if "attachments" in m)
    press = bot.press(asking, "approve", user=user, activity_id=f"p:{n}")
    resp = await post_teams(stack, press, bot.inbound_token())
    assert (await resp.json())["type"] == "application/vnd.microsoft.card.adaptive"
    await wait_text(bot, "final: ")
    assert paid_once()


# -- Web chat ------------------------------------------------------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; `make test` installs it")
        pytest.skip("chromium is not installed (run `make test`, which installs it)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.mark.browser
async def test_web_chat_buttons_send_the_command(client: Client, browser: Browser) -> None:
    async with serve_site(client, {}) as url:
        page = await (await browser.new_context()).new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: dialogs.append(d.message))
        await page.goto(url + "/")

        # The pattern, as the page reads replies.
        cases = {
            prompt(): CODE,
            "echo: x reply /approve ABC123 or /deny ABC123": "ABC123",
            "Reply /approve ABC123 or /deny XYZ789.": None,  # two codes: not an approval prompt
            "Reply /approve AB or /deny AB.": None,
            "/approve K7QX2M": None,
            "plain text": None,
        }
        for text, code in cases.items():
            assert await page.evaluate("(t) => approvalCode(t)", text) == code, text

        # The echo agent's reply contains the instruction: buttons appear under it.
        await page.locator("#input").fill("x reply /approve ABC123 or /deny ABC123")
        await page.locator("#input").press("Enter")
        first = page.locator(".turn").nth(0)
        await expect(first.locator(".bubble.agent")).to_have_text(
            "echo: x reply /approve ABC123 or /deny ABC123", timeout=20_000
        )
        approve = first.locator(".approval button", has_text="Approve")
        deny = first.locator(".approval button", has_text="Deny")
        await expect(approve).to_be_visible()
        await expect(deny).to_be_visible()
        assert await page.locator(".turn").nth(0).locator(".bubble.me .approval").count() == 0
        await approve.click()
        # The press is the person's next message, through the page's own send path.
        await expect(page.locator(".bubble.me").nth(1)).to_have_text("/approve ABC123")
        await expect(page.locator(".bubble.agent").nth(1)).to_have_text(INVALID, timeout=20_000)
        # Pressed: the buttons are gone from that reply, and stay gone.
        await expect(first.locator(".approval")).to_have_count(0)
        assert await page.locator(".turn").nth(1).locator(".approval").count() == 0

        # A run waiting for approval shows its question (action_text) with the buttons, and
        # they go away once it no longer asks. Text only: markup in it stays text.
        question = prompt("ZX9Q7M").replace("bob", "<b>bob</b>")
        await page.evaluate(
            """(q) => {
                const turn = renderTurn({ id: "waiting", text: "pay bob" });
                updateTurn(turn, { status: "in_progress", output_text: null, action_text: q });
            }""",
            question,
        )
        waiting = page.locator('.turn[data-message-id="waiting"]')
        await expect(waiting.locator(".bubble.agent")).to_have_text(question)
        assert await page.locator("#log b").count() == 0
        await waiting.locator(".approval button", has_text="Deny").click()
        await expect(page.locator(".bubble.me").last).to_have_text("/deny ZX9Q7M")
        await expect(waiting.locator(".approval")).to_have_count(0)  # gone once pressed
        await page.evaluate(
            """() => updateTurn(document.querySelector('.turn[data-message-id="waiting"]'),
                                { status: "in_progress", output_text: null })"""
        )
        await expect(waiting.locator(".approval")).to_have_count(0)
        assert dialogs == []


class WebhookInfoTelegram(FakeTelegram):
    """Adds ``getMe`` and ``getWebhookInfo``, reporting a webhook set for messages only."""

    async def read_only(self, request: web.Request) -> web.Response:
        if request.match_info["method"] == "getMe":
            me = {"id": 42, "is_bot": True, "first_name": "Bot", "username": "switch_test_bot"}
            return web.json_response({"ok": True, "result": me})
        info = {"url": "https://bot.example.org/channels/telegram", "pending_update_count": 0,
                "allowed_updates": ["message"]}  # fmt: skip
        return web.json_response({"ok": True, "result": info})

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/bot{token}/{method:getMe|getWebhookInfo}", self.read_only)
        return app


async def test_doctor_warns_when_the_webhook_misses_callback_queries() -> None:
    from channels.telegram import TelegramChannelSettings

    async with serve(WebhookInfoTelegram()) as fake:
        channel = TelegramChannel(
            settings=TelegramChannelSettings(
                bot_token=TELEGRAM_TOKEN,  # type: ignore[arg-type]
                secret_token=TELEGRAM_SECRET,  # type: ignore[arg-type]
                bot_username="switch_test_bot",
                api_base_url=fake.url(""),
            )
        )
        async with aiohttp.ClientSession() as http:
            ok, _, warnings = await channel.check_credentials(
                http, "https://bot.example.org/channels/telegram", 5.0
            )
    assert ok
    assert [w for w in warnings if "callback_query" in w], warnings
