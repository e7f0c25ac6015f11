"""Flat memory: steady load for a long time, worker and gateway RSS sampled along the way.

A short run cannot tell a filling cache from a leak; a slope over thousands of runs after the
caches are full can. Closed-loop lanes (each sends one webhook and waits for its reply) keep the
load steady; conversations cycle over a fixed set of users, so sessions are reused and
continue-as-new as they would in service (``--suggest-can`` makes that happen within a short
run). The slope is a least-squares fit of RSS against runs
completed, over the samples after the warm-up, in MB per 10,000 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import aiohttp

from bench.harness import Stack, machine, rss_mb, stack, webhook_request


def slope_per_10k(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of (runs, MB) in MB per 10,000 runs; None below two distinct xs."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return round(sxy / sxx * 10_000, 2)


async def lane(
    http: aiohttp.ClientSession,
    st: Stack,
    lane_no: int,
    users: int,
    stop_at: float,
    c: dict[str, int],
) -> None:
    """Send, wait for the reply, repeat until ``stop_at``."""
    i = 0
    while time.monotonic() < stop_at:
        user = f"soak{(lane_no + i * 7) % users}"
        msg_id, body, headers = webhook_request(user, f"m{lane_no}.{i}")
        i += 1
        try:
            async with http.post(
                st.gateway_url + "/channels/webhook", data=body, headers=headers
            ) as resp:
                status = resp.status
        except aiohttp.ClientError:
            status = 0
        if status != 202:
            c[f"status_{status}"] = c.get(f"status_{status}", 0) + 1
            await asyncio.sleep(0.5)
            continue
        c["sent"] += 1
        key = f"run/default/webhook/{msg_id}:webhook:response"
        deadline = time.monotonic() + 120
        while key not in st.receiver.first_seen and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        c["completed" if key in st.receiver.first_seen else "unanswered"] += 1


async def main(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {"machine": machine(), "args": vars(args), "samples": []}
    print(json.dumps({"machine": report["machine"], "args": report["args"]}), flush=True)
    server_args = []
    if args.suggest_can:
        server_args = [
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={args.suggest_can}",
        ]
    async with stack(server_args=server_args) as st, aiohttp.ClientSession() as http:
        pids = {name: st.procs[name].pid for name in ("worker", "gateway")}
        counters = {"sent": 0, "completed": 0, "unanswered": 0}
        started = time.monotonic()
        stop_at = started + args.minutes * 60
        lanes = [
            asyncio.create_task(lane(http, st, n, args.users, stop_at, counters))
            for n in range(args.concurrency)
        ]

        def sample() -> dict[str, Any]:
            row = {
                "minute": round((time.monotonic() - started) / 60, 2),
                "runs": counters["completed"],
                **{f"{n}_rss_mb": round(rss_mb(p), 1) for n, p in pids.items()},
            }
            report["samples"].append(row)
            print(json.dumps(row), flush=True)
            return row

        sample()
        while time.monotonic() < stop_at:
            await asyncio.sleep(min(args.every_s, max(0.0, stop_at - time.monotonic())))
            sample()
        await asyncio.gather(*lanes)
        sample()
        warm = [s for s in report["samples"] if s["minute"] >= args.warmup_minutes]
        report["summary"] = {
            **counters,
            "minutes": round((time.monotonic() - started) / 60, 1),
            "runs_per_s": round(counters["completed"] / (time.monotonic() - started), 1),
            "warmup_minutes": args.warmup_minutes,
            "samples_after_warmup": len(warm),
            "runs_after_warmup": (warm[-1]["runs"] - warm[0]["runs"]) if warm else 0,
            **{
                f"{n}_mb_per_10k_runs": slope_per_10k([(s["runs"], s[f"{n}_rss_mb"]) for s in warm])
                for n in pids
            },
            **{
                f"{n}_rss_mb_first_last": [warm[0][f"{n}_rss_mb"], warm[-1][f"{n}_rss_mb"]]
                for n in pids
                if warm
            },
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        }
    print(json.dumps(report["summary"]), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0, help="duration of the load")
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop lanes")
    parser.add_argument("--users", type=int, default=200, help="conversations cycled over")
    parser.add_argument("--every-s", type=float, default=60.0, help="seconds between samples")
    parser.add_argument(
        "--warmup-minutes", type=float, default=5.0, help="samples before this are not fitted"
    )
    parser.add_argument(
        "--suggest-can",
        type=int,
        default=0,
        help="server's continue-as-new suggestion in events (0: the server's default); low "
        "values let sessions cycle within the run, so the cache reaches its steady state",
    )
    asyncio.run(main(parser.parse_args()))
