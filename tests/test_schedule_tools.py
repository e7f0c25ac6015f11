"""The agent's check-in tools and the chat commands on a person's own check-ins, against the
running stack and a fake Chat Completions model.

The fake model reads the user's message as a script: ``remind me every 2s: PROMPT`` (or
``cron EXPR:``, ``at ISO:``) calls ``schedule_check_in``, ``list my check-ins`` calls
``list_check_ins``, ``cancel ID`` calls ``cancel_check_in``; after a tool it answers
``final: <tool result>``, and anything else (a check-in's prompt, say) ``plain: <text>``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from temporalio.client import Client, ScheduleHandle
from temporalio.service import RPCError, RPCStatusCode

from activities.schedules_tools import NO_CONVERSATION, CheckInTools, check_in_tools
from activities.tools import ToolContext
from channels.registry import build_registry
from hosting import search_attributes as sa
from hosting.commands import Command, parse_command
from hosting.ids import identity_hash
from hosting.models import Identity, PushRequest, ReplyAddress, RunView
from hosting.settings import ConfigError
from tests.conftest import Stack, temporal_address
from tests.support import CODEC_KEY, SIGNING_KEY, eventually, make_settings, session_id
from tests.test_replay import each, replayer
from tests.test_tools import FakeModel, serving_model

ROOT = Path(__file__).resolve().parent.parent
APP_KEY = "app-key-" + "c" * 24
REMIND = re.compile(r"^remind me (every (\d+)s|cron (.+?)|at (\S+)): (.+)$")
NO_SUCH = "No such check-in. Send /schedules to see yours."


class CheckInModel(FakeModel):
    """Asks for the check-in tools when told to; records every request it got."""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        messages = body["messages"]
        user = next(m for m in reversed(messages) if m["role"] == "user")["content"]
        results = [m["content"] for m in messages if m["role"] == "tool"]
        if results:
            return self._answer("final: " + results[-1])
        call = self._script(user)
        if call is None:
            return self._answer(f"plain: {user}")
        return self._calls([call], 0)

    @staticmethod
    def _script(user: str) -> tuple[str, dict[str, Any]] | None:
        if user == "list my check-ins":
            return ("list_check_ins", {})
        if user.startswith("cancel "):
            return ("cancel_check_in", {"id": user.removeprefix("cancel ")})
        match = REMIND.match(user)
        if match is None:
            return None
        args: dict[str, Any] = {"prompt": match.group(5)}
        if match.group(2):
            args["every_s"] = int(match.group(2))
        elif match.group(3):
            args["cron"] = match.group(3)
        else:
            args["at"] = match.group(4)
        return ("schedule_check_in", args)


@pytest.fixture
async def model() -> AsyncIterator[CheckInModel]:
    fake = CheckInModel()
    async with serving_model(fake.handle) as fake.url:
        yield fake


@pytest.fixture
def settings_overrides(model: CheckInModel, request: pytest.FixtureRequest) -> dict[str, object]:
    return {
        "agent": {"kind": "openai", "base_url": model.url, "heartbeat_timeout_s": 3},
        "schedules": {"agent_tool": True, **getattr(request, "param", {})},
        "messages": {"api_keys": {"app": APP_KEY}},
    }


def person() -> str:
    """A fresh account per use: sessions outlive the worker of the test that started them."""
    return f"pat-{uuid.uuid4().hex[:8]}"


async def say(stack: Stack, text: str, user: str) -> PushRequest:
    """One loopback message from ``user``; answers the reply its run pushed."""
    msg_id = uuid.uuid4().hex
    body = {"message_id": msg_id, "user": user, "conversation": user, "text": text}
    resp = await stack.http.post("/channels/loopback", data=json.dumps(body))
    assert resp.status == 202
    run_id = f"run/default/loopback/{msg_id}"

    async def replied() -> bool:
        return any(p.run_id == run_id for p in stack.loopback.outbox.sent)

    await eventually(replied, timeout=60)
    return next(p for p in stack.loopback.outbox.sent if p.run_id == run_id)


def tool_answer(push: PushRequest) -> Any:
    assert push.text.startswith("final: "), push.text
    return json.loads(push.text.removeprefix("final: "))


def handle_of(stack: Stack, public_id: str) -> ScheduleHandle:
    return stack.client.get_schedule_handle(f"schedule/default/{public_id}")


async def exists(stack: Stack, public_id: str) -> bool:
    try:
        await handle_of(stack, public_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def listed_for(stack: Stack, user: str) -> set[str]:
    """What the visibility store lists for the person (eventually consistent)."""
    query = f'{sa.IDENTITY_HASH.name} = "{hash_of(user)}"'
    return {entry.id.rsplit("/", 1)[-1] async for entry in await stack.client.list_schedules(query)}


def hash_of(user: str) -> str:
    """The person's keyed identity hash, as their direct conversation's session has it."""
    key = session_id("loopback", user).split("/", 2)[2]
    return identity_hash(make_settings("x", "x").security.identity_key_bytes(), key)


def cli_list(stack: Stack, tmp_path: Path) -> dict[str, Any]:
    """``switchboard schedules list --json``, run as an operator runs it."""
    config = tmp_path / "switchboard.toml"
    config.write_text(
        f'[temporal]\naddress = "{temporal_address(stack.client)}"\n'
        f'[security]\nsigning_key = "{SIGNING_KEY}"\ncodec_keys = ["{CODEC_KEY}"]\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "schedules", "list", "--json"],
        env={**os.environ, "SWITCHBOARD_CONFIG": str(config)},
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    )
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def test_the_chat_commands_parse() -> None:
    assert parse_command("/schedules") == Command(name="schedules")
    assert parse_command("/unschedule sch_ab12") == Command(name="unschedule", argument="sch_ab12")
    assert parse_command("/UNSCHEDULE@bot sch_X") == Command(name="unschedule", argument="sch_X")
    assert parse_command("/schedules please show them") is None  # chat


async def test_remind_me_makes_a_check_in_of_that_person_which_fires_in_their_conversation(
    stack: Stack, model: CheckInModel, tmp_path: Path
) -> None:
    pat = person()
    made = tool_answer(await say(stack, "remind me every 2s: Time to stretch", pat))
    public_id = made["id"]
    assert public_id.startswith("sch_")
    assert made["spec"] == {"every_s": 2}
    offered = {t["function"]["name"]: t["function"] for t in model.requests[0]["tools"]}
    assert set(offered) == {"schedule_check_in", "list_check_ins", "cancel_check_in"}
    params = offered["schedule_check_in"]["parameters"]
    assert params["required"] == ["prompt"]
    assert "context" not in params["properties"]

    # Owned by the person who asked, exactly as if made through the API for them.
    described = await handle_of(stack, public_id).describe()
    assert described.typed_search_attributes.get(sa.IDENTITY_HASH) == hash_of(pat)
    assert described.typed_search_attributes.get(sa.CHANNEL) == "loopback"
    assert await described.memo_value("caller") == "agent"

    # It fires: each firing's answer is delivered to the conversation the person is in.
    prefix = f"run/default/loopback/{public_id}."

    def firings() -> list[PushRequest]:
        return [p for p in stack.loopback.outbox.sent if p.run_id.startswith(prefix)]

    async def fired_twice() -> bool:
        return len(firings()) >= 2

    await eventually(fired_twice, timeout=60)
    for push in firings()[:2]:
        assert push.text == "plain: Time to stretch"
        assert push.address.conversation_id == pat
        assert push.address.user_id == pat
    fired = await stack.client.get_workflow_handle(
        firings()[0].run_id, result_type=RunView
    ).result()
    assert fired.labels["schedule"] == public_id

    # An operator sees it, and so does the person in the chat (nobody else does).
    async def visible() -> bool:
        return public_id in await listed_for(stack, pat)

    await eventually(visible, timeout=30)
    doc = cli_list(stack, tmp_path)
    [item] = [s for s in doc["schedules"] if s["id"] == public_id]
    assert item["caller"] == "agent"
    assert item["channel"] == "loopback"
    assert item["spec"] == {"every_s": 2}
    assert "Time to stretch" not in json.dumps(doc)
    mine = await say(stack, "/schedules", pat)
    assert public_id in mine.text
    assert "every 2 s" in mine.text
    assert "Time to stretch" not in mine.text
    assert public_id not in (await say(stack, "/schedules", person())).text

    # The cancel tool deletes it for good.
    cancelled = tool_answer(await say(stack, f"cancel {public_id}", pat))
    assert cancelled == {"id": public_id, "deleted": True}
    assert not await exists(stack, public_id)


async def test_list_and_cancel_tools_see_only_the_persons_own(stack: Stack) -> None:
    pat, sam = person(), person()
    made = tool_answer(await say(stack, "remind me cron 0 9 * * 1: Weekly plan", pat))
    public_id = made["id"]
    assert made["spec"] == {"cron": "0 9 * * 1", "timezone": "UTC"}

    async def visible() -> bool:
        return public_id in await listed_for(stack, pat)

    await eventually(visible, timeout=30)
    [listed] = tool_answer(await say(stack, "list my check-ins", pat))
    assert listed["id"] == public_id
    assert listed["spec"] == {"cron": "0 9 * * 1", "timezone": "UTC"}
    assert listed["paused"] is False and listed["next_at"] is not None
    assert "prompt" not in listed

    # Someone else sees none of it and cannot cancel it: the answer is an unknown id's.
    assert tool_answer(await say(stack, "list my check-ins", sam)) == []
    refused = await say(stack, f"cancel {public_id}", sam)
    assert refused.text == "final: error: no such check-in"
    unknown = await say(stack, "cancel sch_nosuch", sam)
    assert unknown.text == refused.text
    assert await exists(stack, public_id)

    # Bad specs are results for the model, not failed runs.
    two = await say(stack, "remind me at 2020-01-01T09:00:00Z: Too late", pat)
    assert two.text == "final: error: at: this time has passed"
    assert tool_answer(await say(stack, f"cancel {public_id}", pat))["deleted"] is True
    assert not await exists(stack, public_id)


@pytest.mark.parametrize("settings_overrides", [{"max_per_identity": 2}], indirect=True)
async def test_the_tool_counts_towards_the_persons_bound(stack: Stack) -> None:
    pat = person()
    await say(stack, "hello", pat)  # a home conversation, for the API's check-in
    resp = await stack.http.post(
        "/v1/schedules",
        json={
            "to": {"channel": "loopback", "user_id": pat},
            "prompt": "From the app",
            "cron": "0 8 * * *",
        },
        headers={"Authorization": f"Bearer {APP_KEY}"},
    )
    assert resp.status == 201, await resp.text()
    by_api = (await resp.json())["id"]
    by_tool = tool_answer(await say(stack, "remind me cron 0 9 * * *: Plan the day", pat))["id"]

    async def both_visible() -> bool:
        return await listed_for(stack, pat) >= {by_api, by_tool}

    await eventually(both_visible, timeout=30)
    third = await say(stack, "remind me cron 0 10 * * *: One too many", pat)
    assert third.text == (
        "final: error: This person has 2 schedules, the most allowed (schedules.max_per_identity)."
    )
    run = await stack.client.get_workflow_handle(third.run_id, result_type=RunView).result()
    assert run.status == "completed"
    assert await listed_for(stack, pat) == {by_api, by_tool}
    # The API's check-in reaches the same person, so their tool lists and cancels it too.
    listed = {item["id"] for item in tool_answer(await say(stack, "list my check-ins", pat))}
    assert listed == {by_api, by_tool}
    for public_id in (by_api, by_tool):
        assert tool_answer(await say(stack, f"cancel {public_id}", pat))["deleted"] is True


async def test_schedules_and_unschedule_in_the_chat(stack: Stack, model: CheckInModel) -> None:
    pat, sam = person(), person()
    assert (await say(stack, "/schedules", pat)).text == "You have no check-ins."
    public_id = tool_answer(await say(stack, "remind me cron 30 7 * * 1-5: Standup", pat))["id"]

    async def visible() -> bool:
        return public_id in await listed_for(stack, pat)

    await eventually(visible, timeout=30)
    shown = (await say(stack, "/schedules", pat)).text
    lines = shown.splitlines()
    assert lines[0] == "Your check-ins (1):"
    assert lines[1].startswith(f"- {public_id}, cron 30 7 * * 1-5 (UTC), next ")
    assert lines[-1] == "Send /unschedule ID to delete one."

    # Another person's /unschedule of this id is answered as an unknown id is.
    assert (await say(stack, f"/unschedule {public_id}", sam)).text == NO_SUCH
    assert (await say(stack, "/unschedule sch_0000", sam)).text == NO_SUCH
    assert (await say(stack, "/unschedule nonsense", pat)).text == NO_SUCH
    assert (await say(stack, "/unschedule", pat)).text == (
        "Send /unschedule ID, with an id from /schedules."
    )
    assert await exists(stack, public_id)

    deleted = await say(stack, f"/unschedule {public_id}", pat)
    assert deleted.text == f"Deleted check-in {public_id}: it will not fire again."
    assert not await exists(stack, public_id)
    assert (await say(stack, f"/unschedule {public_id}", pat)).text == NO_SUCH
    # The command's run replays with today's code (its patch marker recorded).
    history = await stack.client.get_workflow_handle(deleted.run_id).fetch_history()
    replayed = await replayer().replay_workflows(each([history]), raise_on_replay_failure=False)
    assert replayed.replay_failures == {}
    # Commands never reach the model, not even as the transcript of later turns.
    assert model.requests
    assert all("/schedules" not in json.dumps(r["messages"]) for r in model.requests)


async def test_a_retried_tool_call_makes_one_check_in(stack: Stack) -> None:
    pat = person()
    await say(stack, "hello", pat)
    tools = CheckInTools(stack.client, stack.settings, stack.registry)
    who = Identity(
        channel="loopback",
        user_id=pat,
        address=ReplyAddress(channel="loopback", user_id=pat, conversation_id=pat),
        session_id=session_id("loopback", pat),
    )
    context = ToolContext(
        idempotency_key="run/default/loopback/m1:call_0",
        run_id="run/default/loopback/m1",
        call_id="call_0",
        attempt=1,
        caller=who,
    )
    first = await tools.schedule_check_in(prompt="Tea?", cron="0 16 * * *", context=context)
    again = await tools.schedule_check_in(
        prompt="Tea?", cron="0 16 * * *", context=replace(context, attempt=2)
    )
    assert first == again
    public_id = json.loads(first)["id"]

    async def visible() -> bool:
        return public_id in await listed_for(stack, pat)

    await eventually(visible, timeout=30)
    assert await listed_for(stack, pat) == {public_id}
    # Without a person to act for, nothing is made.
    alone = replace(context, caller=None, idempotency_key="run/x:call_1")
    assert await tools.schedule_check_in(prompt="Tea?", every_s=60, context=alone) == (
        NO_CONVERSATION
    )
    assert await tools.list_check_ins(context=alone) == NO_CONVERSATION
    assert json.loads(await tools.cancel_check_in(id=public_id, context=context))["deleted"]


async def test_the_tools_need_the_openai_agent(client: Client) -> None:
    settings = make_settings("tq", "127.0.0.1:1", schedules={"agent_tool": True})
    with pytest.raises(ConfigError, match="schedules.agent_tool"):
        check_in_tools(client, settings, build_registry(settings))
    off = make_settings("tq", "127.0.0.1:1")
    assert check_in_tools(client, off, build_registry(off)) == []
