"""The channel conformance kit (TCK): one pytest suite every adapter must pass.

An adapter's test module subclasses :class:`ChannelConformance`, provides a fake of its
platform (speaking the real wire format, reached through the configured base URL) and says how
to build and sign an inbound request; the kit then checks the behaviour every channel owes:

- a valid request is acknowledged inside the platform's deadline and becomes exactly one run
  whose request carries the right identity, conversation, thread and message key;
- a forged, tampered, stale or unsigned request is refused (401/403) and starts nothing;
- a redelivered request (same platform id, retry headers) is one run;
- push outcomes map onto the closed :class:`FailureMode` enum, and the adapter never raises;
- messages in one conversation are answered in the order they arrived;
- malformed, oversized and hostile bodies never produce a 5xx.

It runs against the real gateway, worker and Temporal dev server of the project's test
fixtures (``stack``, ``settings_overrides``), so it needs the project's ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.base import Channel, FailureMode
from channels.registry import build_channel
from channels.tck import Failure, FakePlatform, wait_delivered
from hosting.models import DeliveryPolicy, PushRequest, ReplyAddress, RunInput


class ChannelConformance:
    """Subclass as ``class TestMyChannel(ChannelConformance)`` and fill in the hooks."""

    channel: ClassVar[str]
    deadline_s: ClassVar[float] = 3.0
    verifies_requests: ClassVar[bool] = True
    signs_body: ClassVar[bool] = True  # False where only a shared secret is sent (Telegram)
    base_url_key: ClassVar[str | None] = "api_base_url"  # None: the channel uses no network

    # -- hooks -----------------------------------------------------------------------------

    @pytest.fixture
    async def platform(self) -> AsyncIterator[FakePlatform]:
        raise NotImplementedError
        yield  # pragma: no cover

    def channel_settings(self, platform: FakePlatform) -> dict[str, Any]:
        raise NotImplementedError

    def message(
        self, *, key: str, user: str, conversation: str, text: str, thread: str | None = None
    ) -> bytes:
        """A platform body for one direct (or threaded) user message with platform id ``key``."""
        raise NotImplementedError

    def sign(self, body: bytes, *, key: str, timestamp: float | None = None) -> dict[str, str]:
        """Headers that authenticate ``body`` as the platform does (at ``timestamp``)."""
        raise NotImplementedError

    def redelivery_headers(self) -> dict[str, str]:
        """Headers the platform adds when it retries a delivery."""
        return {}

    def message_key(self, *, key: str, conversation: str) -> str:
        """The message key the adapter derives from a platform id."""
        return key

    def has_timestamp(self) -> bool:
        return True

    # -- plumbing --------------------------------------------------------------------------

    @pytest.fixture
    def settings_overrides(self, platform: FakePlatform) -> dict[str, Any]:
        return {
            "channels": {self.channel: self.channel_settings(platform)},
            "delivery": {"initial_interval_s": 0.2, "max_interval_s": 1.0, "max_attempts": 3},
        }

    def _path(self) -> str:
        return f"/channels/{self.channel}"

    async def _post(
        self, stack: Any, body: bytes, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await stack.http.post(
            self._path(), data=body, headers=headers
        )
        return response

    user: str
    conversation: str

    @pytest.fixture(autouse=True)
    def _fresh_ids(self) -> None:
        # Sessions are keyed by user and conversation and outlive a test: every test talks as
        # a new person, so it never lands in a session an earlier test's worker owned.
        n = uuid.uuid4().int % 10**9
        self.user, self.conversation = str(10**9 + n), str(2 * 10**9 + n)

    def _new_key(self) -> str:
        return str(uuid.uuid4().int % 10**12)

    async def _say(
        self,
        stack: Any,
        text: str,
        *,
        key: str | None = None,
        user: str | None = None,
        conversation: str | None = None,
        thread: str | None = None,
    ) -> tuple[str, float]:
        key = key or self._new_key()
        body = self.message(
            key=key,
            user=user or self.user,
            conversation=conversation or self.conversation,
            text=text,
            thread=thread,
        )
        started = time.monotonic()
        resp = await self._post(stack, body, self.sign(body, key=key))
        elapsed = time.monotonic() - started
        assert resp.status in (200, 202), await resp.text()
        return key, elapsed

    def _run_id(self, key: str, conversation: str | None = None) -> str:
        conv = conversation or self.conversation
        return f"run/default/{self.channel}/{self.message_key(key=key, conversation=conv)}"

    async def _exists(self, stack: Any, workflow_id: str) -> bool:
        try:
            await stack.client.get_workflow_handle(workflow_id).describe()
        except Exception:
            return False
        return True

    # -- the kit ---------------------------------------------------------------------------

    async def test_valid_request_is_acknowledged_in_time_and_answered(
        self, stack: Any, platform: FakePlatform
    ) -> None:
        _, elapsed = await self._say(stack, "hello there")
        assert elapsed < self.deadline_s
        [reply] = await wait_delivered(platform, 1)
        assert reply.text == "echo: hello there"
        assert reply.conversation_id == self.conversation

    async def test_request_becomes_one_run_with_identity_conversation_thread_and_key(
        self, stack: Any, platform: FakePlatform
    ) -> None:
        key, _ = await self._say(stack, "who am I", thread="301")
        [reply] = await wait_delivered(platform, 1)
        assert (reply.conversation_id, reply.thread_id) == (self.conversation, "301")
        history = await stack.client.get_workflow_handle(self._run_id(key)).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        [inp] = await stack.client.data_converter.decode(started.input.payloads, [RunInput])
        request = inp.submit.request
        assert request.channel == self.channel
        assert (request.user_id, request.conversation_id, request.thread_id) == (
            self.user,
            self.conversation,
            "301",
        )
        assert request.message_key == self.message_key(key=key, conversation=self.conversation)
        assert request.text == "who am I"

    async def test_forged_stale_or_unsigned_requests_are_refused_and_start_nothing(
        self, stack: Any, platform: FakePlatform
    ) -> None:
        if not self.verifies_requests:
            pytest.skip(f"{self.channel} does not authenticate requests (test-only channel)")
        key = self._new_key()
        body = self.message(key=key, user=self.user, conversation=self.conversation, text="forged")
        good = self.sign(body, key=key)
        attempts: list[tuple[bytes, dict[str, str]]] = [
            (body, {k: v for k, v in good.items() if k.lower() == "content-type"}),
        ]
        if self.signs_body:
            attempts.append((body.replace(b"forged", b"FORGED"), good))
        for name in good:
            if name.lower() != "content-type":
                attempts.append((body, {**good, name: good[name][:-2] + "xx"}))
        if self.has_timestamp():
            attempts.append((body, self.sign(body, key=key, timestamp=time.time() - 3600)))
        for attempt_body, headers in attempts:
            resp = await self._post(stack, attempt_body, headers)
            assert resp.status in (401, 403), (headers, resp.status)
        assert not await self._exists(stack, self._run_id(key))
        assert platform.delivered == []

    async def test_redelivered_request_is_one_run(self, stack: Any, platform: FakePlatform) -> None:
        key = self._new_key()
        body = self.message(key=key, user=self.user, conversation=self.conversation, text="once")
        for attempt in range(3):
            headers = self.sign(body, key=key)
            if attempt:
                headers.update(self.redelivery_headers())
            resp = await self._post(stack, body, headers)
            assert resp.status in (200, 202)
        await self._say(stack, "after")
        replies = await wait_delivered(platform, 2)
        assert [r.text for r in replies] == ["echo: once", "echo: after"]

    async def test_messages_in_one_conversation_are_answered_in_arrival_order(
        self, stack: Any, platform: FakePlatform
    ) -> None:
        for i in range(4):
            await self._say(stack, f"n{i}")
        replies = await wait_delivered(platform, 4)
        assert [r.text for r in replies] == [f"echo: n{i}" for i in range(4)]

    async def test_push_outcomes_map_to_the_closed_enum_and_never_raise(
        self, stack: Any, platform: FakePlatform
    ) -> None:
        channel: Channel = stack.registry.get(self.channel)
        push = PushRequest(
            idempotency_key="k",
            run_id="run/default/x/y",
            phase="response",
            address=ReplyAddress(
                channel=self.channel, user_id=self.user, conversation_id=self.conversation
            ),
            text="hi",
            created_at=datetime.now(UTC),
            max_age_s=60,
            policy=DeliveryPolicy(timeout_s=1.0),
        )
        async with aiohttp.ClientSession() as http:
            assert (await channel.push(http, push)).mode is FailureMode.DELIVERED
            expected: dict[Failure, FailureMode] = {
                "rate_limited": FailureMode.RATE_LIMITED,
                "server_error": FailureMode.TRANSIENT,
                "timeout": FailureMode.TRANSIENT,
                "rejected": FailureMode.REJECTED,
                "unauthorized": FailureMode.UNAUTHORIZED,
            }
            for failure, mode in expected.items():
                platform.fail_next(failure, retry_after_s=7)
                ack = await channel.push(http, push)
                assert ack.mode is mode, (failure, ack)
                if failure == "rate_limited":
                    assert ack.retry_after_s == 7
        if self.base_url_key is None:
            return
        unreachable = build_channel(
            self.channel,
            channel.settings.model_copy(update={self.base_url_key: "http://127.0.0.1:9"}),
            stack.settings,
        )
        async with aiohttp.ClientSession() as http:
            ack = await unreachable.push(http, push)
        assert ack.mode is FailureMode.TRANSIENT

    async def test_oversized_body_is_413(self, stack: Any) -> None:
        too_big = b"{" + b" " * (stack.settings.gateway.max_body_bytes + 10) + b"}"
        resp = await self._post(stack, too_big, self.sign(too_big, key="1"))
        assert resp.status == 413

    # Each adapter's subclass runs this same method: no shared example database between them.
    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.differing_executors,
        ],
    )
    @given(body=st.deferred(lambda: hostile_bodies()), signed=st.booleans())
    async def test_malformed_and_hostile_bodies_never_5xx(
        self, stack: Any, body: bytes, signed: bool
    ) -> None:
        headers = self.sign(body, key="123") if signed else {}
        resp = await self._post(stack, body, headers)
        assert resp.status < 500, (body, resp.status)


def hostile_bodies() -> st.SearchStrategy[bytes]:
    return HOSTILE_BODIES


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
HOSTILE_BODIES: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["type", "update_id", "message", "event", "user", "text", "challenge"]),
        JSON_VALUES,
        max_size=5,
    ).map(lambda v: json.dumps(v).encode()),
)
