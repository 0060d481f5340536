"""The model-cache reconciler, keyed by ``(namespace, sourceUri)``.

Why that key and not an MC name: demand (the TCs whose template needs the URI) and supply (the
MCs that have it) meet on the URI. One worker per key means two templates asking for the same model
at once cannot make two caches, and a cache made by hand is found the way one made by a template
is (SPEC B2).

Per MC the life is: size known (from the spec, else a probe Job) → PVC → download Job → Available
once the Job is Complete *and* the PVC Bound; a failed Job counts a failure and a new Job (a new
name: the attempt is in it) starts after an exponential backoff (B4). The current attempt's Job
name is derived from the PVC's uid and the failure count, so a status that says Available refers to
one volume: a new volume means a new attempt (B8).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aimd.api import kinds
from aimd.caching import builders, metrics, names
from aimd.caching.conditions import job_outcome, parse_time, set_condition, timestamp
from aimd.caching.conditions import now as _now
from aimd.caching.quantity import parse_bytes
from aimd.caching.state import State, live, oldest_first
from aimd.caching.templates import model_sources
from aimd.caching.writes import create_or_adopt, write_status
from aimd.kube import resources
from aimd.kube.errors import NotFound
from aimd.kube.resources import Resource
from aimd.runtime import Manager, Result

log = logging.getLogger(__name__)

Object = dict[str, Any]
Key = tuple[str, str]

PENDING, PROGRESSING, AVAILABLE, FAILED = "Pending", "Progressing", "Available", "Failed"
OWNED_FIELDS = (
    "status",
    "conditions",
    "observedGeneration",
    "persistentVolumeClaim",
    "sizeBytes",
    "failures",
    "nextRetryTime",
    "retryRequest",
    "lastFailureTime",
    "availableTime",
    "job",
)


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
    """What one MC needs: children to create, its status, Events, when to look again."""

    creates: list[tuple[Resource, Object]] = field(default_factory=list)
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

    pvc: Object | None
    jobs: dict[str, Object]
    downloader_ready: tuple[bool, bool, bool]  # ServiceAccount, Role, RoleBinding exist


def known_size(mc: Object) -> int | None:
    status = mc.get("status") or {}
    return (
        parse_bytes((mc.get("spec") or {}).get("size"))
        or parse_bytes((status.get("probe") or {}).get("sizeBytes"))
        or None
    )


class _Decision:
    """Builds one MC's plan; the helpers keep :func:`decide` readable."""

    def __init__(self, mc: Object, image: str, now: datetime, policy: RetryPolicy) -> None:
        self.mc = mc
        self.image = image
        self.now = now
        self.policy = policy
        self.status = mc.get("status") or {}
        self.generation = mc["metadata"].get("generation")
        self.failures = int(self.status.get("failures") or 0)
        self.plan = Plan()
        self.plan.status = {k: self.status.get(k) for k in OWNED_FIELDS}
        self.plan.status["observedGeneration"] = self.generation
        self.plan.status["failures"] = self.failures or None
        requested = (mc["metadata"].get("annotations") or {}).get(kinds.ANNOTATION_RETRY)
        if requested and self.status.get("status") != FAILED:
            # A retry asked for while nothing has failed is spent, not saved for a later failure.
            self.plan.status["retryRequest"] = requested

    @property
    def uri(self) -> str:
        return str(self.mc["spec"]["sourceUri"])

    def set(self, state: str, ready: bool, reason: str, message: str) -> None:
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
        requested = (self.mc["metadata"].get("annotations") or {}).get(kinds.ANNOTATION_RETRY)
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
        self.plan.status["lastFailureTime"] = timestamp(self.now)
        self.set(
            FAILED,
            False,
            reason,
            f"{message} (failure {failures}); aimd retries at {timestamp(retry)}",
        )
        self.plan.status["nextRetryTime"] = timestamp(retry)
        self.plan.requeue_after = self.policy.delay(failures)
        self.plan.failed_reason = reason
        self.plan.events.append(Event("Warning", reason, f"{self.uri}: {message}"))


