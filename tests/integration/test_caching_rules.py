"""The seed's ownership, reuse and deletion rules (SPEC B1-B9, D1-D8, E1, E4), one test per rule,
against the real API server and garbage collector with the controller running in-process."""

from __future__ import annotations

import asyncio
from typing import Any

from aimd.api import kinds
from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient
from aimd.kube.resources import DEPLOYMENTS, EVENTS, JOBS, PERSISTENT_VOLUME_CLAIMS
from tests.integration.test_caching_harness import (
    Running,
    all_with_status,
    finish,
    get_or_none,
    items,
    kubelet,
    live_items,
    service,
    services_running,
    start_controller,
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
QWEN = ("Qwen/Qwen2.5-7B", "hf://Qwen/Qwen2.5-7B")
Object = dict[str, Any]


async def create(kube: KubeClient, resource: Any, body: Object, namespace: str) -> Object:
    return await kube.create(resource, body, namespace)


async def test_two_services_on_one_template_share_one_template_cache(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA), namespace)
    await create(kube, SVC, service("a", "llama"), namespace)
    await create(kube, SVC, service("b", "llama"), namespace)
    async with kubelet(kube, namespace):
        await eventually(
            lambda: services_running(kube, namespace, 2),
            what="both services with their workload",
        )
    tcs = await items(kube, TC, namespace)
    assert len(tcs) == 1
    assert tcs[0]["metadata"]["ownerReferences"][0]["kind"] == "AIMServiceTemplate"
    assert tcs[0]["metadata"]["labels"][kinds.LABEL_CREATED_BY_SERVICE] in ("a", "b")
    assert len(await items(kube, MC, namespace)) == 1
    for name in ("a", "b"):
        svc = await kube.get(SVC, name, namespace)
        assert svc["status"]["cache"]["templateCacheRef"]["name"] == tcs[0]["metadata"]["name"]


async def test_two_templates_sharing_a_uri_share_one_model_cache(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("one", LLAMA), namespace)
    await create(kube, TPL, template("two", LLAMA, QWEN), namespace)
    await create(kube, TC, template_cache("one-cache", "one"), namespace)
    await create(kube, TC, template_cache("two-cache", "two"), namespace)
    await eventually(lambda: _count(kube, MC, namespace, 2), what="two model caches")
    await asyncio.sleep(1)
    assert len(await items(kube, MC, namespace)) == 2, "one MC per URI, shared"
    async with kubelet(kube, namespace):
        await eventually(
            lambda: all_with_status(kube, TC, namespace, "Available", 2), what="both TCs Available"
        )
    claims = {
        e["sourceUri"]: e["persistentVolumeClaim"]
        for tc in await items(kube, TC, namespace)
        for e in tc["status"]["modelCaches"]
    }
    assert len(set(claims.values())) == 2
    assert len(await items(kube, PERSISTENT_VOLUME_CLAIMS, namespace)) == 2


async def _count(kube: KubeClient, resource: Any, namespace: str, count: int) -> bool:
    return len(await live_items(kube, resource, namespace)) == count


async def test_service_deleted_while_downloading_deletes_its_caches(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA), namespace)
    await create(kube, SVC, service("svc", "llama"), namespace)
    await eventually(lambda: _count(kube, JOBS, namespace, 1), what="the download Job")
    await kube.delete(SVC, "svc", namespace)
    await eventually(lambda: _gone(kube, SVC, namespace), what="the service gone")
    await eventually(lambda: _gone(kube, TC, namespace), what="the template cache deleted")
    await eventually(lambda: _gone(kube, MC, namespace), what="the model cache deleted")
    await eventually(lambda: _gone(kube, JOBS, namespace), what="the Job collected")


async def _gone(kube: KubeClient, resource: Any, namespace: str) -> bool:
    return not await items(kube, resource, namespace)


