"""Bearer keys: which named caller, if any, an ``Authorization`` header belongs to."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence


def match_bearer(headers: Mapping[str, str], keys: Sequence[tuple[str, bytes]]) -> str | None:
    """The name of the key presented as ``Bearer <key>``. Every key is compared, in constant
    time and with no early exit, so timing tells nothing about which keys exist."""
    scheme, _, presented = headers.get("Authorization", "").partition(" ")
    found: str | None = None
    if scheme.lower() == "bearer" and presented:
        token = presented.strip().encode()
        for name, key in keys:
            if hmac.compare_digest(token, key):
                found = name
    return found
