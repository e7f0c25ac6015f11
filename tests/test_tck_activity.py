"""Teams (Activity Protocol) passes the conformance kit against a local Bot Framework; plus the
token rules, service URL allowlist, group mentions, tenant claims and the app package."""

from __future__ import annotations

import io
import json
import struct
import time
import uuid
import zipfile
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from channels.activity import (
    ActivityChannel,
    ActivityChannelSettings,
    message_key,
    service_url_allowed,
)
from channels.base import Accepted, Answered, FailureMode, InboundHttp, Refused
from channels.conformance import ChannelConformance
from channels.tck import FakePlatform, wait_delivered
from hosting.models import DeliveryPolicy, PushRequest, ReplyAddress
from hosting.settings import ConfigError
from tests.conftest import Stack
from tests.fakes import serve
from tests.fakes_activity import APP_ID, APP_PASSWORD, FakeBotFramework, SigningKeyPair

BOT_ID = f"28:{APP_ID}"
BOT_NAME = "Switchboard"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def section(bot: FakeBotFramework, **more: Any) -> dict[str, Any]:
    return {
        "app_id": APP_ID,
        "app_password": APP_PASSWORD,
        "openid_metadata_url": bot.metadata_url,
        "token_url": bot.token_url,
        "service_url": bot.base_url,
        # The kit also points service_url at a closed port to see a transient failure.
        "allowed_service_urls": [bot.base_url, "http://127.0.0.1:9/"],
        **more,
    }


def activity(
    bot: FakeBotFramework,
    *,
    key: str,
    user: str,
    conversation: str,
    text: str,
    kind: str = "personal",
    tenant: str = TENANT,
    mention: bool = False,
    service_url: str | None = None,
    **fields: Any,
) -> bytes:
    """A message activity as Teams sends it; ``mention`` prefixes an ``<at>`` mention of us."""
    entities: list[dict[str, Any]] = [{"type": "clientInfo", "locale": "en-US"}]
    if mention:
        text = f"<at>{BOT_NAME}</at> {text}"
        entities.append(
            {"type": "mention", "text": f"<at>{BOT_NAME}</at>",
             "mentioned": {"id": BOT_ID, "name": BOT_NAME}}
        )  # fmt: skip
    body: dict[str, Any] = {
        "type": "message",
        "id": key,
        "timestamp": datetime.now(UTC).isoformat(),
        "channelId": "msteams",
        "serviceUrl": service_url or bot.base_url,
        "from": {"id": user, "name": "Ada", "aadObjectId": f"aad-{user}"},
        "conversation": {"id": conversation, "conversationType": kind, "tenantId": tenant,
                         **({"isGroup": True} if kind != "personal" else {})},
        "recipient": {"id": BOT_ID, "name": BOT_NAME},
        "text": text,
        "textFormat": "plain",
        "entities": entities,
        "channelData": {"tenant": {"id": tenant}},
        **fields,
    }  # fmt: skip
    return json.dumps(body).encode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "content-type": "application/json"}


class TestActivityConformance(ChannelConformance):
    channel = "activity"
    signs_body = False  # the token binds a service URL and audience, not the body
    base_url_key = "service_url"

    @pytest.fixture
    async def platform(self) -> AsyncIterator[FakePlatform]:
        async with serve(FakeBotFramework()) as fake:
            self.bot: FakeBotFramework = fake  # type: ignore[assignment]
            yield fake  # type: ignore[misc]

    def channel_settings(self, platform: FakePlatform) -> dict[str, Any]:
        assert isinstance(platform, FakeBotFramework)
        return section(platform)

    def message(
        self, *, key: str, user: str, conversation: str, text: str, thread: str | None = None
    ) -> bytes:
        if thread is None:
            return activity(self.bot, key=key, user=user, conversation=conversation, text=text)
        # A reply in a Teams channel thread: the root's id rides in the conversation id.
        return activity(
            self.bot, key=key, user=user, conversation=f"{conversation};messageid={thread}",
            text=text, kind="channel", mention=True, replyToId=thread,
        )  # fmt: skip

    def sign(self, body: bytes, *, key: str, timestamp: float | None = None) -> dict[str, str]:
        issued = int(timestamp if timestamp is not None else time.time())
        token = self.bot.inbound_token(issued_at=issued, exp=issued + 1800)
        while token[-2] == "x":  # the kit tampers by writing "xx" over the last two characters
            issued -= 1
            token = self.bot.inbound_token(issued_at=issued, exp=issued + 1800)
        return bearer(token)

    def message_key(self, *, key: str, conversation: str) -> str:
        return message_key("msteams", conversation, key)


