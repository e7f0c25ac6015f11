"""Microsoft Teams (Bot Framework Activity Protocol): activities in, Bot Connector out.

Inbound ``POST /channels/activity`` carries ``Authorization: Bearer <JWT>`` issued by the Bot
Framework: RS256 with a key from the OpenID metadata's JWKS (endorsed for the activity's
``channelId``), issuer ``https://api.botframework.com``, audience our app id, and a
``serviceurl`` claim equal to the activity's ``serviceUrl``. The body itself is not signed, so
the token binds it to a service URL only; that URL must also be on ``allowed_service_urls``
before our own outbound token is ever sent to it (again at push time, since the address is read
back from workflow state).

The message key is a hash of ``(channelId, conversation, activity id)``: activity ids are only
unique within one conversation. Teams channel threads arrive as ``…;messageid=<root>`` in the
conversation id; the root becomes the thread id, the bare channel id the conversation.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import jwt
import yarl
from pydantic import Field, SecretStr, field_validator, model_validator

from channels.activity_auth import (
    KeySet,
    KeysUnavailable,
    OutboundToken,
    SigningKey,
    post_encoded,
    service_url_allowed,
)
from channels.activity_cards import (
    CARD_ACTION,
    CODE,
    MAX_PROMPT,
    VERBS,
    answered_card,
    approval_card,
    attachment,
    invoke_card,
    invoke_message,
)
from channels.activity_package import ACCENT, app_zip
from channels.base import (
    PROGRESS_TIMEOUT_S,
    Accepted,
    Answered,
    BaseChannel,
    ChannelAck,
    FailureMode,
    HttpAnswer,
    InboundHttp,
    InboundOutcome,
    LiveReply,
    LiveReplySettings,
    ProgressState,
    Refused,
)
from channels.chunking import send_parts, split_text
from channels.http_push import HttpResult, classify_status, parse_retry_after
from channels.inbound_body import BodyError, PlatformBody, parse_body
from hosting.ids import tuple_key
from hosting.models import ChannelRequest, PushRequest, ReplyAddress, SubmitResult
from hosting.settings import ConfigError, require_secret

ISSUER = "https://api.botframework.com"
DEFAULT_METADATA_URL = "https://login.botframework.com/v1/.well-known/openidconfiguration"
TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"  # noqa: S105 (a URL)
LEEWAY_S = 300  # clock skew the Bot Framework SDKs allow
# Teams refuses activities over about 28 KB of text: 7000 characters stay under that even when
# every character takes four bytes in UTF-8.
MAX_TEXT = 7000
THREAD_MARKER = ";messageid="
INFORMATIVE = "Working on it…"  # the informative frame before the first words
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_SPACES = re.compile(r"[ \t]{2,}")  # what removing a mention from mid-sentence leaves
IGNORED = Answered(HttpAnswer(status=200))  # installs, reactions, typing: nothing to run
# ReplyAddress.extra keys: how a request came (a card press), the pressed card's prompt, and
# the conversation's type (streaming exists in personal chats only).
VIA, CARD_PROMPT, CONVERSATION_TYPE = "via", "card_prompt", "conversation_type"


# -- wire models --------------------------------------------------------------------------


class Account(PlatformBody):
    id: str = Field(min_length=1, max_length=256)
    name: str | None = Field(default=None, max_length=256)
    aadObjectId: str | None = Field(default=None, max_length=64)


class Conversation(PlatformBody):
    id: str = Field(min_length=1, max_length=512)
    conversationType: str | None = Field(default=None, max_length=32)
    isGroup: bool | None = None
    tenantId: str | None = Field(default=None, max_length=64)


class Entity(PlatformBody):
    type: str = Field(max_length=64)
    mentioned: Account | None = None
    text: str | None = Field(default=None, max_length=1024)


class TenantInfo(PlatformBody):
    id: str | None = Field(default=None, max_length=64)


class ChannelData(PlatformBody):
    tenant: TenantInfo | None = None


class CardAction(PlatformBody):
    """``value.action`` of an ``adaptiveCard/action`` invoke: the pressed Action.Execute."""

    type: str = Field(max_length=64)
    verb: str | None = Field(default=None, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)


class CardInvokeValue(PlatformBody):
    action: CardAction


class Activity(PlatformBody):
    type: str = Field(max_length=64)
    id: str | None = Field(default=None, max_length=256)
    name: str | None = Field(default=None, max_length=128)  # an invoke's
    value: Any = None
    serviceUrl: str | None = Field(default=None, max_length=512)
    channelId: str | None = Field(default=None, max_length=64)
    from_: Account | None = Field(default=None, alias="from")
    recipient: Account | None = None
    conversation: Conversation | None = None
    text: str | None = Field(default=None, max_length=100_000)
    replyToId: str | None = Field(default=None, max_length=256)
    entities: list[Entity] = Field(default_factory=list, max_length=100)
    channelData: ChannelData | None = None


# -- settings -----------------------------------------------------------------------------


def _check_prefix(prefix: str) -> str:
    """A service URL prefix: https (http only on loopback, for local tests), ending in ``/``
    so that ``https://host/teams`` cannot also admit ``https://host/teamsevil``."""
    parts = urlsplit(prefix)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{prefix!r} is not an http(s) URL")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise ValueError(f"{prefix!r}: plain http is only allowed on loopback")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError(f"{prefix!r} must not carry credentials, a query or a fragment")
    return prefix if prefix.endswith("/") else prefix + "/"


