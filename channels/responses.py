"""The OpenAI-Responses-compatible API as a (pull) channel: bearer-key callers, no pushes.

Callers authenticate with ``Authorization: Bearer <key>`` from ``[channels.responses].api_keys``
(a table name → key); each key is a caller identity ``responses:<name>``. Replies are stored on
the run and fetched with the continuation token, never pushed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Literal

import aiohttp
from pydantic import Field, SecretStr

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
from channels.inbound_body import BodyError, PlatformBody, parse_body
from hosting.bearer import match_bearer
from hosting.ids import Caller, InvalidKey, check_component, tuple_key
from hosting.models import ChannelRequest, PushRequest, ReplyAddress, SubmitResult, Turn
from hosting.settings import ChannelSettings, ConfigError


class InputContent(PlatformBody):
    type: str
    text: str | None = None


class InputMessage(PlatformBody):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputContent]
    type: Literal["message"] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(
            c.text or "" for c in self.content if c.type in ("input_text", "output_text", "text")
        )


class ApprovalResponse(PlatformBody):
    """An ``mcp_approval_response`` input item: the caller's answer to a tool call that waits
    for approval in the response named by ``previous_response_id``."""

    type: Literal["mcp_approval_response"]
    approval_request_id: str = Field(min_length=1, max_length=200)
    approve: bool


class CreateResponse(PlatformBody):
    """The part of ``POST /v1/responses`` this API understands (other fields are ignored)."""

    model: str = Field(default="switchboard", max_length=200)
    input: str | list[InputMessage | ApprovalResponse] = Field(min_length=1)
    background: bool = False
    stream: bool = False
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    previous_response_id: str | None = Field(default=None, max_length=2000)

    def text_and_transcript(self) -> tuple[str, list[Turn]]:
        """The last user message is the input; earlier user/assistant turns are history."""
        if isinstance(self.input, str):
            return self.input, []
        messages = [m for m in self.input if isinstance(m, InputMessage)]
        turns = [m for m in messages if m.role in ("user", "assistant")]
        if not turns or turns[-1].role != "user":
            raise BodyError("input: the last message must come from the user")
        history = [Turn(role=m.role, text=m.text()) for m in turns[:-1]]
        return turns[-1].text(), history

    def approval(self) -> ApprovalResponse | None:
        """The approval answer this create carries, if any (then it starts no new turn)."""
        if isinstance(self.input, str):
            return None
        return next((i for i in self.input if isinstance(i, ApprovalResponse)), None)


class ResponsesChannelSettings(ChannelSettings):
    """``[channels.responses]``: one bearer key per API caller, by the caller's name."""

    api_keys: dict[str, SecretStr] = Field(default_factory=dict)


class ResponsesChannel(BaseChannel):
    name = "responses"
    public = False  # callers hold a secret or key this deployment issued
    pull = True
    surface = Surface.RESPONSES_API

    def __init__(self, *, settings: ResponsesChannelSettings) -> None:
        super().__init__(settings=settings)
        if not settings.api_keys:
            raise ConfigError("channels.responses.api_keys: at least one caller key is required")
        self._keys = [
            (name, key.get_secret_value().encode()) for name, key in settings.api_keys.items()
        ]

    def authenticate(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], *, for_write: bool
    ) -> str | None:
        """The caller's name for a known bearer key; every key is compared, in constant time.
        A bearer header is not sent by browsers on their own, so writes need nothing more."""
        return match_bearer(headers, self._keys)

    def caller(self, headers: Mapping[str, str]) -> Caller | None:
        user_id = self.authenticate(headers, {}, for_write=False)
        return Caller(self.name, user_id) if user_id is not None else None

    def direct_scope(self) -> Literal["per_conversation"]:
        # Every response chain is its own conversation: callers run many in parallel.
        return "per_conversation"

    def dev_hints(self, gateway_url: str) -> list[str]:
        return [
            f"  Responses API     {gateway_url}/v1  (bearer keys: "
            f"[channels.{self.name}.api_keys] in the config)"
        ]

    def build_request(
        self,
        *,
        tenant: str,
        caller: Caller,
        body: CreateResponse,
        idempotency_key: str | None,
        conversation: str | None,
    ) -> tuple[ChannelRequest, list[Turn]]:
        """Raises BodyError or InvalidKey with a reason for the caller."""
        text, history = body.text_and_transcript()
        caller_name = caller.user_id
        if idempotency_key is not None:
            check_component(idempotency_key, "Idempotency-Key")
            # Scoped by caller: (caller, key) as a tuple, so "acme" + "eu.K" and "acme.eu" + "K"
            # are different messages.
            message_key = "idem_" + tuple_key(caller_name, idempotency_key)
        else:
            message_key = uuid.uuid4().hex
        conversation_id = conversation or message_key
        request = ChannelRequest(
            tenant=tenant,
            channel=self.name,
            message_key=check_component(message_key, "message key"),
            user_id=caller_name,
            conversation_id=conversation_id,
            is_direct=True,
            text=text,
            reply_to=ReplyAddress(
                channel=self.name, user_id=caller_name, conversation_id=conversation_id
            ),
        )
        return request, history

    def scope(self, request: ChannelRequest) -> Literal["per_conversation"]:
        return self.direct_scope()

    async def receive(self, http: InboundHttp) -> InboundOutcome:
        caller = self.caller(http.headers)
        if caller is None:
            return Refused(401, "invalid API key")
        try:
            body = parse_body(CreateResponse, http.body)
            request, _ = self.build_request(
                tenant=http.tenant,
                caller=caller,
                body=body,
                idempotency_key=http.headers.get("Idempotency-Key"),
                conversation=None,
            )
        except (BodyError, InvalidKey) as exc:
            return Refused(400, str(exc))
        return Accepted(request)

    def acknowledge(self, request: ChannelRequest, result: SubmitResult) -> HttpAnswer:
        status = 202 if result.accepted else 409
        return json_answer(status, {"run_id": result.run_id, "accepted": result.accepted})

    def refuse(self, request: ChannelRequest) -> HttpAnswer:
        return json_answer(403, {"error": "forbidden"})

    async def push(self, http: aiohttp.ClientSession, push: PushRequest) -> ChannelAck:
        return ChannelAck(mode=FailureMode.REJECTED, detail="the responses channel is pull-only")
