"""Issue 10's failures, each against the real API server: an Available cache is never deleted on
a stale view, orphans are cleaned up by the seed's rule, refusals reach status, long names work,
a re-created cache never takes its namesake's volume, attempts do not pile up, and one model
spelled two ways is one cache (SPEC §4 B10, D5, E6, E7)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aimd.api import kinds
from aimd.api.meta import MAX_LABEL_VALUE
from aimd.api.types import Object, shaped
from aimd.caching.service import ServiceReconciler
from aimd.caching.state import State, Store
from aimd.caching.template_cache import TemplateCacheReconciler
from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient
from aimd.kube.errors import Conflict
from aimd.kube.resources import JOBS, PERSISTENT_VOLUME_CLAIMS, PODS, STORAGE_CLASSES, Resource
from aimd.runtime import Manager
from aimd.settings import Settings
from tests.integration.test_caching_harness import (
    Running,
    finish,
    get_or_none,
    items,
    kubelet,
    live_items,
    service,
    services_running,
    status_of,
    template,
    template_cache,
)
from tests.support import eventually

MC, TC, SVC, TPL = (
    kinds.MODEL_CACHES,
    kinds.TEMPLATE_CACHES,
    kinds.SERVICES,
    kinds.SERVICE_TEMPLATES,
)
LLAMA = ("meta-llama/Llama-3.1-8B", "hf://meta-llama/Llama-3.1-8B")
QUOTAS = Resource("", "v1", "resourcequotas", "ResourceQuota", True)


@contextlib.asynccontextmanager
async def offline_state(control_plane: ControlPlane) -> AsyncIterator[tuple[Manager, State]]:
    """A manager whose informers never run: the test fills the index by hand, so it can hold an
    older view of an object than the server does (a watch event still in flight)."""
    client = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    try:
        manager = Manager(client, Settings(), handle_signals=False)
        yield manager, State(manager)
    finally:
        await client.close()


def remember(store: Store[Any], obj: Object) -> None:
    store.informer.changed("ADDED", shaped(dict(obj)))


def model_cache(name: str, uri: str, created_by: str | None = None, **spec: Any) -> Object:
    metadata: Object = {"name": name}
    if created_by:
        metadata["labels"] = {kinds.LABEL_CREATED_BY_TEMPLATE_CACHE: created_by}
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": MC.kind,
        "metadata": metadata,
        "spec": {"sourceUri": uri, "size": "1Gi", **spec},
    }


async def set_status(kube: KubeClient, resource: Resource, obj: Object, **status: Any) -> Object:
    meta = obj["metadata"]
    patched: Object = await kube.patch(
        resource, meta["name"], {"status": status}, meta["namespace"], subresource="status"
    )
    return patched


def ready(obj: Object | None) -> Object:
    return next(
        (
            c
            for c in ((obj or {}).get("status") or {}).get("conditions") or ()
            if c["type"] == "Ready"
        ),
        {},
    )


# -- never delete what became Available -----------------------------------------------------------


async def test_a_template_cache_cleanup_on_a_stale_view_never_deletes_an_available_model_cache(
    kube: KubeClient, namespace: str, control_plane: ControlPlane
) -> None:
    await kube.create(TPL, template("llama", LLAMA), namespace)
    tc = await kube.create(TC, template_cache("cache", "llama"), namespace)
    mc = await kube.create(MC, model_cache("llama", LLAMA[1], created_by="cache"), namespace)
    seen = await set_status(kube, MC, mc, status="Progressing")
    await set_status(kube, MC, seen, status="Available")  # the index has not heard of this
    async with offline_state(control_plane) as (manager, state):
        remember(state.model_caches, seen)
        remember(state.template_caches, tc)
        with pytest.raises(Conflict):
            await TemplateCacheReconciler(manager, state).keep_available_model_caches(
                state.template_caches.list(namespace)[0]
            )
    kept = await kube.get(MC, "llama", namespace)
    assert kept["status"]["status"] == "Available"
    assert not kept["metadata"].get("deletionTimestamp")


async def test_a_service_cleanup_on_a_stale_view_never_deletes_an_available_template_cache(
    kube: KubeClient, namespace: str, control_plane: ControlPlane
) -> None:
    await kube.create(TPL, template("llama", LLAMA), namespace)
    svc = await kube.create(SVC, service("svc", "llama"), namespace)
    body = template_cache("cache", "llama")
    body["metadata"]["labels"] = {kinds.LABEL_CREATED_BY_SERVICE: "svc"}
    tc = await kube.create(TC, body, namespace)
    seen = await set_status(kube, TC, tc, status="Progressing")
    await set_status(kube, TC, seen, status="Available")
    async with offline_state(control_plane) as (manager, state):
        remember(state.template_caches, seen)
        remember(state.services, svc)
        with pytest.raises(Conflict):
            await ServiceReconciler(manager, state).keep_available_template_caches(
                state.services.list(namespace)[0]
            )
    assert (await kube.get(TC, "cache", namespace))["status"]["status"] == "Available"


async def test_a_model_cache_its_template_cache_left_behind_is_cleaned_up_by_the_seeds_rule(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    """The TC's cleanup read an index without this MC (created meanwhile): D2 applies late."""
    await kube.create(MC, model_cache("orphan", "hf://org/orphan", created_by="gone"), namespace)
    await eventually(
        lambda: _gone(kube, MC, "orphan", namespace), what="the unfinished orphan deleted"
    )
    await kube.create(TPL, template("needs", ("org/heir", "hf://org/heir")), namespace)
    await kube.create(TC, template_cache("heir", "needs"), namespace)
    await kube.create(MC, model_cache("wanted", "hf://org/heir", created_by="gone"), namespace)

    async def handed_over() -> Object | None:
        mc = await get_or_none(kube, MC, "wanted", namespace)
        labels = (mc or {}).get("metadata", {}).get("labels") or {}
        return mc if labels.get(kinds.LABEL_CREATED_BY_TEMPLATE_CACHE) == "heir" else None

    await eventually(handed_over, what="an orphan someone needs handed over")


