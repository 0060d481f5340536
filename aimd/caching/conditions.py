"""Status conditions (metav1.Condition) and timestamps, the Kubernetes way.

``lastTransitionTime`` changes only when a condition's status flips, so rewriting the same
condition is a no-op and a reconcile that changes nothing writes nothing (SPEC E4).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Object = dict[str, Any]


def now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def condition(obj: Object | None, type_: str) -> Object | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or ():
        if item.get("type") == type_:
            return dict(item)
    return None


def set_condition(
    current: list[Object],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    moment: datetime,
) -> list[Object]:
    """``current`` with condition ``type_`` set; its transition time kept if status is unchanged."""
    value = "True" if status else "False"
    old = next((c for c in current if c.get("type") == type_), None)
    transition = (
        old["lastTransitionTime"]
        if old is not None and old.get("status") == value and old.get("lastTransitionTime")
        else timestamp(moment)
    )
    new: Object = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    if old is None:
        return [*current, new]
    return [new if c.get("type") == type_ else c for c in current]


def job_outcome(job: Object | None) -> str | None:
    """``"Complete"``, ``"Failed"`` or None (running, or no Job) from a Job's status."""
    if job is None:
        return None
    status = job.get("status") or {}
    for item in status.get("conditions") or ():
        if item.get("status") == "True" and item.get("type") in ("Complete", "Failed"):
            return str(item["type"])
    if status.get("succeeded"):
        return "Complete"
    if status.get("failed"):
        return "Failed"
    return None
