"""Telegram passes the conformance kit against a local Bot API; plus its own rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channels.conformance import ChannelConformance
from channels.tck import FakePlatform, wait_delivered
from channels.telegram import TelegramChannel
from tests.conftest import Stack
from tests.fakes import TELEGRAM_TOKEN, FakeTelegram, dumps, serve

SECRET = "telegram-webhook-secret_123"
BOT = "switch_test_bot"


def update(key: str, user: str, chat: str, text: str, *, chat_type: str = "private",
           thread: str | None = None, entities: list[dict[str, Any]] | None = None,
           reply_to_bot: bool = False) -> dict[str, Any]:  # fmt: skip
    message: dict[str, Any] = {
        "message_id": int(key) % 100000,
        "date": 1700000000,
        "from": {"id": int(user), "is_bot": False, "first_name": "Test"},
        "chat": {"id": int(chat), "type": chat_type},
        "text": text,
    }
    if thread:
        message["message_thread_id"] = int(thread)
        message["is_topic_message"] = True
    if entities:
        message["entities"] = entities
    if reply_to_bot:
        message["reply_to_message"] = {
            "message_id": 1,
            "from": {"id": 42, "is_bot": True, "username": BOT},
        }
    return {"update_id": int(key), "message": message}


class TestTelegramConformance(ChannelConformance):
    channel = "telegram"
    signs_body = False  # Telegram sends a shared secret, not a signature
    deadline_s = 3.0

    @pytest.fixture
    async def platform(self) -> AsyncIterator[FakePlatform]:
        async with serve(FakeTelegram()) as fake:
            yield fake  # type: ignore[misc]

    def channel_settings(self, platform: FakePlatform) -> dict[str, Any]:
        return {
            "bot_token": TELEGRAM_TOKEN,
            "secret_token": SECRET,
            "bot_username": BOT,
            "api_base_url": platform.base_url,
        }

    def message(
        self, *, key: str, user: str, conversation: str, text: str, thread: str | None = None
    ) -> bytes:
        if thread is None:
            return dumps(update(key, user, conversation, text))
        # Forum topics live in supergroups, where the bot answers when mentioned.
        mention = f"@{BOT} "
        return dumps(
            update(key, user, conversation, mention + text, chat_type="supergroup", thread=thread,
                   entities=[{"type": "mention", "offset": 0, "length": len(mention) - 1}])
        )  # fmt: skip

    def sign(self, body: bytes, *, key: str, timestamp: float | None = None) -> dict[str, str]:
        return {"X-Telegram-Bot-Api-Secret-Token": SECRET, "content-type": "application/json"}

    def has_timestamp(self) -> bool:
        return False


OVERRIDES = {"delivery": {"initial_interval_s": 0.2, "max_interval_s": 1.0, "max_attempts": 4}}


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with serve(FakeTelegram()) as fake:
        yield fake  # type: ignore[misc]


def with_telegram(fake_url: str, **extra: Any) -> dict[str, Any]:
    section = {
        "bot_token": TELEGRAM_TOKEN,
        "secret_token": SECRET,
        "bot_username": BOT,
        "api_base_url": fake_url,
        **extra,
    }
    return {**OVERRIDES, "channels": {"telegram": section}}


async def post_update(stack: Stack, body: dict[str, Any]) -> int:
    resp = await stack.http.post(
        "/channels/telegram",
        data=json.dumps(body),
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
    )
    return resp.status


@pytest.fixture
def settings_overrides(telegram: FakeTelegram, request: pytest.FixtureRequest) -> dict[str, Any]:
    extra = getattr(request, "param", {})
    return with_telegram(telegram.base_url, **extra)


async def test_groups_answer_only_when_addressed(stack: Stack, telegram: FakeTelegram) -> None:
    chat = "-1001234567890"
    assert (
        await post_update(
            stack, update("5001", "777", chat, "just chatting", chat_type="supergroup")
        )
        == 200
    )
    cmd = f"/help@{BOT}"
    assert await post_update(
        stack, update("5002", "777", chat, f"{cmd} please", chat_type="supergroup",
                      entities=[{"type": "bot_command", "offset": 0, "length": len(cmd)}])
    ) == 200  # fmt: skip
    other = "/help@someone_else_bot"
    assert await post_update(
        stack, update("5003", "777", chat, other, chat_type="supergroup",
                      entities=[{"type": "bot_command", "offset": 0, "length": len(other)}])
    ) == 200  # fmt: skip
    assert (
        await post_update(
            stack,
            update(
                "5004", "777", chat, "replying to you", chat_type="supergroup", reply_to_bot=True
            ),
        )
        == 200
    )
    replies = await wait_delivered(telegram, 2)
    assert [r.text for r in replies] == ["echo: /help please", "echo: replying to you"]
    assert {r.conversation_id for r in replies} == {chat}


@pytest.mark.parametrize("settings_overrides", [{"accept_in_group": "all"}], indirect=True)
async def test_accept_in_group_all(stack: Stack, telegram: FakeTelegram) -> None:
    assert (
        await post_update(stack, update("6001", "778", "-100999", "anything", chat_type="group"))
        == 200
    )
    [reply] = await wait_delivered(telegram, 1)
    assert reply.text == "echo: anything"


async def test_mention_offsets_count_utf16_units(stack: Stack, telegram: FakeTelegram) -> None:
    text = f"😀 @{BOT} hi"  # the emoji is two UTF-16 code units
    entity = {"type": "mention", "offset": 3, "length": len(BOT) + 1}
    assert (
        await post_update(
            stack, update("7001", "779", "-100888", text, chat_type="supergroup", entities=[entity])
        )
        == 200
    )
    [reply] = await wait_delivered(telegram, 1)
    assert reply.text == "echo: 😀 hi"


async def test_long_replies_are_split_on_lines_and_keep_the_topic(
    stack: Stack, telegram: FakeTelegram
) -> None:
    text = "\n".join(f"line {i:04d} " + "x" * 80 for i in range(60))  # about 5,500 characters
    assert await post_update(stack, update("8001", "780", "780", text)) == 200
    replies = await wait_delivered(telegram, 2)
    assert all(len(r.text) <= 4096 for r in replies)
    assert "\n".join(r.text for r in replies) == f"echo: {text}"
    first_call = next(p for m, p in telegram.calls if m == "sendMessage")
    assert first_call["reply_parameters"]["message_id"] == 8001


async def test_a_retry_resumes_after_the_parts_already_sent(
    stack: Stack, telegram: FakeTelegram
) -> None:
    text = "\n".join("y" * 100 for _ in range(90))  # three parts
    telegram.fail_at[2] = ("rate_limited", 1.0)  # part one goes out, part two is refused once
    assert await post_update(stack, update("9001", "781", "781", text)) == 200
    replies = await wait_delivered(telegram, 3)
    assert "\n".join(r.text for r in replies) == f"echo: {text}"  # each part exactly once
    assert telegram.pushes == 4


async def test_set_webhook_registers_the_secret(stack: Stack, telegram: FakeTelegram) -> None:
    channel = stack.registry.get("telegram")
    assert isinstance(channel, TelegramChannel)
    async with aiohttp.ClientSession() as http:
        answer = await channel.set_webhook(http, "https://bot.example.org/channels/telegram")
    assert answer["ok"] is True
    [(method, payload)] = telegram.calls
    assert method == "setWebhook"
    assert payload["url"] == "https://bot.example.org/channels/telegram"
    assert payload["secret_token"] == SECRET
