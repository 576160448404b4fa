"""Abuse limits of the JSON-RPC listener, as sans-IO objects that read time from an injected clock.

* ``RequestBucket``: the token bucket of one client: ``burst`` calls at once, refilled at ``rate``
  calls per second. A call either takes a token or is refused with the wait until one is there
  (unlike ``p2p.limits.TokenBucket``, which delays bytes already read, a refused call costs nothing).
* ``RateLimiter``: one bucket per client IP (``[rpc] requests_per_second`` and ``burst``), with a bound
  on the IPs remembered so a flood from many addresses cannot grow it without limit.

Times are seconds of one monotonic clock: ``trio.current_time`` in the server, a plain float in tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

MAX_TRACKED_CLIENTS: Final = 65536
"""Most client IPs whose buckets are remembered; beyond it full buckets, then the oldest, are forgotten."""


class RequestBucket:
    """``burst`` tokens at most, refilled at ``rate`` tokens per second; one token per JSON-RPC call."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        """A full bucket at ``now`` (seconds). Raises ``ValueError`` unless ``rate`` > 0 and ``burst`` >= 1."""
        if not (rate > 0 and math.isfinite(rate) and burst >= 1):
            raise ValueError("need a finite rate > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (a clock going backwards refills nothing)."""
        return min(float(self.burst), self._tokens + max(0.0, now - self._last) * self.rate)

    def take(self, now: float, cost: int = 1) -> float:
        """Take ``cost`` tokens at ``now`` and return 0.0, or take nothing and return the seconds until
        ``cost`` tokens are there (``inf`` if ``cost`` exceeds ``burst``: never)."""
        available = self.tokens(now)
        self._last = max(self._last, now)
        self._tokens = available
        if available >= cost:
            self._tokens -= cost
            return 0.0
        if cost > self.burst:
            return math.inf
        return (cost - available) / self.rate

    def full(self, now: float) -> bool:
        """Whether the bucket is full at ``now`` (its client has been quiet long enough to forget it)."""
        return self.tokens(now) >= self.burst


class RateLimiter(Generic[K]):
    """Per-client token buckets: at most ``rate`` calls per second on average, ``burst`` at once.

    ``rate`` 0 disables the limit (``check`` always allows, in O(1)). Memory: one bucket per client
    seen, at most ``max_keys`` (a forgotten client comes back with a full bucket, which is what a
    client idle long enough would have anyway when full buckets are forgotten first).
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float], *,
                 max_keys: int = MAX_TRACKED_CLIENTS) -> None:
        """Raises ``ValueError`` for a negative or infinite ``rate``, ``burst`` < 1 or ``max_keys`` < 1."""
        if not (rate >= 0 and math.isfinite(rate)) or burst < 1 or max_keys < 1:
            raise ValueError("need a finite rate >= 0, burst >= 1 and max_keys >= 1")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[K, RequestBucket] = {}

    @property
    def enabled(self) -> bool:
        """Whether a rate is set (``rate`` > 0)."""
        return self.rate > 0

    def __len__(self) -> int:
        """Number of clients remembered."""
        return len(self._buckets)

    def check(self, key: K, cost: int = 1) -> float:
        """Charge ``cost`` calls to ``key``: 0.0 if allowed, else the seconds to wait (nothing charged)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._forget(now)
            bucket = self._buckets[key] = RequestBucket(self.rate, self.burst, now)
        return bucket.take(now, cost)

    def _forget(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]
        while len(self._buckets) >= self._max_keys:
            del self._buckets[next(iter(self._buckets))]
