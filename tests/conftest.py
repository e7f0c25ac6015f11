"""Fixtures: one real Temporal dev server per test session, a fresh task queue per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient, TestServer
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from channels.loopback import LoopbackChannel
from channels.registry import ChannelRegistry, build_registry
from gateway import build_app
from hosting import search_attributes as sa
from hosting.converter import build_data_converter
from hosting.settings import Settings
from tests.support import (
    WEBHOOK_SECRET,
    Receiver,
    make_settings,
    start_receiver,
    temporal_bin,
)
from worker import build_worker

SUGGEST_CAN_AFTER_EVENTS = 60


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    settings = make_settings("unused", "unused")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_bin("temporal"),
        search_attributes=list(sa.ALL),
        data_converter=build_data_converter(settings.security),
        dev_server_extra_args=[
            "--dynamic-config-value",
            "history.transferProcessorMaxPollRPS=1000",
            # Sessions continue-as-new after a few turns, so every test exercises it.
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={SUGGEST_CAN_AFTER_EVENTS}",
        ],
    )
    yield env
    await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


def temporal_address(client: Client) -> str:
    return client.service_client.config.target_host


@dataclass
class Stack:
    """Gateway + worker + receiver on one fresh task queue."""

    settings: Settings
    client: Client
    http: TestClient
    receiver: Receiver
    registry: ChannelRegistry
    worker: Worker

    @property
    def loopback(self) -> LoopbackChannel:
        channel = self.registry.get("loopback")
        assert isinstance(channel, LoopbackChannel)
        return channel


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await start_receiver()
    yield r
    assert r.server is not None
    await r.server.close()


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, object]:
    """Override per test module or with ``@pytest.mark.parametrize(indirect=True)``."""
    param: dict[str, object] = getattr(request, "param", {})
    return param


@pytest.fixture
async def stack(
    client: Client, receiver: Receiver, settings_overrides: dict[str, object]
) -> AsyncIterator[Stack]:
    tq = f"tq-{uuid.uuid4().hex}"
    overrides = dict(settings_overrides)
    channels = dict(overrides.pop("channels", {}) or {})  # type: ignore[call-overload]
    settings = make_settings(
        tq,
        temporal_address(client),
        channels={
            "loopback": {},
            "webhook": {"secret": WEBHOOK_SECRET, "callback_url": receiver.url},
            **channels,
        },
        **overrides,
    )
    registry = build_registry(settings)
    async with build_worker(client, settings, registry=registry) as worker, worker:
        server = TestServer(build_app(settings, client=client, registry=registry), host="127.0.0.1")
        async with TestClient(server) as http:
            yield Stack(settings, client, http, receiver, registry, worker)
