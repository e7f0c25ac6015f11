"""One push with the run's retry schedule, shared by runs and operator redeliveries."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.delivery import DeliveryActivities
    from activities.names import NON_RETRYABLE_PUSH
    from hosting.models import PushRequest, PushResult


class PushFailed(Exception):
    """A push ended without delivery; ``reason`` is for operators (no content)."""

    def __init__(self, reason: str, attempts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


async def push_with_retries(push: PushRequest) -> PushResult:
    """Raises :class:`PushFailed` when the destination is dead-lettered."""
    policy = push.policy
    try:
        result: PushResult = await workflow.execute_activity_method(
            DeliveryActivities.push_reply,
            push,
            start_to_close_timeout=timedelta(seconds=policy.timeout_s + 5),
            schedule_to_close_timeout=timedelta(seconds=push.max_age_s),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=policy.initial_interval_s),
                backoff_coefficient=policy.backoff,
                maximum_interval=timedelta(seconds=policy.max_interval_s),
                maximum_attempts=policy.max_attempts,
                non_retryable_error_types=NON_RETRYABLE_PUSH,
            ),
        )
    except ActivityError as err:
        raise PushFailed(*failure_reason(err)) from None
    return result


def failure_reason(err: ActivityError) -> tuple[str, int]:
    """Why a push ended, as an operator reads it, without any message content."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        attempts = 0
        if cause.details and isinstance(cause.details[0], dict):
            attempts = int(cause.details[0].get("attempt", 0))
        if cause.type in NON_RETRYABLE_PUSH:
            return cause.type, attempts
        return "retries_exhausted", attempts
    if isinstance(cause, TimeoutError):
        return "max_age_exceeded", 0
    return type(cause).__name__ if cause else "unknown", 0
