"""``/v1/schedules``: scheduled check-ins, where the agent writes first on a schedule.

``POST /v1/schedules`` with ``{"to": {...}, "prompt": "...", "every_s" | "cron" | "at": ...}``
creates one Temporal Schedule ``schedule/{tenant}/sch_{tuple_key(caller, key)}`` whose action
starts a ``CheckInWorkflow``; each firing submits the prompt into the person's session
(:func:`fire_check_in`, called by the worker's check-in activity), so the agent answers with
the conversation in view and the reply goes to ``to``. Callers are the ``[messages].api_keys``
keys; each sees only its own schedules. Schedules are found by their search attributes and
memo (caller, spec), never by reading the prompt, which is content and never logged.
"""

from __future__ import annotations

import hmac
import uuid
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionResult,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from channels.base import Channel
from channels.registry import ChannelRegistry
from hosting import search_attributes as sa
from hosting.ids import (
    InvalidKey,
    check_component,
    checkin_workflow_id,
    identity_hash,
    schedule_id,
    tuple_key,
)
from hosting.logs import get_logger
from hosting.models import (
    ChannelRequest,
    CheckInFiring,
    CheckInInput,
    CheckInResult,
    CheckInTo,
    ReplyAddress,
    ResponseTarget,
)
from hosting.settings import Settings
from routes.errors import UNAVAILABLE_ERRORS, openai_error, parse_json_body
from routes.inbound import queue_full
from routes.intake import build_submission, submit
from routes.keys import CLIENT, REGISTRY, SETTINGS
from routes.messages import Contact, MessagesApi, To, recorded_contact
from routes.runs import session_of
from workflows.checkin import CheckInWorkflow
from workflows.commands import parse_command

log = get_logger("switchboard.gateway")

ID_PREFIX = "sch_"
LABELS_KIND = "checkin"
# Temporal refuses a shorter catch-up window.
MIN_CATCHUP_S = 10.0


class CreateSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    to: To
    prompt: str = Field(min_length=1, max_length=100_000)
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
        """The spec as the API shows it (stored in the schedule's memo, never the prompt)."""
        if self.every_s is not None:
            return {"every_s": self.every_s}
        if self.cron is not None:
            return {"cron": self.cron, "timezone": self.timezone or "UTC"}
        assert self.at is not None
        return {"at": self.at.astimezone(UTC).isoformat()}


def schedule_spec(body: CreateSchedule) -> tuple[ScheduleSpec, ScheduleState]:
    """``every_s`` is an interval, ``cron`` a cron expression in its time zone, ``at`` one
    calendar second with a single action allowed, so it fires once."""
    if body.every_s is not None:
        return (
            ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=body.every_s))]),
            ScheduleState(),
        )
    if body.cron is not None:
        return (
            ScheduleSpec(cron_expressions=[body.cron], time_zone_name=body.timezone or "UTC"),
            ScheduleState(),
        )
    assert body.at is not None
    at = body.at.astimezone(UTC)
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


# -- one firing (called in the worker) -----------------------------------------------------


def _address(to: CheckInTo, contact: Contact | None) -> ReplyAddress | None:
    """Where a firing's reply goes: the conversation given (with what the session recorded
    for it, if it is the same), else the home conversation; None for a person never seen."""
    home = contact.home.address if contact and contact.home else None
    if home is not None:
        home = home.model_copy(update={"reply_to_message_id": None})  # a new message
    if to.conversation_id is None:
        return home
    if home is not None and home.conversation_id == to.conversation_id:
        return home.model_copy(update={"thread_id": to.thread_id})
    return ReplyAddress(
        channel=to.channel,
        user_id=to.user_id,
        conversation_id=to.conversation_id,
        thread_id=to.thread_id,
    )


