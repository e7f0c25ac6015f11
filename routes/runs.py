"""Reading and cancelling runs from the client side: one view lookup, one queue-aware cancel.

Shared by ``/v1/runs``, ``/v1/responses``, the web chat routes and the operator CLI, so a run is
found and cancelled the same way whichever door the request came through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from channels.base import Channel
from hosting.ids import isolation_key, session_workflow_id
from hosting.models import RunView
from workflows.run import AgentRunWorkflow
from workflows.session import SessionWorkflow

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


async def pending_runs(client: Client, session_id: str) -> list[str] | None:
    """Run IDs waiting in a session's queue; None when the session cannot be read."""
    try:
        return await client.get_workflow_handle(session_id).query(SessionWorkflow.pending_runs)
    except RPCError:
        return None


async def wait_for_view(
    client: Client, run_id: str, until: Callable[[RunView | None], bool], timeout_s: float
) -> RunView | None:
    """Poll the run's view (queries cost no history) until ``until(view)`` or the timeout."""
    deadline = time.monotonic() + timeout_s
    delay = POLL_START_S
    view = await fetch_view(client, run_id)
    while not until(view) and time.monotonic() < deadline:
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, POLL_MAX_S)
        view = await fetch_view(client, run_id)
    return view


def session_of(tenant: str, channel: Channel, user_id: str, conversation_id: str) -> str:
    """The session a direct conversation of ``user_id`` on ``channel`` lives in, following the
    channel's configured scope (the same rule the adapter applies to inbound messages)."""
    scope = channel.settings.conversation_scope or "per_user"
    return session_workflow_id(tenant, isolation_key(scope, channel.name, user_id, conversation_id))


async def cancel_run(client: Client, run_id: str, session_id: str | None) -> bool:
    """Cancel a run, or a run still waiting in its session's queue. False if neither exists."""
    try:
        await client.get_workflow_handle(run_id).cancel()
        return True
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        if session_id is None:
            return False
    try:
        await client.get_workflow_handle(session_id).signal(SessionWorkflow.cancel_run, run_id)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
