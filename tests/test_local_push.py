"""A push's first attempt runs as a local activity; a retry is an ordinary activity.

What each case records in the run's history is the point: the fast path costs no activity task
and no workflow task of its own, and a retry stays visible (and waits what the platform asked)
as an activity an operator sees pending in the Web UI.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

from hosting.models import DeliveryState, PushRequest, RunView
from routes.watch import fetch_view
from tests.conftest import Stack
from tests.support import closed_history, local_activity_type, webhook_headers, webhook_message
from tests.test_replay import replayer


async def send(stack: Stack, user: str, text: str) -> str:
    body = webhook_message(user, f"c-{user}", text)
    resp = await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, f"m-{user}")
    )
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["run_id"])


async def final_view(stack: Stack, run_id: str) -> tuple[RunView, Any]:
    history = await closed_history(stack.client, run_id)
    view = await fetch_view(stack.client, run_id)
    assert view is not None
    return view, history


def pushes(history: Any) -> tuple[int, list[Any]]:
    """Local push attempts (markers) and the push activities scheduled."""
    local = sum(1 for e in history.events if local_activity_type(e) == "push_reply")
    scheduled = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "push_reply"
    ]
    return local, scheduled


async def test_a_push_that_lands_at_once_is_one_local_attempt(stack: Stack) -> None:
    run_id = await send(stack, "fast", "hello")
    [push] = await stack.receiver.wait_for(1)
    assert push["text"] == "echo: hello"
    view, history = await final_view(stack, run_id)
    assert [(d.state, d.attempts) for d in view.deliveries] == [(DeliveryState.DELIVERED, 1)]
    local, scheduled = pushes(history)
    assert (local, scheduled) == (1, [])
    await replayer().replay_workflow(history)


async def test_a_rate_limited_first_attempt_waits_then_retries_as_an_activity(
    stack: Stack,
) -> None:
    stack.receiver.fail_next.append(429)  # Retry-After: 1
    started = time.monotonic()
    run_id = await send(stack, "limited", "later")
    [push] = await stack.receiver.wait_for(1, timeout=30)
    assert time.monotonic() - started >= 1.0  # the platform's Retry-After was honoured
    assert push["text"] == "echo: later"
    assert stack.receiver.ids == [f"{run_id}:webhook:response"]  # one delivery, one key
    view, history = await final_view(stack, run_id)
    assert [(d.state, d.attempts) for d in view.deliveries] == [(DeliveryState.DELIVERED, 2)]
    local, scheduled = pushes(history)
    assert local == 1 and len(scheduled) == 1
    timers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    assert [
        t.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().seconds for t in timers
    ] == [1]
    [retry] = await stack.client.data_converter.decode(
        scheduled[0].activity_task_scheduled_event_attributes.input.payloads, [PushRequest]
    )
    assert retry.attempts_before == 1 and retry.idempotency_key == f"{run_id}:webhook:response"
    await replayer().replay_workflow(history)


async def test_a_refused_first_attempt_is_a_dead_letter_without_retries(stack: Stack) -> None:
    stack.receiver.fail_next.append(400)
    run_id = await send(stack, "refused", "no")
    view, history = await final_view(stack, run_id)
    [state] = view.deliveries
    assert (state.state, state.reason, state.attempts) == (
        DeliveryState.DEAD_LETTER,
        "PushRejected",
        1,
    )
    assert pushes(history) == (1, [])


@pytest.mark.parametrize("settings_overrides", [{"delivery": {"max_attempts": 1}}], indirect=True)
async def test_one_allowed_attempt_is_the_local_one(stack: Stack) -> None:
    stack.receiver.fail_next.append(503)
    run_id = await send(stack, "once", "one try")
    view, history = await final_view(stack, run_id)
    [state] = view.deliveries
    assert (state.state, state.reason) == (DeliveryState.DEAD_LETTER, "retries_exhausted")
    assert pushes(history) == (1, [])


@pytest.mark.parametrize(
    "settings_overrides", [{"delivery": {"first_attempt_local": False}}], indirect=True
)
async def test_turned_off_every_attempt_is_an_activity(stack: Stack) -> None:
    run_id = await send(stack, "classic", "hi")
    await stack.receiver.wait_for(1)
    view, history = await final_view(stack, run_id)
    assert [d.attempts for d in view.deliveries] == [1]
    local, scheduled = pushes(history)
    assert local == 0 and len(scheduled) == 1
