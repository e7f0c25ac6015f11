"""Traces: one webhook message is one trace, from the gateway's HTTP span to the push, and no
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
async def traced(client: Client, receiver: Receiver) -> AsyncIterator[TracedStack]:
    settings = make_settings(
        f"tq-trace-{uuid.uuid4().hex}",
        temporal_address(client),
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