async def fire_check_in(
    client: Client, settings: Settings, registry: ChannelRegistry, firing: CheckInFiring
) -> CheckInResult:
    """Submit one firing into the person's session, like an inbound message from the system.

    The address is read from the session when the check-in fires (a person who wrote from a
    new conversation since is reached there). The update id and the session's dedupe key are
    the firing's message key, so a retry is answered ``duplicate`` and is never a second run.
    """
    inp = firing.check_in
    to = inp.to
    channel = registry.get(to.channel)
    if channel is None or channel.pull:
        return CheckInResult(outcome="channel_unavailable")
    session_id = session_of(settings, channel, to.user_id, to.conversation_id or to.user_id)
    address = _address(to, await recorded_contact(client, session_id, links=False))
    if address is None:
        return CheckInResult(outcome="recipient_not_found")
    request = ChannelRequest(
        tenant=inp.tenant,
        channel=to.channel,
        message_key=firing.message_key,
        user_id=to.user_id,
        conversation_id=address.conversation_id,
        thread_id=address.thread_id,
        text=inp.prompt,
        reply_to=address,
    )
    submission = build_submission(settings, channel, request)
    key = session_id.split("/", 2)[2]
    submission = submission.model_copy(
        update={
            # The session the check-in was made for, whatever the channel's group rules say.
            "isolation_key": key,
            "identity_hash": identity_hash(settings.security.identity_key_bytes(), key),
            # The reply goes to ``to``; a check-in waits its turn rather than being refused
            # or interrupting the person's own message.
            "options": submission.options.model_copy(
                update={"target": ResponseTarget(), "multitask": "enqueue"}
            ),
            "labels": {"kind": LABELS_KIND, "schedule": inp.public_id},
        }
    )
    try:
        result = await submit(
            client, settings, submission, timeout_s=settings.gateway.submit_timeout_s
        )
    except WorkflowUpdateFailedError as exc:
        if queue_full(exc):  # the person has enough waiting: this firing is skipped
            return CheckInResult(outcome="queue_full")
        raise
    if result.duplicate:
        return CheckInResult(outcome="duplicate", run_id=result.run_id)
    if not result.accepted:
        return CheckInResult(outcome="busy", run_id=result.run_id)
    return CheckInResult(outcome="submitted", run_id=result.run_id)


# -- reading schedules (shared with the CLI) -----------------------------------------------


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def public_id_of(schedule: str) -> str:
    return schedule.rsplit("/", 1)[-1]


async def last_outcome(client: Client, recent: list[ScheduleActionResult]) -> dict[str, Any] | None:
    """The newest firing: when it was due, its workflow's status and what it did."""
    if not recent:
        return None
    last = recent[-1]
    shown: dict[str, Any] = {
        "fired_at": last.scheduled_at.isoformat(),
        "status": None,
        "outcome": None,
    }
    action = last.action
    if not isinstance(action, ScheduleActionExecutionStartWorkflow):
        return shown
    handle = client.get_workflow_handle(
        action.workflow_id, run_id=action.first_execution_run_id, result_type=CheckInResult
    )
    try:
        described = await handle.describe()
        status = described.status
        shown["status"] = status.name.lower() if status else None
        if status == WorkflowExecutionStatus.COMPLETED:
            result = await handle.result()
            shown["outcome"] = result.outcome
            shown["run_id"] = result.run_id
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:  # gone with its retention: due time only
            raise
    return shown


async def list_check_ins(
    client: Client, tenant: str, caller: str | None = None, identity: str | None = None
) -> list[dict[str, Any]]:
    """Check-ins of a tenant, optionally of one caller or person: metadata only (id, spec,
    next firing, paused, last outcome). Visibility is eventually consistent: a schedule made
    a moment ago may be missing still."""
    query = f"{sa.TENANT.name} = {_quoted(tenant)}"
    if identity is not None:
        query += f" AND {sa.IDENTITY_HASH.name} = {_quoted(identity)}"
    found: list[dict[str, Any]] = []
    async for entry in await client.list_schedules(query):
        owner = await entry.memo_value("caller", default=None)
        if not isinstance(owner, str) or await entry.memo_value("kind", default=None) != (
            LABELS_KIND
        ):
            continue
        if caller is not None and not hmac.compare_digest(owner.encode(), caller.encode()):
            continue
        info = entry.info
        state = entry.schedule.state if entry.schedule else None
        next_times = info.next_action_times if info else []
        found.append(
            {
                "id": public_id_of(entry.id),
                "object": "schedule",
                "caller": owner,
                "channel": entry.typed_search_attributes.get(sa.CHANNEL),
                "spec": await entry.memo_value("spec", default=None),
                "next_at": next_times[0].isoformat() if next_times else None,
                "paused": bool(state and state.paused),
                "last": await last_outcome(client, list(info.recent_actions) if info else []),
            }
        )
    return found


async def owned_schedule(
    client: Client, tenant: str, public_id: str, caller: str | None
) -> ScheduleHandle | None:
    """The caller's check-in by id (any caller's for an operator, ``caller=None``); None for
    unknown ids and other callers' schedules alike."""
    if not public_id.startswith(ID_PREFIX):
        return None
    try:
        handle = client.get_schedule_handle(schedule_id(tenant, public_id))
    except InvalidKey:
        return None
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    owner = await described.memo_value("caller", default=None)
    if not isinstance(owner, str) or await described.memo_value("kind", default=None) != (
        LABELS_KIND
    ):
        return None
    if caller is not None and not hmac.compare_digest(owner.encode(), caller.encode()):
        return None
    return handle


