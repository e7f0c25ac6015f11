"""Continuation tokens: opaque, URL-safe, encrypted, expiring, bound to a caller.

A token names one run for one caller in one tenant until it expires. Its claims are sealed with
AES-256-GCM under a key derived from the signing key, with tenant and caller as associated
data: nobody can read which run (or whose conversation) a token names, and another caller's
token fails to open exactly like a forged one. Every check is local, and the caller gets the
same 404 for forged, expired and foreign tokens.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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


@functools.lru_cache(maxsize=8)
def _sealing_key(key: bytes) -> AESGCM:  # derived once per signing key, not per request
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"switchboard continuation token"
    ).derive(key)
    return AESGCM(derived)


def _context(tenant: str, caller: str) -> bytes:
    return f"continuation:{tenant}:{caller}".encode()


def issue(key: bytes, claims: TokenClaims) -> str:
    body = json.dumps(
        [claims.run_id, claims.expires_at, claims.conversation], separators=(",", ":")
    ).encode()
    context = _context(claims.tenant, claims.caller)
    # Synthetic nonce: the same claims seal to the same token (a retried create gets the same
    # id back), and different claims never share a nonce.
    nonce = hmac.new(key, b"token-nonce:" + context + b":" + body, hashlib.sha256).digest()[:12]
    sealed = _sealing_key(key).encrypt(nonce, body, context)
    return f"{PREFIX}{_b64(nonce)}.{_b64(sealed)}"


def verify(key: bytes, token: str, *, tenant: str, caller: str, now: float) -> TokenClaims | None:
    """The claims if the token is genuine, unexpired and this caller's; otherwise None."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None  # bounded before anything is decoded
    first, _, second = token.removeprefix(PREFIX).partition(".")
    try:
        nonce = _unb64(first)
        if len(nonce) == 12:
            body = _sealing_key(key).decrypt(nonce, _unb64(second), _context(tenant, caller))
        else:
            body = _signed_body(key, first, second, tenant, caller)
        run_id, exp, conv = json.loads(body)
        claims = TokenClaims(
            run_id=run_id, tenant=tenant, caller=caller, expires_at=exp, conversation=conv
        )
    except (InvalidTag, ValueError, TypeError):
        return None
    return claims if now < claims.expires_at else None


def _signed_body(key: bytes, body: str, mac: str, tenant: str, caller: str) -> bytes:
    """Tokens issued before they were encrypted (signed, readable); accepted until they
    expire, ``runs.continuation_s`` after the upgrade at the latest."""
    if not hmac.compare_digest(mac.encode(), _mac(key, body, tenant, caller).encode()):
        raise ValueError("not genuine")
    return _unb64(body)
