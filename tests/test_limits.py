"""Ceilings on what one identity can make the gateway do: streams, long polls, buckets."""

from __future__ import annotations

import asyncio

import pytest

from routes.keys import VIEWS
from routes.limits import Slots, TokenBuckets, TooMany
from tests.conftest import Stack
from tests.support import eventually, webhook_headers, webhook_message
from tests.test_web_channel import open_page, post


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate_per_s=1.0, burst=2, max_keys=2, clock=lambda: now[0])
    assert [buckets.take("a"), buckets.take("a")] == [0.0, 0.0]
    assert buckets.take("a") == pytest.approx(1.0)
    now[0] = 0.5
    assert buckets.take("a") == pytest.approx(0.5)  # half a token has come back
    now[0] = 2.0
    assert buckets.take("a") == 0.0
    assert buckets.take("b") == 0.0 and buckets.take("c") == 0.0  # "a" is forgotten (LRU)
    assert buckets.take("a") == 0.0  # a forgotten identity starts full


def test_slots_bound_each_identity_and_the_process() -> None:
    slots = Slots(per_key=1, total=2)
    with slots.hold("a"):
        with pytest.raises(TooMany), slots.hold("a"):
            pass
        with slots.hold("b"), pytest.raises(TooMany), slots.hold("c"):  # the process is full
            pass
    with slots.hold("a"):  # released on exit
        pass


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "channels": {"web": {}},
            "agent": {"delay_ms": 4000},
            "limits": {"streams_per_identity": 2},
        }
    ],
    indirect=True,
)
async def test_a_browser_gets_429_beyond_its_streams_and_streams_share_one_poller(
    stack: Stack,
) -> None:
    csrf = await open_page(stack.http)
    status, _, mid = await post(stack.http, csrf, "slow one")
    assert status == 202
    url = f"/channels/web/runs/{mid}/events"
    first = await stack.http.get(url)
    second = await stack.http.get(url)
    assert first.status == second.status == 200
    third = await stack.http.get(url)
    assert third.status == 429 and int(third.headers["Retry-After"]) >= 1
    views = stack.http.app[VIEWS]
    assert views.watched == 1  # two streams of one run: one poller
    first.close()
    second.close()

    async def released() -> bool:
        return views.watched == 0

    await eventually(released, timeout=10)
    again = await stack.http.get(url)  # slots come back when streams close
    assert again.status == 200
    again.close()
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    "settings_overrides",
    [{"channels": {"web": {}}, "linking": {"max_attempts": 1}}],
    indirect=True,
)
async def test_link_guesses_are_counted_per_account_and_per_address_not_per_session(
    stack: Stack,
) -> None:
    """A new conversation or a new browser cookie does not buy fresh guesses."""
    statuses = []
    # Three sessions of one webhook account: the account has twice max_attempts guesses.
    for i, conversation in enumerate(["c1", "c2", "c3"]):
        body = webhook_message("guesser", conversation, "/link AAAA-BBBB", kind="group")
        resp = await stack.http.post(
            "/channels/webhook", data=body, headers=webhook_headers(body, f"guess_{i}")
        )
        statuses.append(resp.status)
    assert statuses == [202, 202, 429]
    web = []
    for _ in range(5):  # five fresh browsers from one address: the address has 4 guesses
        stack.http.session.cookie_jar.clear()
        csrf = await open_page(stack.http)
        status, _, _ = await post(stack.http, csrf, "/link CCCC-DDDD")
        web.append(status)
    assert web == [202, 202, 202, 202, 429]
