"""Cost per run: history events and payload bytes, process memory over many runs, and how
continue-as-new keeps a long conversation's session history bounded."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp

from bench.harness import drive, machine, rss_mb, stack, webhook_request, webhook_session_id


async def send(http: aiohttp.ClientSession, url: str, user: str, text: str) -> str:
    msg_id, body, headers = webhook_request(user, text)
    async with http.post(url, data=body, headers=headers) as resp:
        assert resp.status == 202, resp.status
    return msg_id


async def main(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {"machine": machine()}
    extra_server = [
        "--dynamic-config-value",
        f"limit.historyCount.suggestContinueAsNew={args.suggest_can}",
    ]
    async with stack(server_args=extra_server) as st:
        url = st.gateway_url + "/channels/webhook"
        async with aiohttp.ClientSession() as http:
            # 1. One run and one session turn, in events and bytes.
            user = f"cost{uuid.uuid4().hex[:6]}"
            ids = []
            for i in range(10):
                ids.append(await send(http, url, user, f"turn {i}"))
                await st.receiver.wait_for(len(ids))
            runs = [
                await st.client.get_workflow_handle(f"run/default/webhook/{m}").fetch_history()
                for m in ids
            ]
            session = await st.client.get_workflow_handle(webhook_session_id(user)).fetch_history()
            run_events = sum(len(h.events) for h in runs) / len(runs)
            run_bytes = sum(sum(e.ByteSize() for e in h.events) for h in runs) / len(runs)
            report["per_run"] = {
                "history_events": round(run_events, 1),
                "history_bytes": round(run_bytes),
            }
            report["per_session_turn"] = {
                "history_events": round(len(session.events) / len(ids), 1),
                "history_bytes": round(sum(e.ByteSize() for e in session.events) / len(ids)),
            }
            print(
                json.dumps(
                    {"per_run": report["per_run"], "per_session_turn": report["per_session_turn"]}
                ),
                flush=True,
            )

            # 2. Memory of worker and gateway: after warm-up, then after many more runs.
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
            await drive(args.runs, 16, one)
            sent += args.runs
            complete = await st.receiver.wait_for(sent, timeout=1800)
            after_many = {n: round(rss_mb(p), 1) for n, p in pids.items()}
            report["memory_mb"] = {
                "after_warmup_runs": warm,
                "after_warmup": after_warm,
                "runs_after_warmup": args.runs,
                "after_runs": after_many,
                "all_delivered": complete,
                "seconds": round(time.monotonic() - started, 1),
            }
            print(json.dumps(report["memory_mb"]), flush=True)

            # 3. A long conversation: the session continues-as-new and stays bounded.
            user = f"long{uuid.uuid4().hex[:6]}"
            for i in range(args.turns):
                await send(http, url, user, f"t{i}")
            sent += args.turns
            await st.receiver.wait_for(sent, timeout=900)
            await asyncio.sleep(1)
            sizes = []
            async for wf in st.client.list_workflows(f'WorkflowId = "{webhook_session_id(user)}"'):
                h = await st.client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
                sizes.append(len(h.events))
            report["long_conversation"] = {
                "turns": args.turns,
                "session_runs": len(sizes),
                "max_events_in_one_run": max(sizes) if sizes else None,
                "suggest_continue_as_new_after_events": args.suggest_can,
            }
            print(json.dumps(report["long_conversation"]), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
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
