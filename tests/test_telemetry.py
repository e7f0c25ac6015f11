"""Traces: every webhook message is one trace, from the gateway's HTTP span to the push (the
second message of a conversation too, though its session was started by the first), and no
span carries the message or the person."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client

from channels.registry import build_registry
from gateway import build_app
from hosting.settings import TelemetrySettings
from hosting.telemetry import start_tracing
from hosting.temporal_client import connect
from hosting.trace_context import valid_traceparent
from tests.conftest import temporal_address
from tests.support import (
    WEBHOOK_SECRET,
    Receiver,
    eventually,
    make_settings,
    webhook_headers,
    webhook_message,
)
from worker import build_worker

TEXT = "the secret plan is tangerine"
USER = "person-4711@example.org"


@dataclass
class TracedStack:
    http: TestClient
    spans: InMemorySpanExporter


@pytest.fixture
def intake() -> str:
    return "update"


@pytest.fixture
async def traced(client: Client, receiver: Receiver, intake: str) -> AsyncIterator[TracedStack]:
    settings = make_settings(
        f"tq-trace-{uuid.uuid4().hex}",
        temporal_address(client),
        gateway={"intake": intake},
        channels={"webhook": {"secret": WEBHOOK_SECRET, "callback_url": receiver.url}},
    )
    exporter = InMemorySpanExporter()
    tracing = start_tracing(settings.telemetry, "switchboard-test", exporter=exporter)
    assert tracing is not None
    traced_client = await connect(settings, interceptors=[tracing.interceptor()])
    registry = build_registry(settings)
    async with build_worker(traced_client, settings, registry=registry) as worker, worker:
        app = build_app(settings, client=traced_client, registry=registry, tracing=tracing)
        async with TestClient(TestServer(app, host="127.0.0.1")) as http:
            yield TracedStack(http, exporter)
    tracing.shutdown()


def ancestry(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """Span names from the root down to ``span``."""
    chain = [span.name]
    while span.parent is not None:
        parent = by_id.get(span.parent.span_id)
        assert parent is not None, f"{span.name} has a parent that was never exported"
        chain.insert(0, parent.name)
        span = parent
    return chain


def test_tracing_is_off_without_an_endpoint() -> None:
    assert start_tracing(TelemetrySettings(), "switchboard-test") is None


def test_only_well_formed_traceparents_are_kept() -> None:
    good = f"00-{'a1' * 16}-{'b2' * 8}-01"
    assert valid_traceparent(good) == good
    zero_trace = f"00-{'0' * 32}-{'b2' * 8}-01"
    zero_span = f"00-{'a1' * 16}-{'0' * 16}-01"
    for bad in (None, 42, "", good.upper(), "01" + good[2:], zero_trace, zero_span, good + "\n"):
        assert valid_traceparent(bad) is None, bad


async def test_one_webhook_message_is_one_trace_down_to_the_push(
    traced: TracedStack, receiver: Receiver
) -> None:
    msg_id = f"msg_{uuid.uuid4().hex}"
    body = webhook_message(USER, "conv-1", TEXT)
    resp = await traced.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, msg_id)
    )
    assert resp.status == 202, await resp.text()
    [push] = await receiver.wait_for(1)
    assert push["text"] == f"echo: {TEXT}"

    def named(name: str) -> list[ReadableSpan]:
        return [s for s in traced.spans.get_finished_spans() if s.name == name]

    async def push_span_ended() -> bool:
        return bool(named("RunActivity:push_reply"))

    await eventually(push_span_ended)
    spans = traced.spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    [http_span] = named("POST /channels/{channel}")
    assert http_span.parent is None
    assert http_span.attributes is not None
    assert http_span.attributes["switchboard.channel"] == "webhook"
    assert http_span.attributes["http.response.status_code"] == 202

    def parent_of(span: ReadableSpan) -> str:
        assert span.parent is not None, span.name
        return by_id[span.parent.span_id].name

    # The SDK marks a workflow's (and a handler's) start with a span of no duration beside the
    # calls it makes, all children of the call that started it.
    [push_span] = named("RunActivity:push_reply")
    assert ancestry(push_span, by_id) == [
        "POST /channels/{channel}",
        "StartUpdateWithStartWorkflow:SessionWorkflow",
        "StartChildWorkflow:AgentRunWorkflow",
        "StartActivity:push_reply",
        "RunActivity:push_reply",
    ]
    [session_span] = named("RunWorkflow:SessionWorkflow")
    [update_span] = named("HandleUpdate:submit")
    for span in (session_span, update_span):
        assert parent_of(span) == "StartUpdateWithStartWorkflow:SessionWorkflow"
    [run_span] = named("RunWorkflow:AgentRunWorkflow")
    assert parent_of(run_span) == "StartChildWorkflow:AgentRunWorkflow"
    [agent_span] = named("RunActivity:invoke_agent")
    assert ancestry(agent_span, by_id)[-3:] == [
        "StartChildWorkflow:AgentRunWorkflow",
        "StartActivity:invoke_agent",
        "RunActivity:invoke_agent",
    ]

    trace_spans = [s for s in spans if s.context.trace_id == http_span.context.trace_id]
    assert len(trace_spans) == len(spans), "every span belongs to the message's trace"
    for span in trace_spans:
        values = [span.name, *(str(v) for v in (span.attributes or {}).values())]
        values += [str(v) for e in span.events for v in (e.attributes or {}).values()]
        for value in values:
            assert TEXT not in value and "tangerine" not in value, (span.name, value)
            assert USER not in value and "person-4711" not in value, (span.name, value)


def assert_no_content(spans: list[ReadableSpan], *secrets: str) -> None:
    for span in spans:
        values = [span.name, *(str(v) for v in (span.attributes or {}).values())]
        values += [str(v) for e in span.events for v in (e.attributes or {}).values()]
        values += [str(v) for link in span.links for v in (link.attributes or {}).values()]
        for value in values:
            for secret in secrets:
                assert secret not in value, (span.name, value)


# Update intake submits by update-with-start; signal intake (and the fallback when no worker
# answers in time) by signal-with-start.
CLIENT_CALL = {
    "update": ("StartUpdateWithStartWorkflow:SessionWorkflow", "HandleUpdate:submit"),
    "signal": ("SignalWithStartWorkflow:SessionWorkflow", "HandleSignal:submit_later"),
}


@pytest.mark.parametrize("intake", ["update", "signal"])
async def test_each_message_of_a_conversation_is_its_own_trace(
    traced: TracedStack, receiver: Receiver, intake: str
) -> None:
    texts = ["the first secret is tangerine", "the second secret is kumquat"]
    msg_ids = [f"msg_{uuid.uuid4().hex}" for _ in texts]
    # A session of its own: the other tests' sessions stay on their own task queues.
    user = f"person-4712-{intake}@example.org"
    submit_span, handler_span = CLIENT_CALL[intake]
    for n, (msg_id, text) in enumerate(zip(msg_ids, texts, strict=True), start=1):
        body = webhook_message(user, "conv-2", text)
        resp = await traced.http.post(
            "/channels/webhook", data=body, headers=webhook_headers(body, msg_id)
        )
        assert resp.status == 202, await resp.text()
        pushes = await receiver.wait_for(n)
        assert pushes[-1]["text"] == f"echo: {text}"

    def finished() -> list[ReadableSpan]:
        return list(traced.spans.get_finished_spans())

    async def both_pushes_traced() -> bool:
        return len([s for s in finished() if s.name == "RunActivity:push_reply"]) == 2

    await eventually(both_pushes_traced)
    spans = finished()
    by_id = {s.context.span_id: s for s in spans}
    http_spans = [s for s in spans if s.name == "POST /channels/{channel}"]
    assert len(http_spans) == 2 and all(s.parent is None for s in http_spans)
    assert len({s.context.trace_id for s in http_spans}) == 2, "two messages, two traces"

    # Both runs were started by the one session, yet each run, its agent call and its push
    # hang under the HTTP span and the update of their own message.
    for http_span, msg_id in zip(http_spans, msg_ids, strict=True):
        run_id = f"run/default/webhook/{msg_id}"
        trace = [s for s in spans if s.context.trace_id == http_span.context.trace_id]
        [run_span] = [s for s in trace if s.name == "RunWorkflow:AgentRunWorkflow"]
        assert run_span.attributes is not None
        assert run_span.attributes["temporalWorkflowID"] == run_id
        [agent_span] = [s for s in trace if s.name == "RunActivity:invoke_agent"]
        [push_span] = [s for s in trace if s.name == "RunActivity:push_reply"]
        for span, activity in ((agent_span, "invoke_agent"), (push_span, "push_reply")):
            assert ancestry(span, by_id) == [
                "POST /channels/{channel}",
                submit_span,
                "StartChildWorkflow:AgentRunWorkflow",
                f"StartActivity:{activity}",
                f"RunActivity:{activity}",
            ]
            assert span.attributes is not None
            assert span.attributes["temporalWorkflowID"] == run_id
        [submitted] = [s for s in trace if s.name == submit_span]
        assert submitted.attributes is not None
        if intake == "update":
            assert submitted.attributes["temporalUpdateID"] == f"webhook:{msg_id}"
        # Nothing of the other message's run is in this trace.
        assert {
            (s.attributes or {}).get("temporalWorkflowID")
            for s in trace
            if str((s.attributes or {}).get("temporalWorkflowID", "")).startswith("run/")
        } == {run_id}

    # The session's own markers (its start, each submission it handled) stay in the first
    # trace, where the session began.
    first_trace = http_spans[0].context.trace_id
    handled = [s for s in spans if s.name == handler_span]
    assert len(handled) == 2 and {s.context.trace_id for s in handled} == {first_trace}
    assert {s.context.trace_id for s in spans} == {s.context.trace_id for s in http_spans}
    assert_no_content(spans, *texts, "tangerine", "kumquat", user, "person-4712")
