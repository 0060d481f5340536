"""How long a key waits before it is retried: controller-runtime's default rate limiter.

The default is the slower of two limiters (client-go's ``DefaultTypedControllerRateLimiter``):

- per key, exponential: 5 ms, 10 ms, 20 ms, ... capped at 1000 s, reset by :meth:`forget`
  (a key that keeps failing backs off on its own, without slowing others);
- overall, a token bucket of 10 retries per second with a burst of 100, so a storm of failing
  keys cannot turn into a storm of requests to the API server.
"""

from __future__ import annotations

from collections.abc import Hashable

from aimd.runtime.clock import Clock


class ItemExponentialBackoff:
    def __init__(self, base: float = 0.005, cap: float = 1000.0) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[Hashable, int] = {}

    def when(self, key: Hashable) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        if failures >= 64:  # 2**64 * base is past any cap; avoid huge floats
            return self.cap
        return min(self.cap, self.base * 2.0**failures)

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def failures(self, key: Hashable) -> int:
        return self._failures.get(key, 0)


class TokenBucket:
    """Reservations against a bucket refilled at ``rate`` per second, holding at most ``burst``;
    the delay is how long until the reserved token exists (like golang.org/x/time/rate)."""

    def __init__(self, clock: Clock, rate: float = 10.0, burst: int = 100) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def when(self, key: Hashable) -> float:
        now = self.clock.now()
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def forget(self, key: Hashable) -> None:
        return None


class DefaultRateLimiter:
    def __init__(self, clock: Clock, base: float = 0.005, cap: float = 1000.0) -> None:
        self.items = ItemExponentialBackoff(base, cap)
        self.bucket = TokenBucket(clock)

    def when(self, key: Hashable) -> float:
        return max(self.items.when(key), self.bucket.when(key))

    def forget(self, key: Hashable) -> None:
        self.items.forget(key)

    def failures(self, key: Hashable) -> int:
        return self.items.failures(key)
