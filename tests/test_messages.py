"""Proactive messages (``/v1/messages``) end to end: gateway → ProactiveMessageWorkflow → push."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from cli.operations import replay_dead_letters
from hosting.models import DeliveryState
from tests.conftest import Stack
from tests.support import eventually, session_id, webhook_headers, webhook_message
from tests.test_linking import links, new_code, webhook_say
from tests.test_replay import each, replayer

APP_KEY = "app-key-" + "a" * 24
OTHER_KEY = "other-key-" + "b" * 24
APP = {"Authorization": f"Bearer {APP_KEY}"}
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, object]:
    default: dict[str, object] = {"messages": {"api_keys": {"app": APP_KEY, "other": OTHER_KEY}}}
    param: dict[str, object] = getattr(request, "param", default)
    return param


async def send(
    stack: Stack,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    key: str | None = None,
    expect: int = 202,
) -> dict[str, Any]:
    sent = dict(APP if headers is None else headers)
    if key is not None:
        sent["Idempotency-Key"] = key
    resp = await stack.http.post("/v1/messages", json=body, headers=sent)
    assert resp.status == expect, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def status(
    stack: Stack, message_id: str, headers: dict[str, str] | None = None, expect: int = 200
) -> dict[str, Any]:
    resp = await stack.http.get(
        f"/v1/messages/{message_id}", headers=APP if headers is None else headers
    )
    assert resp.status == expect, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def settled(stack: Stack, message_id: str, state: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update(await status(stack, message_id))
        return bool(seen["status"] == state)

    await eventually(reached, timeout=60)
    return seen


def to_address(conversation: str = "c-msg", user: str = "u-msg") -> dict[str, str]:
    return {"channel": "webhook", "user_id": user, "conversation_id": conversation}


async def test_address_is_delivered_once_per_idempotency_key(stack: Stack) -> None:
    body = {"to": to_address(), "text": "your order shipped"}
    first = await send(stack, body, key="order-42")
    assert first["status"] == "queued"
    assert first["id"].startswith("msg_")
    again = await send(stack, body, key="order-42")
    assert again["id"] == first["id"]
    [push] = await stack.receiver.wait_for(1)
    assert push["text"] == "your order shipped"
    assert push["phase"] == "response"
    assert push["user"] == {"id": "u-msg"}
    assert push["conversation"] == {"id": "c-msg", "thread_id": None}
    workflow_id = f"message/default/{first['id']}"
    assert push["run_id"] == workflow_id
    assert stack.receiver.ids == [f"{workflow_id}:webhook:response"]
    # Another caller's same key is another message; no key is a new message every time.
    other = await send(stack, body, headers=OTHER, key="order-42")
    fresh = [await send(stack, body) for _ in range(2)]
    assert len({first["id"], other["id"], *(f["id"] for f in fresh)}) == 4
    await stack.receiver.wait_for(4)
    # A retry after delivery still is the same message, never a second push.
    assert (await send(stack, body, key="order-42"))["id"] == first["id"]
    shown = await settled(stack, first["id"], "delivered")
    assert shown["channel"] == "webhook"
    assert [(d["destination"], d["state"], d["attempts"]) for d in shown["deliveries"]] == [
        ("webhook", "delivered", 1)
    ]
    assert "text" not in shown
    assert len(stack.receiver.received) == 4
    assert len(set(stack.receiver.ids)) == 4


async def test_person_gets_it_in_their_home_conversation(stack: Stack) -> None:
    inbound = webhook_message("pat", "c-pat", "hi")
    resp = await stack.http.post(
        "/channels/webhook", data=inbound, headers=webhook_headers(inbound, "msg_pat_1")
    )
    assert resp.status == 202
    await stack.receiver.wait_for(1)  # the reply: the session has recorded where pat wrote
    sent = await send(stack, {"to": {"channel": "webhook", "user_id": "pat"}, "text": "ping"})
    received = await stack.receiver.wait_for(2)
    assert received[1]["text"] == "ping"
    assert received[1]["conversation"]["id"] == "c-pat"
    assert received[1]["user"] == {"id": "pat"}
    await settled(stack, sent["id"], "delivered")

    unknown = await send(
        stack,
        {"to": {"channel": "webhook", "user_id": "nobody"}, "text": "ping"},
        expect=404,
    )
    assert unknown["error"]["code"] == "recipient_not_found"
    bad_channel = await send(
        stack, {"to": {"channel": "carrier-pigeon", "user_id": "pat"}, "text": "x"}, expect=422
    )
    assert bad_channel["error"]["code"] == "unknown_channel"
    # all_linked reaches beyond the conversation: refused unless the deployment consents.
    refused = await send(
        stack,
        {"to": {"channel": "webhook", "user_id": "pat"}, "text": "x", "target": "all_linked"},
        expect=422,
    )
    assert refused["error"]["code"] == "target_not_allowed"
    await send(stack, {"to": {"channel": "webhook"}, "text": "x"}, expect=400)
    await send(stack, {"to": to_address(), "text": ""}, expect=400)
    assert len(stack.receiver.received) == 2


async def test_keys_and_callers(stack: Stack) -> None:
    body = {"to": to_address(), "text": "secret plans"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": APP_KEY}):
        await send(stack, body, headers=headers, expect=401)
    mine = await send(stack, body)
    await status(stack, mine["id"], headers={}, expect=401)
    await status(stack, mine["id"], headers={"Authorization": "Bearer nope"}, expect=401)
    await stack.receiver.wait_for(1)
    # Another caller, an unknown id and a malformed one are the same 404.
    await status(stack, mine["id"], headers=OTHER, expect=404)
    await status(stack, "msg_" + "0" * 40, expect=404)
    await status(stack, "run_default", expect=404)
    await settled(stack, mine["id"], "delivered")


async def test_dead_letter_is_shown_and_replayed(stack: Stack) -> None:
    stack.receiver.fail_next.append(400)  # a permanent refusal: dead letter at once
    sent = await send(stack, {"to": to_address("c-dead"), "text": "too soon"}, key="dl-1")
    dead = await settled(stack, sent["id"], "dead_letter")
    [delivery] = dead["deliveries"]
    assert delivery["state"] == "dead_letter"
    assert delivery["reason"] == "PushRejected"
    assert stack.receiver.received == []
    workflow_id = f"message/default/{sent['id']}"
    [result] = await replay_dead_letters(
        stack.client, stack.settings.temporal.task_queue, workflow_id
    )
    assert result.state is DeliveryState.DELIVERED
    [push] = await stack.receiver.wait_for(1)
    assert push["text"] == "too soon"
    # The replay uses the same idempotency key, so a receiver that did get it drops it.
    assert stack.receiver.ids == [f"{workflow_id}:webhook:response"]
    await settled(stack, sent["id"], "delivered")
    # Nothing is owed any more, and the history replays with today's code.
    assert (
        await replay_dead_letters(stack.client, stack.settings.temporal.task_queue, workflow_id)
        == []
    )
    history = await stack.client.get_workflow_handle(workflow_id).fetch_history()
    replayed = await replayer().replay_workflows(each([history]), raise_on_replay_failure=False)
    assert replayed.replay_failures == {}


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "messages": {"api_keys": {"app": APP_KEY}},
            "limits": {"messages_per_minute": 1, "message_burst": 2},
        }
    ],
    indirect=True,
)
async def test_caller_rate_limit(stack: Stack) -> None:
    body = {"to": to_address(f"c-{uuid.uuid4().hex[:6]}"), "text": "hello"}
    await send(stack, body)
    await send(stack, body)
    resp = await stack.http.post("/v1/messages", json=body, headers=APP)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "messages": {"api_keys": {"app": APP_KEY}},
            "delivery": {
                "allow_non_originating": True,
                "initial_interval_s": 0.2,
                "max_interval_s": 1.0,
                "max_attempts": 4,
            },
        }
    ],
    indirect=True,
)
async def test_all_linked_reaches_every_account(stack: Stack) -> None:
    code = await new_code(stack, "lin")  # loopback "lin" asks for a code, webhook "lin-w" links
    await webhook_say(stack, f"/link {code}", user="lin-w")
    await stack.receiver.wait_for(1)

    async def linked() -> bool:
        return len((await links(stack, session_id("loopback", "lin"))).linked) == 1

    await eventually(linked)
    person = {"channel": "loopback", "user_id": "lin"}
    sent = await send(stack, {"to": person, "text": "to all of you", "target": "all_linked"})
    [*_, on_loopback] = await stack.loopback.outbox.wait_for(2)
    assert on_loopback.text == "to all of you"
    [_, on_webhook] = await stack.receiver.wait_for(2)
    assert on_webhook["text"] == "to all of you"
    assert on_webhook["user"] == {"id": "lin-w"}
    shown = await settled(stack, sent["id"], "delivered")
    assert sorted(d["destination"] for d in shown["deliveries"]) == ["loopback", "webhook"]
    # "active": the channel the person used last, once the linked account writes again.
    await webhook_say(stack, "back on the webhook", user="lin-w")
    await stack.receiver.wait_for(3)
    active = await send(stack, {"to": person, "text": "where are you", "target": "active"})
    received = await stack.receiver.wait_for(4)
    assert received[3]["text"] == "where are you"
    assert received[3]["user"] == {"id": "lin-w"}
    await settled(stack, active["id"], "delivered")
    assert len(stack.loopback.outbox.sent) == 2
