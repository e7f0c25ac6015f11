"""A worker killed with SIGKILL mid-turn: tool calls still run once, and the reply arrives.

The worker runs in its own process (it is killed for real); the fake model and the webhook
receiver run in the test's process, and the tools count their side effects in a file.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from gateway import build_app
from hosting.models import ToolInvocation
from tests.conftest import temporal_address
from tests.support import (
    CODEC_KEY,
    SIGNING_KEY,
    WEBHOOK_SECRET,
    Receiver,
    closed_history,
    eventually,
    local_activity_type,
    make_settings,
    webhook_headers,
    webhook_message,
)
from tests.test_tools import FakeModel, serving_model
from tests.test_worker_crash import WorkerProcess, free_port

CODE = re.compile(r"/approve ([A-Z2-9]{6})\b")
pytestmark = pytest.mark.slow


class HeldModel(FakeModel):
    """The fake model, but a step that carries tool results waits until ``release`` is set:
    the test kills the worker while that step runs, before it can complete."""

    def __init__(self) -> None:
        super().__init__()
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if any(m["role"] == "tool" for m in body["messages"]) and not self.release.is_set():
            self.held.set()
            await self.release.wait()
        return await self.respond(request, body)


@pytest.fixture
async def model() -> AsyncIterator[HeldModel]:
    fake = HeldModel()
    async with serving_model(fake.handle) as fake.url:
        yield fake
        fake.release.set()


@pytest.fixture
def tool_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tool-calls.log"
    path.touch()
    monkeypatch.setenv("SWITCHBOARD_TEST_TOOL_LOG", str(path))  # inherited by the worker
    return path


@pytest.fixture
def task_queue() -> str:
    return f"tq-tool-crash-{uuid.uuid4().hex}"


@pytest.fixture
def worker(
    tmp_path: Path,
    client: Client,
    receiver: Receiver,
    model: HeldModel,
    tool_log: Path,
    task_queue: str,
) -> Iterator[WorkerProcess]:
    config = tmp_path / "switchboard.toml"
    config.write_text(
        f"""
