"""One poller per run, shared by everyone waiting on it.

Web pages follow their runs over event streams and API callers long-poll; without sharing,
each of them would query Temporal every quarter second. A :class:`ViewWatchers` keeps one
polling task per watched run (backing off while nothing changes) and wakes every waiter
when the view changes; the task ends when its last waiter leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowQueryRejectedError,
)
from temporalio.common import QueryRejectCondition
from temporalio.service import RPCError, RPCStatusCode

from hosting.ids import redelivery_workflow_id
from hosting.models import DeliveryState, DestinationStatus, RedeliveryResult, RunView
from workflows.run import AgentRunWorkflow

POLL_START_S = 0.03
POLL_MAX_S = 0.25


async def fetch_view(client: Client, run_id: str) -> RunView | None:
    """The view of a run (or proactive message), or None while its workflow does not exist
    (yet, or any more: the namespace's retention is over). Everyone reads runs through here.

    One RPC while it runs: the ``view`` query, rejected by the server (no worker asked) once
    the workflow has closed. A closed one is read from its result, one more RPC, with the
    latest replay of each dead-lettered destination laid over it (:func:`closed_view`)."""
    view, _ = await read_view(client, run_id)
    return view


async def read_view(client: Client, run_id: str) -> tuple[RunView | None, bool]:
    """:func:`fetch_view`, and whether the workflow has closed."""
    try:
        view: RunView = await client.get_workflow_handle(run_id).query(
            AgentRunWorkflow.view, reject_condition=QueryRejectCondition.NOT_OPEN
        )
    except WorkflowQueryRejectedError:
        return await closed_view(client, run_id), True
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None, False
        raise
    return view, False


async def closed_view(client: Client, run_id: str, *, owed: bool = False) -> RunView | None:
    """A closed run's final view: its result (no worker, no replay), with the latest
    redelivery outcomes laid over its dead letters. ``owed`` keeps what a dead-lettered
    destination is still owed (its content: for replays, never for readers). A run that closed
    without a result (terminated, cancelled mid-step) is asked by query: a worker replays it."""
    handle = client.get_workflow_handle(run_id, result_type=RunView)
    try:
        try:
            final = await handle.result()
        except WorkflowFailureError:
            final = await handle.query(AgentRunWorkflow.view)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    final = await with_redeliveries(client, final)
    return final if owed or not final.owed else final.model_copy(update={"owed": {}})


async def with_redeliveries(client: Client, view: RunView) -> RunView:
    """A closed run cannot be told how a replay went: each of its dead-lettered destinations
    shows the latest ``redelivery/{run_id}/{destination}`` instead (``pending`` while it runs,
    then its outcome). One describe per dead letter, and one result per finished replay."""
    dead = [d for d in view.deliveries if d.state is DeliveryState.DEAD_LETTER]
    if not dead:
        return view
    outcomes = await asyncio.gather(*(redelivery_status(client, view.run_id, d) for d in dead))
    replaced = {o.destination: o for o in outcomes if o is not None}
    if not replaced:
        return view
    healed = {d for d, o in replaced.items() if o.state is DeliveryState.DELIVERED}
    times = [o.updated_at for o in replaced.values() if o.updated_at is not None]
    return view.model_copy(
        update={
            "deliveries": [replaced.get(d.destination, d) for d in view.deliveries],
            "updated_at": max([view.updated_at, *times]),
            "owed": {d: p for d, p in view.owed.items() if d not in healed},
        }
    )


async def redelivery_status(
    client: Client, run_id: str, dead: DestinationStatus
) -> DestinationStatus | None:
    """Where the latest replay of one dead letter stands; None: never replayed, or a replay
    that found nothing owed or could not finish (the dead letter stands)."""
    handle = client.get_workflow_handle(
        redelivery_workflow_id(run_id, dead.destination), result_type=RedeliveryResult
    )
    try:
        desc = await handle.describe()
        if desc.status == WorkflowExecutionStatus.RUNNING:
            return dead.model_copy(update={"state": DeliveryState.PENDING})
        if desc.status != WorkflowExecutionStatus.COMPLETED:
            return None
        # This execution's result, even if another replay has started since the describe.
        result = await client.get_workflow_handle(
            handle.id, run_id=desc.run_id, result_type=RedeliveryResult
        ).result(follow_runs=False)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if result.state not in (DeliveryState.DELIVERED, DeliveryState.DEAD_LETTER):
        return None
    return DestinationStatus(
        destination=dead.destination,
        state=result.state,
        attempts=dead.attempts if result.attempts is None else result.attempts,
        reason=result.reason,
        updated_at=result.updated_at or desc.close_time,
    )


class Watch:
    """The latest view of one run, and a version that grows on every change."""

    def __init__(self, client: Client, run_id: str) -> None:
        self.version = 0  # 0: not read yet
        self._view: RunView | None = None
        self._error: BaseException | None = None
        self._changed = asyncio.Condition()
        self.waiters = 0
        self._task = asyncio.create_task(self._poll(client, run_id))

    @property
    def view(self) -> RunView | None:
        """The latest view (None while the run does not exist); raises what the last read
        raised, so a Temporal outage reaches waiters as it would without sharing."""
        if self._error is not None:
            raise self._error
        return self._view

    async def _poll(self, client: Client, run_id: str) -> None:
        delay = POLL_START_S
        while True:
            try:
                view, error = await fetch_view(client, run_id), None
            except Exception as exc:  # an outage: waiters get it, polling goes on
                view, error = self._view, exc
            if self.version == 0 or view != self._view or type(error) is not type(self._error):
                self._view, self._error = view, error
                self.version += 1
                delay = POLL_START_S
                async with self._changed:
                    self._changed.notify_all()
            else:
                delay = min(delay * 1.5, POLL_MAX_S)
            await asyncio.sleep(delay)

    async def newer_than(self, version: int, timeout_s: float) -> bool:
        """Wait until the version passes ``version``; False on timeout."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.version > version), max(0.0, timeout_s)
                )
        return self.version > version

    def stop(self) -> None:
        self._task.cancel()


class ViewWatchers:
    def __init__(self) -> None:
        self._watches: dict[str, Watch] = {}

    @asynccontextmanager
    async def follow(self, client: Client, run_id: str) -> AsyncIterator[Watch]:
        watch = self._watches.get(run_id)
        if watch is None:
            watch = self._watches[run_id] = Watch(client, run_id)
        watch.waiters += 1
        try:
            yield watch
        finally:
            watch.waiters -= 1
            if watch.waiters == 0:
                watch.stop()
                del self._watches[run_id]

    async def wait_for(
        self,
        client: Client,
        run_id: str,
        until: Callable[[RunView | None], bool],
        timeout_s: float,
    ) -> RunView | None:
        """The first view that satisfies ``until``, or the latest one at the timeout."""
        deadline = time.monotonic() + timeout_s
        async with self.follow(client, run_id) as watch:
            seen = 0
            while True:
                await watch.newer_than(seen, deadline - time.monotonic())
                seen = watch.version
                view = watch.view
                if until(view) or time.monotonic() >= deadline:
                    return view

    @property
    def watched(self) -> int:
        """Runs with a poller right now (for tests and metrics)."""
        return len(self._watches)
