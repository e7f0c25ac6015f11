"""Teams' two credentials: the Bot Framework's signing keys (inbound JWTs, from the OpenID
metadata's JWKS, cached with a floor on refreshes) and our own client-credentials token for
the Bot Connector (cached until shortly before it expires); plus which service URLs may ever
receive that token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import jwt
import yarl

from channels.base import ChannelAck, FailureMode
from channels.http_push import HttpResult, classify_status, parse_retry_after

if TYPE_CHECKING:
    from channels.activity import ActivityChannelSettings

KEYS_MAX_AGE_S = 24 * 3600  # the SDKs keep keys for days; a day is plenty
KEYS_REFRESH_FLOOR_S = 300  # unknown-kid storms refetch the JWKS at most this often
KEYS_FAILURE_FLOOR_S = 10  # after a failed fetch, wait this long before trying again
KEYS_TIMEOUT_S = 10.0
TOKEN_MARGIN_S = 300  # renew the outbound token this long before it expires
OUTBOUND_SCOPE = "https://api.botframework.com/.default"


class KeysUnavailable(Exception):
    """The signing keys cannot be fetched: the request may be fine, so answer 503."""


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


# -- inbound keys -------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    key: jwt.PyJWK
    endorsements: frozenset[str]


class KeySet:
    """The Bot Framework's signing keys, cached; refreshed when stale or on an unknown ``kid``,
    but never more often than the floor, so forged kids cannot make us hammer the endpoint."""

    def __init__(self, metadata_url: str, clock: Callable[[], float]) -> None:
        self._metadata_url = metadata_url
        self._clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._failed = False
        self._lock = asyncio.Lock()

    def _may_refresh(self) -> bool:
        if self._attempted_at is None:
            return True
        floor = KEYS_FAILURE_FLOOR_S if self._failed else KEYS_REFRESH_FLOOR_S
        return self._clock() - self._attempted_at >= floor

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at > KEYS_MAX_AGE_S

    async def get(self, kid: str) -> SigningKey | None:
        """The key named ``kid``, or None when it is not one of the platform's keys."""
        if (kid not in self._keys or self._stale()) and self._may_refresh():
            async with self._lock:
                if self._may_refresh():  # another request may have refreshed meanwhile
                    await self._refresh()
        if kid in self._keys:
            return self._keys[kid]
        if self._failed:
            raise KeysUnavailable
        return None

    async def _refresh(self) -> None:
        self._attempted_at = self._clock()
        try:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=KEYS_TIMEOUT_S)
            ) as http:
                metadata = await _get_json(http, self._metadata_url)
                jwks_uri = metadata.get("jwks_uri")
                if not isinstance(jwks_uri, str):
                    raise ValueError("OpenID metadata has no jwks_uri")
                jwks = await _get_json(http, jwks_uri)
            keys = _parse_jwks(jwks)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            self._failed = True  # keep the keys we had: a hiccup must not lock everyone out
            return
        self._keys, self._fetched_at, self._failed = keys, self._clock(), False


async def _get_json(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as resp:
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}")
        body: Any = json.loads(await resp.content.read(1 << 20))
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


def _parse_jwks(jwks: dict[str, Any]) -> dict[str, SigningKey]:
    keys: dict[str, SigningKey] = {}
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise ValueError("JWKS has no keys")
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        kid = entry.get("kid")
        endorsements = entry.get("endorsements") or []
        if not isinstance(kid, str) or not isinstance(endorsements, list):
            continue
        try:
            key = jwt.PyJWK(entry, algorithm="RS256")
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            continue  # a key type or shape we do not use
        keys[kid] = SigningKey(key, frozenset(str(e) for e in endorsements))
    return keys


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
