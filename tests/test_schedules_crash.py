"""A worker killed with SIGKILL between firings of an ``every_s`` check-in: the schedule
keeps its own time on the server, and every firing it records is delivered exactly once."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from temporalio.client import Client, ScheduleHandle, WorkflowExecutionStatus

from gateway import build_app
from hosting.ids import checkin_message_key
from tests.conftest import temporal_address
from tests.support import (
    Receiver,
    eventually,
    make_settings,
    webhook_headers,
    webhook_message,
)
from tests.test_worker_crash import WorkerProcess, free_port, write_config

APP_KEY = "app-key-" + "d" * 24
EVERY_S = 5
pytestmark = pytest.mark.slow


@pytest.fixture
def worker(
    tmp_path: Path, client: Client, receiver: Receiver
) -> Iterator[tuple[WorkerProcess, str]]:
    tq = f"tq-sched-crash-{uuid.uuid4().hex}"
    config = tmp_path / "switchboard.toml"
    write_config(config, temporal_address(client), tq, receiver.url, free_port())
    process = WorkerProcess(config, tmp_path / "worker.log")
    yield process, tq
    process.stop()


@pytest.fixture
async def gateway(client: Client, worker: tuple[WorkerProcess, str]) -> AsyncIterator[TestClient]:
    _, tq = worker
    settings = make_settings(tq, temporal_address(client), messages={"api_keys": {"app": APP_KEY}})
    async with TestClient(TestServer(build_app(settings, client=client), host="127.0.0.1")) as http:
        yield http


def check_ins(receiver: Receiver, public_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every push of this check-in the receiver took, with its ``webhook-id``."""
    prefix = f"run/default/webhook/{public_id}."
    return [
        (key, push)
        for key, push in zip(receiver.ids, receiver.received, strict=True)
        if str(push["run_id"]).startswith(prefix)
    ]


async def runs_closed(client: Client, receiver: Receiver, public_id: str) -> bool:
    for _, push in check_ins(receiver, public_id):
        described = await client.get_workflow_handle(str(push["run_id"])).describe()
        if described.status == WorkflowExecutionStatus.RUNNING:
            return False
    return True


async def settled(client: Client, schedule: ScheduleHandle, receiver: Receiver) -> bool:
    """No firing in flight: none running, each one recorded delivered, every run closed."""
    info = (await schedule.describe()).info
    public_id = schedule.id.rsplit("/", 1)[-1]
    return (
        not info.running_actions
        and len(check_ins(receiver, public_id)) == info.num_actions
        and await runs_closed(client, receiver, public_id)
    )


async def test_sigkill_between_firings_loses_and_duplicates_none(
    worker: tuple[WorkerProcess, str], gateway: TestClient, receiver: Receiver, client: Client
) -> None:
    process, _ = worker
    process.start()
    user = f"u-{uuid.uuid4().hex[:8]}"
    body = webhook_message(user, f"c-{user}", "hi")
    resp = await gateway.post("/channels/webhook", data=body, headers=webhook_headers(body))
    assert resp.status == 202
    await receiver.wait_for(1, timeout=60)  # the session now knows where to reach them
    resp = await gateway.post(
        "/v1/schedules",
        json={
            "to": {"channel": "webhook", "user_id": user},
            "prompt": "still there?",
            "every_s": EVERY_S,
        },
        headers={"Authorization": f"Bearer {APP_KEY}"},
    )
    assert resp.status == 201, await resp.text()
    public_id = (await resp.json())["id"]
    schedule = client.get_schedule_handle(f"schedule/default/{public_id}")

    async def delivered(n: int) -> bool:
        return len(check_ins(receiver, public_id)) >= n

    await eventually(lambda: delivered(2), timeout=60)

    # Between firings: nothing in flight, and the next one a while away.
    async def between_firings() -> bool:
        if not await settled(client, schedule, receiver):
            return False
        upcoming = (await schedule.describe()).info.next_action_times
        return bool(upcoming) and upcoming[0] - datetime.now(UTC) > timedelta(seconds=EVERY_S / 2)

    await eventually(between_firings, timeout=60)
    process.kill()

    # The schedule fires while no worker runs: the firing waits for one (and, by the overlap
    # policy, no other starts meanwhile).
    async def waiting_for_a_worker() -> bool:
        return bool((await schedule.describe()).info.running_actions)

    await eventually(waiting_for_a_worker, timeout=60)
    info = (await schedule.describe()).info
    before = len(check_ins(receiver, public_id))
    assert before < info.num_actions  # fired, not delivered
    process.start()
    await eventually(lambda: delivered(before + 2), timeout=120)

    await schedule.pause(note="test: stop firing")
    await eventually(lambda: settled(client, schedule, receiver), timeout=60)
    info = (await schedule.describe()).info
    pushes = check_ins(receiver, public_id)
    # Each firing the schedule recorded was delivered exactly once: no loss, no repeat.
    assert len(pushes) == info.num_actions
    assert max(Counter(key for key, _ in pushes).values()) == 1
    runs = Counter(str(push["run_id"]) for _, push in pushes)
    assert max(runs.values()) == 1
    recent = {
        f"run/default/webhook/{checkin_message_key(public_id, action.scheduled_at)}"
        for action in info.recent_actions
    }
    assert len(recent) == min(info.num_actions, len(info.recent_actions))
    assert recent <= set(runs)
    assert {push["text"] for _, push in pushes} == {"echo: still there?"}
    await schedule.delete()
