"""Agent backends against a local OpenAI-compatible server, and the python callable backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from temporalio.exceptions import ApplicationError

from activities.agent_backends import EchoAgent, OpenAIChatAgent, PythonAgent, build_backend
from hosting.models import AgentReply, AgentRequest, Turn
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
