"""Local stand-ins for the platforms, speaking their real wire formats on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

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
        self.messages: list[dict[str, Any]] = []  # every message sent, as Telegram keeps it

    @property
    def base_url(self) -> str:
        return self.url("")

    @staticmethod
    def markup_error(markup: Any) -> str | None:
        """What the Bot API says about a bad ``reply_markup`` (inline keyboards only here)."""
        rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            return "Bad Request: can't parse reply keyboard markup JSON object"
        for button in (b for row in rows for b in row):
            if not isinstance(button, dict) or not button.get("text"):
                return "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"  # noqa: E501
            data = button.get("callback_data")
            if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
                return "Bad Request: BUTTON_DATA_INVALID"
        return None

    def press(
        self, message: dict[str, Any], data: str, user: int, update_id: int
    ) -> dict[str, Any]:
        """The ``callback_query`` update Telegram sends when ``user`` presses the inline
        button of ``message`` whose ``callback_data`` is ``data``."""
        buttons = [b for row in message["reply_markup"]["inline_keyboard"] for b in row]
        assert any(b["callback_data"] == data for b in buttons), (data, buttons)
        return {
            "update_id": update_id,
            "callback_query": {
                "id": str(uuid.uuid4().int % 10**19),
                "from": {"id": user, "is_bot": False, "first_name": "Presser"},
                "message": message,
                "chat_instance": "-7382739423842",
                "data": data,
            },
        }

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

    def edit_markup(self, payload: dict[str, Any]) -> web.Response:
        """``editMessageReplyMarkup``: an empty inline keyboard removes the buttons."""
        message = next(
            (m for m in self.messages
             if str(m["chat"]["id"]) == str(payload.get("chat_id"))
             and m["message_id"] == payload.get("message_id")),
            None,
        )  # fmt: skip
        if message is None:
            return self.error(400, "Bad Request: message to edit not found")
        markup = payload.get("reply_markup") or {"inline_keyboard": []}
        bad = self.markup_error(markup)
        if bad is not None:
            return self.error(400, bad)
        if markup == message.get("reply_markup", {"inline_keyboard": []}):
            return self.error(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        if markup["inline_keyboard"]:
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)  # Telegram keeps no empty keyboard
        return web.json_response({"ok": True, "result": message})

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
        if request.match_info["method"] == "editMessageReplyMarkup":
            return self.edit_markup(payload)
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
        if "reply_markup" in payload:
            bad = self.markup_error(payload["reply_markup"])
            if bad is not None:
                return self.error(400, bad)
        thread = payload.get("message_thread_id")
        self._delivered.append(
            Delivered(str(payload["chat_id"]), str(thread) if thread else None, payload["text"])
        )
        chat_id = int(payload["chat_id"])
        message: dict[str, Any] = {
            "message_id": next(self._ids),
            "from": {"id": 42, "is_bot": True, "first_name": "Bot", "username": "switch_test_bot"},
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "date": int(time.time()),
            "text": payload["text"],
        }
        if thread:
            message |= {"message_thread_id": int(thread), "is_topic_message": True}
        if "reply_markup" in payload:
            message["reply_markup"] = payload["reply_markup"]
        self.messages.append(message)
        return web.json_response({"ok": True, "result": message})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self.method)
        return app


class FakeSlack(_Fake):
    """The Web API under ``/api``: 200 with ``ok: false`` for most errors, 429 for rate limits."""

    def __init__(self) -> None:
        super().__init__()
        self.progress_status: int | None = None  # set: every status call fails with it
        self.messages: list[dict[str, Any]] = []  # every message posted, as Slack keeps it
        self.stream_error: str | None = None  # set: every stream call answers this error
        self.append_error: str | None = None  # set: appends answer it (the start works)
        self._ts = itertools.count(1)

    @property
    def base_url(self) -> str:
        return self.url("/api")

    @staticmethod
    def blocks_error(blocks: Any) -> str | None:
        """``invalid_blocks`` for what Slack would refuse of the blocks we use."""
        if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
            return "invalid_blocks"
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "section":
                text = block.get("text") or {}
                if text.get("type") not in ("mrkdwn", "plain_text") or not text.get("text"):
                    return "invalid_blocks"
                if len(text["text"]) > 3000:
                    return "invalid_blocks"
            elif kind == "actions":
                elements = block.get("elements")
                if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                    return "invalid_blocks"
                ids = [e.get("action_id") for e in elements]
                if len(set(ids)) != len(ids):
                    return "invalid_blocks"  # action_ids are unique within a block
                for e in elements:
                    label = (e.get("text") or {}) if isinstance(e, dict) else {}
                    if e.get("type") != "button" or label.get("type") != "plain_text":
                        return "invalid_blocks"
                    if not label.get("text") or len(str(e.get("value", ""))) > 2000:
                        return "invalid_blocks"
            else:
                return "invalid_blocks"
        return None

    def press(
        self, message: dict[str, Any], action_id: str, user: str, *, team: str = "T0001"
    ) -> bytes:
        """The interactivity request Slack posts when ``user`` presses the button
        ``action_id`` of ``message``: a form whose ``payload`` field is the JSON."""
        actions = next(b for b in message["blocks"] if b["type"] == "actions")
        button = next(e for e in actions["elements"] if e["action_id"] == action_id)
        channel = message["channel"]
        shown = {k: v for k, v in message.items() if k != "channel"}
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": "presser", "name": "presser", "team_id": team},
            "api_app_id": "A0001",
            "token": "verification-token-unused",
            "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel,
                          "is_ephemeral": False},
            "trigger_id": "13345224609.738474920.8088930838d88f008e0",
            "team": {"id": team, "domain": "example"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": "directmessage"},
            "message": {"type": "message", "user": "U0BOT", "bot_id": "B0001", **shown},
            "state": {"values": {}},
            "response_url": "https://hooks.slack.com/actions/T0001/1/abc",
            "actions": [
                {**button, "block_id": actions.get("block_id", "b1"),
                 "action_ts": f"{time.time():.6f}"}
            ],
        }  # fmt: skip
        return urlencode({"payload": json.dumps(payload)}).encode()

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
        if name in self.MESSAGE_METHODS:
            return self.MESSAGE_METHODS[name](self, payload)
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
        if "blocks" in payload:
            bad = self.blocks_error(payload["blocks"])
            if bad is not None:
                return web.json_response({"ok": False, "error": bad})
        self._delivered.append(
            Delivered(payload["channel"], payload.get("thread_ts"), payload["text"])
        )
        ts = self._next_ts()
        kept = {k: payload[k] for k in ("channel", "text", "thread_ts", "blocks") if k in payload}
        self.messages.append({"ts": ts, **kept})
        return web.json_response({"ok": True, "channel": payload["channel"], "ts": ts})

    def _next_ts(self) -> str:
        return f"{next(self._ts)}.000200"

    @staticmethod
    def _error(error: str) -> web.Response:
        return web.json_response({"ok": False, "error": error})

    def _find(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        return next(
            (m for m in self.messages
             if m["channel"] == payload.get("channel") and m["ts"] == payload.get("ts")),
            None,
        )  # fmt: skip

    def start_stream(self, payload: dict[str, Any]) -> web.Response:
        """``chat.startStream``: a new message in the thread, growing until stopped."""
        if self.stream_error:
            return self._error(self.stream_error)
        channel, thread = payload.get("channel"), payload.get("thread_ts")
        if not channel or not thread:
            return self._error("invalid_arguments")
        if not str(channel).startswith("D") and not (
            payload.get("recipient_team_id") and payload.get("recipient_user_id")
        ):
            return self._error("invalid_arguments")  # channels name the recipient
        ts = self._next_ts()
        text = str(payload.get("markdown_text", ""))
        self.messages.append(
            {"ts": ts, "channel": channel, "thread_ts": thread, "text": text, "stream": "open"}
        )
        return web.json_response({"ok": True, "channel": channel, "ts": ts})

    def append_stream(self, payload: dict[str, Any]) -> web.Response:
        message = self._find(payload)
        if message is None:
            return self._error("message_not_found")
        if message.get("stream") != "open":
            return self._error("message_not_in_streaming_state")
        if self.stream_error or self.append_error:
            return self._error(self.stream_error or self.append_error or "")
        if len(str(payload.get("markdown_text", ""))) > 12_000:
            return self._error("msg_too_long")
        message["text"] += str(payload.get("markdown_text", ""))
        return web.json_response({"ok": True, "channel": message["channel"], "ts": message["ts"]})

    def stop_stream(self, payload: dict[str, Any]) -> web.Response:
        message = self._find(payload)
        if message is None:
            return self._error("message_not_found")
        if message.get("stream") != "open":
            return self._error("message_not_in_streaming_state")
        message["stream"] = "stopped"
        shown = {k: v for k, v in message.items() if k != "stream"}
        return web.json_response(
            {"ok": True, "channel": message["channel"], "ts": message["ts"], "message": shown}
        )

    def update(self, payload: dict[str, Any]) -> web.Response:
        """``chat.update``. The final text of a stopped stream is that reply's delivery."""
        message = self._find(payload)
        if message is None:
            return self._error("message_not_found")
        if message.get("stream") == "open":
            return self._error("cant_update_message")
        if not payload.get("text") and not payload.get("blocks"):
            return self._error("no_text")
        if payload.get("blocks"):
            bad = self.blocks_error(payload["blocks"])
            if bad is not None:
                return self._error(bad)
        if "text" in payload:
            message["text"] = payload["text"]
        if "blocks" in payload:
            message["blocks"] = payload["blocks"]
            if not payload["blocks"]:
                del message["blocks"]
        if message.get("stream") == "stopped":
            self._delivered.append(
                Delivered(message["channel"], message["thread_ts"], message["text"])
            )
        return web.json_response({"ok": True, "channel": message["channel"], "ts": message["ts"]})

    def delete(self, payload: dict[str, Any]) -> web.Response:
        message = self._find(payload)
        if message is None:
            return self._error("message_not_found")
        self.messages.remove(message)
        return web.json_response({"ok": True, "channel": message["channel"], "ts": message["ts"]})

    MESSAGE_METHODS = {
        "chat.startStream": start_stream,
        "chat.appendStream": append_stream,
        "chat.stopStream": stop_stream,
        "chat.update": update,
        "chat.delete": delete,
    }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self.method)
        return app


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
