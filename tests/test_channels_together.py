"""Discord, Teams (Activity Protocol) and DingTalk together: one person's accounts on the three
newest channels are linked with /link, and replies go where ``response_target`` says (all
linked accounts, a named channel), with a dead letter on one platform replayed by the operator.

Every inbound request is signed as its platform signs it (Ed25519, an RS256 JWT from the fake's
JWKS, DingTalk's HMAC headers); every assertion is about what the local platforms received.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from channels.activity import message_key as activity_message_key
from cli.operations import replay_dead_letters, session_id_for, show_links
from hosting.ids import delivery_key, redelivery_workflow_id
from hosting.models import DeliveryState, PushRequest, RunInput, RunView
from routes.watch import fetch_view
from tests.conftest import Stack
from tests.fakes import _Fake, dumps, serve
from tests.fakes_activity import APP_ID, APP_PASSWORD, FakeBotFramework
from tests.fakes_dingtalk import APP_KEY, APP_SECRET, ROBOT_CODE, FakeDingTalk
from tests.fakes_discord import (
    APPLICATION_ID,
    BOT_TOKEN,
    FakeDiscord,
    public_key_hex,
    sign_interaction,
)
from tests.support import eventually, scheduled_inputs

CODE = re.compile(r"\b([A-Z2-9]{4}-[A-Z2-9]{4})\b")
DISCORD_KEY = Ed25519PrivateKey.generate()  # the Discord application's key pair
TEAMS_BOT = f"28:{APP_ID}"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


# -- the three platforms ------------------------------------------------------------------


@dataclass
class Platforms:
    discord: FakeDiscord
    teams: FakeBotFramework
    dingtalk: FakeDingTalk


@pytest.fixture
async def platforms() -> AsyncIterator[Platforms]:
    async with (
        serve(FakeDiscord()) as discord,
        serve(FakeBotFramework()) as teams,
        serve(FakeDingTalk()) as dingtalk,
    ):
        assert isinstance(discord, FakeDiscord)
        assert isinstance(teams, FakeBotFramework)
        assert isinstance(dingtalk, FakeDingTalk)
        yield Platforms(discord, teams, dingtalk)


@pytest.fixture
def settings_overrides(platforms: Platforms, request: pytest.FixtureRequest) -> dict[str, Any]:
    """All three channels on their fakes; ``param`` maps a channel to its response_target."""
    targets: dict[str, str] = getattr(request, "param", {})

    def target(name: str) -> dict[str, str]:
        return {"response_target": targets[name]} if name in targets else {}

    p = platforms
    return {
        "channels": {
            "discord": {
                "public_key": public_key_hex(DISCORD_KEY),
                "application_id": APPLICATION_ID,
                "bot_token": BOT_TOKEN,
                "api_base_url": p.discord.base_url,
                **target("discord"),
            },
            "activity": {
                "app_id": APP_ID,
                "app_password": APP_PASSWORD,
                "openid_metadata_url": p.teams.metadata_url,
                "token_url": p.teams.token_url,
                "service_url": p.teams.base_url,
                "allowed_service_urls": [p.teams.base_url],
                **target("activity"),
            },
            "dingtalk": {
                "app_secret": APP_SECRET,
                "app_key": APP_KEY,
                "robot_code": ROBOT_CODE,
                "api_base_url": p.dingtalk.base_url,
                **target("dingtalk"),
            },
        },
        "delivery": {
            "allow_non_originating": True,
            "initial_interval_s": 0.2,
            "max_interval_s": 1.0,
            "max_attempts": 4,
            # Every push an activity: a test reads a redelivered push's input from the history.
            "first_attempt_local": False,
        },
    }


def targets(**by_channel: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("settings_overrides", [by_channel], indirect=True)


# -- one person, three accounts -----------------------------------------------------------


def snowflake() -> str:
    return str(10**17 + secrets.randbelow(9 * 10**17))


def dingtalk_headers() -> dict[str, str]:
    """DingTalk's callback signature: base64 HMAC-SHA256 of ``timestamp\\nsecret``."""
    stamp = str(int(time.time() * 1000))
    mac = hmac.new(APP_SECRET.encode(), f"{stamp}\n{APP_SECRET}".encode(), hashlib.sha256)
    return {
        "timestamp": stamp,
        "sign": base64.b64encode(mac.digest()).decode(),
        "content-type": "application/json",
    }


