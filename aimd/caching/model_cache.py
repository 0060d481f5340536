"""The model-cache reconciler, keyed by ``(namespace, sourceUri)``.

Why that key and not an MC name: demand (the TCs whose template needs the URI) and supply (the
MCs that have it) meet on the URI. One worker per key means two templates asking for the same model
at once cannot make two caches, and a cache made by hand is found the way one made by a template
is (SPEC B2). The key's URI is the normalised :func:`~aimd.api.sources.source_key` (B10).

Per MC the life is: size known (from the spec, else a probe Job) → PVC → download Job → Available
once the Job is Complete *and* the PVC Bound; a failed Job counts a failure and a new Job (a new
name: the attempt is in it) starts after an exponential backoff (B4). A volume's name is used for
one volume only (:func:`~aimd.caching.names.pvc_name`), so a Deployment that mounts a claim by name
never mounts a new, empty volume in an old one's place (B8, E6).

Each MC of a key is driven on its own: one that the API server refuses a child for says so in its
status and is retried on a bounded backoff, without holding up the others (E6).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aimd.api import kinds
from aimd.api.meta import condition, live, now, oldest_first, parse_time, rfc3339, set_condition
from aimd.api.quantity import display_size, parse_bytes, pvc_size
from aimd.api.reasons import Reason
from aimd.api.sources import source_key
from aimd.api.types import ModelCache, Object
from aimd.caching import builders, metrics, names, rules, writes
from aimd.caching.reconciler import Key, Reconciler
from aimd.caching.state import State
from aimd.caching.templates import model_sources
from aimd.kube import resources
from aimd.kube.errors import NotFound
from aimd.kube.resources import Resource
from aimd.runtime import Manager, Result

log = logging.getLogger(__name__)


PENDING, PROGRESSING, AVAILABLE, FAILED = (
    rules.PENDING,
    rules.PROGRESSING,
    rules.AVAILABLE,
    rules.FAILED,
)
OWNED_FIELDS = (
    "status",
    "conditions",
    "observedGeneration",
    "persistentVolumeClaim",
    "sizeBytes",
    "displaySize",
    "failures",
    "nextRetryTime",
    "retryRequest",
    "lastFailureTime",
    "availableTime",
    "job",
)
# A refused child is tried again after about as long as it has been refused: 5 s at first,
# doubling, never more than 5 minutes apart (E6: bounded, and quick once the quota is raised).
REFUSAL_RETRY = (5.0, 300.0)


@dataclass(frozen=True)
class RetryPolicy:
    """First retry after ``base`` seconds (within a minute), doubling up to ``cap`` (B4)."""

    base: float = 30.0
    cap: float = 1800.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.base * 2 ** max(0, failures - 1)))


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    note: str


@dataclass
class Plan:
    """What one MC needs: children to create, Jobs to remove, its status, Events, when to look
    again."""

    creates: list[tuple[Resource, Object]] = field(default_factory=list)
    deletes: list[Object] = field(default_factory=list)  # old Jobs
    resizes: list[tuple[Object, str]] = field(default_factory=list)  # (PVC, new request)
    retired_volumes: list[Object] = field(default_factory=list)  # PVCs a larger one replaces
    status: Object = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    started: bool = False
    retried: bool = False
    succeeded: bool = False
    failed_reason: str | None = None


@dataclass(frozen=True)
class Observed:
    """An MC's children as the index has them (None: absent, or owned by someone else)."""

    pvc: Object | None  # the claim its status names (or its first, before it has one)
    jobs: dict[str, Object]
    downloader_ready: tuple[bool, bool, bool]  # ServiceAccount, Role, RoleBinding exist
    namesake_volumes: tuple[Object, ...] = ()  # PVCs an earlier MC of this name left behind
    expandable: bool = False  # the volume's StorageClass allows expansion


def known_size(mc: ModelCache) -> int | None:
    return (
        parse_bytes(mc["spec"].get("size"))
        or parse_bytes(mc["status"].get("probe", {}).get("sizeBytes"))
        or None
    )


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


