"""CheckInWorkflow: one firing of a scheduled check-in (``POST /v1/schedules`` or the
agent's ``schedule_check_in`` tool), and the chat commands on a person's own check-ins.

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
    from activities.names import CHECKIN_WORKFLOW
    from activities.schedules import CheckInActivities, OwnCheckInActivities
    from hosting.ids import checkin_message_key
    from hosting.models import (
        CheckInFiring,
        CheckInInput,
        CheckInListing,
        CheckInQuery,
        CheckInRemoved,
        CheckInResult,
        CheckInSummary,
        Identity,
    )
    from workflows.commands import Command

# Set by the scheduler on every workflow it starts: the time this firing was due.
SCHEDULED_AT = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")

# ``workflow.patched`` id: before it, "/schedules" and "/unschedule ID" were chat text.
SCHEDULE_COMMANDS_PATCH = "schedule-commands"
NO_SUCH_CHECK_IN = "No such check-in. Send /schedules to see yours."


@workflow.defn(name=CHECKIN_WORKFLOW)
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


async def schedule_command(owner: Identity | None, command: Command) -> str:
    """``/schedules`` (the person's own check-ins, metadata only) or ``/unschedule ID`` (one
    of them, for good); someone else's id and an unknown one get the same answer. Called from
    the run workflow; the Temporal calls are activities."""
    if owner is None:
        return "Check-ins need a conversation, and this request has none."
    if command.name == "schedules":
        listing: CheckInListing = await workflow.execute_activity_method(
            OwnCheckInActivities.list_own_check_ins,
            CheckInQuery(owner=owner),
            start_to_close_timeout=timedelta(seconds=30),
        )
        return check_ins_text(listing)
    if not command.argument:
        return "Send /unschedule ID, with an id from /schedules."
    removed: CheckInRemoved = await workflow.execute_activity_method(
        OwnCheckInActivities.delete_own_check_in,
        CheckInQuery(owner=owner, public_id=command.argument),
        start_to_close_timeout=timedelta(seconds=30),
    )
    if not removed.deleted:
        return NO_SUCH_CHECK_IN
    return f"Deleted check-in {command.argument}: it will not fire again."


def check_ins_text(listing: CheckInListing) -> str:
    if not listing.check_ins:
        return "You have no check-ins."
    lines = [f"Your check-ins ({len(listing.check_ins)}):"]
    lines += [f"- {_line(item)}" for item in listing.check_ins]
    lines.append("Send /unschedule ID to delete one.")
    return "\n".join(lines)


def _line(item: CheckInSummary) -> str:
    spec = item.spec
    if "every_s" in spec:
        when = f"every {spec['every_s']} s"
    elif "cron" in spec:
        when = f"cron {spec['cron']} ({spec.get('timezone', 'UTC')})"
    elif "at" in spec:
        when = f"once at {spec['at']}"
    else:
        when = "on a schedule"
    parts = [item.id, when]
    if item.paused:
        parts.append("paused")
    elif item.next_at is not None:
        parts.append("next " + item.next_at.strftime("%Y-%m-%d %H:%M:%S UTC"))
    return ", ".join(parts)
