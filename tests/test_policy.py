"""Authorization policy: allowlists, claims, link requirement, default; no silent deny-all."""

from __future__ import annotations

import pytest

from hosting.policy import Decision, check_policy, decide
from hosting.settings import ChannelSettings, ConfigError
from tests.support import WEBHOOK_SECRET, make_settings


def channel(**kw: object) -> ChannelSettings:
    return ChannelSettings.model_validate(kw)


def test_default_allow_and_default_deny() -> None:
    assert decide(channel(), "allow", "u1", {}) is Decision.ALLOWED
    assert decide(channel(), "deny", "u1", {}) is Decision.DENIED


def test_native_id_allowlist() -> None:
    c = channel(allow_native_ids=["u1"])
    assert decide(c, "allow", "u1", {}) is Decision.ALLOWED
    assert decide(c, "allow", "u2", {}) is Decision.DENIED


def test_claims_are_all_of_across_claims_and_any_of_within() -> None:
    c = channel(allow_claims={"tenant": ["t1", "t2"], "role": ["staff"]})
    assert decide(c, "deny", "x", {"tenant": "t2", "role": "staff"}) is Decision.ALLOWED
    assert decide(c, "deny", "x", {"tenant": "t2"}) is Decision.DENIED
    assert decide(c, "deny", "x", {"tenant": "t3", "role": "staff"}) is Decision.DENIED


def test_require_link_when_not_otherwise_allowed() -> None:
    c = channel(require_link=True, allow_native_ids=["boss"])
    assert decide(c, "allow", "boss", {}) is Decision.ALLOWED
    assert decide(c, "allow", "someone", {}) is Decision.LINK_REQUIRED


def test_a_deny_everyone_configuration_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="would deny everyone"):
        check_policy(make_settings("q", "a", authorization={"default": "deny"}))
    ok = make_settings(
        "q",
        "a",
        authorization={"default": "deny"},
        channels={
            "loopback": {"enabled": False},
            "webhook": {"secret": WEBHOOK_SECRET, "allow_native_ids": ["u1"]},
        },
    )
    check_policy(ok)


def test_allow_claims_on_a_channel_that_never_verifies_them_is_refused_at_start() -> None:
    from channels.registry import build_registry

    settings = make_settings(
        "q", "127.0.0.1:1", channels={"loopback": {"allow_claims": {"tid": ["t1"]}}}
    )
    with pytest.raises(ConfigError) as refused:
        build_registry(settings)
    assert str(refused.value) == (
        "channels.loopback.allow_claims: tid is never verified by this channel "
        "(claims it produces: none)"
    )


def test_public_channels_open_to_everyone_are_listed_for_a_warning() -> None:
    from channels.registry import build_registry, open_to_everyone

    settings = make_settings(
        "q",
        "127.0.0.1:1",
        channels={
            "loopback": {},
            "webhook": {"secret": WEBHOOK_SECRET},
            "web": {},
            "telegram": {"bot_token": "1:x", "secret_token": "s", "allow_native_ids": ["42"]},
        },
    )
    # The web page is public; the webhook and loopback callers hold our secrets; telegram has
    # an allowlist.
    assert open_to_everyone(build_registry(settings), settings) == ["web"]
    closed = make_settings("q", "127.0.0.1:1", authorization={"default": "deny"},
                           channels={"web": {"require_link": True}})  # fmt: skip
    assert open_to_everyone(build_registry(closed), closed) == []
