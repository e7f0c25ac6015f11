"""What one message costs Temporal: its footprint in every workflow history it touched.

A footprint is the difference between two snapshots of the namespace: every execution's
events and stored bytes (``history_size_bytes`` from describe), so a message is charged the
run it started and the share of the session (or any other workflow) it added to. The
billable-action rule follows Temporal Cloud's published definition, applied to history
events; what history cannot show (queries, heartbeats, rejected updates) is read from the dev
server's own ``action`` counter, scraped from its metrics endpoint.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionStatus

E = EventType

# History event → the counts reported per message.
KINDS = {
    E.EVENT_TYPE_WORKFLOW_TASK_STARTED: "workflow_tasks",
    E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activities",
    E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signals",
    E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "updates",
    E.EVENT_TYPE_TIMER_STARTED: "timers",
    E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: "child_workflows",
    E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED: "executions_started",
    E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: "search_attribute_upserts",
}

RULE = """\
Temporal Cloud's definition of an action, applied to each history event:
workflow started (client start, continue-as-new) 1; a child workflow 2 (start and execution,
counted on the parent's StartChildWorkflowExecutionInitiated; the child's own Started is not
counted again); signal-with-start 1 in total (a Signaled event right after Started, as
event 2, is taken as one); every other signal 1, counted where it is received
(WorkflowExecutionSignaled), never again on the sender's SignalExternal...Initiated; update
accepted 1 (update-with-start is that plus the start); activity started or retried 1 per
attempt (the attempt number on ActivityTaskStarted); timer started 1; search-attribute
upsert 1 per command (attributes given at start are free); markers (local activities, side
effects, version markers) 1 per workflow task that recorded any, as Cloud counts a workflow
task's RecordMarker commands as one action; workflow-execution-options updated 1. Not in
history, so taken from the server's own action counter: queries, heartbeats that reach the
server, rejected updates."""


def event_actions(events: list[HistoryEvent]) -> int:
    """Billable actions of these events (a whole history or the tail a message added)."""
    total = 0
    marker_tasks: set[int] = set()
    for i, ev in enumerate(events):
        t = ev.event_type
        if t == E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            a = ev.workflow_execution_started_event_attributes
            first_child_run = a.parent_workflow_execution.workflow_id and not (
                a.continued_execution_run_id
            )
            total += 0 if first_child_run else 1
        elif t == E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            total += 2
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            with_start = (
                i > 0
                and ev.event_id == 2
                and events[i - 1].event_type == (E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
            )
            total += 0 if with_start else 1
        elif t in (
            E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
            E.EVENT_TYPE_TIMER_STARTED,
            E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
            E.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED,
        ):
            total += 1
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            total += max(1, ev.activity_task_started_event_attributes.attempt)
        elif t == E.EVENT_TYPE_MARKER_RECORDED:
            marker_tasks.add(ev.marker_recorded_event_attributes.workflow_task_completed_event_id)
    return total + len(marker_tasks)


@dataclass
class Execution:
    events: int
    size_bytes: int
    closed: bool


@dataclass
class Footprint:
    """What the events added between two snapshots amount to."""

    counts: Counter[str] = field(default_factory=Counter)
    executions: int = 0

    def add(self, other: Footprint) -> None:
        self.counts.update(other.counts)
        self.executions += other.executions


class Ledger:
    """Snapshots of every execution in the namespace; the difference is one message's cost."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.known: dict[tuple[str, str], Execution] = {}

    async def snapshot(self) -> dict[tuple[str, str], Execution]:
        now: dict[tuple[str, str], Execution] = {}
        async for wf in self.client.list_workflows():
            key = (wf.id, wf.run_id)
            seen = self.known.get(key)
            if seen is not None and seen.closed:
                now[key] = seen
                continue
            d = await self.client.get_workflow_handle(wf.id, run_id=wf.run_id).describe()
            info = d.raw_description.workflow_execution_info
            now[key] = Execution(
                events=info.history_length,
                size_bytes=info.history_size_bytes,
                closed=d.status != WorkflowExecutionStatus.RUNNING,
            )
        return now

    async def settle(self) -> dict[tuple[str, str], Execution]:
        """A snapshot that two reads half a second apart agree on (the message is done)."""
        last = await self.snapshot()
        while True:
            await asyncio.sleep(0.5)
            now = await self.snapshot()
            if {k: v.events for k, v in now.items()} == {k: v.events for k, v in last.items()}:
                return now
            last = now

    async def footprint(self, before: dict[tuple[str, str], Execution]) -> Footprint:
        """Events, kinds, actions and bytes added since ``before``; advances the ledger."""
        after = await self.settle()
        fp = Footprint()
        for key, ex in after.items():
            old = before.get(key)
            skip = old.events if old else 0
            if ex.events == skip:
                continue
            fp.executions += 1
            history = await self.client.get_workflow_handle(key[0], run_id=key[1]).fetch_history()
            added = list(history.events)[skip:]
            grown = ex.size_bytes - (old.size_bytes if old else 0)
            prefix = re.split("[/-]", key[0], maxsplit=1)[0]
            fp.counts["history_events"] += len(added)
            fp.counts["history_bytes"] += grown
            fp.counts[f"history_bytes.{prefix}"] += grown
            fp.counts[f"history_events.{prefix}"] += len(added)
            fp.counts["actions_from_history"] += event_actions(added)
            for ev in added:
                kind = KINDS.get(ev.event_type)
                if kind:
                    fp.counts[kind] += 1
                if (
                    ev.event_type == E.EVENT_TYPE_MARKER_RECORDED
                    and ev.marker_recorded_event_attributes.marker_name == "core_local_activity"
                ):
                    fp.counts["local_activities"] += 1  # a push's first attempt, say
                if ev.event_type == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                    fp.counts["activity_attempts"] += max(
                        1, ev.activity_task_started_event_attributes.attempt
                    )
        self.known = after
        return fp


_ACTION_LINE = re.compile(r"^action\{([^}]*)\} ([0-9.e+]+)$")


async def server_actions(metrics_url: str, namespace: str = "default") -> Counter[str]:
    """The dev server's own ``action`` counter by ``action_type`` for one namespace."""
    out: Counter[str] = Counter()
    async with aiohttp.ClientSession() as http, http.get(metrics_url) as resp:
        text = await resp.text()
    for line in text.splitlines():
        m = _ACTION_LINE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("namespace") == namespace:
            out[labels.get("action_type", "?")] += int(float(m.group(2)))
    return out
