"""The price of durability: the same webhook → echo → signed push, in-process and non-durable.

The baseline is a plain aiohttp handler that verifies the signature, calls the echo agent and
POSTs the signed reply before answering. Nothing survives a crash, nothing is retried. The
durable figures come from the real stack in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from activities.agent_backends import EchoAgent
from bench.harness import (
    WH_KEY,
    Receiver,
    drive,
    free_port,
    machine,
    percentiles,
    stack,
    webhook_request,
)
from channels.standard_webhooks import SignatureError, signed_headers, verify
from hosting.models import AgentRequest


async def baseline_app(receiver: Receiver) -> tuple[web.AppRunner, int]:
    agent = EchoAgent()
    session = aiohttp.ClientSession()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            msg_id = verify(WH_KEY, request.headers, body, time.time())
        except SignatureError:
            return web.Response(status=401)
        msg = json.loads(body)
        reply = await agent.reply(
            AgentRequest(run_id=msg_id, text=msg["text"], channel="webhook", identity_hash="x")
        )
        out = json.dumps(
            {"type": "message", "phase": "response", "run_id": msg_id, "text": reply.text}
        ).encode()
        key = f"run/default/webhook/{msg_id}:webhook:response"
        headers = signed_headers(WH_KEY, key, int(time.time()), out)
        async with session.post(receiver.url, data=out, headers=headers) as resp:
            await resp.read()
        return web.json_response({"ok": True}, status=202)

    app = web.Application()
    app.router.add_post("/channels/webhook", handle)

    async def close(_: web.Application) -> None:
        await session.close()

    app.on_cleanup.append(close)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def measure(
    url: str, receiver: Receiver, count: int, concurrency: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> None:
            msg_id, body, headers = webhook_request(f"b{uuid.uuid4().hex[:10]}", f"m{i}")
            started = time.monotonic()
            async with http.post(url, data=body, headers=headers) as resp:
                assert resp.status == 202
            key = f"run/default/webhook/{msg_id}:webhook:response"
            while key not in receiver.first_seen:
                await asyncio.sleep(0.002)
            latencies.append(receiver.first_seen[key] - started)

        wall = await drive(count, concurrency, one)
    return latencies, wall


async def main(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {"machine": machine(), "count": args.count, "results": []}
    async with stack() as st:
        runner, port = await baseline_app(st.receiver)
        try:
            for concurrency in args.concurrency:
                base, base_wall = await measure(
                    f"http://127.0.0.1:{port}/channels/webhook",
                    st.receiver,
                    args.count,
                    concurrency,
                )
                durable, durable_wall = await measure(
                    st.gateway_url + "/channels/webhook", st.receiver, args.count, concurrency
                )
                b, d = percentiles(base), percentiles(durable)
                row = {
                    "concurrency": concurrency,
                    "baseline_ms": b,
                    "durable_ms": d,
                    "baseline_per_s": round(args.count / base_wall, 1),
                    "durable_per_s": round(args.count / durable_wall, 1),
                    "p50_price": round(d["p50"] / b["p50"], 1),
                    "throughput_price": round(durable_wall / base_wall, 1),
                }
                report["results"].append(row)
                print(json.dumps(row), flush=True)
        finally:
            await runner.cleanup()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    asyncio.run(main(parser.parse_args()))
