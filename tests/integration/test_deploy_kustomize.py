"""The whole kustomization applied to a real API server with server-side apply, then its RBAC
checked: the controller's ServiceAccount may do what aimd does, and nothing more.

The Prometheus Operator's CRDs are not part of the test control plane, so minimal ones (any
spec accepted) are installed for the ServiceMonitor and the PrometheusRule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient
from aimd.kube.errors import Forbidden, NotFound
from aimd.kube.resources import (
    CUSTOM_RESOURCE_DEFINITIONS,
    DEPLOYMENTS,
    NAMESPACES,
    PODS,
    ROLE_BINDINGS,
    ROLES,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    SUBJECT_ACCESS_REVIEWS,
    Resource,
)
from tests.unit.test_deploy_kustomize import render

RBAC = "rbac.authorization.k8s.io"
AIM = "aim.eai.amd.com"
CLUSTER_ROLES = Resource(RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False)
CLUSTER_ROLE_BINDINGS = Resource(
    RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
)
SERVICE_MONITORS = Resource(
    "monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", True
)
POD_DISRUPTION_BUDGETS = Resource(
    "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", namespaced=True
)
PROMETHEUS_RULES = Resource(
    "monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule", True
)
# In the order they can be applied: a namespace before what lives in it, roles before bindings.
APPLY_ORDER = [
    NAMESPACES,
    CUSTOM_RESOURCE_DEFINITIONS,
    SERVICE_ACCOUNTS,
    CLUSTER_ROLES,
    CLUSTER_ROLE_BINDINGS,
    ROLES,
    ROLE_BINDINGS,
    SERVICES,
    DEPLOYMENTS,
    POD_DISRUPTION_BUDGETS,
    SERVICE_MONITORS,
    PROMETHEUS_RULES,
]
RESOURCES = {(resource.api_version, resource.kind): resource for resource in APPLY_ORDER}
# The test cluster is shared: aimd's namespace and cluster role get names of their own here.
SYSTEM = f"aimd-system-{secrets.token_hex(3)}"
MANAGER = f"aimd-manager-{secrets.token_hex(3)}"
ACCOUNT = "aimd-controller"
FIELD_MANAGER = "aimd-deploy-test"


def monitoring_crd(plural: str, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"plural": plural, "kind": kind},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def resource_of(obj: dict[str, Any]) -> Resource:
    return RESOURCES[(obj["apiVersion"], obj["kind"])]


async def apply(kube: KubeClient, obj: dict[str, Any]) -> dict[str, Any]:
    resource = resource_of(obj)
    return await kube.patch(
        resource,
        obj["metadata"]["name"],
        obj,
        obj["metadata"].get("namespace"),
        patch_type="apply",
        field_manager=FIELD_MANAGER,
        force=True,
    )


@pytest.fixture(scope="module")
async def installed(
    kube: KubeClient, control_plane: ControlPlane
) -> AsyncIterator[list[dict[str, Any]]]:
    """Everything in manifests/, applied in order; the cluster-wide parts removed afterwards."""
    control_plane.install_crd(monitoring_crd("servicemonitors", "ServiceMonitor"))
    control_plane.install_crd(monitoring_crd("prometheusrules", "PrometheusRule"))
    renamed = (
        json.dumps(render())
        .replace('"aimd-system"', f'"{SYSTEM}"')
        .replace('"aimd-manager"', f'"{MANAGER}"')
    )
    objects = sorted(json.loads(renamed), key=lambda obj: APPLY_ORDER.index(resource_of(obj)))
    for obj in objects:
        await apply(kube, obj)
    yield objects
    for resource, name in (
        (CLUSTER_ROLE_BINDINGS, MANAGER),
        (CLUSTER_ROLES, MANAGER),
        (NAMESPACES, SYSTEM),
    ):
        with contextlib.suppress(NotFound):
            await kube.delete(resource, name)


@pytest.fixture(scope="module")
async def as_controller(
    kube: KubeClient,
    control_plane: ControlPlane,
    installed: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[KubeClient]:
    """A client holding a real token of the controller's ServiceAccount."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    issued = await kube.request(
        "POST", SERVICE_ACCOUNTS.path(SYSTEM, ACCOUNT, "token"), body=request
    )
    admin = json.loads(control_plane.kubeconfig.read_text())
    admin["users"][0]["user"] = {"token": issued["status"]["token"]}
    path: Path = tmp_path_factory.mktemp("controller") / "kubeconfig"
    await asyncio.to_thread(path.write_text, json.dumps(admin))
    client = await KubeClient.from_kubeconfig(str(path))
    try:
        yield client
    finally:
        await client.close()


