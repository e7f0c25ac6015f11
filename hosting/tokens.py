"""Continuation tokens: opaque to callers, URL-safe, HMAC-signed, expiring, bound to a caller.

A token names one run for one caller in one tenant until it expires. Every check is local and
the signature is always computed, so a forged, expired or someone else's token is refused in
the same time, and the caller gets the same 404 for all of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from hosting.models import Frozen

PREFIX = "resp_"
# Far above any token issue() makes (a run ID is at most a few hundred characters).
MAX_TOKEN_CHARS = 2048


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


def _mac(key: bytes, body: str, tenant: str, caller: str) -> str:
    # Tenant and caller are signed but not written: another caller's token simply fails to
    # verify, exactly like a forged one, and the token does not tell who owns it.
    signed = f"continuation:{tenant}:{caller}:{body}".encode()
    return _b64(hmac.new(key, signed, hashlib.sha256).digest())


def issue(key: bytes, claims: TokenClaims) -> str:
    body = _b64(
        json.dumps(
            [claims.run_id, claims.expires_at, claims.conversation], separators=(",", ":")
        ).encode()
    )
    return f"{PREFIX}{body}.{_mac(key, body, claims.tenant, claims.caller)}"


def verify(key: bytes, token: str, *, tenant: str, caller: str, now: float) -> TokenClaims | None:
    """The claims if the token is genuine, unexpired and this caller's; otherwise None."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None  # bounded before anything is decoded
    body, _, mac = token.removeprefix(PREFIX).partition(".")
    genuine = hmac.compare_digest(mac.encode(), _mac(key, body, tenant, caller).encode())
    try:
        run_id, exp, conv = json.loads(_unb64(body))
        claims = TokenClaims(
            run_id=run_id, tenant=tenant, caller=caller, expires_at=exp, conversation=conv
        )
    except (ValueError, TypeError):
        return None
    return claims if genuine and now < claims.expires_at else None
