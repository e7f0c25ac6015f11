"""The tool loop of one agent turn, and the durable wait for a person's approval.

Each model call and each tool call is its own activity, so a worker that dies mid-turn
resumes after the last completed step: a recorded tool result is never asked for again, nor
is a recorded model answer. A call to a tool in ``[agent] approval_required`` starts a
:class:`ToolApprovalWorkflow` (``approval/{session}/{code}``) and waits for it: the id is the
durable map from the code a person types to the call that waits, and the wait costs no worker
slot.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TimeoutError,
    TimeoutType,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    from activities.agent import AgentActivities
    from activities.names import AGENT_REJECTED
    from activities.tools import ToolActivities
    from hosting import search_attributes as sa
    from hosting.ids import approval_workflow_id
    from hosting.models import (
        AgentReply,
        AgentRequest,
        AgentStep,
        ApprovalAnswer,
        ApprovalDecision,
        ApprovalOutcome,
        ApprovalStart,
        RunInput,
        ToolCall,
        ToolCallPhase,
        ToolCallState,
        ToolExchange,
        ToolInvocation,
        ToolLoopLimits,
        ToolResult,
    )

# ``workflow.patched`` id: a run without a session (a one-off Responses API call) asks for
# approval too, scoped by its own id; before it, such a call was refused.
APPROVAL_WITHOUT_SESSION_PATCH = "approval-without-session"

# ``workflow.patched`` id: cancelling a run that waits for approval cancels the run; before
# it, the cancelled wait counted as declined and the turn went on.
APPROVAL_CANCEL_PATCH = "approval-cancel"

# Unambiguous characters (no 0/O, 1/I/L): people copy these codes by hand.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
SHOWN_ARGUMENTS = 200  # characters of a call's arguments in the approval message
# A model step's progress batches count attempts above every earlier step's (and above the
# first call's, ``invoke_agent``), so the run starts the answer so far afresh per step.
STEP_ATTEMPTS = 1_000_000


class TurnExpired(Exception):
    """The turn used up ``agent.max_duration_s`` (time waiting for a person not counted)."""


class ApprovalHost(Protocol):
    """What the run does while a call waits: tell the person, and show it in its view."""

    async def awaiting_approval(self, tool: str, code: str, prompt: str) -> None: ...

    def approval_settled(self) -> None: ...

    def tool_progress(self, calls: list[ToolCallState]) -> None: ...


def approval_prompt(call: ToolCall, code: str) -> str:
    shown = (
        call.arguments
        if len(call.arguments) <= SHOWN_ARGUMENTS
        else (call.arguments[:SHOWN_ARGUMENTS] + "…")
    )
    return (
        f"The agent wants to run {call.name} with {shown}. Reply /approve {code} or /deny {code}."
    )


@dataclass(frozen=True)
class ApprovalVerdict:
    """What came of asking: approved, or why the call does not run; and how long it waited."""

    approved: bool
    why: str = ""
    waited: timedelta = timedelta(0)


class PersonApproval:
    """Asks the person who started the run (or one of their linked accounts) to approve one
    call: a :class:`ToolApprovalWorkflow` holds the code and the timer, the host tells the
    person and shows ``requires_action``. Shared by the tool loop and framework agents."""

    def __init__(self, inp: RunInput, host: ApprovalHost) -> None:
        self._inp = inp
        self._host = host

    async def ask(
        self,
        call: ToolCall,
        timeout_s: float,
        on_waiting: Callable[[str, str], None] | None = None,
    ) -> ApprovalVerdict:
        """``on_waiting(code, approval workflow id)`` runs once the code exists."""
        session_id = self._inp.session_id
        request = self._inp.submit.request
        if session_id is None and workflow.patched(APPROVAL_WITHOUT_SESSION_PATCH):
            session_id = self._inp.run_id  # answered through the API that started the run
        me = self._inp.caller(session_id)
        if session_id is None or me is None:
            return ApprovalVerdict(
                False, "it needs a person's approval, and this run has no conversation to ask in"
            )
        approvers = [me, *self._inp.linked]
        handle = None
        code = ""
        for _ in range(3):  # a code still waiting in this session is never reused
            code = "".join(workflow.random().choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            try:
                handle = await workflow.start_child_workflow(
                    ToolApprovalWorkflow.run,
                    ApprovalStart(
                        run_id=self._inp.run_id,
                        code=code,
                        tool=call.name,
                        approvers=approvers,
                        timeout_s=timeout_s,
                    ),
                    id=approval_workflow_id(session_id, code),
                    search_attributes=TypedSearchAttributes(
                        [
                            SearchAttributePair(sa.TENANT, request.tenant),
                            SearchAttributePair(sa.IDENTITY_HASH, self._inp.submit.identity_hash),
                        ]
                    ),
                )
                break
            except WorkflowAlreadyStartedError:
                continue
        if handle is None:
            return ApprovalVerdict(False, "no approval code could be issued")
        asked_at = workflow.now()
        if on_waiting is not None:
            on_waiting(code, approval_workflow_id(session_id, code))
        await self._host.awaiting_approval(call.name, code, approval_prompt(call, code))
        try:
            decision: ApprovalDecision = await handle
        except ChildWorkflowError as err:
            if isinstance(err.cause, CancelledError) and workflow.patched(APPROVAL_CANCEL_PATCH):
                raise asyncio.CancelledError() from None  # the run was cancelled while it waited
            decision = ApprovalDecision(approved=False)
        waited = workflow.now() - asked_at
        self._host.approval_settled()
        if decision.approved:
            return ApprovalVerdict(True, waited=waited)
        if decision.timed_out:
            return ApprovalVerdict(
                False, "nobody approved it in time, so it counts as declined", waited
            )
        return ApprovalVerdict(False, "the person declined it", waited)


class ToolLoop:
    """Runs tool calls and model steps until the model answers, bounded by ``max_steps``
    model calls and the run's maximum duration."""

    def __init__(self, inp: RunInput, request: AgentRequest, host: ApprovalHost) -> None:
        self._inp = inp
        self._request = request
        self._host = host
        self._calls: list[ToolCallState] = []
        opts = inp.submit.options
        self._deadline: datetime = workflow.now() + timedelta(seconds=opts.max_duration_s)

    async def finish(self, first: AgentReply) -> AgentReply:
        """``first`` is the turn's first model answer, which asked for tools."""
        limits = first.tool_limits or ToolLoopLimits()
        reply, steps = first, 1
        usage_in, usage_out = first.usage_input_tokens, first.usage_output_tokens
        exchanges: list[ToolExchange] = []
        while reply.tool_calls:
            if steps >= limits.max_steps:
                return AgentReply(
                    text=f"I stopped before finishing: this turn reached its limit of "
                    f"{limits.max_steps} model calls (agent.max_steps).",
                    usage_input_tokens=usage_in,
                    usage_output_tokens=usage_out,
                )
            results = [await self._run(call, limits) for call in reply.tool_calls]
            exchanges.append(
                ToolExchange(text=reply.text or None, calls=reply.tool_calls, results=results)
            )
            reply = await workflow.execute_activity_method(
                AgentActivities.model_step,
                AgentStep(
                    request=self._request,
                    exchanges=exchanges,
                    progress_attempt_base=steps * STEP_ATTEMPTS,
                ),
                start_to_close_timeout=timedelta(seconds=self._inp.submit.options.agent_timeout_s),
                schedule_to_close_timeout=self._remaining(),
                heartbeat_timeout=timedelta(seconds=self._inp.submit.options.agent_heartbeat_s),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=30),
                    non_retryable_error_types=[AGENT_REJECTED],
                ),
            )
            steps += 1
            usage_in = _add(usage_in, reply.usage_input_tokens)
            usage_out = _add(usage_out, reply.usage_output_tokens)
        return reply.model_copy(
            update={"usage_input_tokens": usage_in, "usage_output_tokens": usage_out}
        )

    async def _run(self, call: ToolCall, limits: ToolLoopLimits) -> ToolResult:
        if not call.known:
            # Answered here: nothing to run, so nothing to schedule.
            return ToolResult(
                call_id=call.call_id, content=f"error: no tool named {call.name!r}", ok=False
            )
        if call.requires_approval:
            refusal = await self._approval(call, limits)
            if refusal is not None:
                return refusal
            self._progress("calling")
        else:
            self._begin(call, "calling")
        result = await self._call(call)
        self._progress("completed" if result.ok else "failed")
        return result

    def _begin(self, call: ToolCall, phase: ToolCallPhase, **approval: str) -> None:
        """A call starts (or starts waiting): a new entry, since a model may reuse call ids
        across steps. Calls run one at a time, so the last entry is the call in hand."""
        self._calls.append(
            ToolCallState(
                call_id=call.call_id,
                name=call.name,
                arguments=call.arguments,
                phase=phase,
                **approval,
            )
        )
        self._host.tool_progress(list(self._calls))

    def _progress(self, phase: ToolCallPhase) -> None:
        self._calls[-1] = self._calls[-1].model_copy(update={"phase": phase})
        self._host.tool_progress(list(self._calls))

    async def _call(self, call: ToolCall) -> ToolResult:
        try:
            result: ToolResult = await workflow.execute_activity_method(
                ToolActivities.call_tool,
                ToolInvocation(
                    run_id=self._inp.run_id,
                    call=call,
                    idempotency_key=f"{self._inp.run_id}:{call.call_id}",
                    caller=self._inp.caller(),
                ),
                start_to_close_timeout=timedelta(seconds=call.timeout_s),
                schedule_to_close_timeout=self._remaining(),
                heartbeat_timeout=timedelta(seconds=self._inp.submit.options.agent_heartbeat_s),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=30),
                    maximum_attempts=call.max_attempts,
                ),
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, CancelledError):
                raise asyncio.CancelledError() from None
            if isinstance(cause, TimeoutError) and cause.type is TimeoutType.SCHEDULE_TO_CLOSE:
                raise TurnExpired() from None
            if isinstance(cause, TimeoutError):
                why = "the tool did not finish in time"
            elif isinstance(cause, ApplicationError):
                why = f"the tool failed: {cause.message}"
            else:
                why = "the tool failed"
            if call.max_attempts == 1:
                why += " (it is not retried, since it may not be safe to repeat)"
            return ToolResult(call_id=call.call_id, content=f"error: {why}", ok=False)
        return result

    async def _approval(self, call: ToolCall, limits: ToolLoopLimits) -> ToolResult | None:
        """Waits for the person; ``None`` when they approved, else the result the model gets."""
        verdict = await PersonApproval(self._inp, self._host).ask(
            call,
            limits.approval_timeout_s,
            on_waiting=lambda code, wid: self._begin(
                call, "waiting", approval_code=code, approval_workflow=wid
            ),
        )
        # Time spent waiting for a person does not count against the turn's duration.
        self._deadline += verdict.waited
        if verdict.approved:
            return None
        if self._calls and self._calls[-1].call_id == call.call_id:
            self._progress("declined")  # it waited (no entry if no code could be issued)
        return _refused(call, verdict.why)

    def _remaining(self) -> timedelta:
        left = self._deadline - workflow.now()
        if left < timedelta(seconds=1):
            raise TurnExpired()
        return left