def jobs_to_remove(jobs: dict[str, Object], current: str | None) -> list[Object]:
    """Old attempts do not pile up (E7): the current Job and the last failed download stay; the
    rest go, and a probe goes once its outcome is in status (it is never current then)."""
    finished = [job for name, job in jobs.items() if name != current]
    failed_downloads = [
        job
        for job in oldest_first(finished)
        if job_outcome(job) == "Failed" and "-probe-" not in job["metadata"]["name"]
    ]
    keep = {failed_downloads[-1]["metadata"]["name"]} if failed_downloads else set()
    return [job for job in finished if job["metadata"]["name"] not in keep]


class _Decision:
    """Builds one MC's plan; the helpers keep :func:`decide` readable."""

    def __init__(
        self, mc: ModelCache, downloads: builders.Downloads, now: datetime, policy: RetryPolicy
    ) -> None:
        self.mc = mc
        self.downloads = downloads
        self.now = now
        self.policy = policy
        self.status = mc["status"]
        self.generation = mc["metadata"].get("generation")
        self.failures = int(self.status.get("failures") or 0)
        self.plan = Plan()
        self.plan.status = {k: self.status.get(k) for k in OWNED_FIELDS}
        self.plan.status["observedGeneration"] = self.generation
        self.plan.status["failures"] = self.failures or None
        requested = mc["metadata"].get("annotations", {}).get(kinds.ANNOTATION_RETRY)
        if requested and self.status.get("status") != FAILED:
            # A retry asked for while nothing has failed is spent, not saved for a later failure.
            self.plan.status["retryRequest"] = requested

    @property
    def uri(self) -> str:
        return self.mc["spec"]["sourceUri"]

    def set(self, state: str, ready: bool, reason: Reason | str, message: str) -> None:
        self.plan.status["status"] = state
        self.plan.status["conditions"] = set_condition(
            list(self.status.get("conditions") or ()),
            "Ready",
            ready,
            reason,
            message,
            self.generation,
            self.now,
        )
        if state != FAILED:
            self.plan.status["nextRetryTime"] = None

    def waiting_to_retry(self) -> bool:
        """Failed, and the backoff has not run out: stay Failed and look again then.

        A person's fix cuts the wait short: a change to the spec (new env, new credentials), or a
        new value of the retry annotation (after fixing a Secret, which aimd does not watch:
        it holds no right to read Secrets).
        """
        if self.status.get("status") != FAILED:
            return False
        observed = self.status.get("observedGeneration")
        if observed is not None and observed != self.generation:
            return False
        requested = self.mc["metadata"].get("annotations", {}).get(kinds.ANNOTATION_RETRY)
        if requested and requested != self.status.get("retryRequest"):
            self.plan.status["retryRequest"] = requested
            return False
        retry = parse_time(self.status.get("nextRetryTime"))
        if retry is None or retry <= self.now:
            return False
        self.plan.requeue_after = max(1.0, (retry - self.now).total_seconds())
        return True

    def start(self, resource: Resource, body: Object, what: str) -> None:
        self.plan.creates.append((resource, body))
        self.plan.status["job"] = body["metadata"]["name"]
        if self.failures:
            self.plan.retried = True
            self.plan.events.append(
                Event("Normal", "Retrying", f"attempt {self.failures + 1}: {what} {self.uri}")
            )

    def fail(self, reason: str, message: str) -> None:
        failures = self.failures + 1
        retry = self.now + timedelta(seconds=self.policy.delay(failures))
        self.plan.status["failures"] = failures
        self.plan.status["lastFailureTime"] = rfc3339(self.now)
        self.set(
            FAILED,
            False,
            reason,
            f"{message} (failure {failures}); aimd retries at {rfc3339(retry)}",
        )
        self.plan.status["nextRetryTime"] = rfc3339(retry)
        self.plan.requeue_after = self.policy.delay(failures)
        self.plan.failed_reason = reason
        self.plan.events.append(Event("Warning", reason, f"{self.uri}: {message}"))

    def available(self, claim: str, size: int) -> None:
        """Available says so completely: progress at 100 % with the bytes, whether or not the
        download reported its last tick (E7)."""
        progress = self.status.get("progress", {})
        total = int(progress.get("totalBytes") or size)
        self.plan.status["progress"] = {
            "totalBytes": total,
            "downloadedBytes": total,
            "percentage": 100,
            "bytesPerSecond": 0,
        }
        self.plan.status["displayPercentage"] = "100%"
        self.plan.status["availableTime"] = self.status.get("availableTime") or rfc3339(self.now)
        self.set(AVAILABLE, True, Reason.AVAILABLE, f"{self.uri} is on volume {claim}")


