"""Agent backends: echo (tests, demos), any OpenAI-compatible server, or a Python callable."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Protocol

import aiohttp
from temporalio.exceptions import ApplicationError

from activities.names import AGENT_REJECTED
from channels.http_push import parse_retry_after
from hosting.models import AgentReply, AgentRequest, Turn
from hosting.settings import AgentSettings, ConfigError


class AgentBackend(Protocol):
    async def reply(self, request: AgentRequest) -> AgentReply: ...


class EchoAgent:
    """Answers ``echo: <text>``, optionally after ``delay_ms`` (a stand-in for a slow agent)."""

    def __init__(self, delay_ms: int = 0) -> None:
        self._delay = delay_ms / 1000

    async def reply(self, request: AgentRequest) -> AgentReply:
        if self._delay:
            await asyncio.sleep(self._delay)
        return AgentReply(text=f"echo: {request.text}")


class OpenAIChatAgent:
    """Chat Completions over aiohttp: 429 and 5xx are retried (honouring Retry-After), 4xx not."""

    def __init__(self, settings: AgentSettings, http: aiohttp.ClientSession) -> None:
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._model = settings.model
        self._system = settings.system_prompt
        self._key = settings.api_key.get_secret_value() if settings.api_key else None
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._http = http

    def _messages(self, request: AgentRequest) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self._system}]
        messages += [{"role": t.role, "content": t.text} for t in request.transcript]
        messages.append({"role": "user", "content": request.text})
        return messages

    async def reply(self, request: AgentRequest) -> AgentReply:
        headers = {"content-type": "application/json"}
        if self._key:
            headers["authorization"] = f"Bearer {self._key}"
        body = {"model": self._model, "messages": self._messages(request)}
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
                data = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ApplicationError(f"agent server unreachable ({type(exc).__name__})") from None
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ApplicationError(
                "agent server answered without choices[0].message.content",
                type=AGENT_REJECTED,
                non_retryable=True,
            ) from None
        usage = data.get("usage") or {}
        return AgentReply(
            text=text,
            usage_input_tokens=usage.get("prompt_tokens"),
            usage_output_tokens=usage.get("completion_tokens"),
        )


PythonAgentFn = Callable[[AgentRequest, list[Turn]], Awaitable[str | AgentReply]]


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
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"agent.callable: {target!r} must be an async function")
        self._fn: PythonAgentFn = fn

    async def reply(self, request: AgentRequest) -> AgentReply:
        out = await self._fn(request, request.transcript)
        return out if isinstance(out, AgentReply) else AgentReply(text=str(out))


def build_backend(settings: AgentSettings, http: aiohttp.ClientSession) -> AgentBackend:
    if settings.kind == "echo":
        return EchoAgent(settings.delay_ms)
    if settings.kind == "openai":
        return OpenAIChatAgent(settings, http)
    if not settings.callable:
        raise ConfigError("agent.callable: required when agent.kind = 'python'")
    return PythonAgent(settings.callable)
