"""ProactiveMessageWorkflow: one message an application sends first (``POST /v1/messages``).

ID ``message/{tenant}/{key}``. No agent step: it resolves the destinations exactly as a run
resolves its reply's (``hosting.targets.resolve``), pushes to each through the same delivery
code (``push_with_retries``: retry schedule, ``max_age_s``, dead letters), and keeps a view
shaped like a run's, with the same ``view``/``dead_letter`` queries and ``redelivered`` signal
while it runs, and closes with the same kind of result (its final view, with what a dead letter
is still owed), so ``switchboard dead-letters`` and ``RedeliveryWorkflow`` treat it as they treat
runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from hosting import search_attributes as sa
    from hosting.ids import delivery_key
    from hosting.models import (
        DestinationStatus,
        MessageInput,
        PushRequest,
        ReplyAddress,
        RunStatus,
        RunView,
    )
    from hosting.targets import destination_label, resolve
    from workflows import names
    from workflows.ledger import DeliveryLedger
    from workflows.run import RUNS_CLOSE_PATCH

LABELS_KIND = "message"


@workflow.defn
class ProactiveMessageWorkflow:
    @workflow.init
    def __init__(self, inp: MessageInput) -> None:
        self._inp = inp
        self._status = RunStatus.QUEUED
        self._created_at: datetime = workflow.now()
        self._updated_at: datetime = self._created_at
        self._ledger = DeliveryLedger()

    @workflow.run
    async def run(self, inp: MessageInput) -> RunView:
        self._set_status(RunStatus.IN_PROGRESS)
        destinations = resolve(
            inp.target, inp.origin, inp.accounts, inp.active_channel, inp.max_fanout
        )
        deliveries = asyncio.ensure_future(
            asyncio.gather(*(self._deliver(address) for address in destinations))
        )
        try:
            await asyncio.shield(deliveries)
        except asyncio.CancelledError:
            # Accepted means sent: a cancel stops no delivery that has begun.
            await deliveries
        self._set_status(RunStatus.COMPLETED)
        if not workflow.patched(RUNS_CLOSE_PATCH):
            # Recorded before messages closed: they stayed open for the continuation window.
            with contextlib.suppress(asyncio.CancelledError):
                await workflow.sleep(timedelta(seconds=inp.continuation_s))
        # Done: the final view, with what a dead letter is still owed, is the result.
        return self._ledger.final(self.view())

    async def _deliver(self, address: ReplyAddress) -> None:
        dest = destination_label(address)
        policy = self._inp.delivery
        push = PushRequest(
            idempotency_key=delivery_key(self._inp.message_id, dest, "response"),
            run_id=self._inp.message_id,
            phase="response",
            address=address,
            text=self._inp.text,
            created_at=self._created_at,
            max_age_s=policy.max_age_s,
            policy=policy,
        )
        await self._ledger.deliver(dest, [push])
        self._updated_at = workflow.now()

    @workflow.query
    def dead_letter(self, destination: str) -> list[PushRequest]:
        """The push still owed to one destination, for an operator's redelivery."""
        return self._ledger.owed_to(destination)

    @workflow.signal(name=names.REDELIVERED_SIGNAL)
    def redelivered(self, status: DestinationStatus) -> None:
        """A redelivery reports back: the view and search attribute follow."""
        self._updated_at = workflow.now()
        self._ledger.redelivered(status)

    def _set_status(self, status: RunStatus) -> None:
        self._status = status
        self._updated_at = workflow.now()
        workflow.upsert_search_attributes([sa.RUN_STATUS.value_set(status.value)])

    @workflow.query
    def view(self) -> RunView:
        """A run's view: ``output_text`` is the message; labels name its kind and caller."""
        return RunView(
            run_id=self._inp.message_id,
            status=self._status,
            channel=self._inp.origin.channel,
            created_at=self._created_at,
            updated_at=self._updated_at,
            output_text=self._inp.text,
            deliveries=list(self._ledger.states.values()),
            labels={"kind": LABELS_KIND, "caller": self._inp.caller},
        )
