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

One informer may watch several namespaces (``namespaces=``, the manager's namespaced mode): one
list+watch per namespace, all feeding the one index, so callers still see one informer. A relist
of one namespace diffs only that namespace; the informer is synced once every namespace has
listed, and its ``last_progress`` is that of its most silent watch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aimd.api.types import Object
from aimd.kube.client import KubeClient
from aimd.kube.resources import Resource
from aimd.kube.watch import Listed, Watcher
from aimd.runtime.index import Index, IndexFunc, key_of
from aimd.runtime.metrics import InformerMetrics

log = logging.getLogger(__name__)


Handler = Callable[[str, Object | None, Object | None], None]
Transform = Callable[[Object], Object]


def resource_label(resource: Resource) -> str:
    """``plural.group`` (``plural`` for the core group), as kubectl names resources."""
    return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


class Informer:
    """Watches ``resource`` in ``namespace`` (None: every namespace) or in each of
    ``namespaces``; ``watcher`` replaces the one a single-namespace informer would make."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        namespace: str | None = None,
        *,
        namespaces: Sequence[str] = (),
        label_selector: str | None = None,
        transform: Transform | None = None,
        watcher: Watcher | None = None,
    ) -> None:
        if namespaces and (namespace is not None or watcher is not None):
            raise ValueError("namespaces= replaces namespace= and watcher=")
        self.resource = resource
        # client-go's SetTransform: shape each object once, as it enters the index, so every
        # reader (indexes, handlers, reconcilers) sees the same normalised form.
        self.transform = transform
        self.namespaces: tuple[str | None, ...] = tuple(namespaces) or (namespace,)
        self.index = Index()
        if watcher is not None:
            self.watchers = [watcher]
        else:
            self.watchers = [
                Watcher(client, resource, where, label_selector=label_selector)
                for where in self.namespaces
            ]
        where = ",".join(n for n in self.namespaces if n)
        self.name = resource_label(resource) + (f"@{where}" if where else "")
        self.metrics = InformerMetrics(resource_label(resource), self)
        self._handlers: list[Handler] = []
        self._unsynced = set(range(len(self.watchers)))
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
        """Monotonic time the most silent of this informer's watches last heard from the API
        server."""
        return min(watcher.last_progress for watcher in self.watchers)

    def get(self, name: str, namespace: str | None = None) -> Object | None:
        return self.index.get_by_name(name, namespace)

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Lists and watches until cancelled."""
        if len(self.watchers) == 1:
            await self.watchers[0].run(_Sink(self, 0))
            return
        async with asyncio.TaskGroup() as group:
            for number, watcher in enumerate(self.watchers):
                group.create_task(
                    watcher.run(_Sink(self, number)),
                    name=f"watch {self.name}: {self.namespaces[number]}",
                )

    # -- the watchers' sink: store first, then tell the handlers ------------------------------

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

    def listed(self, listed: Listed, number: int = 0) -> None:
        """The complete state of watch ``number``'s namespace (or of everything)."""
        self.metrics.relisted(listed.reason)
        items = listed.items
        if self.transform is not None:
            items = [self.transform(item) for item in items]
        changes = self.index.replace(items, self.namespaces[number])
        for event_type, old, new in changes:
            self.metrics.count(event_type.lower())
            self._dispatch(event_type, old, new)
        if not self._synced.is_set():
            self._unsynced.discard(number)
            if not self._unsynced:
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


@dataclass(frozen=True, slots=True)
class _Sink:
    """What one of an informer's watchers feeds: the informer, told which watch listed."""

    informer: Informer
    number: int

    def listed(self, listed: Listed) -> None:
        self.informer.listed(listed, self.number)

    def changed(self, event_type: str, obj: Object) -> None:
        self.informer.changed(event_type, obj)

    def bookmark(self, resource_version: str) -> None:
        self.informer.bookmark(resource_version)
