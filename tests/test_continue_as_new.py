"""Sessions continue-as-new when Temporal suggests it, carrying keys, transcript and queue."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType

from tests.conftest import Stack
from tests.support import session_id, webhook_headers, webhook_message


async def test_long_session_continues_as_new_and_still_dedupes(stack: Stack) -> None:
    count = 12
    for i in range(count):
        body = webhook_message("ivy", "long", f"turn {i}")
        resp = await stack.http.post(
            "/channels/webhook", data=body, headers=webhook_headers(body, f"can_{i}")
        )
        assert resp.status == 202
    received = await stack.receiver.wait_for(count, timeout=120)
    assert [r["text"] for r in received] == [f"echo: turn {i}" for i in range(count)]

    handle = stack.client.get_workflow_handle(session_id("webhook", "ivy"))
    first_run = handle.id
    runs = [e async for e in stack.client.list_workflows(f'WorkflowId = "{first_run}"')]
    assert len(runs) >= 2, "the session never continued as new"
    # Every run but the newest ended in continue-as-new; each history stayed short.
    for execution in runs:
        history = await stack.client.get_workflow_handle(
            handle.id, run_id=execution.run_id
        ).fetch_history()
        assert len(history.events) < 200
    closed = [r for r in runs if r.close_time is not None]
    assert closed
    last_event = (
        await stack.client.get_workflow_handle(handle.id, run_id=closed[0].run_id).fetch_history()
    ).events[-1]
    assert last_event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW

    # A redelivery of the very first message, after the session moved on, is still one run.
    body = webhook_message("ivy", "long", "turn 0")
    again = await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, "can_0")
    )
    assert again.status == 202
    assert (await again.json())["duplicate"] is True
    body = webhook_message("ivy", "long", "after")
    await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, "can_after")
    )
    received = await stack.receiver.wait_for(count + 1)
    assert [r["text"] for r in received][-1] == "echo: after"
    assert len(stack.receiver.ids) == len(set(stack.receiver.ids)) == count + 1
