"""A local Bot Framework: OpenID metadata + JWKS, the identity platform's token endpoint, and
the Bot Connector's ``v3/conversations`` API, with their real answers and status codes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from channels.tck import Delivered
from tests.fakes import _Fake

APP_ID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
APP_PASSWORD = "test~client~secret"
ISSUER = "https://api.botframework.com"
ENDORSEMENTS = ["msteams", "webchat", "emulator"]
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@dataclass
class Stream:
    """One response stream as Teams shows it: its frames (kind, sequence, text), the text so
    far, and whether its final message arrived."""

    conversation: str
    frames: list[tuple[str, int, str]] = field(default_factory=list)
    text: str = ""
    final: bool | None = None


def card_error(attachments: Any) -> str | None:
    """What Teams refuses of the Adaptive Cards we send (Action.Execute needs version 1.4)."""
    if not isinstance(attachments, list) or len(attachments) != 1:
        return "Invalid attachments"
    [item] = attachments
    card = item.get("content") if isinstance(item, dict) else None
    if item.get("contentType") != "application/vnd.microsoft.card.adaptive":
        return "Unknown attachment content type"
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
        return "Invalid Adaptive Card"
    if card.get("version") not in ("1.4", "1.5") or not card.get("body"):
        return "Invalid Adaptive Card version or body"
    for action in card.get("actions", []):
        if action.get("type") != "Action.Execute" or not action.get("title"):
            return "Invalid Adaptive Card action"
    return None


def card_text(attachments: list[dict[str, Any]]) -> str:
    """The text blocks of a card, as a person reads it."""
    blocks = [b for a in attachments for b in a["content"]["body"] if b["type"] == "TextBlock"]
    return "\n".join(b["text"] for b in blocks)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class SigningKeyPair:
    """An RSA key the test generates; the fake publishes its public half."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or uuid.uuid4().hex
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        public: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "use": "sig", "endorsements": ENDORSEMENTS}

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class FakeBotFramework(_Fake):
    """One server for the three Microsoft endpoints a bot talks to; its root is the
    ``serviceUrl`` of the activities the tests send."""

    def __init__(self) -> None:
        super().__init__()
        self.key = SigningKeyPair()
        self.published: list[SigningKeyPair] = [self.key]
        self.metadata_fetches = 0
        self.key_fetches = 0
        self.token_requests: list[dict[str, str]] = []
        self.issued: set[str] = set()
        self.connector_calls: list[tuple[str, str, dict[str, Any]]] = []  # raw path, auth, body
        self.keys_down = False
        self._ids = itertools.count(1_700_000_000_000)
        self.typing: list[str] = []  # raw paths of typing activities, in order
        self.messages: list[dict[str, Any]] = []  # every message activity kept, with its id
        self.streams: dict[str, Stream] = {}  # streamId -> what Teams shows of that stream
        self.streaming_refused = False  # set: stream frames get 403 ContentStreamNotAllowed
        self.final_refused = False  # set: only a stream's final message gets that 403

    @property
    def base_url(self) -> str:
        return self.url("/")

    @property
    def metadata_url(self) -> str:
        return self.url("/v1/.well-known/openidconfiguration")

    @property
    def token_url(self) -> str:
        return self.url("/botframework.com/oauth2/v2.0/token")

    # -- issuing inbound tokens (what the Bot Framework sends us) ---------------------------

    def inbound_token(
        self,
        *,
        service_url: str | None = None,
        key: SigningKeyPair | None = None,
        issued_at: float | None = None,
        **overrides: Any,
    ) -> str:
        now = int(issued_at if issued_at is not None else time.time())
        claims: dict[str, Any] = {
            "serviceurl": service_url or self.base_url,
            "nbf": now,
            "exp": now + 3600,
            "iss": ISSUER,
            "aud": APP_ID,
        }
        claims.update(overrides)
        signer = key or self.key
        return jwt.encode(claims, signer.private, algorithm="RS256", headers={"kid": signer.kid})

    def hs256_token(self) -> str:
        """The algorithm-confusion forgery: HS256 keyed with the published public key."""
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": self.key.kid}).encode())
        now = int(time.time())
        claims = {"serviceurl": self.base_url, "nbf": now, "exp": now + 3600, "iss": ISSUER,
                  "aud": APP_ID}  # fmt: skip
        payload = _b64(json.dumps(claims).encode())
        mac = hmac.new(self.key.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256)
        return f"{header}.{payload}.{_b64(mac.digest())}"

    # -- endpoints -------------------------------------------------------------------------

    async def metadata(self, request: web.Request) -> web.Response:
        self.metadata_fetches += 1
        if self.keys_down:
            return web.Response(status=503)
        return web.json_response(
            {
                "issuer": ISSUER,
                "authorization_endpoint": "https://invalid.botframework.com",
                "jwks_uri": self.url("/v1/.well-known/keys"),
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        self.key_fetches += 1
        return web.json_response({"keys": [k.jwk() for k in self.published]})

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append({k: str(v) for k, v in form.items()})
        if form.get("grant_type") != "client_credentials":
            return self._aad_error(400, "unsupported_grant_type")
        if form.get("client_id") != APP_ID or form.get("client_secret") != APP_PASSWORD:
            return self._aad_error(401, "invalid_client")
        if form.get("scope") != "https://api.botframework.com/.default":
            return self._aad_error(400, "invalid_scope")
        access = f"eyJ0eXAi.{uuid.uuid4().hex}.sig"
        self.issued.add(access)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
             "access_token": access}
        )  # fmt: skip

    @staticmethod
    def _aad_error(status: int, error: str) -> web.Response:
        return web.json_response(
            {"error": error, "error_description": f"AADSTS70000: {error}", "error_codes": [70000]},
            status=status,
        )

    @staticmethod
    def _connector_error(status: int, code: str, message: str, **headers: str) -> web.Response:
        return web.json_response(
            {"error": {"code": code, "message": message}}, status=status, headers=headers
        )

    async def activities(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        payload = await request.json()
        self.connector_calls.append((request.raw_path, auth, payload))
        if auth.removeprefix("Bearer ") not in self.issued:
            return web.json_response(
                {"message": "Authorization has been denied for this request."}, status=401
            )
        stream = next((e for e in payload.get("entities") or [] if e.get("type") == "streaminfo"),
                      None)  # fmt: skip
        if payload.get("type") == "typing":  # an indicator: never delivered, never scripted
            self.typing.append(request.raw_path)
            if stream is not None:
                return self._stream_frame(request.match_info["conversation"], payload, stream)
            return web.json_response({"id": str(next(self._ids))})
        scripted = await self._scripted()
        if scripted:
            failure, retry = scripted
            if failure == "rate_limited":
                return self._connector_error(
                    429, "TooManyRequests", "Too many requests", **{"Retry-After": str(int(retry))}
                )
            if failure in ("server_error", "timeout"):
                return self._connector_error(502, "ServiceError", "Bad gateway")
            if failure == "rejected":
                return self._connector_error(404, "ConversationNotFound", "Conversation not found.")
            self.issued.clear()  # the token was revoked
            return web.json_response(
                {"message": "Authorization has been denied for this request."}, status=401
            )
        conversation = request.match_info["conversation"]
        if "attachments" in payload:
            bad = card_error(payload["attachments"])
            if bad is not None:
                return self._connector_error(400, "BadArgument", bad)
        if stream is not None:
            refused = self._final_frame(stream)
            if refused is not None:
                return refused
        base, _, thread = conversation.partition(";messageid=")
        text = payload.get("text") or card_text(payload.get("attachments") or [])
        self._delivered.append(Delivered(base, thread or None, text))
        activity_id = str(next(self._ids))
        self.messages.append({**payload, "id": activity_id})
        return web.json_response({"id": activity_id}, status=201)

    def _stream_frame(
        self, conversation: str, payload: dict[str, Any], info: dict[str, Any]
    ) -> web.Response:
        """An informative or streaming frame: Teams' rules for response streaming."""
        if self.streaming_refused or not conversation.startswith("a:"):  # 1:1 chats only
            return self._connector_error(
                403, "ContentStreamNotAllowed", "Content stream is not allowed"
            )
        kind, sequence, text = (
            info.get("streamType"),
            info.get("streamSequence"),
            payload.get("text"),
        )
        if kind not in ("informative", "streaming") or not isinstance(sequence, int) or not text:
            return self._connector_error(400, "BadArgument", "Invalid streaminfo")
        stream_id = info.get("streamId")
        if stream_id is None:
            if sequence != 1:
                return self._connector_error(400, "BadArgument", "A stream starts at sequence 1")
            stream_id = str(next(self._ids))
            self.streams[stream_id] = Stream(conversation)
        current = self.streams.get(stream_id)
        if current is None or current.final is not None:
            return self._connector_error(400, "ContentStreamNotAllowed", "Unknown or ended stream")
        if current.frames and sequence <= current.frames[-1][1]:
            return self._connector_error(
                400, "ContentStreamSequenceOrderPreConditionFailed", "Sequence out of order"
            )
        if kind == "streaming" and not text.startswith(current.text):
            return self._connector_error(400, "BadArgument", "A chunk must extend the last one")
        if kind == "informative" and current.text:
            return self._connector_error(400, "BadArgument", "Informative after streaming")
        current.frames.append((kind, sequence, text))
        if kind == "streaming":
            current.text = text
        return web.json_response({"id": stream_id}, status=201)

    def _final_frame(self, info: dict[str, Any]) -> web.Response | None:
        current = self.streams.get(str(info.get("streamId")))
        if info.get("streamType") != "final" or current is None or current.final is not None:
            return self._connector_error(400, "ContentStreamNotAllowed", "Unknown or ended stream")
        if self.streaming_refused or self.final_refused:
            return self._connector_error(
                403, "ContentStreamNotAllowed", "Content stream is not allowed"
            )
        current.final = True
        return None

    def press(self, message: dict[str, Any], verb: str, *, user: str, activity_id: str) -> bytes:
        """The ``adaptiveCard/action`` invoke Teams posts when ``user`` presses the
        ``Action.Execute`` button ``verb`` on the card of ``message``."""
        [card] = [a["content"] for a in message["attachments"]]
        action = next(a for a in card["actions"] if a["verb"] == verb)
        conversation = message["conversation"]["id"]
        body = {
            "type": "invoke", "name": "adaptiveCard/action", "id": activity_id,
            "timestamp": "2026-12-01T12:00:00.000Z", "channelId": "msteams",
            "serviceUrl": self.base_url, "replyToId": message["id"],
            "from": {"id": user, "name": "Presser", "aadObjectId": f"aad-{user}"},
            "conversation": {"id": conversation, "tenantId": TENANT,
                             "conversationType": "personal" if conversation.startswith("a:")
                             else "groupChat"},
            "recipient": message.get("from") or {"id": f"28:{APP_ID}"},
            "entities": [{"type": "clientInfo", "locale": "en-US"}],
            "channelData": {"tenant": {"id": TENANT}, "source": {"name": "message"}},
            "value": {"action": {"type": "Action.Execute", "title": action["title"],
                                 "verb": verb, "data": action["data"]},
                      "trigger": "manual"},
        }  # fmt: skip
        return json.dumps(body).encode()

    def answer_press(self, message: dict[str, Any], answer: dict[str, Any]) -> None:
        """What Teams does with the invoke's answer: a card replaces the pressed one."""
        if answer.get("type") == "application/vnd.microsoft.card.adaptive":
            message["attachments"] = [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "content": answer["value"],
                }
            ]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/.well-known/openidconfiguration", self.metadata)
        app.router.add_get("/v1/.well-known/keys", self.keys)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.token)
        app.router.add_post("/v3/conversations/{conversation}/activities", self.activities)
        app.router.add_post(
            "/v3/conversations/{conversation}/activities/{activity}", self.activities
        )
        return app
