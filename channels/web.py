"""The browser chat channel: identity in a signed cookie, replies pulled by the page.

A browser gets ``web:<random id>`` in an HttpOnly, SameSite=Strict cookie signed with the
signing key. Every POST must also carry a CSRF token derived from that id (the page receives
it in a meta tag), and its Origin, when present, must be the gateway's own. Nothing is pushed:
the page follows its runs over Server-Sent Events.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Self
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field

from channels.base import (
    Accepted,
    BaseChannel,
    ChannelAck,
    FailureMode,
    HttpAnswer,
    InboundHttp,
    InboundOutcome,
    Refused,
    Surface,
    json_answer,
)
from channels.inbound_body import BodyError, OwnBody, parse_body
from hosting.models import ChannelRequest, PushRequest, ReplyAddress, SubmitResult
from hosting.settings import ChannelSettings, Settings

COOKIE = "sb_web"
CSRF_HEADER = "X-CSRF-Token"
_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class WebMessage(OwnBody):
    message_id: str = Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")
    text: str = Field(min_length=1, max_length=20_000)


class WebIdentity:
    """Signs and checks the browser cookie and its CSRF token."""

    def __init__(self, signing_key: bytes) -> None:
        self._key = signing_key

    def _mac(self, purpose: str, browser_id: str) -> str:
        digest = hmac.new(self._key, f"{purpose}:{browser_id}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def new_cookie(self) -> tuple[str, str]:
        browser_id = secrets.token_urlsafe(18)
        return browser_id, f"{browser_id}.{self._mac('web-cookie', browser_id)}"

    def browser_id(self, cookies: Mapping[str, str]) -> str | None:
        value = cookies.get(COOKIE, "")
        browser_id, _, mac = value.partition(".")
        if not _ID.match(browser_id) or not mac:
            return None
        if not hmac.compare_digest(mac, self._mac("web-cookie", browser_id)):
            return None
        return browser_id

    def csrf_token(self, browser_id: str) -> str:
        return self._mac("csrf", browser_id)

    def message_key(self, browser_id: str, message_id: str) -> str:
        return self._mac("message", f"{browser_id}:{message_id}")[:32]

    def check_csrf(self, browser_id: str, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self.csrf_token(browser_id).encode())


def message_key(identity: WebIdentity, browser_id: str, message_id: str) -> str:
    """Scoped to the browser (one browser can never address another's runs) and keyed, so the
    run ID, which operators and logs see, does not carry the browser's identity."""
    return identity.message_key(browser_id, message_id)


class WebChannelSettings(ChannelSettings):
    """``[channels.web]``: the chat page has only the common options; its keys are the
    deployment's signing key."""


class WebChannel(BaseChannel):
    name = "web"
    pull = True
    surface = Surface.CHAT_PAGE

    def __init__(self, *, settings: WebChannelSettings, signing_key: bytes, origin: str) -> None:
        super().__init__(settings=settings)
        self.identity = WebIdentity(signing_key)
        self._origin = origin.rstrip("/")

    @classmethod
    def from_config(cls, section: ChannelSettings, settings: Settings) -> Self:
        """Cookies are signed with the deployment's key; writes must come from its own origin."""
        assert isinstance(section, WebChannelSettings)
        settings.require_keys()
        parts = urlsplit(settings.gateway.public_url)
        return cls(
            settings=section,
            signing_key=settings.security.signing_key_bytes(),
            origin=f"{parts.scheme}://{parts.netloc}",
        )

    def browser_from(self, cookies: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
        """The caller's browser id if cookie, CSRF token and Origin all check out."""
        browser_id = self.identity.browser_id(cookies)
        if browser_id is None:
            return None
        origin = headers.get("Origin")
        if origin is not None and origin.rstrip("/") != self._origin:
            return None
        if not self.identity.check_csrf(browser_id, headers.get(CSRF_HEADER, "")):
            return None
        return browser_id

    def authenticate(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], *, for_write: bool
    ) -> str | None:
        """The browser id from the signed cookie; a write also needs CSRF token and Origin."""
        if for_write:
            return self.browser_from(cookies, headers)
        return self.identity.browser_id(cookies)

    def dev_hints(self, gateway_url: str) -> list[str]:
        return [f"  open the chat     {gateway_url}/"]

    async def receive(self, http: InboundHttp) -> InboundOutcome:
        browser_id = self.browser_from(http.cookies, http.headers)
        if browser_id is None:
            return Refused(403, "missing or invalid session cookie or CSRF token")
        try:
            msg = parse_body(WebMessage, http.body)
        except BodyError as exc:
            return Refused(400, str(exc))
        return Accepted(
            ChannelRequest(
                tenant=http.tenant,
                channel=self.name,
                message_key=message_key(self.identity, browser_id, msg.message_id),
                user_id=browser_id,
                conversation_id=browser_id,
                is_direct=True,
                text=msg.text,
                reply_to=ReplyAddress(
                    channel=self.name, user_id=browser_id, conversation_id=browser_id
                ),
            )
        )

    def acknowledge(self, request: ChannelRequest, result: SubmitResult) -> HttpAnswer:
        status = 202 if result.accepted else 409
        body: dict[str, object] = {
            "run_id": result.run_id,
            "accepted": result.accepted,
            "token": result.continuation_token,
        }
        if result.reason:
            body["error"] = result.reason
        return json_answer(status, body)

    def refuse(self, request: ChannelRequest) -> HttpAnswer:
        return json_answer(403, {"error": "forbidden"})

    async def push(self, http: aiohttp.ClientSession, push: PushRequest) -> ChannelAck:
        # The page pulls its replies; a push here means a misrouted delivery.
        return ChannelAck(mode=FailureMode.REJECTED, detail="the web channel is pull-only")
