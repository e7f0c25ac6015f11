"""Horizontally scaled: two gateways and two workers on one Temporal server.

The load generator acts as a load balancer: it spreads messages over both gateways and, when
one fails (connection refused, reset, 5xx), retries the same message (same ``webhook-id``)
on the other. Mid-load one gateway and one worker are SIGKILLed and not restarted. Replies are
counted at the receiver by idempotency key; the run histories say which worker completed each
activity. Afterwards the killed gateway is started again and each continuation surface is
checked across gateways: a Responses API token issued by one is read by the other, a
``/v1/runs/{token}?stream=true`` stream follows on the other a run created on the first, and a
web chat browser (its cookie) posts on one gateway and follows the run on the other.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
from temporalio.api.enums.v1 import EventType

from bench.harness import Stack, drive, free_port, stack, tally, webhook_request

API_KEY = "sk-scale-0123456789"
EXTRA = f"""
[channels.web]
[channels.responses.api_keys]
scale = "{API_KEY}"
"""
# The echo agent streams its words 20 ms apart, so a run is still answering when it is followed.
ENV = {"SWITCHBOARD_AGENT__STREAM_DELAY_MS": "20"}


async def send_balanced(
    http: aiohttp.ClientSession,
    gateways: list[str],
    first: int,
    user: str,
    text: str,
    counters: Counter[str],
    give_up_s: float = 180,
) -> str:
    """POST to ``gateways[first]``; on failure retry the same message on the next gateway."""
    msg_id = f"s{uuid.uuid4().hex}"
    deadline = time.monotonic() + give_up_s
    turn = first
    while True:
        _, body, headers = webhook_request(user, text, msg_id)
        url = gateways[turn % len(gateways)]
        try:
            async with http.post(url + "/channels/webhook", data=body, headers=headers) as resp:
                status = resp.status
        except aiohttp.ClientError:
            status = 0
        if status == 202:
            counters[f"accepted_by_gateway{turn % len(gateways) + 1}"] += 1
            return msg_id
        counters[f"retried_after_{status or 'connection_error'}"] += 1
        if time.monotonic() > deadline:
            raise RuntimeError("gave up sending")
        turn += 1
        await asyncio.sleep(0.2)


async def work_by_worker(st: Stack, msg_ids: list[str], pids: dict[int, str]) -> dict[str, Any]:
    """Completed activities and workflow tasks per worker identity, from the run histories."""
    activities: Counter[str] = Counter()
    tasks: Counter[str] = Counter()

    def who(identity: str) -> str:
        """The SDK's default identity is ``pid@host``: name the process by its pid."""
        pid = identity.split("@", 1)[0]
        return pids.get(int(pid), identity) if pid.isdigit() else identity

    for m in msg_ids:
        history = await st.client.get_workflow_handle(f"run/default/webhook/{m}").fetch_history()
        for ev in history.events:
            if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                activities[who(ev.activity_task_completed_event_attributes.identity)] += 1
            elif ev.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                tasks[who(ev.workflow_task_completed_event_attributes.identity)] += 1
    return {"activities_completed": dict(activities), "workflow_tasks_completed": dict(tasks)}


