"""A controller: one work queue, N workers, one reconcile function (controller-runtime's contract).

``reconcile(key)`` reads current state (from the indexes), makes the world match, and returns:

- ``None`` or ``Result()`` — done; the key's backoff is reset.
- ``Result(requeue_after=T)`` — done for now, look again in T seconds (backoff reset).
- ``Result(requeue=True)`` — not done, try again with the key's backoff.

or raises; what happens then depends on what it raised (controller-runtime's error contract):

- :class:`TerminalError` — retrying cannot help (the object is wrong, and says so in its
  status). Logged, counted in ``controller_runtime_terminal_reconcile_errors_total``, and *not*
  requeued: the key runs again when an event enqueues it. Raise it ``from`` the cause.
- :class:`~aimd.kube.errors.Conflict` (409) — the decision was made on state older than the
  server's. Not a failure: requeued with the key's backoff, once the watch brings the news, and
  logged at debug only (result ``requeue``). Reconcilers need not catch it.
- an expected failure (:data:`EXPECTED_ERRORS`: the API server refused, the connection failed, a
  timeout) — logged as an error without a traceback, retried with the key's backoff.
- anything else — a bug ("panic" in controller-runtime's words): logged with its traceback,
  counted in ``controller_runtime_reconcile_panics_total`` and as an error, retried with backoff.
- :class:`~aimd.kube.lease.LeadershipLost` (the write fence refused a write) — passed on: the
  manager stops every worker.

Backoff is per key, exponential from 5 ms to 1000 s, and reset when a reconcile succeeds.

Every line logged while a key is reconciled carries ``controller``, ``namespace``, ``name`` and
a fresh ``reconcileID`` (see :mod:`aimd.logs`). Keys are any hashable; ``log_key`` says which
namespace and name a key stands for (default :func:`namespace_name`).

Metrics: ``controller_runtime_reconcile_total{controller,result}`` with result ``success``,
``requeue_after``, ``requeue`` or ``error`` as above, plus errors, terminal errors, panics, time,
active workers and the ``workqueue_*`` family of the queue.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import aiohttp

from aimd import logs
from aimd.kube.errors import ApiError, Conflict
from aimd.kube.lease import LeadershipLost
from aimd.runtime.clock import Clock, LoopClock
from aimd.runtime.metrics import ReconcileMetrics, WorkqueueMetrics
from aimd.runtime.queue import ShutDown, WorkQueue

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

EXPECTED_ERRORS: tuple[type[Exception], ...] = (
    ApiError,
    aiohttp.ClientError,
    TimeoutError,
    OSError,
)


class TerminalError(Exception):
    """A reconcile failure that retrying cannot fix: logged, counted, not requeued."""


@dataclass(frozen=True, slots=True)
class Result:
    requeue_after: float | None = None
    requeue: bool = False


Reconcile = Callable[[K], Awaitable[Result | None]]
LogKey = Callable[[K], tuple[str, str]]


def namespace_name(key: Hashable) -> tuple[str, str]:
    """The default ``log_key``: a ``(namespace, name)`` tuple as it is, ``"namespace/name"``
    split, anything else as a name without a namespace."""
    if isinstance(key, tuple) and len(key) == 2:
        return str(key[0]), str(key[1])
    if isinstance(key, str) and "/" in key:
        namespace, _, name = key.partition("/")
        return namespace, name
    return "", str(key)


class Controller(Generic[K]):
    def __init__(
        self,
        name: str,
        reconcile: Reconcile[K],
        workers: int = 1,
        *,
        clock: Clock | None = None,
        log_key: LogKey[K] = namespace_name,
    ) -> None:
        self.name = name
        self.reconcile = reconcile
        self.workers = max(1, workers)
        self.clock = clock or LoopClock()
        self.log_key = log_key
        queue_metrics = WorkqueueMetrics(name)
        self.queue: WorkQueue[K] = WorkQueue(clock=self.clock, observer=queue_metrics)
        queue_metrics.bind(
            self.queue.unfinished_work_seconds, self.queue.longest_running_processor_seconds
        )
        self.metrics = ReconcileMetrics(name, self.workers)

    def enqueue(self, key: K) -> None:
        """Reconcile ``key`` soon (once, however often it is enqueued before it runs)."""
        self.queue.add(key)

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
        namespace, name = self.log_key(key)
        context = logs.Context(self.name, namespace, name, str(uuid.uuid4()))
        self.metrics.active.inc()
        started = self.clock.now()
        outcome = "error"
        with logs.bound(context):
            try:
                result = await self.reconcile(key)
            except LeadershipLost:
                raise
            except TerminalError as error:
                self.metrics.terminal()
                log.error("reconcile failed; not retried until the object changes: %s", error)
                self.queue.forget(key)
            except Conflict as error:
                outcome = "requeue"
                log.debug("conflict; retrying from fresh state: %s", error)
                self.queue.add_rate_limited(key)
            except EXPECTED_ERRORS as error:
                log.error("reconcile failed; retrying with backoff: %s", _describe(error))
                self.queue.add_rate_limited(key)
            except Exception:
                self.metrics.panicked()
                log.exception("reconcile panicked (a bug); retrying with backoff")
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


def _describe(error: Exception) -> str:
    """An error as a person reads it: ``str`` alone is empty for many transport errors."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
