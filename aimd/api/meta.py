"""Object metadata, time and conditions, written once (the Kubernetes conventions, in small).

- Times are RFC 3339 in UTC with a ``Z``: seconds for ``metav1.Time`` (conditions, status
  timestamps), microseconds for ``metav1.MicroTime`` (Leases, events.k8s.io Events).
- ``lastTransitionTime`` changes only when a condition's status flips, so rewriting the same
  condition is a no-op and a reconcile that changes nothing writes nothing (SPEC E4).
- Label values are at most 63 characters; a longer name is shortened with a hash of the whole, so
  two long names never share a value (the full name goes in an annotation where it must be read).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeVar

from aimd.api.types import Condition, ObjectLike, ObjectMeta, OwnerReference

MAX_LABEL_VALUE = 63
ObjectT = TypeVar("ObjectT", bound=ObjectLike)


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """A ``metav1.Time``: RFC 3339, whole seconds, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: datetime | None = None) -> str:
    """A ``metav1.MicroTime``: RFC 3339 with microseconds, UTC."""
    return (moment or now()).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: object) -> datetime | None:
    """The moment an RFC 3339 string names; None for anything else."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


# -- metadata -------------------------------------------------------------------------------------


def meta(obj: ObjectLike) -> ObjectMeta:
    metadata: ObjectMeta = obj["metadata"]
    return metadata


def namespace_of(obj: ObjectLike) -> str:
    """The object's namespace; "" for a cluster-scoped object."""
    return str(obj["metadata"].get("namespace") or "")


def labels_of(obj: ObjectLike) -> dict[str, str]:
    labels: dict[str, str] = obj["metadata"].get("labels") or {}
    return labels


def annotations_of(obj: ObjectLike) -> dict[str, str]:
    annotations: dict[str, str] = obj["metadata"].get("annotations") or {}
    return annotations


def deleting(obj: ObjectLike | None) -> bool:
    """True once the object has a deletionTimestamp (its finalizers are running)."""
    return obj is not None and bool(obj["metadata"].get("deletionTimestamp"))


def live(obj: ObjectLike | None) -> bool:
    """True for an object that exists and is not being deleted."""
    return obj is not None and not obj["metadata"].get("deletionTimestamp")


def label_value(name: str) -> str:
    """``name`` as a label value: itself when it fits in 63 characters, else a shortened stem
    and a hash of the whole name (label values must be ≤ 63: SPEC E6)."""
    if len(name) <= MAX_LABEL_VALUE:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    stem = name[: MAX_LABEL_VALUE - len(digest) - 1].rstrip("-.")
    return f"{stem}-{digest}"


def owner_reference(
    owner: ObjectLike, kind: str, api_version: str, controller: bool
) -> OwnerReference:
    """A reference that makes the garbage collector delete the child with ``owner``."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def owned_by(child: ObjectLike, uid: str) -> bool:
    """True if one of ``child``'s ownerReferences names ``uid``."""
    return any(ref.get("uid") == uid for ref in child["metadata"].get("ownerReferences") or ())


def oldest_first(objects: Iterable[ObjectT]) -> list[ObjectT]:
    """By creation time, then name: the order every replica and every pass agrees on."""
    return sorted(
        objects,
        key=lambda o: (o["metadata"].get("creationTimestamp") or "", o["metadata"]["name"]),
    )


# -- conditions -----------------------------------------------------------------------------------


def find_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition ``type_`` in a list of conditions, if there is one."""
    return next((item for item in conditions if item.get("type") == type_), None)


def condition(obj: ObjectLike | None, type_: str) -> Condition | None:
    """The condition ``type_`` in ``obj.status.conditions``, if there is one."""
    return find_condition(((obj or {}).get("status") or {}).get("conditions") or (), type_)


def why(obj: ObjectLike | None, type_: str = "Ready") -> tuple[str, str]:
    """(reason, message) of condition ``type_``; empty strings when there is none."""
    found = condition(obj, type_)
    return (found.get("reason", ""), found.get("message", "")) if found else ("", "")


def set_condition(
    current: list[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    moment: datetime,
) -> list[Condition]:
    """``current`` with condition ``type_`` set; its transition time kept if status is unchanged."""
    value = "True" if status else "False"
    old = next((c for c in current if c.get("type") == type_), None)
    transition = (
        old["lastTransitionTime"]
        if old is not None and old.get("status") == value and old.get("lastTransitionTime")
        else rfc3339(moment)
    )
    new: Condition = {
        "type": type_,
        "status": value,
        "reason": str(reason),
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    if old is None:
        return [*current, new]
    return [new if c.get("type") == type_ else c for c in current]
