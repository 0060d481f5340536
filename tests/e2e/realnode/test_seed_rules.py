"""The seed's rules with a real kubelet, Job controller, PV binder and PVC protection: two services
share one download; a deleted service leaves its Available cache for the next one, which starts
with no new Job; a model cache deleted while a pod mounts its PVC keeps the PVC until that pod
ends; and killing the leading replica hands over to the standby, which converges what was left."""

from __future__ import annotations

import contextlib
from typing import Any

from aimd.api import kinds
from aimd.dev.localhub import LocalHub
from aimd.dev.node import RealNode
from aimd.kube.client import KubeClient
from aimd.kube.errors import NotFound
from aimd.kube.resources import DEPLOYMENTS, JOBS, PERSISTENT_VOLUME_CLAIMS, PODS
from tests.e2e.realnode.conftest import Installed
from tests.e2e.realnode.support import (
    SYSTEM,
    caches_by_uri,
    hf_source,
    items,
    job_names,
    model_cache,
    service,
    status_of,
    template,
)
from tests.support import eventually

Object = dict[str, Any]


async def _running(kube: KubeClient, namespace: str, *names: str) -> bool:
    for name in names:
        if status_of(await kube.get(kinds.SERVICES, name, namespace)) != "Running":
            return False
    return True


async def _claims_mounted(kube: KubeClient, namespace: str, name: str) -> set[str]:
    deployment = await kube.get(DEPLOYMENTS, name, namespace)
    volumes = deployment["spec"]["template"]["spec"].get("volumes") or []
    return {v["persistentVolumeClaim"]["claimName"] for v in volumes}


async def test_two_services_on_one_template_share_one_download(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    namespace = node_namespace
    real_node.add_local_volumes(1)
    node_hub.add_model("org/shared", size_mib=1)
    source = hf_source("org/shared", node_hub.url, size="4Mi")
    await node_kube.create(
        kinds.SERVICE_TEMPLATES, template("tpl", real_node.serve_image, source), namespace
    )
    for name in ("a", "b"):
        await node_kube.create(kinds.SERVICES, service(name, "tpl"), namespace)

    await eventually(
        lambda: _running(node_kube, namespace, "a", "b"), timeout=300, what="a and b Running"
    )
    assert len(await items(node_kube, kinds.TEMPLATE_CACHES, namespace)) == 1
    assert len(await caches_by_uri(node_kube, namespace)) == 1
    assert len(await job_names(node_kube, namespace)) == 1, "one download for both"
    claims = await _claims_mounted(node_kube, namespace, "a")
    assert claims == await _claims_mounted(node_kube, namespace, "b")
    assert len(claims) == 1


async def test_a_deleted_service_keeps_its_available_cache_and_the_next_starts_without_a_job(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    namespace = node_namespace
    real_node.add_local_volumes(1)
    node_hub.add_model("org/kept", size_mib=1)
    source = hf_source("org/kept", node_hub.url, size="4Mi")
    await node_kube.create(
        kinds.SERVICE_TEMPLATES, template("tpl", real_node.serve_image, source), namespace
    )
    await node_kube.create(kinds.SERVICES, service("first", "tpl"), namespace)
    await eventually(
        lambda: _running(node_kube, namespace, "first"), timeout=300, what="first Running"
    )
    (mc,) = (await caches_by_uri(node_kube, namespace)).values()
    jobs = await job_names(node_kube, namespace)

    await node_kube.delete(kinds.SERVICES, "first", namespace)

    async def first_gone() -> bool:
        try:
            await node_kube.get(kinds.SERVICES, "first", namespace)
        except NotFound:
            return True
        return False

    await eventually(first_gone, timeout=120, what="first deleted")
    (tc,) = await items(node_kube, kinds.TEMPLATE_CACHES, namespace)
    assert status_of(tc) == "Available", "the Available template cache is kept (D1)"

    await node_kube.create(kinds.SERVICES, service("second", "tpl"), namespace)
    await eventually(
        lambda: _running(node_kube, namespace, "second"), timeout=300, what="second Running"
    )
    (again,) = (await caches_by_uri(node_kube, namespace)).values()
    assert again["metadata"]["uid"] == mc["metadata"]["uid"]
    assert await job_names(node_kube, namespace) == jobs, "no new download Job (B5)"


def _reader_pod(image: str, claim: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "reader"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "reader",
                    "image": image,
                    "volumeMounts": [
                        {
                            "name": "model",
                            "mountPath": "/workspace/model-cache/org/pinned",
                            "readOnly": True,
                        }
                    ],
                }
            ],
            "volumes": [
                {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
            ],
        },
    }


