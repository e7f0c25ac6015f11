"""End to end through the gateway: signed webhook in, agent, signed webhook out."""

from __future__ import annotations

import json

from tests.conftest import Stack
from tests.support import webhook_headers, webhook_message


async def test_signed_webhook_is_answered_by_a_signed_push(stack: Stack) -> None:
    body = webhook_message("alice", "c1", "hello")
    resp = await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, "msg_1")
    )
    assert resp.status == 202, await resp.text()
    ack = await resp.json()
    assert ack["run_id"] == "run/default/webhook/msg_1"
    [push] = await stack.receiver.wait_for(1)
    assert push["text"] == "echo: hello"
    assert push["phase"] == "response"
    assert push["user"] == {"id": "alice"}
    assert push["run_id"] == "run/default/webhook/msg_1"
    assert stack.receiver.ids == ["run/default/webhook/msg_1:webhook:response"]
    assert json.loads(body)["text"] == "hello"
