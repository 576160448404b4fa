"""Admission and abuse limits of the peer network, as sans-IO objects that take the time as an argument.

* ``TokenBucket``: a per-peer inbound byte rate. The network reads a chunk, charges it, and sleeps for
  the delay returned before reading again, so an over-fast peer is slowed down through TCP flow
  control; nothing it sent is dropped (an honest peer's consensus messages are only ever delayed).
* ``AttemptLimiter``: connection attempts per remote IP in a sliding window, checked at accept before
  any byte is read.
* ``PeerScores``: a score per authenticated node id that penalties lower and time restores; at the
  threshold the peer is banned for a while. Model: the peer scoring of libp2p gossipsub v1.1 (score
  decaying toward neutral, a graylist threshold) and CometBFT's ``p2p`` "StopPeerForError" followed by
  a ban of the address, reduced to what a permissioned network needs.

All times are seconds from one monotonic clock (``trio.current_time()`` in the network; plain floats in
tests), so the objects replay exactly under a mock clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

PENALTY_BAD_FRAME: Final = 50.0
"""Score lost for a frame that fails to decrypt or is over the size limit (the session also ends)."""

PENALTY_BAD_MESSAGE: Final = 10.0
"""Default score lost for a message the node reports as undecodable or invalid (``penalize``)."""

MAX_TRACKED_IPS: Final = 65536
"""Most remote IPs whose recent attempts are remembered; beyond it the oldest are forgotten."""


class TokenBucket:
    """A byte budget refilled at ``rate`` bytes per second up to ``burst`` bytes.

    ``charge(n, now)`` spends ``n`` bytes (the balance may go negative: the bytes were already read)
    and returns how many seconds to wait before reading again so that the long-run rate stays at most
    ``rate``.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        """A full bucket at time ``now`` (seconds). Raises ``ValueError`` unless rate and burst are > 0."""
        if not (rate > 0 and burst > 0 and math.isfinite(rate) and math.isfinite(burst)):
            raise ValueError("rate and burst must be positive and finite")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def tokens(self, now: float) -> float:
        """The balance at ``now``, in bytes (negative while in debt)."""
        return min(self.burst, self._tokens + max(0.0, now - self._last) * self.rate)

    def charge(self, amount: int, now: float) -> float:
        """Spend ``amount`` bytes at ``now``; return the seconds to wait before the next read (>= 0)."""
        self._tokens = self.tokens(now) - amount
        self._last = max(self._last, now)
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class AttemptLimiter(Generic[K]):
    """At most ``max_attempts`` per key (a remote IP) within any ``window`` seconds.

    Memory: one deque of at most ``max_attempts`` times per key seen within the window, and at most
    ``MAX_TRACKED_IPS`` keys (the oldest are forgotten first, so a flood from many addresses cannot
    grow it without bound).
    """

    def __init__(self, max_attempts: int, window: float, *, max_keys: int = MAX_TRACKED_IPS) -> None:
        """Raises ``ValueError`` unless ``max_attempts`` >= 1, ``window`` > 0 and ``max_keys`` >= 1."""
        if max_attempts < 1 or not window > 0 or max_keys < 1:
            raise ValueError("need max_attempts >= 1, window > 0 and max_keys >= 1")
        self.max_attempts = max_attempts
        self.window = float(window)
        self._max_keys = max_keys
        self._recent: dict[K, deque[float]] = {}

    def __len__(self) -> int:
        """Number of keys remembered."""
        return len(self._recent)

    def allow(self, key: K, now: float) -> bool:
        """Record an attempt by ``key`` at ``now`` if it is within the limit; return whether it is."""
        times = self._recent.get(key)
        if times is None:
            if len(self._recent) >= self._max_keys:
                self._forget_expired(now)
                while len(self._recent) >= self._max_keys:
                    del self._recent[next(iter(self._recent))]
            times = self._recent[key] = deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.max_attempts:
            return False
        times.append(now)
        return True

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, t in self._recent.items() if not t or t[-1] <= now - self.window]:
            del self._recent[key]


class PeerScores(Generic[K]):
    """Scores of authenticated peers: 0 is neutral, penalties lower it, time restores it.

    A score rises back toward 0 at ``decay`` points per second. When a penalty brings it to
    ``threshold`` or below, the peer is banned for ``ban_seconds``; when the ban ends its score starts
    again from 0. An honest peer that never sends a bad frame or message keeps 0 forever, and one
    that sends a bad message now and then (below ``decay`` points per second on average) is never
    banned.
    """

    def __init__(self, *, threshold: float = -100.0, decay: float = 5.0, ban_seconds: float = 60.0) -> None:
        """Raises ``ValueError`` unless ``threshold`` < 0, ``decay`` >= 0 and ``ban_seconds`` > 0."""
        if not threshold < 0 or not decay >= 0 or not ban_seconds > 0:
            raise ValueError("need threshold < 0, decay >= 0 and ban_seconds > 0")
        self.threshold = float(threshold)
        self.decay = float(decay)
        self.ban_seconds = float(ban_seconds)
        self._scores: dict[K, tuple[float, float]] = {}  # peer -> (score, at time)
        self._banned: dict[K, float] = {}  # peer -> banned until

    def score(self, peer: K, now: float) -> float:
        """The peer's score at ``now`` (0 if never penalized, or after its ban ended)."""
        if peer in self._banned:
            return self.threshold if self._banned[peer] > now else 0.0
        value, at = self._scores.get(peer, (0.0, now))
        return min(0.0, value + max(0.0, now - at) * self.decay)

    def banned_until(self, peer: K, now: float) -> float | None:
        """When the ban of ``peer`` ends (seconds, same clock), or ``None`` if it is not banned at ``now``."""
        until = self._banned.get(peer)
        if until is None:
            return None
        if until <= now:
            del self._banned[peer]
            self._scores.pop(peer, None)
            return None
        return until

    def bans(self, now: float) -> dict[K, float]:
        """Every peer banned at ``now`` -> when its ban ends."""
        for peer in [p for p, until in self._banned.items() if until <= now]:
            self.banned_until(peer, now)
        return dict(self._banned)

    def penalize(self, peer: K, points: float, now: float) -> bool:
        """Lower the score of ``peer`` by ``points`` (>= 0) at ``now``; return True if this bans it.

        A peer already banned stays banned until its ban ends (the ban is not extended). Raises
        ``ValueError`` for negative or non-finite ``points``.
        """
        if not (points >= 0 and math.isfinite(points)):
            raise ValueError("points must be >= 0 and finite")
        if self.banned_until(peer, now) is not None:
            return False
        value = self.score(peer, now) - points
        if value <= self.threshold:
            self._scores.pop(peer, None)
            self._banned[peer] = now + self.ban_seconds
            return True
        self._scores[peer] = (value, now)
        return False
