"""The approvals of an Agent Framework turn: the agent's own tool loop runs inside an activity,
and pauses when a tool declared with ``approval_mode="always_require"`` is called.

The run asks the person for each paused call exactly as for the built-in agent
(:class:`workflows.agent_loop.PersonApproval`: the same approval workflow, codes, messages,
buttons and ``requires_action``), then one ``resume_agent`` activity continues the agent from
its paused state with the decisions. The wait costs no worker slot; the activities in between
are each one step (a worker lost mid-activity reruns that whole activity).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.agent import AgentActivities
    from activities.names import AGENT_REJECTED
    from hosting.models import (
        AgentReply,
        AgentRequest,
        AgentResume,
        RunInput,
        ToolDecision,
        ToolLoopLimits,
    )
    from workflows.agent_loop import ApprovalHost, PersonApproval, TurnExpired

# A resumed step's progress batches count attempts above every earlier step's.
RESUME_ATTEMPTS = 1_000_000


class FrameworkTurn:
    """Asks, resumes, and asks again while the agent pauses, bounded by ``max_steps`` resumes
    and the run's maximum duration (time waiting for a person not counted)."""

    def __init__(self, inp: RunInput, request: AgentRequest, host: ApprovalHost) -> None:
        self._inp = inp
        self._request = request
        self._asker = PersonApproval(inp, host)
        opts = inp.submit.options
        self._deadline: datetime = workflow.now() + timedelta(seconds=opts.max_duration_s)

    async def finish(self, first: AgentReply) -> AgentReply:
        """``first`` is the turn's first step, which paused on approvals."""
        limits = first.tool_limits or ToolLoopLimits()
        reply, resumes = first, 0
        usage_in, usage_out = first.usage_input_tokens, first.usage_output_tokens
        opts = self._inp.submit.options
        while reply.approval_requests:
            if resumes >= limits.max_steps:
                # The paused state is not kept: the next turn starts from the transcript.
                return AgentReply(
                    text=f"I stopped before finishing: this turn paused for approval "
                    f"{limits.max_steps} times (agent.max_steps).",
                    usage_input_tokens=usage_in,
                    usage_output_tokens=usage_out,
                )
            decisions: list[ToolDecision] = []
            for call in reply.approval_requests:
                verdict = await self._asker.ask(call, limits.approval_timeout_s)
                self._deadline += verdict.waited
                decisions.append(
                    ToolDecision(
                        call_id=call.call_id,
                        approved=verdict.approved,
                        why=None if verdict.approved else verdict.why,
                    )
                )
            resumes += 1
            assert reply.agent_state is not None  # a paused step always carries its state
            reply = await workflow.execute_activity_method(
                AgentActivities.resume_agent,
                AgentResume(
                    request=self._request,
                    agent_state=reply.agent_state,
                    decisions=decisions,
                    progress_attempt_base=resumes * RESUME_ATTEMPTS,
                ),
                start_to_close_timeout=timedelta(seconds=opts.agent_timeout_s),
                schedule_to_close_timeout=self._remaining(),
                heartbeat_timeout=timedelta(seconds=opts.agent_heartbeat_s),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=30),
                    non_retryable_error_types=[AGENT_REJECTED],
                ),
            )
            usage_in = _add(usage_in, reply.usage_input_tokens)
            usage_out = _add(usage_out, reply.usage_output_tokens)
        return reply.model_copy(
            update={"usage_input_tokens": usage_in, "usage_output_tokens": usage_out}
        )

    def _remaining(self) -> timedelta:
        left = self._deadline - workflow.now()
        if left < timedelta(seconds=1):
            raise TurnExpired()
        return left


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)