def decide(mc: Object, seen: Observed, image: str, now: datetime, policy: RetryPolicy) -> Plan:
    """The children and status one MC needs now, from what the index shows (pure)."""
    d = _Decision(mc, image, now, policy)
    name = mc["metadata"]["name"]
    sa, role, binding = seen.downloader_ready
    for exists, body in (
        (sa, builders.service_account(mc)),
        (role, builders.role(mc)),
        (binding, builders.role_binding(mc)),
    ):
        if not exists:
            kind = {"ServiceAccount": resources.SERVICE_ACCOUNTS, "Role": resources.ROLES}
            d.plan.creates.append((kind.get(body["kind"], resources.ROLE_BINDINGS), body))

    size = known_size(mc)
    if size is None:
        _probe(d, seen)
        return d.plan
    d.plan.status["sizeBytes"] = size
    claim = names.pvc_name(name)
    d.plan.status["persistentVolumeClaim"] = claim
    pvc = seen.pvc
    if pvc is None:
        d.plan.creates.append(
            (resources.PERSISTENT_VOLUME_CLAIMS, builders.persistent_volume_claim(mc, size))
        )
        if d.status.get("status") == AVAILABLE:
            # B8: never report Available for a volume that is gone.
            d.plan.status["availableTime"] = None
            d.set(
                PROGRESSING, False, "VolumeLost", f"volume {claim} disappeared; downloading again"
            )
            d.plan.events.append(
                Event("Warning", "VolumeLost", f"{claim} is gone; downloading {d.uri} again")
            )
        elif d.status.get("status") != FAILED:
            d.set(PENDING, False, "CreatingVolume", f"creating volume {claim}")
        return d.plan
    if pvc["metadata"].get("deletionTimestamp"):
        d.set(
            PROGRESSING,
            False,
            "VolumeReleasing",
            f"waiting for the old volume {claim} to be released",
        )
        return d.plan
    job_name = names.download_job_name(name, pvc["metadata"]["uid"], d.failures)
    bound = (pvc.get("status") or {}).get("phase") == "Bound"
    if d.status.get("status") == AVAILABLE and d.status.get("job") == job_name:
        return d.plan
    job = seen.jobs.get(job_name)
    if job is None:
        if not d.waiting_to_retry():
            d.start(
                resources.JOBS, builders.download_job(mc, job_name, claim, image), "downloading"
            )
            d.plan.started = True
            d.set(PROGRESSING, False, "Downloading", f"downloading {d.uri} into {claim}")
        return d.plan
    outcome = job_outcome(job)
    if outcome is None:
        d.plan.status["job"] = job_name
        d.set(PROGRESSING, False, "Downloading", f"downloading {d.uri} into {claim}")
    elif outcome == "Complete" and bound:
        d.plan.status["job"] = job_name
        d.plan.status["availableTime"] = d.status.get("availableTime") or timestamp(now)
        d.set(AVAILABLE, True, "Available", f"{d.uri} is on volume {claim}")
        d.plan.succeeded = True
        d.plan.events.append(Event("Normal", "Available", f"{d.uri} is ready on {claim}"))
    elif outcome == "Complete":
        d.set(
            PROGRESSING, False, "WaitingForVolume", f"downloaded; waiting for {claim} to be bound"
        )
    else:
        failure = d.status.get("lastDownloadFailure") or {}
        reason = str(failure.get("reason") or "DownloadFailed")
        message = str(failure.get("message") or f"download Job {job_name} failed")
        d.fail(reason, message)
    return d.plan


def _probe(d: _Decision, seen: Observed) -> None:
    """The size is unknown: learn it with a probe Job before sizing the volume (B3)."""
    name = d.mc["metadata"]["name"]
    job_name = names.probe_job_name(name, d.failures)
    job = seen.jobs.get(job_name)
    if job is None:
        if not d.waiting_to_retry():
            d.start(resources.JOBS, builders.probe_job(d.mc, job_name, d.image), "probing")
            d.set(PENDING, False, "ProbingSize", f"learning the size of {d.uri}")
        return
    outcome = job_outcome(job)
    probe = d.status.get("probe") or {}
    if outcome is None:
        d.plan.status["job"] = job_name
        d.set(PENDING, False, "ProbingSize", f"learning the size of {d.uri}")
    else:
        reason = str(probe.get("reason") or "ProbeFailed")
        message = str(probe.get("message") or f"probe Job {job_name} did not report a size")
        d.fail(reason, message)


