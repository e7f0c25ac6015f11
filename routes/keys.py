"""The gateway's typed application state, defined once for every route module."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from temporalio.client import Client

from channels.registry import ChannelRegistry
from hosting.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", ChannelRegistry)
CLIENT = web.AppKey("client", Client)
HTTP = web.AppKey("http", aiohttp.ClientSession)
