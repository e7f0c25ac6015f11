"""Response-target resolution is a pure function; these are its rules."""

from __future__ import annotations

import pytest

from hosting.models import Identity, ReplyAddress
from hosting.targets import ResponseTarget, parse_target, resolve


def addr(channel: str, conv: str = "c") -> ReplyAddress:
    return ReplyAddress(channel=channel, user_id="u", conversation_id=conv)


def account(channel: str, conv: str = "c") -> Identity:
    return Identity(channel=channel, user_id="u", address=addr(channel, conv), session_id="s")


ORIGIN = addr("telegram", "dm")
ACCOUNTS = [account("slack", "D1"), account("web", "b1"), account("telegram", "old")]


def channels(addresses: list[ReplyAddress]) -> list[str]:
    return [a.channel for a in addresses]


def test_parse() -> None:
    assert parse_target("originating") == ResponseTarget()
    assert parse_target("channel:slack") == ResponseTarget(kind="channels", channels=["slack"])
    assert parse_target("channels:slack, web") == ResponseTarget(
        kind="channels", channels=["slack", "web"]
    )
    assert parse_target("all_linked").non_originating
    assert not parse_target("none").non_originating
    for bad in ("everywhere", "channel:", "channels:,"):
        with pytest.raises(ValueError, match="unknown response target"):
            parse_target(bad)


def test_originating_and_none() -> None:
    assert resolve(ResponseTarget(), ORIGIN, ACCOUNTS, None, 8) == [ORIGIN]
    assert resolve(ResponseTarget(kind="none"), ORIGIN, ACCOUNTS, None, 8) == []


def test_named_channels_use_linked_addresses_and_skip_unknown() -> None:
    got = resolve(
        ResponseTarget(kind="channels", channels=["slack", "discord", "web"]),
        ORIGIN,
        ACCOUNTS,
        None,
        8,
    )
    assert channels(got) == ["slack", "web"]
    assert got[0].conversation_id == "D1"


def test_origin_conversation_wins_over_a_stored_one() -> None:
    got = resolve(ResponseTarget(kind="channels", channels=["telegram"]), ORIGIN, ACCOUNTS, None, 8)
    assert got == [ORIGIN]


def test_active_is_the_most_recently_seen_channel() -> None:
    assert channels(resolve(ResponseTarget(kind="active"), ORIGIN, ACCOUNTS, "web", 8)) == ["web"]
    assert resolve(ResponseTarget(kind="active"), ORIGIN, ACCOUNTS, None, 8) == [ORIGIN]


def test_all_linked_is_origin_first_without_repeats_and_bounded() -> None:
    got = resolve(ResponseTarget(kind="all_linked"), ORIGIN, ACCOUNTS, None, 8)
    assert channels(got) == ["telegram", "slack", "web"]
    assert channels(resolve(ResponseTarget(kind="all_linked"), ORIGIN, ACCOUNTS, None, 2)) == [
        "telegram",
        "slack",
    ]
