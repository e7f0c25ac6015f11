"""Operator actions shared by the CLI and tests: metadata in, metadata out."""

from __future__ import annotations

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from hosting import search_attributes as sa
from hosting.ids import (
    Scope,
    identity_hash,
    isolation_key,
    redelivery_workflow_id,
    session_workflow_id,
)
from hosting.models import (
    DeliveryState,
    RedeliveryInput,
    RedeliveryResult,
    SessionLinks,
)
from hosting.settings import Settings
from routes.watch import read_view
from workflows.redelivery import RedeliveryWorkflow
from workflows.session import SessionWorkflow

REDELIVERY_PREFIX = "redelivery/"  # hosting.ids.redelivery_workflow_id
REPLAYS_PER_QUERY = 50  # run ids per visibility query: a bound on its length


async def replay_dead_letters(
    client: Client, task_queue: str, run_id: str, destination: str | None = None
) -> list[RedeliveryResult]:
    """Replay every dead-lettered destination of a run (or one), waiting for each outcome.

    Works for as long as the namespace retains the run: an open run is queried, a closed one
    read from its result, with earlier replays laid over it (what one delivered is not sent
    again). Raises LookupError when there is no such run."""
    view, closed = await read_view(client, run_id)
    if view is None:
        raise LookupError(f"{run_id}: no such run (or no longer retained)")
    # On a closed run, ``pending`` is a replay still under way: a second replay joins it.
    replayable = (DeliveryState.DEAD_LETTER, DeliveryState.PENDING if closed else None)
    targets = [
        d.destination
        for d in view.deliveries
        if d.state in replayable and destination in (None, d.destination)
    ]
    results = []
    owner = await _owner_attributes(client, run_id) if targets else None
    for dest in targets:
        result = await client.execute_workflow(
            RedeliveryWorkflow.run,
            RedeliveryInput(run_id=run_id, destination=dest),
            id=redelivery_workflow_id(run_id, dest),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=owner,
        )
        results.append(result)
    return results


async def _owner_attributes(client: Client, run_id: str) -> TypedSearchAttributes:
    """The run's tenant, channel and identity hash: a replay holds what the run owed its
    person, so it is found (and purged) with that person's runs."""
    attributes = (await client.get_workflow_handle(run_id).describe()).typed_search_attributes
    return TypedSearchAttributes(
        [
            SearchAttributePair(key, value)
            for key in (sa.TENANT, sa.CHANNEL, sa.IDENTITY_HASH)
            if (value := attributes.get(key)) is not None
        ]
    )


def session_id_for(settings: Settings, channel: str, user_id: str, conversation: str | None,
                   scope: Scope) -> str:  # fmt: skip
    key = isolation_key(
        scope,
        channel,
        user_id,
        conversation or user_id,
        identity_key=settings.security.identity_key_bytes(),
    )
    return session_workflow_id(settings.gateway.tenant, key)


async def show_links(client: Client, session_id: str) -> SessionLinks:
    links: SessionLinks = await client.get_workflow_handle(session_id).query(SessionWorkflow.links)
    return links


async def revoke_links(client: Client, session_id: str) -> None:
    await client.get_workflow_handle(session_id).signal(SessionWorkflow.revoke_links)


async def purge_identity(client: Client, settings: Settings, session_id: str) -> list[str]:
    """Delete the session, every run and message of one isolation key, the replays of their
    dead letters and its scheduled check-ins, all found by their keyed hash."""
    key = session_id.split("/", 2)[2]
    hashed = identity_hash(settings.security.identity_key_bytes(), key)
    query = f"{sa.IDENTITY_HASH.name} = {sa.visibility_literal(hashed)}"
    deleted: list[str] = []
    async for wf in client.list_workflows(query):
        await _delete(client, wf.id, wf.run_id)
        deleted.append(wf.id)
    # Replays started before they carried the hash are found by their id: one per run.
    owners = [wid for wid in deleted if not wid.startswith(("session/", REDELIVERY_PREFIX))]
    for i in range(0, len(owners), REPLAYS_PER_QUERY):
        prefixes = " OR ".join(
            f"WorkflowId STARTS_WITH {sa.visibility_literal(redelivery_workflow_id(wid, ''))}"
            for wid in owners[i : i + REPLAYS_PER_QUERY]
        )
        async for wf in client.list_workflows(
            f'WorkflowType = "RedeliveryWorkflow" AND ({prefixes})'
        ):
            if wf.id not in deleted:
                await _delete(client, wf.id, wf.run_id)
                deleted.append(wf.id)
    # Check-ins scheduled for the person carry the same hash: they go too.
    async for entry in await client.list_schedules(query):
        await client.get_schedule_handle(entry.id).delete()
        deleted.append(entry.id)
    return deleted


async def _delete(client: Client, workflow_id: str, run_id: str) -> None:
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
        )
    )