def _refused(call: ToolCall, why: str) -> ToolResult:
    return ToolResult(
        call_id=call.call_id, content=f"refused: {call.name} did not run: {why}.", ok=False
    )


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


@workflow.defn
class ToolApprovalWorkflow:
    """One tool call waiting for a person, ``approval/{session}/{code}``: accepts one answer
    from the person who started the run (or an account linked to them) before its timer runs
    out; its result is the decision."""

    @workflow.init
    def __init__(self, start: ApprovalStart) -> None:
        self._start = start
        self._approved: bool | None = None
        self._closed = False

    @workflow.run
    async def run(self, start: ApprovalStart) -> ApprovalDecision:
        try:
            await workflow.wait_condition(
                lambda: self._approved is not None, timeout=timedelta(seconds=start.timeout_s)
            )
        except builtins.TimeoutError:
            self._closed = True
            await workflow.wait_condition(workflow.all_handlers_finished)
            if self._approved is None:
                return ApprovalDecision(approved=False, timed_out=True)
        return ApprovalDecision(approved=bool(self._approved))

    @workflow.update
    def answer(self, answer: ApprovalAnswer) -> ApprovalOutcome:
        self._approved = answer.approve
        self._closed = True
        return ApprovalOutcome(accepted=True)

    @answer.validator
    def _check(self, answer: ApprovalAnswer) -> None:
        # One refusal for everything: someone else's answer learns nothing about the code.
        allowed = any(a.same_account(answer.identity) for a in self._start.approvers)
        if self._closed or answer.code.strip().upper() != self._start.code or not allowed:
            raise ApplicationError("approval refused", non_retryable=True)
