"""Time, injectable: the event loop's monotonic clock in production, a hand-turned one in tests.

Only two things are needed from a clock — what time it is and "call this after so long" — so a
fake one can run backoff and delay logic deterministically without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds; only differences mean anything."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Runs ``callback`` once, ``delay`` seconds from now, unless cancelled first."""
        ...


class LoopClock:
    """The event loop's clock (monotonic, unaffected by wall-clock jumps).

    ``now()`` reads ``time.monotonic()``, which is what asyncio's loop time is, so it also
    answers where no loop runs: a metrics collection from a test or another thread asks a queue
    how long its work has been waiting.
    """

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


class _FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when :meth:`advance` is called; due callbacks run in time order."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _FakeTimer, Callable[[], None]]] = []
        self._sequence = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _FakeTimer()
        heapq.heappush(
            self._timers, (self._now + max(0.0, delay), next(self._sequence), timer, callback)
        )
        return timer

    def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer, callback = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not timer.cancelled:
                callback()
        self._now = target

    @property
    def pending(self) -> int:
        return sum(1 for entry in self._timers if not entry[2].cancelled)
