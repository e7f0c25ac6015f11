"""Replies to every linked account (all_linked), with the user's input echoed elsewhere."""

from __future__ import annotations

import pytest

from hosting import search_attributes as sa
from hosting.models import DeliveryState, RunView
from hosting.settings import ConfigError
from tests.conftest import Stack
from tests.support import WEBHOOK_SECRET, eventually, make_settings, session_id
from tests.test_linking import links, loopback_say, new_code, webhook_say
from tests.test_replay import replayer

FANOUT = pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "delivery": {
                "allow_non_originating": True,
                "initial_interval_s": 0.2,
                "max_interval_s": 1.0,
                "max_attempts": 4,
            },
            "channels": {"loopback": {"response_target": "all_linked", "echo_input": True}},
        }
    ],
    indirect=True,
)


@FANOUT
async def test_reply_goes_to_every_linked_account(stack: Stack) -> None:
    code = await new_code(stack, "fan")
    await webhook_say(stack, f"/link {code}", user="fan-w")
    [linked] = await stack.receiver.wait_for(1)
    assert str(linked["text"]).startswith("Linked")
    # The link code itself was answered only where it was asked for.
    assert len(stack.loopback.outbox.sent) == 1

    async def session_knows_link() -> bool:
        return len((await links(stack, session_id("loopback", "fan"))).linked) == 1

    await eventually(session_knows_link)
    run_id = await loopback_say(stack, "tell everyone", user="fan")
    sent = await stack.loopback.outbox.wait_for(2)
    assert sent[-1].text == "echo: tell everyone"
    received = await stack.receiver.wait_for(3)
    # Elsewhere, the user's input comes first, then the reply, each with its own key.
    assert [(r["phase"], r["text"]) for r in received[1:]] == [
        ("echo", "tell everyone"),
        ("response", "echo: tell everyone"),
    ]
    assert stack.receiver.ids[1:] == [f"{run_id}:webhook:echo", f"{run_id}:webhook:response"]

    async def both_delivered() -> bool:
        view = await stack.client.get_workflow_handle(run_id).query("view", result_type=RunView)
        return sorted((d.destination, d.state) for d in view.deliveries) == [
            ("loopback", DeliveryState.DELIVERED),
            ("webhook", DeliveryState.DELIVERED),
        ]

    await eventually(both_delivered)
    # Both destinations share the delivery state's upserts: one ``pending``, one outcome;
    # before, each destination upserted twice.
    history = await stack.client.get_workflow_handle(run_id).fetch_history()
    states = [
        set(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
        for e in history.events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
    ]
    delivery = [s for s in states if sa.DELIVERY_STATE.name in s]
    assert len(delivery) == 2
    await replayer().replay_workflow(history)  # the patched upserts replay


def test_non_originating_targets_need_explicit_consent() -> None:
    with pytest.raises(ConfigError, match="allow_non_originating"):
        make_settings(
            "q",
            "a",
            channels={"webhook": {"secret": WEBHOOK_SECRET, "response_target": "all_linked"}},
        )
    with pytest.raises(ConfigError, match="unknown response target"):
        make_settings(
            "q",
            "a",
            channels={"webhook": {"secret": WEBHOOK_SECRET, "response_target": "everywhere"}},
        )
