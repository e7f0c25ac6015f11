"""DingTalk robot HTTP callback in, ``sessionWebhook`` (or the robot's send API) out.

Inbound ``POST /channels/dingtalk`` carries headers ``timestamp`` (milliseconds) and ``sign``,
base64 HMAC-SHA256 of ``timestamp + "\\n" + appSecret`` keyed with the app secret, within one
hour. The signature does not cover the body, so it proves only that the sender knows the secret.
``msgId`` is the message key, so DingTalk's redeliveries are one run. In groups the robot only
hears messages that @-mention it (``isInAtList``), and ``accept_in_group`` narrows that further.

Replies go to the message's ``sessionWebhook`` while it is valid: the URL itself carries the
authority, so it is posted to only on an allowed origin (a forged callback must not make the
gateway POST anywhere). After it expires, the robot's proactive API is used with an app access
token (``app_key`` + ``robot_code``); without those an expired webhook is a rejected delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, SecretStr

from channels.base import (
    Accepted,
    Answered,
    BaseChannel,
    ChannelAck,
    FailureMode,
    HttpAnswer,
    InboundHttp,
    InboundOutcome,
    Refused,
)
from channels.chunking import send_parts, split_text
from channels.http_push import HttpResult, classify_status, parse_retry_after, post
from channels.inbound_body import BodyError, PlatformBody, parse_body
from hosting.models import ChannelRequest, PushRequest, ReplyAddress
from hosting.settings import ChannelSettings, ConfigError, require_secret

TOLERANCE_S = 3600.0
# DingTalk documents about 20,000 for a text message without saying characters or bytes;
# counting UTF-8 bytes keeps a part under either reading (a CJK character is three bytes).
MAX_TEXT_BYTES = 16_000
SEND_TOO_FAST = 130101  # "send too fast, exceed 20 times per minute", then a block
SEND_TOO_FAST_BACKOFF_S = 60.0
SYSTEM_BUSY = -1  # DingTalk's global "system busy, retry later"
QPS_BACKOFF_S = 1.0  # the API gateway's per-second limits (``...QpsLimit...`` codes)
WEBHOOK_MARGIN_MS = 30_000  # a webhook this close to expiry may lapse mid-request
TOKEN_MARGIN_S = 300.0  # refresh the access token this long before DingTalk expires it
DEFAULT_TOKEN_LIFETIME_S = 7200.0
IGNORED = Answered(HttpAnswer(status=200))  # a 2xx, or DingTalk redelivers what we will not use
_STAMP = re.compile(r"[0-9]{1,15}")

# ReplyAddress.extra keys
SESSION_WEBHOOK = "session_webhook"
SESSION_WEBHOOK_EXPIRES_MS = "session_webhook_expires_ms"
CONVERSATION_TYPE = "conversation_type"
DIRECT, GROUP = "1", "2"

Origin = tuple[str, str, int]


def utf8_len(text: str) -> int:
    return len(text.encode())


def signature(secret: str, timestamp: str) -> str:
    """DingTalk's callback signature: it covers the timestamp and the secret, not the body."""
    mac = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def origin(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL, or None when it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


class DtText(PlatformBody):
    content: str = Field(default="", max_length=20_000)


class DtCallback(PlatformBody):
    """The fields of a robot callback this adapter reads; DingTalk sends many more."""

    msg_id: str | None = Field(default=None, alias="msgId", max_length=128)
    msgtype: str | None = Field(default=None, max_length=32)
    conversation_id: str | None = Field(default=None, alias="conversationId", max_length=128)
    conversation_type: str | None = Field(default=None, alias="conversationType", max_length=4)
    sender_staff_id: str | None = Field(default=None, alias="senderStaffId", max_length=128)
    sender_id: str | None = Field(default=None, alias="senderId", max_length=128)
    in_at_list: bool = Field(default=False, alias="isInAtList")
    text: DtText | None = None
    session_webhook: str | None = Field(default=None, alias="sessionWebhook", max_length=2048)
    session_webhook_expires_ms: int | None = Field(
        default=None, alias="sessionWebhookExpiredTime", ge=0, le=10**15
    )


class DingTalkChannelSettings(ChannelSettings):
    """``[channels.dingtalk]``: the robot app's secret; ``app_key`` and ``robot_code`` for
    sends after a message's ``sessionWebhook`` has expired."""

    app_secret: SecretStr = SecretStr("")
    app_key: str = ""
    robot_code: str = ""
    api_base_url: str = "https://api.dingtalk.com"
    # Origins a callback's sessionWebhook may point at (the api_base_url origin is added).
    session_webhook_origins: list[str] = Field(
        default_factory=lambda: ["https://oapi.dingtalk.com"]
    )


class DingTalkChannel(BaseChannel):
    name = "dingtalk"

    def __init__(self, *, settings: DingTalkChannelSettings) -> None:
        super().__init__(settings=settings)
        self.settings: DingTalkChannelSettings = settings
        self._secret = require_secret(
            settings.app_secret, "channels.dingtalk.app_secret", "the robot app's AppSecret"
        )
        if bool(settings.app_key) != bool(settings.robot_code):
            raise ConfigError(
                "channels.dingtalk: app_key and robot_code go together (both, or neither)"
            )
        allowed: set[Origin] = set()
        for value in [*settings.session_webhook_origins, settings.api_base_url]:
            found = origin(value)
            if found is None:
                raise ConfigError(f"channels.dingtalk: {value!r} is not an http(s) URL")
            allowed.add(found)
        self._allowed = frozenset(allowed)
        self._token: str | None = None
        self._token_until = 0.0

    @property
    def proactive(self) -> bool:
        return bool(self.settings.app_key and self.settings.robot_code)

    # -- inbound ---------------------------------------------------------------------------

    def _verified(self, http: InboundHttp) -> bool:
        stamp = http.headers.get("timestamp", "")
        presented = http.headers.get("sign", "")
        if not _STAMP.fullmatch(stamp):
            return False
        fresh = abs(http.received_at - int(stamp) / 1000) < TOLERANCE_S
        expected = signature(self._secret, stamp)
        return hmac.compare_digest(presented.encode(), expected.encode()) and fresh

    def _addressed(self, msg: DtCallback, text: str) -> bool:
        """Whether a group message is for the robot (DingTalk only sends it @-mentions)."""
        mode = self.settings.accept_in_group
        if mode == "all":
            return True
        if mode == "commands_only":
            return msg.in_at_list and text.startswith("/")
        return msg.in_at_list

    async def receive(self, http: InboundHttp) -> InboundOutcome:
        if not self._verified(http):
            return Refused(401, "invalid signature")
        try:
            msg = parse_body(DtCallback, http.body)
        except BodyError as exc:
            return Refused(400, str(exc))
        user = msg.sender_staff_id or msg.sender_id
        text = msg.text.content.strip() if msg.text else ""
        if (
            msg.msgtype != "text"  # pictures, files, rich text: nothing for the agent yet
            or msg.conversation_type not in (DIRECT, GROUP)
            or not (msg.msg_id and msg.conversation_id and user and text)
        ):
            return IGNORED
        direct = msg.conversation_type == DIRECT
        if not direct and not self._addressed(msg, text):
            return IGNORED
        extra = {CONVERSATION_TYPE: msg.conversation_type}
        if msg.session_webhook:
            extra[SESSION_WEBHOOK] = msg.session_webhook
        if msg.session_webhook_expires_ms is not None:
            extra[SESSION_WEBHOOK_EXPIRES_MS] = str(msg.session_webhook_expires_ms)
        return Accepted(
            ChannelRequest(
                tenant=http.tenant,
                channel=self.name,
                message_key=msg.msg_id,
                user_id=user,
                conversation_id=msg.conversation_id,
                is_direct=direct,
                text=text,
                reply_to=ReplyAddress(
                    channel=self.name,
                    user_id=user,
                    conversation_id=msg.conversation_id,
                    reply_to_message_id=msg.msg_id,
                    extra=extra,
                ),
            )
        )

    def sample_request(self, text: str, user: str) -> tuple[dict[str, str], bytes]:
        """One signed 1:1 text message from ``user``, with no sessionWebhook: the reply goes
        out through the proactive API."""
        stamp = str(int(time.time() * 1000))
        body = {
            "msgId": f"sample{time.time_ns()}",
            "msgtype": "text",
            "conversationId": f"cid-sample-{user}",
            "conversationType": DIRECT,
            "senderStaffId": user,
            "text": {"content": text},
        }
        headers = {
            "timestamp": stamp,
            "sign": signature(self._secret, stamp),
            "content-type": "application/json",
        }
        return headers, json.dumps(body).encode()

    # -- push ------------------------------------------------------------------------------

    def _webhook(self, addr: ReplyAddress) -> tuple[str | None, str]:
        """The sessionWebhook to post to, or None and why it cannot be used."""
        url = addr.extra.get(SESSION_WEBHOOK)
        if not url:
            return None, "no sessionWebhook"
        if origin(url) not in self._allowed:
            return None, "sessionWebhook is not on an allowed origin"
        expires = addr.extra.get(SESSION_WEBHOOK_EXPIRES_MS, "")
        if expires.isdigit() and int(expires) - WEBHOOK_MARGIN_MS <= int(time.time() * 1000):
            return None, "sessionWebhook expired"
        return url, ""

    async def push(self, http: aiohttp.ClientSession, push: PushRequest) -> ChannelAck:
        parts = split_text(push.text, MAX_TEXT_BYTES, utf8_len)

        async def send(index: int, part: str) -> ChannelAck:
            url, why = self._webhook(push.address)
            if url is not None:
                return await self._post_session(http, url, part, push.policy.timeout_s)
            if self.proactive:
                return await self._send_proactive(http, push.address, part, push.policy.timeout_s)
            return ChannelAck(
                mode=FailureMode.REJECTED,
                detail=f"{why}, and no app_key/robot_code for proactive sends",
            )

        return await send_parts(parts, push.skip_parts, send)

    async def _post_session(
        self, http: aiohttp.ClientSession, url: str, text: str, timeout_s: float
    ) -> ChannelAck:
        payload = {"msgtype": "text", "text": {"content": text}}
        result = await post(
            http,
            url,
            body=json.dumps(payload).encode(),
            headers={"content-type": "application/json"},
            timeout_s=timeout_s,
        )
        return result if isinstance(result, ChannelAck) else session_ack(result)

    def _api(self, path: str) -> str:
        return f"{self.settings.api_base_url.rstrip('/')}{path}"

    async def _access_token(
        self, http: aiohttp.ClientSession, timeout_s: float
    ) -> str | ChannelAck:
        """The app's access token, fetched once and reused until shortly before it expires."""
        now = time.monotonic()
        if self._token is not None and now < self._token_until:
            return self._token
        payload = {"appKey": self.settings.app_key, "appSecret": self._secret}
        result = await post(
            http,
            self._api("/v1.0/oauth2/accessToken"),
            body=json.dumps(payload).encode(),
            headers={"content-type": "application/json"},
            timeout_s=timeout_s,
        )
        if isinstance(result, ChannelAck):
            return result
        body: Any = result.json()
        token = body.get("accessToken") if isinstance(body, dict) else None
        if result.status == 200 and isinstance(token, str) and token:
            lifetime = body.get("expireIn")
            seconds = (
                float(lifetime) if isinstance(lifetime, int | float) else DEFAULT_TOKEN_LIFETIME_S
            )
            self._token = token
            self._token_until = now + max(seconds - TOKEN_MARGIN_S, seconds / 2)
            return token
        retry = parse_retry_after(result.headers.get("retry-after"))
        if result.status == 429 or result.status >= 500:
            return classify_status(result.status, retry)
        # Any other answer means the app key or secret is not accepted.
        return ChannelAck(
            mode=FailureMode.UNAUTHORIZED, detail=f"accessToken: {api_code(body, result.status)}"
        )

    async def _send_proactive(
        self, http: aiohttp.ClientSession, addr: ReplyAddress, text: str, timeout_s: float
    ) -> ChannelAck:
        token = await self._access_token(http, timeout_s)
        if isinstance(token, ChannelAck):
            return token
        payload: dict[str, Any] = {
            "robotCode": self.settings.robot_code,
            "msgKey": "sampleText",
            "msgParam": json.dumps({"content": text}, ensure_ascii=False),
        }
        # An address without a conversation type (built outside a callback) is a person.
        if addr.extra.get(CONVERSATION_TYPE) == GROUP:
            path = "/v1.0/robot/groupMessages/send"
            payload["openConversationId"] = addr.conversation_id
        else:
            path = "/v1.0/robot/oToMessages/batchSend"
            payload["userIds"] = [addr.user_id]
        result = await post(
            http,
            self._api(path),
            body=json.dumps(payload).encode(),
            headers={"content-type": "application/json", "x-acs-dingtalk-access-token": token},
            timeout_s=timeout_s,
        )
        if isinstance(result, ChannelAck):
            return result
        ack = api_ack(result)
        if ack.mode is FailureMode.UNAUTHORIZED:
            self._token = None  # revoked or rotated: the next attempt fetches a new one
        return ack


def api_code(body: Any, status: int) -> str:
    code = body.get("code") if isinstance(body, dict) else None
    return str(code)[:100] if code else str(status)


def session_ack(result: HttpResult) -> ChannelAck:
    """A sessionWebhook answers HTTP 200 with ``errcode`` in the body."""
    if result.status != 200:
        return classify_status(result.status, parse_retry_after(result.headers.get("retry-after")))
    body: Any = result.json()
    errcode = body.get("errcode") if isinstance(body, dict) else None
    if not isinstance(errcode, int):
        return ChannelAck(mode=FailureMode.TRANSIENT, detail="unreadable answer")
    if errcode == 0:
        return ChannelAck(mode=FailureMode.DELIVERED)
    if errcode == SEND_TOO_FAST:
        return ChannelAck(
            mode=FailureMode.RATE_LIMITED,
            retry_after_s=SEND_TOO_FAST_BACKOFF_S,
            detail=f"errcode {errcode}",
        )
    if errcode == SYSTEM_BUSY:
        return ChannelAck(mode=FailureMode.TRANSIENT, detail=f"errcode {errcode}")
    return ChannelAck(mode=FailureMode.REJECTED, detail=f"errcode {errcode}")


def api_ack(result: HttpResult) -> ChannelAck:
    """The v1.0 API answers errors with an HTTP status and ``{"code", "message"}``."""
    body: Any = result.json()
    retry = parse_retry_after(result.headers.get("retry-after"))
    if result.status == 200:
        if not isinstance(body, dict):
            return ChannelAck(mode=FailureMode.TRANSIENT, detail="unreadable answer")
        if body.get("flowControlledStaffIdList"):  # batchSend's per-recipient throttling
            return ChannelAck(
                mode=FailureMode.RATE_LIMITED,
                retry_after_s=SEND_TOO_FAST_BACKOFF_S,
                detail="flowControlledStaffIdList",
            )
        if body.get("invalidStaffIdList"):
            return ChannelAck(mode=FailureMode.REJECTED, detail="invalidStaffIdList")
        key = body.get("processQueryKey")
        return ChannelAck(
            mode=FailureMode.DELIVERED, platform_message_ids=[key] if isinstance(key, str) else []
        )
    code = api_code(body, result.status)
    if result.status == 429 or "QpsLimit" in code:
        return ChannelAck(
            mode=FailureMode.RATE_LIMITED,
            retry_after_s=retry if retry is not None else QPS_BACKOFF_S,
            detail=code,
        )
    return classify_status(result.status, retry).model_copy(update={"detail": code})
