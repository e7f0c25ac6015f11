"""Responses API: create → completed latency for the echo agent, with the official openai SDK.

Foreground creates (the call returns when the run has completed) at each concurrency; each
create is its own one-off run. Then cancel latency: a background run of a slow agent is
cancelled while in progress, timed until the cancel call answers ``cancelled``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from openai import AsyncOpenAI

from bench.harness import drive, machine, percentiles, stack

KEY = "sk-bench-0123456789"
EXTRA = f"""
[channels.responses.api_keys]
bench = "{KEY}"
"""


async def main(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {"machine": machine(), "count": args.count, "results": []}
    async with stack(extra_config=EXTRA) as st:
        client = AsyncOpenAI(base_url=st.gateway_url + "/v1", api_key=KEY, max_retries=0)
        await drive(20, 4, lambda i: client.responses.create(model="m", input="warm"))
        for concurrency in args.concurrency:
            samples: list[float] = []

            async def one(i: int, samples: list[float] = samples) -> None:
                started = time.monotonic()
                done = await client.responses.create(model="m", input=f"q{i}")
                assert done.status == "completed" and done.output_text == f"echo: q{i}"
                samples.append(time.monotonic() - started)

            wall = await drive(args.count, concurrency, one)
            row = {
                "concurrency": concurrency,
                "create_to_completed_ms": percentiles(samples),
                "per_s": round(args.count / wall, 1),
            }
            report["results"].append(row)
            print(json.dumps(row), flush=True)
        await client.close()
    async with stack(extra_config=EXTRA, env={"SWITCHBOARD_AGENT__DELAY_MS": "60000"}) as st:
        client = AsyncOpenAI(base_url=st.gateway_url + "/v1", api_key=KEY, max_retries=0)
        cancels: list[float] = []
        for _ in range(args.cancels):
            created = await client.responses.create(model="m", input="slow", background=True)
            while (await client.responses.retrieve(created.id)).status != "in_progress":
                await asyncio.sleep(0.05)
            started = time.monotonic()
            answer = await client.responses.cancel(created.id)
            assert answer.status == "cancelled", answer.status
            cancels.append(time.monotonic() - started)
        row = {"cancel_to_cancelled_ms": percentiles(cancels)}
        report["results"].append(row)
        print(json.dumps(row), flush=True)
        await client.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--cancels", type=int, default=10, help="slow runs to cancel")
    asyncio.run(main(parser.parse_args()))
