"""A bare aiohttp handler that does nothing: the HTTP floor for the ingress benchmark."""

from __future__ import annotations

import sys

from aiohttp import web


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"ok": True}, status=202)


if __name__ == "__main__":
    app = web.Application()
    app.router.add_post("/channels/webhook", accept)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