def _downloader(mc: ModelCache, seen: Observed) -> list[tuple[Resource, Object]]:
    """The ServiceAccount, Role and RoleBinding the Jobs run as, where missing."""
    sa, role, binding = seen.downloader_ready
    wanted = (
        (sa, resources.SERVICE_ACCOUNTS, builders.service_account(mc)),
        (role, resources.ROLES, builders.role(mc)),
        (binding, resources.ROLE_BINDINGS, builders.role_binding(mc)),
    )
    return [(resource, body) for exists, resource, body in wanted if not exists]


def claim_name(mc: ModelCache, volume_lost: bool) -> str:
    """The claim this MC's data lives on: the one its status names, else its first; a new name
    when the one its status names was lost after it held a whole model (B8)."""
    recorded = mc["status"].get("persistentVolumeClaim")
    uid = mc["metadata"]["uid"]
    if not recorded:
        return names.pvc_name(mc["metadata"]["name"], uid)
    if volume_lost:
        return names.pvc_name(mc["metadata"]["name"], uid, replaces=recorded)
    return recorded


def decide(
    mc: ModelCache,
    seen: Observed,
    downloads: builders.Downloads,
    now: datetime,
    policy: RetryPolicy,
) -> Plan:
    """The children and status one MC needs now, from what the index shows (pure)."""
    d = _Decision(mc, downloads, now, policy)
    d.plan.creates += _downloader(mc, seen)
    size = known_size(mc)
    if size is None:
        _probe(d, seen)
        return d.plan
    d.plan.status["sizeBytes"] = size
    d.plan.status["displaySize"] = display_size(size)
    if seen.namesake_volumes:
        old = seen.namesake_volumes[0]["metadata"]["name"]
        why = (
            "a pod still mounts it"
            if seen.namesake_volumes[0]["metadata"].get("deletionTimestamp")
            else "the garbage collector has yet to remove it"
        )
        d.set(
            PENDING,
            False,
            Reason.VOLUME_RELEASING,
            f"waiting for volume {old} of an earlier AIMModelCache of this name to be released "
            f"({why}); this cache downloads once it is gone",
        )
        return d.plan
    was_available = d.status.get("status") == AVAILABLE
    pvc = seen.pvc
    lost = pvc is None and was_available
    claim = pvc["metadata"]["name"] if pvc is not None else claim_name(mc, lost)
    d.plan.status["persistentVolumeClaim"] = claim
    if pvc is None:
        d.plan.creates.append(
            (resources.PERSISTENT_VOLUME_CLAIMS, builders.persistent_volume_claim(mc, claim, size))
        )
        if lost:
            # B8: never report Available for a volume that is gone.
            d.plan.status["availableTime"] = None
            d.set(
                PROGRESSING,
                False,
                Reason.VOLUME_LOST,
                f"volume {d.status.get('persistentVolumeClaim')} disappeared; downloading again "
                f"into {claim}",
            )
            d.plan.events.append(
                Event("Warning", Reason.VOLUME_LOST, f"volume lost; downloading {d.uri} again")
            )
        elif d.status.get("status") != FAILED:
            d.set(PENDING, False, Reason.CREATING_VOLUME, f"creating volume {claim}")
        return d.plan
    job_name = names.download_job_name(mc["metadata"]["name"], pvc["metadata"]["uid"], d.failures)
    bound = (pvc.get("status") or {}).get("phase") == "Bound"
    if was_available and d.status.get("job") == job_name:
        d.available(claim, size)
        d.plan.deletes = jobs_to_remove(seen.jobs, job_name)
        return d.plan
    job = seen.jobs.get(job_name)
    if not was_available and _volume_too_small(d, seen, pvc, claim, size, job):
        return d.plan
    if job is None:
        if not d.waiting_to_retry():
            d.start(
                resources.JOBS, builders.download_job(mc, job_name, claim, downloads), "downloading"
            )
            d.plan.started = True
            d.set(PROGRESSING, False, Reason.DOWNLOADING, f"downloading {d.uri} into {claim}")
        d.plan.deletes = jobs_to_remove(seen.jobs, None)
        return d.plan
    d.plan.deletes = jobs_to_remove(seen.jobs, job_name)
    outcome = job_outcome(job)
    if outcome is None:
        d.plan.status["job"] = job_name
        d.set(PROGRESSING, False, Reason.DOWNLOADING, f"downloading {d.uri} into {claim}")
    elif outcome == "Complete" and bound:
        d.plan.status["job"] = job_name
        d.available(claim, size)
        d.plan.succeeded = True
        d.plan.events.append(Event("Normal", Reason.AVAILABLE, f"{d.uri} is ready on {claim}"))
    elif outcome == "Complete":
        d.set(
            PROGRESSING,
            False,
            Reason.WAITING_FOR_VOLUME,
            f"downloaded; waiting for {claim} to be bound",
        )
    else:
        failure = d.status.get("lastDownloadFailure", {})
        reason = str(failure.get("reason") or Reason.DOWNLOAD_FAILED)
        message = str(failure.get("message") or f"download Job {job_name} failed")
        d.fail(reason, message)
    return d.plan


