"""The codec server: the Web UI decodes through it; support sees no message content."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from temporalio.api.common.v1 import Payload

from gateway import build_app
from hosting.codec import AesGcmCodec
from routes.codec import REDACTED
from tests.support import CODEC_KEY, make_settings

ORIGIN = "http://127.0.0.1:8233"


@pytest.fixture
async def http() -> AsyncIterator[TestClient]:
    settings = make_settings(
        "tq-codec",
        "127.0.0.1:1",
        security={
            "codec_support_tokens": ["support-token"],
            "codec_admin_tokens": ["admin-token"],
            "codec_cors_origins": [ORIGIN],
        },
    )
    async with TestClient(TestServer(build_app(settings), host="127.0.0.1")) as client:
        yield client


def wire(p: Payload) -> dict[str, object]:
    return {
        "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
        "data": base64.b64encode(p.data).decode(),
    }


async def encrypted_run_input() -> dict[str, object]:
    key_id, _, key = CODEC_KEY.partition(":")
    codec = AesGcmCodec([(key_id, base64.b64decode(key))])
    plain = Payload(
        metadata={"encoding": b"json/plain"},
        data=json.dumps(
            {
                "run_id": "run/default/webhook/m1",
                "text": "my secret",
                "transcript": [{"role": "user", "text": "old"}],
            }
        ).encode(),
    )
    [enc] = await codec.encode([plain])
    return wire(enc)


async def test_admin_sees_everything_support_sees_no_content(http: TestClient) -> None:
    body = {"payloads": [await encrypted_run_input()]}
    admin = await http.post(
        "/codec/decode",
        json=body,
        headers={"Authorization": "Bearer admin-token", "X-Namespace": "default"},
    )
    assert admin.status == 200
    [p] = (await admin.json())["payloads"]
    decoded = json.loads(base64.b64decode(p["data"]))
    assert decoded["text"] == "my secret"

    support = await http.post(
        "/codec/decode", json=body, headers={"Authorization": "Bearer support-token"}
    )
    assert support.status == 200
    [p] = (await support.json())["payloads"]
    redacted = json.loads(base64.b64decode(p["data"]))
    assert redacted == {
        "run_id": "run/default/webhook/m1",
        "text": REDACTED,
        "transcript": REDACTED,
    }


async def test_missing_or_wrong_token_is_401(http: TestClient) -> None:
    body = {"payloads": [await encrypted_run_input()]}
    assert (await http.post("/codec/decode", json=body)).status == 401
    wrong = await http.post("/codec/decode", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401


async def test_encode_then_decode_round_trips(http: TestClient) -> None:
    plain = wire(Payload(metadata={"encoding": b"json/plain"}, data=b'{"status":"ok"}'))
    auth = {"Authorization": "Bearer admin-token"}
    enc = await (await http.post("/codec/encode", json={"payloads": [plain]}, headers=auth)).json()
    assert (
        enc["payloads"][0]["metadata"]["encoding"] == base64.b64encode(b"binary/encrypted").decode()
    )
    dec = await (await http.post("/codec/decode", json=enc, headers=auth)).json()
    assert dec["payloads"] == [plain]


async def test_cors_preflight_echoes_only_the_configured_origin(http: TestClient) -> None:
    ok = await http.options(
        "/codec/decode",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
        },
    )
    assert ok.status == 204
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert ok.headers["Access-Control-Allow-Credentials"] == "true"
    allowed = {h.strip().lower() for h in ok.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "x-namespace", "authorization"} <= allowed
    other = await http.options("/codec/decode", headers={"Origin": "http://evil.example"})
    assert other.status == 403
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_malformed_codec_bodies_are_400(http: TestClient) -> None:
    auth = {"Authorization": "Bearer admin-token"}
    for body in (b"nope", b"{}", b'{"payloads": [{"metadata": 5}]}', b'{"payloads": 3}'):
        resp = await http.post(
            "/codec/decode", data=body, headers={**auth, "Content-Type": "application/json"}
        )
        assert resp.status == 400, body


async def test_only_admin_may_encode(http: TestClient) -> None:
    plain = wire(Payload(metadata={"encoding": b"json/plain"}, data=b'{"status":"ok"}'))
    support = await http.post(
        "/codec/encode",
        json={"payloads": [plain]},
        headers={"Authorization": "Bearer support-token"},
    )
    assert support.status == 403
    assert "payloads" not in await support.json()


async def test_short_ciphertext_is_a_client_error(http: TestClient) -> None:
    short = wire(
        Payload(
            metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"test1"}, data=b"x"
        )
    )
    resp = await http.post(
        "/codec/decode", json={"payloads": [short]}, headers={"Authorization": "Bearer admin-token"}
    )
    assert resp.status == 400
