"""Link-code activities: secure randomness and the call back into Temporal to confirm a code."""

from __future__ import annotations

import secrets

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from hosting.ids import link_code_hash, link_workflow_id, normalise_link_code
from hosting.models import LinkCode, LinkConfirm, LinkOutcome

# Unambiguous characters (no 0/O, 1/I/L): people copy these codes by hand.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8


def link_code_reply(raw: str, ttl_s: float) -> str:
    shown = f"{raw[:4]}-{raw[4:]}"
    minutes = max(1, round(ttl_s / 60))
    return (
        f"Your link code is {shown}. Within {minutes} minute(s), send "
        f"/link {shown} from the other account you want to link to this one."
    )


class LinkActivities:
    def __init__(self, client: Client, signing_key: bytes) -> None:
        self._client = client
        self._key = signing_key

    @activity.defn(name="new_link_code")
    async def new_link_code(self, ttl_s: float = 600.0) -> LinkCode:
        """A fresh code, returned only inside the reply that shows it (content, which the
        support role never sees); the workflow keeps its hash."""
        raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        return LinkCode(
            code_hash=link_code_hash(self._key, raw), reply_text=link_code_reply(raw, ttl_s)
        )

    @activity.defn(name="confirm_link")
    async def confirm_link(self, confirm: LinkConfirm) -> LinkOutcome:
        """Unknown, expired, used and refused codes all come back the same: not linked."""
        hashed = confirm.code_hash
        if hashed is None and confirm.code is not None:  # recorded before hashing at the door
            if len(normalise_link_code(confirm.code)) != CODE_LENGTH:
                return LinkOutcome(linked=False)
            hashed = link_code_hash(self._key, confirm.code)
        if hashed is None:
            return LinkOutcome(linked=False)
        wid = link_workflow_id(confirm.tenant, hashed)
        handle = self._client.get_workflow_handle(wid)
        try:
            outcome: LinkOutcome = await handle.execute_update(
                "confirm", confirm, result_type=LinkOutcome
            )
        except (WorkflowUpdateFailedError, RPCError):
            return LinkOutcome(linked=False)
        return outcome
