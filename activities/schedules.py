"""The check-in activity: one firing of a schedule enters the person's session.

The submission is the gateway's own intake (``routes.schedules.fire_check_in``: the recorded
home address, update-with-start ``SessionWorkflow.submit``), handed in by ``worker.py``:
activities may import neither routes nor workflows, and a check-in should enter a session
exactly as an inbound message does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio import activity

from hosting.models import CheckInFiring, CheckInResult

FireCheckIn = Callable[[CheckInFiring], Awaitable[CheckInResult]]


class CheckInActivities:
    def __init__(self, fire: FireCheckIn) -> None:
        self._fire = fire

    @activity.defn(name="submit_check_in")
    async def submit_check_in(self, firing: CheckInFiring) -> CheckInResult:
        """Idempotent: the message key is the firing's, so a retry is the same update."""
        return await self._fire(firing)
