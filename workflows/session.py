"""SessionWorkflow: one long-lived entity per conversation (``session/{tenant}/{isolation_key}``).

It accepts messages through the ``submit`` update (update id = message key), runs one
``AgentRunWorkflow`` child at a time so replies keep their order, keeps a bounded transcript for
the agent and a bounded set of recent message keys, and continues-as-new when Temporal suggests
it, carrying all of that along.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from hosting import search_attributes as sa
    from hosting import trace_context
    from hosting.ids import InvalidKey, message_id, run_workflow_id
    from hosting.models import (
        QUEUE_FULL,
        Identity,
        LinkingPolicy,
        RunFinished,
        RunInput,
        RunStatus,
        SessionContact,
        SessionLinks,
        SessionState,
        SubmitInput,
        SubmitResult,
        Turn,
    )
    from workflows import names
    from workflows.run import AgentRunWorkflow

RECENT_KEYS = 512
IDLE_TIMEOUT = timedelta(days=30)
# Beyond its own limits, how long a session waits for a run before moving on.
RUN_GRACE = timedelta(minutes=10)
# One idle timer serves many turns (sessions recorded before it started one per turn).
IDLE_TIMER_PATCH = "one-idle-timer"


@workflow.defn
class SessionWorkflow:
    @workflow.init
    def __init__(self, state: SessionState) -> None:
        self._state = state
        self._queue: list[SubmitInput] = list(state.queue)
        self._recent: list[str] = list(state.recent_keys)
        self._recent_set: set[str] = set(self._recent)
        self._transcript: list[Turn] = list(state.transcript)
        self._current: str | None = None
        self._current_started = False  # its child workflow exists (it can be cancelled)
        self._finished: dict[str, RunFinished] = {}
        self._turn_limit = 20
        self._linked: list[Identity] = list(state.linked)
        self._alias_of: str | None = state.alias_of
        self._link_failures: list[datetime] = list(state.link_failures)
        self._home: Identity | None = state.home
        self._active_channel: str | None = state.active_channel
        self._agent_state: str | None = state.agent_state
        self._agent_state_generation = state.agent_state_generation
        self._last_busy = workflow.now()
        self._idle_timer: asyncio.Future[None] | None = None

    @workflow.run
    async def run(self, state: SessionState) -> None:
        while True:
            if workflow.patched(IDLE_TIMER_PATCH):
                if not await self._wait_for_work():
                    return  # idle for long: the session ends; the next message starts a new one
            else:
                try:
                    await workflow.wait_condition(lambda: bool(self._queue), timeout=IDLE_TIMEOUT)
                except TimeoutError:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    if not self._queue:
                        return
            item = self._queue.pop(0)
            # The run joins its message's trace, not the session's (headers only: same commands).
            with trace_context.under(item.traceparent):
                await self._run_one(item)
            self._last_busy = workflow.now()
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._snapshot())

    async def _wait_for_work(self) -> bool:
        """Waits for the next message; False once the session has been idle ``IDLE_TIMEOUT``.
        A timer (a billed action and two history events) is started only when none is running,
        and one that fires after messages came meanwhile is started again for the rest, so a
        busy conversation costs one timer per ``IDLE_TIMEOUT``, not one per message."""
        while not self._queue:
            if self._idle_timer is None or self._idle_timer.done():
                left = IDLE_TIMEOUT - (workflow.now() - self._last_busy)
                if left <= timedelta(0):
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    return bool(self._queue)
                self._idle_timer = asyncio.ensure_future(workflow.sleep(left))
            await workflow.wait_condition(self._work_or_idle_timer)
        return True

    def _work_or_idle_timer(self) -> bool:
        return bool(self._queue) or (self._idle_timer is not None and self._idle_timer.done())

    async def _run_one(self, item: SubmitInput) -> None:
        request = item.request
        run_id = run_workflow_id(request.tenant, request.channel, request.message_key)
        opts = item.options
        self._current = run_id
        self._current_started = False
        self._turn_limit = opts.transcript_turns
        self._active_channel = request.channel
        if request.channel == self._state.channel:
            self._home = Identity(
                channel=request.channel,
                user_id=request.user_id,
                address=request.reply_to,
                session_id=workflow.info().workflow_id,
            )
        try:
            handle = await workflow.start_child_workflow(
                AgentRunWorkflow.run,
                RunInput(
                    submit=item,
                    run_id=run_id,
                    session_id=workflow.info().workflow_id,
                    link_locked=self._link_locked(opts.linking),
                    linked=list(self._linked),
                    home=self._home,
                    active_channel=self._active_channel,
                    agent_state=self._agent_state,
                    agent_state_generation=self._agent_state_generation,
                    transcript=self._transcript[
                        len(self._transcript) - 2 * opts.transcript_turns :
                    ],
                ),
                id=run_id,
                parent_close_policy=ParentClosePolicy.ABANDON,
                # Runs close when done: a closed run's id is never started again either.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.TENANT, request.tenant),
                        SearchAttributePair(sa.CHANNEL, request.channel),
                        SearchAttributePair(sa.RUN_STATUS, RunStatus.QUEUED.value),
                        SearchAttributePair(sa.IDENTITY_HASH, item.identity_hash),
                    ]
                ),
            )
        except WorkflowAlreadyStartedError:
            # Its key fell out of the recent set, but the run exists: never run it twice.
            self._current = None
            return
        self._current_started = True
        limit = timedelta(seconds=opts.max_duration_s + opts.delivery.max_age_s) + RUN_GRACE
        try:
            await workflow.wait_condition(
                lambda: run_id in self._finished or handle.done(), timeout=limit
            )
        except TimeoutError:
            workflow.logger.warning("run did not report back in time", extra={"run_id": run_id})
        finished = self._finished.pop(run_id, None)
        if finished is not None:
            await self._apply_command_effects(finished, opts.linking)
            if not finished.command:
                self._remember_turn(finished)
        self._current = None

    async def _apply_command_effects(self, finished: RunFinished, policy: LinkingPolicy) -> None:
        now = workflow.now()
        if finished.link_failed:
            self._link_failures.append(now)
        window = timedelta(seconds=policy.code_ttl_s)
        self._link_failures = [t for t in self._link_failures if now - t < window]
        leaving = list(self._linked) if finished.unlink_all else []
        if finished.unlink is not None:
            leaving = [i for i in self._linked if i.same_account(finished.unlink)]
        for identity in leaving:
            self._linked = [i for i in self._linked if not i.same_account(identity)]
            await workflow.get_external_workflow_handle(identity.session_id).signal(
                SessionWorkflow.unalias
            )

    def _link_locked(self, policy: LinkingPolicy) -> bool:
        window = timedelta(seconds=policy.code_ttl_s)
        now = workflow.now()
        recent = [t for t in self._link_failures if now - t < window]
        return len(recent) >= policy.max_attempts

    def _remember_turn(self, finished: RunFinished, *, late: bool = False) -> None:
        """``late``: a released turn's text; its agent state (if any) is kept by ``late_turn``
        only if no later turn replaced it, so it is left alone here."""
        if finished.reply_text is None:
            return
        if not late:
            # The agent's own state follows the turn it came from (None: none, or dropped).
            self._keep_agent_state(finished.agent_state)
        self._transcript.append(Turn(role="user", text=finished.user_text))
        self._transcript.append(Turn(role="assistant", text=finished.reply_text))
        # Bounded: only the newest turns are kept and handed to the agent.
        del self._transcript[: max(0, len(self._transcript) - 2 * self._turn_limit)]

    def _keep_agent_state(self, state: str | None) -> None:
        if state is not None or self._agent_state is not None:
            self._agent_state = state
            self._agent_state_generation += 1

    @workflow.update
    async def submit(self, item: SubmitInput) -> SubmitResult:
        return await self._admit(_traced(item))

    @workflow.signal(name=names.SUBMIT_LATER_SIGNAL)
    async def submit_later(self, item: SubmitInput) -> None:
        """The same as ``submit``, sent by the gateway when no worker answered the update in
        time: a signal is durable without a worker, and the key set makes the pair one run."""
        try:
            self._validate_submit(item)
        except ApplicationError:
            workflow.logger.warning("refused a deferred submission")
            return
        result = await self._admit(_traced(item))
        if not result.accepted:
            # Nobody waits for a signal's answer: the refusal is at least in the worker's log.
            workflow.logger.warning("deferred submission not accepted: %s", result.reason)

    async def _admit(self, item: SubmitInput) -> SubmitResult:
        request = item.request
        run_id = run_workflow_id(request.tenant, request.channel, request.message_key)
        key = message_id(request.channel, request.message_key)
        if key in self._recent_set:
            return SubmitResult(run_id=run_id, duplicate=True)
        if self._alias_of is not None:
            # This account was linked into another session: that one runs everything.
            self._remember_key(key)
            await workflow.get_external_workflow_handle(self._alias_of).signal(
                SessionWorkflow.submit_later, item
            )
            return SubmitResult(run_id=run_id)
        busy = self._current is not None or bool(self._queue)
        if busy and item.options.multitask == "reject":
            return SubmitResult(run_id=run_id, accepted=False, reason="busy")
        if self._queue_full(item):  # a deferred (signalled) message; updates stop earlier
            return SubmitResult(run_id=run_id, accepted=False, reason=QUEUE_FULL)
        self._remember_key(key)
        if busy and item.options.multitask == "interrupt":
            await self._cancel_current()
            self._queue.insert(0, item)
            return SubmitResult(run_id=run_id, position=0)
        self._queue.append(item)
        ahead = len(self._queue) - 1 + int(self._current is not None)
        return SubmitResult(run_id=run_id, position=ahead)

    def _queue_full(self, item: SubmitInput) -> bool:
        if self._alias_of is not None:
            return False  # forwarded: the session it joined applies its own bound
        limits = item.options.queue
        queued_bytes = sum(len(i.request.text.encode()) for i in self._queue)
        return len(self._queue) >= limits.max_queued or (
            queued_bytes + len(item.request.text.encode()) > limits.max_queued_bytes
        )

    @submit.validator
    def _validate_submit(self, item: SubmitInput) -> None:
        request = item.request
        if request.tenant != self._state.tenant:
            raise ApplicationError("message belongs to another tenant", non_retryable=True)
        seen = message_id(request.channel, request.message_key) in self._recent_set
        if not seen and self._queue_full(item):
            # Refused in the validator, so the refusal is not recorded under this update id:
            # the same message is evaluated afresh when its sender retries.
            raise ApplicationError("the session's queue is full", type=QUEUE_FULL)
        try:
            run_workflow_id(request.tenant, request.channel, request.message_key)
        except InvalidKey as exc:
            raise ApplicationError(str(exc), non_retryable=True) from None

    @workflow.signal(name=names.RUN_FINISHED_SIGNAL)
    def run_finished(self, finished: RunFinished) -> None:
        if finished.run_id == self._current:
            self._finished[finished.run_id] = finished

    @workflow.signal(name=names.LATE_TURN_SIGNAL)
    def late_turn(self, finished: RunFinished) -> None:
        """A turn that released the session early (it waited for a person) has finished: its
        text and answer join the transcript now, bounded as every turn."""
        if not finished.command:
            self._remember_turn(finished, late=True)
        # A framework turn's state follows only if no later turn replaced the state meanwhile
        # (the later turn's state wins).
        if finished.agent_state_generation == self._agent_state_generation:
            self._keep_agent_state(finished.agent_state)

    async def _cancel_current(self) -> None:
        """Cancel the running run once its workflow exists (it may still be starting)."""
        run_id = self._current
        if run_id is None:
            return
        await workflow.wait_condition(lambda: self._current != run_id or self._current_started)
        if self._current == run_id:
            await workflow.get_external_workflow_handle(run_id).cancel()

    @workflow.signal(name=names.CANCEL_RUN_SIGNAL)
    async def cancel_run(self, run_id: str) -> None:
        """Cancel the running run, or take a waiting one out of the queue.

        A waiting run still becomes a run, at once and already cancelled, so whoever holds
        its continuation token sees ``cancelled`` rather than nothing."""
        if run_id == self._current:
            await self._cancel_current()
            return
        for item in list(self._queue):
            req = item.request
            if run_workflow_id(req.tenant, req.channel, req.message_key) == run_id:
                self._queue.remove(item)
                with trace_context.under(item.traceparent):
                    await workflow.start_child_workflow(
                        AgentRunWorkflow.run,
                        RunInput(submit=item, run_id=run_id, session_id=None, cancelled=True),
                        id=run_id,
                        parent_close_policy=ParentClosePolicy.ABANDON,
                    )
                return

    @workflow.signal(name=names.LINK_IDENTITY_SIGNAL)
    def link_identity(self, identity: Identity) -> None:
        self._linked = [i for i in self._linked if not i.same_account(identity)] + [identity]

    @workflow.signal(name=names.ALIAS_TO_SIGNAL)
    async def alias_to(self, primary_session_id: str) -> None:
        self._alias_of = primary_session_id
        waiting, self._queue = self._queue, []
        for item in waiting:  # whatever waited here runs there now, in order
            await workflow.get_external_workflow_handle(primary_session_id).signal(
                SessionWorkflow.submit_later, item
            )

    @workflow.signal(name=names.UNALIAS_SIGNAL)
    def unalias(self) -> None:
        self._alias_of = None

    @workflow.signal(name=names.REVOKE_LINKS_SIGNAL)
    async def revoke_links(self) -> None:
        """Operator revoke: this session leaves its links, in both directions."""
        for identity in self._linked:
            await workflow.get_external_workflow_handle(identity.session_id).signal(
                SessionWorkflow.unalias
            )
        self._linked = []
        if self._alias_of is not None and self._home is not None:
            await workflow.get_external_workflow_handle(self._alias_of).signal(
                SessionWorkflow.drop_account, self._home
            )
        self._alias_of = None

    @workflow.signal(name=names.DROP_ACCOUNT_SIGNAL)
    def drop_account(self, identity: Identity) -> None:
        self._linked = [i for i in self._linked if not i.same_account(identity)]

    @workflow.query
    def links(self) -> SessionLinks:
        return SessionLinks(alias_of=self._alias_of, linked=list(self._linked))

    @workflow.query
    def contact(self) -> SessionContact:
        """For proactive messages: where to reach this session's person."""
        return SessionContact(
            alias_of=self._alias_of,
            linked=list(self._linked),
            home=self._home,
            active_channel=self._active_channel,
        )

    @workflow.query
    def pending_runs(self) -> list[str]:
        """Run IDs accepted but not started yet (their workflows do not exist so far),
        including the one whose start is on its way: between leaving the queue and its child
        workflow existing, a run must not look unknown to a reader."""
        starting = [self._current] if self._current and not self._current_started else []
        return starting + [
            run_workflow_id(i.request.tenant, i.request.channel, i.request.message_key)
            for i in self._queue
        ]

    @workflow.query
    def pending(self) -> int:
        """How many messages wait behind the running one (metadata only)."""
        return len(self._queue) + int(self._current is not None)

    def _remember_key(self, key: str) -> None:
        self._recent.append(key)
        self._recent_set.add(key)
        while len(self._recent) > RECENT_KEYS:
            self._recent_set.discard(self._recent.pop(0))

    def _snapshot(self) -> SessionState:
        return self._state.model_copy(
            update={
                "recent_keys": list(self._recent),
                "transcript": list(self._transcript),
                "queue": list(self._queue),
                "linked": list(self._linked),
                "alias_of": self._alias_of,
                "link_failures": list(self._link_failures),
                "home": self._home,
                "active_channel": self._active_channel,
                "agent_state": self._agent_state,
                "agent_state_generation": self._agent_state_generation,
            }
        )


def _traced(item: SubmitInput) -> SubmitInput:
    """The submission with the trace it arrived in, unless it already has one (a forwarded
    submission keeps its first): its run is then part of its own message's trace."""
    arrived = trace_context.arrived_traceparent()
    if item.traceparent is not None or arrived is None:
        return item
    return item.model_copy(update={"traceparent": arrived})
