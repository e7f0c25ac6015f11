"""Search attributes: only tenant, channel, statuses and keyed hashes, never raw identities.

Search attributes are stored in plain text on the server, so nothing here may carry message
content or a platform user id.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

TENANT = SearchAttributeKey.for_keyword("SwitchboardTenant")
CHANNEL = SearchAttributeKey.for_keyword("SwitchboardChannel")
RUN_STATUS = SearchAttributeKey.for_keyword("SwitchboardRunStatus")
DELIVERY_STATE = SearchAttributeKey.for_keyword("SwitchboardDeliveryState")
IDENTITY_HASH = SearchAttributeKey.for_keyword("SwitchboardIdentityHash")

ALL: tuple[SearchAttributeKey[str], ...] = (
    TENANT,
    CHANNEL,
    RUN_STATUS,
    DELIVERY_STATE,
    IDENTITY_HASH,
)


def dev_server_flags() -> list[str]:
    """``--search-attribute`` flags for ``temporal server start-dev``."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}=Keyword"]
    return flags


def visibility_literal(value: str) -> str:
    """A string quoted for a visibility query, so a value can never end the literal early."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
