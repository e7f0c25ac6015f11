"""``/v1/messages``: proactive messages from application backends, delivered durably.

``POST /v1/messages`` with ``{"to": {...}, "text": "..."}`` starts one
``ProactiveMessageWorkflow`` (``message/{tenant}/msg_{tuple_key(caller, key)}``) and answers
``202 {"id", "status": "queued"}``; ``GET /v1/messages/{id}`` shows each destination's delivery.
Callers authenticate with ``Authorization: Bearer <key>`` from ``[messages].api_keys``; each
sees only its own messages. Message text is content: it is never logged.

``to`` is an address (``conversation_id`` given: it is used as it is, enriched with what the
person's session recorded for that conversation, if anything) or a person (``channel`` and
``user_id``: the home conversation their session recorded when they last wrote, or
``active`` / ``all_linked`` per ``target``). A person never seen is a 404.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from channels.base import Channel
from hosting import search_attributes as sa
from hosting.bearer import match_bearer
from hosting.ids import (
    Caller,
    InvalidKey,
    check_component,
    identity_hash,
    isolation_key,
    message_workflow_id,
    tuple_key,
)
from hosting.logs import get_logger
from hosting.models import (
    DeliveryPolicy,
    DeliveryState,
    Identity,
    MessageInput,
    ReplyAddress,
    ResponseTarget,
    RunStatus,
    RunView,
)
from hosting.settings import Settings
from routes.errors import UNAVAILABLE_ERRORS, openai_error, parse_json_body
from routes.keys import CLIENT, LIMITS, REGISTRY, SETTINGS
from routes.responses import too_many_requests
from routes.runs import session_of
from routes.watch import fetch_view
from workflows.message import LABELS_KIND, ProactiveMessageWorkflow
from workflows.session import SessionWorkflow

log = get_logger("switchboard.gateway")

ID_PREFIX = "msg_"
CALLER_CHANNEL = "messages"  # rate-limit identities are ``messages:<key name>``
HISTORY_PAGE = 200


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class To(_Body):
    channel: str = Field(min_length=1, max_length=200)
    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    conversation_id: str | None = Field(default=None, min_length=1, max_length=200)
    thread_id: str | None = Field(default=None, min_length=1, max_length=200)


class CreateMessage(_Body):
    to: To
    text: str = Field(min_length=1, max_length=100_000)
    # "home" (the default; "originating" is the same): the address given, or the person's
    # home conversation. "active" and "all_linked" reach their linked accounts too.
    target: Literal["home", "originating", "active", "all_linked"] = "home"


# -- what a person's session recorded ------------------------------------------------------


@dataclass(frozen=True)
class Contact:
    """A person as their session last recorded them: where they wrote from (``home``), their
    linked accounts and the channel they used last."""

    home: Identity | None = None
    linked: list[Identity] = field(default_factory=list)
    active_channel: str | None = None

    @property
    def accounts(self) -> list[Identity]:
        return [*([self.home] if self.home else []), *self.linked]


async def recorded_contact(client: Client, session_id: str, *, links: bool) -> Contact | None:
    """None when the session does not exist (the person never wrote, or was purged). An
    account linked into another session takes that one's accounts and last channel."""
    try:
        found = await client.get_workflow_handle(session_id).query(SessionWorkflow.contact)
        if not links:
            return Contact(home=found.home, active_channel=found.active_channel)
        if found.alias_of is None:
            return Contact(
                home=found.home, linked=list(found.linked), active_channel=found.active_channel
            )
        primary = await client.get_workflow_handle(found.alias_of).query(SessionWorkflow.contact)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    home = found.home
    others = [*([primary.home] if primary.home else []), *primary.linked]
    return Contact(
        home=home,
        linked=[i for i in others if home is None or not i.same_account(home)],
        active_channel=primary.active_channel or found.active_channel,
    )


def _proactive(address: ReplyAddress) -> ReplyAddress:
    """A recorded address as a new message uses it: not as a reply to the last message."""
    return address.model_copy(update={"reply_to_message_id": None})


# -- the API -------------------------------------------------------------------------------


def message_json(public_id: str, view: RunView) -> dict[str, Any]:
    return {
        "id": public_id,
        "object": "message",
        "status": summary(view),
        "channel": view.channel,
        "created_at": view.created_at.isoformat(),
        "updated_at": view.updated_at.isoformat(),
        "deliveries": [
            {
                "destination": d.destination,
                "state": d.state.value,
                "attempts": d.attempts,
                "reason": d.reason,
                "updated_at": d.updated_at.isoformat() if d.updated_at else None,
            }
            for d in view.deliveries
        ],
    }