class ModelCacheReconciler:
    """Ensures one MC per demanded ``(namespace, sourceUri)`` and drives each MC of the key."""

    def __init__(
        self, manager: Manager, state: State, image: str, policy: RetryPolicy | None = None
    ) -> None:
        self.manager = manager
        self.client = manager.client
        self.state = state
        self.image = image
        self.policy = policy or RetryPolicy()

    async def reconcile(self, key: Key) -> Result | None:
        namespace, uri = key
        if self.state.namespace_terminating(namespace):
            return None
        supply = [mc for mc in self.state.model_caches_for(namespace, uri) if live(mc)]
        if not supply:
            await self._create_for_demand(namespace, uri)
            return None
        requeue: list[float] = []
        for mc in oldest_first(supply):
            after = await self._drive(mc)
            if after is not None:
                requeue.append(after)
        return Result(requeue_after=min(requeue)) if requeue else None

    async def _create_for_demand(self, namespace: str, uri: str) -> None:
        demand = self.state.template_caches_needing(namespace, uri)
        if not demand:
            return
        first = demand[0]
        resolved = self.state.resolve_for_template_cache(first)
        assert resolved is not None  # template_caches_needing resolved it
        source = next(s for s in model_sources(resolved.template) if s.source_uri == uri)
        tc_spec = first.get("spec") or {}
        body = builders.model_cache(
            namespace,
            uri,
            source.model_id,
            source.size,
            first["metadata"]["name"],
            env=builders.merged_env(list(tc_spec.get("env") or ()), list(source.env)),
            storage_class=tc_spec.get("storageClassName"),
        )
        if await create_or_adopt(self.client, kinds.MODEL_CACHES, body):
            metrics.CACHE_REQUESTS.labels(namespace, "created").inc()
            log.info("created model cache %s/%s for %s", namespace, body["metadata"]["name"], uri)
            self.manager.events.normal(
                first,
                "CreatedModelCache",
                f"created AIMModelCache {body['metadata']['name']} for {uri}",
            )

    async def _drive(self, mc: Object) -> float | None:
        name = mc["metadata"]["name"]
        s = self.state
        downloader = names.downloader_name(name)
        seen = Observed(
            pvc=s.owned(s.pvcs, mc, names.pvc_name(name)),
            jobs=s.jobs_of(mc),
            downloader_ready=(
                s.owned(s.service_accounts, mc, downloader) is not None,
                s.owned(s.roles, mc, downloader) is not None,
                s.owned(s.role_bindings, mc, downloader) is not None,
            ),
        )
        plan = decide(mc, seen, self.image, _now(), self.policy)
        namespace = mc["metadata"]["namespace"]
        created_pvc = await self._create(mc, plan)
        if created_pvc is not None:
            # The Job's name needs the new PVC's uid, which the create just returned: start it
            # in this pass rather than write a Pending status the next pass would overwrite.
            seen = Observed(created_pvc, seen.jobs, (True, True, True))
            plan = decide(mc, seen, self.image, _now(), self.policy)
            await self._create(mc, plan)
        try:
            wrote = await write_status(self.client, kinds.MODEL_CACHES, mc, plan.status)
        except NotFound:
            return None
        if wrote:
            self._count(mc, plan, namespace)
            for event in plan.events:
                self.manager.events.record(mc, event.type, event.reason, event.note)
        return plan.requeue_after

    async def _create(self, mc: Object, plan: Plan) -> Object | None:
        """Creates the plan's children; returns the PVC if this call created it."""
        created_pvc = None
        for resource, body in plan.creates:
            created = await create_or_adopt(self.client, resource, body)
            if created is not None and resource in (
                resources.PERSISTENT_VOLUME_CLAIMS,
                resources.JOBS,
            ):
                note = f"created {resource.kind} {body['metadata']['name']}"
                self.manager.events.normal(mc, "Created", note)
                if resource == resources.PERSISTENT_VOLUME_CLAIMS:
                    created_pvc = created
        return created_pvc

    def _count(self, mc: Object, plan: Plan, namespace: str) -> None:
        """Counters move only with the status write that records the fact, so a reconcile that
        repeats (conflict, restart) does not count twice."""
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
                seconds = max(0.0, (_now() - created).total_seconds())
                metrics.TIME_TO_AVAILABLE.labels(namespace).observe(seconds)
