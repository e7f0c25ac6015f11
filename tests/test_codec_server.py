"""The codec server: the Web UI decodes through it; support sees no message content."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory

from gateway import build_app
from hosting.codec import AesGcmCodec
from hosting.redaction import METADATA, STRUCTURE, redacted
from hosting.settings import Settings
from routes.codec import CodecServer, redact_payload
from tests.fakes_oidc import AUDIENCE, FakeIssuer, IssuerKey, ManualClock, serve_issuer
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


# -- the Web UI's signed-in users: OIDC access tokens ---------------------------------------


@pytest.fixture
async def issuer() -> AsyncIterator[FakeIssuer]:
    async with serve_issuer() as fake:
        yield fake


def oidc_settings(issuer: FakeIssuer) -> Settings:
    return make_settings(
        "tq-codec",
        "127.0.0.1:1",
        security={
            "codec_support_tokens": ["support-token"],
            "codec_admin_tokens": ["admin-token"],
            "codec_oidc_issuer": issuer.issuer,
            "codec_oidc_audience": AUDIENCE,
            "codec_oidc_roles": {"sb-support": "support", "sb-admin": "admin"},
        },
    )


@pytest.fixture
async def oidc_http(issuer: FakeIssuer) -> AsyncIterator[TestClient]:
    app = build_app(oidc_settings(issuer))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def call(http: TestClient, token: str, op: str = "decode") -> ClientResponse:
    body = {"payloads": [await encrypted_run_input()]}
    if op == "encode":
        body = {"payloads": [wire(Payload(metadata={"encoding": b"json/plain"}, data=b"{}"))]}
    return await http.post(f"/codec/{op}", json=body, headers={"Authorization": f"Bearer {token}"})


async def shown(resp: ClientResponse) -> dict[str, object]:
    assert resp.status == 200, await resp.text()
    [p] = (await resp.json())["payloads"]
    decoded: dict[str, object] = json.loads(base64.b64decode(p["data"]))
    return decoded


async def test_web_ui_users_decode_with_the_role_their_groups_map_to(
    oidc_http: TestClient, issuer: FakeIssuer
) -> None:
    support = await shown(await call(oidc_http, issuer.token()))  # RS256, groups: sb-support
    assert support["text"] == redacted("my secret")
    assert support["run_id"] == "run/default/webhook/m1"
    admin = await shown(await call(oidc_http, issuer.token(issuer.ec, groups=["sb-admin"])))
    assert admin["text"] == "my secret"  # ES256
    for groups in (["sb-support", "sb-admin"], "sb-admin"):  # the higher role; one string
        assert (await shown(await call(oidc_http, issuer.token(groups=groups))))["text"] == (
            "my secret"
        )
    assert (await call(oidc_http, issuer.token(), "encode")).status == 403
    assert (await call(oidc_http, issuer.token(groups=["sb-admin"]), "encode")).status == 200
    # The static tokens keep working beside the issuer.
    assert (await shown(await call(oidc_http, "admin-token")))["text"] == "my secret"
    assert (await shown(await call(oidc_http, "support-token")))["text"] == redacted("my secret")


async def test_bad_forged_or_expired_access_tokens_are_a_bare_401(
    oidc_http: TestClient, issuer: FakeIssuer
) -> None:
    valid = issuer.token()
    header, _, rest = valid.partition(".")
    signature = rest.partition(".")[2]
    elevated = json.dumps(issuer.claims(groups=["sb-admin"])).encode()
    tampered = f"{header}.{base64.urlsafe_b64encode(elevated).rstrip(b'=').decode()}.{signature}"
    cases = {
        "wrong audience": issuer.token(aud="another-app"),
        "wrong issuer": issuer.token(iss="https://idp.example.org"),
        "expired": issuer.token(exp=int(time.time()) - 3600),
        "no expiry": issuer.token(exp=None),
        "unknown kid": issuer.token(IssuerKey("RS256")),
        "published kid, other key": issuer.token(IssuerKey("RS256", kid=issuer.rsa.kid)),
        "the EC key's kid on an RS256 token": issuer.token(IssuerKey("RS256", kid=issuer.ec.kid)),
        "alg none": issuer.unsigned_token("none"),
        "HS256 keyed with the public key": issuer.unsigned_token("HS256", issuer.rsa.public_pem()),
        "alg as a list": issuer.unsigned_token(["RS256"]),
        "tampered claims": tampered,
        "not a JWT": "not.a.jwt",
        "far too long": "x" * 8_100,
    }
    for name, token in cases.items():
        resp = await call(oidc_http, token)
        assert resp.status == 401, name
        assert await resp.json() == {"error": "unauthorized"}, name
    assert (await call(oidc_http, valid)).status == 200  # the issuer still answers


async def test_a_user_whose_groups_map_to_no_role_is_403(
    oidc_http: TestClient, issuer: FakeIssuer
) -> None:
    for groups in (["sb-readers"], [], None, 7):
        resp = await call(oidc_http, issuer.token(groups=groups))
        assert resp.status == 403, groups
        assert await resp.json() == {"error": "forbidden"}


async def test_unknown_kids_refetch_the_issuers_keys_at_most_once_per_floor(
    issuer: FakeIssuer,
) -> None:
    clock = ManualClock()
    app = web.Application()
    CodecServer(oidc_settings(issuer).security, clock=clock).add_routes(app)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        assert (await call(http, issuer.token())).status == 200
        assert issuer.key_fetches == 1
        rotated = IssuerKey("ES256")
        issuer.published.append(rotated)
        clock.now += 10
        for _ in range(5):  # a storm of unknown kids within the floor: no refetch
            assert (await call(http, issuer.token(IssuerKey("RS256")))).status == 401
        assert (await call(http, issuer.token(rotated))).status == 401
        assert issuer.key_fetches == 1
        clock.now += 300
        assert (await call(http, issuer.token(rotated))).status == 200  # refetched once
        assert issuer.key_fetches == 2


async def test_an_unreachable_issuer_is_503_and_static_tokens_still_work(
    oidc_http: TestClient, issuer: FakeIssuer
) -> None:
    issuer.down = True
    resp = await call(oidc_http, issuer.token())
    assert resp.status == 503
    assert await resp.json() == {"error": "temporarily unavailable"}
    assert (await call(oidc_http, "not.a.jwt")).status == 401  # no keys needed to refuse
    assert (await call(oidc_http, "admin-token")).status == 200


@pytest.mark.parametrize(
    ("oidc", "error"),
    [
        ({"codec_oidc_issuer": "http://idp.example.org"}, "https URL"),
        ({"codec_oidc_issuer": "https://idp.example.org"}, "codec_oidc_audience"),
        (
            {"codec_oidc_issuer": "https://idp.example.org", "codec_oidc_audience": "ui"},
            "codec_oidc_roles",
        ),
        (
            {"codec_oidc_issuer": "https://idp.example.org", "codec_oidc_audience": "ui",
             "codec_oidc_roles": {"g": "owner"}},
            "codec_oidc_roles",
        ),
    ],
)  # fmt: skip
def test_an_incomplete_oidc_configuration_is_refused_at_start(
    oidc: dict[str, object], error: str
) -> None:
    from hosting.settings import ConfigError

    with pytest.raises(ConfigError, match=error):
        make_settings("tq", "x", security=oidc)


async def test_doctor_reads_the_issuers_keys_as_the_gateway_does(issuer: FakeIssuer) -> None:
    from cli.doctor import codec_oidc_checks, codec_token_check

    settings = oidc_settings(issuer)
    [check] = await codec_oidc_checks(settings, 2.0)
    assert check.status == "ok", check
    assert "2 signing key(s) (ES256, RS256)" in check.detail
    assert "'groups': 1 value(s) to support, 1 to admin" in check.detail
    assert "sb-admin" not in check.detail  # counts, not the groups themselves
    no_static = settings.security.model_copy(
        update={"codec_support_tokens": [], "codec_admin_tokens": []}
    )
    token_check = codec_token_check(settings.model_copy(update={"security": no_static}))
    assert token_check.status == "ok" and "OIDC" in token_check.detail

    issuer.down = True
    [check] = await codec_oidc_checks(settings, 2.0)
    assert check.status == "fail" and "HTTP 503" in check.detail
    issuer.down = False
    issuer.published = []
    [check] = await codec_oidc_checks(settings, 2.0)
    assert check.status == "fail" and "no RS256 or ES256 signing key" in check.detail
    assert await codec_oidc_checks(make_settings("tq", "x"), 2.0) == []
