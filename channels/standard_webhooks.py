"""Standard Webhooks signatures: ``v1,`` base64 HMAC-SHA256 over ``id.timestamp.body``."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

TOLERANCE_S = 300


class SignatureError(Exception):
    """The request is not signed by the shared secret (the reason is for logs only)."""


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }


def verify(key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> str:
    """Return the webhook id when one listed ``v1`` signature matches inside the window."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    listed = headers.get("webhook-signature", "")
    if not msg_id or not stamp or not listed:
        raise SignatureError("missing webhook headers")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError("bad timestamp") from None
    if abs(now - timestamp) > TOLERANCE_S:
        raise SignatureError("timestamp outside tolerance")
    expected = sign(key, msg_id, timestamp, body).encode()
    matched = False
    for candidate in listed.split(" "):
        # Compare every candidate so timing does not reveal which one matched.
        if candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected):
            matched = True
    if not matched:
        raise SignatureError("no matching signature")
    return msg_id
