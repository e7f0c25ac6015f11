"""The SDK's ``TracingInterceptor``, plus one thing it does not do: tell a workflow handler
which trace its update or signal arrived in (see :mod:`hosting.trace_context`).

Imported only when tracing is on: it needs the ``otel`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor
from temporalio.worker import HandleSignalInput, HandleUpdateInput, WorkflowInterceptorClassInput

from hosting.trace_context import noting_arrival


class SubmissionTracingInterceptor(TracingInterceptor):
    """Client and worker spans as the SDK makes them; workflow handlers see their trace."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        super().workflow_interceptor_class(input)  # registers the span extern the class uses
        return _NotingArrivals


class _NotingArrivals(TracingWorkflowInboundInterceptor):
    async def handle_signal(self, input: HandleSignalInput) -> None:
        with noting_arrival(self._traceparent(input.headers)):
            await super().handle_signal(input)

    async def handle_update_handler(self, input: HandleUpdateInput) -> Any:
        with noting_arrival(self._traceparent(input.headers)):
            return await super().handle_update_handler(input)

    def _traceparent(self, headers: Mapping[str, Payload]) -> object:
        """The traceparent of the caller's span, carried in the SDK's tracing header."""
        payload = headers.get(self.header_key)
        if payload is None:
            return None
        try:
            carrier = self.payload_converter.from_payloads([payload])[0]
        except Exception:  # another client's header we cannot read: no trace to join
            return None
        return carrier.get("traceparent") if isinstance(carrier, dict) else None
