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
