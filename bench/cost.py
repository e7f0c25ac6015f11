"""Cost per message: Temporal's work and billable actions on each common path, process memory
over many runs, and how continue-as-new keeps a long conversation's session history bounded."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp

from bench.actions import RULE
from bench.harness import (
    Stack,
    drive,
    free_port,
    machine,
    rss_mb,
    stack,
    webhook_request,
    webhook_session_id,
)
from bench.price import MESSAGES, price_paths


async def send(http: aiohttp.ClientSession, url: str, user: str, text: str) -> str:
    msg_id, body, headers = webhook_request(user, text)
    async with http.post(url, data=body, headers=headers) as resp:
        assert resp.status == 202, resp.status
    return msg_id


async def memory(st: Stack, http: aiohttp.ClientSession, runs: int) -> dict[str, Any]:
    """Worker and gateway RSS after warm-up, then after ``runs`` more (``bench.soak`` samples
    the whole curve)."""
    url = st.gateway_url + "/channels/webhook"
    sent = len(st.receiver.first_seen)
    warm = 500

    async def one(i: int) -> None:
        await send(http, url, f"mem{i % 200}", f"m{i}")

    await drive(warm, 16, one)
    sent += warm
    await st.receiver.wait_for(sent, timeout=600)
    pids = {name: st.procs[name].pid for name in ("worker", "gateway")}
    after_warm = {n: round(rss_mb(p), 1) for n, p in pids.items()}
    started = time.monotonic()
    await drive(runs, 16, one)
    sent += runs
    complete = await st.receiver.wait_for(sent, timeout=1800)
    return {
        "after_warmup_runs": warm,
        "after_warmup": after_warm,
        "runs_after_warmup": runs,
        "after_runs": {n: round(rss_mb(p), 1) for n, p in pids.items()},
        "all_delivered": complete,
        "seconds": round(time.monotonic() - started, 1),
    }


async def long_conversation(
    st: Stack, http: aiohttp.ClientSession, turns: int, suggest_can: int
) -> dict[str, Any]:
    """One conversation of ``turns`` messages: the session continues-as-new, stays bounded."""
    url = st.gateway_url + "/channels/webhook"
    sent = len(st.receiver.first_seen)
    user = f"long{uuid.uuid4().hex[:6]}"
    for i in range(turns):
        await send(http, url, user, f"t{i}")
    await st.receiver.wait_for(sent + turns, timeout=900)
    await asyncio.sleep(1)
    sizes = []
    async for wf in st.client.list_workflows(f'WorkflowId = "{webhook_session_id(user)}"'):
        h = await st.client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        sizes.append(len(h.events))
    return {
        "turns": turns,
        "session_runs": len(sizes),
        "max_events_in_one_run": max(sizes) if sizes else None,
        "suggest_continue_as_new_after_events": suggest_can,
    }


async def main(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {"machine": machine()}
    metrics_port = free_port()
    extra_server = [
        "--dynamic-config-value",
        f"limit.historyCount.suggestContinueAsNew={args.suggest_can}",
        "--metrics-port",
        str(metrics_port),
    ]
    async with (
        stack(server_args=extra_server, extra_config=MESSAGES) as st,
        aiohttp.ClientSession() as http,
    ):
        if "paths" in args.only:
            metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            report["per_message"] = await price_paths(st, http, metrics, args.repeats)
            report["action_rule"] = RULE
            print(json.dumps({"per_message": report["per_message"]}), flush=True)
        if "memory" in args.only:
            report["memory_mb"] = await memory(st, http, args.runs)
            print(json.dumps(report["memory_mb"]), flush=True)
        if "long" in args.only:
            report["long_conversation"] = await long_conversation(
                st, http, args.turns, args.suggest_can
            )
            print(json.dumps(report["long_conversation"]), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only",
        nargs="*",
        choices=["paths", "memory", "long"],
        default=["paths", "memory", "long"],
    )
    parser.add_argument("--repeats", type=int, default=10, help="messages priced per path")
    parser.add_argument(
        "--runs", type=int, default=2000, help="runs after warm-up for the memory check"
    )
    parser.add_argument("--turns", type=int, default=200, help="turns of the long conversation")
    parser.add_argument(
        "--suggest-can",
        type=int,
        default=400,
        help="server's continue-as-new suggestion, in events",
    )
    asyncio.run(main(parser.parse_args()))
