"""The Temporal codec-server protocol, so the Web UI can show decrypted payloads.

``POST /codec/decode`` and ``/codec/encode`` take and return ``{"payloads": [...]}`` with
base64 metadata and data. Callers need a bearer token: a ``support`` token sees payloads
through :mod:`hosting.redaction`'s allowlist (metadata only), an ``admin`` token sees
everything. A token is one of the static codec tokens or, with ``codec_oidc_issuer`` set, the
Web UI user's OIDC access token, whose roles claim maps to a role. CORS answers only the
configured Web UI origins, echoing the exact origin with credentials allowed, as the UI
requires.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from google.protobuf.json_format import MessageToDict, ParseDict
from temporalio.api.common.v1 import Payload

from hosting.codec import AesGcmCodec, CodecKeyError
from hosting.jwks import KEY_TYPES, KeySet, KeysUnavailable, discovery_url
from hosting.redaction import for_support
from hosting.settings import SecuritySettings

Role = Literal["support", "admin"]
ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"
OPAQUE = Payload(metadata={"encoding": b"binary/redacted"}, data=b"")
OIDC_LEEWAY_S = 60  # clock skew between the identity provider and us
MAX_TOKEN_CHARS = 8_000  # longer bearer tokens are refused unparsed (aiohttp stops at 8 KiB)


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


class NoRole(Exception):
    """A valid OIDC token whose roles claim maps to no codec role: 403."""


class OidcRoles:
    """The Web UI's signed-in users: an access token verified against the issuer's keys
    (RS256 or ES256, issuer, audience, expiry), its roles claim mapped to a codec role."""

    def __init__(self, security: SecuritySettings, clock: Callable[[], float]) -> None:
        issuer, audience = security.codec_oidc_issuer, security.codec_oidc_audience
        if not issuer or not audience:
            raise ValueError("codec_oidc_issuer and codec_oidc_audience are both required")
        self._issuer, self._audience = issuer, audience
        self._keys = KeySet(
            discovery_url(issuer),
            clock,
            algorithms=tuple(KEY_TYPES),
            issuer=issuer,
        )
        self._claim = security.codec_oidc_roles_claim
        self._roles = security.codec_oidc_roles

    async def role(self, token: str) -> Role | None:
        """The token's role; None for a token that does not verify. Raises NoRole for a
        verified user without one, KeysUnavailable while the issuer's keys cannot be read."""
        verified = await self._keys.verify(
            token, audience=self._audience, issuer=self._issuer, leeway_s=OIDC_LEEWAY_S
        )
        if verified is None:
            return None
        granted = {self._roles.get(value) for value in _claim_values(verified[0], self._claim)}
        if "admin" in granted:
            return "admin"
        if "support" in granted:
            return "support"
        raise NoRole


def _claim_values(claims: dict[str, Any], name: str) -> list[str]:
    """A roles claim as a list of strings: one string, or a list of them."""
    value = claims.get(name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class CodecServer:
    def __init__(
        self, security: SecuritySettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._codec = AesGcmCodec(security.codec_key_pairs())
        self._tokens: list[tuple[bytes, Role]] = [
            (t.get_secret_value().encode(), "support") for t in security.codec_support_tokens
        ] + [(t.get_secret_value().encode(), "admin") for t in security.codec_admin_tokens]
        self._oidc = OidcRoles(security, clock) if security.codec_oidc_issuer else None
        self._open_role: Role | None = security.codec_open_role
        self._origins = set(security.codec_cors_origins)

    async def role(self, request: web.Request) -> Role | None:
        """The caller's role: a static token's, else a signed-in user's; None is a 401."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        found: Role | None = None
        if scheme.lower() == "bearer" and token and len(token) <= MAX_TOKEN_CHARS:
            presented = token.encode()
            for known, role in self._tokens:  # every comparison runs: constant time overall
                if hmac.compare_digest(presented, known) and found != "admin":
                    found = role
            if found is None and self._oidc is not None:
                found = await self._oidc.role(token)
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
            try:
                role = await self.role(request)
            except NoRole:
                return web.json_response({"error": "forbidden"}, status=403, headers=headers)
            except KeysUnavailable:
                return web.json_response(
                    {"error": "temporarily unavailable"}, status=503, headers=headers
                )
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
