"""Signing keys published as a JWKS behind OpenID metadata, cached, and the JWTs they sign.

Used for Teams' inbound activities (the Bot Framework's keys) and for the codec server's
OIDC access tokens (the Web UI's identity provider). Keys are refreshed when stale or when a
token names an unknown ``kid``, but never more often than a floor, so forged kids cannot make
us hammer the issuer; a failed refresh keeps the keys we had.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

KEYS_MAX_AGE_S = 24 * 3600  # issuers keep keys published for days; a day is plenty
KEYS_REFRESH_FLOOR_S = 300  # unknown-kid storms refetch the JWKS at most this often
KEYS_FAILURE_FLOOR_S = 10  # after a failed fetch, wait this long before trying again
KEYS_TIMEOUT_S = 10.0
MAX_DOCUMENT_BYTES = 1 << 20
# The asymmetric algorithms we verify, each with the key type (and curve) it needs. Never
# "none" and never an HMAC: with one, a published public key would work as a shared secret.
KEY_TYPES: dict[str, tuple[str, str | None]] = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}


class KeysUnavailable(Exception):
    """The signing keys cannot be fetched: the request may be fine, so answer 503."""


@dataclass(frozen=True)
class SigningKey:
    key: jwt.PyJWK
    endorsements: frozenset[str]  # Bot Framework channels the key may sign for

    @property
    def algorithm(self) -> str:
        return str(self.key.algorithm_name)


class KeySet:
    """The keys of one issuer, cached. ``algorithms`` limits which keys are kept; ``issuer``,
    when given, must be the metadata's ``issuer`` (OpenID Connect Discovery, section 4.3)."""

    def __init__(
        self,
        metadata_url: str,
        clock: Callable[[], float],
        *,
        algorithms: Collection[str] = ("RS256",),
        issuer: str | None = None,
    ) -> None:
        unknown = set(algorithms) - KEY_TYPES.keys()
        if unknown:
            raise ValueError(f"unsupported JWT algorithms: {sorted(unknown)}")
        self._metadata_url = metadata_url
        self._clock = clock
        self._algorithms = frozenset(algorithms)
        self._issuer = issuer
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
        """The key named ``kid``, or None when it is not one of the issuer's keys."""
        if (kid not in self._keys or self._stale()) and self._may_refresh():
            async with self._lock:
                if self._may_refresh():  # another request may have refreshed meanwhile
                    await self._refresh()
        if kid in self._keys:
            return self._keys[kid]
        if self._failed:
            raise KeysUnavailable
        return None

    async def verify(
        self, token: str, *, audience: str, issuer: str, leeway_s: float
    ) -> tuple[dict[str, Any], SigningKey] | None:
        """The claims of a token signed by one of the keys, with that key; None for a token
        that is malformed, forged, expired, or for someone else. Raises KeysUnavailable."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        kid, alg = header.get("kid"), header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            return None
        if not isinstance(kid, str) or not kid:
            return None
        key = await self.get(kid)
        if key is None or key.algorithm != alg:  # a key is used only with its own algorithm
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=audience,
                issuer=issuer,
                leeway=leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError:
            return None
        return claims, key

    async def _refresh(self) -> None:
        self._attempted_at = self._clock()
        try:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=KEYS_TIMEOUT_S)
            ) as http:
                keys = await fetch_signing_keys(
                    http, self._metadata_url, algorithms=self._algorithms, issuer=self._issuer
                )
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            self._failed = True  # keep the keys we had: a hiccup must not lock everyone out
            return
        self._keys, self._fetched_at, self._failed = keys, self._clock(), False


def discovery_url(issuer: str) -> str:
    """Where an OpenID Connect issuer publishes its metadata."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


async def fetch_signing_keys(
    http: aiohttp.ClientSession,
    metadata_url: str,
    *,
    algorithms: Collection[str],
    issuer: str | None = None,
) -> dict[str, SigningKey]:
    """The metadata's JWKS, parsed; raises aiohttp, OS or ValueError errors (the last with a
    short reason) when the metadata or the keys cannot be read or name another issuer."""
    metadata = await _get_json(http, metadata_url)
    if issuer is not None and metadata.get("issuer") != issuer:
        raise ValueError("OpenID metadata names another issuer")
    jwks_uri = metadata.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise ValueError("OpenID metadata has no jwks_uri")
    return parse_jwks(await _get_json(http, jwks_uri), algorithms)


async def _get_json(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as resp:
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}")
        try:
            body: Any = json.loads(await resp.content.read(MAX_DOCUMENT_BYTES))
        except ValueError:
            raise ValueError("not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


def parse_jwks(jwks: dict[str, Any], algorithms: Collection[str]) -> dict[str, SigningKey]:
    """The signing keys of a JWKS that suit one of ``algorithms``, by ``kid``; keys of other
    types, uses or shapes are left out."""
    keys: dict[str, SigningKey] = {}
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise ValueError("JWKS has no keys")
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        endorsements = entry.get("endorsements") or []
        algorithm = _algorithm_of(entry, algorithms)
        if not isinstance(kid, str) or not isinstance(endorsements, list) or algorithm is None:
            continue
        try:
            key = jwt.PyJWK(entry, algorithm=algorithm)
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            continue  # a key type or shape we do not use
        keys[kid] = SigningKey(key, frozenset(str(e) for e in endorsements))
    return keys


def _algorithm_of(entry: dict[str, Any], algorithms: Collection[str]) -> str | None:
    """The allowed algorithm this key is for: its own ``alg``, else the one its type implies."""
    declared = entry.get("alg")
    for algorithm in algorithms:
        kty, crv = KEY_TYPES[algorithm]
        if declared not in (None, algorithm) or entry.get("kty") != kty:
            continue
        if crv is None or entry.get("crv") == crv:
            return algorithm
    return None