# -- the API -------------------------------------------------------------------------------


def not_found() -> web.Response:
    return openai_error(404, "No schedule found with that id.", "not_found")


def unavailable() -> web.Response:
    return openai_error(503, "Temporarily unavailable, retry later.", "unavailable", "server_error")


class SchedulesApi:
    def __init__(self, settings: Settings) -> None:
        self._keys = MessagesApi(settings)  # the same callers, the same constant-time check

    def caller(self, headers: Mapping[str, str]) -> str | None:
        return self._keys.caller(headers)

    async def create(self, request: web.Request) -> web.Response:
        caller = self._keys.admit(request)
        if isinstance(caller, web.Response):
            return caller
        body = parse_json_body(CreateSchedule, await request.read())
        if isinstance(body, web.Response):
            return body
        refused = self._refusal(request.app[REGISTRY].get(body.to.channel), body)
        if refused is not None:
            return refused
        settings = request.app[SETTINGS]
        channel = request.app[REGISTRY].get(body.to.channel)
        assert channel is not None and body.to.user_id is not None
        idempotency = request.headers.get("Idempotency-Key")
        tenant = settings.gateway.tenant
        try:
            if idempotency is not None:
                check_component(idempotency, "Idempotency-Key")
            public_id = ID_PREFIX + tuple_key(caller, idempotency or uuid.uuid4().hex)
            sid = schedule_id(tenant, public_id)
            session_id = session_of(
                settings, channel, body.to.user_id, body.to.conversation_id or body.to.user_id
            )
        except InvalidKey as exc:
            return openai_error(400, str(exc), "invalid_request")
        hashed = identity_hash(settings.security.identity_key_bytes(), session_id.split("/", 2)[2])
        client = request.app[CLIENT]
        try:
            if idempotency is not None and await owned_schedule(client, tenant, public_id, caller):
                return self._created(public_id)  # a retry: the first answer
            if body.to.conversation_id is None:
                contact = await recorded_contact(client, session_id, links=False)
                if contact is None or contact.home is None:
                    return openai_error(
                        404,
                        "No conversation with this person is known: they have not written on "
                        f"{body.to.channel!r} yet. Give a full address (to.conversation_id).",
                        "recipient_not_found",
                    )
            # Counted in the visibility store: two creates at the same instant may both pass.
            existing = await list_check_ins(client, tenant, identity=hashed)
            if len(existing) >= settings.schedules.max_per_identity:
                return openai_error(
                    422,
                    f"This person has {len(existing)} schedules, the most allowed "
                    "(schedules.max_per_identity).",
                    "too_many_schedules",
                )
            await self._start(client, settings, body, caller, public_id, sid, hashed)
        except ScheduleAlreadyRunningError:
            return self._created(public_id)  # a concurrent retry made it first
        except RPCError as exc:
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                return openai_error(400, f"schedule: {exc.message[:200]}", "invalid_request")
            log.warning("temporal unavailable", route="schedules", error=type(exc).__name__)
            return unavailable()
        except UNAVAILABLE_ERRORS as exc:
            log.warning("temporal unavailable", route="schedules", error=type(exc).__name__)
            return unavailable()
        log.info(
            "schedule created",
            schedule_id=sid,
            caller=caller,
            channel=body.to.channel,
            spec=next(iter(body.spec_label())),
        )
        return self._created(public_id)

    @staticmethod
    def _refusal(channel: Channel | None, body: CreateSchedule) -> web.Response | None:
        to = body.to
        if channel is None:
            return openai_error(
                422, f"to.channel: no channel {to.channel!r} here", "unknown_channel"
            )
        if channel.pull:
            return openai_error(
                422,
                f"to.channel: {to.channel!r} cannot receive pushed messages",
                "channel_not_pushed",
            )
        if to.user_id is None:
            return openai_error(
                400, "to.user_id: a check-in runs in a person's session", "invalid_request"
            )
        if parse_command(body.prompt) is not None:
            return openai_error(
                400, "prompt: a chat command cannot be a check-in", "invalid_request"
            )
        if body.timezone is not None:
            try:
                zoneinfo.ZoneInfo(body.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                return openai_error(400, "timezone: unknown time zone", "invalid_request")
        if body.at is not None and body.at.replace(microsecond=0) <= datetime.now(UTC):
            return openai_error(422, "at: this time has passed", "at_in_past")
        return None

    @staticmethod
    async def _start(
        client: Client,
        settings: Settings,
        body: CreateSchedule,
        caller: str,
        public_id: str,
        sid: str,
        hashed: str,
    ) -> None:
        to = body.to
        assert to.user_id is not None
        tenant = settings.gateway.tenant
        attributes = TypedSearchAttributes(
            [
                SearchAttributePair(sa.TENANT, tenant),
                SearchAttributePair(sa.CHANNEL, to.channel),
                SearchAttributePair(sa.IDENTITY_HASH, hashed),
            ]
        )
        spec, state = schedule_spec(body)
        max_age_s = settings.delivery.max_age_s
        inp = CheckInInput(
            public_id=public_id,
            tenant=tenant,
            caller=caller,
            prompt=body.prompt,
            to=CheckInTo(
                channel=to.channel,
                user_id=to.user_id,
                conversation_id=to.conversation_id,
                thread_id=to.thread_id,
            ),
            max_age_s=max_age_s,
        )
        await client.create_schedule(
            sid,
            Schedule(
                action=ScheduleActionStartWorkflow(
                    CheckInWorkflow.run,
                    inp,
                    id=checkin_workflow_id(tenant, public_id),
                    task_queue=settings.temporal.task_queue,
                    typed_search_attributes=attributes,
                ),
                spec=spec,
                # Never late, never piled up: a firing missed by more than the reply age
                # limit is dropped, and none starts while the previous one still runs.
                policy=SchedulePolicy(
                    overlap=ScheduleOverlapPolicy.SKIP,
                    catchup_window=timedelta(seconds=max(MIN_CATCHUP_S, max_age_s)),
                ),
                state=state,
            ),
            memo={"kind": LABELS_KIND, "caller": caller, "spec": body.spec_label()},
            search_attributes=attributes,
        )

    @staticmethod
    def _created(public_id: str) -> web.Response:
        return web.json_response({"id": public_id, "object": "schedule"}, status=201)

    async def index(self, request: web.Request) -> web.Response:
        caller = self.caller(request.headers)
        if caller is None:
            return openai_error(401, "Incorrect API key provided.", "invalid_api_key")
        tenant = request.app[SETTINGS].gateway.tenant
        try:
            found = await list_check_ins(request.app[CLIENT], tenant, caller=caller)
        except UNAVAILABLE_ERRORS as exc:
            log.warning("temporal unavailable", route="schedules", error=type(exc).__name__)
            return unavailable()
        for item in found:
            item.pop("caller")  # it is the caller's own name
        return web.json_response({"object": "list", "data": found})

    async def _change(self, request: web.Request, change: str) -> web.Response:
        caller = self.caller(request.headers)
        if caller is None:
            return openai_error(401, "Incorrect API key provided.", "invalid_api_key")
        public_id = request.match_info["id"]
        tenant = request.app[SETTINGS].gateway.tenant
        try:
            handle = await owned_schedule(request.app[CLIENT], tenant, public_id, caller)
            if handle is None:
                return not_found()
            answer = await apply_change(handle, change, note=f"{change} by {caller}")
        except UNAVAILABLE_ERRORS as exc:
            log.warning("temporal unavailable", route="schedules", error=type(exc).__name__)
            return unavailable()
        log.info("schedule changed", schedule_id=handle.id, caller=caller, change=change)
        return web.json_response({"id": public_id, "object": "schedule", **answer})

    async def delete(self, request: web.Request) -> web.Response:
        return await self._change(request, "delete")

    async def pause(self, request: web.Request) -> web.Response:
        return await self._change(request, "pause")

    async def resume(self, request: web.Request) -> web.Response:
        return await self._change(request, "resume")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/schedules", self.create)
        app.router.add_get("/v1/schedules", self.index)
        app.router.add_delete("/v1/schedules/{id}", self.delete)
        app.router.add_post("/v1/schedules/{id}/pause", self.pause)
        app.router.add_post("/v1/schedules/{id}/resume", self.resume)


async def apply_change(handle: ScheduleHandle, change: str, *, note: str) -> dict[str, bool]:
    """``delete`` (for good: no firing after it), ``pause`` or ``resume``; the note is
    metadata (who did it), shown in the Web UI's Schedules page."""
    if change == "delete":
        await handle.delete()
        return {"deleted": True}
    if change == "pause":
        await handle.pause(note=note)
        return {"paused": True}
    await handle.unpause(note=note)
    return {"paused": False}


def add_routes(app: web.Application, settings: Settings) -> None:
    """``/v1/schedules``, mounted only when ``[messages].api_keys`` names a caller."""
    if settings.messages.api_keys:
        SchedulesApi(settings).add_routes(app)
