"""The set of channels a deployment runs, built once from configuration."""

from __future__ import annotations

from collections.abc import Iterator

from channels.base import Channel
from channels.catalog import ADAPTERS
from hosting.settings import ChannelSettings, ConfigError, Settings


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
    """One adapter from its settings section."""
    adapter = ADAPTERS.get(name)
    if adapter is None:
        raise ConfigError(f"channels.{name}: this build has no adapter for it")
    return adapter(section, settings)


def build_registry(settings: Settings) -> ChannelRegistry:
    registry = ChannelRegistry()
    for name, section in settings.channels.configured().items():
        channel = build_channel(name, section, settings)
        check_claims(name, channel)
        registry.register(channel)
    return registry


def check_claims(name: str, channel: Channel) -> None:
    """An ``allow_claims`` rule on a claim the adapter never verifies would deny everyone."""
    unknown = sorted(set(channel.settings.allow_claims) - channel.verified_claims)
    if unknown:
        produced = ", ".join(sorted(channel.verified_claims)) or "none"
        raise ConfigError(
            f"channels.{name}.allow_claims: {', '.join(unknown)} is never verified by this "
            f"channel (claims it produces: {produced})"
        )


def open_to_everyone(registry: ChannelRegistry, settings: Settings) -> list[str]:
    """Public channels whose policy admits anyone who finds them (worth a warning at start)."""
    return [
        channel.name
        for channel in registry
        if channel.public
        and settings.authorization.default == "allow"
        and not (
            channel.settings.allow_native_ids
            or channel.settings.allow_claims
            or channel.settings.require_link
        )
    ]
