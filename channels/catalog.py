"""The adapters this build ships, and the settings model that knows their sections.

The core (``hosting.settings``) knows no platform; this module names each adapter once, next to
its ``[channels.<name>]`` section, so adding a platform is one module plus two lines here.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from typing import Any

from pydantic import Field

from channels.activity import ActivityChannel, ActivityChannelSettings
from channels.base import Channel
from channels.dingtalk import DingTalkChannel, DingTalkChannelSettings
from channels.discord import DiscordChannel, DiscordChannelSettings
from channels.loopback import LoopbackChannel, LoopbackChannelSettings
from channels.responses import ResponsesChannel, ResponsesChannelSettings
from channels.slack import SlackChannel, SlackChannelSettings
from channels.telegram import TelegramChannel, TelegramChannelSettings
from channels.web import WebChannel, WebChannelSettings
from channels.webhook import WebhookChannel, WebhookChannelSettings
from hosting import settings as core
from hosting.settings import ChannelSettings


class ConfiguredChannels(core.ChannelsSettings):
    """``[channels.*]``: one optional section per adapter; a section that is absent (or has
    ``enabled = false``) is a channel that does not run."""

    loopback: LoopbackChannelSettings | None = None
    webhook: WebhookChannelSettings | None = None
    telegram: TelegramChannelSettings | None = None
    slack: SlackChannelSettings | None = None
    responses: ResponsesChannelSettings | None = None
    web: WebChannelSettings | None = None
    discord: DiscordChannelSettings | None = None
    activity: ActivityChannelSettings | None = None
    dingtalk: DingTalkChannelSettings | None = None


Factory = Callable[[ChannelSettings, core.Settings], Channel]
ADAPTERS: dict[str, Factory] = {
    "loopback": LoopbackChannel.from_config,
    "webhook": WebhookChannel.from_config,
    "telegram": TelegramChannel.from_config,
    "slack": SlackChannel.from_config,
    "responses": ResponsesChannel.from_config,
    "web": WebChannel.from_config,
    "discord": DiscordChannel.from_config,
    "activity": ActivityChannel.from_config,
    "dingtalk": DingTalkChannel.from_config,
}


class Settings(core.Settings):
    """The deployment's whole configuration: the core's sections plus the channel sections."""

    channels: ConfiguredChannels = Field(default_factory=ConfiguredChannels)


def load_settings(path: str | None = None, **overrides: Any) -> Settings:
    """:func:`hosting.settings.load_settings` with this build's channel sections."""
    return core.load_settings(path, model=Settings, **overrides)


def settings_from_dict(values: dict[str, Any]) -> Settings:
    return core.settings_from_dict(values, model=Settings)


def dev_channel_sections(receiver_url: str) -> str:
    """The channels ``switchboard dev`` starts with, as TOML with fresh local secrets: the web
    chat, a Responses API key, and a signed webhook whose replies go to the local receiver."""
    webhook_secret = base64.b64encode(secrets.token_bytes(24)).decode()
    return f"""[channels.web]

[channels.responses.api_keys]
dev = "sk-dev-{secrets.token_urlsafe(24)}"

[channels.webhook]
secret = "whsec_{webhook_secret}"
callback_url = "{receiver_url}"
"""
