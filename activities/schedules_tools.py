"""The agent's check-in tools (``[schedules] agent_tool = true``): ``schedule_check_in``,
``list_check_ins`` and ``cancel_check_in``.

They act for the person whose message started the run (``ToolContext.caller``), exactly as
``POST /v1/schedules`` would for that person: the check-in reaches the conversation they are
in, counts towards ``[schedules] max_per_identity``, and list and cancel see only that
person's check-ins. What cannot be done is a result the model reads (``error: ...``), never a
failed run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, ValidationError
from temporalio.client import Client

from activities.schedules import owner_of
from activities.schedules_store import (
    NewCheckIn,
    apply_change,
    create_check_in,
    list_check_ins,
    owned_schedule,
    summary,
)
from activities.tools import ToolContext
from channels.registry import ChannelRegistry
from hosting.checkins import AGENT_CALLER, CheckInRefused, CheckInSpec
from hosting.ids import tuple_key
from hosting.models import CheckInTo
from hosting.settings import ConfigError, Settings

NO_CONVERSATION = "error: check-ins need a conversation with a person, and this run has none"
NOT_FOUND = "error: no such check-in"


class CheckInTools:
    """Bound to the worker's client and settings; each method is one tool."""

    def __init__(self, client: Client, settings: Settings, registry: ChannelRegistry) -> None:
        self._client = client
        self._settings = settings
        self._registry = registry

    def tools(self) -> list[Callable[..., Any]]:
        return [self.schedule_check_in, self.list_check_ins, self.cancel_check_in]

    async def schedule_check_in(
        self,
        *,
        prompt: Annotated[
            str,
            Field(
                description="what you will be asked when it fires, e.g. 'Remind them to stretch'"
            ),
        ],
        every_s: Annotated[int | None, Field(description="repeat every this many seconds")] = None,
        cron: Annotated[
            str | None, Field(description="a five-field cron expression, e.g. '0 9 * * 1-5'")
        ] = None,
        timezone: Annotated[
            str | None, Field(description="IANA time zone of cron, e.g. 'Europe/Berlin'")
        ] = None,
        at: Annotated[
            datetime | None,
            Field(description="once, at this ISO 8601 time with an offset"),
        ] = None,
        context: ToolContext,
    ) -> str:
        """Schedule a check-in with the person you are talking to: when it fires you are
        given the prompt in this conversation and your answer is sent to them. Give exactly
        one of every_s, cron (optionally with timezone) or at."""
        who = context.caller
        if who is None:
            return NO_CONVERSATION
        try:
            spec = CheckInSpec(every_s=every_s, cron=cron, timezone=timezone, at=at)
        except ValidationError as exc:
            return "error: " + "; ".join(
                e["msg"].removeprefix("Value error, ") for e in exc.errors()
            )
        new = NewCheckIn(
            to=CheckInTo(
                channel=who.channel,
                user_id=who.user_id,
                conversation_id=who.address.conversation_id,
                thread_id=who.address.thread_id,
            ),
            prompt=prompt,
            spec=spec,
            caller=AGENT_CALLER,
            # The call's own key: a retried call finds the check-in its first attempt made.
            key=tuple_key(context.idempotency_key),
            by_agent=True,
        )
        channel = self._registry.get(who.channel)
        try:
            public_id = await create_check_in(self._client, self._settings, channel, new)
        except CheckInRefused as exc:
            return f"error: {exc.message}"
        return json.dumps({"id": public_id, "spec": spec.spec_label()})

    async def list_check_ins(self, *, context: ToolContext) -> str:
        """The check-ins of the person you are talking to: id, spec, next firing, paused."""
        owner = owner_of(self._settings, self._registry, context.caller) if context.caller else None
        if owner is None:
            return NO_CONVERSATION
        found = await list_check_ins(
            self._client, self._settings.gateway.tenant, owner, with_last=False
        )
        return json.dumps([summary(item).model_dump(mode="json") for item in found])

    async def cancel_check_in(
        self,
        *,
        id: Annotated[str, Field(description="the check-in's id, sch_…")],
        context: ToolContext,
    ) -> str:
        """Delete one of the person's check-ins for good."""
        owner = owner_of(self._settings, self._registry, context.caller) if context.caller else None
        if owner is None:
            return NO_CONVERSATION
        handle = await owned_schedule(self._client, self._settings.gateway.tenant, id, owner)
        if handle is None:
            return NOT_FOUND
        await apply_change(handle, "delete", note="delete by the agent, for the person")
        return json.dumps({"id": id, "deleted": True})


def check_in_tools(
    client: Client, settings: Settings, registry: ChannelRegistry
) -> list[Callable[..., Any]]:
    """The tools ``[schedules] agent_tool`` adds (none without it)."""
    if not settings.schedules.agent_tool:
        return []
    if settings.agent.kind != "openai":
        raise ConfigError("schedules.agent_tool: the tools need agent.kind = 'openai'")
    return CheckInTools(client, settings, registry).tools()
