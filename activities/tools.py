"""Tools for the built-in agent: ``[agent] tools = ["module:function"]``, each call its own
activity, and the call back into Temporal that answers a waiting approval.

A tool is a plain function, sync or async, with type hints and a docstring. Its JSON schema
(what the model is shown) is derived from the signature with pydantic, and the model's
arguments are validated against the same model before the function runs. A parameter named
``context`` is not shown to the model: it receives a :class:`ToolContext` with the call's
idempotency key.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic
import pydantic_core
from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from hosting.ids import approval_workflow_id
from hosting.models import (
    ApprovalAnswer,
    ApprovalOutcome,
    Identity,
    ToolCall,
    ToolInvocation,
    ToolLoopLimits,
    ToolResult,
)
from hosting.settings import AgentSettings, ConfigError

HEARTBEAT_EVERY_S = 1.0
CONTEXT_PARAM = "context"
MAX_RESULT_CHARS = 100_000  # a tool result is a payload in history and a prompt for the model


@dataclass(frozen=True)
class ToolContext:
    """What a tool that takes ``context`` gets: a key for its own side effects, the same on
    every retry of this call (a payment API's idempotency key, say)."""

    idempotency_key: str
    run_id: str
    call_id: str
    attempt: int
    # Who the run is for (None: a run with no conversation); tools acting for the person.
    caller: Identity | None = None


class Tool:
    """One configured function: its schema for the model and its argument model."""

    def __init__(self, target: str, fn: Callable[..., Any]) -> None:
        self.name: str = fn.__name__
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        doc = inspect.getdoc(fn)
        if not doc:
            raise ConfigError(f"agent.tools: {target!r} needs a docstring (the model reads it)")
        self.description = doc
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as exc:  # names in annotations that do not resolve
            raise ConfigError(
                f"agent.tools: {target!r}: cannot read its type hints ({exc})"
            ) from None
        fields: dict[str, Any] = {}
        self.takes_context = False
        for param in inspect.signature(fn).parameters.values():
            if param.name == CONTEXT_PARAM:
                self.takes_context = True
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigError(
                    f"agent.tools: {target!r}: *args and **kwargs cannot be described"
                )
            if param.name not in hints:
                raise ConfigError(
                    f"agent.tools: {target!r}: parameter {param.name!r} has no type hint"
                )
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (hints[param.name], default)
        self.arguments: type[pydantic.BaseModel] = pydantic.create_model(
            f"{self.name}_arguments",
            __config__=pydantic.ConfigDict(extra="forbid"),
            **fields,
        )

    def spec(self) -> dict[str, Any]:
        """The Chat Completions ``tools`` entry."""
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": schema},
        }

    def parse(self, arguments: str) -> dict[str, Any]:
        """Raises ``ValueError`` (``pydantic.ValidationError`` is one) for bad arguments."""
        raw = json.loads(arguments or "{}")
        if not isinstance(raw, dict):
            raise ValueError("arguments must be a JSON object")
        model = self.arguments.model_validate(raw)
        return {name: getattr(model, name) for name in type(model).model_fields}


class ToolRegistry:
    """The tools of ``[agent]`` and the policy each call of them gets."""

    def __init__(self, settings: AgentSettings, builtin: Sequence[Callable[..., Any]] = ()) -> None:
        """``builtin``: tools the deployment adds itself (bound methods, say), after those of
        ``[agent] tools``."""
        self.tools: dict[str, Tool] = {}
        loaded = [(target, _load(target)) for target in settings.tools]
        for target, fn in [*loaded, *((f"builtin:{f.__name__}", f) for f in builtin)]:
            tool = Tool(target, fn)
            if tool.name in self.tools:
                raise ConfigError(f"agent.tools: two tools are named {tool.name!r}")
            self.tools[tool.name] = tool
        self._approval = set(settings.approval_required)
        self._not_idempotent = set(settings.tools_not_idempotent)
        self._timeouts = dict(settings.tool_timeouts_s)
        self._default_timeout = settings.timeout_s
        self.limits = ToolLoopLimits(
            max_steps=settings.max_steps, approval_timeout_s=settings.approval_timeout_s
        )

    def __bool__(self) -> bool:
        return bool(self.tools)

    def specs(self) -> list[dict[str, Any]]:
        return [tool.spec() for tool in self.tools.values()]

    def call(self, call_id: str, name: str, arguments: str) -> ToolCall:
        """A call as the model asked for it, with its policy."""
        return ToolCall(
            call_id=call_id,
            name=name,
            arguments=arguments,
            known=name in self.tools,
            requires_approval=name in self._approval,
            timeout_s=self._timeouts.get(name, self._default_timeout),
            max_attempts=1 if name in self._not_idempotent else 3,
        )


def _load(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"agent.tools: {target!r} must look like 'module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"agent.tools: cannot load {target!r} ({exc})") from None
    if not inspect.isfunction(fn):
        raise ConfigError(f"agent.tools: {target!r} is not a function")
    return typing.cast(Callable[..., Any], fn)


def _as_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(pydantic_core.to_jsonable_python(value))
    return text[:MAX_RESULT_CHARS]


class ToolActivities:
    def __init__(self, tools: ToolRegistry, client: Client | None = None) -> None:
        self._tools = tools
        self._client = client

    @activity.defn(name="call_tool")
    async def call_tool(self, invocation: ToolInvocation) -> ToolResult:
        """Runs one tool call. What the model got wrong (an unknown tool, bad arguments) is a
        result for it to read; an exception from the tool is retried by the workflow's policy
        and, once retries are spent, also becomes a result."""
        call = invocation.call
        tool = self._tools.tools.get(call.name)
        if tool is None:
            return ToolResult(
                call_id=call.call_id, content=f"error: no tool named {call.name!r}", ok=False
            )
        try:
            kwargs = tool.parse(call.arguments)
        except ValueError as exc:
            return ToolResult(
                call_id=call.call_id, content=f"error: invalid arguments: {exc}", ok=False
            )
        if tool.takes_context:
            kwargs[CONTEXT_PARAM] = ToolContext(
                idempotency_key=invocation.idempotency_key,
                run_id=invocation.run_id,
                call_id=call.call_id,
                attempt=activity.info().attempt,
                caller=invocation.caller,
            )
        if tool.is_async:
            task = asyncio.ensure_future(tool.fn(**kwargs))
        else:
            task = asyncio.ensure_future(asyncio.to_thread(tool.fn, **kwargs))
        try:
            while True:
                # Heartbeats: a dead worker is noticed quickly, and cancellation arrives.
                done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
                if done:
                    break
                activity.heartbeat()
        finally:
            if not task.done():
                task.cancel()
        try:
            value = task.result()
        except Exception as exc:
            raise ApplicationError(f"{type(exc).__name__}: {exc}") from None
        return ToolResult(call_id=call.call_id, content=_as_text(value))

    @activity.defn(name="answer_approval")
    async def answer_approval(self, answer: ApprovalAnswer) -> ApprovalOutcome:
        """``/approve CODE`` or ``/deny CODE``, looked up in the session it was typed in:
        unknown, expired, already answered and someone else's codes all come back the same."""
        if self._client is None:
            return ApprovalOutcome(accepted=False)
        wid = approval_workflow_id(answer.identity.session_id, answer.code)
        handle = self._client.get_workflow_handle(wid)
        try:
            outcome: ApprovalOutcome = await handle.execute_update(
                "answer", answer, result_type=ApprovalOutcome
            )
        except (WorkflowUpdateFailedError, RPCError):
            return ApprovalOutcome(accepted=False)
        return outcome
