"""The few kinds of write aimd makes, each one minimal, safe to repeat, and conditional on the
state it was decided from.

- create-or-adopt: children have deterministic names, so AlreadyExists means another worker,
  replica or an earlier run made it; it is adopted, never duplicated (SPEC E1).
- status: only the fields that differ are sent, and nothing at all when none do (SPEC E4). The
  patch carries the resourceVersion the decision was made from, so a decision taken on a stale
  index fails with Conflict and is taken again from fresh state instead of overwriting newer news
  (a failure counted twice, a progress report lost).
- finalizers and labels: written with the resourceVersion too, so another party's finalizer is
  never dropped by a merge patch that replaces the list.
- deletes of AIM objects: preconditioned on the uid *and* the resourceVersion the decision read
  (SPEC D5). A cache that turned Available after the index last saw it has a newer
  resourceVersion, so the API server refuses the delete with Conflict, and the caller decides
  again; no stale index can make aimd delete an Available cache.

Conflict is never handled here: it reaches the controller, which requeues the key to decide
again once the watch has brought the news.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from aimd.api import kinds
from aimd.api.meta import deleting
from aimd.api.types import Object, ObjectLike
from aimd.caching.builders import created_by
from aimd.kube.client import KubeClient
from aimd.kube.errors import AlreadyExists, ApiError, Conflict, NotFound
from aimd.kube.resources import Resource

ObjectT = TypeVar("ObjectT", bound=ObjectLike)


def status_patch(obj: ObjectLike, desired: Object) -> Object:
    """The fields of ``desired`` that differ from ``obj.status`` (None removes a field)."""
    current = obj.get("status") or {}
    return {
        key: value
        for key, value in desired.items()
        if current.get(key) != value and not (value is None and key not in current)
    }


async def write_status(
    client: KubeClient, resource: Resource, obj: ObjectLike, desired: Object
) -> Object | None:
    """Patches the status fields that changed; the object as the API server returned it, or None
    when nothing needed writing."""
    patch = status_patch(obj, desired)
    if not patch:
        return None
    metadata = obj["metadata"]
    return await client.patch(
        resource,
        metadata["name"],
        {"metadata": {"resourceVersion": metadata["resourceVersion"]}, "status": patch},
        metadata.get("namespace"),
        subresource="status",
    )


class Refused(Exception):
    """The API server refused to create a child (quota, validation, admission): said in the
    owner's status in the server's own words, and tried again on a bounded backoff (E6)."""

    def __init__(self, what: str, error: ApiError) -> None:
        super().__init__(f"{what}: {error}")
        self.what = what
        self.error = error

    def sentence(self) -> str:
        return f"the API server refused {self.what}: {self.error.message or self.error}"


@contextlib.contextmanager
def refusals_raised(resource: Resource, body: ObjectLike) -> Iterator[None]:
    """Turns the API server's refusal of a write of ``body`` into :class:`Refused`; Conflict and
    NotFound pass through (the caller's cue to decide again)."""
    try:
        yield
    except (Conflict, NotFound):
        raise
    except ApiError as error:
        raise Refused(f"{resource.kind} {body['metadata']['name']}", error) from error


async def create_or_adopt(client: KubeClient, resource: Resource, body: Object) -> Object | None:
    """Creates ``body`` and returns it as stored; None when it exists already (then it is
    adopted as it is). Any other refusal is raised as :class:`Refused`."""
    with refusals_raised(resource, body):
        try:
            return await client.create(resource, body)
        except AlreadyExists:
            return None


def has_finalizer(obj: ObjectLike) -> bool:
    return kinds.FINALIZER in (obj["metadata"].get("finalizers") or ())


async def _set_finalizers(
    client: KubeClient, resource: Resource, obj: ObjectLike, finalizers: list[str]
) -> Object | None:
    metadata = obj["metadata"]
    patch = {"metadata": {"resourceVersion": metadata["resourceVersion"], "finalizers": finalizers}}
    try:
        return await client.patch(resource, metadata["name"], patch, metadata.get("namespace"))
    except NotFound:
        return None


async def add_finalizer(client: KubeClient, resource: Resource, obj: ObjectLike) -> Object | None:
    """The object with aimd's finalizer (as the API server returned it)."""
    if has_finalizer(obj):
        return dict(obj)
    finalizers = [*(obj["metadata"].get("finalizers") or ()), kinds.FINALIZER]
    return await _set_finalizers(client, resource, obj, finalizers)


async def finalized(
    client: KubeClient,
    resource: Resource,
    obj: ObjectT,
    namespace_terminating: bool,
    clean_up: Callable[[ObjectT], Awaitable[None]],
) -> Object | None:
    """The start of every reconcile of an object aimd finalizes (services, template caches).

    Returns the object, with aimd's finalizer on it, when the reconcile should go on; None when
    it should stop: the object is being deleted (``clean_up`` ran the seed's deletion rule and
    let it go), its namespace is terminating (nothing can be created there any more, and the
    rule is skipped when the object's own deletion comes, D7), or it vanished meanwhile.
    """
    if deleting(obj):
        await clean_up(obj)
        return None
    if namespace_terminating:
        return None
    return await add_finalizer(client, resource, obj)


async def remove_finalizer(client: KubeClient, resource: Resource, obj: ObjectLike) -> None:
    if not has_finalizer(obj):
        return
    finalizers = [f for f in obj["metadata"].get("finalizers") or () if f != kinds.FINALIZER]
    await _set_finalizers(client, resource, obj, finalizers)


def creator_name(obj: ObjectLike, key: str) -> str | None:
    """The whole name of the consumer a ``created-by-…`` label names (its annotation where the
    label value had to be shortened)."""
    metadata = obj["metadata"]
    return (metadata.get("annotations") or {}).get(key) or (metadata.get("labels") or {}).get(key)


async def hand_over(
    client: KubeClient, resource: Resource, obj: ObjectLike, key: str, heir: str
) -> None:
    """Moves a ``created-by-…`` label (and its annotation) to another consumer (SPEC D8)."""
    metadata = obj["metadata"]
    labels, annotations = created_by(key, heir)
    changed: dict[str, str | None] = dict(annotations)
    if key in (metadata.get("annotations") or {}) and key not in annotations:
        changed[key] = None  # the previous consumer's whole name no longer applies
    patch: Object = {"metadata": {"resourceVersion": metadata["resourceVersion"], "labels": labels}}
    if changed:
        patch["metadata"]["annotations"] = changed
    await client.patch(resource, metadata["name"], patch, metadata.get("namespace"))


async def delete_as_decided(
    client: KubeClient, resource: Resource, obj: ObjectLike, *, whatever_changed: bool = False
) -> None:
    """Deletes this object as it was when the decision was taken: neither a namesake created
    since (uid) nor the same object changed since (resourceVersion; Conflict then). A child aimd
    owns (an old Job, a volume a larger one replaces) goes ``whatever_changed`` in it since."""
    metadata = obj["metadata"]
    preconditions = {"uid": metadata["uid"]}
    if not whatever_changed:
        preconditions["resourceVersion"] = metadata["resourceVersion"]
    with contextlib.suppress(NotFound):
        await client.delete(
            resource,
            metadata["name"],
            metadata.get("namespace"),
            propagation_policy="Background",
            preconditions=preconditions,
        )
