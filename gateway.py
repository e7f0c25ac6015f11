"""The HTTP gateway: composes the aiohttp app from configuration and runs it.

Every surface lives in ``routes/``; ``python gateway.py`` runs the gateway against the Temporal
server named in ``switchboard.toml``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from temporalio.client import Client

from channels.catalog import load_settings
from channels.registry import ChannelRegistry, build_registry, open_to_everyone
from hosting.logs import configure_logging, get_logger
from hosting.policy import check_policy
from hosting.settings import ConfigError, Settings
from hosting.telemetry import Tracing, start_tracing
from hosting.temporal_client import connect
from routes import health, inbound, messages, schedules, surfaces
from routes.codec import CodecServer
from routes.errors import safety_net
from routes.keys import CLIENT, HTTP, LIMITS, REGISTRY, SETTINGS
from routes.limits import Limits

log = get_logger("switchboard.gateway")


def build_app(
    settings: Settings,
    *,
    client: Client | None = None,
    registry: ChannelRegistry | None = None,
    tracing: Tracing | None = None,
) -> web.Application:
    """The whole gateway. Tests pass their own client (with ``tracing``'s interceptor, if
    they trace), registry and tracing."""
    check_policy(settings)
    # The trace span wraps the safety net, so a request that ended in a 500 is marked failed.
    middlewares = [tracing.middleware()] if tracing is not None else []
    app = web.Application(
        client_max_size=settings.gateway.max_body_bytes, middlewares=[*middlewares, safety_net]
    )
    app[SETTINGS] = settings
    app[REGISTRY] = registry if registry is not None else build_registry(settings)
    app[LIMITS] = Limits(settings.limits, settings.linking)

    async def temporal_ctx(app: web.Application) -> AsyncIterator[None]:
        # Lazy: the gateway starts (and answers 503) even while Temporal is still down.
        interceptors = [tracing.interceptor()] if tracing is not None else []
        app[CLIENT] = (
            client
            if client is not None
            else await connect(settings, lazy=True, interceptors=interceptors)
        )
        yield

    async def http_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as http:
            app[HTTP] = http
            yield

    app.cleanup_ctx.extend([temporal_ctx, http_ctx])
    inbound.add_routes(app)
    health.add_routes(app)
    if settings.security.codec_keys:
        CodecServer(settings.security).add_routes(app)
    surfaces.add_routes(app, settings, app[REGISTRY])
    messages.add_routes(app, settings)  # /v1/messages, when [messages] api_keys is set
    schedules.add_routes(app, settings)  # /v1/schedules, with the same keys
    return app


def main() -> None:
    try:
        settings = load_settings()
        settings.require_keys()
        registry = build_registry(settings)
        check_policy(settings)
        tracing = start_tracing(settings.telemetry, "switchboard-gateway")
    except ConfigError as exc:
        sys.exit(f"switchboard gateway: configuration error: {exc}")
    configure_logging(settings.gateway.log_format)
    app = build_app(settings, registry=registry, tracing=tracing)
    for name in open_to_everyone(registry, settings):
        log.warning(
            "channel open to everyone: anyone who can reach it can run the agent "
            "(set allow_native_ids, allow_claims or require_link, or authorization.default)",
            channel=name,
        )
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
    if tracing is not None:
        tracing.shutdown()


if __name__ == "__main__":
    main()