def summary(view: RunView) -> str:
    """One word for the message: ``queued`` until its destinations are known, then the worst
    of their states (``dead_letter`` > ``pending`` > ``delivered``)."""
    states = {d.state for d in view.deliveries}
    if not states:
        return "skipped" if view.status.finished else "queued"
    for state in (DeliveryState.DEAD_LETTER, DeliveryState.PENDING):
        if state in states:
            return state.value
    return DeliveryState.DELIVERED.value


async def exists(client: Client, workflow_id: str) -> bool:
    """Whether the message was started (running or closed); needs no worker."""
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


def not_found() -> web.Response:
    return openai_error(404, "No message found with that id.", "not_found")


def unprocessable(message: str, code: str) -> web.Response:
    return openai_error(422, message, code)


class MessagesApi:
    def __init__(self, settings: Settings) -> None:
        self._keys = [
            (name, key.get_secret_value().encode())
            for name, key in settings.messages.api_keys.items()
        ]

    def caller(self, headers: Mapping[str, str]) -> str | None:
        """The key's name (see :func:`hosting.bearer.match_bearer`)."""
        return match_bearer(headers, self._keys)

    def admit(self, request: web.Request) -> str | web.Response:
        """The caller of a create, or the answer instead: 401 without a known key, 429 over
        the caller's rate."""
        caller = self.caller(request.headers)
        if caller is None:
            return openai_error(401, "Incorrect API key provided.", "invalid_api_key")
        wait = request.app[LIMITS].messages.take(Caller(CALLER_CHANNEL, caller).key)
        return too_many_requests(wait) if wait > 0 else caller

    async def create(self, request: web.Request) -> web.Response:
        caller = self.admit(request)
        if isinstance(caller, web.Response):
            return caller
        body = parse_json_body(CreateMessage, await request.read())
        if isinstance(body, web.Response):
            return body
        settings = request.app[SETTINGS]
        to = body.to
        channel = request.app[REGISTRY].get(to.channel)
        if channel is None:
            return unprocessable(f"to.channel: no channel {to.channel!r} here", "unknown_channel")
        if channel.pull:
            return unprocessable(
                f"to.channel: {to.channel!r} cannot receive pushed messages", "channel_not_pushed"
            )
        if to.user_id is None and to.conversation_id is None:
            return openai_error(
                400, "to: give a user_id, a conversation_id or both", "invalid_request"
            )
        target = ResponseTarget()
        if body.target in ("active", "all_linked"):
            if not settings.delivery.allow_non_originating:
                return unprocessable(
                    f"target {body.target!r} delivers beyond the conversation: "
                    "delivery.allow_non_originating is off",
                    "target_not_allowed",
                )
            target = ResponseTarget(kind=body.target)
        idempotency = request.headers.get("Idempotency-Key")
        try:
            if idempotency is not None:
                check_component(idempotency, "Idempotency-Key")
            # (caller, key) as a tuple: one caller's key never names another caller's message.
            public_id = ID_PREFIX + tuple_key(caller, idempotency or uuid.uuid4().hex)
            workflow_id = message_workflow_id(settings.gateway.tenant, public_id)
            hashed, session_id = self._recipient(settings, channel, to)
        except InvalidKey as exc:
            return openai_error(400, str(exc), "invalid_request")
        client = request.app[CLIENT]
        try:
            if idempotency is not None and await exists(client, workflow_id):
                return self._accepted(public_id)  # a retry: the first answer, never resent
            contact = None
            if session_id is not None:
                contact = await recorded_contact(client, session_id, links=target.non_originating)
            origin = self._origin(to, contact)
            if origin is None:
                return openai_error(
                    404,
                    "No conversation with this person is known: they have not written on "
                    f"{to.channel!r} yet. Give a full address (to.conversation_id) instead.",
                    "recipient_not_found",
                )
            inp = MessageInput(
                message_id=workflow_id,
                tenant=settings.gateway.tenant,
                caller=caller,
                text=body.text,
                origin=origin,
                target=target,
                accounts=[
                    i.model_copy(update={"address": _proactive(i.address)})
                    for i in (contact.accounts if contact else [])
                ],
                active_channel=contact.active_channel if contact else None,
                delivery=DeliveryPolicy.model_validate(
                    settings.delivery.model_dump(include=set(DeliveryPolicy.model_fields))
                ),
                max_fanout=settings.delivery.max_fanout,
                continuation_s=settings.runs.continuation_s,
            )
            await client.start_workflow(
                ProactiveMessageWorkflow.run,
                inp,
                id=workflow_id,
                task_queue=settings.temporal.task_queue,
                # Even after it closed: one id, one message (for as long as Temporal keeps it).
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.TENANT, settings.gateway.tenant),
                        SearchAttributePair(sa.CHANNEL, to.channel),
                        SearchAttributePair(sa.RUN_STATUS, RunStatus.QUEUED.value),
                        SearchAttributePair(sa.IDENTITY_HASH, hashed),
                    ]
                ),
            )
        except WorkflowAlreadyStartedError:
            return self._accepted(public_id)  # a concurrent retry started it first
        except UNAVAILABLE_ERRORS as exc:
            log.warning("temporal unavailable", route="messages", error=type(exc).__name__)
            return openai_error(
                503, "Temporarily unavailable, retry later.", "unavailable", "server_error"
            )
        log.info(
            "message accepted",
            message_id=workflow_id,
            caller=caller,
            channel=to.channel,
            target=target.kind,
            addressed=to.conversation_id is not None,
        )
        return self._accepted(public_id)

    @staticmethod
    def _accepted(public_id: str) -> web.Response:
        """The same answer for the first request and every retry of it (``GET`` shows more)."""
        body = {"id": public_id, "object": "message", "status": "queued"}
        return web.json_response(body, status=202)

    @staticmethod
    def _recipient(settings: Settings, channel: Channel, to: To) -> tuple[str, str | None]:
        """The recipient's identity hash (so ``purge`` finds their messages) and the session
        that would have recorded them (None for a conversation addressed without a user)."""
        identity_key = settings.security.identity_key_bytes()
        if to.user_id is None:
            assert to.conversation_id is not None
            key = isolation_key(
                "per_conversation",
                channel.name,
                to.conversation_id,
                to.conversation_id,
                identity_key=identity_key,
            )
            return identity_hash(identity_key, key), None
        conversation = to.conversation_id or to.user_id
        session_id = session_of(settings, channel, to.user_id, conversation)
        key = session_id.split("/", 2)[2]
        return identity_hash(identity_key, key), session_id

    @staticmethod
    def _origin(to: To, contact: Contact | None) -> ReplyAddress | None:
        """Where the message goes by default; None for a person never seen."""
        home = contact.home.address if contact and contact.home else None
        if to.conversation_id is None:
            return _proactive(home) if home is not None else None
        if home is not None and home.conversation_id == to.conversation_id:
            # The same conversation as recorded: keep what the platform needs besides the ids.
            return _proactive(home).model_copy(update={"thread_id": to.thread_id})
        return ReplyAddress(
            channel=to.channel,
            user_id=to.user_id or "",
            conversation_id=to.conversation_id,
            thread_id=to.thread_id,
        )

    async def retrieve(self, request: web.Request) -> web.Response:
        caller = self.caller(request.headers)
        if caller is None:
            return openai_error(401, "Incorrect API key provided.", "invalid_api_key")
        public_id = request.match_info["id"]
        if not public_id.startswith(ID_PREFIX):
            return not_found()
        try:
            workflow_id = message_workflow_id(request.app[SETTINGS].gateway.tenant, public_id)
        except InvalidKey:
            return not_found()
        try:
            view = await fetch_view(request.app[CLIENT], workflow_id)
        except UNAVAILABLE_ERRORS as exc:
            log.warning("temporal unavailable", route="messages", error=type(exc).__name__)
            return openai_error(
                503, "Temporarily unavailable, retry later.", "unavailable", "server_error"
            )
        # One answer for unknown ids and other callers' messages.
        if view is None or view.labels.get("kind") != LABELS_KIND:
            return not_found()
        if not hmac.compare_digest(view.labels.get("caller", "").encode(), caller.encode()):
            return not_found()
        return web.json_response(message_json(public_id, view))

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.create)
        app.router.add_get("/v1/messages/{id}", self.retrieve)


def add_routes(app: web.Application, settings: Settings) -> None:
    """``/v1/messages``, mounted only when ``[messages].api_keys`` names a caller."""
    if settings.messages.api_keys:
        MessagesApi(settings).add_routes(app)
