"""Replaying recorded histories with today's workflow code must not fail.

Histories under ``tests/histories`` were recorded from real runs on the dev server; a change
to workflow code that would break running workflows fails here. Set
``SWITCHBOARD_RECORD_HISTORIES=1`` to record fresh ones next to them (never overwrite old ones:
they are the contract with executions already running in production).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from hosting.converter import build_data_converter
from hosting.models import RunView
from tests.conftest import Stack
from tests.support import eventually, make_settings, session_id, webhook_headers, webhook_message
from worker import WORKFLOWS, workflow_runner

HISTORIES = Path(__file__).parent / "histories"
# SWITCHBOARD_RECORD_HISTORIES=<tag> records next to the old files under a tag prefix ("1": none).
RECORD_TAG = os.environ.get("SWITCHBOARD_RECORD_HISTORIES", "1").removeprefix("1")


async def each(histories: list[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for history in histories:
        yield history


def replayer() -> Replayer:
    return Replayer(
        workflows=WORKFLOWS,
        data_converter=build_data_converter(make_settings("x", "x").security),
        workflow_runner=workflow_runner(),
    )


async def test_fresh_histories_replay(stack: Stack) -> None:
    stack.receiver.fail_next.extend([503, 400])  # one retried push, then one dead letter
    for i, text in enumerate(["one", "two", "three"]):
        body = webhook_message("replay", "r1", text)
        resp = await stack.http.post(
            "/channels/webhook", data=body, headers=webhook_headers(body, f"replay_{i}")
        )
        assert resp.status == 202
    await stack.receiver.wait_for(2, timeout=60)
    ids = [session_id("webhook", "replay")] + [f"run/default/webhook/replay_{i}" for i in range(3)]

    async def settled() -> bool:
        views = [
            await stack.client.get_workflow_handle(wid).query("view", result_type=RunView)
            for wid in ids[1:]
        ]
        return all(v.deliveries and v.deliveries[0].state != "pending" for v in views)

    await eventually(settled, timeout=60)
    histories = [await stack.client.get_workflow_handle(wid).fetch_history() for wid in ids]
    result = await replayer().replay_workflows(each(histories), raise_on_replay_failure=False)
    assert result.replay_failures == {}
    if os.environ.get("SWITCHBOARD_RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        for wid, history in zip(ids, histories, strict=True):
            name = wid.replace("/", "_").replace(":", "_") + ".json"
            name = f"{RECORD_TAG}_{name}" if RECORD_TAG else name
            (HISTORIES / name).write_text(history.to_json())


async def test_recorded_histories_replay() -> None:
    files = sorted(HISTORIES.glob("*.json"))
    assert files, "no recorded histories: record them with SWITCHBOARD_RECORD_HISTORIES=1"
    histories = [WorkflowHistory.from_json(f.stem, json.loads(f.read_text())) for f in files]
    result = await replayer().replay_workflows(each(histories), raise_on_replay_failure=False)
    assert result.replay_failures == {}


async def test_every_workflow_type_replays(stack: Stack) -> None:
    """Commands, linking, a one-off run and an operator redelivery, recorded and replayed."""
    from cli.operations import replay_dead_letters
    from hosting.models import ChannelRequest, ReplyAddress
    from routes.intake import build_submission, start_run
    from tests.test_linking import new_code, webhook_say

    code = await new_code(stack, "rex")
    await webhook_say(stack, f"/link {code}", user="rex-w")
    await stack.receiver.wait_for(1)
    stack.receiver.fail_next.append(404)
    dead_run = await webhook_say(stack, "lost then found", user="rex-w")

    async def dead() -> bool:
        view = await stack.client.get_workflow_handle(dead_run).query("view", result_type=RunView)
        return bool(view.deliveries) and view.deliveries[0].state == "dead_letter"

    await eventually(dead)
    await replay_dead_letters(stack.client, stack.settings.temporal.task_queue, dead_run)
    await stack.receiver.wait_for(2)
    channel = stack.registry.get("loopback")
    assert channel is not None
    request = ChannelRequest(
        tenant="default", channel="loopback", message_key="oneoff", user_id="api",
        conversation_id="oneoff", text="one-off",
        reply_to=ReplyAddress(channel="loopback", user_id="api", conversation_id="oneoff"),
    )  # fmt: skip
    one_off = await start_run(
        stack.client, stack.settings,
        build_submission(stack.settings, channel, request, deliver_to_origin=False), transcript=[],
    )  # fmt: skip

    async def finished() -> bool:
        view = await stack.client.get_workflow_handle(one_off).query("view", result_type=RunView)
        return view.status.finished

    await eventually(finished)
    ids = [one_off, dead_run, session_id("loopback", "rex"), session_id("webhook", "rex-w")]
    async for wf in stack.client.list_workflows(
        f'TaskQueue = "{stack.settings.temporal.task_queue}" AND '
        '(WorkflowType = "LinkChallengeWorkflow" OR WorkflowType = "RedeliveryWorkflow")'
    ):
        ids.append(wf.id)
    assert len(ids) == 6, ids
    histories = [await stack.client.get_workflow_handle(wid).fetch_history() for wid in ids]
    result = await replayer().replay_workflows(each(histories), raise_on_replay_failure=False)
    assert result.replay_failures == {}
    if os.environ.get("SWITCHBOARD_RECORD_HISTORIES"):
        for history in histories:
            kind = history.events[0].workflow_execution_started_event_attributes.workflow_type.name
            name = f"{kind}_{history.workflow_id.replace('/', '_').replace(':', '_')}"
            name = f"{RECORD_TAG}_{name}" if RECORD_TAG else name
            (HISTORIES / f"{name[:120]}.json").write_text(history.to_json())
