"""Ingress: signed webhook → gateway acknowledgement, against its raw floors.

For each concurrency: the gateway (verify, parse, update-with-start into the session), the same
update-with-start issued by a bare Temporal client, and a bare aiohttp handler doing nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
import uuid

import aiohttp

from bench.harness import PY, ROOT, drive, free_port, machine, percentiles, stack, webhook_request
from channels.catalog import load_settings
from channels.registry import build_registry
from hosting.models import ChannelRequest, ReplyAddress
from routes.intake import build_submission, submit


async def gateway_run(
    url: str, count: int, concurrency: int, users: int
) -> tuple[list[float], float]:
    samples: list[float] = []
    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> None:
            _, body, headers = webhook_request(f"ing{i % users}", f"m{i}")
            started = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                assert resp.status == 202, resp.status
            samples.append(time.perf_counter() - started)

        wall = await drive(count, concurrency, one)
    return samples, wall


async def main(args: argparse.Namespace) -> None:
    report: dict[str, object] = {
        "machine": machine(),
        "count": args.count,
        "intake": args.intake,
        "results": [],
    }
    null_port = free_port()
    null = subprocess.Popen([PY, "-m", "bench.null_server", str(null_port)], cwd=ROOT)
    await asyncio.sleep(1.0)
    try:
        async with stack(env={"SWITCHBOARD_GATEWAY__INTAKE": args.intake}) as st:
            settings = load_settings(str(st.config))
            channel = build_registry(settings).get("webhook")
            assert channel is not None
            # Warm up sessions, caches and connections.
            await gateway_run(st.gateway_url + "/channels/webhook", 50, 8, 64)
            for concurrency in args.concurrency:
                users = concurrency * 2
                gw, gw_wall = await gateway_run(
                    st.gateway_url + "/channels/webhook", args.count, concurrency, users
                )
                raw: list[float] = []
                tag = uuid.uuid4().hex[:6]

                async def raw_one(
                    i: int, raw: list[float] = raw, tag: str = tag, users: int = users
                ) -> None:
                    user = f"raw{i % users}"
                    request = ChannelRequest(
                        tenant="default",
                        channel="webhook",
                        message_key=f"raw-{tag}-{i}",
                        user_id=user,
                        conversation_id=user,
                        text=f"m{i}",
                        reply_to=ReplyAddress(
                            channel="webhook", user_id=user, conversation_id=user
                        ),
                    )
                    inp = build_submission(settings, channel, request)
                    started = time.perf_counter()
                    await submit(st.client, settings, inp, timeout_s=10)
                    raw.append(time.perf_counter() - started)

                raw_wall = await drive(args.count, concurrency, raw_one)
                bare, bare_wall = await gateway_run(
                    f"http://127.0.0.1:{null_port}/channels/webhook", args.count, concurrency, users
                )
                g, r, b = percentiles(gw), percentiles(raw), percentiles(bare)
                row = {
                    "concurrency": concurrency,
                    "gateway_ms": g,
                    "raw_update_with_start_ms": r,
                    "bare_aiohttp_ms": b,
                    "gateway_per_s": round(args.count / gw_wall, 1),
                    "raw_per_s": round(args.count / raw_wall, 1),
                    "bare_per_s": round(args.count / bare_wall, 1),
                    "p99_ratio_gateway_to_raw": round(g["p99"] / r["p99"], 2),
                    "throughput_ratio_gateway_to_raw": round(
                        (args.count / gw_wall) / (args.count / raw_wall), 2
                    ),
                }
                report["results"].append(row)  # type: ignore[attr-defined]
                print(json.dumps(row), flush=True)
    finally:
        null.terminate()
        null.wait(timeout=10)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300, help="messages per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--intake", choices=["update", "signal"], default="update", help="gateway.intake"
    )
    asyncio.run(main(parser.parse_args()))
