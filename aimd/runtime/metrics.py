"""Controller metrics with controller-runtime's exact names, labels, help and buckets.

Dashboards and alerts written for Go operators work unchanged. Every series a controller or
informer will ever have is created with zero when that controller or informer is created, so
``rate()`` and ``absent()`` work from the first scrape. ``_created`` series are off process-wide
(see :mod:`aimd.kube.metrics`). All metrics live in prometheus_client's default registry, with
the process collector, and are served by the manager at ``/metrics``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import aimd.kube.metrics  # noqa: F401  (switches _created series off before anything is made)

RECONCILE_RESULTS = ("success", "error", "requeue", "requeue_after")

RECONCILE_TIME_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8,
    0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30,
    40, 50, 60,
)  # fmt: skip
# prometheus.ExponentialBuckets(10e-9, 10, 12): 10 ns to 1000 s.
WORKQUEUE_BUCKETS = tuple(1e-8 * 10**i for i in range(12))

RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller",
    ["controller", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller",
    ["controller"],
    registry=REGISTRY,
)
TERMINAL_RECONCILE_ERRORS = Counter(
    "controller_runtime_terminal_reconcile_errors_total",
    "Total number of terminal reconciliation errors per controller",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_PANICS = Counter(
    "controller_runtime_reconcile_panics_total",
    "Total number of reconciliation panics per controller",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller",
    ["controller"],
    buckets=RECONCILE_TIME_BUCKETS,
    registry=REGISTRY,
)
MAX_CONCURRENT_RECONCILES = Gauge(
    "controller_runtime_max_concurrent_reconciles",
    "Maximum number of concurrent reconciles per controller",
    ["controller"],
    registry=REGISTRY,
)
ACTIVE_WORKERS = Gauge(
    "controller_runtime_active_workers",
    "Number of currently used workers per controller",
    ["controller"],
    registry=REGISTRY,
)

WORKQUEUE_DEPTH = Gauge(
    "workqueue_depth", "Current depth of workqueue", ["name", "controller"], registry=REGISTRY
)
WORKQUEUE_ADDS = Counter(
    "workqueue_adds_total",
    "Total number of adds handled by workqueue",
    ["name", "controller"],
    registry=REGISTRY,
)
WORKQUEUE_QUEUE_DURATION = Histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in workqueue before being requested",
    ["name", "controller"],
    buckets=WORKQUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "How long in seconds processing an item from workqueue takes.",
    ["name", "controller"],
    buckets=WORKQUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_UNFINISHED_WORK = Gauge(
    "workqueue_unfinished_work_seconds",
    "How many seconds of work has been done that is in progress and hasn't been observed by "
    "work_duration. Large values indicate stuck threads. One can deduce the number of stuck "
    "threads by observing the rate at which this increases.",
    ["name", "controller"],
    registry=REGISTRY,
)
WORKQUEUE_LONGEST_RUNNING = Gauge(
    "workqueue_longest_running_processor_seconds",
    "How many seconds has the longest running processor for workqueue been running.",
    ["name", "controller"],
    registry=REGISTRY,
)
WORKQUEUE_RETRIES = Counter(
    "workqueue_retries_total",
    "Total number of retries handled by workqueue",
    ["name", "controller"],
    registry=REGISTRY,
)

EVENT_DROP_REASONS = ("spam", "buffer_full", "write_failed")
EVENTS_DROPPED = Counter(
    "aim_events_dropped",
    "Kubernetes Events recorded but not written: refused by the per-object spam filter, beyond "
    "the writer's buffer, or failed to write.",
    ["reason"],
    registry=REGISTRY,
)
for _reason in EVENT_DROP_REASONS:
    EVENTS_DROPPED.labels(_reason)

INFORMER_EVENT_TYPES = ("added", "modified", "deleted", "bookmark")
INFORMER_RELIST_REASONS = ("initial", "expired", "error")


class Progress(Protocol):
    @property
    def last_progress(self) -> float:
        """time.monotonic() of the last news from the API server."""
        ...


class InformerMetrics:
    """One informer's counts, kept as plain integers (an informer may apply tens of thousands of
    events a second; a prometheus_client counter takes a lock per increment) and turned into
    samples at scrape time by :class:`InformerCollector`."""

    def __init__(self, resource: str, progress: Progress) -> None:
        self.resource = resource
        self.progress = progress
        self.events = dict.fromkeys(INFORMER_EVENT_TYPES, 0)
        self.relists = dict.fromkeys(INFORMER_RELIST_REASONS, 0)
        INFORMERS.add(self)

    def count(self, event_type: str) -> None:
        self.events[event_type] += 1

    def relisted(self, reason: str) -> None:
        self.relists[reason] += 1

    def last_event_timestamp(self) -> float:
        """Unix time of ``progress.last_progress`` (kept on the monotonic clock)."""
        return time.time() - (time.monotonic() - self.progress.last_progress)


INFORMERS: weakref.WeakSet[InformerMetrics] = weakref.WeakSet()


class InformerCollector(Collector):
    """``aim_informer_*`` from every live informer; informers of one resource (several
    namespaces, several managers in one process) are summed, their last event is the latest."""

    def describe(self) -> Iterable[Metric]:
        return self._families()[:0]

    def collect(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> list[Metric]:
        events = CounterMetricFamily(
            "aim_informer_events",
            "Changes an informer applied to its index, by resource and type (watch events, and "
            "the changes a relist found; bookmarks counted too).",
            labels=["resource", "type"],
        )
        relists = CounterMetricFamily(
            "aim_informer_relists",
            "Full lists an informer made: initial, after 410 Gone (expired), or after an error.",
            labels=["resource", "reason"],
        )
        last = GaugeMetricFamily(
            "aim_informer_last_event_timestamp_seconds",
            "Unix time an informer last heard from the API server (list, event, bookmark, or "
            "watch opened or ended by the server).",
            labels=["resource"],
        )
        event_counts: dict[tuple[str, str], int] = {}
        relist_counts: dict[tuple[str, str], int] = {}
        latest: dict[str, float] = {}
        for informer in list(INFORMERS):
            for kind, value in informer.events.items():
                key = (informer.resource, kind)
                event_counts[key] = event_counts.get(key, 0) + value
            for reason, value in informer.relists.items():
                key = (informer.resource, reason)
                relist_counts[key] = relist_counts.get(key, 0) + value
            stamp = informer.last_event_timestamp()
            latest[informer.resource] = max(stamp, latest.get(informer.resource, 0.0))
        for (resource, kind), value in sorted(event_counts.items()):
            events.add_metric([resource, kind], value)
        for (resource, reason), value in sorted(relist_counts.items()):
            relists.add_metric([resource, reason], value)
        for resource, stamp in sorted(latest.items()):
            last.add_metric([resource], stamp)
        return [events, relists, last]


REGISTRY.register(InformerCollector())


class WorkqueueMetrics:
    """The queue's observer for one controller's queue (``name`` and ``controller`` labels are
    both the controller name, as in controller-runtime)."""

    def __init__(self, name: str) -> None:
        self._depth = WORKQUEUE_DEPTH.labels(name, name)
        self._adds = WORKQUEUE_ADDS.labels(name, name)
        self._queue_duration = WORKQUEUE_QUEUE_DURATION.labels(name, name)
        self._work_duration = WORKQUEUE_WORK_DURATION.labels(name, name)
        self._retries = WORKQUEUE_RETRIES.labels(name, name)
        self._unfinished = WORKQUEUE_UNFINISHED_WORK.labels(name, name)
        self._longest = WORKQUEUE_LONGEST_RUNNING.labels(name, name)
        self._depth.set(0)

    def bind(self, unfinished: Callable[[], float], longest: Callable[[], float]) -> None:
        """Computed at scrape time from the queue, instead of by a ticker."""
        self._unfinished.set_function(unfinished)
        self._longest.set_function(longest)

    def added(self) -> None:
        self._adds.inc()

    def depth(self, depth: int) -> None:
        self._depth.set(depth)

    def started(self, waited: float) -> None:
        self._queue_duration.observe(waited)

    def finished(self, worked: float) -> None:
        self._work_duration.observe(worked)

    def retried(self) -> None:
        self._retries.inc()


class ReconcileMetrics:
    def __init__(self, controller: str, workers: int) -> None:
        self.controller = controller
        self._results = {r: RECONCILE_TOTAL.labels(controller, r) for r in RECONCILE_RESULTS}
        self._errors = RECONCILE_ERRORS.labels(controller)
        self._terminal = TERMINAL_RECONCILE_ERRORS.labels(controller)
        self._panics = RECONCILE_PANICS.labels(controller)
        self._time = RECONCILE_TIME.labels(controller)
        self.active = ACTIVE_WORKERS.labels(controller)
        self.active.set(0)
        MAX_CONCURRENT_RECONCILES.labels(controller).set(workers)

    def observe(self, result: str, seconds: float) -> None:
        """One reconcile ended; an ``error`` result counts in the errors total too (terminal
        errors and panics as well, as in controller-runtime)."""
        self._results[result].inc()
        self._time.observe(seconds)
        if result == "error":
            self._errors.inc()

    def terminal(self) -> None:
        self._terminal.inc()

    def panicked(self) -> None:
        self._panics.inc()
