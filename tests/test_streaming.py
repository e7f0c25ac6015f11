"""Live replies: the answer grows in the run's durable state and streams to every reader."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from hosting.models import RunView
from tests.conftest import Stack
from tests.support import eventually
from tests.test_linking import loopback_say
from tests.test_responses_api import KEYS, api

TEXT = "one two three four five"
STREAMING = {
    "channels": {"responses": {"api_keys": KEYS}},
    "agent": {"stream_delay_ms": 150, "stream_every_ms": 50},
}


@pytest.fixture
async def alice(stack: Stack) -> AsyncIterator[AsyncOpenAI]:
    client = api(stack)
    yield client
    await client.close()


@pytest.mark.parametrize("settings_overrides", [STREAMING], indirect=True)
async def test_the_sdk_streams_a_foreground_reply_word_by_word(
    stack: Stack, alice: AsyncOpenAI
) -> None:
    stream = await alice.responses.create(model="m", input=TEXT, stream=True)
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 3, deltas  # it grew, not one final blob
    assert "".join(deltas) == f"echo: {TEXT}"
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(events)))
    assert events[-1].response.output_text == f"echo: {TEXT}"  # type: ignore[union-attr]


@pytest.mark.parametrize("settings_overrides", [STREAMING], indirect=True)
async def test_a_background_stream_resumes_after_the_last_event_seen(
    stack: Stack, alice: AsyncOpenAI
) -> None:
    stream = await alice.responses.create(model="m", input=TEXT, stream=True, background=True)
    first = []
    async for event in stream:
        first.append(event)
        if event.type == "response.output_text.delta" and len(first) >= 6:
            break  # the connection drops mid-answer
    await stream.close()
    response_id = first[0].response.id  # type: ignore[union-attr]
    last = first[-1].sequence_number
    rest = [
        e
        async for e in await alice.responses.retrieve(response_id, stream=True, starting_after=last)
    ]
    assert rest[0].sequence_number == last + 1
    assert rest[-1].type == "response.completed"
    deltas = [e.delta for e in [*first, *rest] if e.type == "response.output_text.delta"]
    assert "".join(deltas) == f"echo: {TEXT}"
    # The final reply is what the run records, whatever happened to the stream.
    done = await alice.responses.retrieve(response_id)
    assert done.output_text == f"echo: {TEXT}"


@pytest.mark.parametrize(
    "settings_overrides",
    [{"agent": {"stream_delay_ms": 150, "stream_every_ms": 50}}],
    indirect=True,
)
async def test_the_run_records_the_answer_so_far_in_bounded_batches(stack: Stack) -> None:
    run_id = await loopback_say(stack, TEXT, user="streamer")
    handle = stack.client.get_workflow_handle(run_id)
    partials: list[str] = []

    async def finished() -> bool:
        view = await handle.query("view", result_type=RunView)
        if view.partial_text and (not partials or partials[-1] != view.partial_text):
            partials.append(view.partial_text)
        return view.status.finished

    await eventually(finished, timeout=30)
    assert len(partials) >= 2 and all(f"echo: {TEXT}".startswith(p) for p in partials)
    view = await handle.query("view", result_type=RunView)
    assert view.output_text == f"echo: {TEXT}" and view.partial_text is None
    history = await handle.fetch_history()
    signals = [
        e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    # Six deltas 150 ms apart, recorded at most every 50 ms: at most one signal per delta.
    assert 2 <= len(signals) <= 6
    assert len(view.stream_ends) == len(signals)


@pytest.mark.parametrize("settings_overrides", [STREAMING], indirect=True)
async def test_v1_runs_streams_the_whole_state_for_other_callers(
    stack: Stack, alice: AsyncOpenAI
) -> None:
    import json

    created = await alice.responses.create(model="m", input=TEXT, background=True)
    auth = {"Authorization": f"Bearer {KEYS['alice']}"}
    resp = await stack.http.get(f"/v1/runs/{created.id}?stream=true", headers=auth)
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events: list[tuple[str, dict[str, object]]] = []
    event_id = ""
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("id: "):
            event_id = line[4:]
        if line.startswith("data: ") and line != "data: {}":
            events.append((event_id, json.loads(line[6:])))
    partials = [e["partial_text"] for _, e in events if e["partial_text"]]
    assert len(partials) >= 2 and all(f"echo: {TEXT}".startswith(str(p)) for p in partials)
    last_id, last = events[-1]
    assert last["status"] == "completed" and last["output_text"] == f"echo: {TEXT}"
    # A reconnect that already saw the final state gets nothing new but the end.
    again = await stack.http.get(
        f"/v1/runs/{created.id}?stream=true", headers={**auth, "Last-Event-ID": last_id}
    )
    body = await again.text()
    assert "event: run" not in body and "event: end" in body
