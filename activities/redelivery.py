"""Reading a run's dead letter for a redelivery: a call back into Temporal."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from hosting.models import PushRequest, RedeliveryInput


class RedeliveryActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="load_dead_letter")
    async def load_dead_letter(self, inp: RedeliveryInput) -> list[PushRequest]:
        try:
            owed: list[PushRequest] = await self._client.get_workflow_handle(inp.run_id).query(
                "dead_letter", inp.destination, result_type=list[PushRequest]
            )
        except RPCError as exc:
            raise ApplicationError(
                f"run cannot be read ({exc.status.name})", type="RunUnavailable", non_retryable=True
            ) from None
        return owed
