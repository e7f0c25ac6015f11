"""Tools and approvals through the Responses API, driven by the official openai SDK: a call
that needs approval is an ``mcp_approval_request`` item, answered by an
``mcp_approval_response`` input item; tool calls stream as ``mcp_call`` items."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response

from tests import agent_tools
from tests.conftest import Stack
from tests.test_doctor import cli_json, use_config
from tests.test_responses_api import KEYS, api
from tests.test_tools import TOOLS, FakeModel, model

__all__ = ["model"]  # the fake model fixture, shared with tests/test_tools.py

PAYMENT = 'use send_payment {"amount": 5, "to": "bob"}'


@pytest.fixture
def settings_overrides(model: FakeModel) -> dict[str, object]:
    return {
        "agent": {
            "kind": "openai",
            "base_url": model.url,
            "tools": [*TOOLS, "tests.agent_tools:wait_for_gate"],
            "approval_required": ["send_payment"],
            "tools_not_idempotent": ["send_payment"],
            "max_steps": 4,
        },
        "channels": {"responses": {"api_keys": KEYS}},
    }


@pytest.fixture
async def alice(stack: Stack) -> AsyncIterator[AsyncOpenAI]:
    client = api(stack)
    yield client
    await client.close()


def approval_of(response: Response) -> tuple[str, dict[str, object]]:
    """The response's approval request: its id, and the arguments it shows."""
    assert response.status == "completed"  # as OpenAI: the response ends at the request
    [item] = [i for i in response.output if i.type == "mcp_approval_request"]
    assert item.type == "mcp_approval_request"
    assert item.name == "send_payment" and item.server_label == "switchboard"
    return item.id, json.loads(item.arguments)


