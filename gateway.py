"""The HTTP gateway: verify, parse, submit durably, answer the platform inside its deadline.

``python gateway.py`` runs it against the Temporal server named in ``switchboard.toml``.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError

from channels.base import Accepted, Answered, Channel, HttpAnswer, InboundHttp, Refused
from channels.registry import ChannelRegistry, build_registry
from channels.responses import ResponsesChannel
from channels.web import WebChannel
from hosting.codec_server import CodecServer
from hosting.ids import InvalidKey
from hosting.intake import build_submission, submit
from hosting.logs import configure_logging, get_logger
from hosting.metrics import ACK_SECONDS, INBOUND
from hosting.policy import Decision, check_policy, decide
from hosting.responses_api import ResponsesApi
from hosting.settings import ConfigError, Settings, load_settings
from hosting.temporal_client import connect
from hosting.tokens import TokenClaims, issue
from hosting.webchat import WebChat

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", ChannelRegistry)
CLIENT = web.AppKey("client", Client)
HTTP = web.AppKey("http", aiohttp.ClientSession)

log = get_logger("switchboard.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, reason: str, **headers: str) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


def to_response(answer: HttpAnswer) -> web.Response:
    return web.Response(
        status=answer.status,
        body=answer.body,
        content_type=answer.content_type if answer.body else None,
        headers=answer.headers,
    )


UNAVAILABLE_ERRORS = (RPCError, RPCTimeoutOrCancelledError, asyncio.TimeoutError, RuntimeError)


@web.middleware
async def safety_net(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No caller ever sees a 500: an unexpected failure is a 503 so platforms redeliver."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        # Type and place only: exception messages can carry caller data.
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        log.error(
            "unhandled error",
            path=request.path,
            error=type(exc).__name__,
            at=f"{tb.filename.rsplit('/', 1)[-1]}:{tb.lineno}",
        )
        return error(503, "temporarily unavailable", **{"Retry-After": "5"})


async def channel_inbound(request: web.Request) -> web.StreamResponse:
    name = request.match_info["channel"]
    channel = request.app[REGISTRY].get(name)
    if channel is None:
        return error(404, "unknown channel")
    started = time.perf_counter()
    response = await _inbound(request, channel)
    ACK_SECONDS.labels(name).observe(time.perf_counter() - started)
    return response


async def _inbound(request: web.Request, channel: Channel) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    body = await request.read()
    outcome = await channel.receive(
        InboundHttp(
            method=request.method,
            path=request.path,
            headers=request.headers,
            query=request.query,
            body=body,
            received_at=time.time(),
            tenant=settings.gateway.tenant,
            cookies=request.cookies,
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
    decision = decide(
        channel.settings,
        settings.authorization.default,
        outcome.request.user_id,
        outcome.request.claims,
    )
    if decision is not Decision.ALLOWED:
        INBOUND.labels(channel.name, decision.value).inc()
        log.info("inbound not admitted", channel=channel.name, decision=decision.value)
        return to_response(channel.refuse(outcome.request))
    try:
        submission = build_submission(
            settings, channel, outcome.request, deliver_to_origin=not channel.pull
        )
    except InvalidKey as exc:
        INBOUND.labels(channel.name, "invalid").inc()
        return error(400, str(exc))
    try:
        result = await submit(
            request.app[CLIENT], settings, submission, timeout_s=settings.gateway.submit_timeout_s
        )
    except WorkflowUpdateFailedError:
        INBOUND.labels(channel.name, "invalid").inc()
        return error(400, "message refused")
    except UNAVAILABLE_ERRORS as exc:
        INBOUND.labels(channel.name, "unavailable").inc()
        log.warning("temporal unavailable", channel=channel.name, error=type(exc).__name__)
        return error(503, "temporarily unavailable, retry later", **{"Retry-After": "5"})
    if channel.pull:
        # Pull channels follow their runs at /v1/runs/{token}.
        token = issue(
            settings.security.signing_key_bytes(),
            TokenClaims(
                run_id=result.run_id,
                tenant=settings.gateway.tenant,
                caller=f"{channel.name}:{outcome.request.user_id}",
                expires_at=int(time.time() + settings.runs.continuation_s),
                conversation=outcome.request.conversation_id,
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
    return to_response(channel.acknowledge(outcome.request, result))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[CLIENT].service_client.check_health(), 2.0)
    except Exception as exc:
        return web.json_response(
            {"status": "unavailable", "temporal": type(exc).__name__}, status=503
        )
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(
    settings: Settings,
    *,
    client: Client | None = None,
    registry: ChannelRegistry | None = None,
) -> web.Application:
    """The whole gateway. Tests pass their own client and registry."""
    check_policy(settings)
    app = web.Application(client_max_size=settings.gateway.max_body_bytes, middlewares=[safety_net])
    app[SETTINGS] = settings
    app[REGISTRY] = registry if registry is not None else build_registry(settings)

    async def temporal_ctx(app: web.Application) -> AsyncIterator[None]:
        # Lazy: the gateway starts (and answers 503) even while Temporal is still down.
        app[CLIENT] = client if client is not None else await connect(settings, lazy=True)
        yield

    async def http_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as http:
            app[HTTP] = http
            yield

    app.cleanup_ctx.extend([temporal_ctx, http_ctx])
    app.router.add_post("/channels/{channel}", channel_inbound)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if settings.security.codec_keys:
        CodecServer(settings.security).add_routes(app)
    web_channel = app[REGISTRY].get("web")
    web_channel = web_channel if isinstance(web_channel, WebChannel) else None
    if web_channel is not None:
        WebChat(settings, web_channel, CLIENT).add_routes(app)
    responses = app[REGISTRY].get("responses")
    responses = responses if isinstance(responses, ResponsesChannel) else None
    if settings.security.signing_key.get_secret_value():
        ResponsesApi(settings, responses, web_channel, CLIENT).add_routes(app)
    return app


def main() -> None:
    try:
        settings = load_settings()
        settings.require_keys()
        registry = build_registry(settings)
        check_policy(settings)
    except ConfigError as exc:
        sys.exit(f"switchboard gateway: configuration error: {exc}")
    configure_logging(settings.gateway.log_format)
    app = build_app(settings, registry=registry)
    log.info(
        "gateway starting",
        url=settings.gateway.public_url,
        channels=registry.names(),
    )
    web.run_app(
        app,
        host=settings.gateway.host,
        port=settings.gateway.port,
        print=None,
        shutdown_timeout=10,
    )


if __name__ == "__main__":
    main()
