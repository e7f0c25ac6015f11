"""Garbage is a client error: hostile or broken input gets a 4xx, never a 5xx or a traceback."""

from __future__ import annotations

import asyncio
import base64

import pytest

from tests.conftest import Stack
from tests.support import webhook_headers

pytestmark = pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "channels": {"web": {}, "responses": {"api_keys": {"app": "sk-app-0123456789"}}},
            "security": {"codec_admin_tokens": ["admin-token"]},
        }
    ],
    indirect=True,
)
BEARER = {"Authorization": "Bearer sk-app-0123456789"}


async def test_huge_nested_and_non_ascii_tokens_are_404(stack: Stack) -> None:
    for token in ("resp_" + "A" * 5000, "resp_" + "[" * 1500, "resp_é.é", "resp_.", "x"):
        resp = await stack.http.get(f"/v1/runs/{token}", headers=BEARER)
        assert resp.status in (404, 414), (token[:20], resp.status)
        resp = await stack.http.get(f"/v1/responses/{token}", headers=BEARER)
        assert resp.status in (404, 414), (token[:20], resp.status)


async def test_a_forged_cookie_with_a_non_ascii_mac_is_a_fresh_visitor(stack: Stack) -> None:
    stack.http.session.cookie_jar.update_cookies({"sb_web": "abc.\u00e9\u00e9\u00e9"})
    page = await stack.http.get("/")
    assert page.status == 200
    resp = await stack.http.post(
        "/channels/web", json={"message_id": "m1", "text": "hi"}, headers={"X-CSRF-Token": "x"}
    )
    assert resp.status == 403


async def test_short_or_foreign_ciphertext_is_a_400_for_the_codec(stack: Stack) -> None:
    auth = {"Authorization": "Bearer admin-token"}
    encrypted = base64.b64encode(b"binary/encrypted").decode()
    for data, key_id in ((b"\x00\x01", "test1"), (b"x" * 40, "nope")):
        payload = {
            "metadata": {"encoding": encrypted, "encryption-key-id": base64.b64encode(
                key_id.encode()).decode()},
            "data": base64.b64encode(data).decode(),
        }  # fmt: skip
        resp = await stack.http.post("/codec/decode", json={"payloads": [payload]}, headers=auth)
        assert resp.status == 400
        assert "test1" not in await resp.text() or key_id == "test1"  # no configured key ids
    resp = await stack.http.post("/codec/decode", data=b"{" * 10_000, headers=auth)
    assert resp.status == 400


async def test_deeply_nested_signed_bodies_are_400(stack: Stack) -> None:
    body = ("[" * 5000 + "]" * 5000).encode()
    resp = await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, "deep_1")
    )
    assert resp.status == 400


async def test_non_utf8_header_bytes_are_a_client_error(stack: Stack) -> None:
    server = stack.http.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"POST /channels/webhook HTTP/1.1\r\nHost: x\r\nwebhook-id: \xff\xfe\r\n"
        b"webhook-timestamp: 1\r\nwebhook-signature: v1,\xc3\x28\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    status = int(status_line.split()[1])
    assert 400 <= status < 500, status_line
