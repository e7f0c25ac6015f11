"""The web chat page and the routes it uses to follow its own runs.

``GET /`` serves the page (and gives the browser its signed identity cookie). The page posts
messages to ``POST /channels/web`` like any channel, then follows each run over Server-Sent
Events on ``/channels/web/runs/{message_id}/events``. Every run route checks the cookie, so a
browser can only see and cancel its own runs.
"""

from __future__ import annotations

import contextlib
import json
import time
from importlib import resources
from urllib.parse import quote

from aiohttp import web
from temporalio.client import Client

from channels.base import Channel
from channels.web import COOKIE, WebChannel, message_key
from hosting.ids import InvalidKey, run_workflow_id
from hosting.models import RunStatus, RunView
from hosting.settings import ConfigError, Settings
from routes.keys import CLIENT, LIMITS
from routes.limits import TooMany
from routes.runs import RunAccess, cancel_run, session_of
from routes.watch import ViewWatchers, fetch_view

STREAM_LIMIT_S = 15 * 60
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _asset(name: str) -> str:
    return (resources.files("routes") / "static" / name).read_text(encoding="utf-8")


def run_page_view(view: RunView, ui_link: str | None) -> dict[str, object]:
    """What the page shows of a run: it belongs to this browser, so the reply is included."""
    return {
        "status": view.shown_status,
        "output_text": view.output_text,
        "partial_text": view.partial_text,  # the answer so far, while the agent is answering
        "action_text": view.action_text,  # a question waiting for the person (approvals)
        "progress_note": view.progress_note,  # "calling search…" while a tool runs
        "error": view.error,
        "deliveries": [
            {"destination": d.destination, "state": d.state.value, "attempts": d.attempts}
            for d in view.deliveries
        ],
        "ui_url": ui_link,
    }


def _settled(view: RunView) -> bool:
    return view.status.finished and all(d.state != "pending" for d in view.deliveries)


class WebChat:
    def __init__(
        self,
        settings: Settings,
        channel: WebChannel,
        client_key: web.AppKey[Client],
        views: ViewWatchers,
    ):
        self._settings = settings
        self._channel = channel
        self._client_key = client_key
        self._views = views
        self._secure = settings.gateway.public_url.startswith("https://")

    def _ui_link(self, run_id: str) -> str | None:
        ui = self._settings.temporal.ui_url
        if not ui:
            return None
        ns = quote(self._settings.temporal.namespace, safe="")
        return f"{ui.rstrip('/')}/namespaces/{ns}/workflows/{quote(run_id, safe='')}"

    async def page(self, request: web.Request) -> web.Response:
        identity = self._channel.identity
        browser_id = identity.browser_id(request.cookies)
        cookie = None
        if browser_id is None:
            browser_id, cookie = identity.new_cookie()
        html = _asset("index.html").replace("__CSRF_TOKEN__", identity.csrf_token(browser_id))
        resp = web.Response(text=html, content_type="text/html", headers=SECURITY_HEADERS)
        if cookie is not None:
            resp.set_cookie(
                COOKIE,
                cookie,
                max_age=365 * 86400,
                httponly=True,
                samesite="Strict",
                secure=self._secure,
                path="/",
            )
        return resp

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(
            text=_asset(name),
            content_type=ASSETS[name],
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    def _run_id(self, request: web.Request, *, for_write: bool) -> str:
        """The run this browser asks about; 404 for anything that is not its own."""
        if for_write:
            browser_id = self._channel.browser_from(request.cookies, request.headers)
        else:
            browser_id = self._channel.identity.browser_id(request.cookies)
        if browser_id is None:
            raise web.HTTPForbidden(text='{"error": "no session"}', content_type="application/json")
        try:
            return run_workflow_id(
                self._settings.gateway.tenant,
                self._channel.name,
                message_key(self._channel.identity, browser_id, request.match_info["message_id"]),
            )
        except InvalidKey:
            raise web.HTTPNotFound() from None

    async def run_state(self, request: web.Request) -> web.Response:
        run_id = self._run_id(request, for_write=False)
        view = await fetch_view(request.app[self._client_key], run_id)
        if view is None:
            return web.json_response({"status": RunStatus.QUEUED.value, "found": False})
        return web.json_response(run_page_view(view, self._ui_link(run_id)))

    async def run_events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: one ``run`` event per change, until the run has settled.

        Each browser may hold only a few streams open (and the process a bounded number);
        every stream of one run shares one poller."""
        run_id = self._run_id(request, for_write=False)
        browser_id = self._channel.identity.browser_id(request.cookies) or ""
        try:
            with request.app[LIMITS].streams.hold(f"{self._channel.name}:{browser_id}"):
                return await self._events(request, run_id)
        except TooMany as exc:
            return web.json_response(
                {"error": "too many open streams"},
                status=429,
                headers={"Retry-After": str(int(exc.retry_after_s))},
            )

    async def _events(self, request: web.Request, run_id: str) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        # If the page goes away mid-stream, it reconnects or refreshes when it comes back.
        with contextlib.suppress(ConnectionResetError):
            await self._stream(request, resp, run_id)
        return resp

    async def _stream(self, request: web.Request, resp: web.StreamResponse, run_id: str) -> None:
        last: str | None = None
        deadline = time.monotonic() + STREAM_LIMIT_S
        async with self._views.follow(request.app[self._client_key], run_id) as watch:
            seen = 0
            while await watch.newer_than(seen, deadline - time.monotonic()):
                seen = watch.version
                view = watch.view
                state = (
                    run_page_view(view, self._ui_link(run_id))
                    if view is not None
                    else {"status": RunStatus.QUEUED.value, "found": False}
                )
                encoded = json.dumps(state)
                if encoded != last:
                    await resp.write(f"event: run\ndata: {encoded}\n\n".encode())
                    last = encoded
                if view is not None and _settled(view):
                    break
        await resp.write(b"event: end\ndata: {}\n\n")

    async def cancel(self, request: web.Request) -> web.Response:
        run_id = self._run_id(request, for_write=True)
        browser_id = self._channel.identity.browser_id(request.cookies) or ""
        session_id = session_of(self._settings, self._channel, browser_id, browser_id)
        if not await cancel_run(request.app[self._client_key], run_id, session_id):
            raise web.HTTPNotFound()
        return web.json_response({"status": "cancelling"}, status=202)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/static/{name}", self.asset)
        app.router.add_get("/channels/web/runs/{message_id}", self.run_state)
        app.router.add_get("/channels/web/runs/{message_id}/events", self.run_events)
        app.router.add_post("/channels/web/runs/{message_id}/cancel", self.cancel)


def mount(app: web.Application, settings: Settings, channel: Channel, access: RunAccess) -> None:
    """The ``chat_page`` surface of a channel that declares it."""
    if not isinstance(channel, WebChannel):
        raise ConfigError(f"channels.{channel.name}: the chat page needs a web channel")
    WebChat(settings, channel, CLIENT, access.views).add_routes(app)
