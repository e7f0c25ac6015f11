"""LinkChallengeWorkflow: one ``/link`` code, first account to second (``link/{tenant}/{hash}``).

The code itself never appears in the ID or in search attributes: the workflow is found by a
keyed hash of it. It accepts one confirmation from a different account before its timer runs
out, then tells both sessions: the initiator's session takes the second account in, and the
second account's session becomes an alias that forwards to it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from hosting.models import Identity, LinkConfirm, LinkOutcome, LinkStart
    from workflows import names


@workflow.defn
class LinkChallengeWorkflow:
    @workflow.init
    def __init__(self, start: LinkStart) -> None:
        self._start = start
        self._confirmed: Identity | None = None
        self._closed = False

    @workflow.run
    async def run(self, start: LinkStart) -> str:
        try:
            await workflow.wait_condition(
                lambda: self._confirmed is not None, timeout=timedelta(seconds=start.ttl_s)
            )
        except TimeoutError:
            self._closed = True
            await workflow.wait_condition(workflow.all_handlers_finished)
            if self._confirmed is None:
                return "expired"
        second = self._confirmed
        assert second is not None
        initiator = start.initiator
        # By name: sessions start runs, which start this workflow, so a typed reference to the
        # session class would be a circular import.
        first = workflow.get_external_workflow_handle(initiator.session_id)
        await first.signal(names.LINK_IDENTITY_SIGNAL, second)
        joining = workflow.get_external_workflow_handle(second.session_id)
        await joining.signal(names.ALIAS_TO_SIGNAL, initiator.session_id)
        return "linked"

    @workflow.update
    def confirm(self, confirm: LinkConfirm) -> LinkOutcome:
        self._confirmed = confirm.identity
        self._closed = True
        return LinkOutcome(linked=True, initiator=self._start.initiator)

    @confirm.validator
    def _check(self, confirm: LinkConfirm) -> None:
        # One answer for every refusal: a caller learns nothing about why.
        if (
            self._closed
            or confirm.tenant != self._start.tenant
            or confirm.identity.same_account(self._start.initiator)
        ):
            raise ApplicationError("link refused", non_retryable=True)
