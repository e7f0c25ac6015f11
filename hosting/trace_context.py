"""Which trace a submission belongs to, inside the session that runs it.

A session outlives its messages, and the SDK's tracing starts everything a workflow's main
loop does under the context the workflow started with: every run of a conversation would sit
in the trace of its first message. So the tracing interceptor notes the W3C ``traceparent`` a
``submit`` update or signal arrived with (:func:`noting_arrival`), the session keeps it with
the submission, and starts that submission's run :func:`under` it.

Workflow-safe: the value comes from the update's or signal's header, which is in the history,
so a replay reads the same one. Without tracing (or without the ``otel`` extra) nothing is
noted and :func:`under` attaches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from hosting.models import TRACEPARENT_PATTERN

try:
    from opentelemetry import context as otel_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the otel extra is optional; without it no traceparent is ever noted
    otel_context = None  # type: ignore[assignment]

_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)
_INVALID_IDS = ("-" + "0" * 32 + "-", "-" + "0" * 16 + "-")  # all-zero ids mean "no trace"

_arrived: ContextVar[str | None] = ContextVar("switchboard_arrived_traceparent", default=None)


def valid_traceparent(value: object) -> str | None:
    """``value`` if it is a well-formed traceparent, else None (a header is never trusted)."""
    if not isinstance(value, str) or not _TRACEPARENT.fullmatch(value):
        return None
    return None if any(zero in value for zero in _INVALID_IDS) else value


@contextmanager
def noting_arrival(traceparent: object) -> Iterator[None]:
    """For the interceptor: while an update or signal handler runs, the trace it came in."""
    token = _arrived.set(valid_traceparent(traceparent))
    try:
        yield
    finally:
        _arrived.reset(token)


def arrived_traceparent() -> str | None:
    """In a handler: the traceparent its update or signal arrived with, if traced."""
    return _arrived.get()


@contextmanager
def under(traceparent: str | None) -> Iterator[None]:
    """Make ``traceparent`` the current trace context for the block, so the spans the SDK
    records for calls made in it (a child workflow's start) join that trace."""
    if otel_context is None or valid_traceparent(traceparent) is None:
        yield
        return
    current = otel_context.get_current()  # keeps what the SDK's interceptor put on it
    ctx = TraceContextTextMapPropagator().extract({"traceparent": traceparent}, context=current)
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        # A workflow evicted mid-call is finalised elsewhere: only detach where we attached.
        if otel_context.get_current() is ctx:
            otel_context.detach(token)
