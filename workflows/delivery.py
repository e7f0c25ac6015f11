"""One push with the run's retry schedule, shared by runs and operator redeliveries."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, TimeoutError

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
    if policy.first_attempt_local:
        try:
            return await _local_attempt(push)
        except FailureError as err:
            # A local activity's failure comes unwrapped (no ActivityError around it).
            cause = err.cause if isinstance(err, ActivityError) else err
            if _final(cause, policy.max_attempts):
                raise PushFailed(*failure_reason(cause)) from None
            delay, parts = _retry_after(cause, policy.initial_interval_s)
            await workflow.sleep(delay)  # the wait the attempt asked for (Retry-After, backoff)
            push = push.model_copy(update={"skip_parts": parts, "attempts_before": 1})
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
                maximum_attempts=policy.max_attempts - push.attempts_before,
                non_retryable_error_types=NON_RETRYABLE_PUSH,
            ),
        )
    except ActivityError as err:
        raise PushFailed(*failure_reason(err.cause)) from None
    return result


async def _local_attempt(push: PushRequest) -> PushResult:
    """One attempt in the workflow task that has the reply: most pushes succeed at once, and
    this way they cost no activity task and no further workflow task. A worker that dies
    during it fails the workflow task, and the next worker makes the attempt again, as it
    would retry an activity (the platform sees the same idempotency key)."""
    result: PushResult = await workflow.execute_local_activity_method(
        DeliveryActivities.push_reply,
        push,
        start_to_close_timeout=timedelta(seconds=push.policy.timeout_s + 5),
        retry_policy=RetryPolicy(maximum_attempts=1),
    )
    return result


def _final(cause: BaseException | None, max_attempts: int) -> bool:
    """No retry follows: the push was refused for good, or one attempt was all there was."""
    refused = isinstance(cause, ApplicationError) and (
        cause.non_retryable or cause.type in NON_RETRYABLE_PUSH
    )
    return refused or max_attempts <= 1


def _retry_after(cause: BaseException | None, default_s: float) -> tuple[timedelta, int]:
    """The delay the failed attempt asked for and the parts of the reply it delivered."""
    if not isinstance(cause, ApplicationError):
        return timedelta(seconds=default_s), 0
    parts = 0
    if cause.details and isinstance(cause.details[0], dict):
        parts = int(cause.details[0].get("parts", 0))
    return cause.next_retry_delay or timedelta(seconds=default_s), parts


def failure_reason(cause: BaseException | None) -> tuple[str, int]:
    """Why a push ended (from its activity's failure cause), as an operator reads it, without
    any message content."""
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
