"""CheckInWorkflow: one firing of a scheduled check-in (``POST /v1/schedules``).

A Temporal Schedule ``schedule/{tenant}/{id}`` starts it (``checkin/{tenant}/{id}-{time}``);
it submits the prompt into the person's session as a message from the system, so the agent
answers it with the conversation in view and the reply goes out like any other. The message
key comes from the schedule id and the scheduled time, so a retried firing is one run.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from activities.schedules import CheckInActivities
    from hosting.ids import checkin_message_key
    from hosting.models import CheckInFiring, CheckInInput, CheckInResult

# Set by the scheduler on every workflow it starts: the time this firing was due.
SCHEDULED_AT = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


@workflow.defn
class CheckInWorkflow:
    @workflow.run
    async def run(self, inp: CheckInInput) -> CheckInResult:
        fired_at = workflow.info().typed_search_attributes.get(SCHEDULED_AT)
        if fired_at is None:  # started by hand, not by the schedule
            fired_at = workflow.info().start_time
        firing = CheckInFiring(
            check_in=inp,
            message_key=checkin_message_key(inp.public_id, fired_at),
            fired_at=fired_at,
        )
        result: CheckInResult = await workflow.execute_activity_method(
            CheckInActivities.submit_check_in,
            firing,
            start_to_close_timeout=timedelta(seconds=30),
            # Never late: a firing that cannot be submitted within the reply age limit is
            # dropped (the workflow fails, and the schedule's last outcome shows it).
            schedule_to_close_timeout=timedelta(seconds=inp.max_age_s),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
            ),
        )
        workflow.logger.info(
            "check-in fired", extra={"schedule": inp.public_id, "outcome": result.outcome}
        )
        return result
