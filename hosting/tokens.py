"""Continuation tokens: opaque to callers, URL-safe, HMAC-signed, expiring, bound to a caller.

A token names one run for one caller in one tenant until it expires. Every check is local and
runs in full whatever fails first, so a forged, expired or someone else's token is refused in
the same time, and the caller gets the same 404 for all of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from hosting.models import Frozen

PREFIX = "resp_"


class TokenClaims(Frozen):
    run_id: str
    tenant: str
    caller: str
    expires_at: int
    conversation: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, b"continuation:" + body.encode(), hashlib.sha256).digest())


def issue(key: bytes, claims: TokenClaims) -> str:
    body = _b64(
        json.dumps(
            [claims.run_id, claims.tenant, claims.caller, claims.expires_at, claims.conversation],
            separators=(",", ":"),
        ).encode()
    )
    return f"{PREFIX}{body}.{_mac(key, body)}"


def verify(key: bytes, token: str, *, tenant: str, caller: str, now: float) -> TokenClaims | None:
    """The claims if the token is genuine, unexpired and this caller's; otherwise None."""
    body, _, mac = token.removeprefix(PREFIX).partition(".")
    genuine = hmac.compare_digest(mac.encode(), _mac(key, body).encode())
    try:
        run_id, t, c, exp, conv = json.loads(_unb64(body))
        claims = TokenClaims(run_id=run_id, tenant=t, caller=c, expires_at=exp, conversation=conv)
    except (ValueError, TypeError):
        return None
    owned = hmac.compare_digest(claims.caller.encode(), caller.encode())
    same_tenant = claims.tenant == tenant
    fresh = now < claims.expires_at
    return claims if genuine & owned & same_tenant & fresh else None
