"""Workflow IDs: deterministic, and no hostile component can break their shape."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hosting.ids import (
    InvalidKey,
    delivery_key,
    identity_hash,
    isolation_key,
    pseudonym,
    run_workflow_id,
    session_workflow_id,
)

IK = b"i" * 32


def test_isolation_keys_follow_the_scope_with_pseudonyms_only() -> None:
    user = pseudonym(IK, "user:telegram", "42")
    assert isolation_key("per_user", "telegram", "42", "-100", identity_key=IK) == (
        f"telegram:{user}"
    )
    u1, c1 = pseudonym(IK, "user:slack", "U1"), pseudonym(IK, "conversation:slack", "C1")
    assert isolation_key("per_user_per_conversation", "slack", "U1", "C1", identity_key=IK) == (
        f"slack:{u1}@{c1}"
    )
    assert isolation_key("per_conversation", "slack", "U1", "C1", identity_key=IK) == (
        f"slack@{c1}"
    )
    key = isolation_key("per_user", "webhook", "alice@example.com", "c", identity_key=IK)
    assert "alice" not in key and "example" not in key
    assert key != isolation_key(
        "per_user", "webhook", "alice@example.com", "c", identity_key=b"j" * 32
    )
    # The same id on two channels is two people.
    assert pseudonym(IK, "user:slack", "U1") != pseudonym(IK, "user:telegram", "U1")


def test_the_identity_key_is_derived_from_the_signing_key_unless_set() -> None:
    import base64

    from hosting.settings import SecuritySettings

    signing = base64.b64encode(b"s" * 32).decode()
    derived = SecuritySettings(signing_key=signing).identity_key_bytes()
    assert derived == SecuritySettings(signing_key=signing).identity_key_bytes()
    assert derived != b"s" * 32
    rotated = base64.b64encode(b"t" * 32).decode()
    explicit = base64.b64encode(IK).decode()
    assert SecuritySettings(signing_key=signing, identity_key=explicit).identity_key_bytes() == (
        SecuritySettings(signing_key=rotated, identity_key=explicit).identity_key_bytes()
    )


def test_ids_have_the_documented_shape() -> None:
    assert session_workflow_id("default", "webhook:alice") == "session/default/webhook:alice"
    assert run_workflow_id("default", "webhook", "msg_1") == "run/default/webhook/msg_1"
    assert delivery_key("run/default/webhook/msg_1", "webhook", "response") == (
        "run/default/webhook/msg_1:webhook:response"
    )


@pytest.mark.parametrize("bad", ["", "a/b", "a\x00b", "a\nb", "..", "x" * 201, "a\x7fb"])
def test_bad_components_are_refused(bad: str) -> None:
    with pytest.raises(InvalidKey):
        run_workflow_id("default", "webhook", bad)
    with pytest.raises(InvalidKey):
        isolation_key("per_user", "webhook", bad, "c", identity_key=IK)


@given(st.text(max_size=300))
def test_any_accepted_component_keeps_the_id_shape(value: str) -> None:
    try:
        wid = run_workflow_id("t", "c", value)
    except InvalidKey:
        return
    assert wid.count("/") == 3 and wid.endswith(value)


def test_identity_hash_is_keyed_and_stable() -> None:
    a = identity_hash(b"k" * 32, "webhook:alice")
    assert a == identity_hash(b"k" * 32, "webhook:alice")
    assert a != identity_hash(b"j" * 32, "webhook:alice")
    assert "alice" not in a and len(a) == 32
