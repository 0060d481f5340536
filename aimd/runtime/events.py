"""Kubernetes Events (``events.k8s.io/v1``) about objects: recorded without waiting, written in
the background, their rate bounded by design.

Usage from a reconciler::

    manager.events.normal(model_cache, "Created", "created PVC mc-data", action="Create")
    manager.events.warning(model_cache, "DownloadFailed", "hf://x: 401 from the hub")

Why in the background: an Event is for people; a reconcile must neither wait for it nor fail
because of it. :meth:`EventRecorder.record` only decides (through the
:class:`~aimd.runtime.correlator.Correlator`: repeats fold into one Event's ``series``, similar
Events aggregate, a per-object token bucket filters spam) and queues; one task writes, one new
Event at a time, up to ``writers`` (4) at a time while ``burst_at`` (250) or more are waiting.

What one writer task sends, and why it stays bounded:

- a new Event: one POST (a repeat that arrives before the POST goes out is folded into it);
- a repeat of a written Event: its ``series`` (count, lastObservedTime) is PATCHed at most once
  every ``series_interval`` (10 s) per Event, however often it repeats meanwhile;
- an Event the API server expired (its TTL, 1 h by default) is created again on its next repeat.

The writer's client has its own rate limiter (the manager gives it one), so Events never wait
behind reconcile writes, nor they behind Events. What is still dropped — the spam filter's
refusals, new Events beyond ``buffer`` (4096) waiting to be written, writes that failed — is
counted in ``aim_events_dropped_total{reason}`` (``spam``, ``buffer_full``, ``write_failed``) and
logged as one summary line per ``report_interval`` (60 s) and on :meth:`EventRecorder.flush`,
never once per Event.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from aimd.api.types import Object
from aimd.kube.client import KubeClient
from aimd.kube.errors import ApiError, NotFound
from aimd.kube.lease import LeadershipLost, micro_time
from aimd.kube.resources import EVENTS
from aimd.runtime.correlator import CACHE_SIZE, Correlator, Series
from aimd.runtime.metrics import EVENTS_DROPPED

log = logging.getLogger(__name__)


ObjectLike = Mapping[str, Any]  # a full object or an ObjectReference, typed view or plain
NOTE_LIMIT = 1024  # the API server refuses longer notes
NAME_LIMIT = 253 - 17  # room for ".<16 hex digits>"
WRITE_ERRORS = (ApiError, aiohttp.ClientError, TimeoutError, LeadershipLost)
# New Events that may wait to be written: as many series as the correlator remembers (the same
# objects, so waiting costs no memory of its own).
# 10,000 services make 3,000 Events, most of them in the first minutes, faster than an API
# server that busy takes them from four writers: a buffer of 1,000 dropped 188.
BUFFER = CACHE_SIZE
# Waiting Events from which the writers send several at once: a burst, not the Event or two a
# reconcile makes. Apart from BUFFER, so that a bigger buffer does not also ramp later.
BURST_AT = 250


def reference(obj: ObjectLike) -> Object:
    """An ObjectReference to ``obj`` (what an Event's ``regarding`` holds)."""
    metadata = obj.get("metadata") or {}
    ref = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "uid": metadata.get("uid"),
        "resourceVersion": metadata.get("resourceVersion"),
    }
    return {key: value for key, value in ref.items() if value}


