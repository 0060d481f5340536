"""The AIMService reconciler: resolve the template, make sure a template cache exists (B1, D6),
build the workload once the cache is Available (B5), and apply D1 when the service goes.

The TC is owned by the template, not the service, so it outlives the service when Available; the
``created-by-service`` label is how D1 finds the TCs this service is answerable for.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aimd.api import kinds
from aimd.api.meta import find_condition, live, now, set_condition, why
from aimd.api.reasons import Reason
from aimd.api.types import Condition, Object, Service, ServiceCache, TemplateCache
from aimd.caching import builders, metrics, names, rules, writes
from aimd.caching.reconciler import Key, Reconciler
from aimd.caching.settling import Settling
from aimd.caching.state import State, Store
from aimd.caching.templates import Resolved, problems
from aimd.kube import resources
from aimd.kube.resources import Resource
from aimd.runtime import Manager, Result

log = logging.getLogger(__name__)

SPEC_HASH = f"{kinds.GROUP}/spec-hash"
# A refused workload is tried again on this bounded backoff (E6), not the queue's 1000 s cap.
REFUSAL_RETRY = 30.0
# A Starting service whose cache has just become Available waits for its replicas next, and they
# are usually ready within moments: that step is held this long (aimd.caching.settling), so the
# service goes to Running in one write instead of two.
SETTLE = 3.0


def caching(svc: Service) -> bool:
    return bool(svc["spec"].get("cacheModel"))


def template_cache_matches(tc: TemplateCache, resolved: Resolved) -> bool:
    """A TC serves this template when it names it and its scope (if any) is the resolved one."""
    spec = tc["spec"]
    return spec.get("templateName") == resolved.template["metadata"]["name"] and spec.get(
        "templateScope"
    ) in (None, resolved.scope)


def reusable_template_cache(
    candidates: list[TemplateCache], resolved: Resolved
) -> TemplateCache | None:
    """The TC a service uses: among the matching ones, Available first, then the oldest."""
    return rules.prefer_available_then_oldest(
        [tc for tc in candidates if template_cache_matches(tc, resolved)]
    )


def mounts_of(tc: TemplateCache) -> list[tuple[str, str]]:
    """(modelId, PVC) of every model cache of an Available TC."""
    return [
        (entry.get("modelId", ""), entry["persistentVolumeClaim"])
        for entry in tc["status"].get("modelCaches") or ()
        if entry.get("persistentVolumeClaim")
    ]


def what_a_service_reads(tc: TemplateCache) -> tuple[object, ...]:
    """The part of a TC that any service's pass depends on: which TC it is, whether it is live,
    who made it, whether it is Available (and then its volumes) or Failed (and then why).

    Pending and Progressing read alike: a waiting service says the same either way. A TC event
    that leaves this unchanged (its finalizer, owner reference, a step of its progress) wakes no
    service; at a thousand services that was most of their passes.
    """
    meta = tc["metadata"]
    state = rules.cache_status(tc)
    return (
        meta.get("uid"),
        bool(meta.get("deletionTimestamp")),
        (meta.get("labels") or {}).get(kinds.LABEL_CREATED_BY_SERVICE),
        tc["spec"].get("templateName"),
        tc["spec"].get("templateScope"),
        state if state in (rules.AVAILABLE, rules.FAILED) else rules.PENDING,
        why(tc) if state == rules.FAILED else None,
        tuple(mounts_of(tc)) if state == rules.AVAILABLE else None,
    )


def workload_status(svc: Service, deployment: Object | None) -> tuple[str, str]:
    """(status, message) of a service whose workload exists."""
    wanted = int(svc["spec"].get("replicas", 1))
    ready = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
    if ready >= wanted and deployment is not None:
        return "Running", f"{ready}/{wanted} replicas ready"
    if ready > 0:
        return "Degraded", f"{ready}/{wanted} replicas ready"
    return "Starting", f"waiting for {wanted} replica(s) to be ready"


READY_REASON = {
    "Running": Reason.RUNNING,
    "Degraded": Reason.DEGRADED,
    "Starting": Reason.STARTING,
}


def desired_status(
    svc: Service,
    resolved: Resolved | None,
    tc: TemplateCache | None,
    deployment: Object | None,
    moment: datetime,
) -> Object:
    """The service's status, conditions TemplateResolved, CacheReady and Ready (pure)."""
    generation = svc["metadata"].get("generation")
    conditions: list[Condition] = list(svc["status"].get("conditions") or ())

    def cond(type_: str, ok: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, ok, reason, message, generation, moment)

    template_name = svc["spec"].get("templateName")
    cache: ServiceCache | None = svc["status"].get("cache")
    if resolved is None:
        message = f"no template named {template_name} in this namespace or the cluster"
        for type_ in ("TemplateResolved", "CacheReady", "Ready"):
            cond(type_, False, Reason.TEMPLATE_NOT_FOUND, message)
        state = "Pending"
    elif problems(resolved.template):
        message = f"template {template_name} is invalid: " + "; ".join(
            p.message for p in problems(resolved.template)
        )
        for type_ in ("TemplateResolved", "CacheReady", "Ready"):
            cond(type_, False, Reason.TEMPLATE_INVALID, message)
        state = "Failed"
    else:
        cond(
            "TemplateResolved", True, Reason.RESOLVED, f"{resolved.scope} template {template_name}"
        )
        state, message = workload_status(svc, deployment)
        ready_reason: str = READY_REASON[state]
        if not caching(svc):
            cond(
                "CacheReady",
                True,
                Reason.CACHING_DISABLED,
                "cacheModel is false: nothing to cache",
            )
        elif tc is None:
            cond("CacheReady", False, Reason.CREATING_TEMPLATE_CACHE, "creating the template cache")
            state, message = "Starting", "waiting for the template cache"
        else:
            cache = {
                "templateCacheRef": {"name": tc["metadata"]["name"], "uid": tc["metadata"]["uid"]}
            }
            tc_name = tc["metadata"]["name"]
            tc_status = rules.cache_status(tc)
            if tc_status == rules.AVAILABLE:
                cond(
                    "CacheReady",
                    True,
                    Reason.AVAILABLE,
                    f"template cache {tc_name} is Available",
                )
            elif tc_status == rules.FAILED:
                # The cause is worth repeating; progress is not (each step would be a write).
                said_reason, said = why(tc)
                reason = said_reason or Reason.TEMPLATE_CACHE_FAILED
                detail = f"template cache {tc_name} failed: {said}"
                cond("CacheReady", False, reason, detail)
                if deployment is None:
                    state, message, ready_reason = "Failed", detail, reason
            else:
                # One reason for Pending and Progressing alike: the service waits either way, and
                # each step of the cache's progress would otherwise be a write on every service.
                detail = f"waiting for template cache {tc_name} to be Available"
                cond("CacheReady", False, Reason.TEMPLATE_CACHE_NOT_READY, detail)
                if deployment is None:
                    state, message = "Starting", detail
        if state == "Starting":
            ready_reason = Reason.STARTING
        cond("Ready", state == "Running", ready_reason, message)
    return {
        "status": state,
        "observedGeneration": generation,
        "conditions": conditions,
        "cache": cache,
    }


