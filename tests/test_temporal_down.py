"""While Temporal is unreachable the gateway says 503, so platforms redeliver later."""

from __future__ import annotations

import socket

from aiohttp.test_utils import TestClient, TestServer

from gateway import build_app
from tests.support import make_settings, webhook_headers, webhook_message


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_webhook_gets_503_and_readyz_fails_while_temporal_is_down() -> None:
    settings = make_settings(
        "tq-down", f"127.0.0.1:{closed_port()}", gateway={"submit_timeout_s": 2}
    )
    async with TestClient(TestServer(build_app(settings), host="127.0.0.1")) as http:
        assert (await http.get("/healthz")).status == 200
        ready = await http.get("/readyz")
        assert ready.status == 503
        body = webhook_message("alice", "c1", "hello")
        resp = await http.post("/channels/webhook", data=body, headers=webhook_headers(body))
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        # A bad signature is still refused without touching Temporal.
        headers = webhook_headers(body)
        headers["webhook-signature"] = "v1,AAAA"
        assert (await http.post("/channels/webhook", data=body, headers=headers)).status == 401