async def test_approve_through_the_api_runs_the_tool_once(stack: Stack, alice: AsyncOpenAI) -> None:
    asked = await alice.responses.create(model="m", input=PAYMENT)
    request_id, arguments = approval_of(asked)
    assert arguments == {"amount": 5, "to": "bob"}
    assert agent_tools.calls == []
    again = await alice.responses.retrieve(asked.id)  # GET shows the same request
    assert approval_of(again)[0] == request_id

    done = await alice.responses.create(
        model="m",
        previous_response_id=asked.id,
        input=[
            {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": True}
        ],
    )
    assert done.status == "completed" and done.id == asked.id  # the same response, carried on
    assert done.output_text.startswith('final: {"paid": 5, "to": "bob"')
    [call] = [i for i in done.output if i.type == "mcp_call"]
    assert call.type == "mcp_call"
    assert call.name == "send_payment" and call.status == "completed"
    assert call.approval_request_id == request_id
    assert [name for name, _ in agent_tools.calls] == ["send_payment"]
    assert (await alice.responses.retrieve(asked.id)).output_text == done.output_text


async def test_deny_through_the_api_tells_the_model(stack: Stack, alice: AsyncOpenAI) -> None:
    asked = await alice.responses.create(model="m", input=PAYMENT, background=True)
    from tests.support import eventually

    async def waiting() -> bool:
        got = await alice.responses.retrieve(asked.id)
        return any(i.type == "mcp_approval_request" for i in got.output)

    await eventually(waiting)
    request_id, _ = approval_of(await alice.responses.retrieve(asked.id))
    answered = await alice.responses.create(
        model="m",
        previous_response_id=asked.id,
        background=True,
        input=[
            {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": False}
        ],
    )
    assert answered.status in ("in_progress", "completed")
    assert not any(i.type == "mcp_approval_request" for i in answered.output)

    async def finished() -> bool:
        return (await alice.responses.retrieve(asked.id)).output_text != ""

    await eventually(finished)
    done = await alice.responses.retrieve(asked.id)
    assert done.output_text == "final: refused: send_payment did not run: the person declined it."
    assert agent_tools.calls == []


async def test_wrong_and_foreign_approval_answers_are_404(stack: Stack, alice: AsyncOpenAI) -> None:
    asked = await alice.responses.create(model="m", input=PAYMENT)
    request_id, _ = approval_of(asked)

    def answer(approval_id: str) -> list[dict[str, object]]:
        return [
            {"type": "mcp_approval_response", "approval_request_id": approval_id, "approve": True}
        ]

    with pytest.raises(openai.NotFoundError) as wrong:
        await alice.responses.create(
            model="m", previous_response_id=asked.id, input=answer("mcpr_ZZZZZZ")
        )
    assert wrong.value.code == "approval_request_not_found"
    bob = api(stack, KEYS["bob"])
    with pytest.raises(openai.NotFoundError):  # bob cannot even name alice's response
        await bob.responses.create(
            model="m", previous_response_id=asked.id, input=answer(request_id)
        )
    await bob.close()
    with pytest.raises(openai.BadRequestError):
        await alice.responses.create(model="m", input=answer(request_id))
    assert agent_tools.calls == []
    still = await alice.responses.retrieve(asked.id)
    assert approval_of(still)[0] == request_id


async def test_the_sdk_stream_parses_tool_calls_and_an_approval(
    stack: Stack, alice: AsyncOpenAI
) -> None:
    script = 'use lookup_weather {"city": "Oslo"} then send_payment {"amount": 5, "to": "bob"}'
    first = [e async for e in await alice.responses.create(model="m", input=script, stream=True)]
    assert [e.type for e in first] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # the weather call, in progress
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.output_item.done",
        "response.output_item.added",  # the approval request
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in first] == list(range(len(first)))
    weather = first[5]
    assert weather.type == "response.output_item.done" and weather.item.type == "mcp_call"
    assert weather.item.name == "lookup_weather" and weather.item.status == "completed"
    closing = first[-1]
    assert closing.type == "response.completed"
    request_id, _ = approval_of(closing.response)

    stream = await alice.responses.create(
        model="m",
        previous_response_id=closing.response.id,
        stream=True,
        input=[
            {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": True}
        ],
    )
    rest = [e async for e in stream]
    kinds = [e.type for e in rest]
    assert kinds[:6] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.output_item.done",
    ]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    paid = rest[5]
    assert paid.type == "response.output_item.done" and paid.item.type == "mcp_call"
    assert paid.item.name == "send_payment" and paid.item.approval_request_id == request_id
    final = rest[-1]
    assert final.type == "response.completed"
    assert final.response.output_text.startswith("final: sunny in Oslo | ")
    assert [name for name, _ in agent_tools.calls] == ["lookup_weather", "send_payment"]


async def test_v1_runs_stream_shows_the_tool_being_called(stack: Stack, alice: AsyncOpenAI) -> None:
    agent_tools.gate.clear()
    created = await alice.responses.create(
        model="m", input='use wait_for_gate {"topic": "tides"}', background=True
    )
    auth = {"Authorization": f"Bearer {KEYS['alice']}"}
    resp = await stack.http.get(f"/v1/runs/{created.id}?stream=true", headers=auth)
    states: list[dict[str, object]] = []
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: ") and line != "data: {}":
            states.append(json.loads(line[6:]))
            if states[-1]["progress_note"] == "calling wait_for_gate…":
                agent_tools.gate.set()  # seen while it runs: let the tool finish
    notes = [s["progress_note"] for s in states]
    assert "calling wait_for_gate…" in notes
    seen_at = notes.index("calling wait_for_gate…")
    assert all(s["output_text"] is None for s in states[: seen_at + 1])
    assert states[-1]["status"] == "completed"
    assert states[-1]["output_text"] == "final: found tides"
    assert states[-1]["progress_note"] is None


async def test_waiting_for_approval_is_requires_action_with_a_note(
    stack: Stack,
    alice: AsyncOpenAI,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = await alice.responses.create(model="m", input=PAYMENT)
    auth = {"Authorization": f"Bearer {KEYS['alice']}"}
    got = await (await stack.http.get(f"/v1/runs/{asked.id}", headers=auth)).json()
    assert got["progress_note"] == "waiting for your approval"
    assert got["status"] == "requires_action"
    assert got["pending_tool"] == "send_payment"  # the name only, never the arguments
    # Operators see the same in `switchboard runs show`, with no content.
    use_config(stack.settings, tmp_path, monkeypatch)
    code, doc = await cli_json(capsys, "runs", "show", got["run_id"])
    assert code == 0
    assert doc["run"]["status"] == "requires_action"
    assert doc["run"]["pending_tool"] == "send_payment"
    assert "bob" not in json.dumps(doc)


async def test_a_cancelled_wait_leaves_no_approval_request(
    stack: Stack, alice: AsyncOpenAI
) -> None:
    asked = await alice.responses.create(model="m", input=PAYMENT)
    request_id, _ = approval_of(asked)
    cancelled = await alice.responses.cancel(asked.id)
    assert cancelled.status == "cancelled"
    assert not any(i.type == "mcp_approval_request" for i in cancelled.output)
    auth = {"Authorization": f"Bearer {KEYS['alice']}"}
    got = await (await stack.http.get(f"/v1/runs/{asked.id}", headers=auth)).json()
    assert got["status"] == "cancelled" and got["progress_note"] is None
    with pytest.raises(openai.NotFoundError):
        await alice.responses.create(
            model="m",
            previous_response_id=asked.id,
            input=[
                {
                    "type": "mcp_approval_response",
                    "approval_request_id": request_id,
                    "approve": True,
                }
            ],
        )
    assert agent_tools.calls == []


async def test_an_api_approval_replays(stack: Stack, alice: AsyncOpenAI) -> None:
    """A one-off response that waited for approval, its approval workflow and the answer:
    both replay (``SWITCHBOARD_RECORD_HISTORIES=<tag>`` records them)."""
    from tests.test_replay import HISTORIES, RECORD_TAG, each, replayer

    asked = await alice.responses.create(model="m", input=PAYMENT)
    request_id, _ = approval_of(asked)
    done = await alice.responses.create(
        model="m",
        previous_response_id=asked.id,
        input=[
            {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": True}
        ],
    )
    assert done.output_text.startswith("final: ")
    ids: list[str] = []
    async for wf in stack.client.list_workflows(
        f'TaskQueue = "{stack.settings.temporal.task_queue}"'
    ):
        ids.append(wf.id)
    kinds = {wid.split("/", 1)[0] for wid in ids}
    assert kinds == {"run", "approval"}, ids
    histories = [await stack.client.get_workflow_handle(wid).fetch_history() for wid in ids]
    result = await replayer().replay_workflows(each(histories), raise_on_replay_failure=False)
    assert result.replay_failures == {}
    if os.environ.get("SWITCHBOARD_RECORD_HISTORIES"):
        for history in histories:
            kind = history.workflow_id.split("/", 1)[0]
            name = f"responses_{kind}.json"
            (HISTORIES / (f"{RECORD_TAG}_{name}" if RECORD_TAG else name)).write_text(
                history.to_json()
            )
