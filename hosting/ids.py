"""Deterministic workflow IDs: the same input always names the same execution.

Every component is validated before it is put into an ID, so a hostile platform value can
never address another tenant's workflow or break the ID format.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

MAX_COMPONENT = 200
_BAD = re.compile(r"[/\x00-\x1f\x7f]")


class InvalidKey(ValueError):
    """A key component is unusable in a workflow ID."""


def check_component(value: str, what: str) -> str:
    if not value:
        raise InvalidKey(f"{what} is empty")
    if len(value) > MAX_COMPONENT:
        raise InvalidKey(f"{what} is longer than {MAX_COMPONENT} characters")
    if _BAD.search(value) or ".." in value:
        raise InvalidKey(f"{what} contains a forbidden character")
    return value


@dataclass(frozen=True)
class Caller:
    """Who asks, as a pull channel authenticated them: a user of one channel.

    ``key`` (``channel:user``) is the form that is signed into continuation tokens and stored in
    submissions; it is built and split only here."""

    channel: str
    user_id: str

    @property
    def key(self) -> str:
        return f"{self.channel}:{self.user_id}"

    @classmethod
    def parse(cls, key: str) -> Caller:
        channel, _, user_id = key.partition(":")
        return cls(channel=channel, user_id=user_id)


Scope = Literal["per_user", "per_user_per_conversation", "per_conversation"]


def pseudonym(identity_key: bytes, kind: str, value: str) -> str:
    """A platform id as it may appear where anyone with Temporal access can read it (workflow
    ids, search attributes): a keyed hash, stable for as long as the identity key is."""
    digest = hmac.new(identity_key, f"{kind}\x00{value}".encode(), hashlib.sha256)
    return digest.hexdigest()[:24]


def isolation_key(
    scope: Scope, channel: str, user_id: str, conversation_id: str, *, identity_key: bytes
) -> str:
    """The session a message belongs to, following the channel's conversation scope; user and
    conversation appear only as pseudonyms."""
    check_component(channel, "channel")
    check_component(user_id, "user id")
    check_component(conversation_id, "conversation id")
    user = pseudonym(identity_key, f"user:{channel}", user_id)
    conversation = pseudonym(identity_key, f"conversation:{channel}", conversation_id)
    if scope == "per_user":
        return f"{channel}:{user}"
    if scope == "per_user_per_conversation":
        return f"{channel}:{user}@{conversation}"
    return f"{channel}@{conversation}"


def session_workflow_id(tenant: str, key: str) -> str:
    return f"session/{check_component(tenant, 'tenant')}/{check_component(key, 'isolation key')}"


def run_workflow_id(tenant: str, channel: str, message_key: str) -> str:
    return "/".join(
        (
            "run",
            check_component(tenant, "tenant"),
            check_component(channel, "channel"),
            check_component(message_key, "message key"),
        )
    )


def link_workflow_id(tenant: str, code_hash: str) -> str:
    """A link challenge is named by its code's keyed hash: the code itself is never an ID."""
    return f"link/{tenant}/{code_hash}"


def redelivery_workflow_id(run_id: str, destination: str) -> str:
    """One replay per dead-lettered destination of a run: a second replay joins the first."""
    return f"redelivery/{run_id}/{destination}"


def message_id(channel: str, message_key: str) -> str:
    """One message across redeliveries: the session's dedupe key and the id of its ``submit``
    update (a redelivered message is the same update, answered from the first result)."""
    return f"{channel}:{message_key}"


def tuple_key(*parts: str) -> str:
    """A fixed-size key for a tuple of strings: each part is length-prefixed before hashing,
    so no choice of parts (separators included) can spell another tuple's key."""
    framed = b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)
    return hashlib.sha256(framed).hexdigest()[:40]


def normalise_link_code(code: str) -> str:
    """What a person typed, as the code was issued: case and dashes do not matter."""
    return code.strip().upper().replace("-", "")


def link_code_hash(signing_key: bytes, code: str) -> str:
    """Keyed hash of a link code: workflow ids, state and inputs hold this, never the code."""
    digest = hmac.new(signing_key, b"link:" + normalise_link_code(code).encode(), hashlib.sha256)
    return digest.hexdigest()[:40]


def identity_hash(signing_key: bytes, value: str) -> str:
    """Keyed hash of an identity: searchable by operators who know the identity, not reversible."""
    return hmac.new(signing_key, b"identity:" + value.encode(), hashlib.sha256).hexdigest()[:32]


def delivery_key(run_id: str, destination: str, phase: str) -> str:
    """Idempotency key of one push; identical on every retry and on replay."""
    return f"{run_id}:{destination}:{phase}"


def message_workflow_id(tenant: str, message_key: str) -> str:
    """One proactive message: ``message/{tenant}/{message_key}``. The key is ``msg_`` plus
    ``tuple_key(caller, Idempotency-Key)`` (or of a fresh id), so a retried request is the
    same message and one caller's key never names another caller's message."""
    return "/".join(
        ("message", check_component(tenant, "tenant"), check_component(message_key, "message id"))
    )


def schedule_id(tenant: str, public_id: str) -> str:
    """One scheduled check-in: the Temporal Schedule ``schedule/{tenant}/{public_id}``. The
    public id is ``sch_`` plus ``tuple_key(caller, Idempotency-Key)`` (or of a fresh id)."""
    return "/".join(
        ("schedule", check_component(tenant, "tenant"), check_component(public_id, "schedule id"))
    )


def checkin_workflow_id(tenant: str, public_id: str) -> str:
    """What a check-in's schedule starts; Temporal appends each firing's time to it."""
    return "/".join(
        ("checkin", check_component(tenant, "tenant"), check_component(public_id, "schedule id"))
    )


def checkin_message_key(public_id: str, fired_at: datetime) -> str:
    """The message key of one firing: a retried firing is the same message, so one run."""
    stamp = fired_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return check_component(f"{public_id}.{stamp}", "message key")


def approval_workflow_id(session_id: str, code: str) -> str:
    """One tool call waiting for a person: ``approval/{session}/{code}``. Scoped by the session,
    so a code means nothing from another conversation (it answers like an unknown code)."""
    return f"approval/{session_id.removeprefix('session/')}/{code.strip().upper()}"
