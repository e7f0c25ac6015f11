"""Operator actions shared by the CLI and tests: metadata in, metadata out."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from hosting.models import DeliveryState, RedeliveryInput, RedeliveryResult, RunView
from workflows.redelivery import RedeliveryWorkflow


def redelivery_workflow_id(run_id: str, destination: str) -> str:
    return f"redelivery/{run_id}/{destination}"


async def replay_dead_letters(
    client: Client, task_queue: str, run_id: str, destination: str | None = None
) -> list[RedeliveryResult]:
    """Replay every dead-lettered destination of a run (or one), waiting for each outcome."""
    view: RunView = await client.get_workflow_handle(run_id).query("view", result_type=RunView)
    targets = [
        d.destination
        for d in view.deliveries
        if d.state is DeliveryState.DEAD_LETTER and destination in (None, d.destination)
    ]
    results = []
    for dest in targets:
        result = await client.execute_workflow(
            RedeliveryWorkflow.run,
            RedeliveryInput(run_id=run_id, destination=dest),
            id=redelivery_workflow_id(run_id, dest),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        results.append(result)
    return results
