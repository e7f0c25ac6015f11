"""Price per message on each common path, from the histories the message touched.

Paths: a new conversation (the message creates the session), a returning conversation (the
session exists), a proactive message (``POST /v1/messages`` to a person who wrote before) and an
eight-way fan-out. The fan-out is priced on ``bench/fanout_workflow.py`` (the product's delivery
code to 1 and 8 destinations): its difference is what seven more destinations add to a run.
Messages are sent one at a time and the namespace is left to settle between them, so each
footprint is one message's alone.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp
from temporalio.worker import Worker

from activities.delivery import DeliveryActivities
from bench.actions import Footprint, Ledger, server_actions
from bench.fanout_workflow import FanoutWorkflow
from bench.harness import Stack, webhook_request
from channels.catalog import load_settings
from channels.registry import build_registry
from worker import workflow_runner

MESSAGES_KEY = "bench-messages-0123456789abcdef"
MESSAGES = f"""
[messages]
api_keys = {{ bench = "{MESSAGES_KEY}" }}
"""


class Pricer:
    """Sends one message at a time and charges it the footprint it left."""

    def __init__(self, st: Stack, http: aiohttp.ClientSession, metrics_url: str) -> None:
        self.st, self.http, self.metrics_url = st, http, metrics_url
        self.ledger = Ledger(st.client)

    async def measure(self, send: Callable[[], Awaitable[None]]) -> Footprint:
        """Run ``send()`` (which returns once the reply arrived) and price what it did."""
        before = await self.ledger.settle()
        self.ledger.known = before
        await send()
        return await self.ledger.footprint(before)

    async def metered(self) -> Counter[str]:
        """The server's action counter once it has stopped moving (it is flushed in batches)."""
        last = await server_actions(self.metrics_url)
        while True:
            await asyncio.sleep(2)
            now = await server_actions(self.metrics_url)
            if now == last:
                return now
            last = now

    async def path(self, sends: list[Callable[[], Awaitable[None]]]) -> dict[str, Any]:
        """Per-message averages over ``sends``, one message at a time."""
        start = await self.metered()
        fps = [await self.measure(send) for send in sends]
        server = await self.metered()
        server.subtract(start)
        return per_message(fps, +server)

    async def webhook(self, user: str) -> None:
        msg_id, body, headers = webhook_request(user, "hello")
        url = self.st.gateway_url + "/channels/webhook"
        async with self.http.post(url, data=body, headers=headers) as resp:
            assert resp.status == 202, resp.status
        await self.wait_key(f"run/default/webhook/{msg_id}:webhook:response")

    async def proactive(self, user: str) -> None:
        headers = {"Authorization": f"Bearer {MESSAGES_KEY}"}
        body = {"to": {"channel": "webhook", "user_id": user}, "text": "your order shipped"}
        url = self.st.gateway_url + "/v1/messages"
        async with self.http.post(url, json=body, headers=headers) as resp:
            assert resp.status == 202, (resp.status, await resp.text())
            public_id = (await resp.json())["id"]
        await self.wait_key(f"message/default/{public_id}:webhook:response")

    async def wait_key(self, key: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while key not in self.st.receiver.first_seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no reply under {key}")
            await asyncio.sleep(0.01)


def per_message(fps: list[Footprint], server: Counter[str]) -> dict[str, Any]:
    total = Footprint()
    for fp in fps:
        total.add(fp)
    n = len(fps)
    row: dict[str, Any] = {k: round(v / n, 2) for k, v in sorted(total.counts.items())}
    row["executions_touched"] = round(total.executions / n, 2)
    row["server_action_counter"] = {k: round(v / n, 2) for k, v in sorted(server.items())}
    row["server_actions"] = round(sum(server.values()) / n, 2)
    row["messages"] = n
    return row


def derived_fanout(returning: dict[str, Any], one: dict[str, Any], eight: dict[str, Any]) -> Any:
    """A returning conversation's run with seven more destinations: returning + (8 - 1)."""
    keys = [k for k, v in returning.items() if isinstance(v, float | int) and k != "messages"]
    row = {k: round(returning[k] + eight.get(k, 0) - one.get(k, 0), 2) for k in keys}
    row["derived"] = "returning_conversation + fanout_workflow_8 - fanout_workflow_1"
    return row


async def price_paths(
    st: Stack, http: aiohttp.ClientSession, metrics_url: str, repeats: int
) -> dict[str, Any]:
    """Per-message averages over ``repeats`` messages on every path."""
    p = Pricer(st, http, metrics_url)
    users = [f"price{uuid.uuid4().hex[:8]}" for _ in range(repeats)]
    rows: dict[str, Any] = {}
    for path, send in (
        ("new_conversation", p.webhook),
        ("returning_conversation", p.webhook),
        ("proactive_message", p.proactive),
    ):
        rows[path] = await p.path([partial(send, u) for u in users])
        print(json.dumps({path: rows[path]}), flush=True)
    rows.update(await price_fanout(p, repeats))
    rows["eight_way_fanout"] = derived_fanout(
        rows["returning_conversation"], rows["fanout_workflow_1"], rows["fanout_workflow_8"]
    )
    return rows


async def price_fanout(p: Pricer, repeats: int) -> dict[str, Any]:
    settings = load_settings(str(p.st.config))
    tq = f"price-fanout-{uuid.uuid4().hex[:6]}"
    delivery = DeliveryActivities(build_registry(settings), p.http)
    rows: dict[str, Any] = {}
    async with Worker(
        p.st.client,
        task_queue=tq,
        workflows=[FanoutWorkflow],
        activities=[delivery.push_reply],
        workflow_runner=workflow_runner(),
    ):
        for n in (1, 8):

            async def fan(n: int = n) -> None:
                await p.st.client.execute_workflow(
                    FanoutWorkflow.run, n, id=f"fan-{uuid.uuid4().hex}", task_queue=tq
                )

            rows[f"fanout_workflow_{n}"] = await p.path([fan] * repeats)
    return rows
