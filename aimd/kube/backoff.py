"""Jittered exponential backoff for reconnect loops (client-go's reflector defaults).

The first wait is under a second, each failure doubles it up to a cap, jitter spreads many
clients that failed together (an API server restart) so they do not return together, and a
healthy period since the last failure starts the sequence over: an informer that has been fine
for minutes and then loses its connection reconnects fast again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable


class Backoff:
    """``initial`` (0.8 s) doubling to ``cap`` (30 s); each wait is stretched by up to
    ``jitter`` (100 %) at random; ``reset_after`` (120 s) without a failure starts over."""

    def __init__(
        self,
        initial: float = 0.8,
        cap: float = 30.0,
        *,
        factor: float = 2.0,
        jitter: float = 1.0,
        reset_after: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self.reset_after = reset_after
        self._clock = clock
        self._rng = rng
        self._current = 0.0
        self._last_failure: float | None = None

    def next_delay(self) -> float:
        """Records a failure now and returns how long to wait before the next attempt."""
        now = self._clock()
        if self._last_failure is None or now - self._last_failure > self.reset_after:
            self._current = self.initial
        else:
            self._current = min(self.cap, self._current * self.factor)
        self._last_failure = now
        return self._current * (1.0 + self.jitter * self._rng())

    async def wait(self) -> float:
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay
