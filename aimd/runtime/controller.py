"""A controller: one work queue, N workers, one reconcile function (controller-runtime's contract).

``reconcile(key)`` reads current state (from the indexes), makes the world match, and returns:

- ``None`` or ``Result()`` — done; the key's backoff is reset.
- ``Result(requeue_after=T)`` — done for now, look again in T seconds (backoff reset).
- ``Result(requeue=True)`` — not done, try again with the key's backoff.
- raises — failed; logged, retried with the key's backoff (5 ms doubling to 1000 s).

Metrics: ``controller_runtime_reconcile_total{controller,result}`` with result ``success``,
``requeue_after``, ``requeue`` or ``error`` as above, plus errors, time, active workers and the
``workqueue_*`` family of the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from aimd.runtime.clock import Clock, LoopClock
from aimd.runtime.metrics import ReconcileMetrics, WorkqueueMetrics
from aimd.runtime.queue import ShutDown, WorkQueue

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Result:
    requeue_after: float | None = None
    requeue: bool = False


Reconcile = Callable[[K], Awaitable[Result | None]]


class Controller(Generic[K]):
    def __init__(
        self,
        name: str,
        reconcile: Reconcile[K],
        workers: int = 1,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self.reconcile = reconcile
        self.workers = max(1, workers)
        self.clock = clock or LoopClock()
        queue_metrics = WorkqueueMetrics(name)
        self.queue: WorkQueue[K] = WorkQueue(clock=self.clock, observer=queue_metrics)
        queue_metrics.bind(
            self.queue.unfinished_work_seconds, self.queue.longest_running_processor_seconds
        )
        self.metrics = ReconcileMetrics(name, self.workers)

    def enqueue(self, key: K) -> None:
        """Reconcile ``key`` soon (once, however often it is enqueued before it runs)."""
        self.queue.add(key)

    def enqueue_after(self, key: K, seconds: float) -> None:
        """Reconcile ``key`` in ``seconds`` (the earliest of several pending delays wins)."""
        self.queue.add_after(key, seconds)

    async def run(self) -> None:
        """Runs the workers until the queue shuts down (or this task is cancelled)."""
        log.info("controller %s: starting %d workers", self.name, self.workers)
        async with asyncio.TaskGroup() as group:
            for number in range(self.workers):
                group.create_task(self._worker(), name=f"{self.name}-worker-{number}")

    async def drain(self, grace: float) -> bool:
        """Starts nothing new and waits up to ``grace`` seconds for in-flight reconciles; True if
        they all finished."""
        self.queue.shutdown(drain=False)
        try:
            await asyncio.wait_for(self.queue.wait_idle(), grace)
        except TimeoutError:
            log.warning(
                "controller %s: %d reconciles still running after %.0fs",
                self.name,
                self.queue.processing,
                grace,
            )
            return False
        return True

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            await self._process(key)

    async def _process(self, key: K) -> None:
        self.metrics.active.inc()
        started = self.clock.now()
        outcome = "error"
        try:
            result = await self.reconcile(key)
        except Exception:
            log.exception("controller %s: reconcile of %r failed", self.name, key)
            self.queue.add_rate_limited(key)
        else:
            if result is not None and result.requeue_after is not None:
                outcome = "requeue_after"
                self.queue.forget(key)
                self.queue.add_after(key, result.requeue_after)
            elif result is not None and result.requeue:
                outcome = "requeue"
                self.queue.add_rate_limited(key)
            else:
                outcome = "success"
                self.queue.forget(key)
        finally:
            self.queue.done(key)
            self.metrics.active.dec()
        self.metrics.observe(outcome, self.clock.now() - started)
