"""Tools as durable steps and approvals by text command, against a fake Chat Completions model.

The fake model reads the user's message as a script: ``use TOOL {json} then TOOL {json}``
asks for those tools one step at a time (``TOOL {json} and TOOL {json}``: both in one step)
and then answers ``final: <every tool result>``; ``loop forever`` asks for a tool on every
step; anything else is answered at once. A leading ``chatty`` makes every step that calls
tools say ``checking <tools>`` first; a leading ``slowly`` holds a streamed answer after its
first word until the test opens the model's ``gate`` (``step_gate`` for a step's text before
its tool calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from temporalio.api.enums.v1 import EventType

from hosting.ids import approval_workflow_id
from hosting.models import PushRequest, RunView, ToolInvocation
from tests import agent_tools
from tests.conftest import Stack
from tests.support import closed_history, eventually, local_activity_type
from tests.test_linking import session_of
from worker import build_worker

CODE = re.compile(r"/approve ([A-Z2-9]{6})\b")
TOOLS = [
    "tests.agent_tools:lookup_weather",
    "tests.agent_tools:broken",
    "tests.agent_tools:send_payment",
]


class FakeModel:
    """Speaks Chat Completions with ``tools``; records every request it got. Asked to stream,
    it sends the same answer in the real chunk format: the text word by word, each tool call
    as a head (index, id, name) and its arguments in pieces, the finish reason, the usage,
    then ``[DONE]``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""
        self.gate = asyncio.Event()
        self.step_gate = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await self.respond(request, await request.json())

    async def respond(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        self.requests.append(body)
        messages = body["messages"]
        user = next(m for m in reversed(messages) if m["role"] == "user")["content"]
        hold = user.startswith("slowly ")
        user = user.removeprefix("slowly ")
        chatty = user.startswith("chatty ")
        user = user.removeprefix("chatty ")
        results = [m["content"] for m in messages if m["role"] == "tool"]
        done = sum(1 for m in messages if m["role"] == "assistant" and m.get("tool_calls"))
        completion: dict[str, Any]
        if user == "loop forever":
            completion = self._calls_body([("lookup_weather", {"city": f"Loop{done}"})], done)
        elif user.startswith("use ") and done < len(steps := user[4:].split(" then ")):
            calls = [call.split(" ", 1) for call in steps[done].split(" and ")]
            parsed = [(name, json.loads(args)) for name, args in calls]
            completion = self._calls_body(parsed, len(results))
            if chatty:
                completion["choices"][0]["message"]["content"] = "checking " + " and ".join(
                    name for name, _ in parsed
                )
        elif user.startswith("use "):
            completion = self._answer_body("final: " + " | ".join(results))
        else:
            completion = self._answer_body(f"plain: {user}")
        if not body.get("stream"):
            return web.json_response(completion)
        return await self._stream(request, body, completion, hold)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], completion: dict[str, Any], hold: bool
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        message = completion["choices"][0]["message"]
        calls = message.get("tool_calls") or []
        first, *rest = (message["content"] or "").split(" ")
        await send_chunk(resp, sse_chunk({"role": "assistant", "content": first}))
        if hold and message["content"]:
            await (self.step_gate if calls else self.gate).wait()
        for word in rest:
            await send_chunk(resp, sse_chunk({"content": " " + word}))
        for index, call in enumerate(calls):
            head = {"index": index, "id": call["id"], "type": "function"}
            name = {"name": call["function"]["name"], "arguments": ""}
            await send_chunk(resp, sse_chunk({"tool_calls": [{**head, "function": name}]}))
            arguments = call["function"]["arguments"]
            for at in range(0, len(arguments), 7):  # split mid-token, as models do
                piece = {"index": index, "function": {"arguments": arguments[at : at + 7]}}
                await send_chunk(resp, sse_chunk({"tool_calls": [piece]}))
        await send_chunk(resp, sse_chunk({}, "tool_calls" if calls else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = completion.get("usage")
            await send_chunk(resp, {**sse_chunk({}), "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        return resp

    @staticmethod
    def _calls_body(calls: list[tuple[str, dict[str, Any]]], first: int) -> dict[str, Any]:
        tool_calls = [
            {
                "id": f"call_{first + i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(calls)
        ]
        message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
        return {"choices": [{"index": 0, "message": message}]}

    @staticmethod
    def _answer_body(text: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        usage = {"prompt_tokens": 5, "completion_tokens": 2}
        return {"choices": [{"index": 0, "message": message}], "usage": usage}

    @classmethod
    def _calls(cls, calls: list[tuple[str, dict[str, Any]]], first: int) -> web.Response:
        return web.json_response(cls._calls_body(calls, first))

    @classmethod
    def _answer(cls, text: str) -> web.Response:
        return web.json_response(cls._answer_body(text))


def sse_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """One Chat Completions stream chunk, as the fake models here send them."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def send_chunk(resp: web.StreamResponse, chunk: dict[str, Any]) -> None:
    await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())


@contextlib.asynccontextmanager
async def serving_model(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A fake Chat Completions server on loopback; yields its base URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/v1"))
    finally:
        await server.close()


@pytest.fixture
async def model() -> AsyncIterator[FakeModel]:
    fake = FakeModel()
    async with serving_model(fake.handle) as fake.url:
        agent_tools.calls.clear()
        yield fake
        fake.gate.set()
        fake.step_gate.set()


@pytest.fixture
def settings_overrides(model: FakeModel, request: pytest.FixtureRequest) -> dict[str, object]:
    agent: dict[str, object] = {
        "kind": "openai",
        "base_url": model.url,
        "tools": TOOLS,
        "approval_required": ["send_payment"],
        "tools_not_idempotent": ["broken", "send_payment"],
        "max_steps": 4,
        "heartbeat_timeout_s": 3,
        **getattr(request, "param", {}),
    }
    return {"agent": agent}


@pytest.fixture
def person() -> str:
    """A fresh account per test: sessions outlive the worker of the test that started them."""
    return f"tia-{uuid.uuid4().hex[:8]}"


async def say(stack: Stack, text: str, user: str) -> str:
    msg_id = uuid.uuid4().hex
    body = {"message_id": msg_id, "user": user, "conversation": user, "text": text}
    resp = await stack.http.post("/channels/loopback", data=json.dumps(body))
    assert resp.status == 202
    return f"run/default/loopback/{msg_id}"


async def next_push(stack: Stack, count: int) -> PushRequest:
    return (await stack.loopback.outbox.wait_for(count))[count - 1]


async def view(stack: Stack, run_id: str) -> RunView:
    result: RunView = await stack.client.get_workflow_handle(run_id).query(
        "view", result_type=RunView
    )
    return result


async def scheduled(stack: Stack, run_id: str) -> tuple[Counter[str], list[str]]:
    """Activities the run scheduled (local ones too), by type, and its tool calls' ids."""
    history = await closed_history(stack.client, run_id)
    kinds: Counter[str] = Counter()
    call_ids: list[str] = []
    for event in history.events:
        if local := local_activity_type(event):  # a push's first attempt
            kinds[local] += 1
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        attrs = event.activity_task_scheduled_event_attributes
        kinds[attrs.activity_type.name] += 1
        if attrs.activity_type.name == "call_tool":
            [inv] = await stack.client.data_converter.decode(attrs.input.payloads, [ToolInvocation])
            call_ids.append(inv.call.call_id)
    return kinds, call_ids


async def test_a_tool_runs_once_and_its_result_reaches_the_model(
    stack: Stack, person: str, model: FakeModel
) -> None:
    run_id = await say(stack, 'use lookup_weather {"city": "Oslo"}', person)
    reply = await next_push(stack, 1)
    assert reply.text == "final: sunny in Oslo"
    assert agent_tools.calls == [("lookup_weather", {"city": "Oslo"})]
    first, second = model.requests
    specs = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(specs) == {"lookup_weather", "broken", "send_payment"}
    weather = specs["lookup_weather"]
    assert weather["description"] == "Today's weather in a city."
    assert weather["parameters"]["required"] == ["city"]
    assert weather["parameters"]["properties"]["city"]["description"] == "a city name"
    assert "context" not in specs["send_payment"]["parameters"]["properties"]
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "lookup_weather"
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_0",
        "content": "sunny in Oslo",
    }
    kinds, call_ids = await scheduled(stack, run_id)
    assert kinds == Counter(invoke_agent=1, model_step=1, call_tool=1, push_reply=1)
    assert call_ids == ["call_0"]
    done = await view(stack, run_id)
    assert done.status == "completed"
    assert done.usage_input_tokens == 5


async def test_a_tool_error_and_an_unknown_tool_are_results_for_the_model(
    stack: Stack, person: str
) -> None:
    run_id = await say(stack, 'use broken {"reason": "disk full"} then nosuch {}', person)
    reply = await next_push(stack, 1)
    assert reply.text == (
        "final: error: the tool failed: RuntimeError: disk full (it is not retried, since it "
        "may not be safe to repeat) | error: no tool named 'nosuch'"
    )
    assert agent_tools.calls == [("broken", {"reason": "disk full"})]  # not idempotent: once
    assert (await view(stack, run_id)).status == "completed"
    kinds, _ = await scheduled(stack, run_id)
    assert kinds["call_tool"] == 1  # the unknown tool is answered without an activity


async def test_bad_arguments_are_a_result_too(stack: Stack, person: str) -> None:
    await say(stack, 'use lookup_weather {"town": "Oslo"}', person)
    reply = await next_push(stack, 1)
    assert reply.text.startswith("final: error: invalid arguments:")
    assert agent_tools.calls == []


async def test_max_steps_ends_the_turn_with_a_clear_message(
    stack: Stack, person: str, model: FakeModel
) -> None:
    run_id = await say(stack, "loop forever", person)
    reply = await next_push(stack, 1)
    assert reply.text == (
        "I stopped before finishing: this turn reached its limit of 4 model calls "
        "(agent.max_steps)."
    )
    assert len(model.requests) == 4
    assert len(agent_tools.calls) == 3  # the last step's calls are not run: nobody would read them
    assert (await view(stack, run_id)).status == "completed"


async def test_no_tool_call_is_one_model_call(stack: Stack, person: str, model: FakeModel) -> None:
    run_id = await say(stack, "hello", person)
    assert (await next_push(stack, 1)).text == "plain: hello"
    kinds, _ = await scheduled(stack, run_id)
    assert kinds == Counter(invoke_agent=1, push_reply=1)


async def ask_for_payment(stack: Stack, person: str, first: str = "") -> tuple[str, str]:
    """Starts a turn that needs approval; returns the run id and the code it was sent."""
    script = f"use {first} then " if first else "use "
    run_id = await say(stack, script + 'send_payment {"amount": 5, "to": "bob"}', person)
    prompt = await next_push(stack, 1)
    assert prompt.phase == "approval"
    assert prompt.text.startswith('The agent wants to run send_payment with {"amount": 5')
    match = CODE.search(prompt.text)
    assert match, prompt.text
    assert f"/deny {match.group(1)}" in prompt.text
    waiting = await view(stack, run_id)
    assert waiting.status == "in_progress"
    assert waiting.pending_tool == "send_payment"
    assert waiting.action_text == prompt.text
    return run_id, match.group(1)


async def test_an_approval_waits_and_approve_from_the_same_person_releases_it(
    stack: Stack,
    person: str,
) -> None:
    run_id, code = await ask_for_payment(stack, person)
    assert [c for c, _ in agent_tools.calls] == []

    # Someone else's answer changes nothing and is told exactly what an unknown code is told.
    await say(stack, f"/approve {code}", f"mallory-{person}")
    assert (await next_push(stack, 2)).text == "That approval code is not valid or has expired."
    await say(stack, "/approve ZZZZZZ", person)
    assert (await next_push(stack, 3)).text == "That approval code is not valid or has expired."
    assert (await view(stack, run_id)).pending_tool == "send_payment"

    await say(stack, f"/approve {code.lower()}", person)
    pushes = await stack.loopback.outbox.wait_for(5)
    assert {p.text for p in pushes[3:]} >= {"Approved: the agent goes on."}
    final = next(p for p in pushes[3:] if p.run_id == run_id)
    expected = {"paid": 5, "to": "bob", "idempotency_key": f"{run_id}:call_0"}
    assert final.text == "final: " + json.dumps(expected)
    paid = ("send_payment", {"amount": 5, "to": "bob", "key": f"{run_id}:call_0"})
    assert agent_tools.calls == [paid]
    done = await view(stack, run_id)
    assert done.status == "completed"
    assert done.pending_tool is None
    # The approval and the reply are two pushes with two idempotency keys.
    keys = [p.idempotency_key for p in pushes if p.run_id == run_id]
    assert len(set(keys)) == 2

    # A code is answered once.
    await say(stack, f"/deny {code}", person)
    assert (await next_push(stack, 6)).text == "That approval code is not valid or has expired."


async def test_deny_tells_the_model_it_was_refused(stack: Stack, person: str) -> None:
    run_id, code = await ask_for_payment(stack, person)
    await say(stack, f"/deny {code}", person)
    pushes = await stack.loopback.outbox.wait_for(3)
    final = next(p for p in pushes[1:] if p.run_id == run_id)
    assert final.text == "final: refused: send_payment did not run: the person declined it."
    assert "Declined: the agent is told, and the tool does not run." in {p.text for p in pushes}
    assert agent_tools.calls == []


@pytest.mark.parametrize("settings_overrides", [{"approval_timeout_s": 1}], indirect=True)
async def test_an_unanswered_approval_counts_as_declined(stack: Stack, person: str) -> None:
    run_id, _ = await ask_for_payment(stack, person)
    final = await next_push(stack, 2)
    assert final.run_id == run_id
    assert final.text == (
        "final: refused: send_payment did not run: nobody approved it in time, so it counts "
        "as declined."
    )
    assert agent_tools.calls == []


async def test_a_worker_restart_between_steps_repeats_no_tool_call(
    stack: Stack, person: str
) -> None:
    run_id, code = await ask_for_payment(stack, person, first='lookup_weather {"city": "Rome"}')
    assert agent_tools.calls == [("lookup_weather", {"city": "Rome"})]
    # The worker that ran the first steps goes away; a new one picks the run up from history.
    await stack.worker.shutdown()
    restarted = build_worker(stack.client, stack.settings, registry=stack.registry)
    async with restarted as worker, worker:
        await say(stack, f"/approve {code}", person)

        async def finished() -> bool:
            return (await view(stack, run_id)).status == "completed"

        await eventually(finished, timeout=60)
    assert [name for name, _ in agent_tools.calls] == ["lookup_weather", "send_payment"]
    final = next(
        p for p in stack.loopback.outbox.sent if p.run_id == run_id and p.phase == "response"
    )
    assert final.text.startswith("final: sunny in Rome | ")
    kinds, call_ids = await scheduled(stack, run_id)
    assert call_ids == ["call_0", "call_1"]  # each tool call scheduled exactly once
    assert kinds["model_step"] == 2


async def test_a_tool_run_with_an_approval_replays(stack: Stack, person: str) -> None:
    """A weather call, an approval and a payment: the run, its approval workflow and the
    session replay (``SWITCHBOARD_RECORD_HISTORIES=<tag>`` records them next to the others)."""
    from tests.test_replay import HISTORIES, RECORD_TAG, each, replayer

    run_id, code = await ask_for_payment(stack, person, first='lookup_weather {"city": "Rome"}')
    await say(stack, f"/approve {code}", person)

    async def closed() -> bool:
        desc = await stack.client.get_workflow_handle(run_id).describe()
        return desc.close_time is not None

    await eventually(closed, timeout=60)
    session = await session_of(stack, run_id)
    ids = [run_id, session, approval_workflow_id(session, code)]
    histories = [await stack.client.get_workflow_handle(wid).fetch_history() for wid in ids]
    result = await replayer().replay_workflows(each(histories), raise_on_replay_failure=False)
    assert result.replay_failures == {}
    if os.environ.get("SWITCHBOARD_RECORD_HISTORIES"):
        for kind, history in zip(
            ("tools_run", "tools_session", "tools_approval"), histories, strict=True
        ):
            name = f"{RECORD_TAG}_{kind}.json" if RECORD_TAG else f"{kind}.json"
            (HISTORIES / name).write_text(history.to_json())


async def test_a_linked_account_on_another_channel_can_approve(stack: Stack, person: str) -> None:
    from tests.support import session_id
    from tests.test_linking import links, new_code, webhook_say

    other = f"{person}-w"
    code = await new_code(stack, person)
    await webhook_say(stack, f"/link {code}", user=other)
    [linked] = await stack.receiver.wait_for(1)
    assert str(linked["text"]).startswith("Linked with your loopback account")

    async def aliased() -> bool:
        return (await links(stack, session_id("webhook", other))).alias_of is not None

    await eventually(aliased)
    run_id = await say(stack, 'use send_payment {"amount": 5, "to": "bob"}', person)
    prompt = await next_push(stack, 2)
    assert prompt.phase == "approval" and prompt.run_id == run_id
    match = CODE.search(prompt.text)
    assert match
    approval = match.group(1)

    # A person on the other channel who is not linked: refused, and nothing changes.
    await webhook_say(stack, f"/approve {approval}", user=f"stranger-{person}")
    refused = await stack.receiver.wait_for(2)
    assert refused[-1]["text"] == "That approval code is not valid or has expired."
    assert (await view(stack, run_id)).pending_tool == "send_payment"
    assert agent_tools.calls == []

    # The same person's linked account answers from its own channel.
    await webhook_say(stack, f"/approve {approval}", user=other)
    answered = await stack.receiver.wait_for(3)
    assert answered[-1]["text"] == "Approved: the agent goes on."
    final = await next_push(stack, 3)  # the reply goes where the run started
    assert final.run_id == run_id and final.text.startswith('final: {"paid": 5')
    assert [name for name, _ in agent_tools.calls] == ["send_payment"]


async def test_the_next_turn_sees_a_turn_that_waited_for_approval(
    stack: Stack, person: str, model: FakeModel
) -> None:
    run_id, code = await ask_for_payment(stack, person)
    await say(stack, f"/approve {code}", person)

    async def closed() -> bool:  # the run hands its turn to the session before it closes
        desc = await stack.client.get_workflow_handle(run_id).describe()
        return desc.close_time is not None

    await eventually(closed, timeout=60)
    answer = (await view(stack, run_id)).output_text
    assert answer is not None and answer.startswith('final: {"paid": 5')
    await say(stack, "and now?", person)
    await stack.loopback.outbox.wait_for(4)  # prompt, "Approved", the answer, this reply
    later = model.requests[-1]["messages"]
    assert later[-1] == {"role": "user", "content": "and now?"}
    turns = [(m["role"], m["content"]) for m in later if m["role"] in ("user", "assistant")]
    assert ("user", 'use send_payment {"amount": 5, "to": "bob"}') in turns
    assert ("assistant", answer) in turns
    assert not any("/approve" in str(text) for _, text in turns)  # commands stay out