def news_can_wait(current: Mapping[str, Any], desired: Object) -> bool:
    """True when a Starting service stays Starting and only what it waits for moved on: its
    cache is Available now, and its replicas are next (pure)."""
    if not current.get("status") == desired["status"] == "Starting":
        return False
    ready = find_condition(desired["conditions"], "Ready")
    cache = find_condition(desired["conditions"], "CacheReady")
    return (
        ready is not None
        and ready.get("reason") == Reason.STARTING
        and cache is not None
        and cache.get("status") == "True"
    )


def spec_hash(body: Object) -> str:
    return hashlib.sha256(json.dumps(body["spec"], sort_keys=True).encode()).hexdigest()[:16]


class ServiceReconciler(Reconciler):
    settling: Settling

    def __init__(self, manager: Manager, state: State) -> None:
        super().__init__(manager, state)
        self.settling = Settling(news_can_wait, SETTLE)

    async def reconcile(self, key: Key) -> Result | None:
        namespace, name = key
        svc = await self.begin(
            self.state.services, kinds.SERVICES, key, self.keep_available_template_caches
        )
        if svc is None:
            self.settling.forget(key)
            return None
        resolved = self.state.templates.resolve(namespace, svc["spec"].get("templateName", ""))
        tc = None
        deployment = self.state.deployments.get(names.workload_name(name), namespace)
        refused: writes.Refused | None = None
        if resolved is not None and not problems(resolved.template):
            try:
                if caching(svc):
                    tc = await self._template_cache(svc, resolved)
                    if tc is None:
                        # Just created (or its predecessor is still going): its watch event
                        # comes back within moments with a uid to refer to, so a status now
                        # would only be overwritten.
                        return None
                    if rules.is_available(tc):
                        await self._workload(svc, resolved, mounts_of(tc))
                else:
                    await self._workload(svc, resolved, None)
            except writes.Refused as refusal:
                refused = refusal
        desired = desired_status(svc, resolved, tc, deployment, now())
        if refused is not None:
            desired["conditions"] = set_condition(
                desired["conditions"],
                "Ready",
                False,
                Reason.WORKLOAD_REFUSED,
                f"{refused.sentence()}; aimd tries again within {REFUSAL_RETRY:.0f}s"[:1024],
                svc["metadata"].get("generation"),
                now(),
            )
        wait = await self.write_news(
            self.settling, self.state.services, kinds.SERVICES, key, svc, desired
        )
        if wait:
            return Result(requeue_after=wait)
        return Result(requeue_after=REFUSAL_RETRY) if refused is not None else None

    async def _template_cache(self, svc: Service, resolved: Resolved) -> TemplateCache | None:
        """B1 + D6: reuse a matching TC, else create the deterministic one (owned by the
        template, labelled with this service)."""
        namespace = svc["metadata"]["namespace"]
        candidates = self.state.template_caches_for_template(
            namespace, resolved.template["metadata"]["name"]
        )
        tc = reusable_template_cache(candidates, resolved)
        cache = svc["status"].get("cache")
        ref = cache.get("templateCacheRef") if cache else None
        if tc is not None:
            if (ref["uid"] if ref else None) != tc["metadata"]["uid"] and writes.creator_name(
                tc, kinds.LABEL_CREATED_BY_SERVICE
            ) != svc["metadata"]["name"]:
                metrics.CACHE_REQUESTS.labels(namespace, "reused").inc()
            return tc
        body = builders.template_cache(
            namespace, resolved.template, resolved.scope, svc["metadata"]["name"]
        )
        existing = self.state.template_caches.get(body["metadata"]["name"], namespace)
        if existing is not None and not live(existing):
            return None  # the old one is still being cleaned up; its deletion event brings us back
        if await writes.create_or_adopt(self.client, kinds.TEMPLATE_CACHES, body):
            log.info("created template cache %s/%s", namespace, body["metadata"]["name"])
            self.manager.events.normal(
                svc, "CreatedTemplateCache", f"created AIMTemplateCache {body['metadata']['name']}"
            )
        return None

    async def _workload(
        self, svc: Service, resolved: Resolved, mounts: list[tuple[str, str]] | None
    ) -> None:
        children = (
            (
                resources.DEPLOYMENTS,
                self.state.deployments,
                builders.deployment(svc, resolved.template, mounts),
            ),
            (
                resources.SERVICES,
                self.state.workload_services,
                builders.service(svc, resolved.template),
            ),
        )
        # Both at once: neither needs the other, and a service's first pass is a chain of round
        # trips (finalizer, children, status) that the workers spend waiting on the API server.
        # Each is still ensured to the end when the other fails; the first failure is raised.
        outcomes = await asyncio.gather(
            *(self._ensure(resource, store, body) for resource, store, body in children),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        created = [
            f"{resource.kind} {body['metadata']['name']}"
            for (resource, _, body), made in zip(children, outcomes, strict=True)
            if made
        ]
        if created and svc["status"].get("status") in ("Running", "Degraded"):
            # Only a workload made again is news: someone removed what a running service had.
            # A first one is routine and said by the Ready condition; an Event per service costs
            # the API server as much as any other write (a sixth of the time at 1,000 services).
            self.manager.events.normal(svc, "Recreated", "created " + " and ".join(created))

    async def _ensure(self, resource: Resource, store: Store[Object], body: Object) -> bool:
        """Creates the child, or patches its spec when what aimd wants of it changed (compared by a
        hash of the desired spec, so fields the API server defaults never cause a write); True
        when it created it."""
        current = store.get(body["metadata"]["name"], body["metadata"]["namespace"])
        digest = spec_hash(body)
        body["metadata"].setdefault("annotations", {})[SPEC_HASH] = digest
        if current is None:
            return await writes.create_or_adopt(self.client, resource, body) is not None
        if (current["metadata"].get("annotations") or {}).get(SPEC_HASH) == digest:
            return False
        patch = {"metadata": {"annotations": {SPEC_HASH: digest}}, "spec": body["spec"]}
        with writes.refusals_raised(resource, body):
            await self.client.patch(
                resource, body["metadata"]["name"], patch, body["metadata"]["namespace"]
            )
        return False

    async def keep_available_template_caches(self, svc: Service) -> None:
        """D1 (+ D7, D8): "template caches that were created by this service are evaluated:
        Available caches → Preserved; non-available caches → Deleted" — unless another live
        service still uses one, which then inherits it. Its Deployment and Service are collected
        through their ownerReferences."""
        created = self.state.template_caches_created_by(svc)
        await self.let_go(svc, kinds.SERVICES, created, lambda tc: self._release(svc, tc))

    async def _release(self, svc: Service, tc: TemplateCache) -> None:
        namespace = tc["metadata"]["namespace"]
        consumers = [
            other
            for other in self.state.services_for_template(
                namespace, tc["spec"].get("templateName", "")
            )
            if live(other)
            and caching(other)
            and other["metadata"]["uid"] != svc["metadata"]["uid"]
            and self._uses(other, tc)
        ]
        await self.release(
            tc, kinds.TEMPLATE_CACHES, kinds.LABEL_CREATED_BY_SERVICE, consumers, svc
        )

    def _uses(self, svc: Service, tc: TemplateCache) -> bool:
        resolved = self.state.templates.resolve(
            svc["metadata"]["namespace"], svc["spec"].get("templateName", "")
        )
        return resolved is not None and template_cache_matches(tc, resolved)
