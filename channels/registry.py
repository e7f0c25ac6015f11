"""The set of channels a deployment runs, built once from configuration."""

from __future__ import annotations

from collections.abc import Iterator

from channels.base import Channel
from hosting.settings import (
    ChannelSettings,
    LoopbackChannelSettings,
    Settings,
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


def build_channel(name: str, settings: ChannelSettings) -> Channel:
    """One adapter from its settings section; adapters are imported only when configured."""
    if isinstance(settings, WebhookChannelSettings):
        from channels.webhook import WebhookChannel

        return WebhookChannel(settings=settings)
    if isinstance(settings, LoopbackChannelSettings):
        from channels.loopback import LoopbackChannel

        return LoopbackChannel(settings=settings)
    raise ValueError(f"channels.{name}: this build has no adapter for it yet")


def build_registry(settings: Settings) -> ChannelRegistry:
    registry = ChannelRegistry()
    for name, section in settings.channels.configured().items():
        registry.register(build_channel(name, section))
    return registry
