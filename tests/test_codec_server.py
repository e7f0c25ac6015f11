"""The codec server: the Web UI decodes through it; support sees no message content."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory

from gateway import build_app
from hosting.codec import AesGcmCodec
from hosting.redaction import METADATA, STRUCTURE, redacted
from routes.codec import redact_payload
from tests.support import CODEC_KEY, event_payloads, make_settings

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
    shown = json.loads(base64.b64decode(p["data"]))
    assert shown == {
        "run_id": "run/default/webhook/m1",
        "text": redacted("my secret"),
        "transcript": redacted([{"role": "user", "text": "old"}]),
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


def _side_by_side(before: object, after: object, key: str = "") -> list[tuple[str, object, object]]:
    """(field, original value, redacted value) for every field of a payload, at any depth."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [leaf for k, v in before.items() for leaf in _side_by_side(v, after[k], k)]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            leaf for b, a in zip(before, after, strict=True) for leaf in _side_by_side(b, a, key)
        ]
    return [(key, before, after)]


def _strings(value: object, key: str = "") -> list[tuple[str, str]]:
    """Every (field, string) leaf of a decoded payload."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _strings(v, k)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _strings(v, key)]
    return [(key, value)] if isinstance(value, str) else []


async def test_support_sees_only_metadata_in_every_recorded_history() -> None:
    """Every payload of every recorded workflow type, decoded and redacted for support: no
    content field survives, and what survives is on the allowlist."""
    histories = Path(__file__).parent / "histories"
    codec = AesGcmCodec(make_settings("x", "x").security.codec_key_pairs())
    content = {"text", "input_text", "output_text", "user_text", "reply_text", "transcript",
               "user_id", "conversation_id", "code", "labels", "claims", "caller"}  # fmt: skip
    seen_types: set[str] = set()
    checked = leaked = 0
    for path in sorted(histories.glob("*.json")):
        history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
        seen_types.add(
            history.events[0].workflow_execution_started_event_attributes.workflow_type.name
        )
        payloads = [
            p
            for e in history.events
            for p in event_payloads(e)
            if p.metadata.get("encoding") != b"json/null"
        ]
        for plain in await codec.decode(payloads):
            if plain.metadata.get("encoding") != b"json/plain":
                continue
            original = json.loads(plain.data)
            shown = json.loads(redact_payload(plain).data)
            for field, before, after in _side_by_side(original, shown):
                checked += 1
                if field in content and before not in (None, [], {}):
                    assert isinstance(after, str) and after.startswith("[redacted: "), (
                        path.name,
                        field,
                    )
                    leaked += after == before
            for field, value in _strings(shown):
                if not value.startswith("[redacted: "):
                    assert (
                        field in METADATA
                        or field in STRUCTURE
                        or value.startswith(("run/", "session/", "link/", "redelivery/"))
                    ), (path.name, field)
    assert seen_types >= {"SessionWorkflow", "AgentRunWorkflow", "LinkChallengeWorkflow",
                          "RedeliveryWorkflow"}  # fmt: skip
    assert checked > 100
    assert leaked == 0
