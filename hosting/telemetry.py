"""OpenTelemetry traces: one trace per inbound message, from the gateway's HTTP span through
the session's update and the run to the agent call and every push.

Off unless ``[telemetry] otlp_endpoint`` is set. The ``otel`` extra is imported only then, so
a deployment without it runs as before. Spans carry route templates, channel names, statuses
and workflow ids (which hold keyed hashes, never raw user ids); never paths (they carry
continuation tokens), bodies or message text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from hosting.settings import ConfigError, TelemetrySettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from temporalio.contrib.opentelemetry import TracingInterceptor

TRACER_NAME = "switchboard"


@dataclass(frozen=True)
class Tracing:
    """One process's tracer provider and what plugs it into aiohttp and Temporal."""

    provider: TracerProvider

    def interceptor(self) -> TracingInterceptor:
        """For the Temporal client (a worker built on that client uses it too): spans for
        updates, workflows and activities, with the context carried in Temporal headers, and
        each submission's run in the trace the submission came in."""
        from hosting.temporal_tracing import SubmissionTracingInterceptor

        return SubmissionTracingInterceptor(self.provider.get_tracer(TRACER_NAME))

    def middleware(self) -> Middleware:
        """The gateway's server span, named by route template, never by path."""
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        tracer = self.provider.get_tracer(TRACER_NAME)

        @web.middleware
        async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            with tracer.start_as_current_span(
                f"{request.method} {route}",
                context=propagate.extract(request.headers),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": request.method, "http.route": route},
            ) as span:
                status = 500
                try:
                    response = await handler(request)
                    status = response.status
                    return response
                except web.HTTPException as exc:
                    status = exc.status
                    raise
                finally:
                    span.set_attribute("http.response.status_code", status)
                    channel = request.match_info.get("channel")
                    if channel is not None and status != 404:  # only configured channels
                        span.set_attribute("switchboard.channel", channel)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))

        return trace_request

    def shutdown(self) -> None:
        """Flush what is still buffered; call once when the process stops."""
        self.provider.shutdown()


def start_tracing(
    settings: TelemetrySettings, service: str, *, exporter: SpanExporter | None = None
) -> Tracing | None:
    """The process's tracing, or None when it is off. Tests pass an in-memory ``exporter``,
    which is written synchronously so the spans are there as soon as a request returns."""
    if exporter is None and not settings.otlp_endpoint:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        raise ConfigError(
            "telemetry.otlp_endpoint: set, but the OpenTelemetry packages are missing "
            "(pip install 'switchboard[otel]')"
        ) from None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        # The gateway decides; the worker follows the decision carried in Temporal headers.
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
        )
    return Tracing(provider)
