"""Purging an account deletes the replays of its dead letters too: a replay holds what its run
owed the person, so it carries the run's identity hash, and one recorded before replays did
is found by its id."""

from __future__ import annotations

import uuid

from temporalio.client import WorkflowExecutionStatus

from cli.operations import purge_identity, replay_dead_letters, session_id_for
from hosting import search_attributes as sa
from hosting.ids import redelivery_workflow_id
from hosting.models import DeliveryState, RedeliveryInput
from tests.conftest import Stack
from tests.support import eventually, webhook_headers, webhook_message
from workflows.redelivery import RedeliveryWorkflow


async def dead_letter(stack: Stack, user: str, text: str) -> str:
    """A run of ``user`` whose only reply was refused for good, once it has closed."""
    stack.receiver.fail_next.append(410)
    msg_id = f"purge_{uuid.uuid4().hex}"
    body = webhook_message(user, user, text)
    resp = await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, msg_id)
    )
    assert resp.status == 202, await resp.text()
    run_id = f"run/default/webhook/{msg_id}"

    async def closed() -> bool:
        desc = await stack.client.get_workflow_handle(run_id).describe()
        return desc.status is WorkflowExecutionStatus.COMPLETED

    await eventually(closed, timeout=30)
    return run_id


async def replay(stack: Stack, run_id: str) -> str:
    [result] = await replay_dead_letters(stack.client, stack.settings.temporal.task_queue, run_id)
    assert result.state is DeliveryState.DELIVERED
    return redelivery_workflow_id(run_id, "webhook")


async def exists(stack: Stack, workflow_id: str) -> bool:
    try:
        await stack.client.get_workflow_handle(workflow_id).describe()
    except Exception:
        return False
    return True


async def test_a_replay_carries_its_runs_identity_hash(stack: Stack) -> None:
    run_id = await dead_letter(stack, f"hash-{uuid.uuid4().hex[:6]}", "owed")
    replay_id = await replay(stack, run_id)
    run = (await stack.client.get_workflow_handle(run_id).describe()).typed_search_attributes
    got = (await stack.client.get_workflow_handle(replay_id).describe()).typed_search_attributes
    assert run.get(sa.IDENTITY_HASH) is not None
    for key in (sa.IDENTITY_HASH, sa.TENANT, sa.CHANNEL):
        assert got.get(key) == run.get(key), key
    assert got.get(sa.DELIVERY_STATE) == "delivered"  # its own, beside the run's


async def test_purge_deletes_the_replays_of_an_accounts_dead_letters(stack: Stack) -> None:
    user, other = (f"{who}-{uuid.uuid4().hex[:6]}" for who in ("purged", "kept"))
    replayed = await dead_letter(stack, user, "owed first")
    new_replay = await replay(stack, replayed)
    # A replay started as before replays carried the hash: no search attribute of the person.
    older = await dead_letter(stack, user, "owed second")
    old_replay = redelivery_workflow_id(older, "webhook")
    await stack.client.execute_workflow(
        RedeliveryWorkflow.run,
        RedeliveryInput(run_id=older, destination="webhook"),
        id=old_replay,
        task_queue=stack.settings.temporal.task_queue,
    )
    described = await stack.client.get_workflow_handle(old_replay).describe()
    assert described.typed_search_attributes.get(sa.IDENTITY_HASH) is None
    others_run = await dead_letter(stack, other, "not theirs")
    others_replay = await replay(stack, others_run)

    async def replays_visible() -> bool:
        query = 'WorkflowType = "RedeliveryWorkflow"'
        seen = {wf.id async for wf in stack.client.list_workflows(query)}
        return {new_replay, old_replay, others_replay} <= seen

    await eventually(replays_visible, timeout=20)
    session = session_id_for(stack.settings, "webhook", user, None, "per_user")
    deleted = await purge_identity(stack.client, stack.settings, session)
    assert {session, replayed, older, new_replay, old_replay} <= set(deleted), deleted
    assert others_run not in deleted and others_replay not in deleted

    for workflow_id in (session, replayed, older, new_replay, old_replay):

        async def gone(workflow_id: str = workflow_id) -> bool:
            return not await exists(stack, workflow_id)

        # The server deletes a closed run in the background, at times half a minute later.
        await eventually(gone, timeout=90)
    assert await exists(stack, others_run) and await exists(stack, others_replay)
