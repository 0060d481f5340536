"""Kubernetes Events (``events.k8s.io/v1``) about objects: recorded without waiting, written in
the background, repeats folded into one Event.

Usage from a reconciler::

    manager.events.normal(model_cache, "Created", "created PVC mc-data", action="Create")
    manager.events.warning(model_cache, "DownloadFailed", "hf://x: 401 from the hub")

Why in the background: an Event is for people; a reconcile must neither wait for it nor fail
because of it. Recording appends to a bounded buffer (overflow is dropped and logged), and one task
writes. Why folded: a reconcile that fails every backoff step would otherwise leave hundreds of
identical Events. As client-go's event correlator does, an Event with the same object, type,
reason, action and note as one written in the last ``series_window`` seconds becomes a PATCH of
that Event's ``series`` (count and lastObservedTime) instead of a new object.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from aimd.kube.client import KubeClient
from aimd.kube.errors import ApiError, NotFound
from aimd.kube.lease import micro_time
from aimd.kube.resources import EVENTS

log = logging.getLogger(__name__)

Object = dict[str, Any]
ObjectLike = Mapping[str, Any]  # a full object or an ObjectReference, typed view or plain
NOTE_LIMIT = 1024  # the API server refuses longer notes


@dataclass
class _Pending:
    regarding: ObjectLike
    type: str
    reason: str
    note: str
    action: str
    related: ObjectLike | None


@dataclass
class _Series:
    namespace: str
    name: str
    count: int
    written_at: float


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
        buffer: int = 1000,
        series_window: float = 360.0,
    ) -> None:
        self.client = client
        self.controller = controller
        self.instance = instance[:128]
        self.series_window = series_window
        self._buffer: deque[_Pending] = deque(maxlen=buffer)
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._series: dict[tuple[str, ...], _Series] = {}
        self.dropped = 0

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
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
            log.warning("event buffer full; dropping %s %s", event_type, reason)
        ref = reference(regarding) if "metadata" in regarding else dict(regarding)
        self._buffer.append(
            _Pending(ref, event_type, reason, note[:NOTE_LIMIT], action or reason, related)
        )
        self._idle.clear()
        self._wakeup.set()

    async def flush(self) -> None:
        """Waits until everything recorded so far has been written (or given up on)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Writes recorded Events until cancelled."""
        while True:
            if not self._buffer:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            pending = self._buffer.popleft()
            try:
                await self._write(pending)
            except (ApiError, aiohttp.ClientError, TimeoutError) as error:
                log.warning("could not write event %s on %s: %s", pending.reason,
                            pending.regarding.get("name"), error)  # fmt: skip

    async def _write(self, pending: _Pending) -> None:
        namespace = pending.regarding.get("namespace") or "default"
        key = (
            str(pending.regarding.get("uid") or pending.regarding.get("name")),
            pending.type,
            pending.reason,
            pending.action,
            pending.note,
        )
        now = time.monotonic()
        series = self._series.get(key)
        if series is not None and now - series.written_at < self.series_window:
            series.count += 1
            patch = {"series": {"count": series.count, "lastObservedTime": micro_time()}}
            try:
                await self.client.patch(EVENTS, series.name, patch, series.namespace)
                series.written_at = now
                return
            except NotFound:
                pass  # expired by the API server's event TTL: write a new one
        name = f"{pending.regarding.get('name', 'event')}.{secrets.token_hex(8)}"
        body: Object = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "eventTime": micro_time(),
            "reportingController": self.controller,
            "reportingInstance": self.instance,
            "action": pending.action[:128],
            "reason": pending.reason[:128],
            "type": pending.type,
            "note": pending.note,
            "regarding": pending.regarding,
        }
        if pending.related:
            body["related"] = pending.related
        await self.client.create(EVENTS, body, namespace)
        self._series[key] = _Series(namespace, name, 1, now)
        self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        if len(self._series) < 4096:
            return
        for key in [k for k, s in self._series.items() if now - s.written_at > self.series_window]:
            del self._series[key]
