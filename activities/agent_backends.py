"""Agent backends: echo (tests, demos), any OpenAI-compatible server, a Python callable, or a
Microsoft Agent Framework agent (:mod:`activities.agent_framework`)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

import aiohttp
from temporalio.exceptions import ApplicationError

from activities.names import AGENT_REJECTED
from activities.tools import ToolRegistry
from channels.http_push import parse_retry_after
from hosting.models import AgentReply, AgentRequest, AgentResume, AgentStep, Turn
from hosting.settings import AgentSettings, ConfigError

OnDelta = Callable[[str], Awaitable[None]]


async def _ignore(delta: str) -> None:
    return None


class AgentBackend(Protocol):
    async def reply(self, request: AgentRequest, on_delta: OnDelta = _ignore) -> AgentReply:
        """The whole answer; every piece of text is also passed to ``on_delta`` as soon as it
        is produced (the concatenated deltas are the answer's text)."""
        ...


class EchoAgent:
    """Answers ``echo: <text>``, optionally after ``delay_ms`` (a stand-in for a slow agent),
    streaming ``echo:`` and then each word with its leading space, ``stream_delay_ms`` apart."""

    def __init__(self, delay_ms: int = 0, stream_delay_ms: int = 0) -> None:
        self._delay = delay_ms / 1000
        self._stream_delay = stream_delay_ms / 1000

    async def reply(self, request: AgentRequest, on_delta: OnDelta = _ignore) -> AgentReply:
        if self._delay:
            await asyncio.sleep(self._delay)
        text = f"echo: {request.text}"
        pieces = ["echo:"] + [" " + word for word in request.text.split(" ")]
        for index, piece in enumerate(pieces):
            if index and self._stream_delay:
                await asyncio.sleep(self._stream_delay)
            await on_delta(piece)
        return AgentReply(text=text)


class OpenAIChatAgent:
    """Chat Completions over aiohttp: 429 and 5xx are retried (honouring Retry-After), 4xx not.

    With tools, every call offers them and may come back with tool calls instead of an
    answer; the run workflow runs those and asks again (:meth:`step`)."""

    def __init__(
        self,
        settings: AgentSettings,
        http: aiohttp.ClientSession,
        tools: ToolRegistry | None = None,
    ) -> None:
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._model = settings.model
        self._system = settings.system_prompt
        self._key = settings.api_key.get_secret_value() if settings.api_key else None
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._http = http
        self._tools = tools if tools else None

    def _messages(self, request: AgentRequest) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": self._system}]
        messages += [{"role": t.role, "content": t.text} for t in request.transcript]
        messages.append({"role": "user", "content": request.text})
        return messages

    async def reply(self, request: AgentRequest, on_delta: OnDelta = _ignore) -> AgentReply:
        if self._tools is not None:
            return await self.step(AgentStep(request=request), on_delta)
        body: dict[str, Any] = {"model": self._model, "messages": self._messages(request)}
        if request.progress_every_ms:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        data, streamed = await self._post(body, on_delta)
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise _malformed("choices[0].message.content") from None
        if not streamed:
            await on_delta(text)
        usage = data.get("usage") or {}
        return AgentReply(
            text=text,
            usage_input_tokens=usage.get("prompt_tokens"),
            usage_output_tokens=usage.get("completion_tokens"),
        )

    async def step(self, step: AgentStep, on_delta: OnDelta = _ignore) -> AgentReply:
        """One model call of a turn with tools: the answer, or the tools it wants called.
        Streamed when the request asks for progress: text deltas go to ``on_delta`` as they
        come (text written before tool calls too), tool calls are assembled from the
        stream's fragments, and the result is what the non-streamed call gives."""
        tools = self._tools
        if tools is None:
            raise ApplicationError(
                "agent.tools is not configured on this worker",
                type=AGENT_REJECTED,
                non_retryable=True,
            )
        messages = self._messages(step.request)
        for exchange in step.exchanges:
            messages.append(
                {
                    "role": "assistant",
                    "content": exchange.text,
                    "tool_calls": [
                        {
                            "id": call.call_id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                        for call in exchange.calls
                    ],
                }
            )
            messages += [
                {"role": "tool", "tool_call_id": result.call_id, "content": result.content}
                for result in exchange.results
            ]
        body: dict[str, Any] = {"model": self._model, "messages": messages, "tools": tools.specs()}
        if step.request.progress_every_ms:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        data, streamed = await self._post(body, on_delta)
        try:
            message = data["choices"][0]["message"]
            raw_calls = message.get("tool_calls") or []
            calls = [
                tools.call(c["id"], c["function"]["name"], c["function"].get("arguments") or "{}")
                for c in raw_calls
            ]
        except (KeyError, IndexError, TypeError, AttributeError):
            raise _malformed("choices[0].message") from None
        text = message.get("content") or ""
        if not calls and not streamed:
            await on_delta(text)
        usage = data.get("usage") or {}
        return AgentReply(
            text=text,
            usage_input_tokens=usage.get("prompt_tokens"),
            usage_output_tokens=usage.get("completion_tokens"),
            tool_calls=calls,
            tool_limits=tools.limits,
        )

    async def _post(self, body: dict[str, Any], on_delta: OnDelta) -> tuple[dict[str, Any], bool]:
        """The server's JSON answer, and whether it came as a stream: when ``body`` asks to
        stream, the same answer assembled from the stream (its text also passed to
        ``on_delta`` as it comes). A server that answers JSON anyway is read as JSON."""
        headers = {"content-type": "application/json"}
        if self._key:
            headers["authorization"] = f"Bearer {self._key}"
        try:
            async with self._http.post(
                self._url, json=body, headers=headers, timeout=self._timeout
            ) as resp:
                if resp.status == 429 or resp.status >= 500:
                    delay = parse_retry_after(resp.headers.get("retry-after"))
                    raise ApplicationError(
                        f"agent server answered {resp.status}",
                        next_retry_delay=timedelta(seconds=delay) if delay is not None else None,
                    )
                if resp.status >= 400:
                    raise ApplicationError(
                        f"agent server refused the request ({resp.status})",
                        type=AGENT_REJECTED,
                        non_retryable=True,
                    )
                if body.get("stream") and resp.content_type != "application/json":
                    return await _read_stream(resp, on_delta), True
                data: dict[str, Any] = await resp.json(content_type=None)
                return data, False
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ApplicationError(f"agent server unreachable ({type(exc).__name__})") from None


def _malformed(what: str) -> ApplicationError:
    return ApplicationError(
        f"agent server answered without {what}", type=AGENT_REJECTED, non_retryable=True
    )


async def _read_stream(resp: aiohttp.ClientResponse, on_delta: OnDelta) -> dict[str, Any]:
    """Chat Completions streaming: ``data: {chunk}`` lines until ``data: [DONE]``, assembled
    into the answer a non-streamed call gives (``choices[0].message`` and ``usage``). Tool
    calls come as fragments keyed by ``index``: the first carries the id and name, the rest
    more of the arguments."""
    parts: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    usage: dict[str, Any] = {}
    async for raw in resp.content:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            continue
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                parts.append(text)
                await on_delta(text)
            for fragment in delta.get("tool_calls") or []:
                _add_fragment(calls, fragment)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(parts)}
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return {"choices": [{"index": 0, "message": message}], "usage": usage or None}


def _add_fragment(calls: dict[int, dict[str, Any]], fragment: Any) -> None:
    """One streamed piece of a tool call, joined to the call with its ``index``."""
    if not isinstance(fragment, dict):
        raise _malformed("a well-formed tool call fragment")
    index = fragment.get("index", len(calls))
    call = calls.setdefault(
        index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
    )
    if fragment.get("id") and not call["id"]:
        call["id"] = fragment["id"]
    function = fragment.get("function") or {}
    call["function"]["name"] += function.get("name") or ""
    call["function"]["arguments"] += function.get("arguments") or ""


PythonAgentFn = Callable[
    [AgentRequest, list[Turn]], Awaitable[str | AgentReply] | AsyncIterator[str]
]


class PythonAgent:
    """``module:callable`` naming ``async fn(request, transcript) -> str | AgentReply``."""

    def __init__(self, target: str) -> None:
        module_name, _, attr = target.partition(":")
        if not module_name or not attr:
            raise ConfigError("agent.callable: must look like 'module:callable'")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"agent.callable: cannot load {target!r} ({exc})") from None
        if not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
            raise ConfigError(
                f"agent.callable: {target!r} must be an async function or async generator"
            )
        self._fn: PythonAgentFn = fn

    async def reply(self, request: AgentRequest, on_delta: OnDelta = _ignore) -> AgentReply:
        out = self._fn(request, request.transcript)
        if isinstance(out, AsyncIterator):  # an async generator: its items are the deltas
            parts = []
            async for piece in out:
                parts.append(str(piece))
                await on_delta(str(piece))
            return AgentReply(text="".join(parts))
        result = await out
        reply = result if isinstance(result, AgentReply) else AgentReply(text=str(result))
        await on_delta(reply.text)
        return reply