# -- module fixtures ----------------------------------------------------------------------


@pytest.fixture
async def bot() -> AsyncIterator[FakeBotFramework]:
    async with serve(FakeBotFramework()) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def settings_overrides(bot: FakeBotFramework, request: pytest.FixtureRequest) -> dict[str, Any]:
    extra: dict[str, Any] = getattr(request, "param", {})
    return {
        "channels": {"activity": section(bot, **extra)},
        "delivery": {"initial_interval_s": 0.2, "max_interval_s": 1.0},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def adapter(bot: FakeBotFramework, clock: Clock | None = None, **more: Any) -> ActivityChannel:
    return ActivityChannel(
        settings=ActivityChannelSettings(**section(bot, **more)), clock=clock or Clock()
    )


def inbound(body: bytes, headers: dict[str, str]) -> InboundHttp:
    return InboundHttp(
        method="POST", path="/channels/activity", headers=headers, query={}, body=body,
        received_at=time.time(),
    )  # fmt: skip


def push_request(text: str = "hello", skip: int = 0, **address: Any) -> PushRequest:
    fields: dict[str, Any] = {"channel": "activity", "user_id": "29:u", "conversation_id": "a:c"}
    fields.update(address)
    return PushRequest(
        idempotency_key="k", run_id="run/default/activity/x", phase="response",
        address=ReplyAddress(**fields), text=text, created_at=datetime.now(UTC), max_age_s=60,
        policy=DeliveryPolicy(timeout_s=2.0), skip_parts=skip,
    )  # fmt: skip


def ids() -> tuple[str, str, str]:
    n = uuid.uuid4().hex[:12]
    return f"29:user-{n}", f"a:conv-{n}", str(int(time.time() * 1000)) + n[:3]


async def post(stack: Stack, body: bytes, headers: dict[str, str]) -> int:
    resp = await stack.http.post("/channels/activity", data=body, headers=headers)
    return resp.status


async def run_exists(stack: Stack, conversation: str, key: str) -> bool:
    workflow_id = f"run/default/activity/{message_key('msteams', conversation, key)}"
    try:
        await stack.client.get_workflow_handle(workflow_id).describe()
    except Exception:
        return False
    return True


# -- inbound tokens -----------------------------------------------------------------------


async def test_bad_tokens_are_401_and_start_nothing(stack: Stack, bot: FakeBotFramework) -> None:
    user, conv, _ = ids()
    now = time.time()
    rogue = SigningKeyPair()
    tokens = {
        "wrong audience": bot.inbound_token(aud="00000000-0000-0000-0000-000000000000"),
        "wrong issuer": bot.inbound_token(iss="https://sts.windows.net/evil/"),
        "expired": bot.inbound_token(issued_at=now - 7200),
        "other serviceurl": bot.inbound_token(service_url="https://smba.trafficmanager.net/x/"),
        "unknown kid": bot.inbound_token(key=rogue),
        "published kid, other key": bot.inbound_token(key=SigningKeyPair(kid=bot.key.kid)),
        "hs256 with the public key": bot.hs256_token(),
        "alg none": jwt_none(),
    }
    keys = []
    for i, (case, token) in enumerate(tokens.items()):
        key = f"{int(now * 1000)}{i}"
        keys.append(key)
        body = activity(bot, key=key, user=user, conversation=conv, text=case)
        assert await post(stack, body, bearer(token)) == 401, case
    assert await post(
        stack, activity(bot, key="1", user=user, conversation=conv, text="x"), {}
    ) == (401)
    good = activity(bot, key=f"{int(now * 1000)}99", user=user, conversation=conv, text="fine")
    assert await post(stack, good, bearer(bot.inbound_token())) == 200
    [reply] = await wait_delivered(bot, 1)
    assert reply.text == "echo: fine"
    for key in keys:
        assert not await run_exists(stack, conv, key)


def jwt_none() -> str:
    import base64

    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'aud': APP_ID, 'exp': 2**31})}."


