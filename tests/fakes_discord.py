"""A local Discord REST API (``/api/v10``): interaction followups, bot DMs, command and
application set-up, with Discord's JSON error bodies and 429 answers."""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from channels.tck import Delivered
from tests.fakes import _Fake

APPLICATION_ID = "1000000000000000000"
BOT_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAwMA.GfAkE.fake-bot-token"


def sign_interaction(
    key: Ed25519PrivateKey, body: bytes, timestamp: float | None = None
) -> dict[str, str]:
    """Headers exactly as Discord sends them: Ed25519 over timestamp + body, hex-encoded."""
    stamp = str(int(time.time() if timestamp is None else timestamp))
    return {
        "X-Signature-Ed25519": key.sign(stamp.encode() + body).hex(),
        "X-Signature-Timestamp": stamp,
        "content-type": "application/json",
    }


def public_key_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes_raw().hex()


@dataclass(frozen=True)
class Where:
    """Where an interaction happened: what a followup on its token lands in."""

    conversation_id: str
    thread_id: str | None


class FakeDiscord(_Fake):
    """Followups are accepted only for tokens this fake issued and has not expired."""

    def __init__(self, signing_key: Ed25519PrivateKey | None = None) -> None:
        super().__init__()
        self._ids = itertools.count(1_300_000_000_000_000_000)
        self._tokens: dict[str, Where] = {}
        self._dms: dict[str, str] = {}  # user id -> DM channel id
        self.commands: list[dict[str, Any]] = []
        self.interactions_endpoint_url: str | None = None
        self.probe_key = signing_key  # set: PATCH /applications/@me checks the URL like Discord
        self.messages: list[dict[str, Any]] = []  # every message created, as Discord keeps it
        # token -> its interaction's original message; None while it is a deferred "thinking"
        self.originals: dict[str, dict[str, Any] | None] = {}
        self.edit_limited = False  # set: every @original edit is rate limited
        self.deleted: set[str] = set()  # tokens whose original was deleted

    @property
    def base_url(self) -> str:
        return self.url("/api/v10")

    # -- test helpers ----------------------------------------------------------------------

    def new_token(self, conversation_id: str, thread_id: str | None = None) -> str:
        """An interaction token as Discord issues one with each interaction."""
        token = "aW50ZXJhY3Rpb246" + base64.urlsafe_b64encode(secrets.token_bytes(48)).decode()
        self._tokens[token] = Where(conversation_id, thread_id)
        self.originals[token] = None  # answered with a deferral: "thinking..." until replaced
        return token

    def answer_press(self, message: dict[str, Any], answer: dict[str, Any]) -> None:
        """What Discord does with a component interaction's answer: type 7 updates the
        pressed message with the answer's data."""
        if answer.get("type") == 7:
            message.update(answer.get("data") or {})

    def shown(self, token: str) -> list[dict[str, Any]]:
        """The messages an interaction's token made: its original, then its followups."""
        return [m for m in self.messages if m.get("token") == token]

    def expire(self, token: str) -> None:
        self._tokens.pop(token, None)

    def dm_channel(self, user_id: str) -> str | None:
        return self._dms.get(user_id)

    def press(
        self,
        message: dict[str, Any],
        custom_id: str,
        *,
        interaction_id: str,
        user: str,
        guild: str | None = None,
    ) -> bytes:
        """The MESSAGE_COMPONENT interaction Discord posts when ``user`` presses the button
        ``custom_id`` of ``message``; it brings a token of its own."""
        buttons = [c for row in message.get("components", []) for c in row["components"]]
        assert any(b.get("custom_id") == custom_id for b in buttons), (custom_id, buttons)
        channel = message["channel_id"]
        where = next(
            (w for w in self._tokens.values() if channel in (w.thread_id, w.conversation_id)),
            Where(channel, None),
        )
        token = self.new_token(where.conversation_id, where.thread_id)
        self.originals[token] = message  # a component's original is the pressed message
        body: dict[str, Any] = {
            "id": interaction_id, "application_id": APPLICATION_ID, "type": 3, "token": token,
            "version": 1, "channel_id": channel, "locale": "en-US",
            "app_permissions": "2248473465835073", "message": message,
            "data": {"custom_id": custom_id, "component_type": 2},
        }  # fmt: skip
        if guild is None:
            body |= {
                "context": 1,
                "channel": {"id": channel, "type": 1},
                "user": {"id": user, "username": "presser", "global_name": "Presser"},
            }
        else:
            body |= {
                "context": 0, "guild_id": guild,
                "channel": {"id": channel, "type": 0, "guild_id": guild},
                "member": {"user": {"id": user, "username": "presser"}, "roles": []},
            }  # fmt: skip
        return json.dumps(body).encode()

    # -- wire ------------------------------------------------------------------------------

    @staticmethod
    def error(status: int, message: str, code: int, **extra: Any) -> web.Response:
        return web.json_response({"message": message, "code": code, **extra}, status=status)

    @staticmethod
    def rate_limited(retry: float) -> web.Response:
        headers = {
            "Retry-After": str(max(1, round(retry + 0.5))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry:.3f}",
            "X-RateLimit-Reset-After": f"{retry:.3f}",
            "X-RateLimit-Bucket": "abcd1234",
            "X-RateLimit-Scope": "user",
        }
        body = {"message": "You are being rate limited.", "retry_after": retry, "global": False}
        return web.json_response(body, status=429, headers=headers)

    async def _failure(self, bot: bool) -> web.Response | None:
        scripted = await self._scripted()
        if scripted is None:
            return None
        failure, retry = scripted
        if failure == "rate_limited":
            return self.rate_limited(retry)
        if failure in ("server_error", "timeout"):
            return web.Response(status=502, text="<html>502 Bad Gateway</html>")
        if failure == "rejected":
            return self.error(
                400,
                "Invalid Form Body",
                50035,
                errors={
                    "content": {
                        "_errors": [
                            {
                                "code": "BASE_TYPE_MAX_LENGTH",
                                "message": "Must be 2000 or fewer in length.",
                            }
                        ]
                    }
                },
            )
        if bot:
            return self.error(401, "401: Unauthorized", 0)
        return self.error(401, "Invalid Webhook Token", 50027)

    def _bot(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {BOT_TOKEN}"

    def _message(
        self, channel_id: str, payload: dict[str, Any], token: str | None = None
    ) -> dict[str, Any]:
        message = {
            "id": str(next(self._ids)),
            "type": 0,
            "channel_id": channel_id,
            "content": payload["content"],
            "author": {"id": APPLICATION_ID, "username": "switchboard", "bot": True},
            "components": payload.get("components", []),
        }
        if token is not None:
            message["token"] = token
        self.messages.append(message)
        return message

    async def edit_original(self, request: web.Request) -> web.Response:
        """``PATCH /webhooks/{app}/{token}/messages/@original``: the interaction's original
        message (its deferred "thinking..." becomes a message with this content)."""
        payload = await request.json()
        self.calls.append(("edit_original", payload))
        token = request.match_info["token"]
        where = self._tokens.get(token)
        if request.match_info["app"] != APPLICATION_ID or where is None:
            return self.error(401, "Invalid Webhook Token", 50027)
        if self.edit_limited:
            return self.rate_limited(2.5)
        bad = self._content_error(payload)
        if bad is not None:
            return bad
        if token in self.deleted:
            return self.error(404, "Unknown Message", 10008)
        original = self.originals.get(token)
        if original is None:
            original = self._message(where.thread_id or where.conversation_id, payload, token)
            self.originals[token] = original
        original["content"] = payload["content"]
        if "components" in payload:
            original["components"] = payload["components"]
        return web.json_response(original)

    @staticmethod
    def _components_error(components: Any) -> bool:
        """What Discord refuses of the components we use: up to 5 action rows (type 1) of up
        to 5 buttons (type 2), each with a style, a label and a unique custom_id (1 to 100)."""
        if not isinstance(components, list) or len(components) > 5:
            return True
        ids: list[str] = []
        for row in components:
            buttons = row.get("components") if isinstance(row, dict) else None
            if row.get("type") != 1 or not isinstance(buttons, list) or not 1 <= len(buttons) <= 5:
                return True
            for b in buttons:
                custom_id = b.get("custom_id") if isinstance(b, dict) else None
                if b.get("type") != 2 or b.get("style") not in (1, 2, 3, 4) or not b.get("label"):
                    return True
                if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
                    return True
                ids.append(custom_id)
        return len(set(ids)) != len(ids)

    @staticmethod
    def _content_error(payload: Any) -> web.Response | None:
        content = payload.get("content") if isinstance(payload, dict) else None
        if not isinstance(content, str) or not content:
            return FakeDiscord.error(400, "Cannot send an empty message", 50006)
        if len(content) > 2000:
            return FakeDiscord.error(400, "Invalid Form Body", 50035)
        if "components" in payload and FakeDiscord._components_error(payload["components"]):
            return FakeDiscord.error(400, "Invalid Form Body", 50035)
        return None

    async def delete_original(self, request: web.Request) -> web.Response:
        """``DELETE .../messages/@original``: 204; the token's original is gone for good."""
        self.calls.append(("delete_original", {}))
        token = request.match_info["token"]
        original = self.originals.get(token)
        if token not in self._tokens or token in self.deleted or original is None:
            return self.error(404, "Unknown Message", 10008)
        self.messages.remove(original)
        self.deleted.add(token)
        return web.Response(status=204)

    async def followup(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.calls.append(("followup", {"query": dict(request.query), **payload}))
        if request.match_info["app"] != APPLICATION_ID:
            return self.error(404, "Unknown Webhook", 10015)
        where = self._tokens.get(request.match_info["token"])
        if where is None:
            return self.error(401, "Invalid Webhook Token", 50027)
        failed = await self._failure(bot=False)
        if failed is not None:
            return failed
        bad = self._content_error(payload)
        if bad is not None:
            return bad
        self._delivered.append(
            Delivered(where.conversation_id, where.thread_id, payload["content"])
        )
        token = request.match_info["token"]
        message = self._message(where.thread_id or where.conversation_id, payload, token)
        if self.originals.get(token, message) is None:
            self.originals[token] = message  # the first followup takes the deferral's place
        if request.query.get("wait") == "true":
            return web.json_response(message)
        return web.Response(status=204)

    async def create_dm(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.calls.append(("create_dm", payload))
        if not self._bot(request):
            return self.error(401, "401: Unauthorized", 0)
        failed = await self._failure(bot=True)
        if failed is not None:
            return failed
        user = str(payload.get("recipient_id", ""))
        if not user.isdigit():
            return self.error(400, "Invalid Form Body", 50035)
        channel = self._dms.setdefault(user, str(next(self._ids)))
        return web.json_response(
            {"id": channel, "type": 1, "last_message_id": None, "recipients": [{"id": user}]}
        )

    async def channel_message(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.calls.append(("channel_message", payload))
        if not self._bot(request):
            return self.error(401, "401: Unauthorized", 0)
        channel = request.match_info["channel"]
        if channel not in self._dms.values():
            return self.error(404, "Unknown Channel", 10003)
        failed = await self._failure(bot=True)
        if failed is not None:
            return failed
        bad = self._content_error(payload)
        if bad is not None:
            return bad
        self._delivered.append(Delivered(channel, None, payload["content"]))
        return web.json_response(self._message(channel, payload))

    async def overwrite_commands(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.calls.append(("overwrite_commands", {"commands": payload}))
        if not self._bot(request):
            return self.error(401, "401: Unauthorized", 0)
        if request.match_info["app"] != APPLICATION_ID:
            return self.error(403, "Missing Access", 50001)
        self.commands = [
            {"id": str(next(self._ids)), "application_id": APPLICATION_ID, "version": "1", **c}
            for c in payload
        ]
        return web.json_response(self.commands)

    async def edit_application(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.calls.append(("edit_application", payload))
        if not self._bot(request):
            return self.error(401, "401: Unauthorized", 0)
        url = payload.get("interactions_endpoint_url")
        if self.probe_key is not None and not await self._probe(str(url)):
            return self.error(
                400,
                "Invalid Form Body",
                50035,
                errors={
                    "interactions_endpoint_url": {
                        "_errors": [
                            {
                                "code": "APPLICATION_INTERACTIONS_ENDPOINT_URL_INVALID",
                                "message": (
                                    "The specified interactions endpoint url could not be verified."
                                ),
                            }
                        ]
                    }
                },
            )
        self.interactions_endpoint_url = url
        return web.json_response(
            {"id": APPLICATION_ID, "name": "switchboard", "interactions_endpoint_url": url}
        )

    async def _probe(self, url: str) -> bool:
        """What Discord does before saving the URL: a signed PING must get a PONG, and a
        request with a wrong signature must get a 401."""
        assert self.probe_key is not None
        ping = json.dumps(
            {"id": str(next(self._ids)), "application_id": APPLICATION_ID, "type": 1,
             "token": "A_UNIQUE_TOKEN", "version": 1}
        ).encode()  # fmt: skip
        good = sign_interaction(self.probe_key, ping)
        forged = {**good, "X-Signature-Ed25519": Ed25519PrivateKey.generate().sign(ping).hex()}
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(url, data=ping, headers=good) as resp:
                    pong = resp.status == 200 and (await resp.json()) == {"type": 1}
                async with http.post(url, data=ping, headers=forged) as resp:
                    refused = resp.status == 401
        except (aiohttp.ClientError, OSError, ValueError):
            return False
        return pong and refused

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v10/webhooks/{app}/{token}", self.followup)
        app.router.add_delete(
            "/api/v10/webhooks/{app}/{token}/messages/@original", self.delete_original
        )
        app.router.add_patch(
            "/api/v10/webhooks/{app}/{token}/messages/@original", self.edit_original
        )
        app.router.add_post("/api/v10/users/@me/channels", self.create_dm)
        app.router.add_post("/api/v10/channels/{channel}/messages", self.channel_message)
        app.router.add_put("/api/v10/applications/{app}/commands", self.overwrite_commands)
        app.router.add_delete(
            "/api/v10/webhooks/{app}/{token}/messages/@original", self.delete_original
        )
        app.router.add_patch("/api/v10/applications/@me", self.edit_application)
        return app