async def test_every_object_is_there_and_a_second_apply_changes_nothing(
    kube: KubeClient, installed: list[dict[str, Any]]
) -> None:
    for obj in installed:
        resource = resource_of(obj)
        before = await kube.get(resource, obj["metadata"]["name"], obj["metadata"].get("namespace"))
        after = await apply(kube, obj)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
            f"re-applying {obj['kind']} {obj['metadata']['name']} changed it"
        )


async def test_the_manager_pod_passes_the_restricted_pod_security_standard(
    kube: KubeClient, installed: list[dict[str, Any]]
) -> None:
    """aimd-system enforces `restricted`; a dry-run Pod from the Deployment's template is
    admitted, and a privileged one is refused (so the first check meant something)."""
    (deployment,) = [obj for obj in installed if obj["kind"] == "Deployment"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"manager-{secrets.token_hex(3)}"},
        "spec": deployment["spec"]["template"]["spec"],
    }
    dry_run = {"dryRun": "All"}
    await kube.request("POST", PODS.path(SYSTEM), params=dry_run, body=pod)
    pod["spec"] = {**pod["spec"], "securityContext": {"runAsUser": 0}}
    with pytest.raises(Forbidden) as refused:
        await kube.request("POST", PODS.path(SYSTEM), params=dry_run, body=pod)
    assert "restricted" in refused.value.message


# (verb, group, resource, where): "app" is an application namespace, "all" every namespace at
# once (what an informer lists and watches), "own" aimd-system, None a cluster-scoped resource.
Case = tuple[str, str, str, str | None]
AIM_KINDS = ("aimservicetemplates", "aimservices", "aimtemplatecaches", "aimmodelcaches")
CHILDREN = (
    ("", "persistentvolumeclaims"),
    ("", "services"),
    ("", "serviceaccounts"),
    ("batch", "jobs"),
    ("apps", "deployments"),
    (RBAC, "roles"),
    (RBAC, "rolebindings"),
)


def cases(
    verbs: str, group: str, resources: tuple[str, ...] | str, *wheres: str | None
) -> list[Case]:
    names = (resources,) if isinstance(resources, str) else resources
    return [
        (verb, group, name, where) for verb in verbs.split() for name in names for where in wheres
    ]


ALLOWED = [
    *cases("get list watch", AIM, AIM_KINDS, "app", "all"),
    *cases("get list watch", AIM, "aimclusterservicetemplates", None),
    *cases("patch", AIM, ("aimservices", "aimtemplatecaches", "aimmodelcaches"), "app"),
    *cases("create delete", AIM, ("aimtemplatecaches", "aimmodelcaches"), "app"),
    *cases("patch", AIM, tuple(f"{plural}/status" for plural in AIM_KINDS), "app"),
    *cases("patch", AIM, "aimclusterservicetemplates/status", None),
    *cases("get", AIM, "aimmodelcaches/status", "app"),
    *cases("update", AIM, tuple(f"{plural}/finalizers" for plural in AIM_KINDS), "app"),
    *[case for group, plural in CHILDREN
      for case in cases("get list watch create patch delete", group, plural, "app")],
    *[case for group, plural in CHILDREN for case in cases("list watch", group, plural, "all")],
    *cases("create patch", "", "events", "app"),
    *cases("create patch", "events.k8s.io", "events", "app"),
    *cases("get list watch", "", "namespaces", None),
    *cases("get list watch", "storage.k8s.io", "storageclasses", None),
    *cases("get create update", "coordination.k8s.io", "leases", "own"),
]  # fmt: skip
DENIED = [
    *cases("get list watch", "", "secrets", "app", "all", "own"),
    *cases("create", "", "secrets", "app"),
    *cases("create delete patch", "", "namespaces", None),
    *cases("get list create", "", "pods", "app"),
    *cases("create", "", ("pods/exec", "serviceaccounts/token"), "app"),
    *cases("get create", "", "configmaps", "app"),
    *cases("list", "", "nodes", None),
    *cases("create patch delete", AIM, "aimservicetemplates", "app"),
    *cases("create patch delete", AIM, "aimclusterservicetemplates", None),
    *cases("create delete", AIM, "aimservices", "app"),
    *cases("update deletecollection", AIM, "aimmodelcaches", "app"),
    *cases("deletecollection", "", "persistentvolumeclaims", "app"),
    *cases("update", "apps", "deployments", "app"),
    *cases("bind escalate", RBAC, "roles", "app"),
    *cases("create", RBAC, ("clusterroles", "clusterrolebindings"), None),
    *cases("get", "coordination.k8s.io", "leases", "app"),
    *cases("delete", "coordination.k8s.io", "leases", "own"),
    *cases("create", "apiextensions.k8s.io", "customresourcedefinitions", None),
    *cases("list", "networking.k8s.io", "ingresses", "app"),
]


