"""One resource → one index, kept current by a :class:`~aimd.kube.watch.Watcher`, with handlers.

The order promise (client-go's): for every change, the index is updated first, then each handler
is called with ``(event_type, old, new)``. A handler that reads the index — its own or another
informer's — sees at least the state the event describes.

What handlers receive:

- ``"ADDED"``, ``None``, the object — a key the index did not hold.
- ``"MODIFIED"``, previous state, new state — a key it held. The type follows the index, not the
  wire: a MODIFIED for an unknown key is delivered as ADDED and vice versa, so handlers can trust
  ``old`` to be None exactly for ADDED.
- ``"DELETED"``, last state, ``None`` — from a watch event (the object as it was deleted) or from
  a relist (keys that vanished while the watch was down; ``old`` is the last state we had).

A relist produces events only for what changed (by resourceVersion), so a reconnect does not flood
the queues. Handlers run synchronously in the informer's task and must not block; an exception in
one is logged and does not stop the others or the informer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aimd.kube.client import KubeClient
from aimd.kube.resources import Resource
from aimd.kube.watch import Listed, Watcher
from aimd.runtime.index import Index, IndexFunc, key_of
from aimd.runtime.metrics import InformerMetrics

log = logging.getLogger(__name__)

Object = dict[str, Any]
Handler = Callable[[str, Object | None, Object | None], None]
Transform = Callable[[Object], Object]


def resource_label(resource: Resource) -> str:
    """``plural.group`` (``plural`` for the core group), as kubectl names resources."""
    return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


class Informer:
    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        transform: Transform | None = None,
        watcher: Watcher | None = None,
    ) -> None:
        self.resource = resource
        # client-go's SetTransform: shape each object once, as it enters the index, so every
        # reader (indexes, handlers, reconcilers) sees the same normalised form.
        self.transform = transform
        self.namespace = namespace
        self.index = Index()
        self.watcher = watcher or Watcher(
            client, resource, namespace, label_selector=label_selector
        )
        self.name = resource_label(resource) + (f"@{namespace}" if namespace else "")
        self.metrics = InformerMetrics(resource_label(resource), self.watcher)
        self._handlers: list[Handler] = []
        self._synced = asyncio.Event()

    # -- declaring ----------------------------------------------------------------------------

    def add_index(self, name: str, func: IndexFunc) -> None:
        """Declares secondary index ``name``; query it with ``informer.index.by(name, value)``."""
        self.index.add_index(name, func)

    def add_handler(self, handler: Handler) -> None:
        """Registers ``handler``; if the index already holds objects, the handler is first told
        about each of them as ``"ADDED"``, so late handlers miss nothing."""
        self._handlers.append(handler)
        for obj in self.index:
            self._call(handler, "ADDED", None, obj)

    # -- state --------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """The first list has been stored (and its events delivered)."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    @property
    def last_progress(self) -> float:
        """Monotonic time this informer last heard from the API server."""
        return self.watcher.last_progress

    def get(self, name: str, namespace: str | None = None) -> Object | None:
        return self.index.get_by_name(name, namespace)

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Lists and watches until cancelled."""
        await self.watcher.run(self)

    # -- the watcher's sink: store first, then tell the handlers ------------------------------

    def changed(self, event_type: str, obj: Object) -> None:
        if self.transform is not None:
            obj = self.transform(obj)
        if event_type == "DELETED":
            self.index.remove(key_of(obj))
            self.metrics.count("deleted")
            self._dispatch("DELETED", obj, None)
            return
        old = self.index.apply(obj)
        if old is None:
            self.metrics.count("added")
            self._dispatch("ADDED", None, obj)
        else:
            self.metrics.count("modified")
            self._dispatch("MODIFIED", old, obj)

    def bookmark(self, resource_version: str) -> None:
        self.metrics.count("bookmark")

    def listed(self, listed: Listed) -> None:
        self.metrics.relisted(listed.reason)
        items = listed.items
        if self.transform is not None:
            items = [self.transform(item) for item in items]
        changes = self.index.replace(items)
        for event_type, old, new in changes:
            self.metrics.count(event_type.lower())
            self._dispatch(event_type, old, new)
        if not self._synced.is_set():
            log.info("%s synced: %d objects", self.name, len(self.index))
            self._synced.set()
        elif changes:
            log.info("%s relisted (%s): %d changes", self.name, listed.reason, len(changes))

    def _dispatch(self, event_type: str, old: Object | None, new: Object | None) -> None:
        for handler in self._handlers:
            self._call(handler, event_type, old, new)

    def _call(
        self, handler: Handler, event_type: str, old: Object | None, new: Object | None
    ) -> None:
        try:
            handler(event_type, old, new)
        except Exception:
            log.exception("handler %r failed on %s %s", handler, event_type, self.name)