async def responses_across(http: aiohttp.ClientSession, gw1: str, gw2: str) -> dict[str, Any]:
    """A Responses API run created on gateway 1, read and streamed on gateway 2."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    words = " ".join(f"w{i}" for i in range(40))
    body = {"model": "m", "input": words, "background": True}
    async with http.post(gw1 + "/v1/responses", json=body, headers=auth) as resp:
        assert resp.status == 200, (resp.status, await resp.text())
        token = (await resp.json())["id"]
    events: list[dict[str, Any]] = []
    async with http.get(f"{gw2}/v1/runs/{token}?stream=true", headers=auth) as resp:
        stream_status = resp.status
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: {}":
                events.append(json.loads(line[6:]))
    async with http.get(f"{gw2}/v1/runs/{token}", headers=auth) as resp:
        run_status, run = resp.status, await resp.json()
    async with http.get(f"{gw2}/v1/responses/{token}", headers=auth) as resp:
        retrieved = await resp.json()
    return {
        "token_read_on_gateway2": run_status == 200 and run.get("status") == "completed",
        "responses_retrieve_on_gateway2": retrieved.get("status"),
        "sse_on_gateway2_status": stream_status,
        "sse_events": len(events),
        "sse_events_with_partial_text": sum(1 for e in events if e.get("partial_text")),
        "sse_last_status": events[-1].get("status") if events else None,
    }


async def webchat_across(http: aiohttp.ClientSession, gw1: str, gw2: str) -> dict[str, Any]:
    """A browser that got its cookie from gateway 1 posts there and follows on gateway 2, then
    posts on gateway 2 with the same cookie."""
    async with http.get(gw1 + "/") as resp:
        page = await resp.text()
        cookie = {"sb_web": resp.cookies["sb_web"].value}
    csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    headers = {"X-CSRF-Token": csrf}
    out: dict[str, Any] = {}
    for n, (post_on, follow_on) in enumerate(((gw1, gw2), (gw2, gw1))):
        message_id = f"m{n}{uuid.uuid4().hex[:8]}"
        body = {"message_id": message_id, "text": f"hello {n}"}
        async with http.post(
            post_on + "/channels/web", json=body, headers=headers, cookies=cookie
        ) as resp:
            posted = resp.status
            token = (await resp.json()).get("token")
        last: dict[str, Any] = {}
        async with http.get(
            f"{follow_on}/channels/web/runs/{message_id}/events", cookies=cookie
        ) as resp:
            events_status = resp.status
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("data: ") and line != "data: {}":
                    last = json.loads(line[6:])
        async with http.get(f"{follow_on}/v1/runs/{token}", cookies=cookie) as resp:
            by_token = (await resp.json()).get("status") if resp.status == 200 else resp.status
        out[f"posted_on_gateway{n + 1}"] = {
            "post": posted,
            "events_on_other_gateway": events_status,
            "last_event_status": last.get("status"),
            "token_on_other_gateway": by_token,
        }
    return out


async def horizontal(count: int) -> dict[str, Any]:
    async with stack(workers=2, extra_config=EXTRA, env=ENV) as st, aiohttp.ClientSession() as http:
        port2 = free_port()
        gw1, gw2 = st.gateway_url, f"http://127.0.0.1:{port2}"
        st.spawn("gateway2", "gateway", {"SWITCHBOARD_GATEWAY__PORT": str(port2)})
        await st.wait_ready(url=gw2)
        pids = {st.procs["worker"].pid: "worker1", st.procs["worker1"].pid: "worker2"}
        counters: Counter[str] = Counter()
        sent: list[str] = []
        marks: dict[str, list[str]] = {}
        kill_gateway, kill_worker = count // 3, count // 2

        async def one(i: int) -> None:
            if i == kill_gateway:
                st.kill("gateway")
                counters["gateways_killed"] += 1
            if i == kill_worker:
                st.kill("worker")
                counters["workers_killed"] += 1
                marks["answered_before_worker_kill"] = list(st.receiver.first_seen)
            sent.append(await send_balanced(http, [gw1, gw2], i, f"h{i % 100}", f"m{i}", counters))

        started = time.monotonic()
        await drive(count, 16, one)
        complete = await st.receiver.wait_for(len(sent), timeout=900)
        seconds = round(time.monotonic() - started, 1)
        result: dict[str, Any] = {
            "scenario": "two gateways, two workers; one of each SIGKILLed mid-load",
            **tally(sent, st.receiver),
            **dict(sorted(counters.items())),
            "all_answered": complete,
            "seconds": seconds,
        }
        # Which worker did the work: while both ran (replies already in at the kill), and all.
        before = {k.split("/")[-1].split(":")[0] for k in marks["answered_before_worker_kill"]}
        result["while_both_workers_ran"] = await work_by_worker(
            st, [m for m in sent if m in before], pids
        )
        result["whole_run"] = await work_by_worker(st, sent, pids)
        # A replacement for the killed gateway: any gateway serves any continuation.
        st.spawn("gateway")
        await st.wait_ready()
        result["responses_across_gateways"] = await responses_across(http, gw1, gw2)
        result["webchat_across_gateways"] = await webchat_across(http, gw1, gw2)
        result["continuations_ok"] = continuations_ok(result)
        return result


def continuations_ok(r: dict[str, Any]) -> bool:
    resp = r["responses_across_gateways"]
    web = r["webchat_across_gateways"].values()
    return bool(
        resp["token_read_on_gateway2"]
        and resp["responses_retrieve_on_gateway2"] == "completed"
        and resp["sse_last_status"] == "completed"
        and all(
            w["post"] == 202
            and w["last_event_status"] == "completed"
            and w["token_on_other_gateway"] == "completed"
            for w in web
        )
    )
