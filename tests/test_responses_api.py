"""The OpenAI-Responses-compatible API, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import Stack

KEYS = {"alice": "sk-alice-0123456789", "bob": "sk-bob-0123456789"}


def overrides(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {"channels": {"responses": {"api_keys": KEYS}}}
    base.update(extra)
    return base


def api(stack: Stack, key: str = KEYS["alice"]) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=str(stack.http.make_url("/v1")), api_key=key, max_retries=0)


@pytest.fixture
async def alice(stack: Stack) -> AsyncIterator[AsyncOpenAI]:
    client = api(stack)
    yield client
    await client.close()


async def wait_done(
    client: AsyncOpenAI, response_id: str, timeout: float = 30.0
) -> openai.types.responses.Response:
    deadline = time.monotonic() + timeout
    while True:
        got = await client.responses.retrieve(response_id)
        if got.status not in ("queued", "in_progress") or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("settings_overrides", [overrides()], indirect=True)
async def test_background_create_then_poll(stack: Stack, alice: AsyncOpenAI) -> None:
    created = await alice.responses.create(
        model="m", input="hello api", background=True, metadata={"k": "v"}
    )
    assert created.status in ("queued", "in_progress", "completed")
    assert created.id.startswith("resp_")
    done = await wait_done(alice, created.id)
    assert done.status == "completed"
    assert done.output_text == "echo: hello api"
    assert done.id == created.id and done.model == "m" and done.metadata == {"k": "v"}
    assert done.background is True


@pytest.mark.parametrize("settings_overrides", [overrides()], indirect=True)
async def test_foreground_create_waits_and_takes_message_lists(
    stack: Stack, alice: AsyncOpenAI
) -> None:
    done = await alice.responses.create(model="m", input="straight answer")
    assert done.status == "completed" and done.output_text == "echo: straight answer"
    listed = await alice.responses.create(
        model="m",
        input=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "echo: first"},
            {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
        ],
    )
    assert listed.output_text == "echo: second"


@pytest.mark.parametrize("settings_overrides", [overrides()], indirect=True)
async def test_follow_up_joins_the_conversation(stack: Stack, alice: AsyncOpenAI) -> None:
    first = await alice.responses.create(model="m", input="one")
    second = await alice.responses.create(model="m", input="two", previous_response_id=first.id)
    third = await alice.responses.create(model="m", input="three", previous_response_id=second.id)
    assert [first.output_text, second.output_text, third.output_text] == [
        "echo: one",
        "echo: two",
        "echo: three",
    ]
    assert third.previous_response_id == second.id


@pytest.mark.parametrize("settings_overrides", [overrides()], indirect=True)
async def test_tokens_are_private_and_unforgeable(stack: Stack, alice: AsyncOpenAI) -> None:
    mine = await alice.responses.create(model="m", input="secret")
    bob = api(stack, KEYS["bob"])
    with pytest.raises(openai.NotFoundError):
        await bob.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        await bob.responses.cancel(mine.id)
    forged = mine.id[:-4] + ("AAAA" if not mine.id.endswith("AAAA") else "BBBB")
    with pytest.raises(openai.NotFoundError):
        await alice.responses.retrieve(forged)
    with pytest.raises(openai.NotFoundError):
        await alice.responses.retrieve("resp_nonsense")
    with pytest.raises(openai.AuthenticationError):
        await api(stack, "sk-wrong").responses.create(model="m", input="x")
    await bob.close()


@pytest.mark.parametrize("settings_overrides", [overrides()], indirect=True)
async def test_idempotency_key_returns_the_same_run(stack: Stack, alice: AsyncOpenAI) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await alice.responses.create(model="m", input="only once", extra_headers=headers)
    again = await alice.responses.create(model="m", input="only once", extra_headers=headers)
    assert again.id == first.id and again.output_text == "echo: only once"
    other = await api(stack, KEYS["bob"]).responses.create(
        model="m", input="mine", extra_headers=headers
    )
    assert other.output_text == "echo: mine"  # keys are scoped by caller


@pytest.mark.parametrize(
    "settings_overrides", [overrides(agent={"delay_ms": 20_000})], indirect=True
)
async def test_cancel_a_slow_background_run(stack: Stack, alice: AsyncOpenAI) -> None:
    created = await alice.responses.create(model="m", input="take ages", background=True)

    async def in_progress() -> bool:
        return (await alice.responses.retrieve(created.id)).status == "in_progress"

    from tests.support import eventually

    await eventually(in_progress)
    started = time.monotonic()
    cancelled = await alice.responses.cancel(created.id)
    elapsed = time.monotonic() - started
    assert cancelled.status == "cancelled"
    assert elapsed < 10
    assert (await alice.responses.retrieve(created.id)).status == "cancelled"


@pytest.mark.parametrize(
    "settings_overrides",
    [overrides(agent={"delay_ms": 5_000, "max_duration_s": 1.5})],
    indirect=True,
)
async def test_a_run_past_its_maximum_duration_expires(stack: Stack, alice: AsyncOpenAI) -> None:
    created = await alice.responses.create(model="m", input="too slow", background=True)
    done = await wait_done(alice, created.id)
    assert done.status == "expired"
    assert done.error is not None


@pytest.mark.parametrize(
    "settings_overrides",
    [
        overrides(
            agent={"delay_ms": 3_000},
            channels={"responses": {"api_keys": KEYS, "multitask": "reject"}},
        )
    ],
    indirect=True,
)
async def test_reject_strategy_answers_busy_with_409(stack: Stack, alice: AsyncOpenAI) -> None:
    first = await alice.responses.create(model="m", input="first", background=True)
    done = await wait_done(alice, first.id, timeout=30)
    assert done.status == "completed"
    slow = await alice.responses.create(
        model="m", input="second", previous_response_id=first.id, background=True
    )
    with pytest.raises(openai.ConflictError):
        await alice.responses.create(
            model="m", input="third", previous_response_id=first.id, background=True
        )
    assert (await wait_done(alice, slow.id)).output_text == "echo: second"


@pytest.mark.parametrize(
    "settings_overrides",
    [
        overrides(
            agent={"delay_ms": 4_000},
            channels={"responses": {"api_keys": KEYS, "multitask": "interrupt"}},
        )
    ],
    indirect=True,
)
async def test_interrupt_strategy_cancels_the_running_turn(
    stack: Stack, alice: AsyncOpenAI
) -> None:
    root = await alice.responses.create(model="m", input="root", background=True)
    await wait_done(alice, root.id)
    slow = await alice.responses.create(
        model="m", input="slow", previous_response_id=root.id, background=True
    )

    async def running() -> bool:
        return (await alice.responses.retrieve(slow.id)).status == "in_progress"

    from tests.support import eventually

    await eventually(running)
    newer = await alice.responses.create(
        model="m", input="newer", previous_response_id=root.id, background=True
    )
    assert (await wait_done(alice, slow.id)).status == "cancelled"
    assert (await wait_done(alice, newer.id)).output_text == "echo: newer"


@pytest.mark.parametrize(
    "settings_overrides", [overrides(agent={"delay_ms": 1_500})], indirect=True
)
async def test_runs_endpoint_long_polls_until_the_status_changes(
    stack: Stack, alice: AsyncOpenAI
) -> None:
    created = await alice.responses.create(model="m", input="watch me", background=True)
    auth = {"Authorization": f"Bearer {KEYS['alice']}"}
    seen = []
    for _ in range(5):
        resp = await stack.http.get(f"/v1/runs/{created.id}?wait=10", headers=auth)
        assert resp.status == 200
        body = await resp.json()
        seen.append(body["status"])
        if body["status"] == "completed":
            break
    assert seen[-1] == "completed" and body["output_text"] == "echo: watch me"
    assert body["run_id"].startswith("run/default/responses/")
    assert (
        await stack.http.get(
            f"/v1/runs/{created.id}", headers={"Authorization": f"Bearer {KEYS['bob']}"}
        )
    ).status == 404
    assert (await stack.http.get(f"/v1/runs/{created.id}")).status == 401
    assert (await stack.http.get(f"/v1/runs/{created.id}?wait=abc", headers=auth)).status == 400


@pytest.mark.parametrize(
    "settings_overrides", [overrides(agent={"delay_ms": 3_000})], indirect=True
)
async def test_a_queued_follow_up_can_be_cancelled(stack: Stack, alice: AsyncOpenAI) -> None:
    root = await alice.responses.create(model="m", input="root", background=True)
    await wait_done(alice, root.id)
    running = await alice.responses.create(
        model="m", input="busy", previous_response_id=root.id, background=True
    )
    queued = await alice.responses.create(
        model="m", input="waiting", previous_response_id=root.id, background=True
    )
    assert queued.status == "queued"
    cancelled = await alice.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    assert (await alice.responses.retrieve(queued.id)).status == "cancelled"
    assert (await wait_done(alice, running.id)).output_text == "echo: busy"
    # The session goes on with later turns.
    after = await alice.responses.create(model="m", input="after", previous_response_id=root.id)
    assert after.output_text == "echo: after"


@pytest.mark.parametrize(
    "settings_overrides",
    [overrides(channels={"responses": {"api_keys": KEYS, "allow_native_ids": ["alice"]}})],
    indirect=True,
)
async def test_v1_responses_applies_the_channel_policy(stack: Stack) -> None:
    bob = api(stack, KEYS["bob"])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await bob.responses.create(model="m", input="let me in")
    assert refused.value.status_code == 403
    assert refused.value.code == "forbidden"
    await bob.close()
    alice = api(stack)
    created = await alice.responses.create(model="m", input="hello")
    assert created.status == "completed"
    await alice.close()


@pytest.mark.parametrize(
    "settings_overrides",
    [{"channels": {"responses": {"api_keys": {"acme": "sk-acme-0123456789",
                                              "acme.eu": "sk-acme-eu-0123456789"}}}}],
    indirect=True,
)  # fmt: skip
async def test_callers_whose_names_and_keys_concatenate_alike_stay_apart(stack: Stack) -> None:
    """("acme", "eu.K") and ("acme.eu", "K") are two messages of two callers, not one run."""
    acme = api(stack, "sk-acme-0123456789")
    acme_eu = api(stack, "sk-acme-eu-0123456789")
    first = await acme.responses.create(
        model="m", input="from acme", extra_headers={"Idempotency-Key": "eu.K"}
    )
    second = await acme_eu.responses.create(
        model="m", input="from acme.eu", extra_headers={"Idempotency-Key": "K"}
    )
    assert first.output_text == "echo: from acme"
    assert second.output_text == "echo: from acme.eu"
    with pytest.raises(openai.NotFoundError):
        await acme_eu.responses.retrieve(first.id)
    await acme.close()
    await acme_eu.close()
