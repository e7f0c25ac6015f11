"""A local DingTalk: sessionWebhooks, the OAuth2 access token and the robot send API.

It answers in DingTalk's wire format: a sessionWebhook replies HTTP 200 with ``errcode`` in
the body (``130101`` when sending too fast); the v1.0 API replies with an HTTP status and
``{"code", "message", "requestid"}`` on errors and wants ``x-acs-dingtalk-access-token``.
"""

from __future__ import annotations

import itertools
import json
import secrets
from typing import Any

from aiohttp import web

from channels.tck import Delivered
from tests.fakes import _Fake

APP_KEY = "dingtestappkey0001"
APP_SECRET = "dingtalk-app-secret-for-the-fake_0123456789"
ROBOT_CODE = "dingtestrobot0001"
TOKEN_LIFETIME_S = 7200


def _api_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "requestid": secrets.token_hex(8)}, status=status
    )


class FakeDingTalk(_Fake):
    """``/robot/sendBySession`` (the URLs handed out in callbacks) and ``/v1.0/...``."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, str] = {}  # session token -> conversation id
        self.tokens: set[str] = set()
        self.token_requests = 0
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return self.url("")

    def session_webhook(self, conversation_id: str) -> str:
        """A sessionWebhook for one conversation, as DingTalk puts it in a callback."""
        token = secrets.token_hex(12)
        self.sessions[token] = conversation_id
        return self.url(f"/robot/sendBySession?session={token}")

    # -- sessionWebhook --------------------------------------------------------------------

    async def send_by_session(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.calls.append(("sendBySession", payload))
        conversation = self.sessions.get(request.query.get("session", ""))
        if conversation is None:
            return web.json_response({"errcode": 300001, "errmsg": "token is not exist"})
        scripted = await self._scripted()
        if scripted:
            failure, _ = scripted
            if failure == "rate_limited":
                return web.json_response(
                    {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}
                )
            if failure in ("server_error", "timeout"):
                return web.json_response({"errcode": -1, "errmsg": "系统繁忙"})
            if failure == "rejected":
                return web.json_response({"errcode": 300001, "errmsg": "token is not exist"})
            return web.Response(status=403)
        if payload.get("msgtype") != "text":
            return web.json_response({"errcode": 40035, "errmsg": "缺少参数 json"})
        self._delivered.append(Delivered(conversation, None, payload["text"]["content"]))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    # -- v1.0 API --------------------------------------------------------------------------

    async def access_token(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.token_requests += 1
        if payload.get("appKey") != APP_KEY or payload.get("appSecret") != APP_SECRET:
            return _api_error(400, "invalidClientIdOrSecret", "无效的clientId或者clientSecret")
        token = f"tok{self.token_requests}-{secrets.token_hex(6)}"
        self.tokens.add(token)
        return web.json_response({"accessToken": token, "expireIn": TOKEN_LIFETIME_S})

    async def _proactive(self, request: web.Request, name: str) -> tuple[Any, web.Response | None]:
        if request.headers.get("x-acs-dingtalk-access-token") not in self.tokens:
            return None, _api_error(401, "InvalidAuthentication", "不合法的access_token")
        payload = await request.json()
        self.calls.append((name, payload))
        if payload.get("robotCode") != ROBOT_CODE or payload.get("msgKey") != "sampleText":
            return None, _api_error(400, "robot.notExist", "机器人不存在")
        scripted = await self._scripted()
        if scripted:
            failure, retry = scripted
            if failure == "rate_limited":
                response = _api_error(429, "Throttling", "请求被流控")
                response.headers["Retry-After"] = str(int(retry))
                return None, response
            if failure in ("server_error", "timeout"):
                return None, _api_error(503, "ServiceUnavailable", "服务不可用")
            if failure == "rejected":
                return None, _api_error(400, "staffId.notExisted", "员工不存在")
            return None, _api_error(401, "InvalidAuthentication", "不合法的access_token")
        return payload, None

    async def batch_send(self, request: web.Request) -> web.Response:
        payload, error = await self._proactive(request, "oToMessages/batchSend")
        if error is not None:
            return error
        content = json.loads(payload["msgParam"])["content"]
        for user in payload["userIds"]:
            self._delivered.append(Delivered(user, None, content))
        return web.json_response(
            {
                "processQueryKey": f"pqk{next(self._ids)}",
                "invalidStaffIdList": [],
                "flowControlledStaffIdList": [],
            }
        )

    async def group_send(self, request: web.Request) -> web.Response:
        payload, error = await self._proactive(request, "groupMessages/send")
        if error is not None:
            return error
        content = json.loads(payload["msgParam"])["content"]
        self._delivered.append(Delivered(payload["openConversationId"], None, content))
        return web.json_response({"processQueryKey": f"pqk{next(self._ids)}"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/robot/sendBySession", self.send_by_session)
        app.router.add_post("/v1.0/oauth2/accessToken", self.access_token)
        app.router.add_post("/v1.0/robot/oToMessages/batchSend", self.batch_send)
        app.router.add_post("/v1.0/robot/groupMessages/send", self.group_send)
        return app