async def test_service_deleted_after_available_keeps_caches_and_a_new_service_mounts_them(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA, QWEN), namespace)
    await create(kube, SVC, service("first", "llama"), namespace)
    async with kubelet(kube, namespace):
        await eventually(
            lambda: services_running(kube, namespace, 1), what="the first service running"
        )
    jobs = {j["metadata"]["name"] for j in await items(kube, JOBS, namespace)}
    await kube.delete(SVC, "first", namespace)
    await eventually(lambda: _gone(kube, SVC, namespace), what="the first service gone")
    await asyncio.sleep(2)
    assert await all_with_status(kube, TC, namespace, "Available", 1), "the Available TC is kept"
    assert await all_with_status(kube, MC, namespace, "Available", 2), "its MCs are kept"
    await create(kube, SVC, service("second", "llama"), namespace)
    deployment = await eventually(
        lambda: get_or_none(kube, DEPLOYMENTS, "second", namespace), what="the new Deployment"
    )
    assert {j["metadata"]["name"] for j in await items(kube, JOBS, namespace)} == jobs
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert set(mounts) == {
        f"/workspace/model-cache/{LLAMA[0]}",
        f"/workspace/model-cache/{QWEN[0]}",
    }
    assert all(m["readOnly"] for m in mounts.values())
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["AIM_CACHE_PATH"] == "/workspace/model-cache"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claims == {
        p["metadata"]["name"] for p in await items(kube, PERSISTENT_VOLUME_CLAIMS, namespace)
    }


async def test_template_cache_deleted_keeps_available_model_caches_only(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA, QWEN), namespace)
    await create(kube, TC, template_cache("cache", "llama"), namespace)
    await llama_available_qwen_downloading(kube, namespace)
    await kube.delete(TC, "cache", namespace)
    await eventually(lambda: _gone(kube, TC, namespace), what="the TC removed")
    kept = await only_the_unfinished_model_cache_deleted(kube, namespace)
    assert kept["spec"]["sourceUri"] == LLAMA[1]
    assert status_of(kept) == "Available"


async def _mc_statuses(kube: KubeClient, namespace: str, wanted: set[str]) -> bool:
    return {status_of(mc) for mc in await items(kube, MC, namespace)} == wanted


async def llama_available_qwen_downloading(kube: KubeClient, namespace: str) -> None:
    """The kubelet completes llama's download and holds qwen's, so one MC of the template is
    Available and the other is not when the deletion under test comes."""
    qwen_held = lambda job: "qwen" in job["metadata"]["name"]  # noqa: E731
    async with kubelet(kube, namespace, hold=qwen_held):
        await eventually(
            lambda: _mc_statuses(kube, namespace, {"Available", "Progressing"}),
            what="llama Available, qwen downloading",
        )


async def only_the_unfinished_model_cache_deleted(kube: KubeClient, namespace: str) -> Object:
    """Waits until one MC is left (the unfinished one deleted) and returns it."""
    await eventually(lambda: _count(kube, MC, namespace, 1), what="the unfinished MC deleted")
    (kept,) = await items(kube, MC, namespace)
    return kept


async def test_model_cache_deleted_collects_its_pvc_and_job(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    body = {
        "apiVersion": kinds.API_VERSION,
        "kind": MC.kind,
        "metadata": {"name": "by-hand"},
        "spec": {"sourceUri": LLAMA[1], "modelId": LLAMA[0], "size": "10Gi"},
    }
    await create(kube, MC, body, namespace)
    await eventually(lambda: _count(kube, JOBS, namespace, 1), what="the download Job")
    (claim,) = await items(kube, PERSISTENT_VOLUME_CLAIMS, namespace)
    assert claim["spec"]["resources"]["requests"]["storage"] == "11Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    await kube.delete(MC, "by-hand", namespace)
    await eventually(lambda: _gone(kube, JOBS, namespace), what="the Job collected")
    await eventually(
        lambda: _gone(kube, PERSISTENT_VOLUME_CLAIMS, namespace), what="the PVC collected"
    )
    assert not await items(kube, MC, namespace), "no TC needs it: aimd does not make a new one"


async def test_template_deleted_collects_its_caches_and_keeps_available_model_caches(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA, QWEN), namespace)
    await create(kube, SVC, service("svc", "llama"), namespace)
    await llama_available_qwen_downloading(kube, namespace)
    await kube.delete(TPL, "llama", namespace)
    await eventually(lambda: _gone(kube, TC, namespace), what="the TC collected")
    kept = await only_the_unfinished_model_cache_deleted(kube, namespace)
    assert status_of(kept) == "Available"
    await eventually(
        lambda: _service_status(kube, namespace, "svc", "Pending"), what="the service Pending"
    )


async def _service_status(kube: KubeClient, namespace: str, name: str, wanted: str) -> bool:
    return status_of(await get_or_none(kube, SVC, name, namespace)) == wanted


async def test_a_running_services_deleted_deployment_is_made_again_and_said(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA), namespace)
    await create(kube, SVC, service("svc", "llama"), namespace)
    async with kubelet(kube, namespace):
        await eventually(lambda: services_running(kube, namespace, 1), what="the service running")
        assert not await _event_reasons(kube, namespace, {"Recreated"}), "a first one is routine"
        (deployment,) = await items(kube, DEPLOYMENTS, namespace)
        await kube.delete(DEPLOYMENTS, deployment["metadata"]["name"], namespace)

        async def again() -> list[Object] | None:
            found = await items(kube, DEPLOYMENTS, namespace)
            uids = [d["metadata"]["uid"] for d in found]
            return found if uids and deployment["metadata"]["uid"] not in uids else None

        await eventually(again, what="the Deployment made again")
        await eventually(
            lambda: _event_reasons(kube, namespace, {"Recreated"}), what="a Recreated Event"
        )
        await eventually(lambda: services_running(kube, namespace, 1), what="running again")


async def test_template_cache_deleted_under_a_live_service_is_recreated_without_download(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA), namespace)
    await create(kube, SVC, service("svc", "llama"), namespace)
    async with kubelet(kube, namespace):
        await eventually(lambda: services_running(kube, namespace, 1), what="the service running")
    (old,) = await items(kube, TC, namespace)
    jobs = await items(kube, JOBS, namespace)
    await kube.delete(TC, old["metadata"]["name"], namespace)

    async def replaced() -> list[Object] | None:
        found = await all_with_status(kube, TC, namespace, "Available", 1)
        return found if found and found[0]["metadata"]["uid"] != old["metadata"]["uid"] else None

    await eventually(replaced, what="a new Available template cache")
    assert len(await items(kube, JOBS, namespace)) == len(jobs), "no new download"
    assert await all_with_status(kube, MC, namespace, "Available", 1)


async def test_namespace_deletion_completes(
    kube: KubeClient, control_plane: ControlPlane, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA, QWEN), namespace)
    await create(kube, SVC, service("svc", "llama"), namespace)
    await create(kube, SVC, service("plain", "llama", cache=False), namespace)
    await eventually(lambda: _count(kube, JOBS, namespace, 2), what="the download Jobs")
    control_plane.api("DELETE", f"/api/v1/namespaces/{namespace}")

    async def namespace_gone() -> bool:
        from aimd.kube.resources import NAMESPACES

        return await get_or_none(kube, NAMESPACES, namespace, "") is None

    await eventually(namespace_gone, timeout=120, what="the namespace deleted")


async def test_a_failed_download_retries_by_itself(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA), namespace)
    await create(kube, TC, template_cache("cache", "llama"), namespace)
    (job,) = await eventually(lambda: _live(kube, JOBS, namespace, 1), what="the first Job")
    (mc,) = await items(kube, MC, namespace)
    await kube.patch(
        MC,
        mc["metadata"]["name"],
        {"status": {"lastDownloadFailure": {"reason": "RateLimited", "message": "429 from hub"}}},
        namespace,
        subresource="status",
    )
    await finish(kube, job, ok=False)
    failed = await eventually(
        lambda: _mc_with(kube, namespace, "Failed"), what="the model cache Failed"
    )
    assert failed["status"]["failures"] == 1
    assert failed["status"]["nextRetryTime"]
    ready = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "RateLimited"
    retry = next(
        j
        for j in await eventually(lambda: _live(kube, JOBS, namespace, 2), what="the retry's Job")
        if j["metadata"]["uid"] != job["metadata"]["uid"]
    )
    reasons = await eventually(
        lambda: _event_reasons(kube, namespace, {"RateLimited", "Retrying", "Created"}),
        what="Events for the failure, the retry and the creations",
    )
    assert {"RateLimited", "Retrying", "Created"} <= reasons
    # One Event per pass for what it made: the first pass made the PVC and its Job.
    (claim,) = await items(kube, PERSISTENT_VOLUME_CLAIMS, namespace)
    first = f"PersistentVolumeClaim {claim['metadata']['name']} and Job {job['metadata']['name']}"
    made = {f"created {first}", f"created Job {retry['metadata']['name']}"}
    await eventually(lambda: _created_notes(kube, namespace, made), what="the Created Events")
    await eventually(lambda: _mc_with(kube, namespace, "Progressing"), what="Progressing again")
    async with kubelet(kube, namespace):
        await eventually(lambda: _mc_with(kube, namespace, "Available"), what="Available")
        tc = await eventually(lambda: _tc_with(kube, namespace, "Available"), what="TC Available")
    assert tc["status"]["modelCaches"][0]["status"] == "Available"


async def _live(kube: KubeClient, resource: Any, namespace: str, count: int) -> list[Object] | None:
    found = await live_items(kube, resource, namespace)
    return found if len(found) == count else None


