"""Price per message on each common path, from the histories the message touched.

Paths: a new conversation (the message creates the session), a returning conversation (the
session exists), a proactive message (``POST /v1/messages`` to a person who wrote before) and an
eight-way fan-out. Eight linked channels are more than a bench can set up, so the fan-out is
one destination plus seven times what a second, really linked one (loopback) adds; the bench
fan-out workflow (the product's delivery code to 1 and 8 destinations) is priced beside it as
a check that destinations add up linearly. Messages are sent one at a time and the namespace
is left to settle between them, so each footprint is one message's alone.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp

from bench.actions import Footprint, Ledger, server_actions
from bench.fanout import fanout_worker
from bench.fanout_workflow import FanoutWorkflow
from bench.harness import Receiver, Stack, free_port, stack, webhook_request

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

    async def measure(self, send: Callable[[], Awaitable[object]]) -> Footprint:
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

    async def path(self, sends: list[Callable[[], Awaitable[object]]]) -> dict[str, Any]:
        """Per-message averages over ``sends``, one message at a time."""
        start = await self.metered()
        fps = [await self.measure(send) for send in sends]
        server = await self.metered()
        server.subtract(start)
        return per_message(fps, +server)

    async def webhook(self, user: str, text: str = "hello") -> str:
        """One webhook message, once its reply arrived; returns the reply's key."""
        msg_id, body, headers = webhook_request(user, text)
        url = self.st.gateway_url + "/channels/webhook"
        async with self.http.post(url, data=body, headers=headers) as resp:
            assert resp.status == 202, resp.status
        key = f"run/default/webhook/{msg_id}:webhook:response"
        await self.wait_key(key)
        return key

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


def derived_fanout(one: dict[str, Any], two: dict[str, Any]) -> dict[str, Any]:
    """Eight destinations: one, plus seven times what the second destination added."""
    keys = [k for k, v in one.items() if isinstance(v, float | int) and k != "messages"]
    row: dict[str, Any] = {
        k: round(one[k] + 7 * (two.get(k, 0) - one[k]), 2) for k in keys if "." not in k
    }
    row["derived"] = "linked_one_destination + 7 x (linked_two - linked_one_destination)"
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
    rows.update(await price_linked(http, repeats))
    rows["eight_way_fanout"] = derived_fanout(rows["linked_one_destination"], rows["linked_two"])
    return rows


# Appended to ``[channels.webhook]``, the last table ``write_config`` writes: replies go to
# every linked account, and the loopback channel holds the second account.
LINKED_EXTRA = 'response_target = "all_linked"\n[channels.loopback]\n'
LINKED_ENV = {"SWITCHBOARD_DELIVERY__ALLOW_NON_ORIGINATING": "true"}
CODE = re.compile(r"\b([A-Z2-9]{4}-[A-Z2-9]{4})\b")


async def price_linked(http: aiohttp.ClientSession, repeats: int) -> dict[str, Any]:
    """Returning conversations whose replies go to one destination and, once the person has
    linked a second account, to two: the difference is the price of one more destination."""
    metrics_port = free_port()
    receiver = Receiver(keep_bodies=True)
    async with stack(
        server_args=["--metrics-port", str(metrics_port)],
        extra_config=LINKED_EXTRA,
        env=LINKED_ENV,
        receiver=receiver,
    ) as st:
        p = Pricer(st, http, f"http://127.0.0.1:{metrics_port}/metrics")
        owner, solo = f"own{uuid.uuid4().hex[:8]}", f"solo{uuid.uuid4().hex[:8]}"
        asked = await p.webhook(owner, "/link")
        match = CODE.search(json.loads(receiver.bodies[asked])["text"])
        assert match, "no link code in the reply"
        body = {
            "message_id": uuid.uuid4().hex,
            "user": owner + "-l",
            "conversation": owner + "-l",
            "text": f"/link {match.group(1)}",
            "direct": True,
        }
        async with http.post(st.gateway_url + "/channels/loopback", json=body) as resp:
            assert resp.status == 202, resp.status
        await p.webhook(solo)
        await p.ledger.settle()
        rows = {
            "linked_one_destination": await p.path([partial(p.webhook, solo)] * repeats),
            "linked_two": await p.path([partial(p.webhook, owner)] * repeats),
        }
        two = rows["linked_two"]
        pushed = two["activities"] + two.get("local_activities", 0)
        assert pushed == 3, "the second account was not linked"  # the agent and two pushes
        return rows


async def price_fanout(p: Pricer, repeats: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    async with fanout_worker(p.st, p.http, "price-fanout") as (tq, policy):
        for n in (1, 8):

            async def fan(n: int = n) -> None:
                await p.st.client.execute_workflow(
                    FanoutWorkflow.run,
                    args=[n, policy],
                    id=f"fan-{uuid.uuid4().hex}",
                    task_queue=tq,
                )

            rows[f"fanout_workflow_{n}"] = await p.path([fan] * repeats)
    return rows
