"""List-then-watch for one resource, forever: the reflector of client-go.

:meth:`Watcher.run` feeds a :class:`WatchSink`, synchronously and in order:

- ``listed(Listed)`` — the complete current state (every object) and the resourceVersion it is
  consistent with. The sink replaces its store with it and diffs: keys it held that are not in
  the list were deleted while we were not watching, and it must say so.
- ``changed(type, object)`` — one ADDED / MODIFIED / DELETED watch event.
- ``bookmark(resource_version)`` — the server's "you are now at X", with no object.

Calls, not an async generator per item: at tens of thousands of events a second, each extra
generator hop is a measurable share of the cost of an event.

Which resourceVersion each request uses, and why:

1. **First list**: ``resourceVersion`` unset, a quorum read from etcd, in pages of ``page_size``.
   client-go lists from the watch cache (``"0"``) for speed, but that can hand a restarted
   controller state older than what it wrote before it died; a consistent read costs a little
   and removes that whole class of bug.
2. **Watch**: from the last resourceVersion we hold (the list's, then each event's or bookmark's),
   with ``allowWatchBookmarks=true`` so an idle resource still advances us, and ``timeoutSeconds``
   drawn from 5 to 10 minutes so many watches do not all end at once. A watch the server ends at its
   timeout is simply reopened from where we are: no list, no backoff.
3. **Silence**: with no byte for ``inactivity_timeout`` (70 s) the connection may be dead (a
   half-open TCP connection after a node or load balancer failure never errors), so it is
   closed and the watch reopened at once from the same resourceVersion, without backoff: an
   idle resource looks the same (kube-apiserver 1.35 sent no bookmark to an idle watch in 75 s
   in our tests), and a dead server shows itself on the reconnect, which does back off.
4. **410 Gone / Expired** (as the HTTP status or as an ERROR event), or "resourceVersion too
   large": our resourceVersion is no longer served. We relist with it unset (quorum read), and
   the consumer's diff turns objects deleted meanwhile into deletions.
5. **Transport errors, 429, 5xx** while watching: wait (jittered exponential backoff, 0.8 s
   doubling to 30 s, reset after two healthy minutes) and reopen the watch from the same
   resourceVersion — the server's watch cache still has those events unless it says 410.
6. **Anything else** (403 while RBAC is being fixed, an undecodable line): wait the same backoff
   and relist with our resourceVersion ("not older than", served from the watch cache).
7. **A watch that ends at once with nothing** (a proxy cutting streams): backoff, then reopen.

Every object delivered has lost ``metadata.managedFields``: large, never read by a controller, and
most of the memory an index would otherwise spend. Lines are split by hand from the raw chunks,
so a single event of many MiB parses (aiohttp's ``readline`` refuses lines over 128 KiB).

:attr:`Watcher.last_progress` is the monotonic time we last heard from the API server for this
watch (list, watch opened, event, bookmark, orderly end): the liveness check reads it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import orjson

from aimd.api.types import Object
from aimd.kube.backoff import Backoff
from aimd.kube.client import KubeClient
from aimd.kube.errors import ApiError, Gone, ServerError, TooManyRequests, error_from_status
from aimd.kube.resources import Resource

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Listed:
    items: list[Object]
    resource_version: str
    reason: str  # "initial", "expired" or "error"


class WatchSink(Protocol):
    """Where a watcher delivers what it learns; calls must not block."""

    def listed(self, listed: Listed) -> None: ...

    def changed(self, event_type: str, obj: Object) -> None:
        """``event_type`` is ``"ADDED"``, ``"MODIFIED"`` or ``"DELETED"``."""
        ...

    def bookmark(self, resource_version: str) -> None: ...


class _Relist(Exception):
    """Internal: the watch cannot continue from our resourceVersion; list again."""

    def __init__(self, reason: str, unusable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unusable = unusable


def strip(obj: Object) -> Object:
    """Drops ``metadata.managedFields`` in place and returns the object."""
    metadata = obj.get("metadata")
    if metadata is not None:
        metadata.pop("managedFields", None)
    return obj


def resource_version_unusable(error: ApiError) -> bool:
    """410 Gone/Expired, or the 504 "Too large resource version" a lagging server answers."""
    if isinstance(error, Gone) or error.reason in ("Expired", "Gone"):
        return True
    return any(cause.get("reason") == "ResourceVersionTooLarge" for cause in error.causes)


class LineSplitter:
    """Newline-separated lines from chunks of a body, however long a line is: the pieces of a
    line that spans chunks are joined once, when its end arrives (aiohttp's ``readline`` refuses
    lines over 128 KiB; a watch event can be several MiB)."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes | memoryview]:
        lines: list[bytes | memoryview] = []
        pending = self._pending
        view = memoryview(chunk)
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if start < len(chunk):
                    pending.append(chunk[start:])
                return lines
            if pending:
                pending.append(chunk[start:end])
                lines.append(b"".join(pending))
                pending.clear()
            elif end > start:
                lines.append(view[start:end])
            start = end + 1

    def tail(self) -> bytes | None:
        """What is left after the last newline, if the body ended without one."""
        if not self._pending:
            return None
        rest = b"".join(self._pending)
        self._pending.clear()
        return rest or None