async def test_unreachable_signing_keys_answer_503_until_they_can_be_fetched(
    bot: FakeBotFramework,
) -> None:
    clock = Clock()
    channel = adapter(bot, clock)
    user, conv, key = ids()
    body = activity(bot, key=key, user=user, conversation=conv, text="hi")
    bot.keys_down = True
    outcome = await channel.receive(inbound(body, bearer(bot.inbound_token())))
    assert isinstance(outcome, Refused) and outcome.status == 503
    bot.keys_down = False
    outcome = await channel.receive(inbound(body, bearer(bot.inbound_token())))
    assert isinstance(outcome, Refused) and outcome.status == 503  # within the retry floor
    clock.now += 11
    outcome = await channel.receive(inbound(body, bearer(bot.inbound_token())))
    assert isinstance(outcome, Accepted)
    unreachable = adapter(bot, openid_metadata_url="http://127.0.0.1:9/openid")
    outcome = await unreachable.receive(inbound(body, bearer(bot.inbound_token())))
    assert isinstance(outcome, Refused) and outcome.status == 503


async def test_unknown_kids_refresh_the_keys_at_most_once_per_floor(bot: FakeBotFramework) -> None:
    clock = Clock()
    channel = adapter(bot, clock)
    user, conv, key = ids()
    body = activity(bot, key=key, user=user, conversation=conv, text="hi")

    async def status(signer: SigningKeyPair | None = None) -> int | None:
        outcome = await channel.receive(inbound(body, bearer(bot.inbound_token(key=signer))))
        return outcome.status if isinstance(outcome, Refused) else None

    assert await status() is None and bot.key_fetches == 1
    rotated = SigningKeyPair()
    bot.published.append(rotated)  # the platform rolls its keys
    clock.now += 301
    assert await status(rotated) is None  # an unknown kid refetches the keys
    assert bot.key_fetches == 2
    forged = SigningKeyPair()
    for _ in range(5):  # a storm of unknown kids within the floor: no refetch
        assert await status(forged) == 401
    assert bot.key_fetches == 2
    clock.now += 301
    for _ in range(5):  # after the floor: one refetch for the whole storm
        assert await status(forged) == 401
    assert bot.key_fetches == 3
    for _ in range(3):  # known keys are served from the cache
        assert await status() is None and await status(rotated) is None
    assert bot.key_fetches == 3


async def test_keys_not_endorsed_for_the_channel_are_refused(bot: FakeBotFramework) -> None:
    channel = adapter(bot)
    user, conv, key = ids()
    body = activity(bot, key=key, user=user, conversation=conv, text="hi", channelId="skype")
    outcome = await channel.receive(inbound(body, bearer(bot.inbound_token())))
    assert isinstance(outcome, Refused) and outcome.status == 401


# -- service URLs -------------------------------------------------------------------------


async def test_service_url_not_allowed_is_refused_before_any_token_is_sent(
    stack: Stack, bot: FakeBotFramework
) -> None:
    user, conv, key = ids()
    evil = "https://evil.example/teams/"
    body = activity(bot, key=key, user=user, conversation=conv, text="hi", service_url=evil)
    assert await post(stack, body, bearer(bot.inbound_token(service_url=evil))) == 403
    assert not await run_exists(stack, conv, key)
    channel = stack.registry.get("activity")
    assert channel is not None
    async with aiohttp.ClientSession() as http:
        for url in (
            evil,
            f"http://127.0.0.1:{bot.base_url.split(':')[2].rstrip('/')}@evil.example/",
        ):
            ack = await channel.push(http, push_request(extra={"service_url": url}))
            assert ack.mode is FailureMode.REJECTED, url
    assert bot.token_requests == [] and bot.connector_calls == []


