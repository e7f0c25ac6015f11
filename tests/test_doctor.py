"""``switchboard doctor`` and ``--json`` on the operator commands, run in-process against the
real test stack (Temporal dev server, worker, gateway) and local platform fakes.

The CLI reads its configuration the way it does in production: a TOML file named by
``SWITCHBOARD_CONFIG``, written here from the stack's settings. ``main()`` runs its own event
loop, so it runs in a thread while the test's loop keeps serving the stack and the fakes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr
from temporalio.client import WorkflowExecutionStatus

from cli.main import main
from hosting.models import RunView
from hosting.settings import Settings
from tests.conftest import Stack
from tests.fakes import SLACK_TOKEN, TELEGRAM_TOKEN, FakeSlack, FakeTelegram, serve
from tests.fakes_activity import APP_ID, APP_PASSWORD, FakeBotFramework
from tests.fakes_discord import APPLICATION_ID, BOT_TOKEN, FakeDiscord, public_key_hex
from tests.support import (
    CODEC_KEY,
    SIGNING_KEY,
    WEBHOOK_SECRET,
    eventually,
    make_settings,
    webhook_headers,
    webhook_message,
)

PUBLIC_URL = "https://switchboard.example.test"
BOT_USERNAME = "switchboard_test_bot"
TG_SECRET = "tg-secret-token_0123456789"
SLACK_SIGNING = "slack-signing-secret-0123456789"
IDENTITY_KEY = base64.b64encode(b"i" * 32).decode()
SUPPORT_TOKEN = "support-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
SECRETS = [
    TELEGRAM_TOKEN, TELEGRAM_TOKEN.partition(":")[2], TG_SECRET, SLACK_TOKEN, SLACK_SIGNING,
    BOT_TOKEN, APP_PASSWORD, SIGNING_KEY, IDENTITY_KEY, CODEC_KEY, CODEC_KEY.partition(":")[2],
    WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_"), SUPPORT_TOKEN, ADMIN_TOKEN,
]  # fmt: skip


# -- fakes: the read-only endpoints the shared fakes do not serve --------------------------


class TelegramFake(FakeTelegram):
    """Adds ``getMe`` and ``getWebhookInfo``."""

    def __init__(self) -> None:
        super().__init__()
        self.webhook_url = f"{PUBLIC_URL}/channels/telegram"
        self.last_error: str | None = None

    async def read_only(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TELEGRAM_TOKEN:
            return self.error(401, "Unauthorized")
        self.calls.append((request.match_info["method"], {}))
        if request.match_info["method"] == "getMe":
            me = {"id": 123456, "is_bot": True, "first_name": "Test", "username": BOT_USERNAME}
            return web.json_response({"ok": True, "result": me})
        info: dict[str, Any] = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": 3,
        }
        if self.last_error:
            info |= {"last_error_date": int(time.time()), "last_error_message": self.last_error}
        return web.json_response({"ok": True, "result": info})

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/bot{token}/{method:getMe|getWebhookInfo}", self.read_only)
        return app


class SlackFake(FakeSlack):
    """Adds ``auth.test``."""

    async def auth_test(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {SLACK_TOKEN}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        return web.json_response(
            {"ok": True, "url": "https://test.slack.com/", "team": "Test", "user": "switchboard",
             "team_id": "T1", "user_id": "U1", "bot_id": "B1"}
        )  # fmt: skip

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/auth.test", self.auth_test)  # before the catch-all
        app.router.add_post("/api/{method}", self.method)
        return app


class DiscordFake(FakeDiscord):
    """Adds ``GET /applications/@me``."""

    def __init__(self) -> None:
        super().__init__()
        self.verify_key = public_key_hex(Ed25519PrivateKey.generate())
        self.interactions_endpoint_url = f"{PUBLIC_URL}/channels/discord"

    async def me(self, request: web.Request) -> web.Response:
        if not self._bot(request):
            return self.error(401, "401: Unauthorized", 0)
        return web.json_response(
            {"id": APPLICATION_ID, "name": "switchboard", "verify_key": self.verify_key,
             "interactions_endpoint_url": self.interactions_endpoint_url}
        )  # fmt: skip

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/api/v10/applications/@me", self.me)
        return app


@dataclass
class Platforms:
    telegram: TelegramFake
    slack: SlackFake
    discord: DiscordFake
    teams: FakeBotFramework

    def channels(self) -> dict[str, dict[str, Any]]:
        """Configuration sections for all four, each with an allowlist (not open to all)."""
        allow = {"allow_native_ids": ["1"]}
        return {
            "telegram": {"bot_token": TELEGRAM_TOKEN, "secret_token": TG_SECRET,
                         "bot_username": BOT_USERNAME, "api_base_url": self.telegram.base_url,
                         **allow},
            "slack": {"signing_secret": SLACK_SIGNING, "bot_token": SLACK_TOKEN,
                      "api_base_url": self.slack.base_url, **allow},
            "discord": {"public_key": self.discord.verify_key, "application_id": APPLICATION_ID,
                        "bot_token": BOT_TOKEN, "api_base_url": self.discord.base_url, **allow},
            "activity": {"app_id": APP_ID, "app_password": APP_PASSWORD,
                         "token_url": self.teams.token_url,
                         "openid_metadata_url": self.teams.metadata_url, **allow},
        }  # fmt: skip


@pytest.fixture
async def platforms() -> AsyncIterator[Platforms]:
    tg, sl, dc, bf = TelegramFake(), SlackFake(), DiscordFake(), FakeBotFramework()
    async with serve(tg), serve(sl), serve(dc), serve(bf):
        yield Platforms(tg, sl, dc, bf)


# -- configuration file -------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Settings values as TOML can hold them: secrets revealed, paths and enums as text."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"no TOML for {type(value).__name__}")


def to_toml(doc: dict[str, Any]) -> str:
    lines: list[str] = []

    def table(path: list[str], values: dict[str, Any]) -> None:
        lines.append("[" + ".".join(json.dumps(p) for p in path) + "]")
        for key, value in values.items():
            if not isinstance(value, dict):
                lines.append(f"{json.dumps(key)} = {_toml_value(value)}")
        for key, value in values.items():
            if isinstance(value, dict):
                table([*path, key], value)

    for section, values in doc.items():
        table([section], values)
    return "\n".join(lines) + "\n"


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if both else value
    return out


def use_config(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    **sections: dict[str, Any],
) -> None:
    """Write ``settings`` (plus ``sections`` merged in) to a TOML file the CLI will read."""
    doc = merge(_plain(settings.model_dump(exclude_none=True)), sections)
    path = tmp_path / f"switchboard-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(path))


GOOD_SECURITY = {
    "identity_key": IDENTITY_KEY,
    "codec_support_tokens": [SUPPORT_TOKEN],
    "codec_admin_tokens": [ADMIN_TOKEN],
}


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    return code, capsys.readouterr().out


async def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out = await cli(capsys, *argv, "--json")
    assert_no_secrets(out)
    doc: dict[str, Any] = json.loads(out)  # exactly one document, nothing else on stdout
    assert doc["ok"] is (code == 0)
    return code, doc


def assert_no_secrets(out: str) -> None:
    leaked = [s for s in SECRETS if s in out]
    assert not leaked, f"secrets in the output: {len(leaked)}"


def by_name(doc: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for check in doc["checks"]:
        out.setdefault(check["name"], []).append(check)
    return out


# -- doctor ---------------------------------------------------------------------------------


async def test_doctor_all_ok_for_a_good_configuration(
    stack: Stack,
    platforms: Platforms,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_config(
        stack.settings, tmp_path, monkeypatch,
        security=GOOD_SECURITY, gateway={"public_url": PUBLIC_URL},
        channels=platforms.channels(),
    )  # fmt: skip
    code, doc = await cli_json(capsys, "doctor")
    not_ok = [c for c in doc["checks"] if c["status"] != "ok"]
    assert not_ok == [] and code == 0
    checks = by_name(doc)
    for name in (
        "config", "required keys", "signing key", "identity key", "codec keys", "codec tokens",
        "gateway", "temporal", "namespace", "search attributes", "worker", "authorization",
        "channel loopback", "channel webhook", "channel webhook callback", "channel telegram",
        "channel slack", "channel discord", "channel activity",
    ):  # fmt: skip
        assert name in checks, name
    assert doc["counts"] == {"ok": len(doc["checks"]), "warn": 0, "fail": 0}
    assert "test1 (encrypts, 32 bytes)" in checks["codec keys"][0]["detail"]
    assert "retention" in checks["namespace"][0]["detail"]
    assert f"@{BOT_USERNAME}" in checks["channel telegram"][0]["detail"]
    # Read-only: nothing was sent or registered on any platform.
    assert {m for m, _ in platforms.telegram.calls} == {"getMe", "getWebhookInfo"}
    assert platforms.slack.calls == [] and platforms.discord.calls == []
    assert len(platforms.teams.token_requests) == 1 and platforms.teams.connector_calls == []

    code, text = await cli(capsys, "doctor")  # the text form: one line per check, a summary
    assert code == 0
    assert_no_secrets(text)
    lines = text.splitlines()
    assert len(lines) == len(doc["checks"]) + 1
    assert all(line.startswith("ok ") for line in lines[:-1])
    assert lines[-1] == f"{len(doc['checks'])} ok, 0 warn, 0 fail"


async def test_a_wrong_bot_token_fails_the_telegram_check(
    stack: Stack,
    platforms: Platforms,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = "654321:WRONG-token-the-doctor-must-not-print"
    channels = platforms.channels()
    channels["telegram"]["bot_token"] = wrong
    use_config(
        stack.settings, tmp_path, monkeypatch,
        security=GOOD_SECURITY, gateway={"public_url": PUBLIC_URL}, channels=channels,
    )  # fmt: skip
    code, doc = await cli_json(capsys, "doctor")
    assert code == 1
    [telegram] = by_name(doc)["channel telegram"]
    assert telegram["status"] == "fail"
    assert "401" in telegram["detail"]
    assert [c["name"] for c in doc["checks"] if c["status"] != "ok"] == ["channel telegram"]
    assert wrong not in json.dumps(doc) and "WRONG-token" not in json.dumps(doc)


async def test_platform_drift_warns_without_failing(
    stack: Stack,
    platforms: Platforms,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    platforms.telegram.webhook_url = "https://old.example.test/channels/telegram?key=hunter2hunter2"
    platforms.telegram.last_error = "Wrong response from the webhook: 502 Bad Gateway"
    platforms.discord.interactions_endpoint_url = None
    use_config(
        stack.settings, tmp_path, monkeypatch,
        security={"codec_open_role": "support"},  # and no identity key: derived
        gateway={"public_url": PUBLIC_URL}, channels=platforms.channels(),
    )  # fmt: skip
    code, doc = await cli_json(capsys, "doctor")
    assert code == 0  # warnings only
    warned = {(c["name"], c["detail"]) for c in doc["checks"] if c["status"] == "warn"}
    assert ("identity key", "derived from signing_key: set it before rotating the signing key") in (
        warned
    )
    details = {name: [d for n, d in warned if n == name] for name, _ in warned}
    assert any("codec_open_role = support" in d for d in details["codec tokens"])
    assert any(
        d.startswith("webhook is https://old.example.test/channels/telegram, expected")
        for d in details["channel telegram"]
    )
    assert any("502 Bad Gateway" in d for d in details["channel telegram"])
    assert any("no interactions endpoint URL" in d for d in details["channel discord"])
    assert "hunter2" not in json.dumps(doc)  # the registered URL's query is never shown


async def test_unreachable_temporal_fails_quickly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings("tq-nowhere", f"127.0.0.1:{port}")
    use_config(settings, tmp_path, monkeypatch, security=GOOD_SECURITY)
    started = time.monotonic()
    code, doc = await cli_json(capsys, "doctor", "--timeout", "2")
    assert time.monotonic() - started < 10
    assert code == 1
    checks = by_name(doc)
    assert checks["temporal"] == [
        {"status": "fail", "name": "temporal", "detail": f"127.0.0.1:{port}: connection refused"}
    ]
    assert "namespace" not in checks  # nothing more is asked of a server that is not there
    assert checks["channel webhook"][0]["status"] == "ok"  # the rest is still checked


async def test_a_broken_configuration_is_one_failed_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[gateway]\nport = -1\n[security]\nsigning_key = "not base64!"\n')
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(path))
    code, doc = await cli_json(capsys, "doctor")
    assert code == 1
    [check] = doc["checks"]
    assert check["name"] == "config" and check["status"] == "fail"
    assert "not base64!" not in check["detail"]


# -- --json on the operator commands --------------------------------------------------------


async def _say(stack: Stack, text: str) -> str:
    msg_id = f"doctor_{uuid.uuid4().hex}"
    # A user of its own: a session lives on the task queue of the stack that started it.
    body = webhook_message(f"doc-{msg_id}", "doc-conv", text)
    resp = await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, msg_id)
    )
    assert resp.status == 202, await resp.text()
    return f"run/default/webhook/{msg_id}"


async def _view(stack: Stack, run_id: str) -> RunView:
    view: RunView = await stack.client.get_workflow_handle(run_id).query(
        "view", result_type=RunView
    )
    return view


async def test_runs_show_json(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_config(stack.settings, tmp_path, monkeypatch, temporal={"ui_url": "http://ui.test"})
    run_id = await _say(stack, "a private thought")
    await stack.receiver.wait_for(1)

    async def delivered() -> bool:
        view = await _view(stack, run_id)
        return bool(view.deliveries) and view.deliveries[0].state == "delivered"

    await eventually(delivered)

    async def closed() -> bool:
        desc = await stack.client.get_workflow_handle(run_id).describe()
        return desc.status is WorkflowExecutionStatus.COMPLETED

    await eventually(closed)  # a finished run closes; it is read from its result
    code, doc = await cli_json(capsys, "runs", "show", run_id)
    assert code == 0
    run = doc["run"]
    assert run["run_id"] == run_id
    assert run["status"] == "completed" and run["channel"] == "webhook"
    assert run["workflow_status"] == "COMPLETED"
    assert run["output_chars"] == len("echo: a private thought")
    assert run["deliveries"] == [
        {"destination": "webhook", "state": "delivered", "attempts": 1, "reason": None}
    ]
    assert run["web_ui"].startswith("http://ui.test/namespaces/default/workflows/run%2F")
    assert "private thought" not in json.dumps(doc)  # metadata only, never the message

    code, doc = await cli_json(capsys, "runs", "show", "run/default/webhook/no-such-run")
    assert code == 1 and doc["ok"] is False
    assert "run/default/webhook/no-such-run" in doc["error"]

    # Cancelling a run that has already finished (and closed) is a clear no-op.
    code, doc = await cli_json(capsys, "runs", "cancel", run_id)
    assert code == 0 and doc["already_finished"] is True and doc["status"] == "completed"


async def test_dead_letters_list_json(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_config(stack.settings, tmp_path, monkeypatch)
    stack.receiver.fail_next.append(410)  # the receiver refuses for good: a dead letter
    run_id = await _say(stack, "never arrives")
    listed: dict[str, Any] = {}

    async def in_the_list() -> bool:
        nonlocal listed
        code, doc = await cli_json(capsys, "dead-letters", "list", "--limit", "1000")
        assert code == 0
        listed = {r["run_id"]: r for r in doc["runs"]}
        assert doc["count"] == len(doc["runs"])
        return run_id in listed

    await eventually(in_the_list, timeout=30, every=0.5)
    assert set(listed[run_id]) == {"run_id", "started_at", "workflow_status"}
    assert listed[run_id]["workflow_status"] in ("RUNNING", "COMPLETED")  # closes when done

    code, doc = await cli_json(capsys, "runs", "show", run_id)
    assert code == 0
    [delivery] = doc["run"]["deliveries"]
    assert delivery["state"] == "dead_letter" and delivery["reason"]
    assert "never arrives" not in json.dumps(doc)