class Watcher:
    """Lists and watches ``resource`` (in ``namespace``, or all namespaces) until cancelled."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        inactivity_timeout: float = 70.0,
        watch_timeout: tuple[int, int] = (300, 600),
        backoff: Backoff | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.inactivity_timeout = inactivity_timeout
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff()
        self.resource_version: str | None = None
        self.last_progress = time.monotonic()
        self.connected = False

    def _progress(self) -> None:
        self.last_progress = time.monotonic()

    def _selectors(self) -> dict[str, str]:
        params: dict[str, str] = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    async def run(self, sink: WatchSink) -> None:
        """Lists and watches until cancelled, feeding ``sink``."""
        reason = "initial"
        list_from: str | None = None  # None: quorum read
        # A watcher that already holds a resourceVersion (the consumer ran it before and kept its
        # store) resumes with a watch; if that version expired meanwhile, the 410 relists.
        need_list = self.resource_version is None
        while True:
            if need_list:
                try:
                    listed = await self._list(list_from, reason)
                except ApiError as error:
                    if list_from is not None and resource_version_unusable(error):
                        list_from, reason = None, "expired"
                        continue
                    log.warning("listing %s failed: %s", self._what(), error)
                    await self.backoff.wait()
                    continue
                except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                    log.warning("listing %s failed: %r", self._what(), error)
                    await self.backoff.wait()
                    continue
                self.resource_version = listed.resource_version
                need_list = False
                sink.listed(listed)
            try:
                opened = time.monotonic()
                delivered = await self._watch(sink)
                if delivered == 0 and time.monotonic() - opened < 1.0:
                    # A server that ends watches at once (a proxy cutting streams) must not turn
                    # this loop into a hot loop: treat it as an error (client-go does too).
                    log.info("watch of %s ended at once with nothing", self._what())
                    await self.backoff.wait()
            except _Relist as relist:
                need_list = True
                reason = relist.reason
                list_from = None if relist.unusable else self.resource_version
                if not relist.unusable:
                    await self.backoff.wait()
            except TimeoutError as error:
                if self.connected:
                    # Silence past the inactivity timeout: reopen at once from where we are.
                    # Not an error (an idle resource on a server that sends no bookmarks looks
                    # the same), so it must not grow the backoff; a dead server shows itself
                    # on the reconnect, which backs off.
                    log.info("watch of %s silent for %.0fs; reopening", self._what(),
                             self.inactivity_timeout)  # fmt: skip
                    continue
                log.info("watch of %s could not start: %r", self._what(), error)
                await self.backoff.wait()
            except (aiohttp.ClientError, TooManyRequests, ServerError) as error:
                log.info("watch of %s interrupted: %r", self._what(), error)
                if isinstance(error, TooManyRequests) and error.retry_after is not None:
                    await asyncio.sleep(min(error.retry_after, self.backoff.cap))
                else:
                    await self.backoff.wait()
            finally:
                self.connected = False

    async def _list(self, resource_version: str | None, reason: str) -> Listed:
        """Every object, paging only for the quorum read (a paged list at a given resourceVersion
        is served from etcd at exactly that revision, which may already be compacted)."""
        items: list[Object] = []
        continue_token: str | None = None
        while True:
            page = await self.client.list(
                self.resource,
                self.namespace,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
                resource_version=resource_version,
                limit=self.page_size if resource_version is None else None,
                continue_token=continue_token,
            )
            self._progress()
            # Items of a List carry no apiVersion and kind (the List does); watch events do.
            # Stored objects look the same whichever way they came, so owner references and
            # Events can be built from any of them.
            api_version, kind = self.resource.api_version, self.resource.kind
            for obj in page.get("items") or ():
                obj.setdefault("apiVersion", api_version)
                obj.setdefault("kind", kind)
                items.append(strip(obj))
            metadata = page.get("metadata") or {}
            continue_token = metadata.get("continue")
            if not continue_token:
                return Listed(items, str(metadata.get("resourceVersion", "")), reason)

    async def _watch(self, sink: WatchSink) -> int:
        """One watch request, until the server ends it; returns how many lines it delivered."""
        params = self._selectors()
        params.update(
            watch="true",
            allowWatchBookmarks="true",
            timeoutSeconds=str(random.randint(*self.watch_timeout)),
        )
        if self.resource_version:
            params["resourceVersion"] = self.resource_version
        try:
            async with self.client.stream(
                self.resource.path(self.namespace),
                params=params,
                read_timeout=self.inactivity_timeout,
            ) as response:
                self.connected = True
                self._progress()
                splitter = LineSplitter()
                delivered = 0
                async for chunk in response.content.iter_any():
                    self._progress()
                    for line in splitter.feed(chunk):
                        self._deliver(line, sink)
                        delivered += 1
                rest = splitter.tail()
                if rest is not None:
                    self._deliver(rest, sink)
                    delivered += 1
                self._progress()
                return delivered
        except ApiError as error:
            if resource_version_unusable(error):
                raise _Relist("expired", unusable=True) from error
            if isinstance(error, TooManyRequests | ServerError):
                raise
            log.warning("watch of %s refused: %s", self._what(), error)
            raise _Relist("error", unusable=False) from error

    def _deliver(self, line: bytes | memoryview, sink: WatchSink) -> None:
        try:
            event = orjson.loads(line)
            kind = event["type"]
            obj = event["object"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as error:
            log.warning("undecodable watch event for %s: %r", self._what(), error)
            raise _Relist("error", unusable=False) from error
        if kind == "BOOKMARK":
            version = str(obj["metadata"]["resourceVersion"])
            self.resource_version = version
            sink.bookmark(version)
            return
        if kind == "ERROR":
            failure = error_from_status(int(obj.get("code") or 500), obj)
            if resource_version_unusable(failure):
                raise _Relist("expired", unusable=True)
            raise failure
        metadata = obj["metadata"]
        self.resource_version = metadata["resourceVersion"]
        metadata.pop("managedFields", None)
        sink.changed(kind, obj)

    def _what(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.resource.plural}{where}"
