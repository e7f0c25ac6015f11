"""The Temporal codec-server protocol, so the Web UI can show decrypted payloads.

``POST /codec/decode`` and ``/codec/encode`` take and return ``{"payloads": [...]}`` with
base64 metadata and data. Callers need a bearer token: a ``support`` token sees payloads
through :mod:`hosting.redaction`'s allowlist (metadata only), an ``admin`` token sees
everything. CORS answers only the configured Web UI origins, echoing the exact origin with
credentials allowed, as the UI requires.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web
from google.protobuf.json_format import MessageToDict, ParseDict
from temporalio.api.common.v1 import Payload

from hosting.codec import AesGcmCodec, CodecKeyError
from hosting.redaction import for_support
from hosting.settings import SecuritySettings

Role = Literal["support", "admin"]
ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"
OPAQUE = Payload(metadata={"encoding": b"binary/redacted"}, data=b"")


def redact_payload(payload: Payload) -> Payload:
    """The support role's view of one payload: JSON through the allowlist, anything else
    (binary, unparsable) replaced whole."""
    if payload.metadata.get("encoding") != b"json/plain":
        return OPAQUE
    try:
        decoded = json.loads(payload.data)
    except ValueError:
        return OPAQUE
    return Payload(metadata=dict(payload.metadata), data=json.dumps(for_support(decoded)).encode())


class EncodeForbidden(Exception):
    """Only the admin role may encode."""


class CodecServer:
    def __init__(self, security: SecuritySettings) -> None:
        self._codec = AesGcmCodec(security.codec_key_pairs())
        self._tokens: list[tuple[bytes, Role]] = [
            (t.get_secret_value().encode(), "support") for t in security.codec_support_tokens
        ] + [(t.get_secret_value().encode(), "admin") for t in security.codec_admin_tokens]
        self._open_role: Role | None = security.codec_open_role
        self._origins = set(security.codec_cors_origins)

    def role(self, request: web.Request) -> Role | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        found: Role | None = None
        if scheme.lower() == "bearer" and token:
            presented = token.strip().encode()
            for known, role in self._tokens:  # every comparison runs: constant time overall
                if hmac.compare_digest(presented, known) and found != "admin":
                    found = role
        return found or self._open_role

    def cors(self, request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin", "")
        if origin not in self._origins:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        }

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204 if self.cors(request) else 403, headers=self.cors(request))

    def _handler(
        self, op: Callable[[list[Payload], Role], Awaitable[list[Payload]]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            headers = self.cors(request)
            role = self.role(request)
            if role is None:
                return web.json_response({"error": "unauthorized"}, status=401, headers=headers)
            try:
                body = await request.json()
                payloads = [ParseDict(p, Payload()) for p in body["payloads"]]
            except (ValueError, KeyError, TypeError, AttributeError):
                return web.json_response(
                    {"error": 'body must be {"payloads": [...]}'}, status=400, headers=headers
                )
            except Exception:  # protobuf's ParseError for malformed payload objects
                return web.json_response(
                    {"error": "malformed payload"}, status=400, headers=headers
                )
            try:
                out = await op(payloads, role)
            except EncodeForbidden:
                return web.json_response({"error": "forbidden"}, status=403, headers=headers)
            except CodecKeyError as exc:
                return web.json_response({"error": str(exc)}, status=400, headers=headers)
            return web.json_response({"payloads": [MessageToDict(p) for p in out]}, headers=headers)

        return handle

    async def _decode(self, payloads: list[Payload], role: Role) -> list[Payload]:
        decoded = await self._codec.decode(payloads)
        return decoded if role == "admin" else [redact_payload(p) for p in decoded]

    async def _encode(self, payloads: list[Payload], role: Role) -> list[Payload]:
        if role != "admin":
            # Encoding lets a caller forge payloads that workers would trust: admins only.
            raise EncodeForbidden()
        return await self._codec.encode(payloads)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/codec/decode", self._handler(self._decode))
        app.router.add_post("/codec/encode", self._handler(self._encode))
        app.router.add_route("OPTIONS", "/codec/decode", self.preflight)
        app.router.add_route("OPTIONS", "/codec/encode", self.preflight)
