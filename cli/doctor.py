"""``switchboard doctor``: is this deployment ready to take messages?

One line per check (``ok``, ``warn`` or ``fail``, a name, a short detail): the configuration
and its keys, Temporal (reachable, namespace, search attributes, a worker on the task queue)
and every configured channel, with a cheap read-only call to the platform where the adapter
offers one (:class:`channels.base.ChecksCredentials`). Network checks use short timeouts.
Details never carry a secret: besides each check keeping to metadata, every secret value of
the configuration is masked in the final report.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, SecretStr
from temporalio.api.enums.v1 import IndexedValueType, NamespaceState, TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    DescribeTaskQueueRequest,
    GetSystemInfoRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from channels.base import Channel, ChecksCredentials
from channels.registry import ChannelRegistry, build_channel, check_claims, open_to_everyone
from channels.webhook import WebhookChannelSettings
from hosting import search_attributes
from hosting.jwks import KEY_TYPES, discovery_url, fetch_signing_keys
from hosting.policy import check_policy
from hosting.settings import DEFAULT_CONFIG_PATH, ConfigError, Settings
from hosting.temporal_client import connect

Status = Literal["ok", "warn", "fail"]
TIMEOUT_S = 5.0
MIN_TOKEN_CHARS = 16
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MASK = "***"


@dataclass(frozen=True)
class Check:
    status: Status
    name: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "name": self.name, "detail": self.detail}


def failed(checks: list[Check]) -> bool:
    return any(c.status == "fail" for c in checks)


async def diagnose(load: Callable[[], Settings], *, timeout_s: float = TIMEOUT_S) -> list[Check]:
    """Every check, in order. ``load`` reads the configuration (raising ConfigError)."""
    try:
        settings = load()
    except ConfigError as exc:
        return [Check("fail", "config", str(exc))]
    chosen = os.environ.get("SWITCHBOARD_CONFIG") or DEFAULT_CONFIG_PATH
    source = chosen if Path(chosen).is_file() else "no file: defaults and environment"
    checks = [Check("ok", "config", f"loaded ({source})")]
    try:
        settings.require_keys()
        checks.append(Check("ok", "required keys", "signing_key and codec_keys set"))
    except ConfigError as exc:
        checks.append(
            Check("fail", "required keys", f"{exc}: the worker and gateway refuse to start")
        )
    checks += key_checks(settings)
    checks += await codec_oidc_checks(settings, timeout_s)
    checks.append(gateway_check(settings))
    checks += await temporal_checks(settings, timeout_s)
    checks += await channel_checks(settings, timeout_s)
    return mask(checks, secret_values(settings))


# -- keys ---------------------------------------------------------------------------------


def key_checks(settings: Settings) -> list[Check]:
    sec = settings.security
    out: list[Check] = []
    if sec.signing_key.get_secret_value():
        out.append(Check("ok", "signing key", f"{len(sec.signing_key_bytes())} bytes"))
        if sec.identity_key.get_secret_value():
            size = len(sec.identity_key_bytes())
            out.append(Check("ok", "identity key", f"explicit, {size} bytes"))
        else:
            out.append(
                Check(
                    "warn",
                    "identity key",
                    "derived from signing_key: set it before rotating the signing key",
                )
            )
    else:
        out.append(Check("fail", "signing key", "missing (base64 of at least 32 bytes)"))
    pairs = sec.codec_key_pairs()
    if pairs:
        keys = [f"{key_id} ({len(key)} bytes)" for key_id, key in pairs]
        keys[0] = f"{pairs[0][0]} (encrypts, {len(pairs[0][1])} bytes)"
        out.append(Check("ok", "codec keys", ", ".join(keys)))
    else:
        out.append(Check("fail", "codec keys", "none configured"))
    out.append(codec_token_check(settings))
    return out


def codec_token_check(settings: Settings) -> Check:
    sec = settings.security
    support, admin = len(sec.codec_support_tokens), len(sec.codec_admin_tokens)
    counts = f"support: {support} token(s), admin: {admin} token(s)"
    if sec.codec_oidc_issuer:
        counts += ", and Web UI users through OIDC"
    if sec.codec_open_role:
        return Check(
            "warn",
            "codec tokens",
            f"{counts}; codec_open_role = {sec.codec_open_role}: anyone who reaches /codec "
            "decodes without a token (local development only)",
        )
    if not support and not admin and not sec.codec_oidc_issuer:
        return Check("warn", "codec tokens", f"{counts}: the Web UI cannot decode payloads")
    short = [
        t for t in [*sec.codec_support_tokens, *sec.codec_admin_tokens]
        if len(t.get_secret_value()) < MIN_TOKEN_CHARS
    ]  # fmt: skip
    if short:
        return Check(
            "warn", "codec tokens", f"{counts}; {len(short)} shorter than {MIN_TOKEN_CHARS} chars"
        )
    return Check("ok", "codec tokens", counts)


async def codec_oidc_checks(settings: Settings, timeout_s: float) -> list[Check]:
    """With Web UI users signing in to the codec server: the issuer's metadata and keys are
    readable (the gateway fetches them the same way), and how roles map."""
    sec = settings.security
    issuer = sec.codec_oidc_issuer
    if not issuer:
        return []
    roles = sorted(sec.codec_oidc_roles.values())
    mapping = (
        f"claim {sec.codec_oidc_roles_claim!r}: {roles.count('support')} value(s) to support, "
        f"{roles.count('admin')} to admin"
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
            keys = await fetch_signing_keys(
                http, discovery_url(issuer), algorithms=tuple(KEY_TYPES), issuer=issuer
            )
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        reason = str(exc) if type(exc) is ValueError else type(exc).__name__
        return [Check("fail", "codec oidc", f"{issuer}: {reason}: signed-in users get 503")]
    if not keys:
        return [Check("fail", "codec oidc", f"{issuer}: no RS256 or ES256 signing key published")]
    algorithms = ", ".join(sorted({k.algorithm for k in keys.values()}))
    detail = f"{issuer}: {len(keys)} signing key(s) ({algorithms}); {mapping}"
    return [Check("ok", "codec oidc", detail)]


def gateway_check(settings: Settings) -> Check:
    url = settings.gateway.public_url
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        return Check("warn", "gateway", f"public_url {url} is plain http: platforms need https")
    return Check("ok", "gateway", f"public_url {url}")


# -- Temporal -----------------------------------------------------------------------------


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def temporal_checks(settings: Settings, timeout_s: float) -> list[Check]:
    t = settings.temporal
    try:
        host, port = _host_port(t.address)
    except ValueError:
        return [Check("fail", "temporal", f"{t.address}: not host:port")]
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        writer.close()
    except TimeoutError:
        return [Check("fail", "temporal", f"{t.address}: no TCP answer within {timeout_s:g} s")]
    except ConnectionRefusedError:
        return [Check("fail", "temporal", f"{t.address}: connection refused")]
    except socket.gaierror:
        return [Check("fail", "temporal", f"{t.address}: host not found")]
    except OSError as exc:
        return [Check("fail", "temporal", f"{t.address}: cannot connect ({type(exc).__name__})")]
    try:
        client = await asyncio.wait_for(connect(_without_payload_keys(settings)), timeout_s)
        info = await client.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=timedelta(seconds=timeout_s)
        )
    except TimeoutError:
        return [Check("fail", "temporal", f"{t.address}: no Temporal answer in {timeout_s:g} s")]
    except Exception as exc:  # the SDK's connect errors are RuntimeErrors with long messages
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return [Check("fail", "temporal", f"{t.address}: {reason}")]
    version = info.server_version or "unknown version"
    out = [Check("ok", "temporal", f"{t.address} (server {version})")]
    for check in (namespace_check, search_attribute_check, worker_check):
        try:
            out.append(await check(client, settings, timeout_s))
        except RPCError as exc:
            name = check.__name__.removesuffix("_check").replace("_", " ")
            out.append(Check("fail", name, f"{_status(exc)}: {exc.message[:160]}"))
    return out


def _status(exc: RPCError) -> str:
    return exc.status.name if exc.status else "error"


def _without_payload_keys(settings: Settings) -> Settings:
    """The doctor never reads a payload; a configuration without codec keys (reported above)
    still gets its Temporal checks, with a throwaway key the data converter insists on."""
    if settings.security.codec_keys:
        return settings
    throwaway = SecretStr("doctor:" + base64.b64encode(os.urandom(32)).decode())
    security = settings.security.model_copy(update={"codec_keys": [throwaway]})
    return settings.model_copy(update={"security": security})


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds and seconds % 86400 == 0:
        return f"{seconds // 86400} day(s)"
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600} hour(s)"
    return f"{seconds} s"


async def namespace_check(client: Client, settings: Settings, timeout_s: float) -> Check:
    ns = settings.temporal.namespace
    try:
        desc = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=ns), timeout=timedelta(seconds=timeout_s)
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return Check("fail", "namespace", f"{ns} does not exist")
        raise
    retention = _duration(desc.config.workflow_execution_retention_ttl.ToTimedelta())
    state = desc.namespace_info.state
    if state != NamespaceState.NAMESPACE_STATE_REGISTERED:
        return Check("fail", "namespace", f"{ns} is {NamespaceState.Name(state)}")
    return Check("ok", "namespace", f"{ns}, retention {retention}")


async def search_attribute_check(client: Client, settings: Settings, timeout_s: float) -> Check:
    ns = settings.temporal.namespace
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=ns), timeout=timedelta(seconds=timeout_s)
    )
    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    names = [k.name for k in search_attributes.ALL]
    missing = [n for n in names if n not in listed.custom_attributes]
    wrong = [
        n for n in names if n in listed.custom_attributes and listed.custom_attributes[n] != keyword
    ]
    if wrong:
        return Check("fail", "search attributes", f"not Keyword: {', '.join(wrong)}")
    if missing:
        return Check(
            "fail",
            "search attributes",
            f"missing {', '.join(missing)}: the worker adds them when it starts, where the "
            "server allows (else `temporal operator search-attribute create --name NAME "
            f"--type Keyword --namespace {ns}`)",
        )
    return Check("ok", "search attributes", f"{len(names)} registered (Keyword)")


async def worker_check(client: Client, settings: Settings, timeout_s: float) -> Check:
    queue = settings.temporal.task_queue
    desc = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=settings.temporal.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        ),
        timeout=timedelta(seconds=timeout_s),
    )
    if not desc.pollers:
        return Check("warn", "worker", f"no worker polls task queue {queue}: runs would wait")
    return Check("ok", "worker", f"{len(desc.pollers)} poller(s) on task queue {queue}")


# -- channels -----------------------------------------------------------------------------


async def channel_checks(settings: Settings, timeout_s: float) -> list[Check]:
    configured = settings.channels.configured()
    if not configured:
        return [Check("warn", "channels", "none configured: nothing can reach the agent")]
    built: list[Channel] = []
    out: list[Check] = []
    for name, section in configured.items():
        try:
            channel = build_channel(name, section, settings)
            check_claims(name, channel)
        except ConfigError as exc:
            out.append(Check("fail", f"channel {name}", str(exc)))
            continue
        except Exception as exc:  # an adapter's own validation; its message may quote input
            out.append(Check("fail", f"channel {name}", f"does not build ({type(exc).__name__})"))
            continue
        built.append(channel)
    out.append(policy_check(settings, built))
    base = settings.gateway.public_url.rstrip("/")
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(
            *(_channel(http, channel, f"{base}/channels/{channel.name}", timeout_s)
              for channel in built)
        )  # fmt: skip
    for checks in results:
        out += checks
    return out


def policy_check(settings: Settings, built: list[Channel]) -> Check:
    try:
        check_policy(settings)
    except ConfigError as exc:
        return Check("fail", "authorization", str(exc))
    registry = ChannelRegistry()
    for channel in built:
        registry.register(channel)
    open_ = open_to_everyone(registry, settings)
    if open_:
        return Check(
            "warn",
            "authorization",
            f"open to everyone: {', '.join(open_)} (set allow_native_ids, allow_claims or "
            "require_link, or authorization.default)",
        )
    return Check("ok", "authorization", f"default {settings.authorization.default}")


async def _channel(
    http: aiohttp.ClientSession, channel: Channel, url: str, timeout_s: float
) -> list[Check]:
    name = f"channel {channel.name}"
    out: list[Check] = []
    if isinstance(channel, ChecksCredentials):
        try:
            # An adapter may make a few calls, each within timeout_s; this bounds them all.
            ok, detail, warnings = await asyncio.wait_for(
                channel.check_credentials(http, url, timeout_s), 3 * timeout_s
            )
        except TimeoutError:
            out.append(Check("fail", name, f"no answer from the platform in {3 * timeout_s:g} s"))
        except Exception as exc:  # the SPI says it never raises; a bug must not end the doctor
            out.append(Check("fail", name, f"check failed ({type(exc).__name__})"))
        else:
            out.append(Check("ok" if ok else "fail", name, detail))
            out += [Check("warn", name, w) for w in warnings]
    else:
        out.append(Check("ok", name, "built (no read-only platform check)"))
    if isinstance(channel.settings, WebhookChannelSettings) and channel.settings.callback_url:
        out.append(await _reachable(http, f"{name} callback", channel.settings.callback_url,
                                    timeout_s))  # fmt: skip
    return out


async def _reachable(http: aiohttp.ClientSession, name: str, url: str, timeout_s: float) -> Check:
    """Any HTTP answer to a HEAD counts: the receiver exists; only scheme, host and port are
    shown (a callback URL may carry a token in its path or query)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    try:
        async with http.head(
            url, timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False
        ) as resp:
            return Check("ok", name, f"{origin} answers (HEAD {resp.status})")
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        return Check("warn", name, f"{origin} unreachable ({type(exc).__name__})")


# -- secrets ------------------------------------------------------------------------------


def secret_values(settings: BaseModel) -> set[str]:
    """Every secret in the configuration, and the parts that are secrets alone (the key of a
    ``key-id:base64`` codec key or ``id:secret`` bot token, the body of a ``whsec_`` secret)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            for part in (raw, raw.partition(":")[2], raw.removeprefix("whsec_")):
                if len(part) >= 8:
                    found.add(part)
        elif isinstance(value, BaseModel):
            for field in type(value).model_fields:
                walk(getattr(value, field))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(settings)
    return found


def mask(checks: list[Check], secrets: set[str]) -> list[Check]:
    ordered = sorted(secrets, key=len, reverse=True)  # a longer secret before its parts

    def clean(text: str) -> str:
        for secret in ordered:
            text = text.replace(secret, MASK)
        return text

    return [replace(c, name=clean(c.name), detail=clean(c.detail)) for c in checks]
