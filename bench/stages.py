"""Where one webhook message's time goes, from the histories and the bench's own clock.

Every moment is wall clock on one machine (``time.time()`` on the bench's side, event
timestamps on the server's), so the two compare. Delivery is read at the receiver, not from
``push_reply`` activity events: a push may run as a local activity, which leaves only a
marker recorded when its workflow task completes.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from bench.harness import webhook_session_id

AGENT_ACTIVITY = "invoke_agent"
STAGES = ("ack", "session", "child_start", "run_first_task", "agent", "to_push", "total")


@dataclass(frozen=True)
class Sent:
    """One webhook message as the bench saw it: wall-clock send and HTTP 202 times."""

    msg_id: str
    user: str
    sent_at: float
    acked_at: float

    @property
    def run_id(self) -> str:
        return f"run/default/webhook/{self.msg_id}"

    @property
    def reply_key(self) -> str:
        return f"{self.run_id}:webhook:response"


def at(event: HistoryEvent) -> float:
    """An event's timestamp in epoch seconds."""
    return event.event_time.seconds + event.event_time.nanos / 1e9


def first(
    events: Sequence[HistoryEvent],
    kind: int,
    match: Callable[[HistoryEvent], bool] | None = None,
) -> HistoryEvent | None:
    return next((e for e in events if e.event_type == kind and (match is None or match(e))), None)


async def message_stages(client: Client, sent: Sent, seen_at: float | None) -> dict[str, float]:
    """Seconds per stage of one message; a stage whose events are missing is left out.

    ``to_push`` runs from the agent's completion to the receiver, or from the run's first
    workflow task when there is no ``invoke_agent`` activity event (a local agent call)."""
    out: dict[str, float] = {"ack": sent.acked_at - sent.sent_at}
    run = (await client.get_workflow_handle(sent.run_id).fetch_history()).events
    started = run[0]
    parent = started.workflow_execution_started_event_attributes.parent_workflow_execution
    session = (
        await client.get_workflow_handle(
            webhook_session_id(sent.user), run_id=parent.run_id or None
        ).fetch_history()
    ).events
    update_id = f"webhook:{sent.msg_id}"
    accepted = first(
        session,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
        lambda e: (
            e.workflow_execution_update_accepted_event_attributes.accepted_request.meta.update_id
            == update_id
        ),
    )
    initiated = first(
        session,
        EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
        lambda e: (
            e.start_child_workflow_execution_initiated_event_attributes.workflow_id == sent.run_id
        ),
    )
    if accepted and initiated:
        out["session"] = at(initiated) - at(accepted)
    task = first(run, EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)
    if initiated and task:
        out["child_start"] = at(task) - at(initiated)
    done = task and first(
        run,
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
        lambda e: e.workflow_task_completed_event_attributes.started_event_id == task.event_id,
    )
    if task and done:
        out["run_first_task"] = at(done) - at(task)
    scheduled = first(
        run,
        EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
        lambda e: e.activity_task_scheduled_event_attributes.activity_type.name == AGENT_ACTIVITY,
    )
    agent_done = scheduled and first(
        run,
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
        lambda e: (
            e.activity_task_completed_event_attributes.scheduled_event_id == scheduled.event_id
        ),
    )
    if scheduled and agent_done:
        out["agent"] = at(agent_done) - at(scheduled)
    if seen_at is not None:
        last = agent_done or done
        if last:
            out["to_push"] = seen_at - at(last)
        out["total"] = seen_at - sent.sent_at
        out["run_total"] = seen_at - at(started)
    return out


async def breakdown(
    client: Client, sampled: list[Sent], seen_at: dict[str, float]
) -> dict[str, float]:
    """Mean milliseconds per stage over ``sampled`` (each stage over the runs that have it)."""
    rows = [await message_stages(client, s, seen_at.get(s.reply_key)) for s in sampled]
    keys = [*STAGES, "run_total"]
    return {
        k: round(statistics.fmean(r[k] for r in rows if k in r) * 1000, 1)
        for k in keys
        if any(k in r for r in rows)
    }


def sample(items: list[Sent], n: int = 25) -> list[Sent]:
    """About ``n`` evenly spaced items."""
    return items[:: max(1, len(items) // n)]
