"""Local stand-ins for the platforms, speaking their real wire formats on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import standardwebhooks
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.tck import Delivered, Failure
from tests.support import WEBHOOK_SECRET

TELEGRAM_TOKEN = "123456:TEST-token-for-the-fake"
SLACK_TOKEN = "xoxb-test-token"


class _Fake:
    def __init__(self) -> None:
        self.failures: list[tuple[Failure, float]] = []
        self._delivered: list[Delivered] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.server: TestServer | None = None
        self.pushes = 0  # push calls answered so far, failures included
        self.fail_at: dict[int, tuple[Failure, float]] = {}  # push number -> failure

    @property
    def delivered(self) -> list[Delivered]:
        return list(self._delivered)

    def fail_next(self, failure: Failure, retry_after_s: float = 1.0) -> None:
        self.failures.append((failure, retry_after_s))

    def url(self, path: str = "") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def _scripted(self) -> tuple[Failure, float] | None:
        self.pushes += 1
        if self.pushes in self.fail_at:
            return self.fail_at.pop(self.pushes)
        if not self.failures:
            return None
        failure = self.failures.pop(0)
        if failure[0] == "timeout":
            await asyncio.sleep(3)  # longer than the push timeout the kit uses
        return failure

    def app(self) -> web.Application:
        raise NotImplementedError


@asynccontextmanager
async def serve(fake: _Fake) -> AsyncIterator[_Fake]:
    fake.server = TestServer(fake.app(), host="127.0.0.1")
    await fake.server.start_server()
    try:
        yield fake
    finally:
        await fake.server.close()


class FakeWebhookReceiver(_Fake):
    """A Standard Webhooks consumer that verifies every push with the reference library."""

    @property
    def base_url(self) -> str:
        return self.url("/hook")

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = standardwebhooks.Webhook(WEBHOOK_SECRET).verify(
                body.decode(), dict(request.headers)
            )
        except Exception:
            return web.Response(status=401)
        scripted = await self._scripted()
        if scripted:
            failure, retry = scripted
            status = {
                "rate_limited": 429,
                "server_error": 503,
                "timeout": 504,
                "rejected": 410,
                "unauthorized": 401,
            }[failure]
            return web.Response(
                status=status, headers={"Retry-After": str(int(retry))} if status == 429 else {}
            )
        conv = payload["conversation"]
        self._delivered.append(Delivered(conv["id"], conv.get("thread_id"), payload["text"]))
        return web.Response(status=204)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        return app


class FakeTelegram(_Fake):
    """The Bot API's ``/bot<token>/<method>`` with its JSON answers and error shapes."""

    PROGRESS_METHODS = ("sendChatAction", "sendMessageDraft")

    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1000)
        self.progress_status: int | None = None  # set: every progress call fails with it

    @property
    def base_url(self) -> str:
        return self.url("")

    def progress(self, payload: dict[str, Any], method: str) -> web.Response:
        """Typing and drafts: recorded in ``calls``, never delivered, never scripted."""
        if self.progress_status == 429:
            return self.error(429, "Too Many Requests: retry after 5", retry_after=5)
        if self.progress_status is not None:
            return self.error(self.progress_status, "Internal Server Error")
        if method == "sendChatAction" and payload.get("action") != "typing":
            return self.error(400, "Bad Request: wrong parameter action in request")
        if method == "sendMessageDraft":
            if not str(payload.get("chat_id", "")).isdigit():  # private chats only
                return self.error(400, "Bad Request: chat not found")
            if not payload.get("draft_id") or len(payload.get("text", "")) > 4096:
                return self.error(400, "Bad Request: invalid draft")
        return web.json_response({"ok": True, "result": True})

    @staticmethod
    def error(status: int, description: str, **parameters: Any) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    async def method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TELEGRAM_TOKEN:
            return self.error(401, "Unauthorized")
        payload = await request.json()
        self.calls.append((request.match_info["method"], payload))
        if request.match_info["method"] == "setWebhook":
            return web.json_response({"ok": True, "result": True, "description": "Webhook was set"})
        if request.match_info["method"] in self.PROGRESS_METHODS:
            return self.progress(payload, request.match_info["method"])
        scripted = await self._scripted()
        if scripted:
            failure, retry = scripted
            if failure == "rate_limited":
                return self.error(
                    429, f"Too Many Requests: retry after {int(retry)}", retry_after=int(retry)
                )
            if failure in ("server_error", "timeout"):
                return self.error(502, "Bad Gateway")
            if failure == "rejected":
                return self.error(403, "Forbidden: bot was blocked by the user")
            return self.error(401, "Unauthorized")
        thread = payload.get("message_thread_id")
        self._delivered.append(
            Delivered(str(payload["chat_id"]), str(thread) if thread else None, payload["text"])
        )
        return web.json_response(
            {
                "ok": True,
                "result": {
                    "message_id": next(self._ids),
                    "chat": {"id": payload["chat_id"]},
                    "text": payload["text"],
                },
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self.method)
        return app


class FakeSlack(_Fake):
    """The Web API under ``/api``: 200 with ``ok: false`` for most errors, 429 for rate limits."""

    def __init__(self) -> None:
        super().__init__()
        self.progress_status: int | None = None  # set: every status call fails with it

    @property
    def base_url(self) -> str:
        return self.url("/api")

    def set_status(self, payload: dict[str, Any]) -> web.Response:
        """``assistant.threads.setStatus``: recorded in ``calls``, never delivered."""
        if self.progress_status == 429:
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "5"}
            )
        if self.progress_status is not None:
            return web.json_response({"ok": False, "error": "internal_error"}, status=500)
        if not (payload.get("channel_id") and payload.get("thread_ts")) or "status" not in payload:
            return web.json_response({"ok": False, "error": "invalid_arguments"})
        return web.json_response({"ok": True})

    async def method(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {SLACK_TOKEN}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        payload = await request.json()
        name = request.match_info["method"]
        self.calls.append((name, payload))
        if name == "conversations.open":
            return web.json_response({"ok": True, "channel": {"id": "D" + payload["users"]}})
        if name == "assistant.threads.setStatus":
            return self.set_status(payload)
        scripted = await self._scripted()
        if scripted:
            failure, retry = scripted
            if failure == "rate_limited":
                return web.json_response(
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={"Retry-After": str(int(retry))},
                )
            if failure in ("server_error", "timeout"):
                return web.json_response({"ok": False, "error": "service_unavailable"}, status=503)
            if failure == "rejected":
                return web.json_response({"ok": False, "error": "channel_not_found"})
            return web.json_response({"ok": False, "error": "token_revoked"})
        self._delivered.append(
            Delivered(payload["channel"], payload.get("thread_ts"), payload["text"])
        )
        return web.json_response(
            {"ok": True, "channel": payload["channel"], "ts": f"{len(self._delivered)}.000200"}
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self.method)
        return app


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
