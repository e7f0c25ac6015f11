"""Names on the wire that activities own: their error types (which workflows must not retry).

Activity names themselves are in each ``@activity.defn(name=...)`` and stay fixed, since recorded
histories name them; workflows call activities by method reference, never by these strings.
"""

AGENT_REJECTED = "AgentRejected"
PUSH_REJECTED = "PushRejected"
PUSH_UNAUTHORIZED = "PushUnauthorized"
PUSH_EXPIRED = "PushExpired"
NON_RETRYABLE_PUSH = [PUSH_REJECTED, PUSH_UNAUTHORIZED, PUSH_EXPIRED]

# The agent activity signals its run with the answer so far (activities may not import
# workflows, so the run's handler is registered under this name).
AGENT_PROGRESS_SIGNAL = "agent_progress"

# A tool the model named that cannot run as asked (unknown, bad arguments): never retried.
TOOL_REFUSED = "ToolRefused"

# The workflow each check-in's Temporal Schedule starts. The schedule is made by activities
# too (the agent's check-in tool), which may not import workflows, so it is named here.
CHECKIN_WORKFLOW = "CheckInWorkflow"
