"""Payload models: strict at the edge, and an unknown version is refused, never guessed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hosting.models import PAYLOAD_VERSION, ChannelRequest, ReplyAddress, SessionState


def test_unknown_payload_version_is_a_clear_error() -> None:
    state = SessionState(tenant="t", isolation_key="k", identity_hash="h", channel="c")
    data = state.model_dump()
    data["version"] = PAYLOAD_VERSION + 1
    with pytest.raises(
        ValidationError, match=f"payload version {PAYLOAD_VERSION + 1} is not supported"
    ):
        SessionState.model_validate(data)


def test_models_are_frozen_and_reject_unknown_fields() -> None:
    address = ReplyAddress(channel="c", user_id="u", conversation_id="v")
    with pytest.raises(ValidationError):
        ReplyAddress.model_validate({**address.model_dump(), "surprise": 1})
    with pytest.raises(ValidationError):
        address.channel = "other"  # type: ignore[misc]


def test_oversized_text_is_refused() -> None:
    address = ReplyAddress(channel="c", user_id="u", conversation_id="v")
    with pytest.raises(ValidationError):
        ChannelRequest(
            tenant="t", channel="c", message_key="m", user_id="u", conversation_id="v",
            text="x" * 100_001, reply_to=address,
        )  # fmt: skip
