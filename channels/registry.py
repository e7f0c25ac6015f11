"""The set of channels a deployment runs, built once from configuration."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from channels.base import Channel
from hosting.settings import (
    ChannelSettings,
    ConfigError,
    LoopbackChannelSettings,
    ResponsesChannelSettings,
    Settings,
    SlackChannelSettings,
    TelegramChannelSettings,
    WebChannelSettings,
    WebhookChannelSettings,
)


class DuplicateChannel(ValueError):
    pass


class ChannelRegistry:
    """Channels by name; a second channel with a taken name is refused."""

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def register(self, channel: Channel) -> None:
        if channel.name in self._channels:
            raise DuplicateChannel(f"channel {channel.name!r} is registered twice")
        self._channels[channel.name] = channel

    def get(self, name: str) -> Channel | None:
        return self._channels.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    def __iter__(self) -> Iterator[Channel]:
        return iter(self._channels.values())

    def names(self) -> list[str]:
        return list(self._channels)


def build_channel(name: str, section: ChannelSettings, settings: Settings) -> Channel:
    """One adapter from its settings section; adapters are imported only when configured."""
    if isinstance(section, WebhookChannelSettings):
        from channels.webhook import WebhookChannel

        return WebhookChannel(settings=section)
    if isinstance(section, LoopbackChannelSettings):
        from channels.loopback import LoopbackChannel

        return LoopbackChannel(settings=section)
    if isinstance(section, TelegramChannelSettings):
        from channels.telegram import TelegramChannel

        return TelegramChannel(settings=section)
    if isinstance(section, SlackChannelSettings):
        from channels.slack import SlackChannel

        return SlackChannel(settings=section)
    if isinstance(section, ResponsesChannelSettings):
        from channels.responses import ResponsesChannel

        return ResponsesChannel(settings=section)
    if isinstance(section, WebChannelSettings):
        from channels.web import WebChannel

        settings.require_keys()
        return WebChannel(
            settings=section,
            signing_key=settings.security.signing_key_bytes(),
            origin=_origin(settings.gateway.public_url),
        )
    raise ConfigError(f"channels.{name}: this build has no adapter for it yet")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def build_registry(settings: Settings) -> ChannelRegistry:
    registry = ChannelRegistry()
    for name, section in settings.channels.configured().items():
        registry.register(build_channel(name, section, settings))
    return registry
