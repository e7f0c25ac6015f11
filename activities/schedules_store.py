"""Scheduled check-ins in Temporal: create, list, find and change them, for every door.

``POST /v1/schedules`` (``routes.schedules``), the agent's check-in tools
(``activities.schedules_tools``), the chat commands ``/schedules`` and ``/unschedule``
(``activities.schedules``) and the operator CLI all call these, so a check-in is made, counted
and owned the same way whoever asks. Each is one Temporal Schedule
``schedule/{tenant}/sch_{tuple_key(caller, key)}`` whose action starts ``CheckInWorkflow``.
Schedules are found by search attributes and memo (caller, spec), never by reading the
prompt, which is content and never logged.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionResult,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    WorkflowExecutionStatus,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from activities.names import CHECKIN_WORKFLOW
from channels.base import Channel
from hosting import search_attributes as sa
from hosting.checkins import (
    AGENT_CALLER,
    ID_PREFIX,
    LABELS_KIND,
    MIN_CATCHUP_S,
    CheckInRefused,
    CheckInSpec,
    public_id_of,
    refusal,
    schedule_spec,
)
from hosting.ids import (
    InvalidKey,
    check_component,
    checkin_workflow_id,
    identity_hash,
    isolation_key,
    schedule_id,
    session_workflow_id,
    tuple_key,
)
from hosting.logs import get_logger
from hosting.models import CheckInInput, CheckInResult, CheckInSummary, CheckInTo
from hosting.settings import Settings

log = get_logger("switchboard.schedules")

# Has the session this person recorded a conversation to reach them in? (Asked only when a
# check-in names no conversation; the session is a workflow, which this layer cannot query.)
HomeKnown = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True)
class Owner:
    """Whose check-ins: an API caller's own (not those the agent made), a person's (every
    check-in that reaches them, by their keyed identity hash), or, with neither, any."""

    caller: str | None = None
    identity: str | None = None


@dataclass(frozen=True)
class NewCheckIn:
    to: CheckInTo
    prompt: str
    spec: CheckInSpec
    caller: str  # a ``[messages]`` caller's name, or AGENT_CALLER
    key: str | None = None  # idempotency key, scoped to the caller
    by_agent: bool = False  # made by the agent's tool: the person owns it, no caller does


def person_key(settings: Settings, channel: Channel, user_id: str, conversation_id: str) -> str:
    """The isolation key of the session a person's direct conversation on ``channel`` lives
    in (the rule inbound messages follow): a check-in's person, whoever made it."""
    return isolation_key(
        channel.direct_scope(),
        channel.name,
        user_id,
        conversation_id,
        identity_key=settings.security.identity_key_bytes(),
    )


def person_of(settings: Settings, channel: Channel, user_id: str, conversation_id: str) -> str:
    """The keyed identity hash a person's check-ins carry (and are found by)."""
    key = person_key(settings, channel, user_id, conversation_id)
    return identity_hash(settings.security.identity_key_bytes(), key)


def channel_refusal(channel: Channel | None, name: str) -> CheckInRefused | None:
    """A check-in is pushed: the channel must exist here and push."""
    if channel is None:
        return CheckInRefused(422, "unknown_channel", f"to.channel: no channel {name!r} here")
    if channel.pull:
        return CheckInRefused(
            422, "channel_not_pushed", f"to.channel: {name!r} cannot receive pushed messages"
        )
    return None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


async def _owned_by(
    owner: Owner, memo: Callable[[str], Awaitable[Any]], attributes: TypedSearchAttributes
) -> bool:
    made_by = await memo("caller")
    if not isinstance(made_by, str) or await memo("kind") != LABELS_KIND:
        return False
    if owner.caller is not None and (
        await memo("via") == AGENT_CALLER or not _same(made_by, owner.caller)
    ):
        return False
    if owner.identity is not None:
        hashed = attributes.get(sa.IDENTITY_HASH)
        if hashed is None or not _same(hashed, owner.identity):
            return False
    return True


def _memo_reader(entry: Any) -> Callable[[str], Awaitable[Any]]:
    async def read(key: str) -> Any:
        return await entry.memo_value(key, default=None)

    return read


