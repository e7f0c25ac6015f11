"""RedeliveryWorkflow: an operator's replay of one dead-lettered destination.

ID ``redelivery/{run_id}/{destination}``. It loads what the run still owes that destination
(from the run's ``dead_letter`` query while it runs, from its result once it has closed),
pushes it again with the same idempotency keys (so a platform that did get it drops the repeat)
and a fresh age limit (an operator chose to send it late), and reports back to the run if the
run is still open. A closed run cannot be told any more: this workflow's result is then the
outcome, and it carries its own ``SwitchboardDeliveryState`` (``pending`` while it pushes, then
the outcome), which readers overlay on the closed run (``routes.watch``).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.redelivery import RedeliveryActivities
    from hosting import search_attributes as sa
    from hosting.models import (
        DeliveryState,
        DestinationStatus,
        PushRequest,
        RedeliveryInput,
        RedeliveryResult,
    )
    from workflows.delivery import PushFailed, push_with_retries
    from workflows.run import RUNS_CLOSE_PATCH, AgentRunWorkflow


@workflow.defn
class RedeliveryWorkflow:
    @workflow.run
    async def run(self, inp: RedeliveryInput) -> RedeliveryResult:
        # Recorded before runs closed, a redelivery carried no delivery state of its own.
        own_state = workflow.patched(RUNS_CLOSE_PATCH)
        if own_state:
            self._mark(DeliveryState.PENDING)
        owed: list[PushRequest] = await workflow.execute_activity_method(
            RedeliveryActivities.load_dead_letter,
            inp,
            start_to_close_timeout=timedelta(seconds=30),
        )
        if not owed:
            if own_state:
                self._mark(DeliveryState.SKIPPED)
            return RedeliveryResult(
                destination=inp.destination, state=DeliveryState.SKIPPED, reason="nothing owed"
            )
        attempts = 0
        reason: str | None = None
        state = DeliveryState.DELIVERED
        for push in owed:
            try:
                result = await push_with_retries(
                    push.model_copy(update={"created_at": workflow.now()})
                )
                attempts = result.attempts
            except PushFailed as failed:
                state, reason, attempts = DeliveryState.DEAD_LETTER, failed.reason, failed.attempts
                break
        status = DestinationStatus(
            destination=inp.destination,
            state=state,
            attempts=attempts,
            reason=reason,
            updated_at=workflow.now(),
        )
        try:
            run = workflow.get_external_workflow_handle_for(AgentRunWorkflow.run, inp.run_id)
            await run.signal(AgentRunWorkflow.redelivered, status)
        except Exception:  # the run has closed: this workflow's result is the outcome
            workflow.logger.info("run closed before the redelivery reported back")
        if own_state:
            self._mark(state)
        return RedeliveryResult(
            destination=inp.destination,
            state=state,
            reason=reason,
            attempts=attempts,
            updated_at=status.updated_at,
        )

    @staticmethod
    def _mark(state: DeliveryState) -> None:
        workflow.upsert_search_attributes([sa.DELIVERY_STATE.value_set(state.value)])
