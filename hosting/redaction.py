"""What the codec server's support role may see: an allowlist, so new fields stay hidden.

Support staff debug runs and deliveries; they need ids, states, times, counts, hashes and
failure reasons, never what people wrote, what the agent answered, who they are on a platform,
or anything that acts as a credential (link codes, continuation tokens). Every field not named
here is shown as ``[redacted: N chars]``, including fields added after this list was written.
"""

from __future__ import annotations

import json
from typing import Any

# Scalars (or lists of scalars) that describe a run rather than a person.
METADATA = frozenset(
    {
        "accepted", "active_channel", "agent_heartbeat_s", "agent_timeout_s", "alias_of",
        "attempts", "backoff", "cancelled", "channel", "channels", "code_hash", "code_ttl_s",
        "command", "continuation_s", "created_at", "deferred", "deliver_to_origin", "destination",
        "duplicate", "echo_input", "enabled", "home", "identity_hash", "idempotency_key",
        "initial_interval_s", "is_direct", "isolation_key", "kind", "link_failed",
        "link_failures", "link_locked", "linked_count", "max_age_s", "max_attempts",
        "max_duration_s", "max_fanout", "max_interval_s", "message_key", "mode", "multitask",
        "parts_delivered", "phase", "platform_message_ids", "position", "reason",
        "require_approval", "retry_after_s", "role", "run_id", "session_id", "skip_parts",
        "state", "status", "tenant", "timeout_s", "traceparent", "transcript_turns", "ttl_s",
        "unlink_all", "updated_at", "usage_input_tokens", "usage_output_tokens", "version",
    }
)  # fmt: skip
# Fields that hold a nested model (or a list of them): walked, their own fields judged alike.
STRUCTURE = frozenset(
    {
        "address", "deliveries", "delivery", "identity", "initiator", "linked", "linking",
        "options", "policy", "queue", "reply_to", "request", "submit", "target", "unlink",
    }
)  # fmt: skip
# Workflow ids: bare strings (signal and query arguments) that are shown as they are.
ID_PREFIXES = ("run/", "session/", "link/", "redelivery/")


def redacted(value: Any) -> str:
    size = len(value) if isinstance(value, str) else len(json.dumps(value))
    return f"[redacted: {size} chars]"


def _field(name: str, value: Any) -> Any:
    if value is None or value == [] or value == {}:
        return value
    if name in STRUCTURE and isinstance(value, dict | list):
        return for_support(value)
    if name in METADATA and _is_scalar(value):
        return value
    return redacted(value)


def _is_scalar(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_scalar(v) and not isinstance(v, list) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def for_support(value: Any) -> Any:
    """The support role's view of one decoded JSON payload."""
    if isinstance(value, dict):
        return {k: _field(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [for_support(v) for v in value]
    if isinstance(value, str):
        return value if value.startswith(ID_PREFIXES) else redacted(value)
    return value
