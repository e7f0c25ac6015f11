"""Liveness, readiness (Temporal reachable) and the gateway's Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from routes.keys import CLIENT, SETTINGS


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
    token = request.app[SETTINGS].gateway.metrics_token
    if token is not None and token.get_secret_value():
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), expected
        ):
            return web.json_response(
                {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
