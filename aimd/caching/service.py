"""The AIMService reconciler: resolve the template, make sure a template cache exists (B1, D6),
build the workload once the cache is Available (B5), and apply D1 when the service goes.

The TC is owned by the template, not the service, so it outlives the service when Available; the
``created-by-service`` label is how D1 finds the TCs this service is answerable for.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import Any

from aimd.api import kinds
from aimd.caching import builders, metrics
from aimd.caching.conditions import now, set_condition
from aimd.caching.state import CREATED_BY_SERVICE, State, live, oldest_first
from aimd.caching.templates import Resolved, problems
from aimd.caching.writes import (
    create_or_adopt,
    delete_exact,
    finalized,
    remove_finalizer,
    set_label,
    write_status,
)
from aimd.kube import resources
from aimd.kube.errors import ApiError, Conflict, NotFound
from aimd.kube.resources import Resource
from aimd.runtime import Manager, Result

log = logging.getLogger(__name__)

Object = dict[str, Any]
Key = tuple[str, str]
SPEC_HASH = f"{kinds.GROUP}/spec-hash"


def caching(svc: Object) -> bool:
    return bool((svc.get("spec") or {}).get("cacheModel"))


def template_cache_matches(tc: Object, resolved: Resolved) -> bool:
    """A TC serves this template when it names it and its scope (if any) is the resolved one."""
    spec = tc.get("spec") or {}
    return spec.get("templateName") == resolved.template["metadata"]["name"] and spec.get(
        "templateScope"
    ) in (None, resolved.scope)


def reusable_template_cache(candidates: list[Object], resolved: Resolved) -> Object | None:
    """The TC a service uses: a live matching one, Available first, then the oldest."""
    usable = [
        tc for tc in oldest_first(candidates) if live(tc) and template_cache_matches(tc, resolved)
    ]
    available = [tc for tc in usable if (tc.get("status") or {}).get("status") == "Available"]
    chosen = available or usable
    return chosen[0] if chosen else None


def mounts_of(tc: Object) -> list[tuple[str, str]]:
    """(modelId, PVC) of every model cache of an Available TC."""
    return [
        (entry["modelId"], entry["persistentVolumeClaim"])
        for entry in (tc.get("status") or {}).get("modelCaches") or ()
        if entry.get("persistentVolumeClaim")
    ]


def workload_status(svc: Object, deployment: Object | None) -> tuple[str, str]:
    """(status, message) of a service whose workload exists."""
    wanted = int((svc.get("spec") or {}).get("replicas", 1))
    ready = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
    if ready >= wanted and deployment is not None:
        return "Running", f"{ready}/{wanted} replicas ready"
    if ready > 0:
        return "Degraded", f"{ready}/{wanted} replicas ready"
    return "Starting", f"waiting for {wanted} replica(s) to be ready"


def desired_status(
    svc: Object,
    resolved: Resolved | None,
    tc: Object | None,
    deployment: Object | None,
    moment: datetime,
) -> Object:
    """The service's status, conditions TemplateResolved, CacheReady and Ready (pure)."""
    status = svc.get("status") or {}
    generation = svc["metadata"].get("generation")
    conditions = list(status.get("conditions") or ())

    def cond(type_: str, ok: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, ok, reason, message, generation, moment)

    template_name = (svc.get("spec") or {}).get("templateName")
    cache: Object | None = status.get("cache")
    if resolved is None:
        message = f"no template named {template_name} in this namespace or the cluster"
        cond("TemplateResolved", False, "TemplateNotFound", message)
        cond("CacheReady", False, "TemplateNotFound", message)
        cond("Ready", False, "TemplateNotFound", message)
        state = "Pending"
    elif problems(resolved.template):
        message = f"template {template_name} is invalid: " + "; ".join(
            p.message for p in problems(resolved.template)
        )
        cond("TemplateResolved", False, "TemplateInvalid", message)
        cond("CacheReady", False, "TemplateInvalid", message)
        cond("Ready", False, "TemplateInvalid", message)
        state = "Failed"
    else:
        cond("TemplateResolved", True, "Resolved", f"{resolved.scope} template {template_name}")
        state, message = workload_status(svc, deployment)
        if not caching(svc):
            cond("CacheReady", True, "CachingDisabled", "cacheModel is false: nothing to cache")
        elif tc is None:
            cond("CacheReady", False, "CreatingTemplateCache", "creating the template cache")
            state, message = "Starting", "waiting for the template cache"
        else:
            cache = {
                "templateCacheRef": {"name": tc["metadata"]["name"], "uid": tc["metadata"]["uid"]}
            }
            tc_status = (tc.get("status") or {}).get("status") or "Pending"
            tc_ready: Object = next(
                (
                    c
                    for c in (tc.get("status") or {}).get("conditions") or ()
                    if c["type"] == "Ready"
                ),
                {},
            )
            tc_name = tc["metadata"]["name"]
            if tc_status == "Available":
                cond("CacheReady", True, "Available", f"template cache {tc_name} is Available")
            elif tc_status == "Failed":
                # The cause is worth repeating; progress is not (each step would be a write).
                reason = tc_ready.get("reason") or "TemplateCacheFailed"
                detail = f"template cache {tc_name} failed: {tc_ready.get('message', '')}"
                cond("CacheReady", False, reason, detail)
                if deployment is None:
                    state, message = "Failed", detail
            else:
                # One reason for Pending and Progressing alike: the service waits either way, and
                # each step of the cache's progress would otherwise be a write on every service.
                detail = f"waiting for template cache {tc_name} to be Available"
                cond("CacheReady", False, "TemplateCacheNotReady", detail)
                if deployment is None:
                    state, message = "Starting", detail
        ok = state == "Running"
        cond("Ready", ok, state, message)
    return {
        "status": state,
        "observedGeneration": generation,
        "conditions": conditions,
        "cache": cache,
    }


