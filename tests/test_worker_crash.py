"""A worker killed with SIGKILL mid-run and restarted still delivers every reply exactly once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from temporalio.client import Client

from gateway import build_app
from tests.conftest import temporal_address
from tests.support import (
    CODEC_KEY,
    SIGNING_KEY,
    WEBHOOK_SECRET,
    Receiver,
    eventually,
    make_settings,
    webhook_headers,
    webhook_message,
)

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-crash-test-0123456789"
pytestmark = pytest.mark.slow


def write_config(
    path: Path, address: str, task_queue: str, callback_url: str, metrics_port: int
) -> None:
    path.write_text(
        f"""
[worker]
metrics_address = "127.0.0.1:{metrics_port}"
[temporal]
address = "{address}"
task_queue = "{task_queue}"
[security]
signing_key = "{SIGNING_KEY}"
codec_keys = ["{CODEC_KEY}"]
[gateway]
log_format = "console"
[agent]
kind = "echo"
delay_ms = 1500
heartbeat_timeout_s = 3
[delivery]
initial_interval_s = 0.2
max_interval_s = 1.0
timeout_s = 2
[runs]
continuation_s = 30
[channels.webhook]
secret = "{WEBHOOK_SECRET}"
callback_url = "{callback_url}"
[channels.responses.api_keys]
crash = "{API_KEY}"
"""
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class WorkerProcess:
    def __init__(self, config: Path, log: Path) -> None:
        self._config = config
        self._log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_url = ""

    def start(self) -> None:
        env = {**os.environ, "SWITCHBOARD_CONFIG": str(self._config)}
        with self._log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "worker.py")], env=env, stdout=out, stderr=out, cwd=ROOT
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def worker_process(
    tmp_path: Path, client: Client, receiver: Receiver
) -> Iterator[tuple[WorkerProcess, str]]:
    tq = f"tq-crash-{uuid.uuid4().hex}"
    config = tmp_path / "switchboard.toml"
    port = free_port()
    write_config(config, temporal_address(client), tq, receiver.url, port)
    worker = WorkerProcess(config, tmp_path / "worker.log")
    worker.metrics_url = f"http://127.0.0.1:{port}/metrics"
    yield worker, tq
    worker.stop()


@pytest.fixture
async def gateway_http(
    client: Client, worker_process: tuple[WorkerProcess, str]
) -> AsyncIterator[TestClient]:
    _, tq = worker_process
    settings = make_settings(
        tq, temporal_address(client), channels={"responses": {"api_keys": {"crash": API_KEY}}}
    )
    async with TestClient(TestServer(build_app(settings, client=client), host="127.0.0.1")) as http:
        yield http


async def test_sigkilled_worker_loses_and_duplicates_nothing(
    worker_process: tuple[WorkerProcess, str], gateway_http: TestClient, receiver: Receiver
) -> None:
    worker, _ = worker_process
    worker.start()
    expected: set[str] = set()
    count = 8
    for i in range(count):
        body = webhook_message(f"user{i % 3}", f"conv{i % 3}", f"msg {i}")
        msg_id = f"crash_{i}"
        resp = await gateway_http.post(
            "/channels/webhook", data=body, headers=webhook_headers(body, msg_id)
        )
        assert resp.status == 202
        expected.add(f"run/default/webhook/{msg_id}:webhook:response")
    # Kill while runs are in flight: at least one reply is out, most are not.
    await receiver.wait_for(1, timeout=60)
    worker.kill()
    delivered_before = len(receiver.received)
    assert delivered_before < count
    # Messages keep arriving while no worker runs; Temporal holds them.
    body = webhook_message("late", "late", "while down")
    resp = await gateway_http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, "crash_late")
    )
    assert resp.status == 202
    expected.add("run/default/webhook/crash_late:webhook:response")
    await asyncio.sleep(0)
    worker.start()

    async def all_delivered() -> bool:
        return set(receiver.ids) >= expected

    await eventually(all_delivered, timeout=120)
    per_key = Counter(receiver.ids)
    assert set(per_key) == expected
    # Exactly once per idempotency key; a push repeated after a crash reuses its key.
    assert len({(r["run_id"], r["text"]) for r in receiver.received}) == len(expected)
    # The restarted worker counts its pushes on its Prometheus endpoint.
    async with aiohttp.ClientSession() as http, http.get(worker.metrics_url) as resp:
        metrics = await resp.text()
    assert re.search(r'switchboard_delivery_attempts_total\{[^}]*outcome="delivered"', metrics)
    assert "temporal_" in metrics  # the SDK's own metrics on the same endpoint
    texts = sorted(
        str(r["text"]) for r in receiver.received if r["run_id"] != "run/default/webhook/crash_late"
    )
    assert set(texts) == {f"echo: msg {i}" for i in range(count)}


async def test_background_response_survives_a_killed_worker(
    worker_process: tuple[WorkerProcess, str], gateway_http: TestClient
) -> None:
    from openai import AsyncOpenAI

    worker, _ = worker_process
    worker.start()
    api = AsyncOpenAI(base_url=str(gateway_http.make_url("/v1")), api_key=API_KEY, max_retries=0)
    created = await api.responses.create(model="m", input="survive this", background=True)

    async def in_progress() -> bool:
        return (await api.responses.retrieve(created.id)).status == "in_progress"

    await eventually(in_progress, timeout=60)
    worker.kill()  # mid-agent-call: the activity's heartbeats stop
    worker.start()

    async def completed() -> bool:
        return (await api.responses.retrieve(created.id)).status == "completed"

    await eventually(completed, timeout=90)
    assert (await api.responses.retrieve(created.id)).output_text == "echo: survive this"
    await api.close()