async def last_outcome(client: Client, recent: list[ScheduleActionResult]) -> dict[str, Any] | None:
    """The newest firing: when it was due, its workflow's status and what it did."""
    if not recent:
        return None
    last = recent[-1]
    shown: dict[str, Any] = {
        "fired_at": last.scheduled_at.isoformat(),
        "status": None,
        "outcome": None,
    }
    action = last.action
    if not isinstance(action, ScheduleActionExecutionStartWorkflow):
        return shown
    handle = client.get_workflow_handle(
        action.workflow_id, run_id=action.first_execution_run_id, result_type=CheckInResult
    )
    try:
        described = await handle.describe()
        status = described.status
        shown["status"] = status.name.lower() if status else None
        if status == WorkflowExecutionStatus.COMPLETED:
            result = await handle.result()
            shown["outcome"] = result.outcome
            shown["run_id"] = result.run_id
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:  # gone with its retention: due time only
            raise
    return shown


async def list_check_ins(
    client: Client, tenant: str, owner: Owner = Owner(), *, with_last: bool = True
) -> list[dict[str, Any]]:
    """Check-ins of a tenant, optionally of one caller or person: metadata only (id, caller,
    spec, next firing, paused, last outcome). Visibility is eventually consistent: a schedule
    made a moment ago may be missing still."""
    query = f"{sa.TENANT.name} = {sa.visibility_literal(tenant)}"
    if owner.identity is not None:
        query += f" AND {sa.IDENTITY_HASH.name} = {sa.visibility_literal(owner.identity)}"
    found: list[dict[str, Any]] = []
    async for entry in await client.list_schedules(query):
        if not await _owned_by(owner, _memo_reader(entry), entry.typed_search_attributes):
            continue
        info = entry.info
        state = entry.schedule.state if entry.schedule else None
        next_times = info.next_action_times if info else []
        recent = list(info.recent_actions) if info else []
        found.append(
            {
                "id": public_id_of(entry.id),
                "object": "schedule",
                "caller": await entry.memo_value("caller", default=None),
                "channel": entry.typed_search_attributes.get(sa.CHANNEL),
                "spec": await entry.memo_value("spec", default=None),
                "next_at": next_times[0].isoformat() if next_times else None,
                "paused": bool(state and state.paused),
                "last": await last_outcome(client, recent) if with_last else None,
            }
        )
    return found


def summary(item: dict[str, Any]) -> CheckInSummary:
    """A listed check-in as its person is shown it (``/schedules``, the list tool)."""
    return CheckInSummary(
        id=item["id"],
        spec=item["spec"] or {},
        next_at=datetime.fromisoformat(item["next_at"]) if item["next_at"] else None,
        paused=item["paused"],
    )


async def owned_schedule(
    client: Client, tenant: str, public_id: str, owner: Owner = Owner()
) -> ScheduleHandle | None:
    """One check-in by id, if ``owner``'s (any, for an operator's ``Owner()``); None for
    unknown ids and other owners' schedules alike."""
    if not public_id.startswith(ID_PREFIX):
        return None
    try:
        handle = client.get_schedule_handle(schedule_id(tenant, public_id))
    except InvalidKey:
        return None
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if not await _owned_by(owner, _memo_reader(described), described.typed_search_attributes):
        return None
    return handle


async def apply_change(handle: ScheduleHandle, change: str, *, note: str) -> dict[str, bool]:
    """``delete`` (for good: no firing after it), ``pause`` or ``resume``; the note is
    metadata (who did it), shown in the Web UI's Schedules page."""
    if change == "delete":
        await handle.delete()
        return {"deleted": True}
    if change == "pause":
        await handle.pause(note=note)
        return {"paused": True}
    await handle.unpause(note=note)
    return {"paused": False}


