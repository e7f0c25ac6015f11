"""Agent backends against a local OpenAI-compatible server, and the python callable backend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from temporalio.exceptions import ApplicationError

from activities.agent_backends import EchoAgent, OpenAIChatAgent, PythonAgent, build_backend
from activities.tools import ToolRegistry
from hosting.models import AgentReply, AgentRequest, AgentStep, Turn
from hosting.settings import AgentSettings, ConfigError


class FakeChatServer:
    """Speaks Chat Completions: records requests, answers what the test scripts."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.script: list[tuple[int, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        self.auth.append(request.headers.get("Authorization"))
        if self.script:
            status, headers = self.script.pop(0)
            return web.json_response(
                {"error": {"message": "scripted"}}, status=status, headers=headers
            )
        last = self.requests[-1]["messages"][-1]["content"]
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": f"model says {last}"}}
                ],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3},
            }
        )


@pytest.fixture
async def chat_server() -> AsyncIterator[tuple[FakeChatServer, str]]:
    fake = FakeChatServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("/v1"))
    await server.close()


def request(text: str, transcript: list[Turn] | None = None) -> AgentRequest:
    return AgentRequest(
        run_id="run/t/c/m",
        text=text,
        transcript=transcript or [],
        channel="webhook",
        identity_hash="h",
    )


async def test_openai_backend_sends_transcript_and_reads_the_answer(
    chat_server: tuple[FakeChatServer, str],
) -> None:
    fake, url = chat_server
    settings = AgentSettings(kind="openai", base_url=url, model="m1", api_key="sk-test")  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as http:
        reply = await OpenAIChatAgent(settings, http).reply(
            request("now", [Turn(role="user", text="before"), Turn(role="assistant", text="ok")])
        )
    assert reply == AgentReply(text="model says now", usage_input_tokens=7, usage_output_tokens=3)
    [sent] = fake.requests
    assert sent["model"] == "m1"
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert fake.auth == ["Bearer sk-test"]


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "delay"),
    [
        (429, {"Retry-After": "7"}, True, 7.0),
        (503, {}, True, None),
        (400, {}, False, None),
        (401, {}, False, None),
    ],
)
async def test_openai_backend_maps_errors_for_temporal_retries(
    chat_server: tuple[FakeChatServer, str],
    status: int,
    headers: dict[str, str],
    retryable: bool,
    delay: float | None,
) -> None:
    fake, url = chat_server
    fake.script.append((status, headers))
    settings = AgentSettings(kind="openai", base_url=url)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ApplicationError) as info:
            await OpenAIChatAgent(settings, http).reply(request("x"))
    assert info.value.non_retryable is (not retryable)
    got = info.value.next_retry_delay
    assert (got.total_seconds() if got else None) == delay
    assert "x" not in str(info.value).split("(")[0]  # no message content in errors


async def test_openai_backend_unreachable_is_retryable() -> None:
    settings = AgentSettings(kind="openai", base_url="http://127.0.0.1:1/v1", timeout_s=2)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ApplicationError) as info:
            await OpenAIChatAgent(settings, http).reply(request("x"))
    assert not info.value.non_retryable


async def sample_agent(req: AgentRequest, transcript: list[Turn]) -> str:
    return f"{len(transcript)} turns, then {req.text!r}"


def sync_agent(req: AgentRequest, transcript: list[Turn]) -> str:
    return "sync"


async def test_python_backend_calls_an_async_function() -> None:
    agent = PythonAgent("tests.test_agent_backends:sample_agent")
    reply = await agent.reply(request("hey", [Turn(role="user", text="a")]))
    assert reply.text == "1 turns, then 'hey'"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nocolon", "module:callable"),
        ("tests.nope:fn", "cannot load"),
        ("tests.test_agent_backends:missing", "cannot load"),
        ("tests.test_agent_backends:sync_agent", "async function"),
    ],
)
def test_python_backend_bad_targets_are_config_errors(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PythonAgent(target)


async def test_echo_and_factory() -> None:
    assert (await EchoAgent().reply(request("hi"))).text == "echo: hi"
    async with aiohttp.ClientSession() as http:
        assert isinstance(build_backend(AgentSettings(), http), EchoAgent)
        with pytest.raises(ConfigError, match="agent.callable"):
            build_backend(AgentSettings(kind="python"), http)


INTERLEAVED = [  # two calls whose fragments interleave, text before them, usage last
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me"}}]},
    {"choices": [{"index": 0, "delta": {"content": " check."}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_a", "type": "function",
         "function": {"name": "lookup_weather", "arguments": ""}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 1, "id": "call_b", "type": "function",
         "function": {"name": "lookup_weather", "arguments": '{"ci'}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": '{"city": "Os'}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 1, "function": {"arguments": 'ty": "Rome"}'}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": 'lo"}'}}]}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}},
]  # fmt: skip
WHOLE = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Let me check.",
        "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "lookup_weather", "arguments": '{"city": "Oslo"}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "lookup_weather", "arguments": '{"city": "Rome"}'}},
        ]}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 4},
}  # fmt: skip


@pytest.mark.parametrize("answer", ["stream", "json"])
async def test_a_streamed_step_gives_what_the_non_streamed_call_gives(answer: str) -> None:
    """Tool calls from interleaved fragments, in index order; a server that ignores
    ``stream`` and answers JSON is read as JSON."""
    sent: list[dict[str, Any]] = []

    async def handle(req: web.Request) -> web.StreamResponse:
        sent.append(await req.json())
        if answer == "json":
            return web.json_response(WHOLE)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(req)
        for chunk in INTERLEAVED:
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    settings = AgentSettings(
        kind="openai",
        base_url=str(server.make_url("/v1")),  # type: ignore[arg-type]
        tools=["tests.agent_tools:lookup_weather"],
    )
    deltas: list[str] = []

    async def on_delta(delta: str) -> None:
        deltas.append(delta)

    streaming = request("weather?").model_copy(update={"progress_every_ms": 250})
    try:
        async with aiohttp.ClientSession() as http:
            agent = OpenAIChatAgent(settings, http, ToolRegistry(settings))
            reply = await agent.step(AgentStep(request=streaming), on_delta)
    finally:
        await server.close()
    assert sent[0]["stream"] is True and sent[0]["stream_options"] == {"include_usage": True}
    assert reply.text == "Let me check."
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [
        ("call_a", "lookup_weather", {"city": "Oslo"}),
        ("call_b", "lookup_weather", {"city": "Rome"}),
    ]
    assert all(c.known for c in reply.tool_calls)
    assert (reply.usage_input_tokens, reply.usage_output_tokens) == (9, 4)
    # Streamed text reaches progress as it comes; a step with calls sends none otherwise.
    assert deltas == (["Let me", " check."] if answer == "stream" else [])
