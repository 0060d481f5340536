"""What only a real node shows: download pods that never start, and a deleted Job's pod.

Each case is reproduced on the node and its objects (pod status, PVC status, Events) are written
to tests/.artifacts/realnode-captures/; trimmed copies are the fixtures of the unit tests of
`aimd.caching.pods`. The tests named `test_..._reaches_status` check what a user sees on the
AIMModelCache (a typed reason, a message that says what to do, recovery once the cause is gone);
the model-cache reconciler reads them from the Job's pods through `aimd.caching.pods`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

from aimd.api import kinds
from aimd.caching.policy import ANNOTATION_ALLOWED_DOWNLOAD_IMAGES
from aimd.dev.localhub import LocalHub
from aimd.dev.node import RealNode
from aimd.kube.client import KubeClient
from aimd.kube.resources import JOBS, PERSISTENT_VOLUME_CLAIMS, PODS, SECRETS, Resource
from tests.conftest import ARTIFACTS
from tests.e2e.realnode.conftest import Installed
from tests.e2e.realnode.support import (
    hf_source,
    items,
    model_cache,
    ready_condition,
    status_of,
)
from tests.support import eventually

Object = dict[str, Any]
CAPTURES = ARTIFACTS / "realnode-captures"
MISSING_IMAGE = "localhost/aimd-missing:0"
# The kubelet and the scheduler write core/v1 Events (aimd itself writes events.k8s.io ones).
CORE_EVENTS = Resource("", "v1", "events", "Event", namespaced=True)


def _secret_env() -> list[Object]:
    return [
        {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
        }
    ]


async def _download_pod(kube: KubeClient, namespace: str, mc: str) -> Object | None:
    pods = await items(kube, PODS, namespace, label_selector=f"{kinds.LABEL_MODEL_CACHE}={mc}")
    return pods[0] if pods else None


async def _capture(
    node: RealNode, kube: KubeClient, namespace: str, case: str, pod: Object
) -> Object:
    """Writes the pod, its PVC (if any) and the namespace's Events to the captures directory."""
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"].get("volumes") or []
        if "persistentVolumeClaim" in v
    ]
    pvc = None
    if claims:
        pvc = await kube.get(PERSISTENT_VOLUME_CLAIMS, claims[0], namespace)
    events = [
        {k: e.get(k) for k in ("type", "reason", "message", "involvedObject", "source", "count")}
        for e in await items(kube, CORE_EVENTS, namespace)
    ]
    captured = {"pod": pod, "pvc": pvc, "events": events}
    CAPTURES.mkdir(parents=True, exist_ok=True)
    (CAPTURES / f"{case}.json").write_text(json.dumps(captured, indent=2, sort_keys=True))
    return captured


def _waiting(pod: Object | None, *reasons: str) -> Object | None:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in reasons:
            return pod
    return None


def _unschedulable(pod: Object | None) -> Object | None:
    conditions = ((pod or {}).get("status") or {}).get("conditions") or []
    scheduled: Object = next((c for c in conditions if c["type"] == "PodScheduled"), {})
    return pod if scheduled.get("status") == "False" and scheduled.get("message") else None


def _allow_image(node: RealNode, namespace: str, image: str) -> None:
    """The namespace's admin allows ``image`` as a download image (docs/security.md)."""
    annotations = {ANNOTATION_ALLOWED_DOWNLOAD_IMAGES: image}
    node.api("PATCH", f"/api/v1/namespaces/{namespace}", {"metadata": {"annotations": annotations}})


async def _start(kube: KubeClient, namespace: str, hub: LocalHub, repo: str, **spec: Any) -> None:
    hub.add_model(repo, size_mib=1)
    source = hf_source(repo, hub.url, size="4Mi")
    source["env"] = [*source["env"], *spec.pop("env", [])]
    await kube.create(kinds.MODEL_CACHES, model_cache("mc", source, **spec), namespace)


async def _pod_state(
    kube: KubeClient, namespace: str, check: Any, what: str, timeout: float = 120
) -> Object:
    async def probe() -> Object | None:
        result: Object | None = check(await _download_pod(kube, namespace, "mc"))
        return result

    found: Object = await eventually(probe, timeout=timeout, what=what)
    return found


async def _mc_reason(kube: KubeClient, namespace: str, reason: str, timeout: float = 45) -> Object:
    """The MC Failed or Pending with `reason` (E6: within about 30 s of the pod showing it)."""

    async def probe() -> Object | None:
        mc = await kube.get(kinds.MODEL_CACHES, "mc", namespace)
        ready = ready_condition(mc)
        ok = status_of(mc) in ("Failed", "Pending") and ready.get("reason") == reason
        return mc if ok else None

    found: Object = await eventually(probe, timeout=timeout, what=f"the MC with reason {reason}")
    return found


async def _mc_available(kube: KubeClient, namespace: str) -> None:
    async def probe() -> bool:
        return status_of(await kube.get(kinds.MODEL_CACHES, "mc", namespace)) == "Available"

    await eventually(probe, timeout=240, what="the MC Available once the cause is gone")