@dataclass
class Person:
    """One person's direct conversations on the three platforms (fresh ids per test: sessions
    live in the shared Temporal server beyond one test)."""

    p: Platforms
    discord_user: str = field(default_factory=snowflake)
    discord_dm: str = field(default_factory=snowflake)
    teams_user: str = field(default_factory=lambda: f"29:user-{uuid.uuid4().hex[:12]}")
    teams_conv: str = field(default_factory=lambda: f"a:conv-{uuid.uuid4().hex[:12]}")
    ding_user: str = field(default_factory=lambda: f"staff{uuid.uuid4().hex[:12]}")
    ding_conv: str = field(default_factory=lambda: f"cid{uuid.uuid4().hex[:12]}")

    async def on_discord(self, stack: Stack, text: str) -> str:
        """A slash command in the DM with the bot: ``/link [code]`` or ``/ask text``."""
        key = snowflake()
        if text.startswith("/link"):
            code = text.removeprefix("/link").strip()
            name, options = "link", ({"code": code} if code else {})
        else:
            name, options = "ask", {"text": text}
        body = dumps(
            {
                "id": key, "application_id": APPLICATION_ID, "type": 2, "version": 1,
                "token": self.p.discord.new_token(self.discord_dm), "channel_id": self.discord_dm,
                "context": 1, "channel": {"id": self.discord_dm, "type": 1},
                "user": {"id": self.discord_user, "username": "ada", "global_name": "Ada"},
                "data": {"id": "1300000000000000009", "name": name, "type": 1,
                         "options": [{"name": k, "type": 3, "value": v}
                                     for k, v in options.items()]},
            }
        )  # fmt: skip
        resp = await stack.http.post(
            "/channels/discord", data=body, headers=sign_interaction(DISCORD_KEY, body)
        )
        assert resp.status == 200
        assert await resp.json() == {"type": 5}  # deferred: the answer comes as a followup
        return f"run/default/discord/{key}"

    async def on_teams(self, stack: Stack, text: str) -> str:
        """A message in the personal chat with the bot, with the Bot Framework's token."""
        key = str(int(time.time() * 1000)) + uuid.uuid4().hex[:4]
        teams = self.p.teams
        body = dumps(
            {
                "type": "message", "id": key, "timestamp": datetime.now(UTC).isoformat(),
                "channelId": "msteams", "serviceUrl": teams.base_url,
                "from": {"id": self.teams_user, "name": "Ada", "aadObjectId": "aad-ada"},
                "conversation": {"id": self.teams_conv, "conversationType": "personal",
                                 "tenantId": TENANT_ID},
                "recipient": {"id": TEAMS_BOT, "name": "Switchboard"},
                "text": text, "textFormat": "plain",
                "channelData": {"tenant": {"id": TENANT_ID}},
            }
        )  # fmt: skip
        headers = {
            "Authorization": f"Bearer {teams.inbound_token()}",
            "content-type": "application/json",
        }
        resp = await stack.http.post("/channels/activity", data=body, headers=headers)
        assert resp.status == 200
        return f"run/default/activity/{activity_message_key('msteams', self.teams_conv, key)}"

    async def on_dingtalk(self, stack: Stack, text: str) -> str:
        """A 1:1 robot callback with a fresh sessionWebhook, signed with the app secret."""
        msg_id = f"msg{uuid.uuid4().hex}"
        body = dumps(
            {
                "msgId": msg_id, "msgtype": "text", "text": {"content": f" {text}"},
                "conversationId": self.ding_conv, "conversationType": "1",
                "senderId": f"$:LWCP_v1:${self.ding_user}", "senderStaffId": self.ding_user,
                "senderNick": "Ada", "chatbotUserId": "$:LWCP_v1:$robot", "robotCode": ROBOT_CODE,
                "createAt": int(time.time() * 1000), "isInAtList": False,
                "sessionWebhook": self.p.dingtalk.session_webhook(self.ding_conv),
                "sessionWebhookExpiredTime": int(time.time() * 1000) + 3_600_000,
            }
        )  # fmt: skip
        resp = await stack.http.post("/channels/dingtalk", data=body, headers=dingtalk_headers())
        assert resp.status == 200
        return f"run/default/dingtalk/{msg_id}"

    def session(self, stack: Stack, channel: str) -> str:
        user = {
            "discord": self.discord_user,
            "activity": self.teams_user,
            "dingtalk": self.ding_user,
        }[channel]
        return session_id_for(stack.settings, channel, user, None, "per_user")

    def inbox(self) -> dict[str, list[str]]:
        """What each platform delivered into this person's conversation, in order."""
        where = {
            "discord": (self.p.discord, self.discord_dm),
            "activity": (self.p.teams, self.teams_conv),
            "dingtalk": (self.p.dingtalk, self.ding_conv),
        }
        return {
            name: [d.text for d in fake.delivered if d.conversation_id == conv]
            for name, (fake, conv) in where.items()
        }


async def delivered_count(fake: _Fake, count: int) -> None:
    async def enough() -> bool:
        return len(fake.delivered) >= count

    await eventually(enough)


