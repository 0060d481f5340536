"""The few kinds of write aimd makes, each one minimal and safe to repeat.

- create-or-adopt: children have deterministic names, so AlreadyExists means another worker,
  replica or an earlier run made it; it is adopted, never duplicated (SPEC E1).
- status: only the fields that differ are sent, and nothing at all when none do (SPEC E4). The
  patch carries the resourceVersion the decision was made from, so a decision taken on a stale
  index fails with Conflict and is retried from fresh state instead of overwriting newer news
  (a failure counted twice, a progress report lost).
- finalizers: added and removed with the resourceVersion too, so another party's finalizer is
  never dropped by a merge patch that replaces the list.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aimd.api import kinds
from aimd.kube.client import KubeClient
from aimd.kube.errors import AlreadyExists, NotFound
from aimd.kube.resources import Resource

Object = dict[str, Any]


def status_patch(obj: Object, desired: Object) -> Object:
    """The fields of ``desired`` that differ from ``obj.status`` (None removes a field)."""
    current = obj.get("status") or {}
    return {
        key: value
        for key, value in desired.items()
        if current.get(key) != value and not (value is None and key not in current)
    }


async def write_status(
    client: KubeClient, resource: Resource, obj: Object, desired: Object
) -> bool:
    """Patches the status fields that changed; True if it wrote."""
    patch = status_patch(obj, desired)
    if not patch:
        return False
    metadata = obj["metadata"]
    await client.patch(
        resource,
        metadata["name"],
        {"metadata": {"resourceVersion": metadata["resourceVersion"]}, "status": patch},
        metadata.get("namespace"),
        subresource="status",
    )
    return True


async def create_or_adopt(client: KubeClient, resource: Resource, body: Object) -> Object | None:
    """Creates ``body`` and returns it as stored; None when it exists already (then it is
    adopted as it is)."""
    try:
        return await client.create(resource, body)
    except AlreadyExists:
        return None


def has_finalizer(obj: Object) -> bool:
    return kinds.FINALIZER in (obj["metadata"].get("finalizers") or ())


async def _set_finalizers(
    client: KubeClient, resource: Resource, obj: Object, finalizers: list[str]
) -> Object | None:
    metadata = obj["metadata"]
    patch = {"metadata": {"resourceVersion": metadata["resourceVersion"], "finalizers": finalizers}}
    try:
        return await client.patch(resource, metadata["name"], patch, metadata.get("namespace"))
    except NotFound:
        return None


async def add_finalizer(client: KubeClient, resource: Resource, obj: Object) -> Object | None:
    """The object with aimd's finalizer (as the API server returned it)."""
    if has_finalizer(obj):
        return obj
    finalizers = [*(obj["metadata"].get("finalizers") or ()), kinds.FINALIZER]
    return await _set_finalizers(client, resource, obj, finalizers)


async def finalized(
    client: KubeClient,
    resource: Resource,
    obj: Object,
    namespace_terminating: bool,
    clean_up: Callable[[Object], Awaitable[None]],
) -> Object | None:
    """The start of every reconcile of an object aimd finalizes (services, template caches).

    Returns the object, with aimd's finalizer on it, when the reconcile should go on; None when
    it should stop: the object is being deleted (``clean_up`` ran the seed's deletion rule and
    let it go), its namespace is terminating (nothing can be created there any more, and the
    rule is skipped when the object's own deletion comes, D7), or it vanished meanwhile.
    """
    if obj["metadata"].get("deletionTimestamp"):
        await clean_up(obj)
        return None
    if namespace_terminating:
        return None
    return await add_finalizer(client, resource, obj)


async def remove_finalizer(client: KubeClient, resource: Resource, obj: Object) -> None:
    if not has_finalizer(obj):
        return
    finalizers = [f for f in obj["metadata"].get("finalizers") or () if f != kinds.FINALIZER]
    await _set_finalizers(client, resource, obj, finalizers)


async def set_label(
    client: KubeClient, resource: Resource, obj: Object, key: str, value: str
) -> None:
    """Moves a ``created-by-…`` label to another consumer (SPEC D8)."""
    metadata = obj["metadata"]
    patch = {"metadata": {"resourceVersion": metadata["resourceVersion"], "labels": {key: value}}}
    await client.patch(resource, metadata["name"], patch, metadata.get("namespace"))


async def delete_exact(client: KubeClient, resource: Resource, obj: Object) -> None:
    """Deletes this object and not a namesake created since (uid precondition)."""
    metadata = obj["metadata"]
    with contextlib.suppress(NotFound):
        await client.delete(
            resource,
            metadata["name"],
            metadata.get("namespace"),
            propagation_policy="Background",
            preconditions={"uid": metadata["uid"]},
        )


def deleting(obj: Object | None) -> bool:
    return obj is not None and bool(obj["metadata"].get("deletionTimestamp"))
