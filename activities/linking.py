"""Link-code activities: secure randomness and the call back into Temporal to confirm a code."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from hosting.ids import link_workflow_id
from hosting.models import LinkCode, LinkConfirm, LinkOutcome

# Unambiguous characters (no 0/O, 1/I/L): people copy these codes by hand.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8


def normalise(code: str) -> str:
    return code.strip().upper().replace("-", "")


def code_hash(signing_key: bytes, code: str) -> str:
    """Keyed hash of a code: the workflow ID holds this, never the code."""
    return hmac.new(signing_key, b"link:" + normalise(code).encode(), hashlib.sha256).hexdigest()[
        :40
    ]


class LinkActivities:
    def __init__(self, client: Client, signing_key: bytes) -> None:
        self._client = client
        self._key = signing_key

    @activity.defn(name="new_link_code")
    async def new_link_code(self) -> LinkCode:
        raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        shown = f"{raw[:4]}-{raw[4:]}"
        return LinkCode(code=shown, code_hash=code_hash(self._key, raw))

    @activity.defn(name="confirm_link")
    async def confirm_link(self, confirm: LinkConfirm) -> LinkOutcome:
        """Unknown, expired, used and refused codes all come back the same: not linked."""
        if len(normalise(confirm.code)) != CODE_LENGTH:
            return LinkOutcome(linked=False)
        wid = link_workflow_id(confirm.tenant, code_hash(self._key, confirm.code))
        handle = self._client.get_workflow_handle(wid)
        try:
            outcome: LinkOutcome = await handle.execute_update(
                "confirm", confirm, result_type=LinkOutcome
            )
        except (WorkflowUpdateFailedError, RPCError):
            return LinkOutcome(linked=False)
        return outcome