@runtime_checkable
class StepsWithTools(Protocol):
    async def step(self, step: AgentStep, on_delta: OnDelta = _ignore) -> AgentReply:
        """One model call of a turn with tools (see :meth:`OpenAIChatAgent.step`)."""
        ...


@runtime_checkable
class ResumesAfterApproval(Protocol):
    async def resume(self, resume: AgentResume, on_delta: OnDelta = _ignore) -> AgentReply:
        """The rest of a turn that paused on approvals (``agent_framework`` agents)."""
        ...


def build_backend(
    settings: AgentSettings, http: aiohttp.ClientSession, tools: ToolRegistry | None = None
) -> AgentBackend:
    if settings.kind == "echo":
        return EchoAgent(settings.delay_ms, settings.stream_delay_ms)
    if settings.kind == "openai":
        return OpenAIChatAgent(settings, http, tools)
    if settings.kind == "agent_framework":
        try:  # an optional extra, imported only where it is configured
            from activities.agent_framework import AgentFrameworkAgent
        except ImportError as exc:
            raise ConfigError(
                "agent.kind: 'agent_framework' needs the agent-framework extra installed "
                f"(pip install -e '.[agent-framework]'): {exc}"
            ) from None
        return AgentFrameworkAgent(settings)
    if not settings.callable:
        raise ConfigError("agent.callable: required when agent.kind = 'python'")
    return PythonAgent(settings.callable)
