"""Resilience runs: kill the worker, stop Temporal, make the platform flaky, fuzz every route.

Each scenario counts replies at the receiver by idempotency key (``webhook-id``): ``lost`` is
messages with no reply; ``duplicate_replies`` is replies under a key no message should have
produced (a second run for one message); ``repeated_transmissions`` is a reply sent again under
its own key after a crash or outage, which a Standard Webhooks receiver drops by that key.
Bounded in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    Receiver,
    Stack,
    drive,
    machine,
    stack,
    start_dev_server,
    tally,
    webhook_request,
)
from bench.scale import horizontal

EXTRA_CHANNELS = """
[channels.telegram]
bot_token = "123:chaos"
secret_token = "chaos-secret"
bot_username = "chaos_bot"
api_base_url = "http://127.0.0.1:9"
[channels.slack]
signing_secret = "chaos-signing-secret"
bot_token = "xoxb-chaos"
api_base_url = "http://127.0.0.1:9/api"
[channels.web]
[channels.responses.api_keys]
chaos = "sk-chaos-0123456789"
"""


async def send_with_retries(
    http: aiohttp.ClientSession,
    st: Stack,
    user: str,
    text: str,
    counters: dict[str, int],
    give_up_s: float = 180,
) -> str:
    """POST until accepted; on 503 wait and retry with the same webhook-id, as platforms do."""
    msg_id = f"c{uuid.uuid4().hex}"
    deadline = time.monotonic() + give_up_s
    while True:
        _, body, headers = webhook_request(user, text, msg_id)
        try:
            async with http.post(
                st.gateway_url + "/channels/webhook", data=body, headers=headers
            ) as resp:
                status = resp.status
        except aiohttp.ClientError:
            status = 0
        if status == 202:
            return msg_id
        counters[f"status_{status}"] = counters.get(f"status_{status}", 0) + 1
        if time.monotonic() > deadline:
            raise RuntimeError("gave up sending")
        await asyncio.sleep(0.5)


async def worker_kills(count: int) -> dict[str, Any]:
    async with stack() as st, aiohttp.ClientSession() as http:
        counters: dict[str, int] = {}
        sent: list[str] = []
        kills = {count // 3, 2 * count // 3}

        async def one(i: int) -> None:
            if i in kills:
                st.kill("worker")
                await asyncio.sleep(1.0)
                st.spawn("worker")
                counters["worker_kills"] = counters.get("worker_kills", 0) + 1
            sent.append(await send_with_retries(http, st, f"k{i % 100}", f"m{i}", counters))

        started = time.monotonic()
        await drive(count, 16, one)
        complete = await st.receiver.wait_for(len(sent), timeout=900)
        result = {
            "scenario": "worker SIGKILLed twice",
            **tally(sent, st.receiver),
            **counters,
            "all_answered": complete,
            "seconds": round(time.monotonic() - started, 1),
        }
        return result


async def temporal_down(count: int, down_s: float) -> dict[str, Any]:
    db = Path(tempfile.mkdtemp()) / "temporal.db"
    async with stack(db_file=db) as st, aiohttp.ClientSession() as http:
        counters: dict[str, int] = {}
        sent: list[str] = []
        port = int(st.address.rsplit(":", 1)[1])

        async def outage() -> None:
            await asyncio.sleep(2)
            server = st.procs["temporal"]
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
            await asyncio.sleep(down_s)
            st.procs["temporal"] = await start_dev_server(port, db)

        async def one(i: int) -> None:
            sent.append(await send_with_retries(http, st, f"d{i % 50}", f"m{i}", counters))
            await asyncio.sleep(0.05)

        started = time.monotonic()
        await asyncio.gather(outage(), drive(count, 8, one))
        complete = await st.receiver.wait_for(len(sent), timeout=900)
        return {
            "scenario": f"Temporal stopped {down_s:.0f} s under load",
            **tally(sent, st.receiver),
            **counters,
            "all_answered": complete,
            "seconds": round(time.monotonic() - started, 1),
        }


async def flaky_platform(count: int) -> dict[str, Any]:
    receiver = Receiver(fail_ratio=0.30, rate_limit_ratio=0.05)
    async with stack(receiver=receiver) as st, aiohttp.ClientSession() as http:
        counters: dict[str, int] = {}
        sent: list[str] = []

        async def one(i: int) -> None:
            sent.append(await send_with_retries(http, st, f"f{i % 50}", f"m{i}", counters))

        started = time.monotonic()
        await drive(count, 16, one)
        complete = await st.receiver.wait_for(len(sent), timeout=900)
        gaps = receiver.retry_gaps
        return {
            "scenario": "platform fails 30% with 5xx, 5% with 429 (Retry-After: 1)",
            **tally(sent, receiver),
            "all_answered": complete,
            "rate_limited_retries": len(gaps),
            "min_gap_after_429_s": round(min(gaps), 2) if gaps else None,
            "seconds": round(time.monotonic() - started, 1),
        }


ROUTES = [
    "/channels/webhook",
    "/channels/telegram",
    "/channels/slack",
    "/channels/web",
    "/channels/responses",
    "/v1/responses",
    "/v1/runs/resp_x.y",
    "/codec/decode",
    "/v1/responses/resp_x.y/cancel",
    "/channels/web/runs/abc/cancel",
]


async def fuzz(examples: int) -> dict[str, Any]:
    rng = random.Random(11)
    async with stack(extra_config=EXTRA_CHANNELS) as st, aiohttp.ClientSession() as http:
        before = await st.client.count_workflows()
        statuses: dict[int, int] = {}
        atoms: list[Any] = [
            None,
            True,
            0,
            -1,
            2**70,
            "",
            "x" * 300,
            "/link",
            "../..",
            "\u0000",
            {},
            [],
        ]
        keys = [
            "type",
            "update_id",
            "message",
            "event",
            "user",
            "text",
            "challenge",
            "input",
            "payloads",
            "message_id",
            "conversation",
            "id",
            "chat",
            "from",
        ]
        for _ in range(examples):
            route = rng.choice(ROUTES)
            shape = rng.random()
            if shape < 0.3:
                body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400)))
            else:
                value: Any = {rng.choice(keys): rng.choice(atoms) for _ in range(rng.randint(0, 6))}
                if shape > 0.8:
                    value = {
                        "type": "event_callback",
                        "update_id": 5,
                        "message": value,
                        "event": value,
                    }
                body = json.dumps(value).encode()
            headers = {"content-type": rng.choice(["application/json", "text/plain", "x/y"])}
            if rng.random() < 0.3:
                headers["Authorization"] = rng.choice(["Bearer sk-nope", "Bearer ", "Basic x"])
            async with http.post(st.gateway_url + route, data=body, headers=headers) as resp:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
        after = await st.client.count_workflows()
        return {
            "scenario": f"fuzz {examples} unsigned requests over {len(ROUTES)} routes",
            "statuses": dict(sorted(statuses.items())),
            "server_errors": sum(n for s, n in statuses.items() if s >= 500),
            "workflows_started": after.count - before.count,
        }


async def main(args: argparse.Namespace) -> None:
    results: list[dict[str, Any]] = []
    scenarios = {
        "kill": lambda: worker_kills(args.count),
        "down": lambda: temporal_down(args.down_count, args.down_s),
        "flaky": lambda: flaky_platform(args.flaky_count),
        "fuzz": lambda: fuzz(args.fuzz),
        "scale": lambda: horizontal(args.scale_count),
    }
    for name in args.only or list(scenarios):
        result = await scenarios[name]()
        results.append(result)
        print(json.dumps(result), flush=True)
    print(json.dumps({"machine": machine(), "results": results}, indent=2))
    bad = [
        r
        for r in results
        if r.get("lost")
        or r.get("duplicate_replies")
        or r.get("server_errors")
        or r.get("workflows_started")
        or r.get("continuations_ok") is False
    ]
    if bad:
        raise SystemExit("resilience run found lost, duplicated or unsafe outcomes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="messages for the worker-kill run")
    parser.add_argument("--down-count", type=int, default=300)
    parser.add_argument("--down-s", type=float, default=20.0)
    parser.add_argument("--flaky-count", type=int, default=300)
    parser.add_argument("--fuzz", type=int, default=2000, help="fuzzed requests")
    parser.add_argument(
        "--scale-count", type=int, default=600, help="messages for the two-by-two run"
    )
    parser.add_argument("--only", nargs="*", choices=["kill", "down", "flaky", "fuzz", "scale"])
    asyncio.run(main(parser.parse_args()))
