"""The check-in activities: one firing of a schedule enters the person's session, and the
chat commands ``/schedules`` and ``/unschedule ID`` read and delete the person's own.

The firing's submission is the gateway's own intake (``routes.schedules.fire_check_in``: the
recorded home address, update-with-start ``SessionWorkflow.submit``), handed in by
``worker.py``: activities may import neither routes nor workflows, and a check-in should enter
a session exactly as an inbound message does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio import activity
from temporalio.client import Client

from activities.schedules_store import (
    Owner,
    apply_change,
    list_check_ins,
    owned_schedule,
    person_of,
    summary,
)
from channels.registry import ChannelRegistry
from hosting.ids import InvalidKey
from hosting.logs import get_logger
from hosting.models import (
    CheckInFiring,
    CheckInListing,
    CheckInQuery,
    CheckInRemoved,
    CheckInResult,
    Identity,
)
from hosting.settings import Settings

FireCheckIn = Callable[[CheckInFiring], Awaitable[CheckInResult]]
log = get_logger("switchboard.schedules")


class CheckInActivities:
    def __init__(self, fire: FireCheckIn) -> None:
        self._fire = fire

    @activity.defn(name="submit_check_in")
    async def submit_check_in(self, firing: CheckInFiring) -> CheckInResult:
        """Idempotent: the message key is the firing's, so a retry is the same update."""
        return await self._fire(firing)


def owner_of(settings: Settings, registry: ChannelRegistry, who: Identity) -> Owner | None:
    """The person an account is, as their check-ins record them (None: nobody here)."""
    channel = registry.get(who.channel)
    if channel is None:
        return None
    try:
        hashed = person_of(settings, channel, who.user_id, who.address.conversation_id)
    except InvalidKey:
        return None
    return Owner(identity=hashed)


class OwnCheckInActivities:
    """What a person may do to the check-ins that reach them, from the chat."""

    def __init__(self, client: Client, settings: Settings, registry: ChannelRegistry) -> None:
        self._client = client
        self._settings = settings
        self._registry = registry

    @activity.defn(name="list_own_check_ins")
    async def list_own_check_ins(self, query: CheckInQuery) -> CheckInListing:
        """Metadata only: id, spec, next firing, paused."""
        owner = owner_of(self._settings, self._registry, query.owner)
        if owner is None:
            return CheckInListing()
        found = await list_check_ins(
            self._client, self._settings.gateway.tenant, owner, with_last=False
        )
        return CheckInListing(check_ins=[summary(item) for item in found])

    @activity.defn(name="delete_own_check_in")
    async def delete_own_check_in(self, query: CheckInQuery) -> CheckInRemoved:
        """Someone else's id and an unknown one come back the same. Idempotent: a retry after
        the delete finds nothing, and the workflow reads the first attempt's answer."""
        owner = owner_of(self._settings, self._registry, query.owner)
        if owner is None or query.public_id is None:
            return CheckInRemoved(deleted=False)
        tenant = self._settings.gateway.tenant
        handle = await owned_schedule(self._client, tenant, query.public_id, owner)
        if handle is None:
            return CheckInRemoved(deleted=False)
        await apply_change(handle, "delete", note="delete by the person, from the chat")
        log.info("schedule changed", schedule_id=handle.id, caller="person", change="delete")
        return CheckInRemoved(deleted=True)