async def _mc_with(kube: KubeClient, namespace: str, wanted: str) -> Object | None:
    found = await items(kube, MC, namespace)
    return found[0] if len(found) == 1 and status_of(found[0]) == wanted else None


async def _tc_with(kube: KubeClient, namespace: str, wanted: str) -> Object | None:
    found = await items(kube, TC, namespace)
    return found[0] if len(found) == 1 and status_of(found[0]) == wanted else None


async def test_controller_restarted_midway_makes_no_duplicates(
    kube: KubeClient, control_plane: ControlPlane, namespace: str
) -> None:
    first = start_controller(str(control_plane.kubeconfig))
    try:
        await create(kube, TPL, template("llama", LLAMA, QWEN), namespace)
        for name in ("a", "b", "c"):
            await create(kube, SVC, service(name, "llama"), namespace)
        await eventually(lambda: _at_least(kube, MC, namespace, 1), what="caches started")
    finally:
        await first.stop()
    second = start_controller(str(control_plane.kubeconfig))
    try:
        async with kubelet(kube, namespace):
            await eventually(
                lambda: services_running(kube, namespace, 3), timeout=120, what="all running"
            )
    finally:
        await second.stop()
    assert len(await items(kube, TC, namespace)) == 1
    assert len(await items(kube, MC, namespace)) == 2
    assert len(await items(kube, PERSISTENT_VOLUME_CLAIMS, namespace)) == 2
    assert len(await items(kube, JOBS, namespace)) == 2


async def _at_least(kube: KubeClient, resource: Any, namespace: str, count: int) -> bool:
    return len(await live_items(kube, resource, namespace)) >= count


async def test_twenty_services_at_once_make_one_template_cache_and_one_model_cache_per_source(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA, QWEN), namespace)
    await asyncio.gather(
        *(create(kube, SVC, service(f"svc-{i}", "llama"), namespace) for i in range(20))
    )
    async with kubelet(kube, namespace):
        await eventually(
            lambda: services_running(kube, namespace, 20), timeout=180, what="20 running"
        )
    assert len(await items(kube, TC, namespace)) == 1
    assert len(await items(kube, MC, namespace)) == 2
    assert len(await items(kube, JOBS, namespace)) == 2


