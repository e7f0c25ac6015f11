"""Telegram Bot API: webhook in, ``sendMessage`` out (``sendChatAction`` typing and, in
private chats, ``sendMessageDraft`` drafts while the agent works).

Inbound ``POST /channels/telegram`` carries the secret set with ``setWebhook`` in
``X-Telegram-Bot-Api-Secret-Token`` (the body itself is not signed); ``update_id`` is the
message key, so Telegram's redeliveries are one run. In groups the bot answers only when
addressed (``accept_in_group``), and forum topics keep their ``message_thread_id``.

An approval prompt (``phase == "approval"``) carries an inline keyboard, Approve and Deny, whose
``callback_data`` is ``approve:CODE`` / ``deny:CODE``; a press arrives as a ``callback_query``
update (same secret token) and becomes the presser's ``/approve CODE`` message, its key the
callback query's id. The webhook's answer is ``answerCallbackQuery``, which ends the spinner.
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

import aiohttp
from pydantic import Field, SecretStr

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
    answers_request,
)
from channels.chunking import send_parts, split_text, utf16_len
from channels.http_push import HttpResult, classify_status, post
from channels.inbound_body import BodyError, PlatformBody, parse_body
from hosting.models import ChannelRequest, PushRequest, ReplyAddress, SubmitResult
from hosting.settings import require_secret

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)
MAX_TEXT = 4096
IGNORED = Answered(HttpAnswer(status=200))  # a 2xx, or Telegram redelivers what we will not use
# The approval prompt's instruction (workflows/agent_loop.py), and what its buttons carry.
APPROVAL_CODE = re.compile(r"/approve\s+([A-Za-z0-9]{4,16})\s+or\s+/deny\s+\1\b")
BUTTON_DATA = re.compile(r"^(approve|deny):([A-Za-z0-9]{4,16})$")  # callback_data, <= 64 bytes
SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what goes into a message key
CALLBACK_QUERY_ID = "callback_query_id"  # ReplyAddress.extra key of a button press


class TgUser(PlatformBody):
    id: int
    is_bot: bool = False
    username: str | None = None


class TgChat(PlatformBody):
    id: int
    type: str


class TgEntity(PlatformBody):
    type: str
    offset: int = Field(ge=0)
    length: int = Field(ge=0)


class TgReplied(PlatformBody):
    from_: TgUser | None = Field(default=None, alias="from")


class TgMessage(PlatformBody):
    message_id: int
    from_: TgUser | None = Field(default=None, alias="from")
    chat: TgChat
    message_thread_id: int | None = None
    is_topic_message: bool | None = None
    text: str | None = Field(default=None, max_length=20_000)
    entities: list[TgEntity] = Field(default_factory=list)
    reply_to_message: TgReplied | None = None


class TgCallbackQuery(PlatformBody):
    """A press of an inline keyboard button; ``message`` is the message that carried it."""

    id: str = Field(min_length=1, max_length=64)
    from_: TgUser = Field(alias="from")
    message: TgMessage | None = None
    data: str | None = Field(default=None, max_length=64)


class TgUpdate(PlatformBody):
    update_id: int
    message: TgMessage | None = None
    callback_query: TgCallbackQuery | None = None


def approval_keyboard(text: str) -> dict[str, Any] | None:
    """Approve/Deny inline buttons for an approval prompt, or None if it names no code."""
    match = APPROVAL_CODE.search(text)
    if match is None:
        return None
    code = match.group(1)
    return {
        "inline_keyboard": [
            [
                {"text": "Approve", "callback_data": f"approve:{code}"},
                {"text": "Deny", "callback_data": f"deny:{code}"},
            ]
        ]
    }


def answer_callback(query_id: str, text: str | None = None) -> HttpAnswer:
    """``answerCallbackQuery`` in the webhook's answer: it stops the button's spinner without
    a call of our own (best effort: Telegram never says whether it worked)."""
    body: dict[str, Any] = {"method": "answerCallbackQuery", "callback_query_id": query_id}
    if text:
        body["text"] = text
    return HttpAnswer(status=200, body=json.dumps(body).encode())


def _entity_text(text: str, entity: TgEntity) -> str:
    """Entity offsets count UTF-16 code units, not Python characters."""
    units = text.encode("utf-16-le")
    return units[2 * entity.offset : 2 * (entity.offset + entity.length)].decode(
        "utf-16-le", errors="replace"
    )


class TelegramChannelSettings(LiveReplySettings):
    """``[channels.telegram]``: the bot's token, the webhook secret token, its @username."""

    bot_token: SecretStr = SecretStr("")
    secret_token: SecretStr = SecretStr("")
    bot_username: str = ""
    api_base_url: str = "https://api.telegram.org"