def test_service_url_prefixes_are_compared_parsed() -> None:
    allowed = ["https://smba.trafficmanager.net/"]
    assert service_url_allowed("https://smba.trafficmanager.net/amer/", allowed)
    assert service_url_allowed("https://SMBA.trafficmanager.net:443/teams/", allowed)
    for bad in (
        "https://smba.trafficmanager.net.evil.example/",
        "https://smba.trafficmanager.net@evil.example/",
        "http://smba.trafficmanager.net/",
        "https://smba.trafficmanager.net:8443/",
        "https://smba.trafficmanager.net/../x",
        "not a url",
    ):
        assert not service_url_allowed(bad, allowed), bad
    assert not service_url_allowed("https://h/teamsevil/", ["https://h/teams/"])
    with pytest.raises(ValueError, match="plain http"):
        ActivityChannelSettings(allowed_service_urls=["http://smba.trafficmanager.net/"])


# -- messages -----------------------------------------------------------------------------


async def test_group_messages_need_our_mention_which_is_stripped(
    stack: Stack, bot: FakeBotFramework
) -> None:
    user, _, _ = ids()
    group, channel_conv = (
        f"19:group-{uuid.uuid4().hex}@thread.v2",
        f"19:{uuid.uuid4().hex}@thread.tacv2",
    )
    token = bot.inbound_token()
    unaddressed = activity(bot, key="101", user=user, conversation=group, text="chatter",
                           kind="groupChat")  # fmt: skip
    someone_else = activity(
        bot, key="102", user=user, conversation=group, text="<at>Bob</at> hi", kind="groupChat",
        entities=[{"type": "mention", "text": "<at>Bob</at>", "mentioned": {"id": "29:bob"}}],
    )  # fmt: skip
    for body in (unaddressed, someone_else):
        assert await post(stack, body, bearer(token)) == 200
    addressed = activity(bot, key="103", user=user, conversation=group, text="what time is it",
                         kind="groupChat", mention=True)  # fmt: skip
    assert await post(stack, addressed, bearer(token)) == 200
    [reply] = await wait_delivered(bot, 1)
    assert (reply.conversation_id, reply.thread_id, reply.text) == (
        group, None, "echo: what time is it"
    )  # fmt: skip
    assert not await run_exists(stack, group, "101") and not await run_exists(stack, group, "102")
    threaded = activity(
        bot, key="205", user=user, conversation=f"{channel_conv};messageid=200", text="and here?",
        kind="channel", mention=True, replyToId="200",
    )  # fmt: skip
    assert await post(stack, threaded, bearer(token)) == 200
    replies = await wait_delivered(bot, 2)
    assert (replies[1].conversation_id, replies[1].thread_id, replies[1].text) == (
        channel_conv, "200", "echo: and here?"
    )  # fmt: skip
    raw_path, auth, payload = bot.connector_calls[-1]
    # A reply to the activity, the conversation id percent-encoded (";" and "=" included).
    encoded = channel_conv.replace(":", "%3A").replace("@", "%40")
    assert raw_path == f"/v3/conversations/{encoded}%3Bmessageid%3D200/activities/205"
    assert auth.startswith("Bearer ") and payload["replyToId"] == "205"
    assert payload["textFormat"] == "markdown" and payload["from"]["id"] == BOT_ID
    assert payload["recipient"] == {"id": user}


async def test_conversation_update_is_acknowledged_without_a_run(
    stack: Stack, bot: FakeBotFramework
) -> None:
    user, conv, _ = ids()
    install = json.dumps(
        {"type": "conversationUpdate", "id": "f:1", "channelId": "msteams",
         "serviceUrl": bot.base_url, "from": {"id": user},
         "conversation": {"id": conv, "conversationType": "personal", "tenantId": TENANT},
         "recipient": {"id": BOT_ID, "name": BOT_NAME},
         "membersAdded": [{"id": BOT_ID}], "channelData": {"tenant": {"id": TENANT}}}
    ).encode()  # fmt: skip
    assert await post(stack, install, bearer(bot.inbound_token())) == 200
    assert not await run_exists(stack, conv, "f:1")
    body = activity(bot, key="2", user=user, conversation=conv, text="after install")
    assert await post(stack, body, bearer(bot.inbound_token())) == 200
    [reply] = await wait_delivered(bot, 1)
    assert reply.text == "echo: after install"


