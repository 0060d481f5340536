"""The model-cache reconciler, keyed by ``(namespace, sourceUri)``.

Why that key and not an MC name: demand (the TCs whose template needs the URI) and supply (the
MCs that have it) meet on the URI. One worker per key means two templates asking for the same model
at once cannot make two caches, and a cache made by hand is found the way one made by a template
is (SPEC B2). The key's URI is the normalised :func:`~aimd.api.sources.source_key` (B10).

Each MC of a key is observed, decided for (:func:`~aimd.caching.model_cache_plan.decide`, pure)
and driven on its own: one that the API server refuses a child for says so in its status and is
retried on a bounded backoff, without holding up the others (E6).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace

from aimd.api import kinds
from aimd.api.meta import live, now, oldest_first, parse_time
from aimd.api.sources import source_key
from aimd.api.types import ModelCache, Object
from aimd.caching import (
    builders,
    credentials,
    governor,
    metrics,
    names,
    pods,
    policy,
    rules,
    writes,
)
from aimd.caching.model_cache_plan import (
    REFUSAL_RETRY,
    Observed,
    Plan,
    RetryPolicy,
    decide,
    job_outcome,
    mounts_a_volume,
    refused,
)
from aimd.caching.reconciler import Key, Reconciler
from aimd.caching.state import State
from aimd.caching.templates import model_sources
from aimd.kube import resources
from aimd.kube.errors import NotFound
from aimd.runtime import Manager, Result

log = logging.getLogger(__name__)


class ModelCacheReconciler(Reconciler):
    """Ensures one MC per demanded ``(namespace, sourceUri)`` and drives each MC of the key."""

    def __init__(
        self,
        manager: Manager,
        state: State,
        downloads: builders.Downloads,
        retries: RetryPolicy | None = None,
        wake_template_cache: Callable[[str, str], None] = lambda namespace, name: None,
        allowed: policy.Config | None = None,
    ) -> None:
        super().__init__(manager, state)
        self.allowed = allowed or policy.Config(downloads.image)
        self.governor = governor.Governor(manager.settings.max_concurrent_downloads)
        self.downloads = downloads
        self.policy = retries or RetryPolicy()
        self.wake_template_cache = wake_template_cache

    async def reconcile(self, key: Key) -> Result | None:
        namespace, uri = key
        if self.state.namespace_terminating(namespace):
            return None
        supply = [mc for mc in self.state.model_caches_for(namespace, uri) if live(mc)]
        if not supply:
            return await self._create_for_demand(namespace, uri)
        requeue: list[float] = []
        for mc in oldest_first(supply):
            if await self._release_orphan(mc):
                continue
            after = await self._drive(mc)
            if after is not None:
                requeue.append(after)
        return Result(requeue_after=min(requeue)) if requeue else None

    async def _create_for_demand(self, namespace: str, uri: str) -> Result | None:
        """B2: the oldest TC that needs ``uri`` gets an MC for it, labelled as its own."""
        demand = self.state.template_caches_needing(namespace, uri)
        if not demand:
            self.state.refusals.pop((namespace, uri), None)
            return None
        first = demand[0]
        resolved = self.state.resolve_for_template_cache(first)
        assert resolved is not None  # template_caches_needing resolved it
        source = next(
            s for s in model_sources(resolved.template) if source_key(s.source_uri) == uri
        )
        tc_spec = first["spec"]
        body = builders.model_cache(
            namespace,
            source.source_uri,
            source.model_id,
            source.size,
            first["metadata"]["name"],
            env=builders.merged_env(list(tc_spec.get("env") or ()), list(source.env)),
            storage_class=tc_spec.get("storageClassName"),
        )
        try:
            created = await writes.create_or_adopt(self.client, kinds.MODEL_CACHES, body)
        except writes.Refused as refusal:
            # Said in the status of every TC that waits for it (the TC reconciler reads this).
            moment = now()
            since = self.state.refusals.get((namespace, uri), (moment, ""))[0]
            self.state.refusals[(namespace, uri)] = (since, refusal.sentence()[:1024])
            for tc in demand:
                self.wake_template_cache(namespace, tc["metadata"]["name"])
            low, high = REFUSAL_RETRY
            return Result(requeue_after=min(high, max(low, (moment - since).total_seconds())))
        self.state.refusals.pop((namespace, uri), None)
        if created:
            metrics.CACHE_REQUESTS.labels(namespace, "created").inc()
            log.info("created model cache %s/%s for %s", namespace, body["metadata"]["name"], uri)
            self.manager.events.normal(
                first,
                "CreatedModelCache",
                f"created AIMModelCache {body['metadata']['name']} for {uri}",
            )
        return None

    async def _release_orphan(self, mc: ModelCache) -> bool:
        """D2, applied late: an MC whose creating TC is gone without having released it (the TC's
        cleanup read an index that did not hold this MC yet) is handed to a TC that still needs
        it, or deleted if it is not Available. True if the MC is no longer this key's business."""
        creator = writes.creator_name(mc, kinds.LABEL_CREATED_BY_TEMPLATE_CACHE)
        if not creator or rules.is_available(mc):
            return False
        namespace = mc["metadata"]["namespace"]
        if self.state.template_caches.get(creator, namespace) is not None:
            return False
        others = self.state.template_caches_needing(namespace, mc["spec"]["sourceUri"])
        label = kinds.LABEL_CREATED_BY_TEMPLATE_CACHE
        action = await self.release(mc, kinds.MODEL_CACHES, label, others, departing=None)
        return action is rules.Release.DELETE

    def _observe(self, mc: ModelCache) -> Observed:
        s = self.state
        name = mc["metadata"]["name"]
        downloader = names.downloader_name(name)
        claim = mc["status"].get("persistentVolumeClaim") or names.pvc_name(
            name, mc["metadata"]["uid"]
        )
        pvc = s.owned(s.pvcs, mc, claim)
        jobs = s.jobs_of(mc)
        return Observed(
            pvc=pvc,
            jobs=jobs,
            pod_problems=self._pod_problems(jobs, pvc),
            downloader_ready=(
                s.owned(s.service_accounts, mc, downloader) is not None,
                s.owned(s.roles, mc, downloader) is not None,
                s.owned(s.role_bindings, mc, downloader) is not None,
            ),
            namesake_volumes=tuple(s.volumes_of_namesakes(mc)),
            expandable=pvc is not None and s.expandable(pvc),
            slot=lambda: self.governor.place(mc, s.model_caches.list(), s.needed_by_a_service),
            consent_bound=s.owned(s.role_bindings, mc, credentials.binding_name(name)) is not None,
            not_allowed=tuple(
                str(problem)
                for problem in policy.check(
                    mc["spec"],
                    policy.Additions.of(s.namespaces.get(mc["metadata"]["namespace"])),
                    self.allowed,
                )
            ),
        )

    def _pod_problems(
        self, jobs: Mapping[str, Object], pvc: Object | None
    ) -> dict[str, pods.PodProblem]:
        """Why the newest pod of each unfinished Job cannot start, where it cannot."""
        found = {}
        for name, job in jobs.items():
            made = self.state.pods_of(job) if job_outcome(job) is None else []
            if not made:
                continue
            claim = pvc if mounts_a_volume(made[-1]) else None
            problem = pods.pod_problem(made[-1], claim, self.state.storage_class_exists(claim))
            if problem is not None:
                found[name] = problem
        return found

    async def _drive(self, mc: ModelCache) -> float | None:
        seen = self._observe(mc)
        plan = decide(mc, seen, self.downloads, now(), self.policy)
        made: list[str] = []
        try:
            created_pvc = await self._create(mc, plan, made)
            if created_pvc is not None:
                # The Job's name needs the new PVC's uid, which the create just returned: start it
                # in this pass rather than write a Pending status the next pass would overwrite.
                seen = replace(seen, pvc=created_pvc, downloader_ready=(True, True, True))
                first, plan = plan, decide(mc, seen, self.downloads, now(), self.policy)
                plan.retired_volumes[:0] = first.retired_volumes
                await self._create(mc, plan, made)
        except writes.Refused as refusal:
            status, delay = refused(mc, refusal, now())
            try:
                await self.write_status(self.state.model_caches, kinds.MODEL_CACHES, mc, status)
            except NotFound:
                return None
            return delay
        finally:
            if made:
                # One Event for what one pass made (the PVC and its Job): each is a write.
                self.manager.events.normal(mc, "Created", "created " + " and ".join(made))
        try:
            wrote = await self.write_status(
                self.state.model_caches, kinds.MODEL_CACHES, mc, plan.status
            )
        except NotFound:
            return None
        if wrote:
            self._count(mc, plan)
            for event in plan.events:
                self.manager.events.record(mc, event.type, event.reason, event.note)
        for volume, request in plan.resizes:
            await self._grow(volume, request)
        for volume in plan.retired_volumes:
            await writes.delete_as_decided(
                self.client, resources.PERSISTENT_VOLUME_CLAIMS, volume, whatever_changed=True
            )
        for job in plan.deletes:
            await writes.delete_as_decided(self.client, resources.JOBS, job, whatever_changed=True)
        return plan.requeue_after

    async def _grow(self, pvc: Object, request: str) -> None:
        meta = pvc["metadata"]
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "spec": {"resources": {"requests": {"storage": request}}},
        }
        with writes.refusals_raised(resources.PERSISTENT_VOLUME_CLAIMS, pvc):
            await self.client.patch(
                resources.PERSISTENT_VOLUME_CLAIMS, meta["name"], patch, meta["namespace"]
            )

    async def _create(self, mc: ModelCache, plan: Plan, made: list[str]) -> Object | None:
        """Creates the plan's children, adding the PVC and Job it made to ``made`` (what the
        Created Event says); returns the PVC if this call created it.

        What a Job needs (its ServiceAccount, Role, RoleBinding, PVC) goes in one round trip, not
        one each: a model cache is the first step on every service's way to Running. The Job
        follows once they exist, so its pod never looks for a ServiceAccount not made yet. Each
        create runs to its end when another is refused; the first failure is then raised.
        """
        created_pvc = None
        needed = [(r, body) for r, body in plan.creates if r != resources.JOBS]
        jobs = [(r, body) for r, body in plan.creates if r == resources.JOBS]
        for batch in (needed, jobs):
            outcomes = await asyncio.gather(
                *(writes.create_or_adopt(self.client, r, body) for r, body in batch),
                return_exceptions=True,
            )
            for (resource, body), created in zip(batch, outcomes, strict=True):
                if created is None or isinstance(created, BaseException):
                    continue
                if resource in (resources.PERSISTENT_VOLUME_CLAIMS, resources.JOBS):
                    made.append(f"{resource.kind} {body['metadata']['name']}")
                if resource == resources.PERSISTENT_VOLUME_CLAIMS:
                    created_pvc = created
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        return created_pvc

    def _count(self, mc: ModelCache, plan: Plan) -> None:
        """Counters move only with the status write that records the fact, so a reconcile that
        repeats (conflict, restart) does not count twice."""
        namespace = mc["metadata"]["namespace"]
        if plan.started:
            metrics.DOWNLOADS_STARTED.labels(namespace).inc()
        if plan.retried:
            metrics.DOWNLOAD_RETRIES.labels(namespace).inc()
        if plan.failed_reason:
            metrics.DOWNLOADS_FAILED.labels(namespace, plan.failed_reason).inc()
        if plan.succeeded:
            metrics.DOWNLOADS_SUCCEEDED.labels(namespace).inc()
            metrics.DOWNLOAD_BYTES.labels(namespace).inc(int(plan.status.get("sizeBytes") or 0))
            created = parse_time(mc["metadata"].get("creationTimestamp"))
            if created is not None:
                seconds = max(0.0, (now() - created).total_seconds())
                metrics.TIME_TO_AVAILABLE.labels(namespace).observe(seconds)
