"""A local OpenID Connect issuer: discovery document and JWKS, with RSA and EC keys the test
generates, and access tokens signed the way an identity provider signs them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "temporal-ui"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class ManualClock:
    """A monotonic clock the test moves: key refresh floors without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class IssuerKey:
    """An RS256 or ES256 key pair; the issuer publishes the public half."""

    def __init__(self, alg: Literal["RS256", "ES256"] = "RS256", kid: str | None = None) -> None:
        self.alg = alg
        self.kid = kid or uuid.uuid4().hex
        self.private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if alg == "RS256"
            else ec.generate_private_key(ec.SECP256R1())
        )

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        text = RSAAlgorithm.to_jwk(public) if self.alg == "RS256" else ECAlgorithm.to_jwk(public)
        return {**json.loads(text), "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class FakeIssuer:
    def __init__(self) -> None:
        self.rsa = IssuerKey("RS256")
        self.ec = IssuerKey("ES256")
        self.published = [self.rsa, self.ec]
        self.server: TestServer | None = None
        self.key_fetches = 0
        self.down = False

    @property
    def issuer(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": AUDIENCE, "sub": "user-7", "iat": now,
                  "exp": now + 600, "groups": ["sb-support"]}  # fmt: skip
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, key: IssuerKey | None = None, **overrides: Any) -> str:
        signer = key or self.rsa
        return jwt.encode(
            self.claims(**overrides),
            signer.private,
            algorithm=signer.alg,
            headers={"kid": signer.kid},
        )

    def unsigned_token(self, alg: object, secret: bytes = b"", **overrides: Any) -> str:
        """``alg: none`` (empty signature) or an HMAC keyed with ``secret``: the forgeries
        (``alg`` may be any JSON value, as a forger's is)."""
        header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": self.rsa.kid}).encode())
        payload = _b64(json.dumps(self.claims(**overrides)).encode())
        signing_input = f"{header}.{payload}".encode()
        signature = (
            "" if alg == "none" else _b64(hmac.digest(secret, signing_input, hashlib.sha256))
        )
        return f"{header}.{payload}.{signature}"

    async def discovery(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503)
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "jwks_uri": f"{self.issuer}/keys",
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        self.key_fetches += 1
        return web.json_response({"keys": [k.jwk() for k in self.published]})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/keys", self.keys)
        return app


@asynccontextmanager
async def serve_issuer() -> AsyncIterator[FakeIssuer]:
    fake = FakeIssuer()
    fake.server = TestServer(fake.app(), host="127.0.0.1")
    await fake.server.start_server()
    try:
        yield fake
    finally:
        await fake.server.close()