@pytest.mark.parametrize("settings_overrides", [{"allow_claims": {"tid": [TENANT]}}], indirect=True)
async def test_tenant_claim_admits_only_listed_tenants(stack: Stack, bot: FakeBotFramework) -> None:
    user, conv, _ = ids()
    outsider = activity(bot, key="1", user=user, conversation=conv, text="let me in",
                        tenant="11111111-2222-3333-4444-555555555555")  # fmt: skip
    assert await post(stack, outsider, bearer(bot.inbound_token())) == 200
    member = activity(bot, key="2", user=user, conversation=conv, text="member")
    assert await post(stack, member, bearer(bot.inbound_token())) == 200
    [reply] = await wait_delivered(bot, 1)
    assert reply.text == "echo: member"
    assert not await run_exists(stack, conv, "1")


async def test_message_becomes_a_request_with_claims_and_a_conversation_reference(
    bot: FakeBotFramework,
) -> None:
    user, conv, key = ids()
    body = activity(bot, key=key, user=user, conversation=conv, text="  hello  ")
    outcome = await adapter(bot).receive(inbound(body, bearer(bot.inbound_token())))
    assert isinstance(outcome, Accepted)
    request = outcome.request
    assert (request.user_id, request.conversation_id, request.is_direct) == (user, conv, True)
    assert request.text == "hello"
    assert request.claims == {"tid": TENANT, "aadObjectId": f"aad-{user}"}
    assert request.reply_to.reply_to_message_id == key
    assert request.reply_to.extra == {
        "service_url": bot.base_url, "channel_id": "msteams", "conversation": conv,
        "bot_id": BOT_ID, "bot_name": BOT_NAME, "tenant_id": TENANT,
        "conversation_type": "personal",  # streaming exists in personal chats only
    }  # fmt: skip
    group = activity(bot, key=key, user=user, conversation="19:g@thread.v2", text="all",
                     kind="groupChat")  # fmt: skip
    everyone = adapter(bot, accept_in_group="all")
    outcome = await everyone.receive(inbound(group, bearer(bot.inbound_token())))
    assert isinstance(outcome, Accepted) and not outcome.request.is_direct
    bare = activity(bot, key=key, user=user, conversation="19:g@thread.v2", text="",
                    kind="groupChat", mention=True)  # fmt: skip
    assert isinstance(
        await adapter(bot).receive(inbound(bare, bearer(bot.inbound_token()))), Answered
    )


# -- push ---------------------------------------------------------------------------------


async def test_outbound_token_is_cached_across_pushes_and_dropped_on_401(
    bot: FakeBotFramework,
) -> None:
    clock = Clock()
    channel = adapter(bot, clock)
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            assert (await channel.push(http, push_request())).ok
        assert len(bot.token_requests) == 1
        request = bot.token_requests[0]
        assert request["grant_type"] == "client_credentials" and request["client_id"] == APP_ID
        assert request["scope"] == "https://api.botframework.com/.default"
        bot.fail_next("unauthorized")
        assert (await channel.push(http, push_request())).mode is FailureMode.UNAUTHORIZED
        assert (await channel.push(http, push_request())).ok
        assert len(bot.token_requests) == 2
        clock.now += 3599 - 300  # shortly before it expires, the token is renewed
        assert (await channel.push(http, push_request())).ok
        assert len(bot.token_requests) == 3
        wrong = adapter(bot, app_password="not-the-secret")
        assert (await wrong.push(http, push_request())).mode is FailureMode.UNAUTHORIZED
    raw_path, _, payload = bot.connector_calls[0]
    assert raw_path == "/v3/conversations/a%3Ac/activities"  # proactive: no activity to reply to
    assert "replyToId" not in payload and payload["textFormat"] == "markdown"


