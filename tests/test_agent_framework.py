"""Microsoft Agent Framework agents (``kind = "agent_framework"``), running the example module
``examples/agent_framework_agent.py`` against a local fake Chat Completions model.

The fake streams every answer as Server-Sent Events, as the framework's client asks. It reads
the newest user message as a script: ``pay N to NAME`` calls ``send_payment``; once a tool
result follows that message it answers ``final: <the tool results>``; anything else is
answered ``plain: <text>``, word by word (``slowly`` holds the stream after its first word
until the test lets it go).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from temporalio.api.enums.v1 import EventType

from activities.agent_backends import build_backend
from examples import agent_framework_agent as example
from hosting.models import RunInput, RunView
from hosting.settings import AgentSettings, ConfigError
from tests.conftest import Stack
from tests.support import eventually
from tests.test_replay import replayer
from tests.test_tools import (
    CODE,
    next_push,
    say,
    scheduled,
    send_chunk,
    serving_model,
    sse_chunk,
    view,
)
from worker import build_worker

CALLABLE = "examples.agent_framework_agent:build_agent"


class FakeStreamingModel:
    """Chat Completions with ``stream: true``: content and tool-call deltas, then usage."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""
        self.gate = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        messages = body["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        user = messages[last_user]["content"]
        results = [m["content"] for m in messages[last_user:] if m["role"] == "tool"]
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        if results:
            await self._words(resp, "final: " + " | ".join(results))
        elif user.startswith("pay "):
            _, amount, _, to = user.split(" ")
            await self._tool_call(resp, "send_payment", {"amount": int(amount), "to": to})
        else:
            await self._words(resp, f"plain: {user}", hold="slowly" in user)
        usage = {"prompt_tokens": 5, "completion_tokens": 2}
        await send_chunk(resp, {**sse_chunk({}), "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def _words(self, resp: web.StreamResponse, text: str, hold: bool = False) -> None:
        first, *rest = text.split(" ")
        await send_chunk(resp, sse_chunk({"role": "assistant", "content": first}))
        if hold:
            await self.gate.wait()
        for word in rest:
            await send_chunk(resp, sse_chunk({"content": " " + word}))
        await send_chunk(resp, sse_chunk({}, "stop"))

    @staticmethod
    async def _tool_call(resp: web.StreamResponse, name: str, args: dict[str, Any]) -> None:
        head = {"index": 0, "id": "call_0", "type": "function"}
        await send_chunk(
            resp,
            sse_chunk({"role": "assistant", "tool_calls": [{**head, "function": {"name": name}}]}),
        )
        arguments = {"index": 0, "function": {"arguments": json.dumps(args)}}
        await send_chunk(resp, sse_chunk({"tool_calls": [arguments]}))
        await send_chunk(resp, sse_chunk({}, "tool_calls"))


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeStreamingModel]:
    fake = FakeStreamingModel()
    async with serving_model(fake.handle) as fake.url:
        # The example reads the framework's own variables; the worker builds the agent at start.
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_MODEL", "fake")
        example.payments.clear()
        yield fake
        fake.gate.set()


@pytest.fixture
def settings_overrides(
    model: FakeStreamingModel, request: pytest.FixtureRequest
) -> dict[str, object]:
    agent: dict[str, object] = {
        "kind": "agent_framework",
        "callable": CALLABLE,
        "stream_every_ms": 50,
        "heartbeat_timeout_s": 3,
        **getattr(request, "param", {}),
    }
    return {"agent": agent}


@pytest.fixture
def person() -> str:
    return f"fia-{uuid.uuid4().hex[:8]}"


async def run_input(stack: Stack, run_id: str) -> RunInput:
    history = await stack.client.get_workflow_handle(run_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [inp] = await stack.client.data_converter.decode(started.input.payloads, [RunInput])
    assert isinstance(inp, RunInput)
    return inp


async def finished(stack: Stack, run_id: str) -> RunView:
    handle = stack.client.get_workflow_handle(run_id, result_type=RunView)
    return await handle.result()


async def test_a_plain_reply_streams_before_it_ends(
    stack: Stack, person: str, model: FakeStreamingModel
) -> None:
    run_id = await say(stack, "hello slowly", person)

    async def partial_shown() -> bool:
        seen = await view(stack, run_id)
        return seen.output_text is None and (seen.partial_text or "").startswith("plain:")

    await eventually(partial_shown, timeout=30)
    assert (await view(stack, run_id)).status == "in_progress"
    model.gate.set()
    reply = await next_push(stack, 1)
    assert reply.text == "plain: hello slowly"
    done = await finished(stack, run_id)
    assert done.output_text == "plain: hello slowly"
    assert done.usage_input_tokens == 5
    kinds, _ = await scheduled(stack, run_id)
    assert kinds == Counter(invoke_agent=1, push_reply=1)
    [sent] = model.requests
    assert sent["stream"] is True
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


async def test_the_framework_state_carries_the_conversation_between_turns(
    stack: Stack, person: str, model: FakeStreamingModel
) -> None:
    first = await say(stack, "my name is Fia", person)
    assert (await next_push(stack, 1)).text == "plain: my name is Fia"
    await finished(stack, first)
    second = await say(stack, "who am I", person)
    assert (await next_push(stack, 2)).text == "plain: who am I"
    assert (await run_input(stack, first)).agent_state is None  # a first turn has none
    kept = (await run_input(stack, second)).agent_state
    assert kept is not None and json.loads(kept)["format"] == "agent_framework/1"
    messages = model.requests[1]["messages"]
    # The framework's own history (the agent's name on its answer), not the transcript.
    assert messages[1:] == [
        {"role": "user", "content": "my name is Fia"},
        {"role": "assistant", "name": "assistant", "content": "plain: my name is Fia"},
        {"role": "user", "content": "who am I"},
    ]


@pytest.mark.parametrize("settings_overrides", [{"state_max_bytes": 1024}], indirect=True)
async def test_a_state_over_its_bound_is_dropped_and_the_transcript_stands_in(
    stack: Stack, person: str, model: FakeStreamingModel
) -> None:
    long_text = "remember " + "x" * 1200
    first = await say(stack, long_text, person)
    assert (await next_push(stack, 1)).text == f"plain: {long_text}"
    await finished(stack, first)
    second = await say(stack, "and now", person)
    await next_push(stack, 2)
    assert (await run_input(stack, second)).agent_state is None
    assert model.requests[1]["messages"][1:] == [
        {"role": "user", "content": long_text},
        {"role": "assistant", "content": f"plain: {long_text}"},
        {"role": "user", "content": "and now"},
    ]


async def ask_for_payment(stack: Stack, person: str) -> tuple[str, str]:
    """Starts a turn that pauses for approval; returns the run id and the code it was sent."""
    run_id = await say(stack, "pay 5 to bob", person)
    prompt = await next_push(stack, 1)
    assert prompt.phase == "approval"
    assert prompt.text.startswith('The agent wants to run send_payment with {"amount": 5')
    match = CODE.search(prompt.text)
    assert match, prompt.text
    waiting = await view(stack, run_id)
    assert waiting.pending_tool == "send_payment"
    assert waiting.action_text == prompt.text
    assert example.payments == []
    return run_id, match.group(1)


def tool_messages(model: FakeStreamingModel) -> list[str]:
    return [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]


async def test_approve_runs_the_tool_once_and_the_agent_answers(
    stack: Stack, person: str, model: FakeStreamingModel
) -> None:
    run_id, code = await ask_for_payment(stack, person)
    # Someone else's answer changes nothing and is told what an unknown code is told.
    await say(stack, f"/approve {code}", f"mallory-{person}")
    assert (await next_push(stack, 2)).text == "That approval code is not valid or has expired."
    assert (await view(stack, run_id)).pending_tool == "send_payment"
    assert example.payments == []

    await say(stack, f"/approve {code}", person)
    pushes = await stack.loopback.outbox.wait_for(4)
    assert "Approved: the agent goes on." in {p.text for p in pushes[2:]}
    final = next(p for p in pushes[2:] if p.run_id == run_id)
    assert final.text == "final: paid 5 to bob"
    assert example.payments == [{"amount": 5, "to": "bob"}]
    done = await finished(stack, run_id)
    assert done.status == "completed"
    assert done.pending_tool is None
    kinds, _ = await scheduled(stack, run_id)
    assert kinds == Counter(invoke_agent=1, resume_agent=1, push_reply=2)

    # The turn ended after its session moved on; its state still reaches the next turn.
    await say(stack, "thanks", person)
    assert (await next_push(stack, 5)).text == "plain: thanks"
    assert tool_messages(model) == ["paid 5 to bob"]
    assert example.payments == [{"amount": 5, "to": "bob"}]
    # The paused-and-resumed run, and its session, replay with today's workflow code.
    session = (await run_input(stack, run_id)).session_id
    assert session is not None
    histories = [await stack.client.get_workflow_handle(run_id).fetch_history()]
    # Sessions here continue as new every few turns: replay each of its runs that has done
    # work (one that has only just started has no workflow task to replay yet).
    async for execution in stack.client.list_workflows(f'WorkflowId = "{session}"'):
        history = await stack.client.get_workflow_handle(
            session, run_id=execution.run_id
        ).fetch_history()
        if any(
            e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in history.events
        ):
            histories.append(history)
    assert len(histories) >= 2
    for history in histories:
        await replayer().replay_workflow(history)


async def test_deny_never_runs_the_tool_and_tells_the_model(
    stack: Stack, person: str, model: FakeStreamingModel
) -> None:
    run_id, code = await ask_for_payment(stack, person)
    await say(stack, f"/deny {code}", person)
    pushes = await stack.loopback.outbox.wait_for(3)
    final = next(p for p in pushes[1:] if p.run_id == run_id)
    refusal = "refused: send_payment did not run: the person declined it."
    assert final.text == f"final: {refusal}"
    assert tool_messages(model) == [refusal]
    assert "Declined: the agent is told, and the tool does not run." in {p.text for p in pushes}
    assert example.payments == []


@pytest.mark.parametrize("settings_overrides", [{"approval_timeout_s": 1}], indirect=True)
async def test_an_unanswered_approval_counts_as_declined_and_the_person_is_told(
    stack: Stack, person: str, model: FakeStreamingModel
) -> None:
    run_id, _ = await ask_for_payment(stack, person)
    final = await next_push(stack, 2)
    assert final.run_id == run_id
    assert final.text == (
        "final: refused: send_payment did not run: nobody approved it in time, so it counts "
        "as declined."
    )
    assert example.payments == []


async def test_a_worker_restart_while_waiting_for_approval_runs_the_tool_once(
    stack: Stack, person: str, model: FakeStreamingModel
) -> None:
    run_id, code = await ask_for_payment(stack, person)
    await stack.worker.shutdown()
    restarted = build_worker(stack.client, stack.settings, registry=stack.registry)
    async with restarted as worker, worker:
        await say(stack, f"/approve {code}", person)
        done = await finished(stack, run_id)
    assert done.status == "completed"
    assert done.output_text == "final: paid 5 to bob"
    assert example.payments == [{"amount": 5, "to": "bob"}]
    kinds, _ = await scheduled(stack, run_id)
    assert kinds["invoke_agent"] == 1
    assert kinds["resume_agent"] == 1


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (None, "required when agent.kind = 'agent_framework'"),
        ("nocolon", "module:attribute"),
        ("examples.nope:agent", "cannot load"),
        ("examples.agent_framework_agent:missing", "cannot load"),
        ("examples.agent_framework_agent:payments", "not an Agent Framework agent"),
        ("examples.agent_framework_agent:send_payment", "could not build the agent"),
    ],
)
async def test_a_bad_callable_stops_the_worker_at_start_up(
    target: str | None, message: str
) -> None:
    settings = AgentSettings(kind="agent_framework", callable=target)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ConfigError, match=message):
            build_backend(settings, http)
