"""Fan-out: one reply delivered to 1, 4 and 8 destinations at once.

A run delivers to every destination concurrently, each through ``push_with_retries`` and the
``push_reply`` activity. This bench drives exactly that mechanism (the product's code) from a
small workflow, to N webhook conversations, because one person rarely has eight channels.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from temporalio.worker import Worker

from activities.delivery import DeliveryActivities
from bench.fanout_workflow import FanoutWorkflow
from bench.harness import Stack, machine, percentiles, stack
from channels.catalog import load_settings
from channels.registry import build_registry
from hosting.models import DeliveryPolicy
from worker import workflow_runner


def configured_policy(config: str) -> DeliveryPolicy:
    """The retry policy a run carries under the configuration file ``config``."""
    settings = load_settings(config)
    return DeliveryPolicy.model_validate(
        settings.delivery.model_dump(include=set(DeliveryPolicy.model_fields))
    )


@asynccontextmanager
async def fanout_worker(
    st: Stack, http: aiohttp.ClientSession, name: str = "fanout"
) -> AsyncIterator[tuple[str, DeliveryPolicy]]:
    """A worker for :class:`FanoutWorkflow` with the product's push activity on a task queue
    of its own; yields that queue and the policy the stack's configuration gives a run."""
    config = str(st.config)
    tq = f"{name}-{uuid.uuid4().hex[:6]}"
    delivery = DeliveryActivities(build_registry(load_settings(config)), http)
    async with Worker(
        st.client,
        task_queue=tq,
        workflows=[FanoutWorkflow],
        activities=[delivery.push_reply],
        workflow_runner=workflow_runner(),
    ):
        yield tq, configured_policy(config)


async def main(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {"machine": machine(), "repeats": args.repeats, "results": []}
    async with (
        stack() as st,
        aiohttp.ClientSession() as http,
        fanout_worker(st, http) as (
            tq,
            policy,
        ),
    ):
        base: float | None = None
        for n in args.destinations:
            samples = []
            for _ in range(args.repeats):
                started = time.monotonic()
                await st.client.execute_workflow(
                    FanoutWorkflow.run,
                    args=[n, policy],
                    id=f"fan-{uuid.uuid4().hex}",
                    task_queue=tq,
                )
                samples.append(time.monotonic() - started)
            p = percentiles(samples)
            base = base or p["p50"]
            row = {"destinations": n, "ms": p, "p50_vs_one": round(p["p50"] / base, 2)}
            report["results"].append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--destinations", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
