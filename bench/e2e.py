"""End to end: signed webhook → echo agent → signed push at a local receiver.

Latency is from sending the webhook to the receiver's first sight of the reply's idempotency
key. Each message is its own conversation, so sessions run in parallel. The floor is a bare
Temporal client starting one workflow with two trivial activities and awaiting its result, on
the same dev server. A breakdown comes from the sampled runs' histories. CPU seconds of the
worker, gateway and dev server processes per message give a sizing figure that, unlike the
latencies, does not depend on the other load on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from typing import Any

import aiohttp
from temporalio.worker import Worker

from bench.floor import FloorWorkflow, floor_step
from bench.harness import cpu_per_message, machine, percentiles, stack
from bench.stages import Sent, sample
from bench.stages import breakdown as stage_breakdown
from bench.targets import floor, new_user, webhooks


async def breakdown(
    client: Any, sampled: list[Sent], seen_at: dict[str, float]
) -> dict[str, float]:
    """Mean milliseconds per stage (``bench.stages``), with this script's earlier names
    beside them: ``session_queue`` is ``session``, ``agent_activity`` is ``agent``, and
    ``delivery`` is ``to_push`` (agent done → receiver, so it holds whether or not the push
    is a local activity); ``run_total`` runs from the run's start to the receiver."""
    means = await stage_breakdown(client, sampled, seen_at)
    aliases = {"session_queue": "session", "agent_activity": "agent", "delivery": "to_push"}
    return {**means, **{old: means[new] for old, new in aliases.items() if new in means}}


async def main(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {
        "machine": machine(),
        "count": args.count,
        "workers": args.workers,
        "results": [],
    }
    async with stack(workers=args.workers) as st:
        floor_tq = f"floor-{uuid.uuid4().hex[:6]}"
        async with Worker(
            st.client, task_queue=floor_tq, workflows=[FloorWorkflow], activities=[floor_step]
        ):
            # What the processes burn doing nothing (pollers, metrics), to read the figures by.
            procs = ("worker", "gateway", "temporal")
            idle_before = st.cpu(*procs)
            await asyncio.sleep(10)
            idle = st.cpu(*procs)
            report["idle_cpu_ms_per_s"] = {
                n: round((idle[n] - idle_before[n]) / 10 * 1000, 1) for n in procs
            }
            print(json.dumps({"idle_cpu_ms_per_s": report["idle_cpu_ms_per_s"]}), flush=True)
            async with aiohttp.ClientSession() as http:
                for concurrency in args.concurrency:
                    cpu_before = st.cpu(*procs)
                    load = await webhooks(st, http, args.count, concurrency, new_user)
                    await asyncio.sleep(2)  # runs close and sessions take their last signal
                    cpu = cpu_per_message(cpu_before, st.cpu(*procs), args.count)
                    base = await floor(st, floor_tq, args.count, concurrency)
                    e, f = percentiles(load.latencies), percentiles(base.latencies)
                    row = {
                        "concurrency": concurrency,
                        "e2e_ms": e,
                        "floor_ms": f,
                        "e2e_per_s": round(args.count / load.wall, 1),
                        "floor_per_s": round(args.count / base.wall, 1),
                        "p50_ratio": round(e["p50"] / f["p50"], 2),
                        "p99_ratio": round(e["p99"] / f["p99"], 2),
                        "throughput_ratio": round(base.wall / load.wall, 2),
                        "cpu": cpu,
                        "breakdown_mean_ms": await breakdown(
                            st.client, sample(load.sent), st.receiver.first_seen_at
                        ),
                    }
                    report["results"].append(row)
                    print(json.dumps(row), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    asyncio.run(main(parser.parse_args()))