def _is_private(address: ReplyAddress) -> bool:
    """Private chats have the user's (positive) id; groups and channels negative ones."""
    return address.conversation_id.isdigit()


def _draft_id(address: ReplyAddress) -> int:
    """One non-zero id per reply, so its frames animate: the message being answered."""
    raw = address.reply_to_message_id or ""
    return (int(raw) % 2_147_483_647 or 1) if raw.isdigit() else 1


class TelegramChannel(BaseChannel):
    name = "telegram"
    progress_renew_s = 4.0  # "typing…" shows for about 5 s, a draft for about 30 s

    def __init__(self, *, settings: TelegramChannelSettings) -> None:
        super().__init__(settings=settings)
        self.settings: TelegramChannelSettings = settings
        require_secret(settings.bot_token, "channels.telegram.bot_token")
        self._secret = require_secret(
            settings.secret_token, "channels.telegram.secret_token", "the setWebhook secret"
        ).encode()
        self._bot = settings.bot_username.lstrip("@").lower()
        self.progress_every_s = settings.progress_every_s

    def api_url(self, method: str) -> str:
        base = self.settings.api_base_url.rstrip("/")
        return f"{base}/bot{self.settings.bot_token.get_secret_value()}/{method}"

    # -- inbound ---------------------------------------------------------------------------

    def _addressed(self, msg: TgMessage, text: str) -> tuple[bool, str]:
        """Whether a group message is for us, and its text without our @name."""
        mode = self.settings.accept_in_group
        command = next((e for e in msg.entities if e.type == "bot_command" and e.offset == 0), None)
        is_command = False
        if command is not None:
            word = _entity_text(text, command)
            _, _, target = word.partition("@")
            is_command = not target or target.lower() == self._bot
            if target and target.lower() == self._bot:
                text = text.replace(word, word.split("@", 1)[0], 1)
        mentioned = any(
            e.type == "mention" and _entity_text(text, e).lstrip("@").lower() == self._bot
            for e in msg.entities
        )
        if mentioned and self._bot:
            text = " ".join(w for w in text.split(" ") if w.lower() != f"@{self._bot}").strip()
        replied = msg.reply_to_message
        to_us = bool(
            replied and replied.from_ and (replied.from_.username or "").lower() == self._bot
        )
        if mode == "all":
            return True, text
        if mode == "commands_only":
            return is_command, text
        return is_command or (mentioned and bool(self._bot)) or to_us, text

    async def receive(self, http: InboundHttp) -> InboundOutcome:
        presented = http.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(presented, self._secret):
            return Refused(401, "invalid secret token")
        try:
            update = parse_body(TgUpdate, http.body)
        except BodyError as exc:
            return Refused(400, str(exc))
        if update.callback_query is not None:
            return self._button(http, update.callback_query)
        msg = update.message
        if msg is None or msg.text is None or msg.from_ is None or msg.from_.is_bot:
            return IGNORED  # edits, joins, photos, other bots: nothing for the agent
        direct = msg.chat.type == "private"
        text = msg.text
        if not direct:
            addressed, text = self._addressed(msg, text)
            if not addressed:
                return IGNORED
        thread = str(msg.message_thread_id) if msg.message_thread_id is not None else None
        return Accepted(
            ChannelRequest(
                tenant=http.tenant,
                channel=self.name,
                message_key=str(update.update_id),
                user_id=str(msg.from_.id),
                conversation_id=str(msg.chat.id),
                thread_id=thread,
                is_direct=direct,
                text=text,
                reply_to=ReplyAddress(
                    channel=self.name,
                    user_id=str(msg.from_.id),
                    conversation_id=str(msg.chat.id),
                    thread_id=thread,
                    reply_to_message_id=str(msg.message_id),
                ),
            )
        )

    def _button(self, http: InboundHttp, query: TgCallbackQuery) -> InboundOutcome:
        """An Approve/Deny press: the presser's ``/approve CODE`` (or ``/deny CODE``) in the
        chat of the message that carried the button. Its key is the callback query's id, so a
        redelivered update is one run; anyone may press, the approval decides who counts."""
        wanted = BUTTON_DATA.match(query.data or "")
        msg = query.message
        if wanted is None or msg is None or query.from_.is_bot or not SAFE_ID.match(query.id):
            return Answered(answer_callback(query.id))  # not ours, or no chat to answer in
        action, code = wanted.groups()
        thread = str(msg.message_thread_id) if msg.message_thread_id is not None else None
        user = str(query.from_.id)
        return Accepted(
            ChannelRequest(
                tenant=http.tenant,
                channel=self.name,
                message_key=f"cb-{query.id}",
                user_id=user,
                conversation_id=str(msg.chat.id),
                thread_id=thread,
                is_direct=msg.chat.type == "private",
                text=f"/{action} {code}",
                reply_to=ReplyAddress(
                    channel=self.name,
                    user_id=user,
                    conversation_id=str(msg.chat.id),
                    thread_id=thread,
                    reply_to_message_id=str(msg.message_id),
                    extra={CALLBACK_QUERY_ID: query.id},
                ),
            )
        )

    def acknowledge(self, request: ChannelRequest, result: SubmitResult) -> HttpAnswer:
        query_id = request.reply_to.extra.get(CALLBACK_QUERY_ID)
        if query_id is None:
            return super().acknowledge(request, result)
        busy = None if result.accepted else "Busy with your previous message; try again."
        return answer_callback(query_id, busy)

    def refuse(self, request: ChannelRequest) -> HttpAnswer:
        query_id = request.reply_to.extra.get(CALLBACK_QUERY_ID)
        if query_id is None:
            return super().refuse(request)
        return answer_callback(query_id, "You are not allowed to use this bot.")

    # -- push ------------------------------------------------------------------------------

    def _ack(self, result: HttpResult) -> ChannelAck:
        body: Any = result.json() or {}
        if result.status == 200 and isinstance(body, dict) and body.get("ok"):
            message_id = str((body.get("result") or {}).get("message_id", ""))
            return ChannelAck(mode=FailureMode.DELIVERED, platform_message_ids=[message_id])
        params = body.get("parameters") if isinstance(body, dict) else None
        if result.status == 429:
            retry = (params or {}).get("retry_after")
            return ChannelAck(
                mode=FailureMode.RATE_LIMITED,
                retry_after_s=float(retry) if isinstance(retry, int | float) else None,
                detail="429",
            )
        if result.status in (401, 404):  # Telegram answers both for a bad bot token
            return ChannelAck(mode=FailureMode.UNAUTHORIZED, detail=str(result.status))
        if result.status == 403:  # blocked by the user, kicked from the group: final
            return ChannelAck(mode=FailureMode.REJECTED, detail="403")
        return classify_status(result.status)

    async def _clear_buttons(self, http: aiohttp.ClientSession, push: PushRequest) -> None:
        """Before answering a press (its callback query is answered already, in the webhook's
        answer), the message that carried the buttons loses them: an empty inline keyboard.
        Best effort: a failure (or "message is not modified", on a retry) costs nothing."""
        addr = push.address
        query_id = addr.extra.get(CALLBACK_QUERY_ID)
        if (
            query_id is None
            or not answers_request(push, f"cb-{query_id}")
            or not (addr.reply_to_message_id or "").isdigit()
        ):
            return
        payload = {
            "chat_id": addr.conversation_id,
            "message_id": int(addr.reply_to_message_id or 0),
            "reply_markup": {"inline_keyboard": []},
        }
        await post(
            http,
            self.api_url("editMessageReplyMarkup"),
            body=json.dumps(payload).encode(),
            headers={"content-type": "application/json"},
            timeout_s=PROGRESS_TIMEOUT_S,
        )

    async def push(self, http: aiohttp.ClientSession, push: PushRequest) -> ChannelAck:
        addr = push.address
        if push.skip_parts == 0:
            await self._clear_buttons(http, push)
        parts = split_text(push.text, MAX_TEXT, utf16_len)
        keyboard = approval_keyboard(push.text) if push.phase == "approval" else None

        async def send(index: int, part: str) -> ChannelAck:
            payload: dict[str, Any] = {"chat_id": addr.conversation_id, "text": part}
            if keyboard is not None and index == len(parts) - 1:
                payload["reply_markup"] = keyboard  # under the part that says how to answer
            if addr.thread_id:
                payload["message_thread_id"] = int(addr.thread_id)
            if addr.reply_to_message_id and index == 0:
                payload["reply_parameters"] = {
                    "message_id": int(addr.reply_to_message_id),
                    "allow_sending_without_reply": True,
                }
            result = await post(
                http,
                self.api_url("sendMessage"),
                body=json.dumps(payload).encode(),
                headers={"content-type": "application/json"},
                timeout_s=push.policy.timeout_s,
            )
            return result if isinstance(result, ChannelAck) else self._ack(result)

        return await send_parts(parts, push.skip_parts, send)

    # -- progress --------------------------------------------------------------------------

    def streams_text(self, address: ReplyAddress) -> bool:
        return _is_private(address)  # drafts exist in private chats only

    async def progress(
        self,
        http: aiohttp.ClientSession,
        address: ReplyAddress,
        text_so_far: str | None,
        state: ProgressState,
        live: LiveReply,
    ) -> bool:
        """Typing while the agent works; in private chats a draft of the part being written
        (the same ``draft_id`` for the whole reply). The draft is an ephemeral preview: the
        reply itself is still the ``sendMessage`` push, which replaces it."""
        if state is ProgressState.DONE:
            return True  # typing stops with the reply, and the draft gives way to it
        payload: dict[str, Any] = {"chat_id": address.conversation_id}
        if address.thread_id and address.thread_id.isdigit():
            payload["message_thread_id"] = int(address.thread_id)
        if text_so_far and _is_private(address):
            method = "sendMessageDraft"
            payload["draft_id"] = _draft_id(address)
            payload["text"] = split_text(text_so_far, MAX_TEXT, utf16_len)[-1]
        else:
            method, payload["action"] = "sendChatAction", "typing"
        result = await post(
            http,
            self.api_url(method),
            body=json.dumps(payload).encode(),
            headers={"content-type": "application/json"},
            timeout_s=PROGRESS_TIMEOUT_S,
        )
        if isinstance(result, ChannelAck):
            return False
        body: Any = result.json()
        return result.status == 200 and isinstance(body, dict) and body.get("ok") is True

    async def register(self, http: aiohttp.ClientSession, url: str) -> tuple[bool, str]:
        """``setWebhook``: the Bot API then POSTs updates to ``url`` with our secret token."""
        answer = await self.set_webhook(http, url)
        ok = answer.get("ok") is True
        return ok, "ok" if ok else str(answer.get("description", "failed"))

    async def set_webhook(self, http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
        """Register ``url`` with our secret. Stopping the gateway never deletes it."""
        payload = {
            "url": url,
            "secret_token": self.settings.secret_token.get_secret_value(),
            "allowed_updates": ["message", "callback_query"],  # callback_query: buttons
        }
        async with http.post(self.api_url("setWebhook"), json=payload) as resp:
            answer: dict[str, Any] = await resp.json(content_type=None)
            return answer

    async def check_credentials(
        self, http: aiohttp.ClientSession, url: str, timeout_s: float
    ) -> tuple[bool, str, list[str]]:
        """``getMe`` (the token works, the username matches) and ``getWebhookInfo`` (the
        webhook points at ``url`` and Telegram reports no delivery error). Read-only."""

        async def call(method: str) -> tuple[int, dict[str, Any]]:
            # The token is in the URL: only the status and Telegram's own words come back.
            async with http.get(
                self.api_url(method), timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                body: Any = await resp.json(content_type=None)
                return resp.status, body if isinstance(body, dict) else {}

        try:
            status, me = await call("getMe")
            if not me.get("ok"):
                return False, f"getMe: {status} {str(me.get('description', ''))[:120]}", []
            status, hook = await call("getWebhookInfo")
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            return False, f"unreachable ({type(exc).__name__})", []
        bot: Any = me.get("result") or {}
        username = str(bot.get("username", "")) if isinstance(bot, dict) else ""
        warnings: list[str] = []
        if self._bot and username.lower() != self._bot:
            warnings.append(
                f"bot_username is @{self._bot} but the token is @{username}: "
                "group mentions will not match"
            )
        info: Any = hook.get("result") if hook.get("ok") else None
        if not isinstance(info, dict):
            warnings.append(f"getWebhookInfo: {status} {str(hook.get('description', ''))[:120]}")
            return True, f"getMe: @{username}", warnings
        registered = str(info.get("url") or "")
        if not registered:
            warnings.append("no webhook set: run `switchboard channels register telegram`")
        elif registered != url:
            from urllib.parse import urlsplit

            parts = urlsplit(registered)  # no query or user info: they may carry credentials
            where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
            warnings.append(f"webhook is {where}, expected {url}")
        allowed = info.get("allowed_updates")
        if isinstance(allowed, list) and "callback_query" not in allowed:
            warnings.append(
                "the webhook does not receive callback_query (approval buttons): "
                "run `switchboard channels register telegram` again"
            )
        if info.get("last_error_message"):
            warnings.append(f"last webhook error: {str(info['last_error_message'])[:160]}")
        pending = info.get("pending_update_count", 0)
        return True, f"getMe: @{username}; webhook: {pending} pending update(s)", warnings
