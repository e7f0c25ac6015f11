"""The gateway's typed application state, defined once for every route module."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from temporalio.client import Client

from channels.registry import ChannelRegistry
from hosting.settings import Settings
from routes.limits import Limits
from routes.watch import ViewWatchers

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", ChannelRegistry)
CLIENT = web.AppKey("client", Client)
HTTP = web.AppKey("http", aiohttp.ClientSession)
LIMITS = web.AppKey("limits", Limits)
VIEWS = web.AppKey("views", ViewWatchers)