def _secret(namespace: str, key: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hf-token", "namespace": namespace},
        "data": {key: base64.b64encode(b"unused-by-the-local-hub").decode()},
    }


# -- a Secret or key that is not there -------------------------------------------------------------


async def test_a_missing_secret_leaves_the_download_pod_in_create_container_config_error(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    real_node.add_local_volumes(1)
    await _start(node_kube, node_namespace, node_hub, "org/secret-missing", env=_secret_env())
    pod = await _pod_state(
        node_kube,
        node_namespace,
        lambda p: _waiting(p, "CreateContainerConfigError"),
        "CreateContainerConfigError",
    )
    await _capture(real_node, node_kube, node_namespace, "secret-missing", pod)
    (status,) = pod["status"]["containerStatuses"]
    assert status["state"]["waiting"]["message"] == 'secret "hf-token" not found'
    assert pod["status"]["phase"] == "Pending", "the Job waits; nothing ever fails it"

    await node_kube.create(SECRETS, _secret(node_namespace, "other"), node_namespace)
    pod = await _pod_state(
        node_kube,
        node_namespace,
        lambda p: p if "couldn't find key" in json.dumps((p or {}).get("status", {})) else None,
        "the missing key reported",
    )
    await _capture(real_node, node_kube, node_namespace, "secret-key-missing", pod)
    (status,) = pod["status"]["containerStatuses"]
    assert status["state"]["waiting"]["message"] == (
        f"couldn't find key token in Secret {node_namespace}/hf-token"
    )


async def test_a_missing_secret_reaches_status_and_recovers_when_it_is_created(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    real_node.add_local_volumes(1)
    await _start(node_kube, node_namespace, node_hub, "org/secret-later", env=_secret_env())
    mc = await _mc_reason(node_kube, node_namespace, "SecretNotFound")
    message = ready_condition(mc)["message"]
    assert "hf-token" in message
    assert "token" in message
    await node_kube.create(SECRETS, _secret(node_namespace, "token"), node_namespace)
    await _mc_available(node_kube, node_namespace)


# -- a downloadImage nobody can pull -------------------------------------------------------------


async def test_an_image_that_cannot_be_pulled_leaves_the_pod_waiting_in_err_image_pull(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    real_node.add_local_volumes(1)
    _allow_image(real_node, node_namespace, MISSING_IMAGE)
    await _start(
        node_kube, node_namespace, node_hub, "org/image-missing", downloadImage=MISSING_IMAGE
    )
    pod = await _pod_state(
        node_kube,
        node_namespace,
        lambda p: _waiting(p, "ErrImagePull", "ImagePullBackOff"),
        "ErrImagePull",
    )
    await _capture(real_node, node_kube, node_namespace, "image-pull", pod)
    # aimd fails the attempt at the first of these (a Job's pod template cannot change), so the
    # kubelet's back-off that would follow is seldom seen: the stuck Job is removed.
    (status,) = pod["status"]["containerStatuses"]
    assert MISSING_IMAGE in status["state"]["waiting"]["message"]
    assert pod["status"]["phase"] == "Pending"


async def test_an_image_that_cannot_be_pulled_reaches_status_and_recovers_when_fixed(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    real_node.add_local_volumes(1)
    _allow_image(real_node, node_namespace, MISSING_IMAGE)
    await _start(
        node_kube, node_namespace, node_hub, "org/image-later", downloadImage=MISSING_IMAGE
    )
    mc = await _mc_reason(node_kube, node_namespace, "ImagePullFailed")
    assert MISSING_IMAGE in ready_condition(mc)["message"]
    await node_kube.patch(
        kinds.MODEL_CACHES, "mc", {"spec": {"downloadImage": real_node.image}}, node_namespace
    )
    await _mc_available(node_kube, node_namespace)


# -- a PVC nothing can satisfy -----------------------------------------------------------------


async def test_a_storage_class_that_does_not_exist_leaves_the_pvc_and_pod_pending(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    await _start(
        node_kube, node_namespace, node_hub, "org/no-class", storageClassName="no-such-class"
    )
    pod = await _pod_state(node_kube, node_namespace, _unschedulable, "the pod unschedulable")

    async def pvc_event() -> Object | None:
        captured = await _capture(real_node, node_kube, node_namespace, "no-storage-class", pod)
        kinds_seen = {e["involvedObject"]["kind"] for e in captured["events"]}
        return captured if "PersistentVolumeClaim" in kinds_seen else None

    captured = await eventually(pvc_event, timeout=60, what="an Event on the PVC")
    assert captured["pvc"]["status"]["phase"] == "Pending"
    assert "no-such-class" in json.dumps(captured["events"])


async def test_a_storage_class_that_does_not_exist_reaches_status_and_recovers_once_made(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    storage_class = f"made-later-{node_namespace[-6:]}"
    await _start(
        node_kube, node_namespace, node_hub, "org/class-later", storageClassName=storage_class
    )
    mc = await _mc_reason(node_kube, node_namespace, "StorageClassNotFound")
    assert storage_class in ready_condition(mc)["message"]
    real_node.add_storage_class(storage_class, default=False)
    real_node.add_local_volumes(1, storage_class=storage_class)
    await _mc_available(node_kube, node_namespace)


async def test_an_access_mode_no_volume_offers_leaves_the_pod_unschedulable(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    storage_class = f"rwo-only-{node_namespace[-6:]}"
    real_node.add_storage_class(storage_class, default=False)
    real_node.add_local_volumes(1, storage_class=storage_class, access_modes=("ReadWriteOnce",))
    await _start(
        node_kube, node_namespace, node_hub, "org/rwo-only", storageClassName=storage_class
    )
    pod = await _pod_state(node_kube, node_namespace, _unschedulable, "the pod unschedulable")
    captured = await _capture(real_node, node_kube, node_namespace, "access-mode", pod)
    assert captured["pvc"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert captured["pvc"]["status"]["phase"] == "Pending"
    scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert scheduled["reason"] == "Unschedulable"
    assert "persistent volumes to bind" in scheduled["message"]


async def test_an_access_mode_no_volume_offers_reaches_status_and_recovers_with_one(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    storage_class = f"rwo-later-{node_namespace[-6:]}"
    real_node.add_storage_class(storage_class, default=False)
    real_node.add_local_volumes(1, storage_class=storage_class, access_modes=("ReadWriteOnce",))
    await _start(
        node_kube, node_namespace, node_hub, "org/rwo-later", storageClassName=storage_class
    )
    mc = await _mc_reason(node_kube, node_namespace, "VolumeUnschedulable")
    assert "ReadWriteMany" in ready_condition(mc)["message"]
    real_node.add_local_volumes(1, storage_class=storage_class)
    await _mc_available(node_kube, node_namespace)


# -- a deleted Job's pod -----------------------------------------------------------------------


async def _watch_until_deleted(
    kube: KubeClient, namespace: str, name: str, resource_version: str
) -> list[Object]:
    """Every state of one pod from `resource_version` on, up to and with its deletion."""
    seen: list[Object] = []
    params = {
        "watch": "1",
        "fieldSelector": f"metadata.name={name}",
        "resourceVersion": resource_version,
    }
    async with kube.stream(PODS.path(namespace), params=params, read_timeout=180) as response:
        async for line in response.content:
            event = json.loads(line)
            seen.append(event["object"])
            if event["type"] == "DELETED":
                break
    return seen


def _exit_codes(states: list[Object]) -> list[int]:
    codes = []
    for pod in states:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if terminated:
                codes.append(int(terminated["exitCode"]))
    return codes


async def test_a_deleted_jobs_pod_stops_on_sigterm_and_leaves_its_download_resumable(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    """The container's process is PID 1, for which SIGTERM has no default action: only a handler
    stops it before the kubelet kills it at the end of the grace period (30 s, exit code 137)."""
    namespace = node_namespace
    real_node.add_local_volumes(1)
    repo = node_hub.add_model("org/interrupted", size_mib=4)
    # Slow enough that the first attempt outlives the 30 s grace period by far.
    node_hub.piece_delay = 2.0
    try:
        source = hf_source("org/interrupted", node_hub.url, size="8Mi")
        await node_kube.create(kinds.MODEL_CACHES, model_cache("mc", source), namespace)
        before = node_hub.served

        async def midway() -> Object | None:
            pod = await _download_pod(node_kube, namespace, "mc")
            running = ((pod or {}).get("status") or {}).get("phase") == "Running"
            return pod if running and node_hub.served - before > 256 * 1024 else None

        pod = await eventually(midway, timeout=180, what="the download running, bytes served")
        watch = asyncio.create_task(
            _watch_until_deleted(
                node_kube, namespace, pod["metadata"]["name"], pod["metadata"]["resourceVersion"]
            )
        )
        (job,) = await items(node_kube, JOBS, namespace)
        deleted = time.monotonic()
        await node_kube.delete(
            JOBS, job["metadata"]["name"], namespace, propagation_policy="Background"
        )
        states = await asyncio.wait_for(watch, timeout=180)
        took = time.monotonic() - deleted
        served_first = node_hub.served - before
        await _capture(real_node, node_kube, namespace, "deleted-job-pod", states[-1])
        print(
            f"\na deleted Job's pod was gone after {took:.1f}s, exit codes {_exit_codes(states)}",
            flush=True,
        )
    finally:
        node_hub.piece_delay = 0.0
    # aimd starts the download again (the same Job name: the attempt did not fail).
    await _mc_available(node_kube, namespace)
    fetched_again = node_hub.served - before - served_first
    assert fetched_again < repo.size, "the second attempt resumed the partial files"
    codes = _exit_codes(states)
    assert codes, "the kubelet reported how the container ended"
    assert 137 not in codes, "stopped by SIGTERM, not killed when the grace period ended"