class ActivityChannelSettings(LiveReplySettings):
    """``[channels.activity]``: the Azure Bot's app registration and where Teams may send us."""

    app_id: str = ""
    app_password: SecretStr = SecretStr("")
    tenant_id: str | None = Field(default=None, description="single-tenant bots: the tenant id")
    openid_metadata_url: str = DEFAULT_METADATA_URL
    token_url: str = ""  # default: the botframework.com (or tenant's) client-credentials endpoint
    allowed_service_urls: list[str] = Field(
        default_factory=lambda: ["https://smba.trafficmanager.net/"],
        description="serviceUrl prefixes our bearer token may be sent to",
    )
    service_url: str = Field(
        default="https://smba.trafficmanager.net/teams/",
        description="where proactive messages go when an address carries no serviceUrl",
    )
    bot_name: str = Field(default="Switchboard", min_length=1, max_length=30)
    bot_description: str = Field(default="An AI agent hosted by Switchboard.", max_length=80)
    developer_name: str = "Switchboard"
    website_url: str | None = None  # manifest links; default: the gateway's public URL
    privacy_url: str | None = None
    terms_url: str | None = None
    app_version: str = Field(default="1.0.0", pattern=r"^\d+\.\d+\.\d+$")
    stream_replies: bool = Field(
        default=True, description="stream replies in personal chats while the agent writes"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_token_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("token_url"):
            tenant = data.get("tenant_id") or "botframework.com"
            data = {**data, "token_url": TOKEN_URL.format(tenant=tenant)}
        return data

    @field_validator("allowed_service_urls")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        return [_check_prefix(p) for p in value]

    @field_validator("service_url")
    @classmethod
    def _service_url(cls, value: str) -> str:
        return _check_prefix(value)

    @field_validator("openid_metadata_url", "token_url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        # The client secret goes to token_url, and the keys we trust come from the metadata.
        _check_prefix(value)
        return value


MANIFEST_VERSION = "1.22"


# -- the channel --------------------------------------------------------------------------


def message_key(channel_id: str, conversation_id: str, activity_id: str) -> str:
    """Activity ids are unique per conversation only; the digest also keeps arbitrary platform
    ids out of workflow ids."""
    return tuple_key(channel_id, conversation_id, activity_id)


class ActivityChannel(BaseChannel):
    name = "activity"
    verified_claims = frozenset({"tid", "aadObjectId"})  # from the verified activity
    progress_renew_s = 3.0  # clients show "typing…" for a few seconds only

    def __init__(
        self, *, settings: ActivityChannelSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(settings=settings)
        self.settings: ActivityChannelSettings = settings
        if not settings.app_id:
            raise ConfigError("channels.activity.app_id: missing (the Azure Bot's app id)")
        require_secret(
            settings.app_password, "channels.activity.app_password", "the app's client secret"
        )
        self._keys = KeySet(settings.openid_metadata_url, clock)
        self._token = OutboundToken(settings, clock)
        self.progress_every_s = settings.progress_every_s

    # -- inbound ---------------------------------------------------------------------------

    async def _verify(self, http: InboundHttp) -> tuple[dict[str, Any], SigningKey] | Refused:
        """The verified token's claims and the key that signed it, or the refusal."""
        scheme, _, token = http.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return Refused(401, "missing bearer token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return Refused(401, "invalid token")
        kid = header.get("kid")
        if header.get("alg") != "RS256" or not isinstance(kid, str) or not kid:
            return Refused(401, "invalid token")
        try:
            key = await self._keys.get(kid)
        except KeysUnavailable:
            return Refused(503, "signing keys unavailable, try again")
        if key is None:
            return Refused(401, "invalid token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self.settings.app_id,
                issuer=ISSUER,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError:
            return Refused(401, "invalid token")
        return claims, key

    async def receive(self, http: InboundHttp) -> InboundOutcome:
        verified = await self._verify(http)
        if isinstance(verified, Refused):
            return verified
        claims, key = verified
        try:
            activity = parse_body(Activity, http.body)
        except BodyError as exc:
            return Refused(400, str(exc))
        if (
            activity.serviceUrl is None
            or claims.get("serviceurl") != activity.serviceUrl
            or activity.channelId not in key.endorsements
        ):
            return Refused(401, "token does not match the activity")
        if not service_url_allowed(activity.serviceUrl, self.settings.allowed_service_urls):
            return Refused(403, "serviceUrl is not allowed")
        if activity.type == "invoke" and activity.name == CARD_ACTION:
            return self._press(http, activity)
        if activity.type != "message":
            return IGNORED  # conversationUpdate (installs), reactions, typing, other invokes
        return self._message(http, activity)

    def _addressed(self, activity: Activity, text: str) -> tuple[bool, str]:
        """Whether a group message mentions us, and its text without our ``<at>`` mention."""
        bot = activity.recipient.id if activity.recipient else None
        mentioned = False
        for entity in activity.entities:
            if entity.type == "mention" and entity.mentioned and entity.mentioned.id == bot:
                mentioned = True
                if entity.text:
                    text = text.replace(entity.text, " ")
        return mentioned, _SPACES.sub(" ", text).strip()

    def _message(self, http: InboundHttp, activity: Activity) -> InboundOutcome:
        sender, conversation = activity.from_, activity.conversation
        if (
            sender is None
            or conversation is None
            or activity.id is None
            or not activity.text
            or (activity.recipient is not None and sender.id == activity.recipient.id)
        ):
            return IGNORED  # attachments only, or nothing we can answer
        direct = _is_direct(conversation)
        mentioned, text = self._addressed(activity, activity.text)
        if not direct and not mentioned and self.settings.accept_in_group != "all":
            return IGNORED
        if not text:
            return IGNORED  # a bare mention
        request = self._request(http, activity, text, reply_to=activity.id)
        return IGNORED if request is None else Accepted(request)

    def _press(self, http: InboundHttp, activity: Activity) -> InboundOutcome:
        """An Approve/Deny press (``Action.Execute``): the presser's ``/approve CODE`` (or
        ``/deny CODE``), answered in the conversation of the card. The invoke's id is the
        message key, so a redelivered invoke is one run; anyone may press, the approval decides
        who counts (groups need no mention for it)."""
        try:
            action = CardInvokeValue.model_validate(activity.value).action
        except ValueError:
            return Refused(400, "adaptiveCard/action invoke has no readable value.action")
        code, prompt = action.data.get("code"), action.data.get("prompt")
        if (
            action.type != "Action.Execute"
            or action.verb not in VERBS
            or not isinstance(code, str)
            or not CODE.match(code)
        ):
            return Answered(invoke_message("This button is no longer in use."))
        extra = {VIA: CARD_ACTION}
        if isinstance(prompt, str) and prompt:
            extra[CARD_PROMPT] = prompt[:MAX_PROMPT]
        # Replies go under the card (its activity id), or into the conversation.
        request = self._request(
            http, activity, f"/{action.verb} {code}", reply_to=activity.replyToId, more=extra
        )
        if request is None:
            return Refused(400, "invoke has no sender or conversation")
        return Accepted(request)

    def _request(
        self,
        http: InboundHttp,
        activity: Activity,
        text: str,
        *,
        reply_to: str | None,
        more: dict[str, str] | None = None,
    ) -> ChannelRequest | None:
        """The message ``text`` from the activity's sender, in its conversation and thread."""
        sender, conversation = activity.from_, activity.conversation
        if (
            sender is None
            or conversation is None
            or activity.id is None
            or activity.serviceUrl is None
            or activity.channelId is None
        ):
            return None
        base, marker, root = conversation.id.partition(THREAD_MARKER)
        thread = root if marker and root else activity.replyToId
        tenant = (
            activity.channelData.tenant.id
            if activity.channelData and activity.channelData.tenant
            else None
        ) or conversation.tenantId
        claims = {
            name: value
            for name, value in (("tid", tenant), ("aadObjectId", sender.aadObjectId))
            if value
        }
        extra = {
            "service_url": activity.serviceUrl,
            "channel_id": activity.channelId,
            "conversation": conversation.id,
        }
        if conversation.conversationType:
            extra[CONVERSATION_TYPE] = conversation.conversationType
        if activity.recipient is not None:
            extra["bot_id"] = activity.recipient.id
            if activity.recipient.name:
                extra["bot_name"] = activity.recipient.name
        if tenant:
            extra["tenant_id"] = tenant
        extra |= more or {}
        return ChannelRequest(
            tenant=http.tenant,
            channel=self.name,
            message_key=message_key(activity.channelId, base, activity.id),
            user_id=sender.id,
            conversation_id=base,
            thread_id=thread,
            is_direct=_is_direct(conversation),
            text=text,
            claims=claims,
            reply_to=ReplyAddress(
                channel=self.name,
                user_id=sender.id,
                conversation_id=base,
                thread_id=thread,
                reply_to_message_id=reply_to,
                extra=extra,
            ),
        )

    def acknowledge(self, request: ChannelRequest, result: SubmitResult) -> HttpAnswer:
        if request.reply_to.extra.get(VIA) != CARD_ACTION:
            return super().acknowledge(request, result)
        if not result.accepted:
            return invoke_message("Busy with your previous message; try again in a moment.")
        # The press is durable now: the card loses its buttons, for everyone in the chat.
        prompt = request.reply_to.extra.get(CARD_PROMPT, "")
        return invoke_card(answered_card(prompt, request.text))

    def refuse(self, request: ChannelRequest) -> HttpAnswer:
        if request.reply_to.extra.get(VIA) != CARD_ACTION:
            return super().refuse(request)
        return invoke_message("You are not allowed to use this bot.")

    def too_many(self, request: ChannelRequest, retry_after_s: float) -> HttpAnswer:
        if request.reply_to.extra.get(VIA) != CARD_ACTION:
            return super().too_many(request, retry_after_s)
        # An invoke is not redelivered: say so at once (the card keeps its buttons).
        return invoke_message(f"Too many messages; try again in {max(1, round(retry_after_s))} s.")

    # -- push ------------------------------------------------------------------------------

    def _ack(self, result: HttpResult) -> ChannelAck:
        if result.status == 412:  # Teams: precondition failed under load; retry later
            return ChannelAck(mode=FailureMode.TRANSIENT, detail="412")
        ack = classify_status(result.status, parse_retry_after(result.headers.get("retry-after")))
        if not ack.ok:
            return ack
        body: Any = result.json()
        sent = str(body.get("id", "")) if isinstance(body, dict) else ""
        return ChannelAck(mode=FailureMode.DELIVERED, platform_message_ids=[sent] if sent else [])

    def _payload(
        self, addr: ReplyAddress, conversation: str, text: str | None, kind: str = "message"
    ) -> dict[str, Any]:
        extra = addr.extra
        payload: dict[str, Any] = {
            "type": kind,
            "conversation": {"id": conversation},
            "recipient": {"id": addr.user_id},
        }
        if text is not None:
            payload["text"] = text
        if "bot_id" in extra:
            payload["from"] = {"id": extra["bot_id"], "name": extra.get("bot_name", "")}
        if addr.reply_to_message_id:
            payload["replyToId"] = addr.reply_to_message_id
        if text is not None and extra.get("channel_id", "msteams") == "msteams":
            payload["textFormat"] = "markdown"
        return payload

    def _target(self, addr: ReplyAddress) -> tuple[yarl.URL, str] | None:
        """The connector URL for activities to ``addr`` and its conversation id; None when its
        serviceUrl is not allowed (checked before any token exists: the address is read back
        from workflow state)."""
        service_url = addr.extra.get("service_url") or self.settings.service_url
        if not service_url_allowed(service_url, self.settings.allowed_service_urls):
            return None
        conversation = addr.extra.get("conversation") or (
            f"{addr.conversation_id}{THREAD_MARKER}{addr.thread_id}"
            if addr.thread_id
            else addr.conversation_id
        )
        url = yarl.URL(
            f"{service_url.rstrip('/')}/v3/conversations/{quote(conversation, safe='')}/activities",
            encoded=True,
        )
        if addr.reply_to_message_id:
            url = yarl.URL(f"{url}/{quote(addr.reply_to_message_id, safe='')}", encoded=True)
        return url, conversation

    async def _post(
        self, http: aiohttp.ClientSession, url: yarl.URL, payload: dict[str, Any], timeout_s: float
    ) -> HttpResult | ChannelAck:
        """One activity to the connector with our bearer token (dropped when refused)."""
        token = await self._token.bearer(http, timeout_s)
        if isinstance(token, ChannelAck):
            return token
        result = await post_encoded(
            http,
            url,
            body=json.dumps(payload).encode(),
            headers={
                "authorization": f"Bearer {token}",
                "content-type": "application/json; charset=utf-8",
            },
            timeout_s=timeout_s,
        )
        refused = isinstance(result, HttpResult) and result.status in (401, 403)
        if refused and isinstance(result, HttpResult) and not _stream_error(result):
            self._token.drop()  # revoked or rotated secret: fetch a fresh one next time
        return result

    async def push(self, http: aiohttp.ClientSession, push: PushRequest) -> ChannelAck:
        addr = push.address
        target = self._target(addr)
        if target is None:
            return ChannelAck(mode=FailureMode.REJECTED, detail="serviceUrl not allowed")
        url, conversation = target
        parts = split_text(push.text, MAX_TEXT)
        card = approval_card(push.text) if push.phase == "approval" else None

        async def send(index: int, part: str) -> ChannelAck:
            payload = self._payload(addr, conversation, part)
            if card is not None and index == len(parts) - 1:
                # The card shows the prompt with its buttons; a text beside it would repeat it.
                payload.pop("text")
                payload.pop("textFormat", None)  # set for Teams only
                payload["attachments"] = [attachment(card)]
            if push.live_message and index == 0:
                # The reply was streamed: the final message ends that stream, with all the text.
                streamed = {**payload, "entities": [final_stream(push.live_message)]}
                result = await self._post(http, url, streamed, push.policy.timeout_s)
                if isinstance(result, ChannelAck) or not _stream_error(result):
                    return result if isinstance(result, ChannelAck) else self._ack(result)
                # The stream is gone (cancelled by the person, timed out): a plain message.
            result = await self._post(http, url, payload, push.policy.timeout_s)
            return result if isinstance(result, ChannelAck) else self._ack(result)

        return await send_parts(parts, push.skip_parts, send)

    # -- progress --------------------------------------------------------------------------

    def streams_text(self, address: ReplyAddress) -> bool:
        # Teams streams replies in personal (1:1) chats only; elsewhere a typing indicator.
        return self.settings.stream_replies and address.extra.get(CONVERSATION_TYPE) == "personal"

    async def progress(
        self,
        http: aiohttp.ClientSession,
        address: ReplyAddress,
        text_so_far: str | None,
        state: ProgressState,
        live: LiveReply,
    ) -> bool:
        """A ``typing`` activity while the agent works; in personal chats a stream: first an
        informative frame, then the text so far, each with a ``streaminfo`` entity whose
        ``streamId`` is the first frame's id. The final push ends the stream; no text here is
        the reply."""
        if state is ProgressState.DONE:
            return True
        target = self._target(address)
        if target is None:
            return False
        url, conversation = target
        payload = self._payload(address, conversation, None, kind="typing")
        if self.streams_text(address):
            if text_so_far is not None and (
                len(text_so_far) > MAX_TEXT or text_so_far == live.shown
            ):
                return True  # the final message carries what does not fit; nothing new
            kind = "streaming" if text_so_far else "informative"
            payload["text"] = text_so_far or INFORMATIVE
            payload["entities"] = [stream_frame(kind, live.frames + 1, live.message)]
        result = await self._post(http, url, payload, PROGRESS_TIMEOUT_S)
        if isinstance(result, ChannelAck) or not 200 <= result.status < 300:
            return False
        if "entities" in payload:
            live.frames += 1
            live.shown = text_so_far or ""
            if live.message is None:
                body: Any = result.json()
                sent = body.get("id") if isinstance(body, dict) else None
                live.message = str(sent) if sent else None
        return True

    # -- app package -----------------------------------------------------------------------

    def manifest(self, gateway_url: str) -> dict[str, Any]:
        """The Teams app manifest: one bot (our app id) in personal, team and group chats."""
        s = self.settings
        host = urlsplit(gateway_url).hostname or "localhost"
        return {
            "$schema": "https://developer.microsoft.com/json-schemas/teams/"
            f"v{MANIFEST_VERSION}/MicrosoftTeams.schema.json",
            "manifestVersion": MANIFEST_VERSION,
            "version": s.app_version,
            "id": s.app_id if _is_guid(s.app_id) else str(uuid.uuid5(uuid.NAMESPACE_URL, s.app_id)),
            "developer": {
                "name": s.developer_name,
                "websiteUrl": s.website_url or gateway_url,
                "privacyUrl": s.privacy_url or gateway_url,
                "termsOfUseUrl": s.terms_url or gateway_url,
            },
            "name": {"short": s.bot_name, "full": s.bot_name},
            "description": {"short": s.bot_description, "full": s.bot_description},
            "icons": {"color": "color.png", "outline": "outline.png"},
            "accentColor": "#{:02X}{:02X}{:02X}".format(*ACCENT),
            "bots": [
                {
                    "botId": s.app_id,
                    "scopes": ["personal", "team", "groupChat"],
                    "supportsFiles": False,
                    "isNotificationOnly": False,
                }
            ],
            "permissions": ["identity", "messageTeamMembers"],
            "validDomains": [host],
        }

    def app_package(self, gateway_url: str) -> bytes:
        """``switchboard channels package activity``: the zip to upload to Teams."""
        return app_zip(json.dumps(self.manifest(gateway_url), indent=2))

    async def check_credentials(
        self, http: aiohttp.ClientSession, url: str, timeout_s: float
    ) -> tuple[bool, str, list[str]]:
        """A client-credentials token fetch (app id and secret work) and a read of the OpenID
        metadata inbound tokens are checked against. The messaging endpoint is Azure
        configuration these credentials cannot read, so ``url`` is not checked."""
        self._token.drop()  # prove the secret now, not with a token cached earlier
        token = await self._token.bearer(http, timeout_s)
        if isinstance(token, ChannelAck):
            return False, f"token endpoint: {token.mode.value} ({token.detail or 'no detail'})", []
        warnings: list[str] = []
        try:
            async with http.get(
                self.settings.openid_metadata_url, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                metadata: Any = await resp.json(content_type=None) if resp.ok else None
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            metadata = None
            warnings.append(f"OpenID metadata unreachable ({type(exc).__name__})")
        if not warnings and not (isinstance(metadata, dict) and metadata.get("jwks_uri")):
            warnings.append("OpenID metadata has no jwks_uri: inbound activities would get 503")
        return True, f"token issued by {urlsplit(self.settings.token_url).netloc}", warnings


def stream_frame(kind: str, sequence: int, stream_id: str | None) -> dict[str, Any]:
    """The ``streaminfo`` entity of one typing frame (the first has no stream id yet)."""
    entity: dict[str, Any] = {"type": "streaminfo", "streamType": kind, "streamSequence": sequence}
    if stream_id:
        entity["streamId"] = stream_id
    return entity


def final_stream(stream_id: str) -> dict[str, Any]:
    return {"type": "streaminfo", "streamId": stream_id, "streamType": "final"}


def _stream_error(result: HttpResult) -> bool:
    """The connector refused a stream frame, not us (``ContentStreamNotAllowed``, a stream
    the person stopped, one that ran out of time): the plain message still goes."""
    body: Any = result.json()
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return 400 <= result.status < 500 and isinstance(code, str) and code.startswith("ContentStream")


def _is_direct(conversation: Conversation) -> bool:
    if conversation.conversationType:
        return conversation.conversationType == "personal"
    return not conversation.isGroup


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
