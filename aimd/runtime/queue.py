"""The work queue between event handlers and reconcilers (client-go's workqueue semantics).

Promises, for any hashable key:

- **Dedup.** A key waiting in the queue is there once, however often it is added.
- **Exclusivity.** Between :meth:`WorkQueue.get` returning a key and :meth:`WorkQueue.done` for
  it, no other ``get`` returns that key. Adds that arrive meanwhile are not lost: the key is
  marked dirty and goes back into the queue when ``done`` is called, so the reconcile that was
  running is followed by exactly one more.
- **FIFO** among waiting keys.
- **Delays.** :meth:`WorkQueue.add_after` adds the key once the delay passes; of several pending
  delays for one key only the earliest is kept.
- **Backoff.** :meth:`WorkQueue.add_rate_limited` delays by the rate limiter (per-key exponential,
  see :mod:`aimd.runtime.ratelimit`) until :meth:`WorkQueue.forget` resets the key.
- **Shutdown.** After :meth:`WorkQueue.shutdown` nothing new is accepted; ``get`` hands out what
  is already queued and then raises :class:`ShutDown` (at once with ``drain=False``).

Time comes from an injectable :class:`~aimd.runtime.clock.Clock`, so tests drive delays and
backoff with a fake clock.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from aimd.runtime.clock import Clock, LoopClock, Timer
from aimd.runtime.ratelimit import DefaultRateLimiter

K = TypeVar("K", bound=Hashable)


class ShutDown(Exception):
    """The queue was shut down; the worker calling ``get`` should exit."""


class QueueObserver(Protocol):
    """What the queue reports to metrics (see :class:`aimd.runtime.metrics.WorkqueueMetrics`)."""

    def added(self) -> None: ...
    def depth(self, depth: int) -> None: ...
    def started(self, waited: float) -> None: ...
    def finished(self, worked: float) -> None: ...
    def retried(self) -> None: ...


class RateLimiter(Protocol):
    def when(self, key: Hashable) -> float: ...
    def forget(self, key: Hashable) -> None: ...
    def failures(self, key: Hashable) -> int: ...


class WorkQueue(Generic[K]):
    def __init__(
        self,
        *,
        clock: Clock | None = None,
        rate_limiter: RateLimiter | None = None,
        observer: QueueObserver | None = None,
    ) -> None:
        self.clock: Clock = clock or LoopClock()
        self.rate_limiter: RateLimiter = rate_limiter or DefaultRateLimiter(self.clock)
        self._observer = observer
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: dict[K, float] = {}  # key -> when its worker got it
        self._added_at: dict[K, float] = {}  # key -> when it became dirty (queue latency)
        self._delayed: dict[K, tuple[float, Timer]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._idle: asyncio.Event | None = None
        self._shutting_down = False
        self._drain = True

    # -- adding -------------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Queues ``key`` unless it is already waiting; if it is being processed, it runs again
        after ``done``."""
        if self._shutting_down:
            return
        if key in self._dirty:
            return
        self._dirty.add(key)
        self._added_at[key] = self.clock.now()
        if self._observer:
            self._observer.added()
        if key in self._processing:
            return
        self._queue.append(key)
        self._report_depth()
        self._wake_one()

    def add_after(self, key: K, delay: float) -> None:
        """Adds ``key`` after ``delay`` seconds (at once when ``delay <= 0``)."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        ready_at = self.clock.now() + delay
        pending = self._delayed.get(key)
        if pending is not None:
            if pending[0] <= ready_at:
                return
            pending[1].cancel()
        timer = self.clock.call_later(delay, lambda: self._fire(key))
        self._delayed[key] = (ready_at, timer)

    def add_rate_limited(self, key: K) -> None:
        """Adds ``key`` after the rate limiter's delay for it (which grows with each call)."""
        if self._observer:
            self._observer.retried()
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: K) -> None:
        """The key succeeded: its next failure starts the backoff from the beginning."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return self.rate_limiter.failures(key)

    def _fire(self, key: K) -> None:
        self._delayed.pop(key, None)
        self.add(key)

    # -- processing ---------------------------------------------------------------------------

    async def get(self) -> K:
        """The next key, once there is one; the caller must call :meth:`done` with it."""
        while not self._queue:
            if self._shutting_down:
                raise ShutDown
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # If we were woken for an item and cancelled before taking it, pass it on.
                if waiter.done() and not waiter.cancelled() and self._queue:
                    self._wake_one()
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        if self._shutting_down and not self._drain:
            raise ShutDown
        key = self._queue.popleft()
        now = self.clock.now()
        self._processing[key] = now
        self._dirty.discard(key)
        added_at = self._added_at.pop(key, now)
        if self._observer:
            self._observer.started(now - added_at)
        self._report_depth()
        return key

    def done(self, key: K) -> None:
        """The worker finished ``key``; if it was added meanwhile it is queued again."""
        started = self._processing.pop(key, None)
        if started is not None and self._observer:
            self._observer.finished(self.clock.now() - started)
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self._report_depth()
            self._wake_one()
        if not self._processing and self._idle is not None:
            self._idle.set()

    # -- shutting down ------------------------------------------------------------------------

    def shutdown(self, drain: bool = True) -> None:
        """Stops accepting keys and cancels pending delays. With ``drain`` the keys already
        queued are still handed out; without it ``get`` raises :class:`ShutDown` at once."""
        self._shutting_down = True
        self._drain = drain
        if not drain:
            self._queue.clear()
            self._dirty.clear()
        for _, timer in self._delayed.values():
            timer.cancel()
        self._delayed.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def wait_idle(self) -> None:
        """Returns once no key is being processed."""
        if not self._processing:
            return
        self._idle = asyncio.Event()
        while self._processing:
            self._idle.clear()
            await self._idle.wait()

    # -- introspection ------------------------------------------------------------------------

    def __len__(self) -> int:
        """Keys waiting to be handed out (not counting those processing or delayed)."""
        return len(self._queue)

    @property
    def processing(self) -> int:
        return len(self._processing)

    def unfinished_work_seconds(self) -> float:
        now = self.clock.now()
        return sum(now - started for started in self._processing.values())

    def longest_running_processor_seconds(self) -> float:
        now = self.clock.now()
        return max((now - started for started in self._processing.values()), default=0.0)

    def _report_depth(self) -> None:
        if self._observer:
            self._observer.depth(len(self._queue))

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
