"""Scheduled check-ins (``/v1/schedules``) end to end: Temporal Schedule → CheckInWorkflow →
the person's session → the agent's reply pushed to them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from tests.conftest import Stack
from tests.support import eventually, session_id, webhook_headers, webhook_message
from tests.test_replay import each, replayer

APP_KEY = "app-key-" + "a" * 24
OTHER_KEY = "other-key-" + "b" * 24
APP = {"Authorization": f"Bearer {APP_KEY}"}
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}
KEYS = {"messages": {"api_keys": {"app": APP_KEY, "other": OTHER_KEY}}}


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, object]:
    param: dict[str, object] = getattr(request, "param", KEYS)
    return param


async def introduce(stack: Stack, user: str) -> None:
    """The person writes once, so their session records a home conversation."""
    body = webhook_message(user, f"c-{user}", "hi")
    before = len(stack.receiver.received)
    resp = await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, f"msg_{uuid.uuid4().hex}")
    )
    assert resp.status == 202
    await stack.receiver.wait_for(before + 1)


async def create(
    stack: Stack,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    key: str | None = None,
    expect: int = 201,
) -> dict[str, Any]:
    sent = dict(APP if headers is None else headers)
    if key is not None:
        sent["Idempotency-Key"] = key
    resp = await stack.http.post("/v1/schedules", json=body, headers=sent)
    assert resp.status == expect, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def listed(stack: Stack, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    resp = await stack.http.get("/v1/schedules", headers=APP if headers is None else headers)
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    data: list[dict[str, Any]] = answer["data"]
    return data


async def change(
    stack: Stack, public_id: str, what: str, headers: dict[str, str] | None = None
) -> int:
    sent = APP if headers is None else headers
    if what == "delete":
        resp = await stack.http.delete(f"/v1/schedules/{public_id}", headers=sent)
    else:
        resp = await stack.http.post(f"/v1/schedules/{public_id}/{what}", headers=sent)
    return resp.status


def check_ins(stack: Stack, public_id: str) -> list[dict[str, Any]]:
    prefix = f"run/default/webhook/{public_id}."
    return [p for p in stack.receiver.received if str(p["run_id"]).startswith(prefix)]


async def firings(stack: Stack, public_id: str) -> list[WorkflowExecutionStatus | None]:
    query = f'TemporalScheduledById = "schedule/default/{public_id}"'
    return [wf.status async for wf in stack.client.list_workflows(query)]


async def shown(stack: Stack, public_id: str) -> dict[str, Any] | None:
    return next((s for s in await listed(stack) if s["id"] == public_id), None)


async def test_every_s_delivers_in_the_session_until_deleted(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    await introduce(stack, user)
    made = await create(
        stack,
        {"to": {"channel": "webhook", "user_id": user}, "prompt": "how is it going?", "every_s": 2},
    )
    public_id = made["id"]
    assert public_id.startswith("sch_")
    await eventually(lambda: _at_least(stack, public_id, 2), timeout=60)
    first, second = check_ins(stack, public_id)[:2]
    for push in (first, second):
        assert push["text"] == "echo: how is it going?"
        assert push["conversation"]["id"] == f"c-{user}"  # the home conversation
        assert push["user"] == {"id": user}
    assert first["run_id"] != second["run_id"]
    # Each firing ran as a turn of the person's own session, which sees the conversation.
    described = await stack.client.get_workflow_handle(first["run_id"]).describe()
    assert described.parent_id == session_id("webhook", user)

    item = await shown(stack, public_id)
    assert item is not None
    assert item["spec"] == {"every_s": 2}
    assert item["paused"] is False
    assert item["channel"] == "webhook"
    assert "prompt" not in item and "caller" not in item

    assert await change(stack, public_id, "delete") == 200
    assert await change(stack, public_id, "delete") == 404

    # Never again: once every firing started before the delete has closed, each delivered
    # exactly one reply, and a message the person sends afterwards is answered with no
    # further check-in among the pushes.
    async def settled() -> bool:
        statuses = await firings(stack, public_id)
        closed = all(s is not None and s != WorkflowExecutionStatus.RUNNING for s in statuses)
        return closed and len(check_ins(stack, public_id)) == len(statuses)

    await eventually(settled, timeout=60)
    count = len(check_ins(stack, public_id))
    await introduce(stack, user)
    await introduce(stack, user)
    assert len(check_ins(stack, public_id)) == count
    assert len(await firings(stack, public_id)) == count
    assert await shown(stack, public_id) is None


async def _at_least(stack: Stack, public_id: str, n: int) -> bool:
    return len(check_ins(stack, public_id)) >= n


async def test_at_fires_exactly_once(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    await introduce(stack, user)
    at = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    made = await create(
        stack, {"to": {"channel": "webhook", "user_id": user}, "prompt": "reminder", "at": at}
    )
    public_id = made["id"]
    await eventually(lambda: _at_least(stack, public_id, 1), timeout=60)
    [push] = check_ins(stack, public_id)
    assert push["text"] == "echo: reminder"

    async def spent() -> bool:
        item = await shown(stack, public_id)
        return bool(
            item and item["next_at"] is None and (item["last"] or {}).get("outcome") == "submitted"
        )

    await eventually(spent, timeout=60)
    handle = stack.client.get_schedule_handle(f"schedule/default/{public_id}")
    described = await handle.describe()
    assert described.info.num_actions == 1
    assert described.schedule.state.remaining_actions == 0
    assert described.info.next_action_times == []
    assert len(await firings(stack, public_id)) == 1
    assert len(check_ins(stack, public_id)) == 1
    # The firing's message key is the schedule id and the time it was due, to the second.
    due = datetime.fromisoformat(at).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    assert push["run_id"] == f"run/default/webhook/{public_id}.{due}"
    # The check-in's history replays with today's code.
    query = f'TemporalScheduledById = "schedule/default/{public_id}"'
    [firing] = [wf async for wf in stack.client.list_workflows(query)]
    history = await stack.client.get_workflow_handle(firing.id).fetch_history()
    replayed = await replayer().replay_workflows(each([history]), raise_on_replay_failure=False)
    assert replayed.replay_failures == {}
    assert await change(stack, public_id, "delete") == 200


async def test_keys_and_ownership(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    await introduce(stack, user)
    body = {"to": {"channel": "webhook", "user_id": user}, "prompt": "weekly", "cron": "0 9 * * 1"}
    wrong = {"Authorization": "Bearer not-a-key"}
    for headers in ({}, wrong, {"Authorization": APP_KEY}):
        await create(stack, body, headers=headers, expect=401)
        resp = await stack.http.get("/v1/schedules", headers=headers)
        assert resp.status == 401
        for what in ("delete", "pause", "resume"):
            assert await change(stack, "sch_x", what, headers=headers) == 401
    made = await create(stack, body, key="weekly-1")
    public_id = made["id"]
    assert (await create(stack, body, key="weekly-1"))["id"] == public_id  # a retry
    other = await create(stack, body, headers=OTHER, key="weekly-1")
    assert other["id"] != public_id
    await eventually(lambda: _listed_by(stack, public_id, APP), timeout=30)
    await eventually(lambda: _listed_by(stack, other["id"], OTHER), timeout=30)
    assert public_id not in {s["id"] for s in await listed(stack, OTHER)}
    for what in ("delete", "pause", "resume"):
        assert await change(stack, public_id, what, headers=OTHER) == 404
        assert await change(stack, "sch_unknown", what) == 404
    item = await shown(stack, public_id)
    assert item is not None and item["spec"] == {"cron": "0 9 * * 1", "timezone": "UTC"}
    assert item["next_at"] is not None and item["last"] is None
    assert await change(stack, public_id, "delete") == 200
    assert await change(stack, other["id"], "delete", headers=OTHER) == 200


async def _listed_by(stack: Stack, public_id: str, headers: dict[str, str]) -> bool:
    return public_id in {s["id"] for s in await listed(stack, headers)}


async def test_pause_and_resume(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    await introduce(stack, user)
    made = await create(
        stack, {"to": {"channel": "webhook", "user_id": user}, "prompt": "tick", "every_s": 2}
    )
    public_id = made["id"]
    await eventually(lambda: _at_least(stack, public_id, 1), timeout=60)
    assert await change(stack, public_id, "pause") == 200

    async def paused(value: bool) -> bool:
        item = await shown(stack, public_id)
        return bool(item and item["paused"] is value)

    await eventually(lambda: paused(True), timeout=30)
    handle = stack.client.get_schedule_handle(f"schedule/default/{public_id}")
    assert (await handle.describe()).schedule.state.paused
    assert await change(stack, public_id, "resume") == 200
    await eventually(lambda: paused(False), timeout=30)
    before = len(check_ins(stack, public_id))
    await eventually(lambda: _at_least(stack, public_id, before + 1), timeout=60)
    assert await change(stack, public_id, "delete") == 200


@pytest.mark.parametrize(
    "settings_overrides", [{**KEYS, "schedules": {"max_per_identity": 2}}], indirect=True
)
async def test_schedules_per_person_are_bounded(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    await introduce(stack, user)
    to = {"channel": "webhook", "user_id": user}
    cron = {"to": to, "prompt": "standup", "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"}
    made = [(await create(stack, cron))["id"] for _ in range(2)]

    async def both_listed() -> bool:
        return {s["id"] for s in await listed(stack)} >= set(made)

    await eventually(both_listed, timeout=30)
    refused = await create(stack, cron, expect=422)
    assert refused["error"]["code"] == "too_many_schedules"
    # Another person has their own bound.
    somebody = f"u-{uuid.uuid4().hex[:8]}"
    await introduce(stack, somebody)
    extra = await create(stack, {**cron, "to": {"channel": "webhook", "user_id": somebody}})
    assert await change(stack, made[0], "delete") == 200

    async def freed() -> bool:
        return made[0] not in {s["id"] for s in await listed(stack)}

    await eventually(freed, timeout=30)
    third = await create(stack, cron)
    for public_id in (made[1], third["id"], extra["id"]):
        assert await change(stack, public_id, "delete") == 200


async def test_bad_requests_are_refused(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    await introduce(stack, user)
    to = {"channel": "webhook", "user_id": user}
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    cases: list[tuple[dict[str, Any], int]] = [
        ({"to": to, "prompt": "x"}, 400),  # no spec
        ({"to": to, "prompt": "x", "every_s": 5, "cron": "* * * * *"}, 400),
        ({"to": to, "prompt": "x", "every_s": 5, "timezone": "UTC"}, 400),
        ({"to": to, "prompt": "x", "cron": "0 9 * * *", "timezone": "Mars/Olympus"}, 400),
        ({"to": to, "prompt": "x", "cron": "not a cron"}, 400),
        ({"to": to, "prompt": "/link", "every_s": 5}, 400),
        ({"to": to, "prompt": "x", "at": past}, 422),
        ({"to": {"channel": "nowhere", "user_id": user}, "prompt": "x", "every_s": 5}, 422),
        (
            {"to": {"channel": "webhook", "user_id": "never-wrote"}, "prompt": "x", "every_s": 5},
            404,
        ),
    ]
    for body, status in cases:
        await create(stack, body, expect=status)


async def test_operator_commands_show_metadata_only(stack: Stack) -> None:
    from cli.main import _schedules_change, _schedules_list

    user = f"u-{uuid.uuid4().hex[:8]}"
    await introduce(stack, user)
    prompt = "a private prompt " + uuid.uuid4().hex
    made = await create(
        stack,
        {"to": {"channel": "webhook", "user_id": user}, "prompt": prompt, "cron": "0 9 1 1 *"},
    )
    public_id = made["id"]

    async def in_report() -> bool:
        report = await _schedules_list(stack.settings)
        return public_id in {s["id"] for s in report.doc["schedules"]}

    await eventually(in_report, timeout=30)
    report = await _schedules_list(stack.settings)
    [item] = [s for s in report.doc["schedules"] if s["id"] == public_id]
    assert item["caller"] == "app"
    assert prompt not in json.dumps(report.doc, default=str) + "\n".join(report.lines)
    paused = await _schedules_change(stack.settings, f"schedule/default/{public_id}", "pause")
    assert paused.code == 0 and paused.doc["paused"] is True
    assert (
        await stack.client.get_schedule_handle(f"schedule/default/{public_id}").describe()
    ).schedule.state.paused
    resumed = await _schedules_change(stack.settings, public_id, "resume")
    assert resumed.code == 0 and resumed.doc["paused"] is False
    deleted = await _schedules_change(stack.settings, public_id, "delete")
    assert deleted.code == 0 and deleted.doc["deleted"] is True
    gone = await _schedules_change(stack.settings, public_id, "delete")
    assert gone.code == 1 and gone.error is not None
    assert await change(stack, public_id, "pause") == 404


async def test_purging_a_person_deletes_their_check_ins(stack: Stack) -> None:
    from cli.operations import purge_identity, session_id_for

    user = f"purged-{uuid.uuid4().hex[:6]}"
    await introduce(stack, user)
    made = await create(
        stack,
        {"to": {"channel": "webhook", "user_id": user}, "prompt": "weekly?", "every_s": 3600},
    )

    async def visible() -> bool:
        return any(s["id"] == made["id"] for s in await listed(stack))

    await eventually(visible, timeout=20)
    session = session_id_for(stack.settings, "webhook", user, None, "per_user")
    deleted = await purge_identity(stack.client, stack.settings, session)
    assert any(d.endswith(made["id"]) for d in deleted), deleted

    async def gone() -> bool:
        return all(s["id"] != made["id"] for s in await listed(stack))

    await eventually(gone, timeout=20)