[worker]
metrics_address = "127.0.0.1:{free_port()}"
[temporal]
address = "{temporal_address(client)}"
task_queue = "{task_queue}"
[security]
signing_key = "{SIGNING_KEY}"
codec_keys = ["{CODEC_KEY}"]
[gateway]
log_format = "console"
[agent]
kind = "openai"
base_url = "{model.url}"
tools = ["tests.crash_tools:lookup_weather", "tests.crash_tools:send_payment"]
approval_required = ["send_payment"]
tools_not_idempotent = ["send_payment"]
heartbeat_timeout_s = 3
[delivery]
initial_interval_s = 0.2
max_interval_s = 1.0
timeout_s = 2
[channels.webhook]
secret = "{WEBHOOK_SECRET}"
callback_url = "{receiver.url}"
"""
    )
    process = WorkerProcess(config, tmp_path / "worker.log")
    yield process
    process.stop()


@pytest.fixture
async def gateway(
    client: Client, worker: WorkerProcess, task_queue: str
) -> AsyncIterator[TestClient]:
    settings = make_settings(task_queue, temporal_address(client))
    async with TestClient(TestServer(build_app(settings, client=client), host="127.0.0.1")) as http:
        yield http


async def say(http: TestClient, user: str, text: str) -> str:
    body = webhook_message(user, user, text)
    msg_id = f"msg_{uuid.uuid4().hex}"
    resp = await http.post("/channels/webhook", data=body, headers=webhook_headers(body, msg_id))
    assert resp.status == 202
    return f"run/default/webhook/{msg_id}"


async def reply_of(receiver: Receiver, run_id: str, timeout: float = 90) -> dict[str, object]:
    async def arrived() -> bool:
        return any(r["run_id"] == run_id and r["phase"] == "response" for r in receiver.received)

    await eventually(arrived, timeout=timeout)
    return next(r for r in receiver.received if r["run_id"] == run_id and r["phase"] == "response")


async def activities(client: Client, run_id: str) -> tuple[Counter[str], list[str], dict[str, int]]:
    """Activities the run scheduled by type, the call ids of its tool activities, and the
    attempt each activity type was last started with (2 or more: it ran again)."""
    history = await closed_history(client, run_id)
    kinds: Counter[str] = Counter()
    call_ids: list[str] = []
    scheduled: dict[int, str] = {}
    attempts: dict[str, int] = {}
    for event in history.events:
        if local := local_activity_type(event):  # a push's first attempt
            kinds[local] += 1
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            kinds[attrs.activity_type.name] += 1
            scheduled[event.event_id] = attrs.activity_type.name
            if attrs.activity_type.name == "call_tool":
                [inv] = await client.data_converter.decode(attrs.input.payloads, [ToolInvocation])
                call_ids.append(inv.call.call_id)
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            kind = scheduled[started.scheduled_event_id]
            attempts[kind] = max(attempts.get(kind, 0), started.attempt)
    return kinds, call_ids, attempts


async def test_a_worker_killed_while_a_run_waits_for_approval(
    worker: WorkerProcess,
    gateway: TestClient,
    receiver: Receiver,
    client: Client,
    model: HeldModel,
    tool_log: Path,
) -> None:
    model.release.set()  # this test holds no model step
    worker.start()
    user = f"pat-{uuid.uuid4().hex[:8]}"
    run_id = await say(gateway, user, 'use send_payment {"amount": 7, "to": "bob"}')
    await receiver.wait_for(1, timeout=60)
    prompt = receiver.received[0]
    assert prompt["phase"] == "approval" and prompt["run_id"] == run_id
    match = CODE.search(str(prompt["text"]))
    assert match
    worker.kill()  # nothing runs for a waiting approval: the run is only history now
    worker.start()
    await say(gateway, user, f"/approve {match.group(1)}")
    final = await reply_of(receiver, run_id)
    assert final["text"] == "final: paid 7 to bob"
    # The approval message may have been pushed again (its push had not been recorded when
    # the worker died): with the same idempotency key, so the platform drops the repeat.
    prompts = [i for i, r in zip(receiver.ids, receiver.received, strict=True)
               if r["phase"] == "approval"]  # fmt: skip
    assert len(set(prompts)) == 1
    assert tool_log.read_text().splitlines() == [f"send_payment 7 bob {run_id}:call_0"]
    kinds, call_ids, _ = await activities(client, run_id)
    assert call_ids == ["call_0"]
    assert kinds["invoke_agent"] == 1 and kinds["model_step"] == 1
    assert "Approved: the agent goes on." in {r["text"] for r in receiver.received}


async def test_a_worker_killed_right_after_a_tool_completed(
    worker: WorkerProcess,
    gateway: TestClient,
    receiver: Receiver,
    client: Client,
    model: HeldModel,
    tool_log: Path,
) -> None:
    worker.start()
    user = f"kim-{uuid.uuid4().hex[:8]}"
    run_id = await say(gateway, user, 'use lookup_weather {"city": "Oslo"}')

    async def tool_ran() -> bool:
        return bool(tool_log.read_text())

    await eventually(tool_ran, timeout=60)  # the tool's side effect is done
    # The next model step has started, so the tool's completion is recorded; it cannot
    # complete, since the model holds its answer. Kill the worker now.
    await asyncio.wait_for(model.held.wait(), 60)
    worker.kill()
    model.release.set()
    worker.start()
    final = await reply_of(receiver, run_id)
    assert final["text"] == "final: sunny in Oslo"
    assert tool_log.read_text().splitlines() == ["lookup_weather Oslo"]
    kinds, call_ids, attempts = await activities(client, run_id)
    assert call_ids == ["call_0"]
    assert kinds == Counter(invoke_agent=1, call_tool=1, model_step=1, push_reply=1)
    # What the kill cost: the step that was running (the model call) ran again, nothing else.
    assert attempts["model_step"] >= 2
    assert attempts["call_tool"] == 1 and attempts["invoke_agent"] == 1
    # The model was asked that step twice (the killed attempt and its retry), the first
    # model call once.
    first_calls = [r for r in model.requests if not any(m["role"] == "tool" for m in r["messages"])]
    assert len(first_calls) == 1 and len(model.requests) == 3
