"""``/v1/schedules``: scheduled check-ins, where the agent writes first on a schedule.

``POST /v1/schedules`` with ``{"to": {...}, "prompt": "...", "every_s" | "cron" | "at": ...}``
creates one Temporal Schedule ``schedule/{tenant}/sch_{tuple_key(caller, key)}`` (through
:mod:`activities.schedules_store`, which the agent's check-in tool and the chat commands use
too) whose action starts a ``CheckInWorkflow``; each firing submits the prompt into the
person's session (:func:`fire_check_in`, called by the worker's check-in activity), so the
agent answers with the conversation in view and the reply goes to ``to``. Callers are the
``[messages].api_keys`` keys; each sees only its own schedules.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from pydantic import Field
from temporalio.client import Client, WorkflowUpdateFailedError

from activities.schedules_store import (
    NewCheckIn,
    Owner,
    apply_change,
    channel_refusal,
    create_check_in,
    list_check_ins,
    owned_schedule,
)
from channels.registry import ChannelRegistry
from hosting.checkins import LABELS_KIND, CheckInRefused, CheckInSpec
from hosting.ids import identity_hash
from hosting.logs import get_logger
from hosting.models import (
    ChannelRequest,
    CheckInFiring,
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

log = get_logger("switchboard.gateway")


class CreateSchedule(CheckInSpec):
    """The body of ``POST /v1/schedules``: whom, what, and the spec."""

    to: To
    prompt: str = Field(min_length=1, max_length=100_000)


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
        to = body.to
        channel = request.app[REGISTRY].get(to.channel)
        refused = channel_refusal(channel, to.channel)
        if refused is None and to.user_id is None:
            refused = CheckInRefused(
                400, "invalid_request", "to.user_id: a check-in runs in a person's session"
            )
        if refused is not None:
            return openai_error(refused.status, refused.message, refused.code)
        assert to.user_id is not None
        client = request.app[CLIENT]

        async def home_known(session_id: str) -> bool:
            contact = await recorded_contact(client, session_id, links=False)
            return contact is not None and contact.home is not None

        new = NewCheckIn(
            to=CheckInTo(
                channel=to.channel,
                user_id=to.user_id,
                conversation_id=to.conversation_id,
                thread_id=to.thread_id,
            ),
            prompt=body.prompt,
            spec=body,
            caller=caller,
            key=request.headers.get("Idempotency-Key"),
        )
        try:
            public_id = await create_check_in(
                client, request.app[SETTINGS], channel, new, home_known=home_known
            )
        except CheckInRefused as exc:
            return openai_error(exc.status, exc.message, exc.code)
        except UNAVAILABLE_ERRORS as exc:
            log.warning("temporal unavailable", route="schedules", error=type(exc).__name__)
            return unavailable()
        return web.json_response({"id": public_id, "object": "schedule"}, status=201)

    async def index(self, request: web.Request) -> web.Response:
        caller = self.caller(request.headers)
        if caller is None:
            return openai_error(401, "Incorrect API key provided.", "invalid_api_key")
        tenant = request.app[SETTINGS].gateway.tenant
        try:
            found = await list_check_ins(request.app[CLIENT], tenant, Owner(caller=caller))
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
            handle = await owned_schedule(
                request.app[CLIENT], tenant, public_id, Owner(caller=caller)
            )
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


def add_routes(app: web.Application, settings: Settings) -> None:
    """``/v1/schedules``, mounted only when ``[messages].api_keys`` names a caller."""
    if settings.messages.api_keys:
        SchedulesApi(settings).add_routes(app)
