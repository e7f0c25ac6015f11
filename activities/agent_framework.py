"""Microsoft Agent Framework agents (``[agent] kind = "agent_framework"``).

The agent's own tool loop runs inside one activity, streaming its text. Its conversation state
is the framework's session, serialised with ``AgentSession.to_dict`` and kept by the session
workflow between turns (encrypted like every payload, and bounded). A tool declared with
``approval_mode="always_require"`` pauses the turn: the activity returns the framework's
approval requests inside the paused state, the run asks the person through the same approval
workflow as the built-in agent, and :meth:`AgentFrameworkAgent.resume` continues the agent with
the framework's approval responses.

Imported only by the worker when this kind is configured (never by workflow code).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Awaitable, Callable, MutableSequence
from typing import Any

from agent_framework import (
    Agent,
    AgentSession,
    ChatContext,
    ChatMiddleware,
    Content,
    Message,
    SupportsAgentRun,
)
from agent_framework.exceptions import (
    AgentInvalidAuthException,
    AgentInvalidRequestException,
    ChatClientContentFilterException,
    ChatClientInvalidAuthException,
    ChatClientInvalidRequestException,
    ContentError,
)
from temporalio.exceptions import ApplicationError

from activities.names import AGENT_REJECTED
from hosting.logs import get_logger
from hosting.models import AgentReply, AgentRequest, AgentResume, ToolCall, ToolLoopLimits
from hosting.settings import AgentSettings, ConfigError

OnDelta = Callable[[str], Awaitable[None]]
STATE_FORMAT = "agent_framework/1"  # the envelope around the framework's own session dict
# Errors a retry cannot fix: the request, its credentials or its content were refused.
REFUSED = (
    AgentInvalidAuthException,
    AgentInvalidRequestException,
    ChatClientContentFilterException,
    ChatClientInvalidAuthException,
    ChatClientInvalidRequestException,
    ContentError,
)
log = get_logger("switchboard.agent_framework")


async def _ignore(delta: str) -> None:
    return None


def load_agent(target: str) -> SupportsAgentRun:
    """``module:attribute`` naming an agent, or a zero-argument factory that returns one."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError("agent.callable: must look like 'module:attribute'")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"agent.callable: cannot load {target!r} ({exc})") from None
    if not isinstance(found, SupportsAgentRun) and callable(found):
        try:
            found = found()
        except Exception as exc:
            raise ConfigError(
                f"agent.callable: {target!r} could not build the agent ({type(exc).__name__})"
            ) from None
    if not isinstance(found, SupportsAgentRun):
        raise ConfigError(f"agent.callable: {target!r} is not an Agent Framework agent")
    return found


class _RefusalReasons(ChatMiddleware):
    """The framework tells the model every declined call was "rejected by user"; this gives
    the model the same words as the built-in agent (declined, or nobody answered in time).
    Call-local: it rewrites only what this model request sends."""

    def __init__(self, reasons: dict[str, str]) -> None:
        self._reasons = reasons

    async def process(self, context: ChatContext, call_next: Callable[[], Awaitable[None]]) -> None:
        for message in context.messages:
            _reword(message.contents, self._reasons)
        await call_next()


def _reword(contents: MutableSequence[Content], reasons: dict[str, str]) -> None:
    for index, content in enumerate(contents):
        why = reasons.get(content.call_id or "") if content.type == "function_result" else None
        if why is not None:
            contents[index] = Content.from_function_result(
                call_id=content.call_id or "",
                id=content.id,
                result=why,
                additional_properties=content.additional_properties,
            )


