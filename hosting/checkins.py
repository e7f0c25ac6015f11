"""Scheduled check-ins, the pure part: the spec (``every_s`` | ``cron`` + ``timezone`` |
``at``), how it becomes a Temporal schedule spec, ids and the refusals every door shares.

The HTTP API, the agent's ``schedule_check_in`` tool and the chat commands all go through
:mod:`activities.schedules_store`, which builds on this: one set of rules, not three.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio.client import (
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
)

from hosting.commands import parse_command

ID_PREFIX = "sch_"
LABELS_KIND = "checkin"  # memo ``kind`` and run label of every check-in
# The memo ``caller`` (and ``via``) of a check-in the agent made for the person it talks to:
# no ``[messages]`` caller owns it, whatever its name.
AGENT_CALLER = "agent"
# Temporal refuses a shorter catch-up window.
MIN_CATCHUP_S = 10.0


class CheckInRefused(Exception):
    """A check-in that cannot be made: the HTTP status and code the API answers, and a
    message that the API and the agent's tool both show as it is (no content in it)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class CheckInSpec(BaseModel):
    """When a check-in fires: exactly one of ``every_s``, ``cron`` (with an optional
    ``timezone``, default UTC) or ``at`` (ISO 8601 with an offset; fires once)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_s: int | None = Field(default=None, ge=1, le=366 * 86400)
    cron: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    at: datetime | None = None

    @model_validator(mode="after")
    def _one_spec(self) -> Self:
        given = [n for n in ("every_s", "cron", "at") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of every_s, cron or at")
        if self.timezone is not None and self.cron is None:
            raise ValueError("timezone goes with cron")
        if self.at is not None and self.at.tzinfo is None:
            raise ValueError("at needs a UTC offset, e.g. 2030-01-01T09:00:00Z")
        return self

    def spec_label(self) -> dict[str, Any]:
        """The spec as listings show it (stored in the schedule's memo, never the prompt)."""
        if self.every_s is not None:
            return {"every_s": self.every_s}
        if self.cron is not None:
            return {"cron": self.cron, "timezone": self.timezone or "UTC"}
        assert self.at is not None
        return {"at": self.at.astimezone(UTC).isoformat()}


def refusal(spec: CheckInSpec, prompt: str, now: datetime) -> CheckInRefused | None:
    """What is wrong with a valid-looking check-in, checked before anything is created."""
    if parse_command(prompt) is not None:
        return CheckInRefused(400, "invalid_request", "prompt: a chat command cannot be a check-in")
    if spec.timezone is not None:
        try:
            zoneinfo.ZoneInfo(spec.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return CheckInRefused(400, "invalid_request", "timezone: unknown time zone")
    if spec.at is not None and spec.at.replace(microsecond=0) <= now:
        return CheckInRefused(422, "at_in_past", "at: this time has passed")
    return None


def schedule_spec(spec: CheckInSpec) -> tuple[ScheduleSpec, ScheduleState]:
    """``every_s`` is an interval, ``cron`` a cron expression in its time zone, ``at`` one
    calendar second with a single action allowed, so it fires once."""
    if spec.every_s is not None:
        return (
            ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=spec.every_s))]),
            ScheduleState(),
        )
    if spec.cron is not None:
        return (
            ScheduleSpec(cron_expressions=[spec.cron], time_zone_name=spec.timezone or "UTC"),
            ScheduleState(),
        )
    assert spec.at is not None
    at = spec.at.astimezone(UTC)
    calendar = ScheduleCalendarSpec(
        second=[ScheduleRange(at.second)],
        minute=[ScheduleRange(at.minute)],
        hour=[ScheduleRange(at.hour)],
        day_of_month=[ScheduleRange(at.day)],
        month=[ScheduleRange(at.month)],
        year=[ScheduleRange(at.year)],
    )
    return (
        ScheduleSpec(calendars=[calendar], time_zone_name="UTC"),
        ScheduleState(limited_actions=True, remaining_actions=1),
    )


def public_id_of(schedule: str) -> str:
    """``sch_…`` from itself or from the whole ``schedule/{tenant}/sch_…``."""
    return schedule.rsplit("/", 1)[-1]