def spec_hash(body: Object) -> str:
    return hashlib.sha256(json.dumps(body["spec"], sort_keys=True).encode()).hexdigest()[:16]


class ServiceReconciler:
    def __init__(self, manager: Manager, state: State) -> None:
        self.manager = manager
        self.client = manager.client
        self.state = state

    async def reconcile(self, key: Key) -> Result | None:
        namespace, name = key
        svc = self.state.services.get(name, namespace)
        if svc is None:
            return None
        terminating = self.state.namespace_terminating(namespace)
        finalized_svc = await finalized(
            self.client, kinds.SERVICES, svc, terminating, self.keep_available_template_caches
        )
        if finalized_svc is None:
            return None
        svc = finalized_svc
        template_name = (svc.get("spec") or {}).get("templateName", "")
        resolved = self.state.templates.resolve(namespace, template_name)
        tc = None
        deployment = self.state.deployments.get(name, namespace)
        refused: ApiError | None = None
        if resolved is not None and not problems(resolved.template):
            try:
                if caching(svc):
                    tc = await self._template_cache(svc, resolved)
                    if tc is None:
                        # Just created (or its predecessor is still going): its watch event
                        # comes back within moments with a uid to refer to, so a status now
                        # would only be overwritten.
                        return None
                    if tc is not None and (tc.get("status") or {}).get("status") == "Available":
                        await self._workload(svc, resolved, mounts_of(tc))
                else:
                    await self._workload(svc, resolved, None)
            except (Conflict, NotFound):
                raise
            except ApiError as error:
                refused = error  # said in status, then retried with backoff
        desired = desired_status(svc, resolved, tc, deployment, now())
        if refused is not None:
            desired["conditions"] = set_condition(
                desired["conditions"],
                "Ready",
                False,
                "WorkloadRefused",
                f"the API server refused a workload object: {refused}"[:1024],
                svc["metadata"].get("generation"),
                now(),
            )
        try:
            await write_status(self.client, kinds.SERVICES, svc, desired)
        except NotFound:
            return None
        return Result(requeue=True) if refused is not None else None

    async def _template_cache(self, svc: Object, resolved: Resolved) -> Object | None:
        """B1 + D6: reuse a matching TC, else create the deterministic one (owned by the
        template, labelled with this service)."""
        namespace = svc["metadata"]["namespace"]
        candidates = self.state.template_caches_for_template(
            namespace, resolved.template["metadata"]["name"]
        )
        tc = reusable_template_cache(candidates, resolved)
        ref = ((svc.get("status") or {}).get("cache") or {}).get("templateCacheRef") or {}
        if tc is not None:
            if ref.get("uid") != tc["metadata"]["uid"]:
                created_by = (tc["metadata"].get("labels") or {}).get(
                    kinds.LABEL_CREATED_BY_SERVICE
                )
                if created_by != svc["metadata"]["name"]:
                    metrics.CACHE_REQUESTS.labels(namespace, "reused").inc()
            return tc
        body = builders.template_cache(
            namespace, resolved.template, resolved.scope, svc["metadata"]["name"]
        )
        existing = self.state.template_caches.get(body["metadata"]["name"], namespace)
        if existing is not None and not live(existing):
            return None  # the old one is still being cleaned up; its deletion event brings us back
        if await create_or_adopt(self.client, kinds.TEMPLATE_CACHES, body):
            log.info("created template cache %s/%s", namespace, body["metadata"]["name"])
            self.manager.events.normal(
                svc, "CreatedTemplateCache", f"created AIMTemplateCache {body['metadata']['name']}"
            )
        return None

    async def _workload(
        self, svc: Object, resolved: Resolved, mounts: list[tuple[str, str]] | None
    ) -> None:
        created: list[str] = []
        for resource, informer, body in (
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
        ):
            current = informer.get(body["metadata"]["name"], body["metadata"]["namespace"])
            if await self._ensure(resource, current, body):
                created.append(f"{resource.kind} {body['metadata']['name']}")
        if created:
            # One Event for the workload: Events are writes too, and a person reads one line.
            self.manager.events.normal(svc, "Created", "created " + " and ".join(created))

    async def _ensure(self, resource: Resource, current: Object | None, body: Object) -> bool:
        """Creates the child, or patches its spec when what aimd wants of it changed (compared by a
        hash of the desired spec, so fields the API server defaults never cause a write)."""
        digest = spec_hash(body)
        body["metadata"].setdefault("annotations", {})[SPEC_HASH] = digest
        if current is None:
            return await create_or_adopt(self.client, resource, body) is not None
        if (current["metadata"].get("annotations") or {}).get(SPEC_HASH) == digest:
            return False
        patch = {"metadata": {"annotations": {SPEC_HASH: digest}}, "spec": body["spec"]}
        await self.client.patch(
            resource, body["metadata"]["name"], patch, body["metadata"]["namespace"]
        )
        return False

    async def keep_available_template_caches(self, svc: Object) -> None:
        """D1 (+ D7, D8): the TCs this service created are kept when Available, handed to another
        live service that uses them, or deleted. Its Deployment and Service are collected."""
        namespace, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        if not self.state.namespace_terminating(namespace):
            for tc in self.state.template_caches.index.by(CREATED_BY_SERVICE, (namespace, name)):
                await self._keep_or_delete(svc, tc)
        await remove_finalizer(self.client, kinds.SERVICES, svc)

    async def _keep_or_delete(self, svc: Object, tc: Object) -> None:
        if not live(tc) or (tc.get("status") or {}).get("status") == "Available":
            return
        namespace = tc["metadata"]["namespace"]
        heirs = [
            other
            for other in oldest_first(
                self.state.services_for_template(
                    namespace, (tc.get("spec") or {}).get("templateName", "")
                )
            )
            if live(other)
            and caching(other)
            and other["metadata"]["uid"] != svc["metadata"]["uid"]
            and self._uses(other, tc)
        ]
        if heirs:
            heir = heirs[0]["metadata"]["name"]
            await set_label(
                self.client, kinds.TEMPLATE_CACHES, tc, kinds.LABEL_CREATED_BY_SERVICE, heir
            )
            self.manager.events.normal(
                tc, "HandedOver", f"{svc['metadata']['name']} was deleted; {heir} still uses it"
            )
            return
        await delete_exact(self.client, kinds.TEMPLATE_CACHES, tc)
        self.manager.events.normal(
            svc,
            "DeletedTemplateCache",
            f"deleted AIMTemplateCache {tc['metadata']['name']}: it was not Available",
        )

    def _uses(self, svc: Object, tc: Object) -> bool:
        resolved = self.state.templates.resolve(
            svc["metadata"]["namespace"], (svc.get("spec") or {}).get("templateName", "")
        )
        return resolved is not None and template_cache_matches(tc, resolved)
