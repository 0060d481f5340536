"""aimd on a real node, installed from manifests/ as a user would: the controller's Deployment under
its own ServiceAccount electing a leader, then real download and probe Jobs (pods of the same
image, uid 65532, read-only root) writing hf:// and s3:// models onto `local` volumes through
fsGroup, and an AIMService's Deployment whose pods mount every model read-only and list it."""

from __future__ import annotations

from typing import Any

from aimd.api import kinds
from aimd.dev.localhub import LocalHub, model_files
from aimd.dev.node import RealNode
from aimd.kube.client import KubeClient
from tests.e2e.realnode.conftest import Installed
from tests.e2e.realnode.support import (
    SYSTEM,
    caches_by_uri,
    create_secret,
    digests,
    files_on,
    hf_source,
    pod_log,
    pods_of,
    s3_source,
    served_listing,
    service,
    status_of,
    template,
    upload_s3_model,
    volume_dir,
)
from tests.support import eventually

NON_ROOT = 65532


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


async def test_aimd_runs_as_its_two_replica_deployment_under_its_own_account_and_leads_once(
    aimd_installed: Installed, real_node: RealNode, node_kube: KubeClient
) -> None:
    pods = await pods_of(node_kube, SYSTEM, "app.kubernetes.io/name=aimd")
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        assert _ready(pod), pod["status"]
        spec = pod["spec"]
        assert spec["serviceAccountName"] == "aimd-controller"
        (container,) = spec["containers"]
        assert container["image"] == real_node.image
        sources = [source["configMapRef"]["name"] for source in container.get("envFrom") or ()]
        assert sources == ["aimd-config"], container.get("envFrom")
        # The overlay's image reaches the ConfigMap too (the base's replacement), so download
        # Jobs run the same build and it is the one download image allowed by default.
        config = real_node.api("GET", f"/api/v1/namespaces/{SYSTEM}/configmaps/aimd-config")
        assert config["data"]["AIMD_IMAGE"] == real_node.image
        # The projected service-account token is what the controller authenticates with.
        assert any("projected" in v for v in spec["volumes"]), spec["volumes"]
    assert aimd_installed.leader() in {p["metadata"]["name"] for p in pods}


async def test_hf_and_s3_models_download_onto_local_volumes_and_a_service_mounts_them(
    aimd_installed: Installed,
    real_node: RealNode,
    node_kube: KubeClient,
    node_hub: LocalHub,
    node_s3: str,
    node_namespace: str,
) -> None:
    namespace = node_namespace
    real_node.add_local_volumes(2)
    hf_files = node_hub.add_model("org/hf-model", size_mib=2).files
    s3_files = model_files(1)
    upload_s3_model(node_s3, "org/s3-model", s3_files)
    await create_secret(node_kube, namespace)
    # The hf:// source gives no size, so a probe Job learns it first (B3).
    tpl = template(
        "tpl",
        real_node.serve_image,
        hf_source("org/hf-model", node_hub.url),
        s3_source("org/s3-model", node_s3, size="8Mi"),
    )
    await node_kube.create(kinds.SERVICE_TEMPLATES, tpl, namespace)
    await node_kube.create(kinds.SERVICES, service("chat", "tpl"), namespace)

    async def running() -> bool:
        svc = await node_kube.get(kinds.SERVICES, "chat", namespace)
        return status_of(svc) == "Running"

    await eventually(running, timeout=300, what="the service Running on its cached models")

    caches = await caches_by_uri(node_kube, namespace)
    expected = {"hf://org/hf-model": hf_files, "s3://models/org/s3-model": s3_files}
    assert set(caches) == set(expected)
    for uri, files in expected.items():
        mc = caches[uri]
        assert status_of(mc) == "Available", mc["status"]
        directory = await volume_dir(
            real_node, node_kube, namespace, mc["status"]["persistentVolumeClaim"]
        )
        assert digests(files_on(directory)) == digests(files), uri
        # Written by the Job's uid into a volume kubelet gave the pod's fsGroup.
        assert {p.stat().st_uid for p in directory.iterdir()} == {NON_ROOT}, uri
        assert directory.stat().st_gid == NON_ROOT, uri

    # The probe ran as a pod too; its Job (and pod) are gone once the size is known.
    assert caches["hf://org/hf-model"]["status"]["probe"]["sizeBytes"] == sum(
        len(data) for data in hf_files.values()
    )
    job_pods = await pods_of(node_kube, namespace, kinds.LABEL_MODEL_CACHE)
    assert len(job_pods) >= 2, "the two downloads ran as pods"
    for pod in job_pods:
        assert pod["status"]["phase"] == "Succeeded", pod["status"]
        assert pod["spec"]["securityContext"]["runAsUser"] == NON_ROOT
        (container,) = pod["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["image"] == real_node.image

    (serving,) = await pods_of(node_kube, namespace, f"{kinds.LABEL_SERVICE}=chat")
    assert serving["status"]["phase"] == "Running"

    async def listed() -> dict[str, Any] | None:
        log = pod_log(real_node, namespace, serving["metadata"]["name"])
        return served_listing(log) if "}" in log else None

    listing = await eventually(listed, timeout=60, what="serve-cache's listing in the pod log")
    assert set(listing) == {"org/hf-model", "org/s3-model"}, listing
    assert set(listing["org/hf-model"]["files"]) == set(hf_files)
    assert set(listing["org/s3-model"]["files"]) == set(s3_files)
    assert not any(model["writable"] for model in listing.values()), "mounted read-only"
