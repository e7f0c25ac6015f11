"""From a verified ChannelRequest to a durable submission into its session.

Shared by every inbound route: it derives the isolation key and the per-run options from
configuration (workflows read no configuration) and issues one update-with-start.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from channels.base import Channel
from hosting import search_attributes as sa
from hosting.ids import (
    identity_hash,
    isolation_key,
    link_code_hash,
    message_id,
    run_workflow_id,
    session_workflow_id,
)
from hosting.models import (
    ChannelRequest,
    DeliveryPolicy,
    LinkingPolicy,
    QueueLimits,
    RunInput,
    RunOptions,
    RunStatus,
    SessionState,
    SubmitInput,
    SubmitResult,
    Turn,
)
from hosting.settings import ChannelSettings, Settings
from hosting.targets import parse_target
from workflows.commands import parse_command
from workflows.names import SUBMIT_LATER_SIGNAL
from workflows.run import AgentRunWorkflow
from workflows.session import SessionWorkflow


def run_options(settings: Settings, channel: ChannelSettings) -> RunOptions:
    """The per-run options: each policy model is the payload half of its settings section."""
    return RunOptions(
        delivery=DeliveryPolicy.model_validate(
            settings.delivery.model_dump(include=set(DeliveryPolicy.model_fields))
        ),
        echo_input=channel.echo_input,
        agent_timeout_s=settings.agent.timeout_s,
        agent_heartbeat_s=settings.agent.heartbeat_timeout_s,
        max_duration_s=settings.agent.max_duration_s,
        continuation_s=settings.runs.continuation_s,
        transcript_turns=settings.agent.transcript_turns,
        multitask=channel.multitask,
        target=parse_target(channel.response_target),
        max_fanout=settings.delivery.max_fanout,
        stream_every_ms=settings.agent.stream_every_ms,
        linking=LinkingPolicy.model_validate(settings.linking.model_dump()),
        queue=QueueLimits.model_validate(settings.sessions.model_dump()),
    )


def build_submission(
    settings: Settings,
    channel: Channel,
    request: ChannelRequest,
    *,
    caller: str | None = None,
    deliver_to_origin: bool = True,
) -> SubmitInput:
    """Raises :class:`hosting.ids.InvalidKey` when a component cannot go into an ID."""
    key = isolation_key(
        channel.scope(request),
        request.channel,
        request.user_id,
        request.conversation_id,
        identity_key=settings.security.identity_key_bytes(),
    )
    session_workflow_id(request.tenant, key)
    options = run_options(settings, channel.settings).model_copy(
        update={"deliver_to_origin": deliver_to_origin}
    )
    signing_key = settings.security.signing_key_bytes()
    command = parse_command(request.text)
    link_code = command.argument if command is not None and command.name == "link" else None
    return SubmitInput(
        request=request,
        isolation_key=key,
        identity_hash=identity_hash(settings.security.identity_key_bytes(), key),
        options=options,
        caller=caller,
        link_code_hash=link_code_hash(signing_key, link_code) if link_code else None,
    )


async def submit(
    client: Client,
    settings: Settings,
    inp: SubmitInput,
    *,
    timeout_s: float,
    seed: list[Turn] | None = None,
) -> SubmitResult:
    """Update-with-start ``SessionWorkflow.submit``; the update id is the message key."""
    req = inp.request
    state = SessionState(
        tenant=req.tenant,
        isolation_key=inp.isolation_key,
        identity_hash=inp.identity_hash,
        channel=req.channel,
        transcript=seed or [],  # used only when this call creates the session
    )
    session_id = session_workflow_id(req.tenant, inp.isolation_key)
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(sa.TENANT, req.tenant),
            SearchAttributePair(sa.CHANNEL, req.channel),
            SearchAttributePair(sa.IDENTITY_HASH, inp.identity_hash),
        ]
    )
    # The session is started (or found) the same way by the update and the signal path.
    session: dict[str, Any] = {
        "id": session_id,
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "task_queue": settings.temporal.task_queue,
        "search_attributes": attributes,
    }
    start = WithStartWorkflowOperation(SessionWorkflow.run, state, **session)
    # The update answers in milliseconds when a worker is up (and says "duplicate" or "busy").
    # It needs a worker, though; when none answers in time the message is recorded by
    # signal-with-start instead, which the server persists on its own. With signal intake the
    # gateway never waits for a worker at all.
    remaining = timeout_s
    if settings.gateway.intake == "update":
        update_timeout = timeout_s * 0.6
        try:
            return await asyncio.wait_for(
                client.execute_update_with_start_workflow(
                    SessionWorkflow.submit,
                    inp,
                    start_workflow_operation=start,
                    id=message_id(req.channel, req.message_key),
                    rpc_timeout=timedelta(seconds=update_timeout),
                ),
                update_timeout,
            )
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            remaining = timeout_s - update_timeout
    await asyncio.wait_for(
        client.start_workflow(
            SessionWorkflow.run,
            state,
            **session,
            start_signal=SUBMIT_LATER_SIGNAL,
            start_signal_args=[inp],
            rpc_timeout=timedelta(seconds=remaining),
        ),
        remaining,
    )
    return SubmitResult(
        run_id=run_workflow_id(req.tenant, req.channel, req.message_key), deferred=True
    )


async def start_run(
    client: Client, settings: Settings, inp: SubmitInput, *, transcript: list[Turn]
) -> str:
    """A one-off run with no conversation: one new execution, no session (e.g. an API call).

    Starting an existing ID returns that run, so a retried request is the same run, also
    once it has closed (runs close when done; the id is never reused while retained)."""
    req = inp.request
    run_id = run_workflow_id(req.tenant, req.channel, req.message_key)
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            AgentRunWorkflow.run,
            RunInput(submit=inp, run_id=run_id, session_id=None, transcript=transcript),
            id=run_id,
            task_queue=settings.temporal.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.TENANT, req.tenant),
                    SearchAttributePair(sa.CHANNEL, req.channel),
                    SearchAttributePair(sa.RUN_STATUS, RunStatus.QUEUED.value),
                    SearchAttributePair(sa.IDENTITY_HASH, inp.identity_hash),
                ]
            ),
        )
    return run_id
