"""Gateway metrics (the worker records its own through the Temporal SDK's meter)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

INBOUND = Counter(
    "switchboard_inbound_total",
    "Inbound requests by channel and outcome",
    ["channel", "outcome"],
)
ACK_SECONDS = Histogram(
    "switchboard_inbound_ack_seconds",
    "Time from receiving an inbound request to answering it",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
