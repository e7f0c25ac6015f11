"""Reading a run's dead letter for a redelivery: a call back into Temporal.

While the run is open it answers its ``dead_letter`` query; once it has closed, what it still
owes is in its result (``RunView.owed``), read without a worker and without a replay. A run that
closed without a result (terminated, say) or before results carried it is asked by query, which
a worker answers by replaying it.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowQueryRejectedError
from temporalio.common import QueryRejectCondition
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from hosting.models import DeliveryState, PushRequest, RedeliveryInput, RunView


class RedeliveryActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="load_dead_letter")
    async def load_dead_letter(self, inp: RedeliveryInput) -> list[PushRequest]:
        handle = self._client.get_workflow_handle(inp.run_id, result_type=RunView)
        try:
            try:
                owed: list[PushRequest] = await handle.query(
                    "dead_letter",
                    inp.destination,
                    result_type=list[PushRequest],
                    reject_condition=QueryRejectCondition.NOT_OPEN,
                )
                return owed
            except WorkflowQueryRejectedError:
                pass  # closed: its result says what is owed
            try:
                final = await handle.result()
            except WorkflowFailureError:
                final = None
            if final is not None and (
                inp.destination in final.owed
                or not any(
                    d.destination == inp.destination and d.state is DeliveryState.DEAD_LETTER
                    for d in final.deliveries
                )
            ):
                return list(final.owed.get(inp.destination, []))
            # No result, or one recorded before results said what is owed: a replay knows.
            owed = await handle.query("dead_letter", inp.destination, result_type=list[PushRequest])
        except RPCError as exc:
            raise ApplicationError(
                f"run cannot be read ({exc.status.name})", type="RunUnavailable", non_retryable=True
            ) from None
        return owed
