"""Runs close when they are done; a closed run is read from its result, with no worker.

Each test stops the stack's worker once the run has closed and reads the run through the same
doors as before (``fetch_view``, continuation tokens, ``runs show``), then starts a fresh worker
where something must run again (a replay).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from openai import AsyncOpenAI
from temporalio.client import WorkflowExecutionStatus
from temporalio.worker import Worker

from cli.main import _list_dead_letters, _show_run
from cli.operations import replay_dead_letters
from hosting import search_attributes as sa
from hosting.ids import redelivery_workflow_id
from hosting.models import DeliveryState, RunStatus, RunView
from routes.watch import closed_view, fetch_view
from tests.conftest import Stack
from tests.support import eventually, webhook_headers, webhook_message
from worker import build_worker

API_KEY = "sk-close-0123456789"
APP_KEY = "app-key-" + "c" * 24


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {
        "channels": {"responses": {"api_keys": {"closer": API_KEY}}},
        "messages": {"api_keys": {"app": APP_KEY}},
    }


async def say(stack: Stack, text: str, *, user: str | None = None) -> str:
    msg_id = f"close_{uuid.uuid4().hex}"
    body = webhook_message(user or f"u-{msg_id}", "c-close", text)
    resp = await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, msg_id)
    )
    assert resp.status == 202, await resp.text()
    return f"run/default/webhook/{msg_id}"


async def closed(stack: Stack, workflow_id: str, timeout: float = 30.0) -> None:
    async def done() -> bool:
        desc = await stack.client.get_workflow_handle(workflow_id).describe()
        return desc.status is WorkflowExecutionStatus.COMPLETED

    await eventually(done, timeout=timeout)


async def no_worker(stack: Stack) -> None:
    await stack.worker.shutdown()


@asynccontextmanager
async def fresh_worker(stack: Stack) -> AsyncIterator[Worker]:
    async with build_worker(stack.client, stack.settings, registry=stack.registry) as w, w:
        yield w


async def read(stack: Stack, run_id: str) -> RunView:
    """Within a few seconds: a query nobody answers would hang until the RPC gives up."""
    view = await asyncio.wait_for(fetch_view(stack.client, run_id), 5)
    assert view is not None
    return view


async def test_a_finished_run_closes_and_reads_without_a_worker(stack: Stack) -> None:
    run_id = await say(stack, "close me")
    [push] = await stack.receiver.wait_for(1)
    assert push["text"] == "echo: close me"
    await closed(stack, run_id, timeout=10)  # shortly after delivery, not continuation_s
    history = await stack.client.get_workflow_handle(run_id).fetch_history()
    assert not any(e.HasField("timer_started_event_attributes") for e in history.events)

    await no_worker(stack)
    view = await read(stack, run_id)
    assert view.status is RunStatus.COMPLETED
    assert view.output_text == "echo: close me"
    assert [(d.destination, d.state, d.attempts) for d in view.deliveries] == [
        ("webhook", DeliveryState.DELIVERED, 1)
    ]
    assert view.owed == {}
    report = await asyncio.wait_for(_show_run(stack.settings, run_id), 5)
    assert report.code == 0
    assert report.doc["run"]["workflow_status"] == "COMPLETED"
    assert report.doc["run"]["deliveries"][0]["state"] == "delivered"
    # A run that does not exist is still None, and quickly.
    assert await asyncio.wait_for(fetch_view(stack.client, "run/default/webhook/nope"), 5) is None


async def test_a_continuation_token_reads_the_closed_run(stack: Stack) -> None:
    api = AsyncOpenAI(base_url=str(stack.http.make_url("/v1")), api_key=API_KEY, max_retries=0)
    try:
        done = await api.responses.create(model="m", input="remember me")
        assert done.status == "completed" and done.output_text == "echo: remember me"
        run_id = await fetch_run_id(stack, API_KEY, done.id)
        await closed(stack, run_id)
        await no_worker(stack)
        got = await asyncio.wait_for(api.responses.retrieve(done.id), 5)
        assert got.status == "completed" and got.output_text == "echo: remember me"
        resp = await stack.http.get(
            f"/v1/runs/{done.id}", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert resp.status == 200
        body = await resp.json()
        assert body["status"] == "completed" and body["output_text"] == "echo: remember me"
    finally:
        await api.close()


async def fetch_run_id(stack: Stack, key: str, token: str) -> str:
    resp = await stack.http.get(f"/v1/runs/{token}", headers={"Authorization": f"Bearer {key}"})
    assert resp.status == 200
    run_id: str = (await resp.json())["run_id"]
    return run_id


async def test_a_dead_letter_on_a_closed_run_is_replayed(stack: Stack) -> None:
    stack.receiver.fail_next.append(410)  # refused for good: a dead letter at once
    run_id = await say(stack, "late but whole")
    await closed(stack, run_id)
    assert stack.receiver.received == []
    await no_worker(stack)

    view = await read(stack, run_id)
    assert view.deliveries[0].state is DeliveryState.DEAD_LETTER
    assert view.owed == {}  # readers never get the content that is owed
    final = await closed_view(stack.client, run_id, owed=True)
    assert final is not None
    [owed] = final.owed["webhook"]
    assert owed.text == "echo: late but whole"
    desc = await stack.client.get_workflow_handle(run_id).describe()
    assert desc.typed_search_attributes.get(sa.DELIVERY_STATE) == "dead_letter"

    async def listed() -> bool:
        report = await _list_dead_letters(stack.settings, 1000)
        return run_id in {r["run_id"] for r in report.doc["runs"]}

    await eventually(listed, timeout=30, every=0.5)

    async with fresh_worker(stack):
        [result] = await replay_dead_letters(
            stack.client, stack.settings.temporal.task_queue, run_id
        )
    assert result.state is DeliveryState.DELIVERED and result.attempts == 1
    [push] = stack.receiver.received
    assert push["text"] == "echo: late but whole"
    assert stack.receiver.ids == [f"{run_id}:webhook:response"]  # the same idempotency key

    # No worker again: the view lays the replay's outcome over the closed run's result.
    view = await read(stack, run_id)
    [delivery] = view.deliveries
    assert delivery.state is DeliveryState.DELIVERED and delivery.attempts == 1
    assert delivery.reason is None
    report = await _show_run(stack.settings, run_id)
    assert report.doc["run"]["deliveries"][0]["state"] == "delivered"
    # The run's own search attribute stays as it closed; the replay carries the outcome.
    replay = stack.client.get_workflow_handle(redelivery_workflow_id(run_id, "webhook"))
    assert (await replay.describe()).typed_search_attributes.get(sa.DELIVERY_STATE) == "delivered"
    report = await _list_dead_letters(stack.settings, 1000)
    assert run_id not in {r["run_id"] for r in report.doc["runs"]}
    # Nothing more is owed: a second replay sends nothing (and needs no worker to say so).
    assert await replay_dead_letters(stack.client, stack.settings.temporal.task_queue, run_id) == []


async def test_a_failed_replay_of_a_closed_run_stays_a_dead_letter(stack: Stack) -> None:
    stack.receiver.fail_next.append(410)
    run_id = await say(stack, "still nobody")
    await closed(stack, run_id)
    stack.receiver.fail_next.append(410)
    [result] = await replay_dead_letters(stack.client, stack.settings.temporal.task_queue, run_id)
    assert result.state is DeliveryState.DEAD_LETTER
    view = await read(stack, run_id)
    assert view.deliveries[0].state is DeliveryState.DEAD_LETTER
    assert view.deliveries[0].reason == "PushRejected"
    replay = stack.client.get_workflow_handle(redelivery_workflow_id(run_id, "webhook"))
    assert (await replay.describe()).typed_search_attributes.get(sa.DELIVERY_STATE) == "dead_letter"
    # Listed once, as the run (the failed replay's own state does not add a row).
    report = await _list_dead_letters(stack.settings, 1000)
    rows = [r["run_id"] for r in report.doc["runs"]]
    assert redelivery_workflow_id(run_id, "webhook") not in rows
    # Tried again, it is delivered.
    [result] = await replay_dead_letters(stack.client, stack.settings.temporal.task_queue, run_id)
    assert result.state is DeliveryState.DELIVERED
    assert (await read(stack, run_id)).deliveries[0].state is DeliveryState.DELIVERED


async def test_a_proactive_message_closes_and_reads_without_a_worker(stack: Stack) -> None:
    app = {"Authorization": f"Bearer {APP_KEY}"}
    to = {"channel": "webhook", "user_id": "u-close", "conversation_id": "c-close"}
    resp = await stack.http.post(
        "/v1/messages", json={"to": to, "text": "hello first"}, headers=app
    )
    assert resp.status == 202, await resp.text()
    public_id = (await resp.json())["id"]
    await stack.receiver.wait_for(1)
    await closed(stack, f"message/default/{public_id}")
    await no_worker(stack)
    resp = await asyncio.wait_for(stack.http.get(f"/v1/messages/{public_id}", headers=app), 5)
    assert resp.status == 200
    shown = await resp.json()
    assert shown["status"] == "delivered"
    assert [d["state"] for d in shown["deliveries"]] == ["delivered"]


async def test_a_retried_one_off_request_after_its_run_closed_is_the_same_run(
    stack: Stack,
) -> None:
    api = AsyncOpenAI(base_url=str(stack.http.make_url("/v1")), api_key=API_KEY, max_retries=0)
    try:
        headers = {"Idempotency-Key": "after-close"}
        first = await api.responses.create(model="m", input="once", extra_headers=headers)
        run_id = await fetch_run_id(stack, API_KEY, first.id)
        await closed(stack, run_id)
        await asyncio.sleep(1.1)  # tokens count whole seconds: a new run would get a new id
        again = await api.responses.create(model="m", input="once", extra_headers=headers)
        runs = [
            wf
            async for wf in stack.client.list_workflows(
                f'WorkflowId = "{run_id}" AND TaskQueue = "{stack.settings.temporal.task_queue}"'
            )
        ]
        assert len(runs) == 1
        assert again.id == first.id
    finally:
        await api.close()
