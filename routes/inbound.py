"""``POST /channels/{channel}``: receive → admit → submit → acknowledge, one short step each."""

from __future__ import annotations

import time

from aiohttp import web
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from channels.base import Accepted, Answered, Channel, HttpAnswer, InboundHttp, Refused
from hosting.ids import Caller, InvalidKey
from hosting.logs import get_logger
from hosting.metrics import ACK_SECONDS, INBOUND
from hosting.models import QUEUE_FULL, ChannelRequest, SubmitResult
from hosting.policy import Decision, decide
from hosting.settings import Settings
from hosting.tokens import TokenClaims, issue
from routes.errors import UNAVAILABLE_ERRORS, error, unavailable
from routes.intake import build_submission, submit
from routes.keys import CLIENT, LIMITS, REGISTRY, SETTINGS
from workflows.commands import parse_command

log = get_logger("switchboard.gateway")
QUEUE_RETRY_S = 30.0  # a full queue drains at the agent's pace: ask for a patient retry


def to_response(answer: HttpAnswer) -> web.Response:
    return web.Response(
        status=answer.status,
        body=answer.body,
        content_type=answer.content_type if answer.body else None,
        headers=answer.headers,
    )


async def channel_inbound(request: web.Request) -> web.StreamResponse:
    name = request.match_info["channel"]
    channel = request.app[REGISTRY].get(name)
    if channel is None:
        return error(404, "unknown channel")
    started = time.perf_counter()
    response = await inbound(request, channel)
    ACK_SECONDS.labels(name).observe(time.perf_counter() - started)
    return response


async def inbound(request: web.Request, channel: Channel) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    outcome = await receive(request, channel, settings)
    if isinstance(outcome, web.Response):
        return outcome
    refusal = admit(request, channel, settings, outcome)
    if refusal is not None:
        return refusal
    result = await submit_message(request, channel, settings, outcome)
    if isinstance(result, web.Response):
        return result
    return acknowledge(channel, settings, outcome, result)


async def receive(
    request: web.Request, channel: Channel, settings: Settings
) -> ChannelRequest | web.Response:
    """The adapter verifies and parses; handshakes and refusals are answered here."""
    outcome = await channel.receive(
        InboundHttp(
            method=request.method,
            path=request.path,
            headers=request.headers,
            query=request.query,
            body=await request.read(),
            received_at=time.time(),
            tenant=settings.gateway.tenant,
            cookies=request.cookies,
            remote=request.remote or "",
        )
    )
    if isinstance(outcome, Refused):
        INBOUND.labels(channel.name, "refused").inc()
        log.info("inbound refused", channel=channel.name, status=outcome.status)
        return error(outcome.status, outcome.reason)
    if isinstance(outcome, Answered):
        INBOUND.labels(channel.name, "answered").inc()
        return to_response(outcome.answer)
    assert isinstance(outcome, Accepted)
    return outcome.request


def admit(
    request: web.Request, channel: Channel, settings: Settings, message: ChannelRequest
) -> web.Response | None:
    """The authorization policy and the identity's message rate, before anything is durable;
    None when the caller is admitted."""
    decision = decide(
        channel.settings, settings.authorization.default, message.user_id, message.claims
    )
    if decision is not Decision.ALLOWED:
        INBOUND.labels(channel.name, decision.value).inc()
        log.info("inbound not admitted", channel=channel.name, decision=decision.value)
        return to_response(channel.refuse(message))
    limits = request.app[LIMITS]
    caller = Caller(channel.name, message.user_id).key
    wait = limits.messages.take(caller)
    command = parse_command(message.text)
    if not wait and command is not None and command.name == "link" and command.argument:
        wait = limits.link_attempts.take(caller)
        if not wait and channel.pull:
            wait = limits.link_attempts_by_address.take(request.remote or "")
    if wait > 0:
        INBOUND.labels(channel.name, "rate_limited").inc()
        log.info("inbound rate limited", channel=channel.name, retry_after_s=round(wait, 1))
        return to_response(channel.too_many(message, wait))
    return None


async def submit_message(
    request: web.Request, channel: Channel, settings: Settings, message: ChannelRequest
) -> SubmitResult | web.Response:
    """Update-with-start into the message's session; 400 for bad keys, 503 while Temporal is
    unreachable (the platform redelivers)."""
    try:
        submission = build_submission(
            settings, channel, message, deliver_to_origin=not channel.pull
        )
    except InvalidKey as exc:
        INBOUND.labels(channel.name, "invalid").inc()
        return error(400, str(exc))
    try:
        return await submit(
            request.app[CLIENT], settings, submission, timeout_s=settings.gateway.submit_timeout_s
        )
    except WorkflowUpdateFailedError as exc:
        if queue_full(exc):
            INBOUND.labels(channel.name, "queue_full").inc()
            log.info("inbound refused: session queue full", channel=channel.name)
            return to_response(channel.too_many(message, QUEUE_RETRY_S))
        INBOUND.labels(channel.name, "invalid").inc()
        return error(400, "message refused")
    except UNAVAILABLE_ERRORS as exc:
        INBOUND.labels(channel.name, "unavailable").inc()
        log.warning("temporal unavailable", channel=channel.name, error=type(exc).__name__)
        return unavailable()


def queue_full(exc: WorkflowUpdateFailedError) -> bool:
    cause = exc.cause
    return isinstance(cause, ApplicationError) and cause.type == QUEUE_FULL


def acknowledge(
    channel: Channel, settings: Settings, message: ChannelRequest, result: SubmitResult
) -> web.Response:
    """The platform's own ack; pull channels also get the continuation token of the run."""
    if channel.pull:
        token = issue(
            settings.security.signing_key_bytes(),
            TokenClaims(
                run_id=result.run_id,
                tenant=settings.gateway.tenant,
                caller=Caller(channel.name, message.user_id).key,
                expires_at=int(time.time() + settings.runs.continuation_s),
                conversation=message.conversation_id,
            ),
        )
        result = result.model_copy(update={"continuation_token": token})
    INBOUND.labels(channel.name, "duplicate" if result.duplicate else "accepted").inc()
    log.info(
        "inbound accepted",
        channel=channel.name,
        run_id=result.run_id,
        duplicate=result.duplicate,
        accepted=result.accepted,
    )
    return to_response(channel.acknowledge(message, result))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/channels/{channel}", channel_inbound)