async def new_code(stack: Stack, person: Person) -> str:
    """``/link`` on Discord: the one-time code arrives in the Discord DM."""
    before = len(person.p.discord.delivered)
    await person.on_discord(stack, "/link")
    await delivered_count(person.p.discord, before + 1)
    reply = person.p.discord.delivered[-1]
    assert reply.conversation_id == person.discord_dm
    match = CODE.search(reply.text)
    assert match, f"no link code in {reply.text!r}"
    return match.group(1)


async def linked_channels(stack: Stack, session_id: str) -> list[str]:
    return sorted(i.channel for i in (await show_links(stack.client, session_id)).linked)


async def link_all_three(stack: Stack, person: Person) -> None:
    """Discord asks for a code twice; Teams, then DingTalk, enter one. Each confirmation comes
    back on the platform that entered the code, and nowhere else."""
    p = person.p
    code = await new_code(stack, person)
    await person.on_teams(stack, f"/link {code}")
    await delivered_count(p.teams, 1)
    assert person.inbox()["activity"] == [
        "Linked with your discord account: your conversations are shared from now on."
    ]
    second = await new_code(stack, person)
    assert second != code
    await person.on_dingtalk(stack, f"/link {second}")
    await delivered_count(p.dingtalk, 1)
    assert person.inbox()["dingtalk"] == [
        "Linked with your discord account: your conversations are shared from now on."
    ]
    primary = person.session(stack, "discord")

    async def all_linked() -> bool:
        aliases = [
            (await show_links(stack.client, person.session(stack, c))).alias_of
            for c in ("activity", "dingtalk")
        ]
        return aliases == [primary, primary] and await linked_channels(stack, primary) == [
            "activity",
            "dingtalk",
        ]

    await eventually(all_linked)
    # Command answers never fan out: two codes on Discord, one confirmation each elsewhere.
    assert [len(v) for v in person.inbox().values()] == [2, 1, 1]
    assert (len(p.discord.delivered), len(p.teams.delivered), len(p.dingtalk.delivered)) == (
        2,
        1,
        1,
    )


async def view(stack: Stack, run_id: str) -> RunView:
    """As readers see it: a closed run's result, with later replays laid over it."""
    result = await fetch_view(stack.client, run_id)
    assert result is not None
    return result


async def states(stack: Stack, run_id: str) -> dict[str, DeliveryState]:
    found = await fetch_view(stack.client, run_id)  # None: the session has not started it yet
    return {d.destination: d.state for d in found.deliveries} if found else {}


async def settled(stack: Stack, run_id: str, expected: dict[str, DeliveryState]) -> None:
    async def done() -> bool:
        return await states(stack, run_id) == expected

    await eventually(done)


