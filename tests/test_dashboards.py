"""The Grafana dashboard and the Prometheus alert rules name only metrics that exist: both
endpoints are scraped from a running stack after messages went through it (one delivered,
one dead-lettered)."""

from __future__ import annotations

import base64
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from channels.registry import build_registry
from gateway import build_app
from hosting.settings import Settings
from hosting.temporal_client import connect, metrics_runtime
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

DOCKER = Path(__file__).parent.parent / "docker"
DASHBOARD = DOCKER / "grafana" / "switchboard.json"
ALERTS = DOCKER / "prometheus" / "alerts.yml"
# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "by", "without", "histogram_quantile", "le", "max",
    "min", "avg", "count", "topk", "on", "ignoring", "group_left", "and", "or", "unless",
    "clamp_min", "offset", "bool", "delta", "deriv", "absent", "vector", "label_replace",
}  # fmt: skip
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself for every scrape target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class MeteredStack:
    http: TestClient
    worker_metrics_url: str
    settings: Settings


@pytest.fixture
async def metered(client: Client, receiver: Receiver) -> AsyncIterator[MeteredStack]:
    address = f"127.0.0.1:{free_port()}"
    settings = make_settings(
        f"tq-metrics-{uuid.uuid4().hex}",
        temporal_address(client),
        channels={"webhook": {"secret": WEBHOOK_SECRET, "callback_url": receiver.url}},
        worker={"metrics_address": address},
        agent={"stream_every_ms": 1},
    )
    worker_client = await connect(settings, runtime=metrics_runtime(address))
    registry = build_registry(settings)
    async with build_worker(worker_client, settings, registry=registry) as worker, worker:
        app = build_app(settings, client=client, registry=registry)
        async with TestClient(TestServer(app, host="127.0.0.1")) as http:
            yield MeteredStack(http, f"http://{address}/metrics", settings)


def exposed(text: str) -> set[str]:
    """Every sample name an endpoint exposes (``x_bucket``, ``x_total``, ...) and its family."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def referenced(expr: str) -> set[str]:
    """The metric names in one PromQL expression (label matchers and values left out)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\"[^\"]*\"", "", expr)  # strings
    expr = re.sub(r"\b(by|without|on|ignoring|group_left)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL_WORDS and not w.isdigit()}


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if "expr" in t)
            walk(panel.get("panels", []))

    walk(board["panels"])
    return exprs


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


async def drive(stack: MeteredStack, receiver: Receiver) -> None:
    """One reply delivered (streamed first), one dead-lettered (the receiver refuses it for
    good), and one workflow whose input is under a codec key the worker does not have."""

    async def post(user: str, text: str) -> int:
        body = webhook_message(user, "c1", text)
        resp = await stack.http.post("/channels/webhook", data=body, headers=webhook_headers(body))
        return resp.status

    assert await post("metrics-a", "hello there") == 202
    await receiver.wait_for(1)
    receiver.fail_next.append(410)
    assert await post("metrics-b", "nobody listens") == 202

    async def dead_lettered() -> bool:
        text = await scrape(stack.worker_metrics_url)
        return "switchboard_dead_letters_total" in text

    await eventually(dead_lettered)

    t = stack.settings.temporal
    stranger = make_settings(
        t.task_queue,
        t.address,
        security={"codec_keys": ["stranger:" + base64.b64encode(b"x" * 32).decode()]},
    )
    foreign = await connect(stranger)
    handle = await foreign.start_workflow(
        "AgentRunWorkflow", {"v": 1}, id=f"codec-{uuid.uuid4().hex}", task_queue=t.task_queue
    )

    async def codec_failure_counted() -> bool:
        text = await scrape(stack.worker_metrics_url)
        return "temporal_workflow_task_execution_failed_total" in text

    await eventually(codec_failure_counted)
    await handle.terminate()


async def scrape(url: str, headers: dict[str, str] | None = None) -> str:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        assert resp.status == 200
        return await resp.text()


async def test_every_metric_the_dashboard_and_alerts_name_exists(
    metered: MeteredStack, receiver: Receiver
) -> None:
    await drive(metered, receiver)

    async def runs_counted() -> bool:
        return "switchboard_runs_finished_total" in await scrape(metered.worker_metrics_url)

    await eventually(runs_counted)
    gateway_text = await (await metered.http.get("/metrics")).text()
    worker_text = await scrape(metered.worker_metrics_url)
    available = exposed(gateway_text) | exposed(worker_text)
    exprs = dashboard_exprs() + alert_exprs()
    assert exprs
    wanted = set().union(*(referenced(e) for e in exprs)) - PROMETHEUS_OWN
    missing = sorted(wanted - available)
    assert not missing, f"named but never exposed: {missing}"
    # Every on-call question has its metric on the board.
    board_names = set().union(*(referenced(e) for e in dashboard_exprs()))
    for name in (
        "switchboard_runs_finished_total",
        "switchboard_delivery_seconds_bucket",
        "switchboard_delivery_attempts_total",
        "switchboard_dead_letters_total",
        "switchboard_inbound_total",
        "switchboard_run_first_delta_seconds_bucket",
    ):
        assert name in board_names, name


def test_alert_rules_are_well_formed() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    names = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= rule.keys(), rule
            assert rule["labels"]["severity"] in {"page", "ticket"}
            names.add(rule["alert"])
    assert {
        "SwitchboardDeadLettersRising",
        "SwitchboardDeliveryLatencyHigh",
        "SwitchboardWorkflowTaskBacklog",
        "SwitchboardActivityBacklog",
        "SwitchboardCodecErrors",
    } <= names


def test_metric_labels_carry_no_ids_of_people() -> None:
    """Labels are channel names, statuses, phases and reasons; a label holding a user, a
    conversation or a run would be one series per person."""
    allowed = {"channel", "outcome", "status", "phase", "reason", "le"}
    allowed |= {"task_queue", "namespace", "workflow_type", "activity_type", "worker_type", "job"}
    exprs = dashboard_exprs() + alert_exprs()
    for expr in exprs:
        for matcher in re.findall(r"\{([^}]*)\}", expr):
            for label in re.findall(r"([a-z_]+)\s*(?:=~|!=|!~|=)", matcher):
                assert label in allowed, (expr, label)
