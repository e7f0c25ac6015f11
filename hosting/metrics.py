"""Metrics: the gateway's (prometheus-client, ``GET /metrics``) and the worker's, recorded through
the Temporal SDK's meter so the worker's one endpoint has ours beside the SDK's own.

Labels carry channel names, statuses, phases and reasons only: never ids of people or content.
The dashboard (``docker/grafana/switchboard.json``) and the alert rules
(``docker/prometheus/alerts.yml``) read these names; ``tests/test_dashboards.py`` keeps them
in step.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram
from temporalio import workflow
from temporalio.worker import (
    ExecuteWorkflowInput,
    HandleSignalInput,
    Interceptor,
    SignalExternalWorkflowInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from hosting.models import AgentProgress, RunFinished, RunInput, RunView

INBOUND = Counter(
    "switchboard_inbound_total",
    "Inbound requests by channel and outcome (accepted, duplicate, refused, rate_limited, "
    "queue_full, unavailable, ...)",
    ["channel", "outcome"],
)
ACK_SECONDS = Histogram(
    "switchboard_inbound_ack_seconds",
    "Time from receiving an inbound request to answering it",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

# The worker's, by the name it records them under (counters gain `_total` on the endpoint).
DELIVERY_ATTEMPTS = "switchboard_delivery_attempts"
DELIVERY_SECONDS = "switchboard_delivery_seconds"
DEAD_LETTERS = "switchboard_dead_letters"
RUNS_FINISHED = "switchboard_runs_finished"
FIRST_DELTA_SECONDS = "switchboard_run_first_delta_seconds"

# Seconds, from a fast echo to a reply that waited out a platform's rate limit.
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
WORKER_HISTOGRAM_BUCKETS = {
    DELIVERY_SECONDS: SECONDS_BUCKETS,
    FIRST_DELTA_SECONDS: SECONDS_BUCKETS,
}


class RunMetricsInterceptor(Interceptor):
    """Runs by channel and status, and time to first delta, taken from what a run already
    receives and sends, so the workflow's story stays free of bookkeeping. Recorded through
    ``workflow.metric_meter()``, which records nothing while a history is replayed."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _RunMetricsInbound


class _RunMetricsInbound(WorkflowInboundInterceptor):
    def __init__(self, next: WorkflowInboundInterceptor) -> None:
        super().__init__(next)
        self.channel: str | None = None  # set for runs only
        self.counted = False
        self._first_delta_seen = False

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_RunMetricsOutbound(outbound, self))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        if input.args and isinstance(input.args[0], RunInput):
            self.channel = input.args[0].submit.request.channel
        result = await super().execute_workflow(input)
        if isinstance(result, RunView):  # a run that reported to no session
            self.count_finished(result.status.value)
        return result

    async def handle_signal(self, input: HandleSignalInput) -> None:
        batch = input.args[0] if input.args else None
        first = isinstance(batch, AgentProgress) and batch.seq == 0 and not self._first_delta_seen
        if self.channel is not None and first:
            self._first_delta_seen = True
            # Workflow time: the same on every replay, and the clock readers of the run see.
            waited = (workflow.now() - workflow.info().start_time).total_seconds()
            workflow.metric_meter().create_histogram_float(
                FIRST_DELTA_SECONDS, "Time from a run's start to the first part of its answer", "s"
            ).record(max(waited, 0.0), {"channel": self.channel})
        await super().handle_signal(input)

    def count_finished(self, status: str) -> None:
        if self.channel is None or self.counted:
            return
        self.counted = True
        workflow.metric_meter().create_counter(
            RUNS_FINISHED, "Runs by channel and final status"
        ).add(1, {"channel": self.channel, "status": status})


class _RunMetricsOutbound(WorkflowOutboundInterceptor):
    def __init__(self, next: WorkflowOutboundInterceptor, inbound: _RunMetricsInbound) -> None:
        super().__init__(next)
        self._inbound = inbound

    async def signal_external_workflow(self, input: SignalExternalWorkflowInput) -> None:
        # A run tells its session it finished (replies out) long before it closes.
        if input.args and isinstance(input.args[0], RunFinished):
            self._inbound.count_finished(input.args[0].status.value)
        await super().signal_external_workflow(input)
