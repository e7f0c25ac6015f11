"""Live progress on chat platforms: typing, drafts, status lines and streamed replies while the
agent works, sent from the worker without history events, and never in the way of the durable
reply: where the reply was streamed into a message, the push completes that message instead of
posting a second one."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.names import AGENT_REJECTED
from channels.activity import message_key
from channels.tck import Delivered, wait_delivered
from hosting.models import AgentRequest, DeliveryState, PushRequest, RunStatus, RunView, Turn
from tests.conftest import Stack
from tests.fakes import SLACK_TOKEN, FakeSlack, FakeTelegram, serve
from tests.fakes_activity import FakeBotFramework
from tests.fakes_discord import FakeDiscord, sign_interaction
from tests.support import eventually, scheduled_inputs
from tests.test_tck_activity import activity, bearer, ids, section
from tests.test_tck_discord import KEY as DISCORD_KEY
from tests.test_tck_discord import interaction
from tests.test_tck_discord import section as discord_section
from tests.test_tck_slack import SIGNING_SECRET, event_callback, signed
from tests.test_tck_telegram import BOT, SECRET, post_update, update

TEXT = "one two three four five six"
FINAL = f"echo: {TEXT}"
# Six words 200 ms apart, shown at most every 250 ms: a few frames, each a longer draft.
AGENT = {"stream_delay_ms": 200, "stream_every_ms": 50, "progress_every_ms": 250}
PROGRESS = ("sendChatAction", "sendMessageDraft")


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with serve(FakeTelegram()) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with serve(FakeSlack()) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
async def bot() -> AsyncIterator[FakeBotFramework]:
    async with serve(FakeBotFramework()) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with serve(FakeDiscord()) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def settings_overrides(
    telegram: FakeTelegram,
    slack: FakeSlack,
    bot: FakeBotFramework,
    discord: FakeDiscord,
    request: pytest.FixtureRequest,
) -> dict[str, Any]:
    param: dict[str, Any] = dict(getattr(request, "param", {}))
    slack_more, teams_more = param.pop("slack", {}), param.pop("activity", {})
    agent: dict[str, Any] = {**AGENT, **param}
    return {
        "agent": agent,
        # Every push an activity: these tests read the pushes' inputs from the history.
        "delivery": {
            "initial_interval_s": 0.2,
            "max_interval_s": 1.0,
            "first_attempt_local": False,
        },
        "channels": {
            "telegram": {
                "bot_token": "123456:TEST-token-for-the-fake",
                "secret_token": SECRET,
                "bot_username": BOT,
                "api_base_url": telegram.base_url,
            },
            "slack": {
                "signing_secret": SIGNING_SECRET,
                "bot_token": SLACK_TOKEN,
                "api_base_url": slack.base_url,
                **slack_more,
            },
            "activity": section(bot, **teams_more),
            "discord": discord_section(discord),
        },
    }


def fresh_key() -> str:
    """Ids end up in run and session ids on a server every test shares: never reuse one."""
    return str(uuid.uuid4().int % 10**9 + 10**9)


async def delivered_once(stack: Stack, run_id: str) -> RunView:
    """Wait until the run's reply is delivered (the run's own record, not the fake's)."""
    handle = stack.client.get_workflow_handle(run_id)

    async def done() -> bool:
        view = await handle.query("view", result_type=RunView)
        return bool(view.deliveries) and all(
            d.state is DeliveryState.DELIVERED for d in view.deliveries
        )

    await eventually(done, timeout=30)
    return await handle.query("view", result_type=RunView)


def methods(fake: FakeTelegram | FakeSlack) -> list[str]:
    return [name for name, _ in fake.calls]


