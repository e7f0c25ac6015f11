"""Discord passes the conformance kit against a local REST API; plus its own rules."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from channels.base import Accepted, Answered, ChannelAck, FailureMode, InboundHttp, Refused
from channels.catalog import settings_from_dict
from channels.conformance import ChannelConformance
from channels.discord import DiscordChannel, DiscordChannelSettings
from channels.tck import FakePlatform, wait_delivered
from hosting.models import DeliveryPolicy, PushRequest, ReplyAddress, RunInput, SubmitResult
from hosting.settings import ConfigError
from tests.conftest import Stack
from tests.fakes import dumps, serve
from tests.fakes_discord import (
    APPLICATION_ID,
    BOT_TOKEN,
    FakeDiscord,
    public_key_hex,
    sign_interaction,
)

KEY = Ed25519PrivateKey.generate()  # the application's key pair, as Discord holds it
GUILD = "1200000000000000001"


def section(fake: FakeDiscord) -> dict[str, Any]:
    return {
        "public_key": public_key_hex(KEY),
        "application_id": APPLICATION_ID,
        "bot_token": BOT_TOKEN,
        "api_base_url": fake.base_url,
    }


def interaction(
    key: str,
    token: str,
    *,
    user: str,
    channel: str,
    name: str = "ask",
    options: dict[str, str] | None = None,
    guild: str | None = None,
    thread_of: str | None = None,
) -> bytes:
    """An APPLICATION_COMMAND interaction as Discord posts it (DM unless ``guild``)."""
    body: dict[str, Any] = {
        "id": key, "application_id": APPLICATION_ID, "type": 2, "token": token, "version": 1,
        "channel_id": channel, "locale": "en-US", "app_permissions": "2248473465835073",
        "data": {
            "id": "1300000000000000009", "name": name, "type": 1,
            "options": [{"name": k, "type": 3, "value": v} for k, v in (options or {}).items()],
        },
    }  # fmt: skip
    if guild is None:
        body |= {
            "context": 1,
            "channel": {"id": channel, "type": 1},
            "user": {"id": user, "username": "alice", "global_name": "Alice"},
        }
    else:
        kind = 11 if thread_of else 0
        body |= {
            "context": 0, "guild_id": guild, "guild_locale": "en-US",
            "channel": {"id": channel, "type": kind, "guild_id": guild,
                        **({"parent_id": thread_of} if thread_of else {})},
            "member": {"user": {"id": user, "username": "alice"}, "roles": [], "nick": None},
        }  # fmt: skip
    return dumps(body)


class TestDiscordConformance(ChannelConformance):
    channel = "discord"
    discord: FakeDiscord

    @pytest.fixture
    async def platform(self) -> AsyncIterator[FakePlatform]:
        async with serve(FakeDiscord()) as fake:
            assert isinstance(fake, FakeDiscord)
            self.discord = fake
            yield fake

    def channel_settings(self, platform: FakePlatform) -> dict[str, Any]:
        assert isinstance(platform, FakeDiscord)
        return section(platform)

    def message(
        self, *, key: str, user: str, conversation: str, text: str, thread: str | None = None
    ) -> bytes:
        token = self.discord.new_token(conversation, thread)
        if thread is None:  # a DM with the bot
            return interaction(key, token, user=user, channel=conversation, options={"text": text})
        # a thread is its own channel, whose parent is the conversation
        return interaction(
            key, token, user=user, channel=thread, options={"text": text},
            guild=GUILD, thread_of=conversation,
        )  # fmt: skip

    def sign(self, body: bytes, *, key: str, timestamp: float | None = None) -> dict[str, str]:
        return sign_interaction(KEY, body, timestamp)


# -- Discord's own rules -------------------------------------------------------------------


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with serve(FakeDiscord(signing_key=KEY)) as fake:
        assert isinstance(fake, FakeDiscord)
        yield fake


@pytest.fixture
def settings_overrides(discord: FakeDiscord) -> dict[str, Any]:
    return {
        "channels": {"discord": section(discord)},
        "delivery": {"initial_interval_s": 0.2, "max_interval_s": 1.0},
    }


@pytest.fixture
def adapter(discord: FakeDiscord) -> DiscordChannel:
    """The adapter alone, for what needs no gateway or worker."""
    return DiscordChannel(settings=DiscordChannelSettings.model_validate(section(discord)))


async def post(stack: Stack, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return await stack.http.post(
        "/channels/discord", data=body, headers=headers or sign_interaction(KEY, body)
    )


def inbound(body: bytes, headers: dict[str, str] | None = None) -> InboundHttp:
    return InboundHttp(
        method="POST",
        path="/channels/discord",
        headers=headers or sign_interaction(KEY, body),
        query={},
        body=body,
        received_at=time.time(),
    )


def push_to(address: ReplyAddress, text: str, skip_parts: int = 0) -> PushRequest:
    return PushRequest(
        idempotency_key="k", run_id="run/default/discord/1", phase="response", address=address,
        text=text, created_at=datetime.now(UTC), max_age_s=60, skip_parts=skip_parts,
        policy=DeliveryPolicy(timeout_s=2.0),
    )  # fmt: skip


def followup_address(
    token: str, received_at: float, user: str = "4100000000000000001"
) -> ReplyAddress:
    return ReplyAddress(
        channel="discord",
        user_id=user,
        conversation_id="4200000000000000001",
        extra={"interaction_token": token, "received_at": f"{received_at:.3f}"},
    )


async def run_exists(stack: Stack, key: str) -> bool:
    try:
        await stack.client.get_workflow_handle(f"run/default/discord/{key}").describe()
    except Exception:
        return False
    return True


async def test_ping_is_answered_with_pong_and_starts_nothing(
    stack: Stack, discord: FakeDiscord
) -> None:
    body = dumps({"id": "1100000000000000001", "application_id": APPLICATION_ID, "type": 1,
                  "token": "A_UNIQUE_TOKEN", "version": 1})  # fmt: skip
    resp = await post(stack, body)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == {"type": 1}
    assert not await run_exists(stack, "1100000000000000001")


async def test_bad_missing_malformed_or_stale_signatures_are_401_and_start_nothing(
    stack: Stack, discord: FakeDiscord
) -> None:
    key = "1100000000000000002"
    body = interaction(key, discord.new_token("42"), user="41", channel="42", options={"text": "x"})
    good = sign_interaction(KEY, body)
    other_key = sign_interaction(Ed25519PrivateKey.generate(), body)
    attempts = [
        other_key,  # a valid signature, but not by our application's key
        {**good, "X-Signature-Ed25519": "zz" * 64},  # not hex
        {**good, "X-Signature-Ed25519": good["X-Signature-Ed25519"][:64]},  # too short
        {k: v for k, v in good.items() if k != "X-Signature-Ed25519"},
        {k: v for k, v in good.items() if k != "X-Signature-Timestamp"},
        {**good, "X-Signature-Timestamp": str(int(time.time()) + 1)},  # signed for another time
        sign_interaction(KEY, body, timestamp=time.time() - 301),  # stale: a replay
    ]
    for headers in attempts:
        resp = await post(stack, body, headers)
        assert resp.status == 401, headers
    ping = dumps(
        {"id": "1", "application_id": APPLICATION_ID, "type": 1, "token": "t", "version": 1}
    )
    forged_ping = sign_interaction(Ed25519PrivateKey.generate(), ping)  # Discord's own probe
    assert (await post(stack, ping, forged_ping)).status == 401
    assert not await run_exists(stack, key)
    assert discord.calls == []


async def test_a_command_is_deferred_then_answered_with_a_followup(
    stack: Stack, discord: FakeDiscord
) -> None:
    token = discord.new_token("4200000000000000011")
    body = interaction("1100000000000000003", token, user="4100000000000000011",
                       channel="4200000000000000011", options={"text": "hello"})  # fmt: skip
    resp = await post(stack, body)
    assert resp.status == 200
    assert await resp.json() == {"type": 5}  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
    [reply] = await wait_delivered(discord, 1)
    assert (reply.conversation_id, reply.text) == ("4200000000000000011", "echo: hello")
    [(route, call)] = discord.calls
    assert route == "followup" and call["query"] == {"wait": "true"}
    assert call["allowed_mentions"] == {"parse": []}  # agent text never pings anyone


async def test_guild_commands_are_not_direct_and_name_the_member(adapter: DiscordChannel) -> None:
    body = interaction("1100000000000000004", "tok", user="41", channel="43", guild=GUILD,
                       options={"text": "  in a guild  "})  # fmt: skip
    outcome = await adapter.receive(inbound(body))
    assert isinstance(outcome, Accepted)
    request = outcome.request
    assert (request.user_id, request.conversation_id, request.thread_id) == ("41", "43", None)
    assert not request.is_direct and request.text == "in a guild"
    assert request.message_key == "1100000000000000004"
    assert request.reply_to.extra["interaction_token"] == "tok"
    assert abs(float(request.reply_to.extra["received_at"]) - time.time()) < 60
    dm = await adapter.receive(inbound(interaction("5", "tok", user="41", channel="44",
                                                   options={"text": "hi"})))  # fmt: skip
    assert isinstance(dm, Accepted) and dm.request.is_direct
    assert (dm.request.user_id, dm.request.conversation_id) == ("41", "44")


@pytest.mark.parametrize(
    ("name", "options", "text"),
    [
        ("link", {"code": "ABC123"}, "/link ABC123"),
        ("link", {}, "/link"),
        ("unlink", {}, "/unlink"),
        ("ask", {"text": "/link"}, "/link"),
    ],
)
async def test_link_commands_become_chat_commands(
    adapter: DiscordChannel, name: str, options: dict[str, str], text: str
) -> None:
    body = interaction("1100000000000000005", "tok", user="41", channel="42", name=name,
                       options=options)  # fmt: skip
    outcome = await adapter.receive(inbound(body))
    assert isinstance(outcome, Accepted)
    assert outcome.request.text == text


async def test_link_command_reaches_the_run_as_its_text(stack: Stack, discord: FakeDiscord) -> None:
    key = "1100000000000000006"
    body = interaction(key, discord.new_token("4200000000000000012", None),
                       user="4100000000000000012", channel="4200000000000000012",
                       guild=GUILD, name="link", options={"code": "ZZZZ99"})  # fmt: skip
    assert (await post(stack, body)).status == 200
    await wait_delivered(discord, 1)  # the run's answer to the code
    history = await stack.client.get_workflow_handle(f"run/default/discord/{key}").fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [inp] = await stack.client.data_converter.decode(started.input.payloads, [RunInput])
    assert inp.submit.request.text == "/link ZZZZ99"
    assert inp.submit.request.is_direct is False


async def test_other_interactions_get_an_answer_and_start_nothing(adapter: DiscordChannel) -> None:
    component = dumps({"id": "7", "application_id": APPLICATION_ID, "type": 3, "token": "t",
                       "channel_id": "42", "user": {"id": "41"},
                       "data": {"custom_id": "x", "component_type": 2}})  # fmt: skip
    unknown = interaction("8", "t", user="41", channel="42", name="dance")
    for body in (component, unknown):
        outcome = await adapter.receive(inbound(body))
        assert isinstance(outcome, Answered)
        answer = json.loads(outcome.answer.body)
        assert answer["type"] == 4 and answer["data"]["flags"] == 64  # ephemeral message
    autocomplete = dumps({"id": "9", "application_id": APPLICATION_ID, "type": 4, "token": "t"})
    outcome = await adapter.receive(inbound(autocomplete))
    assert isinstance(outcome, Answered) and json.loads(outcome.answer.body)["type"] == 8
    not_json = await adapter.receive(inbound(b"{not json"))
    assert isinstance(not_json, Refused) and not_json.status == 400


async def test_busy_and_refused_callers_get_an_ephemeral_answer_not_a_deferral(
    adapter: DiscordChannel,
) -> None:
    outcome = await adapter.receive(
        inbound(interaction("10", "t", user="41", channel="42", options={"text": "x"}))
    )
    assert isinstance(outcome, Accepted)
    busy = adapter.acknowledge(outcome.request, SubmitResult(run_id="r", accepted=False))
    refused = adapter.refuse(outcome.request)
    for answer in (busy, refused):
        assert answer.status == 200 and json.loads(answer.body)["data"]["flags"] == 64
    accepted = adapter.acknowledge(outcome.request, SubmitResult(run_id="r"))
    assert json.loads(accepted.body) == {"type": 5}


async def test_after_fifteen_minutes_the_reply_goes_to_the_users_dm(
    adapter: DiscordChannel, discord: FakeDiscord
) -> None:
    token = discord.new_token("4200000000000000001")  # still valid at the fake: not consulted
    old = followup_address(token, received_at=time.time() - 16 * 60)
    async with aiohttp.ClientSession() as http:
        ack = await adapter.push(http, push_to(old, "late answer"))
    assert ack.ok
    assert [route for route, _ in discord.calls] == ["create_dm", "channel_message"]
    assert discord.calls[0][1] == {"recipient_id": "4100000000000000001"}
    [reply] = discord.delivered
    assert (reply.conversation_id, reply.text) == (
        discord.dm_channel("4100000000000000001"),
        "late answer",
    )


async def test_a_token_discord_no_longer_accepts_falls_back_to_the_dm(
    adapter: DiscordChannel, discord: FakeDiscord
) -> None:
    token = discord.new_token("4200000000000000001")
    discord.expire(token)
    async with aiohttp.ClientSession() as http:
        ack = await adapter.push(http, push_to(followup_address(token, time.time()), "hi"))
    assert ack.ok and ack.parts_delivered == 1
    assert [route for route, _ in discord.calls] == ["followup", "create_dm", "channel_message"]


async def test_429_maps_to_rate_limited_with_the_bodys_fractional_retry_after(
    adapter: DiscordChannel, discord: FakeDiscord
) -> None:
    address = followup_address(discord.new_token("4200000000000000001"), time.time())
    discord.fail_next("rate_limited", retry_after_s=1.337)  # the header says 2 (whole seconds)
    async with aiohttp.ClientSession() as http:
        limited = await adapter.push(http, push_to(address, "hi"))
        assert (limited.mode, limited.retry_after_s) == (FailureMode.RATE_LIMITED, 1.337)
        discord.fail_next("server_error")
        assert (await adapter.push(http, push_to(address, "hi"))).mode is FailureMode.TRANSIENT
        discord.fail_next("rejected")
        assert (await adapter.push(http, push_to(address, "hi"))).mode is FailureMode.REJECTED
        assert (await adapter.push(http, push_to(address, "hi"))).ok


def test_a_403_about_the_recipient_is_rejected_not_unauthorized() -> None:
    from channels.http_push import HttpResult

    def ack(status: int, body: dict[str, Any]) -> ChannelAck:
        return DiscordChannel._ack(HttpResult(status, {}, dumps(body)))

    assert ack(403, {"message": "Cannot send messages to this user", "code": 50007}).mode is (
        FailureMode.REJECTED
    )
    assert ack(401, {"message": "401: Unauthorized", "code": 0}).mode is FailureMode.UNAUTHORIZED
    assert ack(403, {"message": "Forbidden", "code": 40001}).mode is FailureMode.UNAUTHORIZED
    header_only = DiscordChannel._ack(HttpResult(429, {"retry-after": "3"}, b"not json"))
    assert header_only.retry_after_s == 3.0


async def test_long_replies_are_split_at_2000_characters_and_resume_after_skip_parts(
    adapter: DiscordChannel, discord: FakeDiscord
) -> None:
    address = followup_address(discord.new_token("4200000000000000001"), time.time())
    text = "\n".join(f"line {i:04d} " + "x" * 80 for i in range(50))  # ~4,600 characters
    discord.fail_at = {discord.pushes + 2: ("rate_limited", 0.5)}  # the second part is limited
    async with aiohttp.ClientSession() as http:
        first = await adapter.push(http, push_to(address, text))
        assert first.mode is FailureMode.RATE_LIMITED and first.parts_delivered == 1
        rest = await adapter.push(http, push_to(address, text, skip_parts=first.parts_delivered))
    assert rest.ok and rest.parts_delivered == 2
    parts = [d.text for d in discord.delivered]
    assert len(parts) == 3 and all(len(p) <= 2000 for p in parts)
    assert "\n".join(parts) == text  # split on line boundaries, nothing lost or repeated


async def test_register_sets_commands_and_an_endpoint_discord_can_verify(
    stack: Stack, discord: FakeDiscord
) -> None:
    channel = stack.registry.get("discord")
    assert isinstance(channel, DiscordChannel)
    url = str(stack.http.make_url("/channels/discord"))
    async with aiohttp.ClientSession() as http:
        ok, detail = await channel.register(http, url)
    assert ok, detail
    assert discord.interactions_endpoint_url == url
    commands = {c["name"]: c for c in discord.commands}
    assert set(commands) == {"ask", "link", "unlink"}
    [text] = commands["ask"]["options"]
    assert (text["name"], text["type"], text["required"]) == ("text", 3, True)
    [code] = commands["link"]["options"]
    assert (code["name"], code["type"], code["required"]) == ("code", 3, False)
    assert "options" not in commands["unlink"]


async def test_register_reports_an_endpoint_discord_cannot_verify(
    stack: Stack, discord: FakeDiscord
) -> None:
    channel = stack.registry.get("discord")
    assert isinstance(channel, DiscordChannel)
    wrong = str(stack.http.make_url("/channels/nowhere"))  # answers, but not as Discord needs
    async with aiohttp.ClientSession() as http:
        ok, detail = await channel.register(http, wrong)
    assert not ok
    assert detail.startswith("endpoint: 400") and "could not be verified" in detail
    assert discord.interactions_endpoint_url is None


def test_settings_refuse_a_public_key_that_is_not_ed25519_hex() -> None:
    base = {"public_key": public_key_hex(KEY), "application_id": APPLICATION_ID,
            "bot_token": BOT_TOKEN}  # fmt: skip
    for bad in ("not-hex", "ab" * 31, "ab" * 33):
        with pytest.raises(ConfigError, match="channels.discord.public_key: must be"):
            settings_from_dict({"channels": {"discord": {**base, "public_key": bad}}})
    with pytest.raises(ConfigError, match="channels.discord.application_id"):
        settings_from_dict({"channels": {"discord": {**base, "application_id": "my-app"}}})
    with pytest.raises(ConfigError, match="bot_token"):
        DiscordChannel(settings=DiscordChannelSettings(**{**base, "bot_token": ""}))
    upper = DiscordChannelSettings(**{**base, "public_key": public_key_hex(KEY).upper()})
    assert upper.public_key == public_key_hex(KEY)
