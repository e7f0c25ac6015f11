"""A session's idle timer: one timer serves many turns, and a session idle for
``IDLE_TIMEOUT`` ends (so the next message starts a new one)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from hosting.converter import build_data_converter
from hosting.models import SessionState
from tests.conftest import Stack
from tests.support import eventually, make_settings, session_id, webhook_headers, webhook_message
from worker import workflow_runner
from workflows.session import IDLE_TIMEOUT, SessionWorkflow

BIN = Path(sys.executable).parent


def idle_timers(history: WorkflowHistory) -> list[timedelta]:
    """Durations of the timers the session started for being idle (its run waits are
    shorter: the run's own limits plus a grace)."""
    return [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
        and e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta() > timedelta(days=1)
    ]


async def test_a_busy_session_starts_one_idle_timer(stack: Stack) -> None:
    handle = stack.client.get_workflow_handle(session_id("webhook", "idle-busy"))

    async def idle() -> bool:
        return await handle.query(SessionWorkflow.pending) == 0

    for i in range(4):
        body = webhook_message("idle-busy", "c", f"turn {i}")
        resp = await stack.http.post(
            "/channels/webhook", data=body, headers=webhook_headers(body, f"idle_{i}")
        )
        assert resp.status == 202
        await stack.receiver.wait_for(i + 1)
        await eventually(idle)  # one at a time: the session waits idle between messages
    # Sessions here continue as new every few turns: count over every run of the session.
    timers: list[timedelta] = []
    runs = 0
    async for execution in stack.client.list_workflows(f'WorkflowId = "{handle.id}"'):
        runs += 1
        run = stack.client.get_workflow_handle(handle.id, run_id=execution.run_id)
        timers += idle_timers(await run.fetch_history())
    # The session waited idle four times; before, each wait started its own 30-day timer.
    # Now each session run starts one, whichever number of turns it served.
    assert runs < 4
    assert len(timers) == runs
    assert all(t <= IDLE_TIMEOUT for t in timers)


@pytest.fixture(scope="module")
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=build_data_converter(make_settings("x", "x").security),
    )
    yield env
    await env.shutdown()


async def test_an_idle_session_ends_after_the_idle_timeout(skipping: WorkflowEnvironment) -> None:
    queue = f"idle-{uuid.uuid4().hex[:8]}"
    async with Worker(
        skipping.client,
        task_queue=queue,
        workflows=[SessionWorkflow],
        workflow_runner=workflow_runner(),
    ):
        handle = await skipping.client.start_workflow(
            SessionWorkflow.run,
            SessionState(tenant="t", isolation_key="k", identity_hash="h", channel="webhook"),
            id=f"session/t/{uuid.uuid4().hex}",
            task_queue=queue,
        )
        await handle.result()  # time skips ahead: 30 days pass in moments
        history = await handle.fetch_history()
    assert idle_timers(history) == [IDLE_TIMEOUT]
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    started = history.events[0].event_time.ToDatetime()
    ended = history.events[-1].event_time.ToDatetime()
    assert ended - started >= IDLE_TIMEOUT
