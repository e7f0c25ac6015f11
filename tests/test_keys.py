"""Key rotation: ``switchboard keys rotate`` prints usable keys and the order to roll them out,
and following that order rotates the codec key under a running conversation with no failed
request: old histories keep decoding, new payloads use the new key."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from temporalio.client import Client

from channels.registry import build_registry
from cli.main import main
from gateway import build_app
from hosting.codec import KEY_ID
from hosting.models import RunView
from hosting.settings import Settings, parse_codec_key
from hosting.temporal_client import connect
from tests.conftest import temporal_address
from tests.support import (
    WEBHOOK_SECRET,
    Receiver,
    event_payloads,
    make_settings,
    session_id,
    webhook_headers,
    webhook_message,
)
from worker import build_worker
from workflows.run import AgentRunWorkflow

KEY_A = "ka:" + base64.b64encode(b"a" * 32).decode()
KEY_B = "kb:" + base64.b64encode(b"b" * 32).decode()


def test_rotate_prints_fresh_keys_in_the_rollout_order(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no switchboard.toml here: the environment is the config
    monkeypatch.delenv("SWITCHBOARD_CONFIG", raising=False)
    monkeypatch.setenv("SWITCHBOARD_SECURITY__SIGNING_KEY", base64.b64encode(b"s" * 32).decode())
    monkeypatch.setenv("SWITCHBOARD_SECURITY__CODEC_KEYS", json.dumps([KEY_A]))
    assert main(["keys", "rotate", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    key_id, key = parse_codec_key(doc["codec_key"])
    assert len(key) == 32 and key_id != "ka"
    assert doc["codec_keys_in_use"] == ["ka"]
    assert len(base64.b64decode(doc["signing_key"])) == 32
    # The identity key is derived today: the one to pin is the one in force, not a new one.
    assert doc["identity"]["state"] == "derived"
    derived = make_settings("x", "x").security.identity_key_bytes()
    assert base64.b64decode(doc["identity"]["identity_key"]) == derived
    steps = doc["steps"]
    assert f'["ka:…", "{key_id}:…"]' in steps[0]  # first readable everywhere
    assert f'["{key_id}:…", "ka:…"]' in steps[1]  # then written
    assert any("identity_key" in s for s in steps[:-1]) and "signing_key" in steps[-1]
    assert "stop verifying" in steps[-1]
    # Existing codec keys are named by id only.
    assert base64.b64encode(b"a" * 32).decode() not in json.dumps(doc)

    monkeypatch.setenv("SWITCHBOARD_SECURITY__IDENTITY_KEY", base64.b64encode(b"i" * 32).decode())
    assert main(["keys", "rotate"]) == 0
    text = capsys.readouterr().out
    assert "set explicitly: keep it" in text
    assert base64.b64encode(b"i" * 32).decode() not in text
    assert main(["keys", "rotate", "--key-id", "ka"]) == 2  # an id in use is refused


@dataclass
class Phase:
    http: TestClient
    client: Client


@asynccontextmanager
async def serve(
    address: str,
    task_queue: str,
    receiver: Receiver,
    worker_keys: list[str],
    gateway_keys: list[str],
) -> AsyncIterator[Phase]:
    """A worker and a gateway, each with its own codec key list (a rolling restart)."""

    def settings(keys: list[str]) -> Settings:
        return make_settings(
            task_queue,
            address,
            security={"codec_keys": keys},
            channels={"webhook": {"secret": WEBHOOK_SECRET, "callback_url": receiver.url}},
        )

    worker_settings, gateway_settings = settings(worker_keys), settings(gateway_keys)
    worker_client = await connect(worker_settings)
    gateway_client = await connect(gateway_settings)
    registry = build_registry(worker_settings)
    async with build_worker(worker_client, worker_settings, registry=registry) as worker, worker:
        app = build_app(
            gateway_settings, client=gateway_client, registry=build_registry(gateway_settings)
        )
        async with TestClient(TestServer(app, host="127.0.0.1")) as http:
            yield Phase(http, gateway_client)


async def key_ids(client: Client, workflow_id: str) -> set[str]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return {
        p.metadata[KEY_ID].decode()
        for event in history.events
        for p in event_payloads(event)
        if KEY_ID in p.metadata
    }


async def test_codec_key_rotates_under_a_live_conversation(
    client: Client, receiver: Receiver
) -> None:
    address, task_queue = temporal_address(client), f"tq-keys-{uuid.uuid4().hex}"
    user = f"rotator-{uuid.uuid4().hex[:8]}"
    # The order `keys rotate` prints: readable everywhere first, then written, with a rolling
    # restart in between (worker first, so a gateway never meets a key its worker cannot read).
    phases = [
        ([KEY_A], [KEY_A]),
        ([KEY_A, KEY_B], [KEY_A, KEY_B]),
        ([KEY_B, KEY_A], [KEY_A, KEY_B]),
        ([KEY_B, KEY_A], [KEY_B, KEY_A]),
    ]
    runs: list[str] = []
    for n, (worker_keys, gateway_keys) in enumerate(phases, start=1):
        async with serve(address, task_queue, receiver, worker_keys, gateway_keys) as phase:
            body = webhook_message(user, "c1", f"message {n}")
            resp = await phase.http.post(
                "/channels/webhook", data=body, headers=webhook_headers(body)
            )
            assert resp.status == 202, await resp.text()
            runs.append(str((await resp.json())["run_id"]))
            pushes = await receiver.wait_for(n)
            assert pushes[-1]["text"] == f"echo: message {n}"
            # Every run so far, written under whichever key, still reads.
            for i, run_id in enumerate(runs, start=1):
                view: RunView = await phase.client.get_workflow_handle(run_id).query(
                    AgentRunWorkflow.view
                )
                assert view.output_text == f"echo: message {i}"
    assert receiver.bad_signatures == 0
    assert await key_ids(client, runs[0]) == {"ka"}
    assert await key_ids(client, runs[1]) == {"ka"}  # readable is not yet written
    assert await key_ids(client, runs[3]) == {"kb"}
    # One session served all four phases; what it writes now is under the new key (its
    # earlier runs, before it continued as new, keep the old one until they age out).
    assert "kb" in await key_ids(client, session_id("webhook", user))
