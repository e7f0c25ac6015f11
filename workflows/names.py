"""Names shared by workflows and the code that starts them (no imports, no cycles)."""

INVOKE_AGENT = "invoke_agent"
PUSH_REPLY = "push_reply"
RUN_FINISHED_SIGNAL = "run_finished"
SUBMIT_LATER_SIGNAL = "submit_later"
NEW_LINK_CODE = "new_link_code"
CONFIRM_LINK = "confirm_link"
LINK_IDENTITY_SIGNAL = "link_identity"
ALIAS_TO_SIGNAL = "alias_to"
UNALIAS_SIGNAL = "unalias"
REDELIVERED_SIGNAL = "redelivered"
REVOKE_LINKS_SIGNAL = "revoke_links"
DROP_ACCOUNT_SIGNAL = "drop_account"
CANCEL_RUN_SIGNAL = "cancel_run"
LOAD_DEAD_LETTER = "load_dead_letter"

# Error types raised by activities that must not be retried.
AGENT_REJECTED = "AgentRejected"
PUSH_REJECTED = "PushRejected"
PUSH_UNAUTHORIZED = "PushUnauthorized"
PUSH_EXPIRED = "PushExpired"
NON_RETRYABLE_PUSH = [PUSH_REJECTED, PUSH_UNAUTHORIZED, PUSH_EXPIRED]
