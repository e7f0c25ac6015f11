"""End to end through the gateway: signed webhook in, echo agent, signed webhook out."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from gateway import build_app
from hosting import search_attributes as sa
from hosting.ids import redelivery_workflow_id
from hosting.models import DeliveryState, RunStatus, RunView
from routes.watch import fetch_view
from tests.conftest import Stack, temporal_address
from tests.support import (
    WEBHOOK_SECRET,
    Receiver,
    eventually,
    make_settings,
    session_id,
    webhook_headers,
    webhook_message,
)


async def post_message(
    stack: Stack, msg_id: str, text: str, user: str = "alice", conv: str = "c1"
) -> dict[str, object]:
    body = webhook_message(user, conv, text)
    resp = await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, msg_id)
    )
    assert resp.status == 202, await resp.text()
    result: dict[str, object] = await resp.json()
    return result


async def run_view(stack: Stack, run_id: str) -> RunView:
    view: RunView = await stack.client.get_workflow_handle(run_id).query(
        "view", result_type=RunView
    )
    return view


async def test_signed_webhook_is_answered_by_a_signed_push(stack: Stack) -> None:
    ack = await post_message(stack, "msg_1", "hello")
    assert ack["run_id"] == "run/default/webhook/msg_1"
    [push] = await stack.receiver.wait_for(1)
    assert push["text"] == "echo: hello"
    assert push["phase"] == "response"
    assert push["user"] == {"id": "alice"}
    assert push["conversation"]["id"] == "c1"  # type: ignore[index]
    assert push["run_id"] == "run/default/webhook/msg_1"
    assert stack.receiver.ids == ["run/default/webhook/msg_1:webhook:response"]
    assert stack.receiver.bad_signatures == 0

    async def delivered() -> bool:
        view = await run_view(stack, "run/default/webhook/msg_1")
        return bool(view.deliveries) and view.deliveries[0].state is DeliveryState.DELIVERED

    await eventually(delivered)
    view = await run_view(stack, "run/default/webhook/msg_1")
    assert view.status is RunStatus.COMPLETED
    assert view.output_text == "echo: hello"


async def test_redelivered_webhook_is_answered_once(stack: Stack) -> None:
    body = webhook_message("bob", "c2", "only once")
    first = await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, "msg_dup")
    )
    assert first.status == 202
    await stack.receiver.wait_for(1)
    # The sender retries with the same webhook-id and a fresh timestamp and signature.
    for _ in range(3):
        again = await stack.http.post(
            "/channels/webhook", data=body, headers=webhook_headers(body, "msg_dup")
        )
        assert again.status == 202
        # Temporal answers a repeated update id with the first answer: the same run.
        assert (await again.json())["run_id"] == "run/default/webhook/msg_dup"
    # A later, different message proves the receiver saw everything before it.
    await post_message(stack, "msg_after", "later", user="bob", conv="c2")
    received = await stack.receiver.wait_for(2)
    assert [r["text"] for r in received] == ["echo: only once", "echo: later"]


async def test_five_messages_in_one_conversation_are_answered_in_order(stack: Stack) -> None:
    texts = [f"m{i}" for i in range(5)]
    for i, text in enumerate(texts):
        await post_message(stack, f"order_{i}", text, user="carol", conv="c3")
    received = await stack.receiver.wait_for(5)
    assert [r["text"] for r in received] == [f"echo: {t}" for t in texts]


async def test_concurrent_submissions_keep_arrival_order(stack: Stack) -> None:
    # Posted concurrently; the session serialises them in the order Temporal accepted them.
    results = await asyncio.gather(
        *(post_message(stack, f"conc_{i}", f"c{i}", user="dave", conv="c4") for i in range(4))
    )
    assert len({r["run_id"] for r in results}) == 4
    received = await stack.receiver.wait_for(4)
    assert sorted(r["text"] for r in received) == [f"echo: c{i}" for i in range(4)]
    assert len(stack.receiver.ids) == len(set(stack.receiver.ids)) == 4


async def test_agent_sees_the_transcript_of_earlier_turns(stack: Stack) -> None:
    await post_message(stack, "t_1", "first", user="erin", conv="c5")
    await stack.receiver.wait_for(1)
    await post_message(stack, "t_2", "second", user="erin", conv="c5")
    await stack.receiver.wait_for(2)
    history = await stack.client.get_workflow_handle("run/default/webhook/t_2").fetch_history()
    # The run input is encrypted at rest; decode it through the data converter to check.
    started = history.events[0].workflow_execution_started_event_attributes
    [inp] = await stack.client.data_converter.decode(started.input.payloads, [object])
    transcript = inp["transcript"]  # type: ignore[index]
    assert [t["text"] for t in transcript] == ["first", "echo: first"]


async def test_bad_signature_is_401_and_starts_nothing(stack: Stack) -> None:
    body = webhook_message("mallory", "c6", "forged")
    headers = webhook_headers(body, "msg_forged")
    headers["webhook-signature"] = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    resp = await stack.http.post("/channels/webhook", data=body, headers=headers)
    assert resp.status == 401
    stale = webhook_headers(body, "msg_stale", timestamp=int(time.time()) - 600)
    resp = await stack.http.post("/channels/webhook", data=body, headers=stale)
    assert resp.status == 401
    tampered = webhook_headers(body, "msg_tampered")
    resp = await stack.http.post("/channels/webhook", data=body + b" ", headers=tampered)
    assert resp.status == 401
    for wid in (
        "run/default/webhook/msg_forged",
        "run/default/webhook/msg_stale",
        session_id("webhook", "mallory"),
    ):
        try:
            await stack.client.get_workflow_handle(wid).describe()
        except Exception as exc:  # the server says it does not exist
            assert "not found" in str(exc).lower()
        else:
            raise AssertionError(f"{wid} exists")


async def test_malformed_bodies_are_4xx_with_a_reason(stack: Stack) -> None:
    cases = [
        b"not json",
        b"{}",
        json.dumps(
            {"type": "message", "user": {"id": ""}, "conversation": {"id": "c"}, "text": "x"}
        ).encode(),
        json.dumps(
            {"type": "message", "user": {"id": "a/b"}, "conversation": {"id": "c"}, "text": "x"}
        ).encode(),
        json.dumps(
            {"type": "message", "user": {"id": "a..b"}, "conversation": {"id": "c"}, "text": "x"}
        ).encode(),
        json.dumps({"type": "other"}).encode(),
        json.dumps([1, 2, 3]).encode(),
    ]
    for body in cases:
        resp = await stack.http.post("/channels/webhook", data=body, headers=webhook_headers(body))
        assert 400 <= resp.status < 500, (body, resp.status)
        assert (await resp.json())["error"]
    too_big = b"x" * (stack.settings.gateway.max_body_bytes + 1)
    resp = await stack.http.post(
        "/channels/webhook", data=too_big, headers=webhook_headers(too_big)
    )
    assert resp.status == 413
    resp = await stack.http.post("/channels/nope", data=b"{}")
    assert resp.status == 404


async def test_permanent_rejection_is_dead_lettered_on_the_run(stack: Stack) -> None:
    stack.receiver.fail_next.extend([400])
    ack = await post_message(stack, "msg_reject", "nobody home", user="frank", conv="c7")
    run_id = str(ack["run_id"])

    async def dead() -> bool:
        view = await run_view(stack, run_id)
        return bool(view.deliveries) and view.deliveries[0].state is DeliveryState.DEAD_LETTER

    await eventually(dead)
    view = await run_view(stack, run_id)
    assert view.deliveries[0].reason == "PushRejected"
    assert view.deliveries[0].attempts == 1
    desc = await stack.client.get_workflow_handle(run_id).describe()
    assert desc.typed_search_attributes.get(sa.DELIVERY_STATE) == "dead_letter"
    assert stack.receiver.received == []


async def test_transient_failures_and_rate_limits_are_retried_then_delivered_once(
    stack: Stack,
) -> None:
    stack.receiver.fail_next.extend([503, 429, 502])
    ack = await post_message(stack, "msg_flaky", "persist", user="gina", conv="c8")
    [push] = await stack.receiver.wait_for(1, timeout=60)
    assert push["text"] == "echo: persist"
    assert stack.receiver.fail_next == []

    async def delivered() -> bool:
        view = await run_view(stack, str(ack["run_id"]))
        return bool(view.deliveries) and view.deliveries[0].state is DeliveryState.DELIVERED

    await eventually(delivered)
    view = await run_view(stack, str(ack["run_id"]))
    assert view.deliveries[0].attempts == 4
    assert stack.receiver.ids == [f"{ack['run_id']}:webhook:response"]


async def test_health_readiness_and_metrics(stack: Stack) -> None:
    assert (await stack.http.get("/healthz")).status == 200
    ready = await stack.http.get("/readyz")
    assert ready.status == 200
    await post_message(stack, "msg_metrics", "count me", user="hank", conv="c9")
    text = await (await stack.http.get("/metrics")).text()
    assert 'switchboard_inbound_total{channel="webhook",outcome="accepted"}' in text
    await stack.receiver.wait_for(1)  # the run starts after the ack; wait for its reply
    desc = await stack.client.get_workflow_handle("run/default/webhook/msg_metrics").describe()
    assert desc.status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED)


async def test_caller_outside_the_allowlist_is_refused_and_starts_nothing(
    client: Client, receiver: Receiver
) -> None:
    settings = make_settings(
        "tq-policy",
        temporal_address(client),
        channels={"webhook": {"secret": WEBHOOK_SECRET, "allow_native_ids": ["vip"]}},
    )
    async with TestClient(TestServer(build_app(settings, client=client), host="127.0.0.1")) as http:
        body = webhook_message("stranger", "c10", "let me in")
        resp = await http.post(
            "/channels/webhook", data=body, headers=webhook_headers(body, "msg_stranger")
        )
        assert resp.status == 403
        assert await resp.json() == {"error": "forbidden"}
    with pytest.raises(RPCError, match="not found"):
        await client.get_workflow_handle(session_id("webhook", "stranger")).describe()


async def test_operator_replays_a_dead_letter_with_the_same_key(stack: Stack) -> None:
    from cli.operations import replay_dead_letters

    stack.receiver.fail_next.extend([404])
    ack = await post_message(stack, "msg_replay", "try again later", user="ida", conv="c11")
    run_id = str(ack["run_id"])

    async def dead() -> bool:
        view = await run_view(stack, run_id)
        return bool(view.deliveries) and view.deliveries[0].state is DeliveryState.DEAD_LETTER

    await eventually(dead)
    assert stack.receiver.received == []
    [result] = await replay_dead_letters(stack.client, stack.settings.temporal.task_queue, run_id)
    assert result.state is DeliveryState.DELIVERED
    [push] = await stack.receiver.wait_for(1)
    assert push["text"] == "echo: try again later"
    assert stack.receiver.ids == [f"{run_id}:webhook:response"]

    # The run has closed: readers lay the replay's outcome over its result.
    view = await fetch_view(stack.client, run_id)
    assert view is not None and view.deliveries[0].state is DeliveryState.DELIVERED
    # A closed run's search attribute stays as it closed; the replay carries its own.
    desc = await stack.client.get_workflow_handle(run_id).describe()
    assert desc.status is WorkflowExecutionStatus.COMPLETED
    assert desc.typed_search_attributes.get(sa.DELIVERY_STATE) == "dead_letter"
    replay = stack.client.get_workflow_handle(redelivery_workflow_id(run_id, "webhook"))
    desc = await replay.describe()
    assert desc.typed_search_attributes.get(sa.DELIVERY_STATE) == "delivered"
    # Nothing more is owed: a second replay finds nothing to do.
    assert await replay_dead_letters(stack.client, stack.settings.temporal.task_queue, run_id) == []


@pytest.mark.parametrize("settings_overrides", [{"gateway": {"intake": "signal"}}], indirect=True)
async def test_signal_intake_acks_without_a_worker_round_trip_and_still_dedupes(
    stack: Stack,
) -> None:
    first = await post_message(stack, "sig_1", "by signal", user="jill", conv="c12")
    assert first["deferred"] is True
    again = await post_message(stack, "sig_1", "by signal", user="jill", conv="c12")
    assert again["run_id"] == first["run_id"]
    await post_message(stack, "sig_2", "second", user="jill", conv="c12")
    received = await stack.receiver.wait_for(2)
    assert [r["text"] for r in received] == ["echo: by signal", "echo: second"]
    assert len(stack.receiver.ids) == len(set(stack.receiver.ids))


@pytest.mark.parametrize(
    "settings_overrides", [{"gateway": {"metrics_token": "metrics-secret"}}], indirect=True
)
async def test_metrics_can_require_a_bearer_token(stack: Stack) -> None:
    assert (await stack.http.get("/metrics")).status == 401
    wrong = await stack.http.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    ok = await stack.http.get("/metrics", headers={"Authorization": "Bearer metrics-secret"})
    assert ok.status == 200
    assert "switchboard_inbound_total" in await ok.text()


@pytest.mark.parametrize(
    "settings_overrides",
    [{"limits": {"messages_per_minute": 6, "message_burst": 2}}],
    indirect=True,
)
async def test_an_identity_over_its_message_rate_gets_429_and_starts_nothing(
    stack: Stack,
) -> None:
    statuses = []
    for i in range(3):
        body = webhook_message("flood", "cf", f"hi {i}")
        resp = await stack.http.post(
            "/channels/webhook", data=body, headers=webhook_headers(body, f"flood_{i}")
        )
        statuses.append(resp.status)
        if resp.status == 429:
            assert int(resp.headers["Retry-After"]) >= 1
    assert statuses == [202, 202, 429]
    other = webhook_message("someone-else", "co", "hello")
    resp = await stack.http.post(
        "/channels/webhook", data=other, headers=webhook_headers(other, "other_0")
    )
    assert resp.status == 202  # the bucket is per identity
    try:
        await stack.client.get_workflow_handle("run/default/webhook/flood_2").describe()
    except Exception as exc:
        assert "not found" in str(exc).lower()
    else:
        raise AssertionError("a rate-limited message started a run")


@pytest.mark.parametrize(
    "settings_overrides",
    [{"sessions": {"max_queued": 2}, "agent": {"delay_ms": 3000}}],
    indirect=True,
)
async def test_a_full_session_queue_refuses_with_429_and_accepts_again_later(
    stack: Stack,
) -> None:
    statuses = []
    for i in range(4):
        body = webhook_message("queuer", "cq", f"turn {i}")
        resp = await stack.http.post(
            "/channels/webhook", data=body, headers=webhook_headers(body, f"queue_{i}")
        )
        statuses.append(resp.status)
    # One running, two waiting; the fourth is refused and not remembered as seen.
    assert statuses == [202, 202, 202, 429], statuses
    assert (await stack.receiver.wait_for(1, timeout=30))[0]["text"] == "echo: turn 0"
    session = stack.client.get_workflow_handle(session_id("webhook", "queuer"))

    async def drained() -> bool:
        return len(await session.query("pending_runs", result_type=list[str])) < 2

    await eventually(drained, timeout=30)
    body = webhook_message("queuer", "cq", "turn 3")
    resp = await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, "queue_3")
    )
    assert resp.status == 202
