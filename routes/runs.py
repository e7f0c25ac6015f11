"""Reading and cancelling runs from the client side: one view lookup, one queue-aware cancel.

Shared by ``/v1/runs``, ``/v1/responses``, the web chat routes and the operator CLI, so a run is
found and cancelled the same way whichever door the request came through. ``GET /v1/runs/{token}``
and ``POST /v1/runs/{token}/cancel`` are the channel-neutral doors: any pull channel that
authenticates its callers (bearer key, signed cookie) can follow its runs there.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from channels.base import AuthenticatesCallers, Channel
from channels.registry import ChannelRegistry
from hosting.ids import Caller, isolation_key, session_workflow_id
from hosting.models import RunStatus, RunView
from hosting.settings import Settings
from hosting.tokens import TokenClaims, verify
from routes.errors import openai_error, token_not_found
from routes.keys import LIMITS
from routes.limits import TooMany
from routes.watch import ViewWatchers, fetch_view
from workflows.session import SessionWorkflow


async def pending_runs(client: Client, session_id: str) -> list[str] | None:
    """Run IDs waiting in a session's queue; None when the session cannot be read."""
    try:
        return await client.get_workflow_handle(session_id).query(SessionWorkflow.pending_runs)
    except RPCError:
        return None


def session_of(settings: Settings, channel: Channel, user_id: str, conversation_id: str) -> str:
    """The session a direct conversation of ``user_id`` on ``channel`` lives in, following the
    channel's configured scope (the same rule the adapter applies to inbound messages)."""
    key = isolation_key(
        channel.direct_scope(),
        channel.name,
        user_id,
        conversation_id,
        identity_key=settings.security.identity_key_bytes(),
    )
    return session_workflow_id(settings.gateway.tenant, key)


async def cancel_run(client: Client, run_id: str, session_id: str | None) -> bool:
    """Cancel a run, or a run still waiting in its session's queue. False if neither exists."""
    try:
        await client.get_workflow_handle(run_id).cancel()
        return True
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        if session_id is None:
            return False
    try:
        await client.get_workflow_handle(session_id).signal(SessionWorkflow.cancel_run, run_id)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


MAX_WAIT_S = 60.0
STREAM_LIMIT_S = 15 * 60


class RunAccess:
    """Continuation tokens to runs, the same for every door: who asks, whose token it is, the
    run's view (``queued`` while it waits in its session), and the queue-aware cancel."""

    def __init__(self, settings: Settings, registry: ChannelRegistry, views: ViewWatchers) -> None:
        self._settings = settings
        self._key = settings.security.signing_key_bytes()
        self._tenant = settings.gateway.tenant
        self._registry = registry
        self.views = views

    def caller(self, request: web.Request, *, for_write: bool = False) -> Caller | None:
        for channel in self._registry:
            if isinstance(channel, AuthenticatesCallers):
                user_id = channel.authenticate(
                    request.headers, request.cookies, for_write=for_write
                )
                if user_id is not None:
                    return Caller(channel.name, user_id)
        return None

    def claims(self, token: str, caller: Caller) -> TokenClaims | None:
        return verify(self._key, token, tenant=self._tenant, caller=caller.key, now=time.time())

    def session_for(self, claims: TokenClaims) -> str | None:
        """The session a token's run waits in (under its channel's scope), if it has one."""
        if claims.conversation is None:
            return None
        caller = Caller.parse(claims.caller)
        channel = self._registry.get(caller.channel)
        if channel is None:
            return None
        return session_of(self._settings, channel, caller.user_id, claims.conversation)

    async def view(self, client: Client, claims: TokenClaims) -> RunView | None:
        """The run's view; for a run still waiting in its session's queue, a ``queued`` view."""
        view = await fetch_view(client, claims.run_id)
        session_id = self.session_for(claims)
        if view is not None or session_id is None:
            return view
        waiting = await pending_runs(client, session_id)
        if waiting is None or claims.run_id not in waiting:
            return None
        now = datetime.now(UTC)
        return RunView(
            run_id=claims.run_id,
            status=RunStatus.QUEUED,
            channel=Caller.parse(claims.caller).channel,
            created_at=now,
            updated_at=now,
        )

    async def cancel(self, client: Client, claims: TokenClaims) -> RunView | None:
        view = await fetch_view(client, claims.run_id)
        if view is not None and view.status.finished:
            return view
        if not await cancel_run(client, claims.run_id, self.session_for(claims)):
            return None
        # A queued run becomes a run at once, already cancelled; a running one stops.
        return await self.views.wait_for(
            client, claims.run_id, lambda v: v is not None and v.status.finished, 10.0
        )


