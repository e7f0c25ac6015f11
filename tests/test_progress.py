"""Live progress on chat platforms: typing, drafts and status lines while the agent works,
sent from the worker without history events, and never in the way of the durable reply."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels.activity import message_key
from channels.tck import wait_delivered
from hosting.models import DeliveryState, RunView
from tests.conftest import Stack
from tests.fakes import SLACK_TOKEN, FakeSlack, FakeTelegram, serve
from tests.fakes_activity import FakeBotFramework
from tests.support import eventually
from tests.test_tck_activity import activity, bearer, ids, section
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
def settings_overrides(
    telegram: FakeTelegram, slack: FakeSlack, bot: FakeBotFramework, request: pytest.FixtureRequest
) -> dict[str, Any]:
    agent: dict[str, Any] = {**AGENT, **getattr(request, "param", {})}
    return {
        "agent": agent,
        "delivery": {"initial_interval_s": 0.2, "max_interval_s": 1.0},
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
            },
            "activity": section(bot),
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


async def slack_say(stack: Stack, thread_ts: str | None) -> tuple[str, str]:
    """A direct message from a new user (in a thread, or not); (its channel, its run id)."""
    key = fresh_key()
    channel = f"D{key}"
    event: dict[str, Any] = {
        "type": "message", "channel_type": "im", "user": f"U{key}", "text": TEXT,
        "ts": f"{key}.000100", "channel": channel,
    }  # fmt: skip
    if thread_ts:
        event["thread_ts"] = thread_ts
    body = event_callback(event, f"Ev{key}")
    assert (await stack.http.post("/channels/slack", data=body, headers=signed(body))).status == 200
    return channel, f"run/default/slack/{channel}.{key}.000100"


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


async def test_teams_sees_typing_then_the_reply(stack: Stack, bot: FakeBotFramework) -> None:
    user, conv, key = ids()
    body = activity(bot, key=key, user=user, conversation=conv, text=TEXT)
    resp = await stack.http.post(
        "/channels/activity", data=body, headers=bearer(bot.inbound_token())
    )
    assert resp.status == 200
    await delivered_once(stack, f"run/default/activity/{message_key('msteams', conv, key)}")
    assert len(bot.typing) >= 1
    kinds = [payload.get("type") for _, _, payload in bot.connector_calls]
    assert kinds[0] == "typing" and kinds[-1] == "message" and kinds.count("message") == 1
    typing = [p for _, _, p in bot.connector_calls if p.get("type") == "typing"]
    assert all("text" not in p and p["conversation"] == {"id": conv} for p in typing)
    assert [d.text for d in bot.delivered] == [FINAL]
