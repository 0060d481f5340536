"""The seed's rules, as pure functions named in its words. No I/O: each is unit-tested alone.

Where each sentence of the seed (`shared/seed`, "Model Caching") lives:

- "Cache handling when AIMService is deleted: template caches that were created by this service
  are evaluated: Available caches → Preserved; non-available caches → Deleted", and
  "AIMTemplateCache deletion: model caches created by this template cache are evaluated:
  Available caches → Preserved; non-available caches → Deleted": one decision,
  :func:`plan_release`, used by both finalizers (``keep_available_template_caches`` in
  :mod:`.service`, ``keep_available_model_caches`` in :mod:`.template_cache`). A cache someone
  else still waits for is handed over instead (SPEC D8).
- "If an Available cache exists, the service mounts its PVCs directly", "Model caches are
  identified by sourceURI, enabling reuse": :func:`prefer_available_then_oldest` picks the one
  cache every consumer uses, the same choice for template caches and model caches.
- "Each cache resource tracks its status" (a template cache is only as far as its least advanced
  model cache): :func:`worst`.
- "Available Model caches are preserved ... Manual cleanup is necessary for all Available
  AIMModelCaches": :func:`may_delete` is the last word before any delete aimd sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from aimd.api.meta import live, oldest_first
from aimd.api.types import ObjectLike

AVAILABLE, PENDING, PROGRESSING, FAILED = "Available", "Pending", "Progressing", "Failed"

C = TypeVar("C", bound=ObjectLike)

# Worst first: a template cache is only as far along as its least advanced model cache.
SEVERITY = (FAILED, PENDING, PROGRESSING, AVAILABLE)


def cache_status(cache: ObjectLike) -> str:
    """A cache's status.status; a cache nobody has reported on yet is Pending."""
    return str(cache["status"].get("status") or PENDING)


def is_available(cache: ObjectLike | None) -> bool:
    return cache is not None and cache_status(cache) == AVAILABLE


def worst(statuses: Sequence[str]) -> str:
    """The least advanced of ``statuses`` (Pending for none)."""
    return min(statuses, key=SEVERITY.index) if statuses else PENDING


def prefer_available_then_oldest(candidates: Sequence[C]) -> C | None:
    """The cache a consumer uses among several that would do: a live one, Available first, then
    the oldest, so every consumer (and every replica) picks the same one."""
    usable = [c for c in oldest_first(candidates) if live(c)]
    available = [c for c in usable if is_available(c)]
    chosen = available or usable
    return chosen[0] if chosen else None


class Release(Enum):
    """What happens to one cache when the consumer that created it goes."""

    KEEP = "keep"
    HAND_OVER = "hand over"
    DELETE = "delete"


@dataclass(frozen=True)
class Plan:
    action: Release
    heir: str | None = None  # the consumer that inherits the cache (HAND_OVER only)


def plan_release(created: ObjectLike, consumers: Sequence[ObjectLike], available: bool) -> Plan:
    """The seed's deletion rule for one cache ``created`` by a consumer that is going.

    ``consumers`` are the other live consumers that still use the cache (services on the same
    template cache, template caches whose template needs the same URI), oldest first.

    - Available → KEEP: "can be reused by future services / other template caches" (D1, D2).
    - not Available, another consumer still waits for it → HAND_OVER to the oldest (D8): its
      created-by label moves, the download goes on.
    - not Available, nobody else → DELETE.
    - already going (deletionTimestamp) → KEEP: there is nothing left to decide.
    """
    if available or not live(created):
        return Plan(Release.KEEP)
    heirs = [c for c in oldest_first(consumers) if live(c)]
    if heirs:
        return Plan(Release.HAND_OVER, heirs[0]["metadata"]["name"])
    return Plan(Release.DELETE)


def may_delete(cache: ObjectLike) -> bool:
    """True unless the cache is Available: "manual cleanup is necessary for all Available
    AIMModelCaches" (D5). The delete that follows carries the resourceVersion this was decided
    on, so a cache that became Available since is refused by the API server, not deleted."""
    return not is_available(cache)
