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

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from hosting.models import RunView
from workflows.run import AgentRunWorkflow

POLL_START_S = 0.03
POLL_MAX_S = 0.25


async def fetch_view(client: Client, run_id: str) -> RunView | None:
    """The run's view, or None while its workflow does not exist (yet, or any more)."""
    try:
        return await client.get_workflow_handle(run_id).query(AgentRunWorkflow.view)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


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
