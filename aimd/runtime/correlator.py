"""Which recorded Events become Event objects: client-go's EventCorrelator, for events.k8s.io/v1.

No I/O here; :class:`~aimd.runtime.events.EventRecorder` writes what this decides. Three rules,
with client-go's defaults, bound what one object can cost the API server however often its
reconcile runs:

- **Series.** An occurrence with the same object, type, reason, action, related object and note
  as an Event seen in the last ``series_window`` (6 min, the events library's) is not a new Event:
  it bumps that Event's ``series.count``, which the recorder patches at most once per interval.
- **Aggregation.** Similar occurrences (all of the above but the note) with more than
  ``max_similar`` (10) different notes within ``similar_window`` (10 min) stop making new Events:
  the rest fold into one Event whose note starts with ``(combined from similar events):``.
- **Spam filter.** Every new Event about an object takes a token from that object's bucket,
  ``spam_burst`` (25) deep and refilled at ``spam_qps`` (one per 5 min). Without one, the Event
  is dropped (and counted by the recorder).

Objects are told apart by uid (else kind, namespace and name). The caches are LRUs of
``cache_size`` (4096) entries, so memory stays bounded with any number of objects.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from aimd.api.types import Object

COMBINED = "(combined from similar events): "
CACHE_SIZE = 4096  # client-go's maxLruCacheEntries


@dataclass(eq=False)
class Series:
    """One Event object: created once, then its count patched as the occurrence repeats."""

    regarding: Object
    type: str
    reason: str
    action: str
    note: str
    related: Object | None
    last_seen: float
    first_observed: str  # wall-clock MicroTimes of the first and latest occurrence
    last_observed: str
    count: int = 1
    name: str | None = None  # set once the API server holds the Event
    namespace: str = ""
    written_count: int = 0  # the count the API server holds
    written_at: float = -math.inf
    key: Hashable = None  # the correlator's key for it

    @property
    def written(self) -> bool:
        return self.name is not None

    @property
    def stale(self) -> bool:
        """Written, but the API server's count is behind."""
        return self.name is not None and self.count > self.written_count


@dataclass
class _Similar:
    since: float
    notes: set[str] = field(default_factory=set)


@dataclass
class _Bucket:
    tokens: float
    updated: float


def object_key(ref: Object) -> Hashable:
    uid = ref.get("uid")
    if uid:
        return str(uid)
    return (ref.get("apiVersion"), ref.get("kind"), ref.get("namespace"), ref.get("name"))


class _LRU(OrderedDict[Hashable, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Hashable, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class SpamFilter:
    """A token bucket per object (client-go's EventSourceObjectSpamFilter)."""

    def __init__(self, burst: int = 25, qps: float = 1 / 300, cache_size: int = CACHE_SIZE) -> None:
        self.burst = burst
        self.qps = qps
        self._buckets = _LRU(cache_size)

    def allow(self, key: Hashable, now: float) -> bool:
        bucket: _Bucket | None = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(
                float(self.burst), bucket.tokens + (now - bucket.updated) * self.qps
            )
            bucket.updated = now
        self._buckets.put(key, bucket)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True


class Correlator:
    def __init__(
        self,
        *,
        series_window: float = 360.0,
        max_similar: int = 10,
        similar_window: float = 600.0,
        spam_burst: int = 25,
        spam_qps: float = 1 / 300,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.series_window = series_window
        self.max_similar = max_similar
        self.similar_window = similar_window
        self.spam = SpamFilter(spam_burst, spam_qps, cache_size)
        self._similar = _LRU(cache_size)
        self._series = _LRU(cache_size)

    def observe(
        self,
        regarding: Object,
        event_type: str,
        reason: str,
        note: str,
        *,
        action: str,
        related: Object | None,
        now: float,
        wall: str,
    ) -> Series | None:
        """The series this occurrence belongs to — a new one (``count == 1``, not written) or a
        known one with its count bumped — or None when the spam filter drops it."""
        obj = object_key(regarding)
        similar_key = (obj, event_type, reason, action, object_key(related) if related else None)
        similar: _Similar | None = self._similar.get(similar_key)
        if similar is None or now - similar.since > self.similar_window:
            similar = _Similar(now)
        if len(similar.notes) <= self.max_similar:
            similar.notes.add(note)
        self._similar.put(similar_key, similar)
        combined = len(similar.notes) > self.max_similar
        series_key = (similar_key, None if combined else note)

        series: Series | None = self._series.get(series_key)
        if series is not None and now - series.last_seen < self.series_window:
            series.count += 1
            series.last_seen = now
            series.last_observed = wall
            self._series.put(series_key, series)
            return series
        if not self.spam.allow(obj, now):
            return None
        series = Series(
            regarding,
            event_type,
            reason,
            action,
            COMBINED + note if combined else note,
            related,
            last_seen=now,
            first_observed=wall,
            last_observed=wall,
            key=series_key,
        )
        self._series.put(series_key, series)
        return series

    def discard(self, series: Series) -> None:
        """Forgets a series that will never be written, so repeats start a new one."""
        if self._series.get(series.key) is series:
            del self._series[series.key]
