"""Per-identity and per-process ceilings, kept in the gateway process.

Token buckets bound how fast one identity may send messages; slots bound how many event
streams and long polls one identity (and the whole process) may hold open. Both live in
memory: with several gateway replicas each enforces its own share, which the README states.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hosting.settings import LimitSettings, LinkingSettings


class TokenBuckets:
    """``rate_per_s`` refill, ``burst`` capacity, one bucket per key; the least recently used
    keys are forgotten beyond ``max_keys`` (a forgotten identity starts with a full bucket)."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._max = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """0 if a token was taken; otherwise the seconds until one is available."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self._rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait


class TooMany(Exception):
    """Over a concurrency ceiling; ``retry_after_s`` is a hint for the 429."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("too many open requests")
        self.retry_after_s = retry_after_s


class Slots:
    """Open long-lived requests, per identity and in total."""

    def __init__(self, per_key: int, total: int) -> None:
        self._per_key = per_key
        self._total = total
        self._open: dict[str, int] = {}
        self._count = 0

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Raises :class:`TooMany` when ``key`` or the process is at its ceiling."""
        if self._count >= self._total or self._open.get(key, 0) >= self._per_key:
            raise TooMany(retry_after_s=5.0)
        self._open[key] = self._open.get(key, 0) + 1
        self._count += 1
        try:
            yield
        finally:
            self._count -= 1
            left = self._open[key] - 1
            if left:
                self._open[key] = left
            else:
                del self._open[key]


# An account's budget across all its sessions: the session's own lockout (after max_attempts
# wrong codes, with the usual answer) comes first; this catches guesses spread over
# conversations. A network address is shared by everyone behind one NAT or proxy.
ACCOUNT_LINK_FACTOR = 2
ADDRESS_LINK_FACTOR = 4


class Limits:
    """The gateway's limits, built once from ``[limits]`` and ``[linking]``."""

    def __init__(self, settings: LimitSettings, linking: LinkingSettings) -> None:
        self.messages = TokenBuckets(
            settings.messages_per_minute / 60.0, settings.message_burst, settings.tracked_identities
        )
        self.streams = Slots(settings.streams_per_identity, settings.streams_per_process)
        # Link codes guessed per account (not per session, which a new conversation renews)
        # and, where callers are end users themselves, per network address (a new browser
        # cookie is a new account for free).
        per_s = linking.max_attempts / linking.code_ttl_s
        self.link_attempts = TokenBuckets(
            per_s * ACCOUNT_LINK_FACTOR,
            linking.max_attempts * ACCOUNT_LINK_FACTOR,
            settings.tracked_identities,
        )
        self.link_attempts_by_address = TokenBuckets(
            per_s * ADDRESS_LINK_FACTOR,
            linking.max_attempts * ADDRESS_LINK_FACTOR,
            settings.tracked_identities,
        )
