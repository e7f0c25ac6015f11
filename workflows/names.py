"""Signal names on the wire: fixed, because running workflows and recorded histories use them.

Callers signal by method reference (``handle.signal(SessionWorkflow.cancel_run, ...)``); these
strings are only the names the handlers are registered under.
"""

RUN_FINISHED_SIGNAL = "run_finished"
SUBMIT_LATER_SIGNAL = "submit_later"
LINK_IDENTITY_SIGNAL = "link_identity"
ALIAS_TO_SIGNAL = "alias_to"
UNALIAS_SIGNAL = "unalias"
REDELIVERED_SIGNAL = "redelivered"
REVOKE_LINKS_SIGNAL = "revoke_links"
DROP_ACCOUNT_SIGNAL = "drop_account"
CANCEL_RUN_SIGNAL = "cancel_run"
LATE_TURN_SIGNAL = "late_turn"
