"""Error answers and the safety net that keeps every failure a clean 4xx/503, never a 500."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from temporalio.client import RPCTimeoutOrCancelledError
from temporalio.service import RPCError

from hosting.logs import get_logger

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What a Temporal call raises while the server is unreachable or slow.
UNAVAILABLE_ERRORS = (RPCError, RPCTimeoutOrCancelledError, asyncio.TimeoutError, RuntimeError)

log = get_logger("switchboard.gateway")


def error(status: int, reason: str, **headers: str) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


def openai_error(
    status: int, message: str, code: str, kind: str = "invalid_request_error"
) -> web.Response:
    """The OpenAI error body (``/v1/*``), which SDKs turn into typed exceptions."""
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status
    )


def parse_json_body(model: type[M], raw: bytes) -> M | web.Response:
    """The body as ``model``, or a 400 naming the first field that is wrong (OpenAI style)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        return openai_error(400, f"{where}: {err['msg']}", "invalid_request")


def token_not_found() -> web.Response:
    # One answer for forged, expired, unknown and other callers' tokens.
    return openai_error(404, "No response found with that id.", "not_found")


def unavailable() -> web.Response:
    return error(503, "temporarily unavailable, retry later", **{"Retry-After": "5"})


@web.middleware
async def safety_net(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No caller ever sees a 500: an unexpected failure is a 503 so platforms redeliver."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        # Type and place only: exception messages can carry caller data, and paths can carry
        # continuation tokens, so the route's name is logged instead of the path.
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        route = request.match_info.route.resource
        log.error(
            "unhandled error",
            route=route.canonical if route is not None else "unmatched",
            error=type(exc).__name__,
            at=f"{tb.filename.rsplit('/', 1)[-1]}:{tb.lineno}",
        )
        return error(503, "temporarily unavailable", **{"Retry-After": "5"})
