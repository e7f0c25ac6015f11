"""The push activity: one reply to one destination through its channel adapter.

The adapter's ack decides everything: delivered ends the activity; rate limits wait the
platform's Retry-After; transient failures back off exponentially with jitter; rejections and
our own bad credentials stop at once; a reply past its maximum age is never sent late.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import aiohttp
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.names import PUSH_EXPIRED, PUSH_REJECTED, PUSH_UNAUTHORIZED
from channels.base import FailureMode
from channels.registry import ChannelRegistry
from hosting.metrics import DEAD_LETTERS, DELIVERY_ATTEMPTS, DELIVERY_SECONDS
from hosting.models import DeliveryPolicy, PushRequest, PushResult


def _count(push: PushRequest, outcome: str) -> None:
    """Delivery outcomes go through the SDK's meter, so the worker's one /metrics has them."""
    activity.metric_meter().create_counter(
        DELIVERY_ATTEMPTS, "Push attempts by channel and outcome"
    ).with_additional_attributes({"channel": push.address.channel, "outcome": outcome}).add(1)


def _delivered(push: PushRequest, age_s: float) -> None:
    """Time from the run's start to its reply reaching the platform (the on-call question
    "how late are replies"), per channel and phase."""
    activity.metric_meter().create_histogram_float(
        DELIVERY_SECONDS, "Time from a run's start to a push delivered", "s"
    ).record(max(age_s, 0.0), {"channel": push.address.channel, "phase": push.phase})


def _dead_letter(push: PushRequest, reason: str) -> None:
    """A destination given up on, by the reason the run records (see failure_reason)."""
    activity.metric_meter().create_counter(
        DEAD_LETTERS, "Pushes given up on, by channel and reason"
    ).add(1, {"channel": push.address.channel, "reason": reason})


def backoff_delay(policy: DeliveryPolicy, attempt: int, rng: random.Random) -> float:
    """Capped exponential backoff with "equal jitter": between half and all of the step."""
    step = min(policy.max_interval_s, policy.initial_interval_s * policy.backoff ** (attempt - 1))
    return step / 2 + rng.uniform(0, step / 2)


class DeliveryActivities:
    def __init__(self, registry: ChannelRegistry, http: aiohttp.ClientSession) -> None:
        self._registry = registry
        self._http = http
        self._rng = random.SystemRandom()

    @activity.defn(name="push_reply")
    async def push_reply(self, push: PushRequest) -> PushResult:
        info = activity.info()
        attempt = info.attempt + push.attempts_before
        details = {"attempt": attempt}
        age = (datetime.now(UTC) - push.created_at).total_seconds()
        if age > push.max_age_s:
            _count(push, "expired")
            _dead_letter(push, PUSH_EXPIRED)
            raise ApplicationError(
                "reply is older than max_age_s", details, type=PUSH_EXPIRED, non_retryable=True
            )
        channel = self._registry.get(push.address.channel)
        if channel is None:
            _count(push, "rejected")
            _dead_letter(push, PUSH_REJECTED)
            raise ApplicationError(
                "channel is not configured on this worker",
                details,
                type=PUSH_REJECTED,
                non_retryable=True,
            )
        # A long reply goes out in parts; parts an earlier attempt delivered are not sent again
        # (an earlier activity attempt heartbeats them; the local first attempt reports them
        # in its failure's details, and the workflow passes them on in ``skip_parts``).
        done = max(push.skip_parts, int(info.heartbeat_details[0]) if info.heartbeat_details else 0)
        ack = await channel.push(self._http, push.model_copy(update={"skip_parts": done}))
        if not ack.ok and ack.parts_delivered:
            details["parts"] = done + ack.parts_delivered
            if not info.is_local:
                activity.heartbeat(done + ack.parts_delivered)
        _count(push, ack.mode.value)
        if ack.mode is FailureMode.DELIVERED:
            _delivered(push, (datetime.now(UTC) - push.created_at).total_seconds())
            return PushResult(attempts=attempt, platform_message_ids=ack.platform_message_ids)
        reason = f"{ack.mode.value}: {ack.detail or ''}".strip(": ")
        if ack.mode is FailureMode.REJECTED:
            _dead_letter(push, PUSH_REJECTED)
            raise ApplicationError(reason, details, type=PUSH_REJECTED, non_retryable=True)
        if ack.mode is FailureMode.UNAUTHORIZED:
            _dead_letter(push, PUSH_UNAUTHORIZED)
            raise ApplicationError(reason, details, type=PUSH_UNAUTHORIZED, non_retryable=True)
        if ack.mode is FailureMode.RATE_LIMITED and ack.retry_after_s is not None:
            # Wait what the platform asked, plus a little jitter so retries do not stampede.
            delay = ack.retry_after_s + self._rng.uniform(0, 0.25)
        else:
            delay = max(ack.retry_after_s or 0.0, backoff_delay(push.policy, attempt, self._rng))
        if age + delay > push.max_age_s:
            _dead_letter(push, PUSH_EXPIRED)
            raise ApplicationError(
                "next attempt would be past max_age_s",
                details,
                type=PUSH_EXPIRED,
                non_retryable=True,
            )
        if attempt >= push.policy.max_attempts:  # the retry policy gives up after this one
            _dead_letter(push, "retries_exhausted")
        raise ApplicationError(reason, details, next_retry_delay=timedelta(seconds=delay))
