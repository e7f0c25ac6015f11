"""The scale targets side by side in one run: same dev server, same load, floors beside them.

In this order, each followed by its own floor at the same concurrency:

1. a new conversation per message at concurrency 1: p50 at most 1.5x the floor's;
2. a returning conversation (each user warmed up by one answered message, then the next
   messages of the same users in turn) at concurrency 1: p50 at most the floor's, measured
   again right after it rather than reusing the first;
3. a new conversation per message at concurrency 16: throughput at least 0.7x the floor's;
4. one reply to eight destinations (``FanoutWorkflow``, the product's delivery code under the
   stack's ``[delivery]`` policy): p50 at most 1.5x one destination's, the two interleaved.

The floor is ``bench/floor.py`` (one workflow, two trivial activities) from a bare client. A
few messages and floor runs warm the processes up first and are not counted. Each webhook
figure has a per-stage breakdown (``bench.stages``) over about 25 sampled messages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from temporalio.api.enums.v1 import EventType
from temporalio.worker import Worker

from bench.fanout import fanout_worker
from bench.fanout_workflow import FanoutWorkflow
from bench.floor import FloorWorkflow, floor_step
from bench.harness import (
    Stack,
    cpu_per_message,
    drive,
    machine,
    percentiles,
    stack,
    webhook_request,
)
from bench.stages import STAGES, Sent, at, breakdown, first, sample

PROCS = ("worker", "gateway", "temporal")
REPLY_TIMEOUT_S = 60


@dataclass
class Load:
    """One measured load: latencies in seconds, wall seconds, and what was sent."""

    latencies: list[float] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    wall: float = 0.0


async def webhooks(
    st: Stack, http: aiohttp.ClientSession, count: int, concurrency: int, user: Callable[[int], str]
) -> Load:
    """``count`` webhook messages from ``user(i)``, each awaited until its reply arrives."""
    load = Load()

    async def one(i: int) -> None:
        who = user(i)
        msg_id, body, headers = webhook_request(who, f"m{i}")
        started, sent_at = time.monotonic(), time.time()
        async with http.post(
            st.gateway_url + "/channels/webhook", data=body, headers=headers
        ) as resp:
            assert resp.status == 202, resp.status
            acked_at = time.time()
        sent = Sent(msg_id, who, sent_at, acked_at)
        deadline = started + REPLY_TIMEOUT_S
        while sent.reply_key not in st.receiver.first_seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no reply to {msg_id}")
            await asyncio.sleep(0.002)
        load.latencies.append(st.receiver.first_seen[sent.reply_key] - started)
        load.sent.append(sent)

    load.wall = await drive(count, concurrency, one)
    return load


async def floor(st: Stack, task_queue: str, count: int, concurrency: int) -> Load:
    """The floor workflow ``count`` times from the bench's own client."""
    load = Load()

    async def one(i: int) -> None:
        started = time.monotonic()
        await st.client.execute_workflow(
            FloorWorkflow.run, f"v{i}", id=f"floor-{uuid.uuid4().hex}", task_queue=task_queue
        )
        load.latencies.append(time.monotonic() - started)

    load.wall = await drive(count, concurrency, one)
    return load


def new_user(_: int) -> str:
    return f"e{uuid.uuid4().hex[:10]}"


async def measure(
    st: Stack,
    http: aiohttp.ClientSession,
    floor_tq: str,
    name: str,
    count: int,
    concurrency: int,
    user: Callable[[int], str],
) -> dict[str, Any]:
    """One webhook figure, then its floor at the same concurrency."""
    cpu_before = st.cpu(*PROCS)
    load = await webhooks(st, http, count, concurrency, user)
    await asyncio.sleep(1)  # runs close and sessions take their last signal
    cpu = cpu_per_message(cpu_before, st.cpu(*PROCS), count)
    base = await floor(st, floor_tq, count, concurrency)
    e, f = percentiles(load.latencies), percentiles(base.latencies)
    row = {
        "figure": name,
        "concurrency": concurrency,
        "ms": e,
        "floor_ms": f,
        "per_s": round(count / load.wall, 1),
        "floor_per_s": round(count / base.wall, 1),
        "p50_ratio": round(e["p50"] / f["p50"], 2),
        "throughput_ratio": round(base.wall / load.wall, 2),
        "cpu": cpu,
        "breakdown_mean_ms": await breakdown(
            st.client, sample(load.sent), st.receiver.first_seen_at
        ),
    }
    print(json.dumps(row), flush=True)
    return row


