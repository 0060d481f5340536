"""The client-side rate limiter: client-go's token bucket in front of every request.

A controller that wakes up to a thousand changed objects would otherwise send a thousand writes
at once; API priority and fairness would then reject most of them with 429 and every one would
retry. client-go instead makes each request take a token from a bucket that holds ``burst``
tokens and refills at ``qps`` a second, so short bursts go out at once and a sustained flood is
spread out at ``qps``. controller-runtime's defaults are 20 and 30 (kube-controller-manager's
``--kube-api-qps`` / ``--kube-api-burst``).

Waits are reservations, as in golang.org/x/time/rate: each caller takes the next token, even one
that does not exist yet, and sleeps until it does; callers are therefore served in the order they
asked. A caller cancelled while it waits gives its token back.

Time is injectable (``clock`` and ``sleep``), so tests see the exact delays without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol


class RateLimiter(Protocol):
    async def wait(self) -> float:
        """Returns once the caller may send; the seconds it waited."""
        ...


class TokenBucketRateLimiter:
    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs qps > 0 and burst >= 1, got {qps} / {burst}")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()

    def reserve(self) -> float:
        """Takes a token now and returns how long until it exists (0 when one was there)."""
        now = self._clock()
        self._refill(now)
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    async def wait(self) -> float:
        delay = self.reserve()
        if delay > 0:
            try:
                await self._sleep(delay)
            except asyncio.CancelledError:
                self._refill(self._clock())
                self._tokens = min(float(self.burst), self._tokens + 1.0)
                raise
        return delay

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.qps)
            self._updated = now


def token_bucket(qps: float, burst: int) -> TokenBucketRateLimiter | None:
    """The limiter for ``--kube-api-qps`` / ``--kube-api-burst``; None (no limit) for qps <= 0."""
    return TokenBucketRateLimiter(qps, burst) if qps > 0 else None