async def session_of(stack: Stack, run_id: str) -> str | None:
    history = await stack.client.get_workflow_handle(run_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [inp] = await stack.client.data_converter.decode(started.input.payloads, [RunInput])
    assert isinstance(inp, RunInput)
    return inp.session_id


DELIVERED = DeliveryState.DELIVERED


# -- the tests ----------------------------------------------------------------------------


@targets(discord="all_linked", dingtalk="all_linked")
async def test_linked_accounts_on_three_platforms_all_get_each_reply(
    stack: Stack, platforms: Platforms
) -> None:
    person = Person(platforms)
    await link_all_three(stack, person)
    primary = person.session(stack, "discord")

    # From DingTalk (a linked account): the run is the shared session's, the reply multicasts.
    run_id = await person.on_dingtalk(stack, "hello from dingtalk")
    await settled(
        stack, run_id, {"dingtalk": DELIVERED, "discord": DELIVERED, "activity": DELIVERED}
    )
    assert await session_of(stack, run_id) == primary
    inbox = person.inbox()
    assert [t for t in inbox["dingtalk"] if t.startswith("echo:")] == ["echo: hello from dingtalk"]
    assert [t for t in inbox["activity"] if t.startswith("echo:")] == ["echo: hello from dingtalk"]
    assert [t for t in inbox["discord"] if t.startswith("echo:")] == ["echo: hello from dingtalk"]

    # From Discord (the primary account): the same, once per platform.
    run_id = await person.on_discord(stack, "hello from discord")
    await settled(
        stack, run_id, {"discord": DELIVERED, "activity": DELIVERED, "dingtalk": DELIVERED}
    )
    for name, texts in person.inbox().items():
        echoes = [t for t in texts if t.startswith("echo:")]
        assert echoes == ["echo: hello from dingtalk", "echo: hello from discord"], name
    # Nothing went anywhere but this person's three conversations.
    assert (len(platforms.discord.delivered), len(platforms.teams.delivered),
            len(platforms.dingtalk.delivered)) == (4, 3, 3)  # fmt: skip
    # The linked Teams account was reached through the Bot Connector with the app's token.
    teams_posts = [c for c in platforms.teams.connector_calls if c[2]["text"].startswith("echo:")]
    assert len(teams_posts) == 2
    assert all(auth.removeprefix("Bearer ") in platforms.teams.issued for _, auth, _ in teams_posts)
    assert {c[2]["recipient"]["id"] for c in teams_posts} == {person.teams_user}


@targets(discord="channels:activity")
async def test_channels_activity_on_discord_answers_on_the_linked_teams_account_only(
    stack: Stack, platforms: Platforms
) -> None:
    person = Person(platforms)
    # The other direction this time: Teams asks for the code, Discord enters it.
    await person.on_teams(stack, "/link")
    await delivered_count(platforms.teams, 1)
    match = CODE.search(platforms.teams.delivered[0].text)
    assert match, platforms.teams.delivered[0].text
    assert platforms.teams.delivered[0].conversation_id == person.teams_conv
    await person.on_discord(stack, f"/link {match.group(1)}")
    await delivered_count(platforms.discord, 1)  # the command's answer stays on Discord
    assert person.inbox()["discord"] == [
        "Linked with your activity account: your conversations are shared from now on."
    ]
    primary = person.session(stack, "activity")

    async def linked() -> bool:
        alias = (await show_links(stack.client, person.session(stack, "discord"))).alias_of
        return alias == primary and await linked_channels(stack, primary) == ["discord"]

    await eventually(linked)

    run_id = await person.on_discord(stack, "answer me on teams")
    await settled(stack, run_id, {"activity": DELIVERED})
    assert person.inbox()["activity"][1:] == ["echo: answer me on teams"]
    # Every destination of the run is settled: Discord got nothing beyond the confirmation.
    assert len(platforms.discord.delivered) == 1
    assert platforms.dingtalk.delivered == []


@targets(discord="all_linked")
async def test_a_dead_letter_on_teams_is_replayed_once_with_its_idempotency_key(
    stack: Stack, platforms: Platforms
) -> None:
    person = Person(platforms)
    await link_all_three(stack, person)
    teams = platforms.teams
    teams.fail_next("rejected")  # 404 ConversationNotFound: permanent, no retries

    run_id = await person.on_discord(stack, "is everyone there")
    await settled(
        stack,
        run_id,
        {"discord": DELIVERED, "dingtalk": DELIVERED, "activity": DeliveryState.DEAD_LETTER},
    )
    [dead] = [d for d in (await view(stack, run_id)).deliveries if d.destination == "activity"]
    assert dead.reason == "PushRejected" and dead.attempts == 1
    echo = "echo: is everyone there"
    assert [person.inbox()[c][-1] for c in ("discord", "dingtalk")] == [echo, echo]
    assert echo not in person.inbox()["activity"]
    refused = [c for c in teams.connector_calls if c[2]["text"] == echo]
    assert len(refused) == 1  # one attempt, then the dead letter

    # What the run still owes Teams is the reply under its original idempotency key.
    owed: list[PushRequest] = await stack.client.get_workflow_handle(run_id).query(
        "dead_letter", "activity", result_type=list[PushRequest]
    )
    assert [(o.idempotency_key, o.phase, o.text, o.address.channel) for o in owed] == [
        (delivery_key(run_id, "activity", "response"), "response", echo, "activity")
    ]

    [result] = await replay_dead_letters(
        stack.client, stack.settings.temporal.task_queue, run_id, "activity"
    )
    assert (result.destination, result.state) == ("activity", DELIVERED)
    assert [t for t in person.inbox()["activity"] if t == echo] == [echo]  # exactly once more
    replayed = [c for c in teams.connector_calls if c[2]["text"] == echo]
    assert len(replayed) == 2 and replayed[0][0] == replayed[1][0]  # same conversation/reply
    pushed = await scheduled_inputs(
        stack.client, redelivery_workflow_id(run_id, "activity"), "push_reply", PushRequest
    )
    push_input = pushed[0]
    assert push_input.idempotency_key == owed[0].idempotency_key

    await settled(
        stack, run_id, {"discord": DELIVERED, "dingtalk": DELIVERED, "activity": DELIVERED}
    )
    # Replaying again finds no dead letter: nothing more reaches any platform.
    assert await replay_dead_letters(stack.client, stack.settings.temporal.task_queue, run_id) == []
    inbox = person.inbox()
    assert [inbox[c].count(echo) for c in ("discord", "activity", "dingtalk")] == [1, 1, 1]
    assert owed[0].address.extra["service_url"] == teams.base_url