def _volume_too_small(
    d: _Decision, seen: Observed, pvc: Object, claim: str, size: int, job: Object | None
) -> bool:
    """StorageFull recovers (E6): when the model needs more than the volume holds (a person raised
    ``spec.size`` after a StorageFull failure), the volume grows if its StorageClass allows it;
    otherwise the next attempt starts on a new, larger volume. True if this pass is about that."""
    wanted = pvc_size(size)
    wanted_bytes = parse_bytes(wanted) or 0
    requests = ((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}
    requested = parse_bytes(requests.get("storage"))
    capacity = parse_bytes(((pvc.get("status") or {}).get("capacity") or {}).get("storage"))
    if requested is None:
        return False
    if requested >= wanted_bytes:
        if capacity is not None and capacity < wanted_bytes:
            d.set(
                PROGRESSING,
                False,
                Reason.VOLUME_EXPANDING,
                f"waiting for volume {claim} to grow to {wanted}; the download resumes on it",
            )
            return True
        return False
    if seen.expandable:
        d.plan.resizes.append((pvc, wanted))
        d.set(
            PROGRESSING,
            False,
            Reason.VOLUME_EXPANDING,
            f"growing volume {claim} to {wanted} (its StorageClass allows expansion); the "
            "download resumes on it",
        )
        return True
    if job is not None or d.waiting_to_retry():
        return False  # the attempt on this volume goes on, or the next one is not due yet
    bigger = names.pvc_name(d.mc["metadata"]["name"], d.mc["metadata"]["uid"], replaces=claim)
    d.plan.creates.append(
        (resources.PERSISTENT_VOLUME_CLAIMS, builders.persistent_volume_claim(d.mc, bigger, size))
    )
    d.plan.retired_volumes.append(pvc)
    d.plan.status["persistentVolumeClaim"] = bigger
    d.set(
        PROGRESSING,
        False,
        Reason.VOLUME_REPLACING,
        f"replacing volume {claim} (its StorageClass cannot grow) with {bigger} of {wanted}; "
        "the model downloads again onto it",
    )
    return True


def _probe(d: _Decision, seen: Observed) -> None:
    """The size is unknown: learn it with a probe Job before sizing the volume (B3)."""
    name = d.mc["metadata"]["name"]
    job_name = names.probe_job_name(name, d.failures)
    job = seen.jobs.get(job_name)
    if job is None:
        if not d.waiting_to_retry():
            d.start(resources.JOBS, builders.probe_job(d.mc, job_name, d.downloads), "probing")
            d.set(PENDING, False, Reason.PROBING_SIZE, f"learning the size of {d.uri}")
        d.plan.deletes = jobs_to_remove(seen.jobs, None)
        return
    d.plan.deletes = jobs_to_remove(seen.jobs, job_name)
    outcome = job_outcome(job)
    probe = d.status.get("probe", {})
    if outcome is None:
        d.plan.status["job"] = job_name
        d.set(PENDING, False, Reason.PROBING_SIZE, f"learning the size of {d.uri}")
    else:
        reason = str(probe.get("reason") or Reason.PROBE_FAILED)
        message = str(probe.get("message") or f"probe Job {job_name} did not report a size")
        d.fail(reason, message)


def refused(mc: ModelCache, refusal: writes.Refused, moment: datetime) -> tuple[Object, float]:
    """The status fields (and the delay to the next try) of an MC whose child the API server
    refused: its own words, in the Ready condition (E6)."""
    current = condition(mc, "Ready")
    since = parse_time(current.get("lastTransitionTime")) if current else None
    if current is None or current.get("reason") != Reason.CREATE_REFUSED or since is None:
        since = moment
    low, high = REFUSAL_RETRY
    delay = min(high, max(low, (moment - since).total_seconds()))
    message = f"{refusal.sentence()}; aimd tries again within {delay:.0f}s"
    conditions = set_condition(
        list(mc["status"].get("conditions") or ()),
        "Ready",
        False,
        Reason.CREATE_REFUSED,
        message[:1024],
        mc["metadata"].get("generation"),
        moment,
    )
    status = {"status": mc["status"].get("status") or PENDING, "conditions": conditions}
    return status, delay


class ModelCacheReconciler(Reconciler):
    """Ensures one MC per demanded ``(namespace, sourceUri)`` and drives each MC of the key."""

    def __init__(
        self,
        manager: Manager,
        state: State,
        downloads: builders.Downloads,
        policy: RetryPolicy | None = None,
        wake_template_cache: Callable[[str, str], None] = lambda namespace, name: None,
    ) -> None:
        super().__init__(manager, state)
        self.downloads = downloads
        self.policy = policy or RetryPolicy()
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
        return Observed(
            pvc=pvc,
            jobs=s.jobs_of(mc),
            downloader_ready=(
                s.owned(s.service_accounts, mc, downloader) is not None,
                s.owned(s.roles, mc, downloader) is not None,
                s.owned(s.role_bindings, mc, downloader) is not None,
            ),
            namesake_volumes=tuple(s.volumes_of_namesakes(mc)),
            expandable=pvc is not None and s.expandable(pvc),
        )

    async def _drive(self, mc: ModelCache) -> float | None:
        seen = self._observe(mc)
        plan = decide(mc, seen, self.downloads, now(), self.policy)
        try:
            created_pvc = await self._create(mc, plan)
            if created_pvc is not None:
                # The Job's name needs the new PVC's uid, which the create just returned: start it
                # in this pass rather than write a Pending status the next pass would overwrite.
                seen = Observed(created_pvc, seen.jobs, (True, True, True))
                first, plan = plan, decide(mc, seen, self.downloads, now(), self.policy)
                plan.retired_volumes[:0] = first.retired_volumes
                await self._create(mc, plan)
        except writes.Refused as refusal:
            status, delay = refused(mc, refusal, now())
            try:
                await writes.write_status(self.client, kinds.MODEL_CACHES, mc, status)
            except NotFound:
                return None
            return delay
        try:
            wrote = await writes.write_status(self.client, kinds.MODEL_CACHES, mc, plan.status)
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

    async def _create(self, mc: ModelCache, plan: Plan) -> Object | None:
        """Creates the plan's children; returns the PVC if this call created it."""
        created_pvc = None
        for resource, body in plan.creates:
            created = await writes.create_or_adopt(self.client, resource, body)
            if created is not None and resource in (
                resources.PERSISTENT_VOLUME_CLAIMS,
                resources.JOBS,
            ):
                note = f"created {resource.kind} {body['metadata']['name']}"
                self.manager.events.normal(mc, "Created", note)
                if resource == resources.PERSISTENT_VOLUME_CLAIMS:
                    created_pvc = created
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
