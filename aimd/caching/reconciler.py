"""What every caching reconciler holds, and how the ones that finalize begin a pass.

A reconciler reads the shared :class:`~aimd.caching.state.State`, writes through the manager's
client and records Events on the manager; services and template caches also carry aimd's
finalizer, so the seed's deletion rules run before they go (D1, D2).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from aimd.api.types import ModelCache, Object, ObjectLike, Service, TemplateCache, shaped
from aimd.caching import rules, writes
from aimd.caching.settling import Settling
from aimd.caching.state import State, Store
from aimd.kube.errors import NotFound
from aimd.kube.resources import Resource
from aimd.runtime import Manager

log = logging.getLogger(__name__)

Key = tuple[str, str]
Finalized = TypeVar("Finalized", Service, TemplateCache)
Cache = TypeVar("Cache", TemplateCache, ModelCache)


class Reconciler:
    def __init__(self, manager: Manager, state: State) -> None:
        self.manager = manager
        self.client = manager.client
        self.state = state

    async def begin(
        self,
        store: Store[Finalized],
        resource: Resource,
        key: Key,
        clean_up: Callable[[Finalized], Awaitable[None]],
    ) -> Finalized | None:
        """The object of ``key`` with aimd's finalizer on it, or None when there is nothing more
        to do this pass: it is gone, or being deleted (``clean_up`` applied the seed's rule and
        let it go), or its namespace is terminating (D7)."""
        namespace, name = key
        obj = store.get(name, namespace)
        if obj is None:
            return None
        terminating = self.state.namespace_terminating(namespace)
        kept = await writes.finalized(self.client, resource, obj, terminating, clean_up)
        if kept is None:
            return None
        store.wrote(obj, shaped(kept))
        return cast(Finalized, kept)

    async def write_status(
        self, store: Store[Any], resource: Resource, obj: ObjectLike, desired: Object
    ) -> bool:
        """:func:`writes.write_status`, told to ``store`` so that a pass before the watch brings
        it back reads this write, not the state it replaced (read-your-own-writes); True if it
        wrote."""
        written = await writes.write_status(self.client, resource, obj, desired)
        if written is None:
            return False
        store.wrote(obj, shaped(written))
        return True

    async def write_news(
        self,
        settling: Settling,
        store: Store[Any],
        resource: Resource,
        key: Key,
        obj: ObjectLike,
        desired: Object,
        on_write: Callable[[], None] | None = None,
    ) -> float:
        """Writes the status ``desired`` of ``obj`` unless it says nothing new, or is news that
        can wait (:mod:`aimd.caching.settling`): then the seconds to wait before deciding again,
        else 0. ``on_write`` runs just before a write, once per status written (not per pass
        that held it back). An object deleted meanwhile is not an error: its deletion event
        comes next."""
        if not writes.status_patch(obj, desired):
            return 0.0
        wait = settling.wait(key, obj["status"], desired)
        if wait > 0:
            return wait
        if on_write is not None:
            on_write()
        try:
            await self.write_status(store, resource, obj, desired)
        except NotFound:
            return 0.0
        settling.wrote(key, obj["status"], desired)
        return 0.0

    async def let_go(
        self,
        departing: ObjectLike,
        resource: Resource,
        created: Sequence[Cache],
        release: Callable[[Cache], Awaitable[None]],
    ) -> None:
        """A finalizer's whole job (D1, D2, D7): every cache ``departing`` created is released,
        unless its namespace is terminating (then everything goes anyway), and aimd's finalizer
        comes off so the object can go."""
        if not self.state.namespace_terminating(departing["metadata"].get("namespace", "")):
            for cache in created:
                await release(cache)
        await writes.remove_finalizer(self.client, resource, departing)

    async def release(
        self,
        cache: ObjectLike,
        resource: Resource,
        label: str,
        consumers: Sequence[ObjectLike],
        departing: ObjectLike | None,
    ) -> rules.Release:
        """The seed's deletion rule for one ``cache`` its creator no longer answers for (it is
        going, or gone: ``departing`` is None): :func:`~aimd.caching.rules.plan_release`, then
        the write it asks for. Events say what happened, on the cache or the departing object."""
        plan = rules.plan_release(cache, consumers, rules.is_available(cache))
        name = cache["metadata"]["name"]
        gone = departing["metadata"]["name"] if departing is not None else "its creator"
        if plan.action is rules.Release.HAND_OVER and plan.heir is not None:
            await writes.hand_over(self.client, resource, cache, label, plan.heir)
            note = f"{gone} was deleted; {plan.heir} still needs it"
            self.manager.events.normal(cache, "HandedOver", note)
        elif plan.action is rules.Release.DELETE and rules.may_delete(cache):
            await writes.delete_as_decided(self.client, resource, cache)
            log.info("deleted %s %s/%s: %s is gone and it was not Available",
                     resource.kind, cache["metadata"]["namespace"], name, gone)  # fmt: skip
            if departing is not None:
                reason = f"Deleted{resource.kind.removeprefix('AIM')}"
                note = f"deleted {resource.kind} {name}: it was not Available"
                self.manager.events.normal(departing, reason, note)
        return plan.action