async def test_a_private_chat_sees_typing_then_growing_drafts_then_one_message(
    stack: Stack, telegram: FakeTelegram
) -> None:
    key, user = fresh_key(), fresh_key()
    assert await post_update(stack, update(key, user, user, TEXT)) == 200
    run_id = f"run/default/telegram/{key}"
    await delivered_once(stack, run_id)
    calls = methods(telegram)
    assert calls[0] == "sendChatAction"  # "working" before the first word
    assert calls.count("sendMessage") == 1 and calls[-1] == "sendMessage"
    assert set(calls[:-1]) <= set(PROGRESS)
    drafts = [p for name, p in telegram.calls if name == "sendMessageDraft"]
    assert len(drafts) >= 2, calls  # it grew, not one frame
    texts = [d["text"] for d in drafts]
    assert all(FINAL.startswith(t) for t in texts)
    assert [len(t) for t in texts] == sorted(len(t) for t in texts)
    assert {d["draft_id"] for d in drafts} == {int(key) % 100000 or 1}  # one per reply
    assert {str(d["chat_id"]) for d in drafts} == {user}
    assert [d.text for d in telegram.delivered] == [FINAL]
    # No history event per update: the run scheduled the agent and one push, nothing else.
    history = await stack.client.get_workflow_handle(run_id).fetch_history()
    scheduled = [
        e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert len(scheduled) == 2


async def test_a_group_sees_typing_only(stack: Stack, telegram: FakeTelegram) -> None:
    key, chat = fresh_key(), "-100" + fresh_key()
    body = update(key, fresh_key(), chat, TEXT, chat_type="supergroup", reply_to_bot=True)
    assert await post_update(stack, body) == 200
    await delivered_once(stack, f"run/default/telegram/{key}")
    calls = methods(telegram)
    assert "sendMessageDraft" not in calls
    assert calls.count("sendChatAction") >= 1 and calls[0] == "sendChatAction"
    assert calls.count("sendMessage") == 1 and calls[-1] == "sendMessage"
    typing = [p for name, p in telegram.calls if name == "sendChatAction"]
    assert all(p == {"chat_id": chat, "action": "typing"} for p in typing)


@pytest.mark.parametrize("status", [500, 429])
async def test_failing_progress_calls_never_touch_the_reply(
    stack: Stack, telegram: FakeTelegram, status: int
) -> None:
    telegram.progress_status = status
    key, user = fresh_key(), fresh_key()
    assert await post_update(stack, update(key, user, user, TEXT)) == 200
    view = await delivered_once(stack, f"run/default/telegram/{key}")
    calls = methods(telegram)
    assert any(name in PROGRESS for name in calls)  # progress was tried, and refused
    assert calls.count("sendMessage") == 1
    assert [d.text for d in telegram.delivered] == [FINAL]
    assert [d.attempts for d in view.deliveries] == [1]
    # Refused progress backs off: far fewer calls than there were words.
    assert sum(name in PROGRESS for name in calls) <= 2


@pytest.mark.parametrize(
    "settings_overrides",
    [{"stream_delay_ms": 20, "progress_every_ms": 200}],
    indirect=True,
)
async def test_progress_is_throttled_per_conversation(stack: Stack, telegram: FakeTelegram) -> None:
    words = " ".join(f"w{i}" for i in range(40))  # 41 deltas in about 0.8 s
    key, user = fresh_key(), fresh_key()
    started = time.monotonic()
    assert await post_update(stack, update(key, user, user, words)) == 200
    await wait_delivered(telegram, 1)
    window = time.monotonic() - started  # every progress call happened inside it
    frames = [name for name in methods(telegram) if name in PROGRESS]
    assert methods(telegram).count("sendMessageDraft") >= 2
    assert len(frames) <= window / 0.2 + 1, (len(frames), window)
    await delivered_once(stack, f"run/default/telegram/{key}")


@pytest.mark.parametrize("settings_overrides", [{"progress_every_ms": 0}], indirect=True)
async def test_progress_can_be_switched_off(stack: Stack, telegram: FakeTelegram) -> None:
    key, user = fresh_key(), fresh_key()
    assert await post_update(stack, update(key, user, user, TEXT)) == 200
    await delivered_once(stack, f"run/default/telegram/{key}")
    assert methods(telegram) == ["sendMessage"]


@pytest.mark.parametrize(
    "settings_overrides", [{"progress_every_ms": 0, "slack": {"progress_every_ms": 250}}],
    indirect=True,
)  # fmt: skip
async def test_each_platform_can_have_its_own_interval(
    stack: Stack, telegram: FakeTelegram, slack: FakeSlack
) -> None:
    """Off for the deployment, on for Slack: only Slack shows the reply being written."""
    key, user = fresh_key(), fresh_key()
    assert await post_update(stack, update(key, user, user, TEXT)) == 200
    await delivered_once(stack, f"run/default/telegram/{key}")
    assert methods(telegram) == ["sendMessage"]
    _, run_id = await slack_say(stack, f"{fresh_key()}.000100")
    await delivered_once(stack, run_id)
    assert "chat.startStream" in methods(slack) and "chat.postMessage" not in methods(slack)


async def slack_say(stack: Stack, thread_ts: str | None, text: str = TEXT) -> tuple[str, str]:
    """A direct message from a new user (in a thread, or not); (its channel, its run id)."""
    key = fresh_key()
    channel = f"D{key}"
    event: dict[str, Any] = {
        "type": "message", "channel_type": "im", "user": f"U{key}", "text": text,
        "ts": f"{key}.000100", "channel": channel,
    }  # fmt: skip
    if thread_ts:
        event["thread_ts"] = thread_ts
    body = event_callback(event, f"Ev{key}")
    assert (await stack.http.post("/channels/slack", data=body, headers=signed(body))).status == 200
    return channel, f"run/default/slack/{channel}.{key}.000100"


@pytest.mark.parametrize(
    "settings_overrides", [{"slack": {"stream_replies": False}}], indirect=True
)
async def test_a_slack_thread_shows_a_status_until_the_reply(
    stack: Stack, slack: FakeSlack
) -> None:
    thread = f"{fresh_key()}.000100"
    channel, run_id = await slack_say(stack, thread)
    await delivered_once(stack, run_id)
    calls = methods(slack)
    assert calls[0] == "assistant.threads.setStatus"
    assert calls.count("chat.postMessage") == 1 and calls[-1] == "chat.postMessage"
    statuses = [p for name, p in slack.calls if name == "assistant.threads.setStatus"]
    assert all(
        p == {"channel_id": channel, "thread_ts": thread, "status": "is thinking…"}
        for p in statuses
    )
    assert [(d.thread_id, d.text) for d in slack.delivered] == [(thread, FINAL)]


async def test_a_top_level_slack_message_gets_no_status(stack: Stack, slack: FakeSlack) -> None:
    _, run_id = await slack_say(stack, None)
    await delivered_once(stack, run_id)
    assert methods(slack) == ["chat.postMessage"]


async def test_a_failing_slack_status_never_touches_the_reply(
    stack: Stack, slack: FakeSlack
) -> None:
    slack.progress_status = 429
    _, run_id = await slack_say(stack, f"{fresh_key()}.000100")
    view = await delivered_once(stack, run_id)
    assert "assistant.threads.setStatus" in methods(slack)
    assert methods(slack).count("chat.postMessage") == 1
    assert [d.attempts for d in view.deliveries] == [1]


async def pushes_of(stack: Stack, run_id: str) -> list[PushRequest]:
    """The pushes the run scheduled, as recorded in its history."""
    return await scheduled_inputs(stack.client, run_id, "push_reply", PushRequest)


def thread_messages(slack: FakeSlack, thread: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages if m.get("thread_ts") == thread]


async def test_a_slack_thread_streams_the_reply_and_the_push_completes_it(
    stack: Stack, slack: FakeSlack
) -> None:
    thread = f"{fresh_key()}.000100"
    started = time.monotonic()
    channel, run_id = await slack_say(stack, thread)
    view = await delivered_once(stack, run_id)
    window = time.monotonic() - started
    calls = methods(slack)
    assert calls[0] == "assistant.threads.setStatus"  # "working" before the first word
    assert calls.count("chat.startStream") == 1
    assert calls.count("chat.appendStream") >= 1, calls  # it grew, not one frame
    messages = [m for m in calls if m != "assistant.threads.setStatus"]
    assert messages[-2:] == ["chat.stopStream", "chat.update"]  # the push ends, completes it
    assert "chat.postMessage" not in calls  # never a second copy of the reply
    streamed = "".join(
        p["markdown_text"] for m, p in slack.calls if m in ("chat.startStream", "chat.appendStream")
    )
    assert FINAL.startswith(streamed) and streamed
    [start] = [p for m, p in slack.calls if m == "chat.startStream"]
    assert (start["channel"], start["thread_ts"]) == (channel, thread)
    # Exactly one message in the thread, and its text is the run's output, delivered once.
    [message] = thread_messages(slack, thread)
    assert message["text"] == FINAL == view.output_text
    assert slack.delivered == [Delivered(channel, thread, FINAL)]
    # The hand-off is durable: the run's recorded push names the stream's message.
    [push] = await pushes_of(stack, run_id)
    assert push.live_message == message["ts"]
    # Throttled per conversation: at most one frame per interval (250 ms) in the window.
    frames = [
        m for m in calls if m.startswith("chat.") and "Stream" in m and m != "chat.stopStream"
    ]
    assert len(frames) <= window / 0.25 + 1, (len(frames), window)


@pytest.mark.parametrize("failing", ["start", "append"])
async def test_a_failed_slack_stream_still_yields_exactly_one_reply(
    stack: Stack, slack: FakeSlack, failing: str
) -> None:
    if failing == "start":
        slack.stream_error = "not_allowed_token_type"
    else:
        slack.append_error = "internal_error"
    thread = f"{fresh_key()}.000100"
    channel, run_id = await slack_say(stack, thread)
    view = await delivered_once(stack, run_id)
    assert [d.attempts for d in view.deliveries] == [1]  # progress never costs the reply
    [message] = thread_messages(slack, thread)
    assert message["text"] == FINAL
    assert slack.delivered == [Delivered(channel, thread, FINAL)]
    calls = methods(slack)
    if failing == "start":  # no stream: the reply is posted as usual
        assert calls.count("chat.postMessage") == 1 and "chat.update" not in calls
    else:  # a stream with only its first words: the push makes it the whole reply
        assert calls.count("chat.update") == 1 and "chat.postMessage" not in calls


async def teams_say(stack: Stack, bot: FakeBotFramework, **fields: Any) -> tuple[str, str]:
    user, conv, key = ids()
    conversation = fields.pop("conversation", conv)
    body = activity(bot, key=key, user=user, conversation=conversation, text=TEXT, **fields)
    resp = await stack.http.post(
        "/channels/activity", data=body, headers=bearer(bot.inbound_token())
    )
    assert resp.status == 200
    return conversation, f"run/default/activity/{message_key('msteams', conversation, key)}"


async def test_a_teams_personal_chat_streams_the_reply_and_the_push_ends_the_stream(
    stack: Stack, bot: FakeBotFramework
) -> None:
    _, run_id = await teams_say(stack, bot)
    await delivered_once(stack, run_id)
    typing = [p for _, _, p in bot.connector_calls if p.get("type") == "typing"]
    frames = [next(e for e in p["entities"] if e["type"] == "streaminfo") for p in typing]
    # First an informative frame (no stream id yet), then the text so far, in sequence.
    assert frames[0] == {"type": "streaminfo", "streamType": "informative", "streamSequence": 1}
    assert typing[0]["text"] == "Working on it…"
    [stream_id] = bot.streams
    assert [f["streamSequence"] for f in frames] == list(range(1, len(frames) + 1))
    assert all(f["streamId"] == stream_id for f in frames[1:])
    streaming = [p["text"] for p, f in zip(typing, frames, strict=True)
                 if f["streamType"] == "streaming"]  # fmt: skip
    assert len(streaming) >= 2, frames  # it grew
    assert all(FINAL.startswith(t) for t in streaming) and streaming == sorted(streaming, key=len)
    # The durable push is the stream's final message, with all the text, once.
    [final] = [p for _, _, p in bot.connector_calls if p.get("type") == "message"]
    assert final["text"] == FINAL
    assert final["entities"] == [
        {"type": "streaminfo", "streamId": stream_id, "streamType": "final"}
    ]
    assert bot.streams[stream_id].final is True
    assert [d.text for d in bot.delivered] == [FINAL]
    [push] = await pushes_of(stack, run_id)
    assert push.live_message == stream_id


@pytest.mark.parametrize("refused", ["frames", "final"])
async def test_a_refused_teams_stream_still_yields_exactly_one_reply(
    stack: Stack, bot: FakeBotFramework, refused: str
) -> None:
    if refused == "frames":
        bot.streaming_refused = True
    else:
        bot.final_refused = True
    _, run_id = await teams_say(stack, bot)
    view = await delivered_once(stack, run_id)
    assert [d.attempts for d in view.deliveries] == [1]
    assert [d.text for d in bot.delivered] == [FINAL]
    plain = [
        p for _, _, p in bot.connector_calls if p.get("type") == "message" and not p.get("entities")
    ]
    assert [p["text"] for p in plain] == [FINAL]  # the plain message is the reply


async def test_teams_group_chats_see_typing_only(stack: Stack, bot: FakeBotFramework) -> None:
    conv, run_id = await teams_say(
        stack, bot, conversation=f"19:g{fresh_key()}@thread.v2", kind="groupChat", mention=True
    )
    await delivered_once(stack, run_id)
    assert len(bot.typing) >= 1
    kinds = [payload.get("type") for _, _, payload in bot.connector_calls]
    assert kinds[0] == "typing" and kinds[-1] == "message" and kinds.count("message") == 1
    typing = [p for _, _, p in bot.connector_calls if p.get("type") == "typing"]
    assert all("text" not in p and "entities" not in p for p in typing)
    assert all(p["conversation"] == {"id": conv} for p in typing)
    assert [d.text for d in bot.delivered] == [FINAL]


async def discord_ask(stack: Stack, discord: FakeDiscord) -> tuple[str, str]:
    key, user, channel = fresh_key() + "0000", fresh_key(), fresh_key()
    token = discord.new_token(channel)
    body = interaction(key, token, user=user, channel=channel, options={"text": TEXT})
    resp = await stack.http.post(
        "/channels/discord", data=body, headers=sign_interaction(DISCORD_KEY, body)
    )
    assert await resp.json() == {"type": 5}  # "thinking..."
    return token, f"run/default/discord/{key}"


async def test_discord_shows_the_text_so_far_then_the_reply_once(
    stack: Stack, discord: FakeDiscord
) -> None:
    token, run_id = await discord_ask(stack, discord)
    view = await delivered_once(stack, run_id)
    edits = [p["content"] for name, p in discord.calls if name == "edit_original"]
    assert len(edits) >= 3, edits  # the text grew in place, then the push set the reply
    assert all(FINAL.startswith(e) for e in edits) and edits == sorted(edits, key=len)
    assert edits[-1] == FINAL == view.output_text
    assert "followup" not in [name for name, _ in discord.calls]  # no second copy
    [message] = discord.shown(token)
    assert message["content"] == FINAL
    [push] = await pushes_of(stack, run_id)
    assert push.live_message == message["id"]


async def test_rate_limited_discord_edits_never_touch_the_reply(
    stack: Stack, discord: FakeDiscord
) -> None:
    discord.edit_limited = True
    token, run_id = await discord_ask(stack, discord)
    view = await delivered_once(stack, run_id)
    assert [d.attempts for d in view.deliveries] == [1]
    edits = [name for name, _ in discord.calls if name == "edit_original"]
    assert 1 <= len(edits) <= 2  # refused, so it backed off
    [message] = discord.shown(token)  # the first followup took the deferral's place
    assert message["content"] == FINAL
    assert [d.text for d in discord.delivered] == [FINAL]


async def fails_midway(request: AgentRequest, transcript: list[Turn]) -> AsyncIterator[str]:
    """An agent that writes a few words, then fails for good: the run ends without a reply."""
    for word in ("half", " an", " answer", " and"):
        yield word
        await asyncio.sleep(0.3)
    raise ApplicationError("gave up", type=AGENT_REJECTED, non_retryable=True)


FAILING = {"kind": "python", "callable": "tests.test_progress:fails_midway"}


async def failed(stack: Stack, run_id: str) -> None:
    handle = stack.client.get_workflow_handle(run_id)

    async def done() -> bool:
        return (await handle.query("view", result_type=RunView)).status is RunStatus.FAILED

    await eventually(done, timeout=30)


@pytest.mark.parametrize("settings_overrides", [FAILING], indirect=True)
async def test_a_stream_without_a_reply_is_removed(
    stack: Stack, slack: FakeSlack, discord: FakeDiscord
) -> None:
    thread = f"{fresh_key()}.000100"
    _, slack_run = await slack_say(stack, thread)
    token, discord_run = await discord_ask(stack, discord)
    await failed(stack, slack_run)
    await failed(stack, discord_run)

    async def removed() -> bool:
        return not thread_messages(slack, thread) and token in discord.deleted

    await eventually(removed, timeout=10)
    calls = methods(slack)
    assert "chat.startStream" in calls and calls[-2:] == ["chat.stopStream", "chat.delete"]
    assert "chat.postMessage" not in calls and slack.delivered == []
    assert "edit_original" in [name for name, _ in discord.calls]  # it did show the words
    assert discord.shown(token) == [] and discord.delivered == []


def long_reply() -> str:
    """Two parts on every platform that streams (each under its own limit, together over)."""
    return "\n".join(f"line {i} " + "x" * 60 for i in range(120))  # about 8,000 characters


async def push_live(stack: Stack, address: Any, live: str) -> Any:
    """The run's push of a long reply whose first words were streamed into ``live``."""
    import aiohttp

    from hosting.models import DeliveryPolicy

    push = PushRequest(
        idempotency_key=f"k-{uuid.uuid4().hex}", run_id="run/default/x/y", phase="response",
        address=address, text=long_reply(), created_at=datetime.now(UTC), max_age_s=60,
        policy=DeliveryPolicy(timeout_s=5.0), live_message=live,
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        return await stack.registry.get(address.channel).push(http, push)


async def test_a_long_streamed_reply_completes_the_stream_then_posts_the_rest(
    stack: Stack, slack: FakeSlack, bot: FakeBotFramework, discord: FakeDiscord
) -> None:
    import aiohttp

    from channels.base import LiveReply, ProgressState
    from hosting.models import ReplyAddress

    async with aiohttp.ClientSession() as http:
        # Slack: a stream in a thread, its first words shown.
        thread, channel = f"{fresh_key()}.000100", f"C{fresh_key()}"
        address = ReplyAddress(channel="slack", user_id="U1", conversation_id=channel,
                               thread_id=thread, extra={"team_id": "T0001"})  # fmt: skip
        live = LiveReply()
        slack_channel = stack.registry.get("slack")
        shown = long_reply()[:30]
        assert await slack_channel.progress(http, address, shown, ProgressState.STREAMING, live)
        ack = await push_live(stack, address, str(live.message))
        parts = thread_messages(slack, thread)
        assert ack.ok and ack.parts_delivered == len(parts) == 3  # 4,000 characters a part
        assert parts[0]["ts"] == live.message
        assert "\n".join(m["text"] for m in parts) == long_reply()
        assert [m for m in methods(slack) if m.startswith("chat.")] == [
            "chat.startStream", "chat.stopStream", "chat.update", "chat.postMessage",
            "chat.postMessage",
        ]  # fmt: skip

        # Teams: the final message carries the first part, the second is a plain message.
        conv = f"a:conv-{fresh_key()}"
        extra = {"service_url": bot.base_url, "channel_id": "msteams", "conversation": conv,
                 "conversation_type": "personal"}  # fmt: skip
        address = ReplyAddress(
            channel="activity", user_id="29:u", conversation_id=conv, extra=extra
        )
        live = LiveReply()
        teams = stack.registry.get("activity")
        assert await teams.progress(http, address, shown, ProgressState.STREAMING, live)
        ack = await push_live(stack, address, str(live.message))
        assert ack.ok and ack.parts_delivered == 2
        final, rest = [p for _, _, p in bot.connector_calls if p["type"] == "message"]
        assert final["entities"][0]["streamType"] == "final" and "entities" not in rest
        assert final["text"] + "\n" + rest["text"] == long_reply()

        # Discord: the original becomes the first part, the second is a followup.
        dm = fresh_key()
        token = discord.new_token(dm)
        address = ReplyAddress(channel="discord", user_id="1", conversation_id=dm,
                               extra={"interaction_token": token,
                                      "received_at": f"{time.time():.3f}"})  # fmt: skip
        live = LiveReply()
        assert await stack.registry.get("discord").progress(
            http, address, shown, ProgressState.STREAMING, live
        )
        ack = await push_live(stack, address, str(live.message))
        shown_messages = discord.shown(token)
        assert ack.ok and ack.parts_delivered == len(shown_messages) == 5  # 2,000 a part
        assert shown_messages[0]["id"] == live.message
        assert "\n".join(m["content"] for m in shown_messages) == long_reply()
