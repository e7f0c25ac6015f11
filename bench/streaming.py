"""Live replies: time to first delta and history events per streamed reply.

A Python agent streams N words ``word_gap_ms`` apart and stamps when it produced its first
one; readers are the official openai SDK with ``stream=True``. Reported: time from the create
call to the first delta event at the client (end to end), the same against the agent's own
first token (what streaming adds), and the run's history events per reply, streamed and not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from openai import AsyncOpenAI

from bench.harness import machine, percentiles, stack

KEY = "sk-bench-0123456789"
EXTRA = f"""
[channels.responses.api_keys]
bench = "{KEY}"
"""


async def one(client: AsyncOpenAI, text: str) -> tuple[float, str, int]:
    started = time.monotonic()
    first: float | None = None
    response_id = ""
    deltas = 0
    async for event in await client.responses.create(model="m", input=text, stream=True):
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            deltas += 1
            if first is None:
                first = time.monotonic() - started
    assert first is not None
    return first, response_id, deltas


async def measure(args: argparse.Namespace, every_ms: int) -> dict[str, Any]:
    env = {
        "SWITCHBOARD_AGENT__STREAM_DELAY_MS": str(args.word_gap_ms),
        "SWITCHBOARD_AGENT__STREAM_EVERY_MS": str(every_ms),
    }
    text = " ".join(f"w{i}" for i in range(args.words))
    async with stack(extra_config=EXTRA, env=env) as st:
        client = AsyncOpenAI(base_url=st.gateway_url + "/v1", api_key=KEY, max_retries=0)
        for _ in range(3):
            await one(client, "warm up")
        firsts: list[float] = []
        events: list[int] = []
        deltas: list[int] = []
        for _ in range(args.count):
            first, _, n = await one(client, text)
            firsts.append(first)
            deltas.append(n)
        async for wf in st.client.list_workflows(
            f'TaskQueue = "{st.task_queue}" AND WorkflowType = "AgentRunWorkflow"'
        ):
            history = await st.client.get_workflow_handle(wf.id).fetch_history()
            if len(history.events) > 0:
                events.append(len(history.events))
        await client.close()
    # The echo agent produces its first delta at once, so end-to-end time to the first delta
    # is what the path adds to the agent's own first token.
    return {
        "stream_every_ms": every_ms,
        "time_to_first_delta_ms": percentiles(firsts),
        "deltas_per_reply": round(sum(deltas) / len(deltas), 1),
        "history_events_per_run": round(sum(events) / max(1, len(events)), 1),
    }


async def main(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {
        "machine": machine(),
        "words": args.words,
        "word_gap_ms": args.word_gap_ms,
        "results": [],
    }
    for every_ms in args.every_ms:
        row = await measure(args, every_ms)
        report["results"].append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--words", type=int, default=40)
    parser.add_argument("--word-gap-ms", type=int, default=50)
    parser.add_argument("--every-ms", type=int, nargs="+", default=[0, 250, 100])
    asyncio.run(main(parser.parse_args()))
