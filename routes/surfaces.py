"""The routes pull channels bring: each declares a :class:`~channels.base.Surface`, and the
gateway mounts the surface's routes for it, so no platform is named where the app is built."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from channels.base import Channel, ServesSurface, Surface
from channels.registry import ChannelRegistry
from hosting.settings import Settings
from routes import responses, webchat
from routes.keys import CLIENT, VIEWS
from routes.runs import RunAccess, RunsApi
from routes.watch import ViewWatchers

Mount = Callable[[web.Application, Settings, Channel, RunAccess], None]
MOUNTS: dict[Surface, Mount] = {
    Surface.CHAT_PAGE: webchat.mount,
    Surface.RESPONSES_API: responses.mount,
}


def add_routes(app: web.Application, settings: Settings, registry: ChannelRegistry) -> None:
    """Every configured channel's surface, and ``/v1/runs`` for all pull callers.

    Continuation tokens are signed with the deployment's key; without one there are none."""
    if not settings.security.signing_key.get_secret_value():
        return
    app[VIEWS] = ViewWatchers()
    access = RunAccess(settings, registry, app[VIEWS])
    for channel in registry:
        if isinstance(channel, ServesSurface):
            MOUNTS[channel.surface](app, settings, channel, access)
    RunsApi(access, CLIENT).add_routes(app)
