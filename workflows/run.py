"""AgentRunWorkflow: one inbound message → agent → durable delivery of the reply.

ID ``run/{tenant}/{channel}/{message_key}``: a redelivered message can never start a second
run. While it runs it answers the ``view`` and ``dead_letter`` queries; once its replies are
out it closes, and its result is its final view (with what each dead letter is still owed),
read from the closed workflow for as long as the namespace retains it (``routes.watch``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError, FailureError, TimeoutError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.agent import AgentActivities
    from activities.linking import LinkActivities
    from activities.names import AGENT_PROGRESS_SIGNAL, AGENT_REJECTED
    from activities.tools import ToolActivities
    from hosting import search_attributes as sa
    from hosting.ids import delivery_key, link_workflow_id
    from hosting.models import (
        AgentProgress,
        AgentReply,
        AgentRequest,
        ApprovalAnswer,
        ApprovalOutcome,
        DestinationStatus,
        Identity,
        LinkCode,
        LinkConfirm,
        LinkOutcome,
        LinkStart,
        PushRequest,
        ReplyAddress,
        RunFinished,
        RunInput,
        RunStatus,
        RunView,
        ToolCallState,
        progress_note,
    )
    from hosting.targets import destination_key, destination_label, resolve
    from workflows import names
    from workflows.agent_loop import ToolLoop, TurnExpired
    from workflows.checkin import SCHEDULE_COMMANDS_PATCH, schedule_command
    from workflows.commands import Command, parse_command
    from workflows.framework_turn import FrameworkTurn
    from workflows.ledger import DeliveryLedger
    from workflows.link import LinkChallengeWorkflow


# ``workflow.patched`` id, shared with ProactiveMessageWorkflow and RedeliveryWorkflow: runs
# and messages recorded before it stayed open, sleeping, for the continuation window, and
# redeliveries carried no delivery state of their own; with it, they close when done and their
# result is what readers read.
RUNS_CLOSE_PATCH = "runs-close"
# ``workflow.patched`` id: a run that released its session early (it waited for a person) hands
# its user text and final answer to the session when it finishes, so later turns see them.
LATE_TURN_PATCH = "late-turn"


@dataclass
class _CommandEffects:
    """What a command asks of the session, reported in ``RunFinished``."""

    link_failed: bool = False
    unlink: Identity | None = None
    unlink_all: bool = False


@workflow.defn
class AgentRunWorkflow:
    @workflow.init
    def __init__(self, inp: RunInput) -> None:
        self._inp = inp
        self._status = RunStatus.QUEUED
        self._created_at: datetime = workflow.now()
        self._updated_at: datetime = self._created_at
        self._output: str | None = None
        self._error: str | None = None
        self._ledger = DeliveryLedger()
        self._command_effects = _CommandEffects()
        self._usage: tuple[int | None, int | None] = (None, None)
        self._partial = ""
        self._stream_ends: list[int] = []
        self._stream_attempt = 0
        self._is_command: bool | None = None
        self._pending_tool: str | None = None
        self._action_text: str | None = None
        self._tool_calls: list[ToolCallState] = []
        self._released = False  # the session was told early, while a tool waits for approval
        self._agent_state: str | None = None  # agent_framework: the state after this turn
        self._late_state = False  # a framework turn that ended after releasing its session

    @workflow.run
    async def run(self, inp: RunInput) -> RunView:
        if inp.cancelled:
            self._set_status(RunStatus.CANCELLED)
        else:
            try:
                await self._execute(inp)
            except asyncio.CancelledError:
                self._set_status(RunStatus.CANCELLED)
        await self._notify_session(inp)
        if not workflow.patched(RUNS_CLOSE_PATCH):
            # Recorded before runs closed: they stayed open, queryable, for the continuation
            # window (cancelling just ended the wait).
            with contextlib.suppress(asyncio.CancelledError):
                await workflow.sleep(timedelta(seconds=inp.submit.options.continuation_s))
        # Done: the final view (with what a dead letter is still owed) is the result, which
        # readers and replays take from the closed workflow, no worker needed.
        return self._ledger.final(self.view())

    async def _execute(self, inp: RunInput) -> None:
        opts = inp.submit.options
        request = inp.submit.request
        self._set_status(RunStatus.IN_PROGRESS)
        command = parse_command(request.text)
        if (
            command is not None
            and command.name in ("approve", "deny")
            and not workflow.patched("approval-commands")
        ):
            command = None  # recorded before these were commands: it was chat then
        if (
            command is not None
            and command.name in ("schedules", "unschedule")
            and not workflow.patched(SCHEDULE_COMMANDS_PATCH)
        ):
            command = None  # recorded before these were commands: it was chat then
        self._is_command = command is not None
        if command is not None:
            self._output = await self._command(inp, command)
            self._set_status(RunStatus.COMPLETED)
            if opts.deliver_to_origin:  # command answers never leave their conversation
                await self._deliver(request.reply_to, self._output)
            return
        agent_request = AgentRequest(
            run_id=inp.run_id,
            text=request.text,
            transcript=inp.transcript,
            channel=request.channel,
            identity_hash=inp.submit.identity_hash,
            progress_every_ms=opts.stream_every_ms,
            agent_state=inp.agent_state,
            # Typing and drafts only where the reply itself will land (push channels).
            progress_to=request.reply_to
            if opts.deliver_to_origin
            and opts.stream_every_ms > 0
            and opts.target.kind in ("originating", "all_linked")
            else None,
        )
        try:
            reply: AgentReply = await workflow.execute_activity_method(
                AgentActivities.invoke_agent,
                agent_request,
                start_to_close_timeout=timedelta(seconds=opts.agent_timeout_s),
                schedule_to_close_timeout=timedelta(seconds=opts.max_duration_s),
                heartbeat_timeout=timedelta(seconds=opts.agent_heartbeat_s),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=30),
                    non_retryable_error_types=[AGENT_REJECTED],
                ),
            )
            if reply.tool_calls:  # only with [agent] tools: the loop runs here, step by step
                reply = await ToolLoop(inp, agent_request, self).finish(reply)
            elif reply.approval_requests:  # an agent_framework agent paused for the person
                reply = await FrameworkTurn(inp, agent_request, self).finish(reply)
                self._late_state = self._released
            # Shown as it grew, where the reply lands first: by the step that answered.
            live = reply.live_message
        except TurnExpired:
            self._error = "the run exceeded its maximum duration"
            self._set_status(RunStatus.EXPIRED)
            return
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                # The run was cancelled while the agent ran; the activity honoured it.
                raise asyncio.CancelledError() from None
            if isinstance(err.cause, TimeoutError):
                self._error = "the run exceeded its maximum duration"
                self._set_status(RunStatus.EXPIRED)
            else:
                self._error = "the agent failed"
                self._set_status(RunStatus.FAILED)
            return
        self._output = reply.text
        self._agent_state = reply.agent_state
        self._usage = (reply.usage_input_tokens, reply.usage_output_tokens)
        self._set_status(RunStatus.COMPLETED)
        accounts = [*([inp.home] if inp.home else []), *inp.linked]
        origin = request.reply_to
        destinations = [
            address
            for address in resolve(
                opts.target, origin, accounts, inp.active_channel, opts.max_fanout
            )
            if opts.deliver_to_origin or destination_key(address) != destination_key(origin)
        ]
        # Every destination on its own schedule, all at once: a slow one delays no other.
        deliveries = asyncio.ensure_future(
            asyncio.gather(
                *(
                    self._deliver(
                        address,
                        reply.text,
                        echo=request.text
                        if opts.echo_input and destination_key(address) != destination_key(origin)
                        else None,
                        live=live if destination_key(address) == destination_key(origin) else None,
                    )
                    for address in destinations
                )
            )
        )
        try:
            await asyncio.shield(deliveries)
        except asyncio.CancelledError:
            # The reply exists: a cancel (an interrupting message, say) stops no delivery.
            await deliveries

    async def _deliver(
        self,
        address: ReplyAddress,
        text: str,
        echo: str | None = None,
        *,
        phase: Literal["response", "approval"] = "response",
        key_suffix: str = "",
        live: str | None = None,
    ) -> None:
        """Push one reply (after the user's input, for ``echo_input`` elsewhere) with the run's
        retry schedule; what cannot be delivered is kept as a dead letter for replay."""
        dest = destination_label(address)
        phases: list[tuple[Literal["echo", "response", "approval"], str]] = [(phase, text)]
        if echo is not None:
            phases.insert(0, ("echo", echo))
        policy = self._inp.submit.options.delivery
        pushes = [
            PushRequest(
                idempotency_key=delivery_key(self._inp.run_id, dest, phase + key_suffix),
                run_id=self._inp.run_id,
                phase=phase,
                address=address,
                text=body,
                created_at=self._created_at,
                max_age_s=policy.max_age_s,
                policy=policy,
                live_message=live if phase == "response" else None,
            )
            for phase, body in phases
        ]
        await self._ledger.deliver(dest, pushes)
        self._updated_at = workflow.now()

    @workflow.query
    def dead_letter(self, destination: str) -> list[PushRequest]:
        """The pushes still owed to one destination, for an operator's redelivery."""
        return self._ledger.owed_to(destination)

    @workflow.signal(name=AGENT_PROGRESS_SIGNAL)
    def agent_progress(self, batch: AgentProgress) -> None:
        """The answer so far, in batches; a retried agent attempt starts it again."""
        if self._output is not None or batch.attempt < self._stream_attempt:
            return
        if batch.attempt > self._stream_attempt:
            self._stream_attempt, self._partial, self._stream_ends = batch.attempt, "", []
        if batch.seq == len(self._stream_ends):  # in order, once
            self._partial += batch.text
            self._stream_ends.append(len(self._partial))

    @workflow.signal(name=names.REDELIVERED_SIGNAL)
    def redelivered(self, status: DestinationStatus) -> None:
        """A redelivery reports back: the view and search attribute follow."""
        self._updated_at = workflow.now()
        self._ledger.redelivered(status)

    async def awaiting_approval(self, tool: str, code: str, prompt: str) -> None:
        """A tool call waits for the person: the view and search attribute say so, the session
        goes on (the person's ``/approve`` is a message of that session, and must not queue
        behind this run), and the person is asked where they wrote."""
        self._pending_tool, self._action_text = tool, prompt
        self._updated_at = workflow.now()
        workflow.upsert_search_attributes([sa.RUN_STATUS.value_set("requires_action")])
        if not self._released:
            self._released = True
            await self._notify_session(self._inp, released=True)
        if self._inp.submit.options.deliver_to_origin:
            await self._deliver(
                self._inp.submit.request.reply_to, prompt, phase="approval", key_suffix=f"-{code}"
            )

    def tool_progress(self, calls: list[ToolCallState]) -> None:
        """A tool call started, waits, or ended: readers see it in the view (state only, no
        command, so recorded histories replay unchanged)."""
        self._tool_calls = calls
        self._updated_at = workflow.now()

    def approval_settled(self) -> None:
        self._pending_tool = self._action_text = None
        self._set_status(RunStatus.IN_PROGRESS)

    async def _approval_command(self, inp: RunInput, command: Command) -> str:
        """``/approve CODE`` or ``/deny CODE``: answers the call waiting in this session."""
        refused = "That approval code is not valid or has expired."
        me = inp.caller()
        if me is None or not command.argument:
            return refused
        outcome: ApprovalOutcome = await workflow.execute_activity_method(
            ToolActivities.answer_approval,
            ApprovalAnswer(code=command.argument, approve=command.name == "approve", identity=me),
            start_to_close_timeout=timedelta(seconds=30),
        )
        if not outcome.accepted:
            return refused
        if command.name == "approve":
            return "Approved: the agent goes on."
        return "Declined: the agent is told, and the tool does not run."

    async def _command(self, inp: RunInput, command: Command) -> str:
        """``/link``, ``/link CODE`` and ``/unlink``; the answer is the run's reply."""
        if command.name in ("approve", "deny"):
            return await self._approval_command(inp, command)
        if command.name in ("schedules", "unschedule"):
            return await schedule_command(inp.caller(), command)
        policy = inp.submit.options.linking
        request = inp.submit.request
        if not policy.enabled:
            return "Linking accounts is not enabled here."
        me = inp.caller()
        if me is None:
            return "Linking needs a conversation, and this request has none."
        linked_here = next((i for i in inp.linked if i.same_account(me)), None)
        if command.name == "unlink":
            if linked_here is not None:
                self._command_effects.unlink = linked_here
                return "This account is no longer linked to your other accounts."
            if inp.linked:
                self._command_effects.unlink_all = True
                return f"Unlinked {len(inp.linked)} other account(s) from this one."
            return "This account is not linked to any other."
        if command.argument is None:
            if policy.require_approval and not request.is_direct:
                return "For your security, send /link to me in a direct message."
            code: LinkCode = await workflow.execute_activity_method(
                LinkActivities.new_link_code,
                policy.code_ttl_s,
                start_to_close_timeout=timedelta(seconds=10),
            )
            await workflow.start_child_workflow(
                LinkChallengeWorkflow.run,
                LinkStart(tenant=request.tenant, initiator=me, ttl_s=policy.code_ttl_s),
                id=link_workflow_id(request.tenant, code.code_hash),
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
            if code.reply_text is not None:
                return code.reply_text
            minutes = max(1, round(policy.code_ttl_s / 60))  # histories from before the change
            return (
                f"Your link code is {code.code}. Within {minutes} minute(s), send "
                f"/link {code.code} from the other account you want to link to this one."
            )
        refused = "That code is not valid or has expired."
        if linked_here is not None:
            return "This account is already linked; send /unlink first."
        if inp.link_locked:
            return refused
        outcome: LinkOutcome = await workflow.execute_activity_method(
            LinkActivities.confirm_link,
            self._link_confirm(inp, me, command.argument),
            start_to_close_timeout=timedelta(seconds=30),
        )
        if not outcome.linked or outcome.initiator is None:
            self._command_effects.link_failed = True
            return refused
        return (
            f"Linked with your {outcome.initiator.channel} account: "
            "your conversations are shared from now on."
        )

    @staticmethod
    def _link_confirm(inp: RunInput, me: Identity, typed: str) -> LinkConfirm:
        """The gateway hashed the code; only submissions recorded before it did carry it."""
        tenant = inp.submit.request.tenant
        if inp.submit.link_code_hash is not None:
            return LinkConfirm(tenant=tenant, identity=me, code_hash=inp.submit.link_code_hash)
        return LinkConfirm(tenant=tenant, identity=me, code=typed)

    async def _notify_session(self, inp: RunInput, *, released: bool = False) -> None:
        """Tell the session this run is done with it: when it finished, or earlier, when it
        waits for a person (``released``: the session runs its next message meanwhile, and
        this turn's text and answer join the transcript when it finishes, as a late turn)."""
        if inp.session_id is None:
            return
        if self._released and not released:
            if self._output is not None and workflow.patched(LATE_TURN_PATCH):
                await self._late_turn(inp.session_id, inp)
            return
        # By name: the session module imports this one (sessions start runs), so a typed
        # reference back would be a circular import.
        handle = workflow.get_external_workflow_handle(inp.session_id)
        await handle.signal(
            names.RUN_FINISHED_SIGNAL,
            RunFinished(
                run_id=inp.run_id,
                status=self._status,
                user_text=inp.submit.request.text,
                reply_text=None if released else self._output,
                command=self._is_command
                if self._is_command is not None
                else parse_command(inp.submit.request.text) is not None,
                link_failed=self._command_effects.link_failed,
                unlink=self._command_effects.unlink,
                unlink_all=self._command_effects.unlink_all,
                agent_state=None if released else self._agent_state,
            ),
        )

    async def _late_turn(self, session_id: str, inp: RunInput) -> None:
        """The answer of a released turn joins the session's transcript, later than its turn
        would have: turns that ran meanwhile did not see it."""
        handle = workflow.get_external_workflow_handle(session_id)
        try:
            await handle.signal(
                names.LATE_TURN_SIGNAL,
                RunFinished(
                    run_id=inp.run_id,
                    status=self._status,
                    user_text=inp.submit.request.text,
                    reply_text=self._output,
                    # A framework turn's state, kept unless a later turn replaced the state.
                    agent_state=self._agent_state if self._late_state else None,
                    agent_state_generation=inp.agent_state_generation if self._late_state else None,
                ),
            )
        except FailureError:
            # The session has ended meanwhile (idle): there is no transcript left to join.
            workflow.logger.warning("late turn not recorded: the session is gone")

    def _set_status(self, status: RunStatus) -> None:
        self._status = status
        self._updated_at = workflow.now()
        workflow.upsert_search_attributes([sa.RUN_STATUS.value_set(status.value)])

    @workflow.query
    def view(self) -> RunView:
        return RunView(
            run_id=self._inp.run_id,
            status=self._status,
            channel=self._inp.submit.request.channel,
            created_at=self._created_at,
            updated_at=self._updated_at,
            input_text=self._inp.submit.request.text,
            output_text=self._output,
            error=self._error,
            deliveries=list(self._ledger.states.values()),
            labels=self._inp.submit.labels,
            usage_input_tokens=self._usage[0],
            usage_output_tokens=self._usage[1],
            partial_text=self._partial if self._output is None and self._partial else None,
            stream_ends=list(self._stream_ends),
            pending_tool=self._pending_tool,
            action_text=self._action_text,
            tool_calls=list(self._tool_calls),
            progress_note=None if self._status.finished else progress_note(self._tool_calls),
        )