async def test_a_model_cache_deleted_under_a_running_pod_keeps_its_volume_until_the_pod_ends(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    namespace = node_namespace
    real_node.add_local_volumes(1)
    node_hub.add_model("org/pinned", size_mib=1)
    source = hf_source("org/pinned", node_hub.url, size="4Mi")
    await node_kube.create(kinds.MODEL_CACHES, model_cache("pinned", source), namespace)

    async def available() -> Object | None:
        mc = await node_kube.get(kinds.MODEL_CACHES, "pinned", namespace)
        return mc if status_of(mc) == "Available" else None

    mc = await eventually(available, timeout=300, what="the cache Available")
    claim = mc["status"]["persistentVolumeClaim"]
    await node_kube.create(PODS, _reader_pod(real_node.serve_image, claim), namespace)

    async def reading() -> bool:
        pod = await node_kube.get(PODS, "reader", namespace)
        return (pod.get("status") or {}).get("phase") == "Running"

    await eventually(reading, timeout=120, what="the reader pod Running on the volume")

    await node_kube.delete(kinds.MODEL_CACHES, "pinned", namespace)

    async def volume_held() -> Object | None:
        with contextlib.suppress(NotFound):
            await node_kube.get(kinds.MODEL_CACHES, "pinned", namespace)
            return None
        pvc = await node_kube.get(PERSISTENT_VOLUME_CLAIMS, claim, namespace)
        return pvc if pvc["metadata"].get("deletionTimestamp") else None

    # The garbage collector deletes the PVC with its owner; PVC protection holds it.
    pvc = await eventually(volume_held, timeout=120, what="the MC gone, its PVC Terminating")
    assert "kubernetes.io/pvc-protection" in pvc["metadata"]["finalizers"]
    pod = await node_kube.get(PODS, "reader", namespace)
    assert pod["status"]["phase"] == "Running", "the pod keeps its volume"

    await node_kube.delete(PODS, "reader", namespace)

    async def volume_gone() -> bool:
        try:
            await node_kube.get(PERSISTENT_VOLUME_CLAIMS, claim, namespace)
        except NotFound:
            return True
        return False

    await eventually(volume_gone, timeout=120, what="the PVC gone once the pod ended")


async def test_killing_the_leader_hands_over_to_the_standby_which_converges_what_was_left(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_namespace: str,
) -> None:
    namespace = node_namespace
    real_node.add_local_volumes(1)
    node_hub.add_model("org/handover", size_mib=2)
    source = hf_source("org/handover", node_hub.url, size="4Mi")
    leader = aimd_installed.leader()
    assert leader
    node_hub.piece_delay = 0.2  # the download is still running when the leader goes
    try:
        await node_kube.create(
            kinds.SERVICE_TEMPLATES, template("tpl", real_node.serve_image, source), namespace
        )
        await node_kube.create(kinds.SERVICES, service("chat", "tpl"), namespace)

        async def downloading() -> bool:
            return bool(await job_names(node_kube, namespace))

        await eventually(downloading, timeout=120, what="the download Job started")
        await node_kube.delete(PODS, leader, SYSTEM)

        async def new_leader() -> str | None:
            holder = aimd_installed.leader()
            return holder if holder and holder != leader else None

        successor = await eventually(new_leader, timeout=120, what="another replica leading")
        await eventually(
            lambda: _running(node_kube, namespace, "chat"), timeout=300, what="chat Running"
        )
    finally:
        node_hub.piece_delay = 0.0
    assert successor != leader
    (mc,) = (await caches_by_uri(node_kube, namespace)).values()
    assert status_of(mc) == "Available"
    assert len(await items(node_kube, JOBS, namespace)) == 1, "the Job was adopted, not repeated"

    async def two_replicas_again() -> bool:
        deployment = await node_kube.get(DEPLOYMENTS, "aimd-controller", SYSTEM)
        return bool((deployment.get("status") or {}).get("availableReplicas") == 2)

    await eventually(two_replicas_again, timeout=180, what="aimd-controller 2/2 again")