async def test_a_missing_template_recovers_by_itself(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, SVC, service("svc", "later"), namespace)
    await create(kube, TC, template_cache("cache", "later"), namespace)
    await eventually(lambda: _service_status(kube, namespace, "svc", "Pending"), what="Pending")
    tc = await eventually(lambda: _tc_with(kube, namespace, "Failed"), what="TC Failed")
    ready = next(c for c in tc["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "TemplateNotFound"
    await create(kube, TPL, template("later", LLAMA), namespace)
    async with kubelet(kube, namespace):
        await eventually(lambda: services_running(kube, namespace, 1), what="the service running")


async def test_a_lost_volume_is_downloaded_again_onto_a_volume_of_another_name(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    """B8, and E6: the fresh volume never takes the lost one's name, so a Deployment that still
    mounts the old claim can never mount a new, empty volume."""
    await create(kube, TPL, template("llama", LLAMA), namespace)
    await create(kube, TC, template_cache("cache", "llama"), namespace)
    async with kubelet(kube, namespace):
        mc = await eventually(lambda: _mc_with(kube, namespace, "Available"), what="Available")
    claim = mc["status"]["persistentVolumeClaim"]
    first_job = mc["status"]["job"]
    await kube.delete(PERSISTENT_VOLUME_CLAIMS, claim, namespace)

    async def downloading_again() -> Object | None:
        found = await _mc_with(kube, namespace, "Progressing")
        fresh = found and found["status"].get("persistentVolumeClaim")
        ok = (
            fresh
            and fresh != claim
            and await get_or_none(kube, PERSISTENT_VOLUME_CLAIMS, fresh, namespace)
        )
        return found if ok else None

    again = await eventually(downloading_again, what="Progressing on a fresh volume")
    assert await get_or_none(kube, PERSISTENT_VOLUME_CLAIMS, claim, namespace) is None
    assert again["status"]["job"] != first_job
    async with kubelet(kube, namespace):
        await eventually(lambda: _mc_with(kube, namespace, "Available"), what="Available again")

    async def old_attempt_removed() -> bool:
        jobs = [job["metadata"]["name"] for job in await items(kube, JOBS, namespace)]
        return first_job not in jobs

    await eventually(old_attempt_removed, what="the attempt on the lost volume removed (E7)")


async def test_an_unknown_size_is_probed_first(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA, size=None), namespace)
    await create(kube, TC, template_cache("cache", "llama"), namespace)
    (probe,) = await eventually(lambda: _live(kube, JOBS, namespace, 1), what="the probe Job")
    assert probe["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["aimd", "probe"]
    assert not await items(kube, PERSISTENT_VOLUME_CLAIMS, namespace), "no PVC before the size"
    (mc,) = await items(kube, MC, namespace)
    await kube.patch(
        MC,
        mc["metadata"]["name"],
        {"status": {"probe": {"sizeBytes": 20 * 1024**3, "revision": "abc"}}},
        namespace,
        subresource="status",
    )
    await finish(kube, probe)
    (claim,) = await eventually(
        lambda: _live(kube, PERSISTENT_VOLUME_CLAIMS, namespace, 1), what="the PVC"
    )
    assert claim["spec"]["resources"]["requests"]["storage"] == "22Gi"


async def test_a_cache_another_service_still_uses_is_handed_over(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA), namespace)
    await create(kube, SVC, service("a", "llama"), namespace)
    (tc,) = await eventually(lambda: _live(kube, TC, namespace, 1), what="the TC")
    creator = tc["metadata"]["labels"][kinds.LABEL_CREATED_BY_SERVICE]
    other = "b" if creator == "a" else "a"
    if other == "b":
        await create(kube, SVC, service("b", "llama"), namespace)
    await eventually(
        lambda: _count(kube, SVC, namespace, 2) if other == "b" else _count(kube, SVC, namespace, 1)
    )
    await asyncio.sleep(1)
    await kube.delete(SVC, creator, namespace)

    async def handed_over() -> Object | None:
        found = await live_items(kube, TC, namespace)
        ok = (
            len(found) == 1
            and found[0]["metadata"]["labels"][kinds.LABEL_CREATED_BY_SERVICE] == other
        )
        return found[0] if ok else None

    await eventually(handed_over, what="the TC labelled with the remaining service")
    assert len(await live_items(kube, MC, namespace)) == 1, "the download goes on"


async def test_nothing_is_written_once_converged(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    await create(kube, TPL, template("llama", LLAMA), namespace)
    await create(kube, SVC, service("svc", "llama"), namespace)
    async with kubelet(kube, namespace):
        await eventually(lambda: services_running(kube, namespace, 1), what="the service running")
    await asyncio.sleep(2)
    before = await _versions(kube, namespace)
    await asyncio.sleep(5)
    assert await _versions(kube, namespace) == before


async def _versions(kube: KubeClient, namespace: str) -> dict[str, str]:
    versions = {}
    for resource in (TPL, SVC, TC, MC, JOBS, PERSISTENT_VOLUME_CLAIMS, DEPLOYMENTS):
        for obj in await items(kube, resource, namespace):
            versions[f"{resource.kind}/{obj['metadata']['name']}"] = obj["metadata"][
                "resourceVersion"
            ]
    return versions


async def _aimd_events(kube: KubeClient, namespace: str) -> list[Object]:
    events = await items(kube, EVENTS, namespace)
    return [e for e in events if e.get("reportingController") == "aimd"]


async def _created_notes(kube: KubeClient, namespace: str, wanted: set[str]) -> set[str] | None:
    events = await _aimd_events(kube, namespace)
    notes = {e.get("note", "") for e in events if e.get("reason") == "Created"}
    return notes if notes == wanted else None


async def _event_reasons(kube: KubeClient, namespace: str, wanted: set[str]) -> set[str] | None:
    reasons = {e.get("reason", "") for e in await _aimd_events(kube, namespace)}
    return reasons if wanted <= reasons else None


async def test_a_cluster_template_owns_its_template_caches_in_every_namespace(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    cluster_name = f"shared-{namespace}"
    body = template(cluster_name, LLAMA)
    body["kind"] = kinds.CLUSTER_SERVICE_TEMPLATES.kind
    await kube.create(kinds.CLUSTER_SERVICE_TEMPLATES, body)
    try:
        await create(kube, SVC, service("svc", cluster_name), namespace)
        async with kubelet(kube, namespace):
            await eventually(
                lambda: services_running(kube, namespace, 1), what="the service running"
            )
        (tc,) = await items(kube, TC, namespace)
        owner = tc["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "AIMClusterServiceTemplate"
        assert tc["spec"]["templateScope"] == "Cluster"
    finally:
        await kube.delete(kinds.CLUSTER_SERVICE_TEMPLATES, cluster_name)
    await eventually(lambda: _gone(kube, TC, namespace), what="its TC collected (D4)")
    assert await all_with_status(kube, MC, namespace, "Available", 1), "Available MC kept"
