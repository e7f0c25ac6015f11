"""Authorization: a pure, tri-state decision made in the gateway before anything is durable.

Allowlists by native id and by verified claim (``any_of`` within a claim's values, ``all_of``
across claims), a per-channel ``require_link``, and a default. A configuration that would deny
everyone silently is refused at start-up.
"""

from __future__ import annotations

from enum import StrEnum

from hosting.settings import ChannelSettings, ConfigError, Settings


class Decision(StrEnum):
    ALLOWED = "allowed"
    LINK_REQUIRED = "link_required"
    DENIED = "denied"


def decide(
    channel: ChannelSettings, default: str, user_id: str, claims: dict[str, str]
) -> Decision:
    """Allowed if an allowlist names the caller; otherwise the channel's rule, then the default.

    ``allow_claims`` maps a claim name to accepted values: the caller must match every listed
    claim (all_of), each with any of its values (any_of).
    """
    if user_id in channel.allow_native_ids:
        return Decision.ALLOWED
    if channel.allow_claims and all(
        claims.get(name) in values for name, values in channel.allow_claims.items()
    ):
        return Decision.ALLOWED
    if channel.require_link:
        return Decision.LINK_REQUIRED
    if channel.allow_native_ids or channel.allow_claims:
        return Decision.DENIED  # an allowlist exists and the caller is not on it
    return Decision.ALLOWED if default == "allow" else Decision.DENIED


def check_policy(settings: Settings) -> None:
    """Refuse a configuration under which a channel could never admit anyone."""
    if settings.authorization.default != "deny":
        return
    for name, channel in settings.channels.configured().items():
        if not (channel.allow_native_ids or channel.allow_claims or channel.require_link):
            raise ConfigError(
                f"channels.{name}: authorization.default is 'deny' and the channel has no "
                "allow_native_ids, allow_claims or require_link, so it would deny everyone"
            )
