"""Streaming while tools are configured: every model step of the built-in agent streams, its
tool calls are assembled from the stream's fragments, the answer grows in the run's view and
on chat platforms, and what is recorded and delivered is exactly the non-streamed result.

Uses the tools tests' fake model (``tests/test_tools.py``), which streams when asked."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

from hosting.models import AgentProgress, AgentStep
from tests import agent_tools
from tests.conftest import Stack
from tests.fakes import SLACK_TOKEN, FakeSlack
from tests.support import eventually, scheduled_inputs
from tests.test_progress import (
    delivered_once,
    fresh_key,
    methods,
    pushes_of,
    slack,
    slack_say,
    thread_messages,
)
from tests.test_tck_slack import SIGNING_SECRET
from tests.test_tools import TOOLS, FakeModel, model, next_push, person, say, scheduled, view

__all__ = ["model", "person", "slack"]  # fixtures shared with the tools and progress tests

STEP_BASE = 1_000_000  # workflows.agent_loop.STEP_ATTEMPTS: the first model_step's base
BOTH = 'lookup_weather {"city": "Oslo"} and lookup_weather {"city": "Rome"}'


@pytest.fixture
def settings_overrides(
    model: FakeModel, slack: FakeSlack, request: pytest.FixtureRequest
) -> dict[str, object]:
    agent: dict[str, object] = {
        "kind": "openai",
        "base_url": model.url,
        "tools": TOOLS,
        "approval_required": ["send_payment"],
        "max_steps": 4,
        "heartbeat_timeout_s": 3,
        "stream_every_ms": 50,
        "progress_every_ms": 250,
        **getattr(request, "param", {}),
    }
    slack_section = {
        "signing_secret": SIGNING_SECRET,
        "bot_token": SLACK_TOKEN,
        "api_base_url": slack.base_url,
    }
    return {
        "agent": agent,
        "channels": {"slack": slack_section},
        # Every push an activity: these tests read the pushes' inputs from the history.
        "delivery": {"first_attempt_local": False},
    }


async def progress_batches(stack: Stack, run_id: str) -> list[AgentProgress]:
    """The ``agent_progress`` batches the run got, in history order."""
    history = await stack.client.get_workflow_handle(run_id).fetch_history()
    batches: list[AgentProgress] = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            continue
        attrs = event.workflow_execution_signaled_event_attributes
        [batch] = await stack.client.data_converter.decode(attrs.input.payloads, [AgentProgress])
        batches.append(batch)
    return batches


async def recorded_steps(stack: Stack, run_id: str) -> list[AgentStep]:
    return await scheduled_inputs(stack.client, run_id, "model_step", AgentStep)


async def test_the_answer_after_a_tool_call_grows_in_the_view(
    stack: Stack, person: str, model: FakeModel
) -> None:
    run_id = await say(stack, 'slowly chatty use lookup_weather {"city": "Oslo"}', person)

    async def shows(text: str) -> bool:  # the fake holds each step after its first word
        seen = await view(stack, run_id)
        return seen.output_text is None and seen.partial_text == text

    # The first step's text, before its tool call: the text so far.
    await eventually(lambda: shows("checking"), timeout=30)
    assert (await view(stack, run_id)).tool_calls == []
    model.step_gate.set()
    # The answer's step starts the text again rather than continuing it.
    await eventually(lambda: shows("final:"), timeout=30)
    seen = await view(stack, run_id)
    assert seen.status == "in_progress"
    assert [(c.name, c.phase) for c in seen.tool_calls] == [("lookup_weather", "completed")]
    model.gate.set()
    reply = await next_push(stack, 1)
    assert reply.text == "final: sunny in Oslo"
    done = await view(stack, run_id)
    assert done.output_text == reply.text and done.partial_text is None
    assert done.usage_input_tokens == 5
    assert len(model.requests) == 2
    for sent in model.requests:
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    kinds, _ = await scheduled(stack, run_id)
    assert kinds == Counter(invoke_agent=1, model_step=1, call_tool=1, push_reply=1)
    # The step counts its attempts above the first call's, so its batches restart the text.
    [step] = await recorded_steps(stack, run_id)
    assert step.progress_attempt_base == STEP_BASE
    said: dict[int, str] = {}
    seqs: dict[int, list[int]] = {}
    for batch in await progress_batches(stack, run_id):
        said[batch.attempt] = said.get(batch.attempt, "") + batch.text
        seqs.setdefault(batch.attempt, []).append(batch.seq)
    # The tool step's text is recorded whole (readers see it while the tool runs); the
    # answer's batches are a beginning of it, since the result carries the rest.
    assert set(said) == {1, STEP_BASE + 1} and said[1] == "checking lookup_weather"
    assert said[STEP_BASE + 1].startswith("final:") and reply.text.startswith(said[STEP_BASE + 1])
    assert all(numbers == list(range(len(numbers))) for numbers in seqs.values())


@pytest.mark.parametrize(
    "settings_overrides", [{"stream_every_ms": 50}, {"stream_every_ms": 0}], indirect=True
)
async def test_tool_calls_from_fragments_run_as_non_streamed_ones(
    stack: Stack, person: str, model: FakeModel, settings_overrides: dict[str, Any]
) -> None:
    streamed = settings_overrides["agent"]["stream_every_ms"] > 0
    run_id = await say(stack, f"chatty use {BOTH}", person)
    reply = await next_push(stack, 1)
    assert reply.text == "final: sunny in Oslo | sunny in Rome"
    oslo, rome = {"city": "Oslo"}, {"city": "Rome"}
    assert agent_tools.calls == [("lookup_weather", oslo), ("lookup_weather", rome)]
    kinds, call_ids = await scheduled(stack, run_id)
    assert kinds == Counter(invoke_agent=1, model_step=1, call_tool=2, push_reply=1)
    assert call_ids == ["call_0", "call_1"]
    first, second = model.requests
    assert first.get("stream", False) is streamed
    # What the model is told it said and asked is the same, streamed or not.
    assert second["messages"][-3:] == [
        {
            "role": "assistant",
            "content": "checking lookup_weather and lookup_weather",
            "tool_calls": [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": "lookup_weather", "arguments": json.dumps(args)},
                }
                for i, args in enumerate([oslo, rome])
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny in Oslo"},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny in Rome"},
    ]
    done = await view(stack, run_id)
    assert done.status == "completed" and done.output_text == reply.text
    assert done.usage_input_tokens == 5 and done.usage_output_tokens == 2
    batches = await progress_batches(stack, run_id)
    if not streamed:
        assert batches == [] and done.stream_ends == []
        return
    # The first step's text streamed before its calls; the answer's step restarted it.
    said = {b.attempt: "" for b in batches}
    for b in batches:
        said[b.attempt] += b.text
    assert set(said) == {1, STEP_BASE + 1}
    assert said[1] == "checking lookup_weather and lookup_weather"
    assert said[STEP_BASE + 1] and reply.text.startswith(said[STEP_BASE + 1])  # then the result


async def test_a_slack_thread_streams_the_answer_after_a_tool_call(
    stack: Stack, model: FakeModel, slack: FakeSlack
) -> None:
    thread = f"{fresh_key()}.000100"
    channel, run_id = await slack_say(
        stack, thread, 'slowly chatty use lookup_weather {"city": "Oslo"}'
    )

    def started(text: str) -> list[dict[str, Any]]:
        return [p for m, p in slack.calls if m == "chat.startStream" and p["markdown_text"] == text]

    async def streaming(text: str) -> bool:  # the fake holds each step after its first word
        return bool(started(text))

    await eventually(lambda: streaming("checking"), timeout=30)
    model.step_gate.set()
    await eventually(lambda: streaming("final:"), timeout=30)
    model.gate.set()
    done = await delivered_once(stack, run_id)
    assert done.output_text == "final: sunny in Oslo"
    calls = methods(slack)
    assert "chat.postMessage" not in calls  # the push completed the stream: no second copy
    assert calls.count("chat.startStream") == 2  # one per step that wrote text
    assert calls[-2:] == ["chat.stopStream", "chat.update"]
    # The first step's stream was removed once it called a tool: one message is left in the
    # thread, the answer's, and it is the run's output.
    deleted = [p["ts"] for m, p in slack.calls if m == "chat.delete"]
    [message] = thread_messages(slack, thread)
    assert len(deleted) == 1 and deleted[0] != message["ts"]
    assert message["text"] == done.output_text
    [push] = await pushes_of(stack, run_id)
    assert push.live_message == message["ts"]
    assert push.address.conversation_id == channel
