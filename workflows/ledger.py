"""Where each destination of one run (or proactive message) stands, and what it is still owed.

Shared by :class:`~workflows.run.AgentRunWorkflow` and
:class:`~workflows.message.ProactiveMessageWorkflow`: delivery states for the view, the
``SwitchboardDeliveryState`` search attribute, and the dead letters an operator can replay.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from hosting import search_attributes as sa
    from hosting.models import DeliveryState, DestinationStatus, PushRequest, RunView
    from workflows.delivery import PushFailed, push_with_retries

# The delivery state is upserted only when it changes (each upsert is a billed action;
# workflows recorded before upserted on every step).
STATE_ON_CHANGE_PATCH = "delivery-state-on-change"


class DeliveryLedger:
    def __init__(self) -> None:
        self.states: dict[str, DestinationStatus] = {}
        self.owed: dict[str, list[PushRequest]] = {}
        self._shown: str | None = None  # the SwitchboardDeliveryState last upserted

    async def deliver(self, dest: str, pushes: list[PushRequest]) -> None:
        """Push in order with each push's retry schedule; what cannot be delivered is kept
        (from the first undelivered push on) for an operator's replay."""
        self._mark(dest, DeliveryState.PENDING)
        self._show(DeliveryState.PENDING.value)
        attempts = 0
        for i, push in enumerate(pushes):
            try:
                attempts = (await push_with_retries(push)).attempts
            except PushFailed as failed:
                self.owed[dest] = pushes[i:]
                self._mark(
                    dest, DeliveryState.DEAD_LETTER, attempts=failed.attempts, reason=failed.reason
                )
                workflow.logger.warning(
                    "delivery dead-lettered", extra={"destination": dest, "reason": failed.reason}
                )
                break
        else:
            self._mark(dest, DeliveryState.DELIVERED, attempts=attempts)
        self._show(self.summary())

    def redelivered(self, status: DestinationStatus) -> None:
        """A redelivery reports back: the view and search attribute follow."""
        self.states[status.destination] = status
        if status.state is DeliveryState.DELIVERED:
            self.owed.pop(status.destination, None)
        self._show(self.summary())

    def owed_to(self, dest: str) -> list[PushRequest]:
        return list(self.owed.get(dest, []))

    def final(self, view: RunView) -> RunView:
        """The view as a closing workflow's result: with what every dead-lettered destination
        is still owed, which an operator's replay reads once the workflow has closed."""
        return view.model_copy(update={"owed": {d: list(p) for d, p in self.owed.items() if p}})

    def summary(self) -> str:
        states = {d.state for d in self.states.values()}
        for state in (DeliveryState.DEAD_LETTER, DeliveryState.PENDING):
            if state in states:
                return state.value
        return DeliveryState.DELIVERED.value if states else DeliveryState.SKIPPED.value

    def _mark(
        self, dest: str, state: DeliveryState, *, attempts: int = 0, reason: str | None = None
    ) -> None:
        self.states[dest] = DestinationStatus(
            destination=dest,
            state=state,
            attempts=attempts,
            reason=reason,
            updated_at=workflow.now(),
        )

    def _show(self, state: str) -> None:
        """Concurrent destinations of one run share one upsert for ``pending`` and one for
        their outcome, instead of two each. The patch is asked only when an upsert would
        repeat the value, so a single destination records no marker (a patch costs a
        marker and a ``TemporalChangeVersion`` upsert, two billed actions, per workflow)."""
        if state == self._shown and workflow.patched(STATE_ON_CHANGE_PATCH):
            return
        self._shown = state
        workflow.upsert_search_attributes([sa.DELIVERY_STATE.value_set(state)])
