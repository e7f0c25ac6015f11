"""``switchboard keys rotate``: fresh keys and the order to put them in.

Nothing is written: the operator puts the values into the secret store the deployment reads
(``SWITCHBOARD_SECURITY__*``). Unlike every other command this one prints secrets, the new
ones and, where it must be pinned, the identity key in force; existing codec keys appear by
id only.
"""

from __future__ import annotations

import argparse
import base64
import secrets
from datetime import UTC, datetime
from typing import Any

from cli.main import Report, _load_settings
from hosting.settings import ConfigError, Settings


def fresh_secret() -> str:
    """Base64 of 32 random bytes: a signing, identity or codec key."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def new_key_id(taken: set[str]) -> str:
    """A key id that says when it was made (``k20260131a1b2``) and is not already in use."""
    while True:
        key_id = f"k{datetime.now(UTC):%Y%m%d}{secrets.token_hex(2)}"
        if key_id not in taken:
            return key_id


def _current() -> Settings | None:
    """The configuration in force, or None where there is none (keys for a new deployment)."""
    try:
        settings = _load_settings()
    except ConfigError:
        return None
    return settings if settings.security.signing_key.get_secret_value() else None


def rotate(args: argparse.Namespace) -> Report:
    settings = _current()
    old_ids = [k for k, _ in settings.security.codec_key_pairs()] if settings else []
    key_id = args.key_id or new_key_id(set(old_ids))
    if key_id in old_ids:
        return Report(code=2, error=f"switchboard: codec key id {key_id!r} is already in use")
    codec_key = f"{key_id}:{fresh_secret()}"
    signing_key = fresh_secret()
    identity: dict[str, Any]
    if settings is None:
        identity = {"state": "unknown", "identity_key": fresh_secret()}
    elif settings.security.identity_key.get_secret_value():
        identity = {"state": "explicit", "identity_key": None}
    else:
        # The key the pseudonyms are made with today; pinning it keeps every session.
        pinned = base64.b64encode(settings.security.identity_key_bytes()).decode()
        identity = {"state": "derived", "identity_key": pinned}
    listed = ", ".join(f'"{i}:…"' for i in old_ids) or '"<the keys in use now>"'
    doc = {
        "codec_key": codec_key,
        "codec_key_id": key_id,
        "codec_keys_in_use": old_ids,
        "signing_key": signing_key,
        "identity": identity,
        "steps": _steps(key_id, listed, identity["state"]),
    }
    lines = [
        "new codec key (security.codec_keys):",
        f"  {codec_key}",
        "new signing key (security.signing_key):",
        f"  {signing_key}",
    ]
    if identity["state"] == "explicit":
        lines.append("security.identity_key is set explicitly: keep it as it is, never rotate it")
    elif identity["state"] == "derived":
        lines += [
            "security.identity_key, derived from the signing key today; pin it (set it to this)",
            "before you change the signing key:",
            f"  {identity['identity_key']}",
        ]
    else:
        lines += [
            "no configuration found; for a new deployment, an identity key",
            "(security.identity_key; an existing one must keep the key it has):",
            f"  {identity['identity_key']}",
        ]
    lines.append("")
    lines += [f"{n}. {step}" for n, step in enumerate(doc["steps"], start=1)]
    return Report(doc, lines)


def _steps(key_id: str, listed: str, identity_state: str) -> list[str]:
    steps = [
        f'Codec key, first rollout: append it, [{listed}, "{key_id}:…"], on every worker and '
        "gateway and restart them. Every process can now read the new key; none writes it yet.",
        f'Codec key, second rollout: move it first, ["{key_id}:…", {listed}], and restart '
        "again. New payloads are encrypted with it; old ones still decode with the keys after "
        "it. (With a single worker and gateway restarted together, one rollout straight to "
        "this order is enough.)",
        "Keep every old codec key until no history needs it: until every workflow that was "
        "open at the second rollout has closed or continued as new (sessions do, on their own), "
        "and the namespace's retention period has passed since. Then drop the old ids.",
    ]
    if identity_state != "explicit":
        steps.append(
            "Identity key: set security.identity_key explicitly (to the value above) and roll "
            "it out before touching the signing key. The pseudonyms in session ids follow it; "
            "never change it afterwards."
        )
    steps.append(
        "Signing key: replace security.signing_key everywhere at once. Continuation tokens, "
        "web chat cookies and pending link codes signed with the old key stop verifying "
        "(callers get 404 and start again; users send /link again)."
    )
    return steps
