"""Teams' two credentials: the Bot Framework's signing keys (inbound JWTs, from the OpenID
metadata's JWKS, cached with a floor on refreshes: :mod:`hosting.jwks`, shared with the codec
server's OIDC tokens) and our own client-credentials token for the Bot Connector (cached until
shortly before it expires); plus which service URLs may ever receive that token."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import yarl

from channels.base import ChannelAck, FailureMode
from channels.http_push import HttpResult, classify_status, parse_retry_after
from hosting.jwks import KeySet as KeySet
from hosting.jwks import KeysUnavailable as KeysUnavailable
from hosting.jwks import SigningKey as SigningKey

if TYPE_CHECKING:
    from channels.activity import ActivityChannelSettings

TOKEN_MARGIN_S = 300  # renew the outbound token this long before it expires
OUTBOUND_SCOPE = "https://api.botframework.com/.default"


def service_url_allowed(url: str, prefixes: list[str]) -> bool:
    """``url`` has the scheme, host and port of one prefix and its path starts with the
    prefix's path. Parsed, not compared as text: ``https://allowed@evil/`` is not allowed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if (
        not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.query
        or parts.fragment
        or ".." in parts.path
        or any(c in url for c in "\\ \t\r\n")
    ):
        return False
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    for prefix in prefixes:
        p = urlsplit(prefix)
        if (
            p.scheme == parts.scheme
            and p.hostname == parts.hostname
            and (p.port or _default_port(p.scheme)) == (port or _default_port(parts.scheme))
            and path.startswith(p.path or "/")
        ):
            return True
    return False


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


# -- outbound token -----------------------------------------------------------------------


class OutboundToken:
    """The client-credentials token for the Bot Connector, cached until shortly before it
    expires; dropped when the connector answers 401/403."""

    def __init__(self, settings: ActivityChannelSettings, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    def drop(self) -> None:
        self._token = None

    async def bearer(self, http: aiohttp.ClientSession, timeout_s: float) -> str | ChannelAck:
        async with self._lock:  # concurrent pushes share one token request
            if self._token is not None and self._clock() < self._expires_at:
                return self._token
            return await self._fetch(http, timeout_s)

    async def _fetch(self, http: aiohttp.ClientSession, timeout_s: float) -> str | ChannelAck:
        form = urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": self._settings.app_id,
                "client_secret": self._settings.app_password.get_secret_value(),
                "scope": OUTBOUND_SCOPE,
            }
        ).encode()
        result = await post_encoded(
            http,
            yarl.URL(self._settings.token_url),
            body=form,
            headers={"content-type": "application/x-www-form-urlencoded"},
            timeout_s=timeout_s,
        )
        if isinstance(result, ChannelAck):
            return result
        if result.status != 200:
            ack = classify_status(
                result.status, parse_retry_after(result.headers.get("retry-after"))
            )
            if ack.mode is FailureMode.REJECTED:  # invalid_client, invalid_scope: configuration
                return ChannelAck(mode=FailureMode.UNAUTHORIZED, detail=f"token {result.status}")
            return ack.model_copy(update={"detail": f"token {result.status}"})
        body: Any = result.json()
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return ChannelAck(mode=FailureMode.TRANSIENT, detail="unreadable token answer")
        try:
            lifetime = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        self._token = token
        self._expires_at = self._clock() + lifetime - min(TOKEN_MARGIN_S, lifetime / 2)
        return token


async def post_encoded(
    http: aiohttp.ClientSession,
    url: yarl.URL,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
) -> HttpResult | ChannelAck:
    """:func:`channels.http_push.post` for a prepared URL: the connector needs conversation ids
    percent-encoded (``;`` and ``=`` in thread ids), which a plain string would lose."""
    try:
        async with http.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            content = await resp.content.read(1 << 20)
            return HttpResult(resp.status, {k.lower(): v for k, v in resp.headers.items()}, content)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return ChannelAck(mode=FailureMode.TRANSIENT, detail=type(exc).__name__)