async def fanout_breakdown(st: Stack, runs: list[tuple[str, int]]) -> dict[str, float]:
    """Means in ms: the workflow's start → completed, its start → the first destination seen,
    and the spread from the first destination seen to the last (near zero when parallel)."""
    spans: list[float] = []
    first_push: list[float] = []
    spread: list[float] = []
    for wf_id, n in runs:
        events = (await st.client.get_workflow_handle(wf_id).fetch_history()).events
        done = first(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
        seen = [st.receiver.first_seen_at.get(f"{wf_id}:{i}:response") for i in range(n)]
        times = [s for s in seen if s is not None]
        if done:
            spans.append(at(done) - at(events[0]))
        if times:
            first_push.append(min(times) - at(events[0]))
            spread.append(max(times) - min(times))

    def mean(xs: list[float]) -> float:
        return round(statistics.fmean(xs) * 1000, 1) if xs else 0.0

    return {
        "workflow_ms": mean(spans),
        "first_seen_ms": mean(first_push),
        "seen_spread_ms": mean(spread),
    }


async def fanout(st: Stack, http: aiohttp.ClientSession, repeats: int) -> dict[str, Any]:
    """One destination against eight, interleaved so both see the same load."""
    samples: dict[int, list[float]] = {1: [], 8: []}
    runs: dict[int, list[tuple[str, int]]] = {1: [], 8: []}
    async with fanout_worker(st, http, "targets-fanout") as (tq, policy):
        for n in (1, 8):  # warm-up, not counted
            await st.client.execute_workflow(
                FanoutWorkflow.run, args=[n, policy], id=f"fan-{uuid.uuid4().hex}", task_queue=tq
            )
        for _ in range(repeats):
            for n in (1, 8):
                wf_id = f"fan-{uuid.uuid4().hex}"
                started = time.monotonic()
                await st.client.execute_workflow(
                    FanoutWorkflow.run, args=[n, policy], id=wf_id, task_queue=tq
                )
                samples[n].append(time.monotonic() - started)
                runs[n].append((wf_id, n))
    one, eight = percentiles(samples[1]), percentiles(samples[8])
    row = {
        "figure": "fan-out",
        "policy": policy.model_dump(),
        "one_ms": one,
        "eight_ms": eight,
        "p50_ratio": round(eight["p50"] / one["p50"], 2),
        "breakdown_mean_ms": {
            "1": await fanout_breakdown(st, runs[1]),
            "8": await fanout_breakdown(st, runs[8]),
        },
    }
    print(json.dumps(row), flush=True)
    return row


def verdicts(
    new1: dict[str, Any], back: dict[str, Any], new16: dict[str, Any], fan: dict[str, Any]
) -> list[dict[str, Any]]:
    """The four targets: what was measured, what it is held against, and whether it holds."""

    def row(
        figure: str, unit: str, got: float, ref: float, limit: float, at_least: bool, of: str
    ) -> dict[str, Any]:
        ratio = got / ref
        return {
            "figure": figure,
            "unit": unit,
            "measured": got,
            "reference": ref,
            "ratio": round(ratio, 2),
            "target": f"{'>=' if at_least else '<='} {limit}x {of}",
            "met": ratio >= limit if at_least else ratio <= limit,
        }

    floor1, floor_back = new1["floor_ms"]["p50"], back["floor_ms"]["p50"]
    return [
        row("new conversation p50, c=1", "ms", new1["ms"]["p50"], floor1, 1.5, False, "floor"),
        row(
            "new conversation throughput, c=16",
            "msg/s",
            new16["per_s"],
            new16["floor_per_s"],
            0.7,
            True,
            "floor",
        ),
        row(
            "returning conversation p50, c=1",
            "ms",
            back["ms"]["p50"],
            floor_back,
            1.0,
            False,
            "floor",
        ),
        row(
            "eight-way fan-out p50",
            "ms",
            fan["eight_ms"]["p50"],
            fan["one_ms"]["p50"],
            1.5,
            False,
            "one destination",
        ),
    ]


def markdown(report: dict[str, Any]) -> str:
    """The targets, the webhook stages and the fan-out breakdown as Markdown tables."""
    lines = [
        "| figure | measured | floor / reference | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in report["targets"]:
        unit = t["unit"]
        lines.append(
            f"| {t['figure']} | {t['measured']} {unit} | {t['reference']} {unit} | "
            f"{t['ratio']}x | {t['target']} | {'✓' if t['met'] else '✗'} |"
        )
    webhook = report["results"][:3]
    lines += [
        "",
        "| stage (mean ms) | " + " | ".join(r["figure"] for r in webhook) + " |",
        "| --- |" + " --- |" * len(webhook),
    ]
    for stage in [*STAGES, "run_total"]:
        cells = [str(r["breakdown_mean_ms"].get(stage, "—")) for r in webhook]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    fan = report["results"][3]
    lines += [
        "",
        "| destinations | p50 ms | workflow ms | first seen ms | first → last seen ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n, key in (("1", "one_ms"), ("8", "eight_ms")):
        b = fan["breakdown_mean_ms"][n]
        lines.append(
            f"| {n} | {fan[key]['p50']} | {b['workflow_ms']} | {b['first_seen_ms']} | "
            f"{b['seen_spread_ms']} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {
        "machine": machine(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "count": args.count,
        "fanout_repeats": args.fanout_repeats,
        "returning_users": args.returning_users,
    }
    async with stack() as st, aiohttp.ClientSession() as http:
        floor_tq = f"floor-{uuid.uuid4().hex[:6]}"
        async with Worker(
            st.client, task_queue=floor_tq, workflows=[FloorWorkflow], activities=[floor_step]
        ):
            await webhooks(st, http, 5, 1, new_user)  # warm-up, not counted
            await floor(st, floor_tq, 5, 1)
            new1 = await measure(
                st, http, floor_tq, "new conversation c=1", args.count, 1, new_user
            )
            users = [f"r{uuid.uuid4().hex[:10]}" for _ in range(args.returning_users)]
            await webhooks(st, http, len(users), 1, lambda i: users[i])
            await asyncio.sleep(1)
            back = await measure(
                st,
                http,
                floor_tq,
                "returning conversation c=1",
                args.count,
                1,
                lambda i: users[i % len(users)],
            )
            new16 = await measure(
                st, http, floor_tq, "new conversation c=16", args.count, 16, new_user
            )
        fan = await fanout(st, http, args.fanout_repeats)
    report["results"] = [new1, back, new16, fan]
    report["targets"] = verdicts(new1, back, new16, fan)
    report["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))
    print()
    print(markdown(report))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="messages per webhook figure")
    parser.add_argument("--fanout-repeats", type=int, default=30, help="runs per fan-out width")
    parser.add_argument(
        "--returning-users",
        type=int,
        default=20,
        help="users of the returning conversation, each warmed up first and then taken in turn",
    )
    asyncio.run(main(parser.parse_args()))