class AgentFrameworkAgent:
    """Runs one configured Agent Framework agent, turn by turn, from the state it is given."""

    def __init__(self, settings: AgentSettings) -> None:
        if not settings.callable:
            raise ConfigError("agent.callable: required when agent.kind = 'agent_framework'")
        self._agent = load_agent(settings.callable)
        self._max_bytes = settings.state_max_bytes
        self._limits = ToolLoopLimits(
            max_steps=settings.max_steps, approval_timeout_s=settings.approval_timeout_s
        )

    async def reply(self, request: AgentRequest, on_delta: OnDelta = _ignore) -> AgentReply:
        session = _restore(request.agent_state) if request.agent_state else None
        messages: list[Message] = []
        if session is None:  # a first turn, or the state was dropped: the transcript stands in
            session = self._agent.create_session()
            messages = [Message(t.role, [Content.from_text(t.text)]) for t in request.transcript]
        messages.append(Message("user", [Content.from_text(request.text)]))
        return await self._run(messages, session, on_delta, {})

    async def resume(self, resume: AgentResume, on_delta: OnDelta = _ignore) -> AgentReply:
        """The paused turn goes on with the person's decisions."""
        state = _envelope(resume.agent_state)
        if state is None:
            raise ApplicationError(
                "the paused agent state is unreadable", type=AGENT_REJECTED, non_retryable=True
            )
        session = AgentSession.from_dict(state["session"])
        pending = {c.id: c for c in (Content.from_dict(d) for d in state.get("pending", []))}
        responses: list[Content] = []
        reasons: dict[str, str] = {}
        for decision in resume.decisions:
            request = pending.get(decision.call_id)
            if request is None or request.function_call is None:
                continue
            responses.append(request.to_function_approval_response(decision.approved))
            if not decision.approved:
                call = request.function_call
                why = decision.why or "the person declined it"
                reasons[call.call_id or ""] = f"refused: {call.name} did not run: {why}."
        return await self._run([Message("user", responses)], session, on_delta, reasons)

    async def _run(
        self,
        messages: list[Message],
        session: AgentSession,
        on_delta: OnDelta,
        reasons: dict[str, str],
    ) -> AgentReply:
        parts: list[str] = []
        try:
            if reasons and isinstance(self._agent, Agent):
                stream = self._agent.run(
                    messages, stream=True, session=session, middleware=[_RefusalReasons(reasons)]
                )
            else:
                stream = self._agent.run(messages, stream=True, session=session)
            async for update in stream:
                if update.text:
                    parts.append(update.text)
                    await on_delta(update.text)
            final = await stream.get_final_response()
        except REFUSED as exc:
            raise ApplicationError(
                f"the agent's model refused the request ({type(exc).__name__})",
                type=AGENT_REJECTED,
                non_retryable=True,
            ) from None
        except ApplicationError:
            raise
        except Exception as exc:  # no message text: it may hold content
            raise ApplicationError(f"the agent failed ({type(exc).__name__})") from None
        text = "".join(parts)
        if not text and final.text:  # an agent that does not stream: one delta
            text = final.text
            await on_delta(text)
        usage = final.usage_details or {}
        requests = [c for c in final.user_input_requests if c.type == "function_approval_request"]
        if len(requests) < len(final.user_input_requests):
            raise ApplicationError(
                "the agent asked for a kind of input this host cannot collect",
                type=AGENT_REJECTED,
                non_retryable=True,
            )
        reply = AgentReply(
            text=text,
            usage_input_tokens=usage.get("input_token_count"),
            usage_output_tokens=usage.get("output_token_count"),
            tool_limits=self._limits,
        )
        if requests:
            # Paused: the state carries the framework's own requests, whatever its size (the
            # kept state was within the bound; this turn adds one exchange).
            paused = _dump(session, [r.to_dict() for r in requests])
            calls = [_as_call(r) for r in requests]
            return reply.model_copy(update={"approval_requests": calls, "agent_state": paused})
        return reply.model_copy(update={"agent_state": self._bounded(_dump(session, []))})

    def _bounded(self, state: str | None) -> str | None:
        if state is not None and len(state.encode()) > self._max_bytes:
            log.warning(
                "agent state dropped: over agent.state_max_bytes",
                size=len(state.encode()),
                limit=self._max_bytes,
            )
            return None
        return state


def _as_call(request: Content) -> ToolCall:
    call = request.function_call
    assert call is not None  # a function_approval_request always carries its call
    arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
    return ToolCall(
        call_id=request.id or call.call_id or "",
        name=call.name or "",
        arguments=arguments or "{}",
        requires_approval=True,
    )


def _dump(session: AgentSession, pending: list[dict[str, Any]]) -> str | None:
    try:
        envelope = {"format": STATE_FORMAT, "session": session.to_dict(), "pending": pending}
        return json.dumps(envelope, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        log.warning("agent state not serialisable: dropped", error=type(exc).__name__)
        return None


def _envelope(state: str) -> dict[str, Any] | None:
    try:
        envelope = json.loads(state)
    except ValueError:
        return None
    if not isinstance(envelope, dict) or envelope.get("format") != STATE_FORMAT:
        return None
    return envelope


def _restore(state: str) -> AgentSession | None:
    """The kept session, or None (then the transcript stands in) when it cannot be read."""
    envelope = _envelope(state)
    if envelope is None or envelope.get("pending"):
        return None
    try:
        return AgentSession.from_dict(envelope["session"])
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("agent state unreadable: the transcript stands in", error=type(exc).__name__)
        return None