async def can(
    kube: KubeClient, namespace: str, verb: str, group: str, resource: str, where: str | None
) -> bool:
    plural, _, subresource = resource.partition("/")
    attributes = {"verb": verb, "group": group, "resource": plural, "subresource": subresource}
    if where is not None:
        attributes["namespace"] = {"app": namespace, "all": "", "own": SYSTEM}[where]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{SYSTEM}:{ACCOUNT}",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{SYSTEM}",
                       "system:authenticated"],
            "resourceAttributes": attributes,
        },
    }  # fmt: skip
    answer = await kube.create(SUBJECT_ACCESS_REVIEWS, review)
    return bool(answer["status"].get("allowed"))


def describe(case: Case) -> str:
    verb, group, resource, where = case
    return f"{verb} {resource}.{group or 'core'} in {where or 'cluster'}"


async def test_the_controller_may_do_what_aimd_does(
    kube: KubeClient, installed: list[dict[str, Any]], namespace: str
) -> None:
    refused = [describe(case) for case in ALLOWED if not await can(kube, namespace, *case)]
    assert not refused, f"the controller may not: {refused}"


async def test_the_controller_may_do_nothing_more(
    kube: KubeClient, installed: list[dict[str, Any]], namespace: str
) -> None:
    granted = [describe(case) for case in DENIED if await can(kube, namespace, *case)]
    assert not granted, f"the controller may, but should not: {granted}"


async def test_the_controller_can_give_a_download_job_its_status_role(
    as_controller: KubeClient, namespace: str
) -> None:
    """With its own token: the per-cache Role (get and patch on one model cache's status) and
    its binding are created without bind or escalate, because aimd holds those rights itself;
    a Role granting more than aimd holds is refused."""
    cache = f"mc-{secrets.token_hex(3)}"
    await as_controller.create(
        SERVICE_ACCOUNTS,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": cache}},
        namespace,
    )
    role = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "Role",
        "metadata": {"name": cache},
        "rules": [
            {
                "apiGroups": [AIM],
                "resources": ["aimmodelcaches/status"],
                "resourceNames": [cache],
                "verbs": ["get", "patch"],
            }
        ],
    }
    await as_controller.create(ROLES, role, namespace)
    binding = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": cache},
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": cache},
        "subjects": [{"kind": "ServiceAccount", "name": cache, "namespace": namespace}],
    }
    await as_controller.create(ROLE_BINDINGS, binding, namespace)
    greedy = {
        **role,
        "metadata": {"name": f"{cache}-secrets"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }
    with pytest.raises(Forbidden):
        await as_controller.create(ROLES, greedy, namespace)


async def test_the_controller_reads_no_secret(
    kube: KubeClient, as_controller: KubeClient, namespace: str
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hf-token"},
        "stringData": {"token": "hf_secret"},
    }
    await kube.create(SECRETS, secret, namespace)
    with pytest.raises(Forbidden):
        await as_controller.get(SECRETS, "hf-token", namespace)
    with pytest.raises(Forbidden):
        await as_controller.list(SECRETS)
    assert await as_controller.get(SERVICES, "aimd-metrics", SYSTEM)