def run_json(token: str, view: RunView) -> dict[str, Any]:
    return {
        "id": token,
        "object": "run",
        "run_id": view.run_id,
        "status": view.shown_status,
        "pending_tool": view.pending_tool,  # the tool's name only, while it waits
        "channel": view.channel,
        "output_text": view.output_text,
        "partial_text": view.partial_text,
        "progress_note": view.progress_note,
        "error": view.error,
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


_STEP = {"waiting": 1, "calling": 2}  # every other phase is a call's last: 3


def tool_steps(view: RunView) -> int:
    """How far the run's tool calls have come: grows with every start, wait and end, so a
    progress note that changes is a new stream event."""
    return sum(_STEP.get(c.phase, 3) for c in view.tool_calls)


class RunsApi:
    """``/v1/runs/{token}``: status (with an optional long poll) and cancel."""

    def __init__(self, access: RunAccess, client_key: web.AppKey[Client]) -> None:
        self._access = access
        self._client_key = client_key

    def _claims(self, request: web.Request, *, for_write: bool) -> TokenClaims | web.Response:
        """The token's claims for this caller, or the answer to give instead (401 or 404)."""
        caller = self._access.caller(request, for_write=for_write)
        if caller is None:
            return openai_error(401, "Authentication required.", "unauthenticated")
        claims = self._access.claims(request.match_info["token"], caller)
        return token_not_found() if claims is None else claims

    async def status(self, request: web.Request) -> web.StreamResponse:
        claims = self._claims(request, for_write=False)
        if isinstance(claims, web.Response):
            return claims
        if request.query.get("stream") == "true":
            try:
                with request.app[LIMITS].streams.hold(claims.caller):
                    return await self._events(request, claims)
            except TooMany as exc:
                answer = openai_error(429, "Too many open requests.", "rate_limit_exceeded")
                answer.headers["Retry-After"] = str(int(exc.retry_after_s))
                return answer
        try:
            wait = min(float(request.query.get("wait", "0")), MAX_WAIT_S)
        except ValueError:
            return openai_error(400, "wait must be a number of seconds", "invalid_request")
        client = request.app[self._client_key]
        view = await self._access.view(client, claims)
        if view is None:
            return token_not_found()
        if wait > 0 and not view.status.finished:
            first = view.status
            try:
                with request.app[LIMITS].streams.hold(claims.caller):
                    changed = await self._access.views.wait_for(
                        client, claims.run_id, lambda v: v is not None and v.status != first, wait
                    )
            except TooMany as exc:
                answer = openai_error(429, "Too many open requests.", "rate_limit_exceeded")
                answer.headers["Retry-After"] = str(int(exc.retry_after_s))
                return answer
            view = changed or view
        return web.json_response(run_json(request.match_info["token"], view))

    async def _events(self, request: web.Request, claims: TokenClaims) -> web.StreamResponse:
        """Server-Sent Events for callers that do not speak the Responses API: one ``run``
        event (the whole run object, with ``partial_text`` while the agent answers) per change,
        until the run has finished. Every event is the full state, so a reader that reconnects
        loses nothing; its ``id`` counts the recorded batches, and a reconnect that sends
        ``Last-Event-ID`` skips a first event it has already seen."""
        token = request.match_info["token"]
        client = request.app[self._client_key]
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        last_sent = request.headers.get("Last-Event-ID")
        deadline = time.monotonic() + STREAM_LIMIT_S
        with contextlib.suppress(ConnectionResetError):
            async with self._access.views.follow(client, claims.run_id) as watch:
                seen = 0
                while await watch.newer_than(seen, deadline - time.monotonic()):
                    seen = watch.version
                    view = (
                        await self._access.view(client, claims)
                        if watch.view is None
                        else (watch.view)
                    )
                    if view is None:
                        continue
                    event_id = f"{view.status.value}.{len(view.stream_ends)}.{tool_steps(view)}"
                    if event_id != last_sent:
                        data = json.dumps(run_json(token, view))
                        await resp.write(f"id: {event_id}\nevent: run\ndata: {data}\n\n".encode())
                        last_sent = event_id
                    if view.status.finished:
                        break
            await resp.write(b"event: end\ndata: {}\n\n")
        return resp

    async def cancel(self, request: web.Request) -> web.Response:
        claims = self._claims(request, for_write=True)
        if isinstance(claims, web.Response):
            return claims
        view = await self._access.cancel(request.app[self._client_key], claims)
        if view is None:
            return token_not_found()
        return web.json_response(run_json(request.match_info["token"], view))

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/runs/{token}", self.status)
        app.router.add_post("/v1/runs/{token}/cancel", self.cancel)