async def _gone(kube: KubeClient, resource: Resource, name: str, namespace: str) -> bool:
    return await get_or_none(kube, resource, name, namespace) is None


# -- nothing stuck without a word -----------------------------------------------------------------


async def quota(kube: KubeClient, namespace: str, name: str, **hard: str) -> None:
    """A ResourceQuota, with the status its controller would give it (the test control plane
    runs no quota controller, and admission enforces only a quota whose usage is known)."""
    body = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}}
    created = await kube.create(QUOTAS, {**body, "spec": {"hard": hard}}, namespace)
    used = dict.fromkeys(hard, "0")
    await set_status(kube, QUOTAS, created, hard=hard, used=used)


async def test_a_refused_volume_is_said_in_every_model_caches_status_and_retried(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    """E6: two caches of one source, both refused by a quota: each says so (the first no longer
    hides the second), and both go on once the quota allows."""
    await quota(kube, namespace, "no-volumes", persistentvolumeclaims="0")
    for name in ("first", "second"):
        await kube.create(MC, model_cache(name, "hf://org/model"), namespace)

    async def both_refused() -> list[Object] | None:
        found = await items(kube, MC, namespace)
        refused = [mc for mc in found if ready(mc).get("reason") == "CreateRefused"]
        return refused if len(refused) == 2 else None

    for mc in await eventually(both_refused, what="both caches saying CreateRefused"):
        assert "exceeded quota" in ready(mc)["message"]
        assert "PersistentVolumeClaim" in ready(mc)["message"]
    await kube.delete(QUOTAS, "no-volumes", namespace)

    async def both_downloading() -> bool:
        found = await items(kube, MC, namespace)
        return len(found) == 2 and all(ready(mc).get("reason") == "Downloading" for mc in found)

    await eventually(both_downloading, timeout=120, what="both downloading once the quota allows")


async def test_a_refused_model_cache_is_said_in_its_template_caches_status(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    hard = {f"count/{MC.plural}.{MC.group}": "0"}
    await quota(kube, namespace, "no-caches", **hard)
    await kube.create(TPL, template("llama", LLAMA), namespace)
    await kube.create(TC, template_cache("cache", "llama"), namespace)

    async def said() -> Object | None:
        tc = await get_or_none(kube, TC, "cache", namespace)
        return tc if ready(tc).get("reason") == "CreateRefused" else None

    tc = await eventually(said, what="the template cache saying CreateRefused")
    assert "exceeded quota" in ready(tc)["message"]
    await kube.delete(QUOTAS, "no-caches", namespace)
    await eventually(lambda: _count(kube, MC, namespace, 1), timeout=120, what="the MC created")


async def _count(kube: KubeClient, resource: Resource, namespace: str, count: int) -> bool:
    return len(await live_items(kube, resource, namespace)) == count


async def test_names_longer_than_a_label_value_work_end_to_end(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    """E6: names may be 253 characters; every label value aimd writes fits in 63."""
    long_template = "t" * 120
    long_service = "s." + "s" * 150
    await kube.create(TPL, template(long_template, LLAMA), namespace)
    await kube.create(SVC, service(long_service, long_template), namespace)
    hand_made = "m" * 200
    await kube.create(MC, model_cache(hand_made, "hf://org/hand-made"), namespace)
    async with kubelet(kube, namespace):
        await eventually(lambda: services_running(kube, namespace, 1), what="the service running")
        await eventually(
            lambda: _status(kube, MC, hand_made, namespace, "Available"), what="long MC Available"
        )
    (tc,) = await items(kube, TC, namespace)
    assert tc["metadata"]["annotations"][kinds.LABEL_CREATED_BY_SERVICE] == long_service
    for resource in (TC, MC, JOBS, PERSISTENT_VOLUME_CLAIMS):
        for obj in await items(kube, resource, namespace):
            for value in (obj["metadata"].get("labels") or {}).values():
                assert len(value) <= MAX_LABEL_VALUE, (resource.kind, value)


async def _status(
    kube: KubeClient, resource: Resource, name: str, namespace: str, wanted: str
) -> bool:
    return status_of(await get_or_none(kube, resource, name, namespace)) == wanted


def pod_mounting(claim: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "server"},
        "spec": {
            # Scheduled (PVC protection counts only pods on a node) but never run: no kubelet.
            "nodeName": "node-1",
            "containers": [{"name": "c", "image": "example.com/serve:1"}],
            "volumes": [{"name": "m", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


async def test_a_cache_re_created_while_a_pod_holds_its_old_volume_waits_for_it(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    """E6: the successor says VolumeReleasing, makes no volume until the old one is gone, and
    then makes one of another name: no pod can mount a volume nothing was downloaded into."""
    await kube.create(MC, model_cache("llama", LLAMA[1]), namespace)
    async with kubelet(kube, namespace):
        await eventually(lambda: _status(kube, MC, "llama", namespace, "Available"), what="ready")
    old_claim = (await kube.get(MC, "llama", namespace))["status"]["persistentVolumeClaim"]
    await kube.create(PODS, pod_mounting(old_claim), namespace)
    await kube.delete(MC, "llama", namespace)
    await eventually(lambda: _gone(kube, MC, "llama", namespace), what="the old cache gone")
    await kube.create(MC, model_cache("llama", LLAMA[1]), namespace)

    async def releasing() -> Object | None:
        mc = await get_or_none(kube, MC, "llama", namespace)
        return mc if ready(mc).get("reason") == "VolumeReleasing" else None

    waiting = await eventually(releasing, what="the successor saying VolumeReleasing")
    assert old_claim in ready(waiting)["message"]
    claims = [c["metadata"]["name"] for c in await items(kube, PERSISTENT_VOLUME_CLAIMS, namespace)]
    assert claims == [old_claim], "nothing new while the old volume is held"
    # No kubelet to confirm the pod stopped: remove it at once, as a node would once it had.
    await kube.request(
        "DELETE",
        PODS.path(namespace, "server"),
        body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
    )
    async with kubelet(kube, namespace):
        await eventually(
            lambda: _status(kube, MC, "llama", namespace, "Available"), what="successor ready"
        )
    new_claim = (await kube.get(MC, "llama", namespace))["status"]["persistentVolumeClaim"]
    assert new_claim != old_claim


async def test_failing_attempts_keep_only_the_current_job_and_the_last_failed_one(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    """E7: a cache failing over and over does not pile up Jobs."""
    await kube.create(MC, model_cache("flaky", "hf://org/flaky"), namespace)
    failed: set[str] = set()

    async def fail_attempts() -> bool:
        for job in await live_items(kube, JOBS, namespace):
            if job["metadata"]["name"] not in failed:
                failed.add(job["metadata"]["name"])
                await finish(kube, job, ok=False)
        return len(failed) >= 4

    await eventually(fail_attempts, timeout=180, interval=0.5, what="four failed attempts")

    async def at_most_two() -> list[str] | None:
        jobs = [j["metadata"]["name"] for j in await live_items(kube, JOBS, namespace)]
        return jobs if len(jobs) <= 2 else None

    await eventually(at_most_two, what="old attempts removed")


async def test_an_available_cache_shows_full_progress_though_the_job_never_reported(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await kube.create(MC, model_cache("quiet", "hf://org/quiet"), namespace)
    async with kubelet(kube, namespace):
        await eventually(lambda: _status(kube, MC, "quiet", namespace, "Available"), what="ready")
    mc = await kube.get(MC, "quiet", namespace)
    size = 1024**3
    assert mc["status"]["progress"] == {
        "totalBytes": size,
        "downloadedBytes": size,
        "percentage": 100,
        "bytesPerSecond": 0,
    }
    assert mc["status"]["displayPercentage"] == "100%"
    assert mc["status"]["displaySize"] == "1.0GiB"


# -- inputs that today get through ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "needed"),
    [
        ("s3://bucket/prefix", "s3://bucket/prefix/"),
        ("hf://Meta-Llama/Llama-3.1-8B", "hf://meta-llama/llama-3.1-8b"),
    ],
)
async def test_one_model_spelled_two_ways_is_one_cache(
    kube: KubeClient, namespace: str, aimd: Running, existing: str, needed: str
) -> None:
    """B10: a template's source meets the cache made for another spelling of it."""
    await kube.create(MC, model_cache("made-by-hand", existing), namespace)
    await kube.create(TPL, template("tpl", ("org/model", needed)), namespace)
    await kube.create(TC, template_cache("cache", "tpl"), namespace)

    async def served() -> Object | None:
        tc = await get_or_none(kube, TC, "cache", namespace)
        entries = ((tc or {}).get("status") or {}).get("modelCaches") or []
        return tc if entries and entries[0].get("name") == "made-by-hand" else None

    await eventually(served, what="the template cache served by the existing cache")
    assert [mc["metadata"]["name"] for mc in await items(kube, MC, namespace)] == ["made-by-hand"]


async def storage_class(kube: KubeClient, expandable: bool) -> str:
    name = f"aimd-test-{secrets.token_hex(4)}"
    body = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "example.com/none",
        "allowVolumeExpansion": expandable,
    }
    await kube.create(STORAGE_CLASSES, body)
    return name


async def fail_with_storage_full(kube: KubeClient, namespace: str, name: str) -> Object:
    """Runs the cache's first attempt into StorageFull, as the download Job reports it."""
    (job,) = await eventually(lambda: _jobs(kube, namespace, 1), what="the first attempt")
    mc = await kube.get(MC, name, namespace)
    failure = {"reason": "StorageFull", "message": "no space left on device"}
    await set_status(kube, MC, mc, lastDownloadFailure=failure)
    await finish(kube, job, ok=False)
    failed: Object = await eventually(
        lambda: _with_reason(kube, name, namespace, "StorageFull"), what="Failed: StorageFull"
    )
    return failed


async def _jobs(kube: KubeClient, namespace: str, count: int) -> list[Object] | None:
    found = await live_items(kube, JOBS, namespace)
    return found if len(found) == count else None


async def _with_reason(kube: KubeClient, name: str, namespace: str, reason: str) -> Object | None:
    mc = await get_or_none(kube, MC, name, namespace)
    return mc if ready(mc).get("reason") == reason else None


async def test_a_full_volume_grows_when_its_storage_class_allows(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    """E6: StorageFull, then a larger spec.size: the volume is grown, and the download goes on."""
    cls = await storage_class(kube, expandable=True)
    await kube.create(MC, model_cache("big", "hf://org/big", storageClassName=cls), namespace)
    async with kubelet(kube, namespace, hold=lambda job: True):
        await eventually(lambda: _bound(kube, namespace), what="the volume bound")
    failed = await fail_with_storage_full(kube, namespace, "big")
    claim = failed["status"]["persistentVolumeClaim"]
    await kube.patch(MC, "big", {"spec": {"size": "5Gi"}}, namespace)
    await eventually(
        lambda: _with_reason(kube, "big", namespace, "VolumeExpanding"), what="growing"
    )
    pvc = await kube.get(PERSISTENT_VOLUME_CLAIMS, claim, namespace)
    assert pvc["spec"]["resources"]["requests"]["storage"] == "6Gi"
    # The resizer's part: the volume now holds what was asked.
    await set_status(kube, PERSISTENT_VOLUME_CLAIMS, pvc, capacity={"storage": "6Gi"})
    await eventually(lambda: _with_reason(kube, "big", namespace, "Downloading"), what="resumed")
    assert (await kube.get(MC, "big", namespace))["status"]["persistentVolumeClaim"] == claim


async def test_a_full_volume_that_cannot_grow_is_replaced_by_a_larger_one(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    cls = await storage_class(kube, expandable=False)
    await kube.create(MC, model_cache("big", "hf://org/big", storageClassName=cls), namespace)
    failed = await fail_with_storage_full(kube, namespace, "big")
    claim = failed["status"]["persistentVolumeClaim"]
    await kube.patch(MC, "big", {"spec": {"size": "5Gi"}}, namespace)

    async def replaced() -> Object | None:
        mc = await get_or_none(kube, MC, "big", namespace)
        fresh = ((mc or {}).get("status") or {}).get("persistentVolumeClaim")
        return (
            mc
            if fresh
            and fresh != claim
            and ready(mc).get("reason")
            in (
                "VolumeReplacing",
                "Downloading",
            )
            else None
        )

    mc = await eventually(replaced, what="a larger volume in place of the full one")
    larger = await kube.get(
        PERSISTENT_VOLUME_CLAIMS, mc["status"]["persistentVolumeClaim"], namespace
    )
    assert larger["spec"]["resources"]["requests"]["storage"] == "6Gi"
    await eventually(
        lambda: _gone(kube, PERSISTENT_VOLUME_CLAIMS, claim, namespace), what="the full one gone"
    )
    await eventually(lambda: _with_reason(kube, "big", namespace, "Downloading"), what="retrying")


async def _bound(kube: KubeClient, namespace: str) -> bool:
    claims = await items(kube, PERSISTENT_VOLUME_CLAIMS, namespace)
    return bool(claims) and all(c["status"].get("phase") == "Bound" for c in claims)