async def test_long_replies_are_split_and_resume_after_delivered_parts(
    bot: FakeBotFramework,
) -> None:
    channel = adapter(bot)
    text = "\n".join(f"line {i} " + "x" * 990 for i in range(15))  # ~15 KB: three parts
    async with aiohttp.ClientSession() as http:
        bot.fail_at[bot.pushes + 2] = ("server_error", 1.0)
        ack = await channel.push(http, push_request(text, reply_to_message_id="42"))
        assert ack.mode is FailureMode.TRANSIENT and ack.parts_delivered == 1
        ack = await channel.push(http, push_request(text, skip=1, reply_to_message_id="42"))
        assert ack.ok and ack.parts_delivered == 2
    parts = [d.text for d in bot.delivered]
    assert len(parts) == 3 and all(len(p) <= 7000 for p in parts)
    assert "\n".join(parts) == text
    assert all(path.endswith("/activities/42") for path, _, _ in bot.connector_calls)


async def test_rate_limits_carry_retry_after(bot: FakeBotFramework) -> None:
    channel = adapter(bot)
    async with aiohttp.ClientSession() as http:
        bot.fail_next("rate_limited", retry_after_s=12)
        ack = await channel.push(http, push_request())
    assert ack.mode is FailureMode.RATE_LIMITED and ack.retry_after_s == 12


# -- settings and the app package ---------------------------------------------------------


def test_settings_refuse_missing_credentials_and_default_the_token_url() -> None:
    with pytest.raises(ConfigError, match="app_id"):
        ActivityChannel(settings=ActivityChannelSettings(app_password="x"))
    with pytest.raises(ConfigError, match="app_password"):
        ActivityChannel(settings=ActivityChannelSettings(app_id=APP_ID))
    assert ActivityChannelSettings().token_url == (
        "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"
    )
    assert ActivityChannelSettings(tenant_id=TENANT).token_url == (
        f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    )


def read_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and raw scanlines, checking the signature and every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, dict[bytes, bytes]()
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(tag + body) == crc, tag
        chunks[tag] = chunks.get(tag, b"") + body
        pos += 12 + length
    width, height, depth, color_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color_type) == (8, 6) and b"IEND" in chunks
    rows = zlib.decompress(chunks[b"IDAT"])
    assert len(rows) == height * (1 + 4 * width)
    return width, height, rows


def test_app_package_holds_a_manifest_and_two_icons() -> None:
    channel = ActivityChannel(
        settings=ActivityChannelSettings(app_id=APP_ID, app_password="x", bot_name="Helper")
    )
    package = channel.app_package("https://bots.example.com")
    assert package == channel.app_package("https://bots.example.com")  # reproducible
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        assert sorted(archive.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(archive.read("manifest.json"))
        color = read_png(archive.read("color.png"))
        outline = read_png(archive.read("outline.png"))
    assert manifest["manifestVersion"] == "1.22"
    assert manifest["$schema"].endswith("/v1.22/MicrosoftTeams.schema.json")
    assert manifest["id"] == APP_ID and manifest["name"]["short"] == "Helper"
    [bot_entry] = manifest["bots"]
    assert bot_entry["botId"] == APP_ID
    assert sorted(bot_entry["scopes"]) == ["groupChat", "personal", "team"]
    assert manifest["validDomains"] == ["bots.example.com"]
    assert manifest["icons"] == {"color": "color.png", "outline": "outline.png"}
    assert manifest["developer"]["websiteUrl"].startswith("https://")
    assert color[:2] == (192, 192) and outline[:2] == (32, 32)
    # The outline icon is white on transparent only.
    pixels = [outline[2][r * 129 + 1 + 4 * c : r * 129 + 5 + 4 * c] for r in range(32)
              for c in range(32)]  # fmt: skip
    assert {p for p in pixels} == {b"\xff\xff\xff\xff", b"\x00\x00\x00\x00"}
