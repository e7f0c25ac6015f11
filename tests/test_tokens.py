"""Continuation tokens: signing, expiry, tampering, binding to caller and tenant."""

from __future__ import annotations

import base64
import re

from hypothesis import given
from hypothesis import strategies as st

from hosting.tokens import TokenClaims, issue, verify

KEY = b"k" * 32
CLAIMS = TokenClaims(
    run_id="run/default/responses/abc", tenant="default", caller="responses:alice", expires_at=2_000
)


def test_round_trip_and_url_safety() -> None:
    token = issue(KEY, CLAIMS)
    assert re.fullmatch(r"resp_[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+", token)
    body = token.removeprefix("resp_").split(".")[0]
    decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    assert b"alice" not in decoded  # the caller is signed, not written
    assert verify(KEY, token, tenant="default", caller="responses:alice", now=1_000) == CLAIMS


def test_expired_foreign_and_other_tenant_tokens_are_refused() -> None:
    token = issue(KEY, CLAIMS)
    assert verify(KEY, token, tenant="default", caller="responses:alice", now=2_000) is None
    assert verify(KEY, token, tenant="default", caller="responses:bob", now=1_000) is None
    assert verify(KEY, token, tenant="other", caller="responses:alice", now=1_000) is None
    assert verify(b"j" * 32, token, tenant="default", caller="responses:alice", now=1_000) is None


def test_tampering_is_detected() -> None:
    token = issue(KEY, CLAIMS)
    body, mac = token.removeprefix("resp_").split(".")
    forged = issue(b"x" * 32, CLAIMS.model_copy(update={"expires_at": 9_999}))
    assert verify(KEY, forged, tenant="default", caller="responses:alice", now=1_000) is None
    flipped = "resp_" + body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + mac
    assert verify(KEY, flipped, tenant="default", caller="responses:alice", now=1_000) is None


@given(st.text(max_size=200))
def test_garbage_never_verifies_or_raises(garbage: str) -> None:
    assert verify(KEY, garbage, tenant="default", caller="responses:alice", now=1_000) is None


def test_huge_or_non_ascii_tokens_are_refused_without_decoding() -> None:
    key = b"k" * 32
    assert verify(key, "resp_" + "A" * 100_000, tenant="t", caller="c", now=0) is None
    assert verify(key, "resp_é.é", tenant="t", caller="c", now=0) is None
    nested = "resp_" + "W" * 3000 + ".x"
    assert verify(key, nested, tenant="t", caller="c", now=0) is None


def test_a_token_reveals_neither_its_run_nor_its_conversation() -> None:
    claims = CLAIMS.model_copy(update={"conversation": "alice@example.com"})
    token = issue(KEY, claims)
    raw = b"".join(
        base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        for part in token.removeprefix("resp_").split(".")
    )
    assert b"run/default" not in raw and b"example.com" not in raw
    assert issue(KEY, claims) == token  # the same claims: the same token (retries)
    assert issue(KEY, claims.model_copy(update={"expires_at": 2_001})) != token
    assert verify(KEY, token, tenant="default", caller="responses:alice", now=1_000) == claims


def test_signed_tokens_from_before_encryption_still_verify_until_they_expire() -> None:
    from hosting.tokens import _b64, _mac

    body = _b64(b'["run/default/responses/abc",2000,null]')
    legacy = f"resp_{body}.{_mac(KEY, body, 'default', 'responses:alice')}"
    assert verify(KEY, legacy, tenant="default", caller="responses:alice", now=1_000) == CLAIMS
    assert verify(KEY, legacy, tenant="default", caller="responses:bob", now=1_000) is None