async def create_check_in(
    client: Client,
    settings: Settings,
    channel: Channel | None,
    new: NewCheckIn,
    *,
    home_known: HomeKnown | None = None,
) -> str:
    """Make one check-in and answer its public id; a retry with the same key answers the
    first id and makes nothing. Raises :class:`CheckInRefused` for what may not be made
    (and ``RPCError`` while Temporal is unreachable)."""
    to = new.to
    refused = channel_refusal(channel, to.channel) or refusal(
        new.spec, new.prompt, datetime.now(UTC)
    )
    if refused is not None:
        raise refused
    assert channel is not None
    tenant = settings.gateway.tenant
    try:
        if new.key is not None:
            check_component(new.key, "Idempotency-Key")
        # Three parts for the agent's: no API caller's (caller, key) can spell its id.
        parts = (new.caller, "tool") if new.by_agent else (new.caller,)
        public_id = ID_PREFIX + tuple_key(*parts, new.key or uuid.uuid4().hex)
        sid = schedule_id(tenant, public_id)
        key = person_key(settings, channel, to.user_id, to.conversation_id or to.user_id)
        session = session_workflow_id(tenant, key)
    except InvalidKey as exc:
        raise CheckInRefused(400, "invalid_request", str(exc)) from None
    hashed = identity_hash(settings.security.identity_key_bytes(), key)
    if new.key is not None:
        # The agent's key is its tool call's (unique to the run): the person owns the result.
        retry = Owner(identity=hashed) if new.by_agent else Owner(caller=new.caller)
        if await owned_schedule(client, tenant, public_id, retry):
            return public_id
    if to.conversation_id is None and home_known is not None and not await home_known(session):
        raise CheckInRefused(
            404,
            "recipient_not_found",
            "No conversation with this person is known: they have not written on "
            f"{to.channel!r} yet. Give a full address (to.conversation_id).",
        )
    # Counted in the visibility store: two creates at the same instant may both pass.
    existing = await list_check_ins(client, tenant, Owner(identity=hashed), with_last=False)
    if len(existing) >= settings.schedules.max_per_identity:
        raise CheckInRefused(
            422,
            "too_many_schedules",
            f"This person has {len(existing)} schedules, the most allowed "
            "(schedules.max_per_identity).",
        )
    try:
        await _start(client, settings, new, public_id, sid, hashed)
    except ScheduleAlreadyRunningError:
        return public_id  # a concurrent retry made it first
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise CheckInRefused(400, "invalid_request", f"schedule: {exc.message[:200]}") from None
        raise
    log.info(
        "schedule created",
        schedule_id=sid,
        caller=new.caller,
        channel=to.channel,
        spec=next(iter(new.spec.spec_label())),
    )
    return public_id


async def _start(
    client: Client, settings: Settings, new: NewCheckIn, public_id: str, sid: str, hashed: str
) -> None:
    tenant = settings.gateway.tenant
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(sa.TENANT, tenant),
            SearchAttributePair(sa.CHANNEL, new.to.channel),
            SearchAttributePair(sa.IDENTITY_HASH, hashed),
        ]
    )
    spec, state = schedule_spec(new.spec)
    max_age_s = settings.delivery.max_age_s
    inp = CheckInInput(
        public_id=public_id,
        tenant=tenant,
        caller=new.caller,
        prompt=new.prompt,
        to=new.to,
        max_age_s=max_age_s,
    )
    memo: dict[str, Any] = {
        "kind": LABELS_KIND,
        "caller": new.caller,
        "spec": new.spec.spec_label(),
    }
    if new.by_agent:
        memo["via"] = AGENT_CALLER
    await client.create_schedule(
        sid,
        Schedule(
            action=ScheduleActionStartWorkflow(
                CHECKIN_WORKFLOW,
                inp,
                id=checkin_workflow_id(tenant, public_id),
                task_queue=settings.temporal.task_queue,
                typed_search_attributes=attributes,
            ),
            spec=spec,
            # Never late, never piled up: a firing missed by more than the reply age limit is
            # dropped, and none starts while the previous one still runs.
            policy=SchedulePolicy(
                overlap=ScheduleOverlapPolicy.SKIP,
                catchup_window=timedelta(seconds=max(MIN_CATCHUP_S, max_age_s)),
            ),
            state=state,
        ),
        memo=memo,
        search_attributes=attributes,
    )
