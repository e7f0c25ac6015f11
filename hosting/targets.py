"""Response targets: where a run's reply goes, as a pure function of target, origin and links.

``originating`` (default) · ``channel:NAME`` · ``channels:A,B`` · ``active`` (the most recently
seen account) · ``all_linked`` (every account of the person) · ``none``. Non-originating
targets are refused unless ``delivery.allow_non_originating`` is on, and fan-out is capped by
``delivery.max_fanout``.
"""

from __future__ import annotations

from hosting.models import Identity, ReplyAddress, ResponseTarget


def parse_target(value: str) -> ResponseTarget:
    """Parse the ``response_target`` setting; raises ValueError with the accepted forms."""
    value = value.strip()
    if value in ("originating", "active", "all_linked", "none"):
        return ResponseTarget(kind=value)
    prefix, _, rest = value.partition(":")
    names = [n.strip() for n in rest.split(",") if n.strip()]
    if prefix in ("channel", "channels") and names:
        return ResponseTarget(kind="channels", channels=names)
    raise ValueError(
        f"unknown response target {value!r} (use originating, active, all_linked, none, "
        "channel:NAME or channels:A,B)"
    )


def destination_key(address: ReplyAddress) -> str:
    """Where a reply lands (channel, conversation, thread): two addresses with the same key
    are one delivery, so a fan-out never posts twice to the same place."""
    return f"{address.channel}:{address.conversation_id}:{address.thread_id or ''}"


def destination_label(address: ReplyAddress) -> str:
    """What a run calls a delivery in its view, idempotency keys and dead letters: the channel
    name, which operators type as ``--destination`` (a run delivers once per channel)."""
    return address.channel


def resolve(
    target: ResponseTarget,
    origin: ReplyAddress,
    accounts: list[Identity],
    active_channel: str | None,
    max_fanout: int,
) -> list[ReplyAddress]:
    """The addresses to deliver to, origin first, without repeats, at most ``max_fanout``."""
    by_channel: dict[str, ReplyAddress] = {}
    for account in accounts:
        by_channel.setdefault(account.channel, account.address)
    by_channel[origin.channel] = origin  # the conversation the message came from wins
    if target.kind == "none":
        chosen: list[ReplyAddress] = []
    elif target.kind == "originating":
        chosen = [origin]
    elif target.kind == "active":
        chosen = [by_channel.get(active_channel or origin.channel, origin)]
    elif target.kind == "all_linked":
        chosen = [origin, *by_channel.values()]
    else:
        chosen = [by_channel[name] for name in target.channels if name in by_channel]
    unique: dict[str, ReplyAddress] = {}
    for address in chosen:
        unique.setdefault(destination_key(address), address)
    return list(unique.values())[:max_fanout]