class EventRecorder:
    def __init__(
        self,
        client: KubeClient,
        controller: str,
        instance: str,
        *,
        buffer: int = BUFFER,
        writers: int = 4,
        burst_at: int = BURST_AT,
        series_interval: float = 10.0,
        report_interval: float = 60.0,
        correlator: Correlator | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.controller = controller
        self.instance = instance[:128]
        self.buffer = buffer
        self.writers = max(1, writers)
        self.burst_at = max(1, burst_at)
        self.series_interval = series_interval
        self.report_interval = report_interval
        self.correlator = correlator or Correlator()
        self.clock = clock
        self._new: deque[Series] = deque()
        self._stale: dict[int, Series] = {}  # written series whose count moved on, by id
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._flushing = 0
        self._unreported: Counter[str] = Counter()
        self._reported_at = clock()
        self._last_error: BaseException | None = None

    def normal(self, regarding: ObjectLike, reason: str, note: str, *, action: str = "") -> None:
        self.record(regarding, "Normal", reason, note, action=action)

    def warning(self, regarding: ObjectLike, reason: str, note: str, *, action: str = "") -> None:
        self.record(regarding, "Warning", reason, note, action=action)

    def record(
        self,
        regarding: ObjectLike,
        event_type: str,
        reason: str,
        note: str,
        *,
        action: str = "",
        related: ObjectLike | None = None,
    ) -> None:
        """Queues an Event about ``regarding`` (a full object or an ObjectReference); never
        blocks, never raises. ``action`` defaults to ``reason``."""
        ref = reference(regarding) if "metadata" in regarding else dict(regarding)
        rel: Object | None = None
        if related:
            rel = reference(related) if "metadata" in related else dict(related)
        now = self.clock()
        series = self.correlator.observe(
            ref,
            event_type,
            reason[:128],
            note[:NOTE_LIMIT],
            action=(action or reason)[:128],
            related=rel,
            now=now,
            wall=micro_time(),
        )
        if series is None:
            self._drop("spam", now)
            return
        if series.count == 1:
            if len(self._new) >= self.buffer:
                self.correlator.discard(series)
                self._drop("buffer_full", now)
                return
            self._new.append(series)
        elif series.written:
            self._stale[id(series)] = series
        # else: still waiting for its POST, which will carry the count.
        self._idle.clear()
        self._wakeup.set()

    async def flush(self) -> None:
        """Waits until everything recorded so far is written (series counts too, without waiting
        for their interval) or given up on."""
        self._flushing += 1
        self._wakeup.set()
        try:
            await self._idle.wait()
        finally:
            self._flushing -= 1

    async def run(self) -> None:
        """Writes recorded Events until cancelled."""
        while True:
            now = self.clock()
            if self._new:
                await asyncio.gather(*(self._create(series) for series in self._next_batch()))
                continue
            due = self._next_stale(now)
            if due is not None:
                await self._patch(due)
                continue
            self._report(now, force=bool(self._flushing))
            if not self._stale:
                self._idle.set()
            self._wakeup.clear()
            try:
                async with asyncio.timeout(self._sleep_for(now)):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    # -- writing ------------------------------------------------------------------------------

    def _next_batch(self) -> list[Series]:
        """One new Event, or up to ``writers`` once ``burst_at`` are waiting.

        One at a time keeps Events behind the reconciles that caused them; a few at a time keeps a
        burst from being dropped (10,000 services made 12,000 Events in 500 s on a busy API
        server, and one POST at a time let 1,151 of them overflow the buffer).
        """
        size = self.writers if len(self._new) >= self.burst_at else 1
        return [self._new.popleft() for _ in range(min(size, len(self._new)))]

    def _next_stale(self, now: float) -> Series | None:
        for key, series in self._stale.items():
            if self._flushing or now - series.written_at >= self.series_interval:
                del self._stale[key]
                return series
        return None

    def _sleep_for(self, now: float) -> float | None:
        """Until the earliest stale series is due or the drop summary is; None: until woken."""
        times = [series.written_at + self.series_interval for series in self._stale.values()]
        if self._unreported:
            times.append(self._reported_at + self.report_interval)
        return max(0.0, min(times) - now) if times else None

    async def _create(self, series: Series) -> None:
        ref = series.regarding
        namespace = ref.get("namespace") or "default"
        base = str(ref.get("name") or "event")[:NAME_LIMIT].rstrip("-.") or "event"
        name = f"{base}.{secrets.token_hex(8)}"
        body: Object = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "eventTime": series.first_observed,
            "reportingController": self.controller,
            "reportingInstance": self.instance,
            "action": series.action,
            "reason": series.reason,
            "type": series.type,
            "note": series.note,
            "regarding": ref,
        }
        if series.related:
            body["related"] = series.related
        count = series.count
        if count > 1:
            body["series"] = {"count": count, "lastObservedTime": series.last_observed}
        try:
            await self.client.create(EVENTS, body, namespace)
        except WRITE_ERRORS as error:
            self.correlator.discard(series)
            self._drop("write_failed", self.clock(), error)
            return
        series.name, series.namespace = name, namespace
        series.written_count, series.written_at = count, self.clock()
        if series.count > count:
            self._stale[id(series)] = series

    async def _patch(self, series: Series) -> None:
        assert series.name is not None
        count = series.count
        patch = {"series": {"count": count, "lastObservedTime": series.last_observed}}
        try:
            await self.client.patch(EVENTS, series.name, patch, series.namespace)
        except NotFound:
            series.name = None  # expired by the API server's event TTL: create it again
            self._new.appendleft(series)
            return
        except WRITE_ERRORS as error:
            series.written_count, series.written_at = count, self.clock()
            self._drop("write_failed", self.clock(), error)
            return
        series.written_count, series.written_at = count, self.clock()
        if series.count > count:
            self._stale[id(series)] = series

    # -- what was dropped ---------------------------------------------------------------------

    def _drop(self, reason: str, now: float, error: BaseException | None = None) -> None:
        EVENTS_DROPPED.labels(reason).inc()
        self._unreported[reason] += 1
        if error is not None:
            self._last_error = error
        self._wakeup.set()  # so the writer schedules the next summary

    def _report(self, now: float, *, force: bool) -> None:
        """One summary line of what was dropped, at most once per ``report_interval`` (and on
        :meth:`flush`, so that nothing dropped before a shutdown goes unsaid)."""
        if not self._unreported or (not force and now - self._reported_at < self.report_interval):
            return
        counts = ", ".join(f"{reason}: {n}" for reason, n in sorted(self._unreported.items()))
        failed = self._last_error if self._unreported["write_failed"] else None
        log.warning(
            "dropped %d Events since the last report (%s)%s; see aim_events_dropped_total",
            sum(self._unreported.values()),
            counts,
            f"; last write error: {failed}" if failed is not None else "",
        )
        self._unreported.clear()
        self._reported_at = now
