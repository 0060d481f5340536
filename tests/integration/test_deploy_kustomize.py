"""The whole kustomization applied to a real API server with server-side apply, then its RBAC
checked with SubjectAccessReviews: the controller's ServiceAccount may do what aimd does, and
nothing more, installed for the whole cluster and confined to named namespaces.

The Prometheus Operator's CRDs are not part of the test control plane, so minimal ones (any
spec accepted) are installed for the ServiceMonitor and the PrometheusRule. The test cluster is
shared: every cluster-scoped object and aimd's namespace get names of their own here. The
admission policy and its binding are applied as a server-side dry run only: a binding judging
every namespace would judge every other test's caches, and removing a ConfigMap-parameterised
policy again can break parameters for every other one (kubernetes/kubernetes#130887); the policy
itself is tested in test_security_admission.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient
from aimd.kube.errors import Forbidden, NotFound
from aimd.kube.resources import (
    CONFIG_MAPS,
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
from tests.unit.test_deploy_kustomize import CLUSTER_SCOPED, render

RBAC = "rbac.authorization.k8s.io"
AIM = "aim.eai.amd.com"
ADMISSION = "admissionregistration.k8s.io"
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
NETWORK_POLICIES = Resource(
    "networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", namespaced=True
)
ADMISSION_POLICIES = Resource(
    ADMISSION, "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy", False
)
ADMISSION_POLICY_BINDINGS = Resource(
    ADMISSION, "v1", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", False
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
    CONFIG_MAPS,
    SERVICES,
    DEPLOYMENTS,
    POD_DISRUPTION_BUDGETS,
    SERVICE_MONITORS,
    PROMETHEUS_RULES,
    NETWORK_POLICIES,
    ADMISSION_POLICIES,
    ADMISSION_POLICY_BINDINGS,
]
RESOURCES = {(resource.api_version, resource.kind): resource for resource in APPLY_ORDER}
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


ADMISSION_KINDS = {ADMISSION_POLICIES.kind, ADMISSION_POLICY_BINDINGS.kind}


async def dry_run_apply(kube: KubeClient, obj: dict[str, Any]) -> None:
    params = {"dryRun": "All", "fieldManager": FIELD_MANAGER, "fieldValidation": "Strict",
              "force": "true"}  # fmt: skip
    await kube.request(
        "PATCH",
        resource_of(obj).path(obj["metadata"].get("namespace"), obj["metadata"]["name"]),
        params=params,
        body=obj,
        content_type="application/apply-patch+yaml",
    )


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


@dataclass
class Install:
    """One install of manifests/ under names of its own: ``system`` is its aimd-system."""

    objects: list[dict[str, Any]]
    system: str
    teams: list[str]

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.system}:{ACCOUNT}"


@contextlib.asynccontextmanager
async def install(
    kube: KubeClient, components: list[str], teams: tuple[str, ...] = ()
) -> AsyncIterator[Install]:
    """manifests/ with ``components``, every cluster-scoped name suffixed for this run and the
    namespaced component's team-a, team-b replaced by ``teams``; removed afterwards."""
    run = secrets.token_hex(3)
    objects = render(components=components)
    text = json.dumps(objects).replace('"aimd-system"', f'"aimd-system-{run}"')
    for name in sorted({o["metadata"]["name"] for o in objects if o["kind"] in CLUSTER_SCOPED}):
        if name != "aimd-system" and "." not in name:  # CRDs keep their names
            text = text.replace(f'"{name}"', f'"{name}-{run}"')
    for placeholder, team in zip(("team-a", "team-b"), teams, strict=False):
        text = text.replace(f'"{placeholder}"', f'"{team}"')
    renamed = sorted(json.loads(text), key=lambda obj: APPLY_ORDER.index(resource_of(obj)))
    for obj in renamed:
        if obj["kind"] in ADMISSION_KINDS:
            await dry_run_apply(kube, obj)
    renamed = [obj for obj in renamed if obj["kind"] not in ADMISSION_KINDS]
    for obj in renamed:
        await apply(kube, obj)
    try:
        yield Install(renamed, f"aimd-system-{run}", list(teams))
    finally:
        for obj in reversed(renamed):
            if obj["kind"] in CLUSTER_SCOPED and obj["kind"] != "CustomResourceDefinition":
                with contextlib.suppress(NotFound):
                    await kube.delete(resource_of(obj), obj["metadata"]["name"])


@pytest.fixture(scope="module")
async def installed(kube: KubeClient, control_plane: ControlPlane) -> AsyncIterator[Install]:
    """Everything in manifests/ and its cluster-wide components, applied in order."""
    control_plane.install_crd(monitoring_crd("servicemonitors", "ServiceMonitor"))
    control_plane.install_crd(monitoring_crd("prometheusrules", "PrometheusRule"))
    async with install(kube, ["prometheus", "network-policy"]) as done:
        yield done


@pytest.fixture(scope="module")
async def namespaced(kube: KubeClient) -> AsyncIterator[Install]:
    """manifests/ with the namespaced component, for two namespaces made here."""
    teams = [f"team-{secrets.token_hex(3)}" for _ in range(2)]
    for team in teams:
        await kube.create(NAMESPACES, {"metadata": {"name": team}})
    try:
        async with install(kube, ["namespaced"], tuple(teams)) as done:
            yield done
    finally:
        for team in teams:
            await kube.delete(NAMESPACES, team)


@pytest.fixture(scope="module")
async def as_controller(
    kube: KubeClient,
    control_plane: ControlPlane,
    installed: Install,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[KubeClient]:
    """A client holding a real token of the controller's ServiceAccount."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    issued = await kube.request(
        "POST", SERVICE_ACCOUNTS.path(installed.system, ACCOUNT, "token"), body=request
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
    kube: KubeClient, installed: Install
) -> None:
    for obj in installed.objects:
        resource = resource_of(obj)
        before = await kube.get(resource, obj["metadata"]["name"], obj["metadata"].get("namespace"))
        after = await apply(kube, obj)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
            f"re-applying {obj['kind']} {obj['metadata']['name']} changed it"
        )


async def test_the_manager_pod_passes_the_restricted_pod_security_standard(
    kube: KubeClient, installed: Install
) -> None:
    """aimd-system enforces `restricted`; a dry-run Pod from the Deployment's template is
    admitted, and a privileged one is refused (so the first check meant something)."""
    (deployment,) = [obj for obj in installed.objects if obj["kind"] == "Deployment"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"manager-{secrets.token_hex(3)}"},
        "spec": deployment["spec"]["template"]["spec"],
    }
    dry_run = {"dryRun": "All"}
    await kube.request("POST", PODS.path(installed.system), params=dry_run, body=pod)
    pod["spec"] = {**pod["spec"], "securityContext": {"runAsUser": 0}}
    with pytest.raises(Forbidden) as refused:
        await kube.request("POST", PODS.path(installed.system), params=dry_run, body=pod)
    assert "restricted" in refused.value.message


# (verb, group, resource, where, name): "app" is an application namespace, "all" every namespace
# at once (what an informer lists and watches), "own" aimd-system, "other" a namespace a
# namespaced install does not serve, None a cluster-scoped resource; "/url" a non-resource URL.
Case = tuple[str, str, str, str | None, str | None]
AIM_KINDS = ("aimservicetemplates", "aimservices", "aimtemplatecaches", "aimmodelcaches")
CREATED = (
    ("", "persistentvolumeclaims"),
    ("", "serviceaccounts"),
    ("batch", "jobs"),
    (RBAC, "roles"),
    (RBAC, "rolebindings"),
)
DELETED = (("batch", "jobs"), ("", "persistentvolumeclaims"))
PATCHED = (("apps", "deployments"), ("", "services"), ("", "persistentvolumeclaims"))
CONSENT_ROLE = "aimd-download-credentials"


def cases(
    verbs: str,
    group: str,
    resources: tuple[str, ...] | str,
    *wheres: str | None,
    name: str | None = None,
) -> list[Case]:
    names = (resources,) if isinstance(resources, str) else resources
    return [
        (verb, group, plural, where, name)
        for verb in verbs.split()
        for plural in names
        for where in wheres
    ]


def namespaced_rules(*wheres: str) -> list[Case]:
    """Everything aimd does in the namespaces it serves (the ClusterRole aimd-manager)."""
    return [
        *cases("list watch", AIM, AIM_KINDS, *wheres),
        *cases("patch", AIM, ("aimservices", "aimtemplatecaches", "aimmodelcaches"), *wheres),
        *cases("create delete", AIM, ("aimtemplatecaches", "aimmodelcaches"), *wheres),
        *cases("patch", AIM, tuple(f"{plural}/status" for plural in AIM_KINDS), *wheres),
        *cases("update", AIM, ("aimservicetemplates/finalizers", "aimservices/finalizers",
                               "aimmodelcaches/finalizers"), *wheres),
        *[case for group, plural in CREATED for case in cases("list watch create", group, plural,
                                                              *wheres)],
        *[case for group, plural in PATCHED
          for case in cases("list watch create patch", group, plural, *wheres)],
        *[case for group, plural in DELETED for case in cases("delete", group, plural, *wheres)],
        *cases("list watch", "", "pods", *wheres),
        *cases("create patch", "events.k8s.io", "events", *wheres),
        *cases("bind", RBAC, "roles", *wheres, name=CONSENT_ROLE),
    ]  # fmt: skip


CLUSTER_RULES = [
    *cases("list watch", AIM, "aimclusterservicetemplates", None),
    *cases("patch", AIM, "aimclusterservicetemplates/status", None),
    *cases("update", AIM, "aimclusterservicetemplates/finalizers", None),
    *cases("list watch", "", "namespaces", None),
    *cases("list watch", "storage.k8s.io", "storageclasses", None),
    *cases("create", "authentication.k8s.io", "tokenreviews", None),
    *cases("create", "authorization.k8s.io", "subjectaccessreviews", None),
    *cases("get create update", "coordination.k8s.io", "leases", "own"),
]
ALLOWED = [*namespaced_rules("app"), *cases("list watch", AIM, AIM_KINDS, "all"),
           *[case for group, plural in CREATED + PATCHED
             for case in cases("list watch", group, plural, "all")],
           *cases("list watch", "", "pods", "all"), *CLUSTER_RULES]  # fmt: skip
DENIED = [
    *cases("get list watch", "", "secrets", "app", "all", "own"),
    *cases("create", "", "secrets", "app"),
    *cases("get list", "", "configmaps", "app", "own"),
    *cases("get", AIM, (*AIM_KINDS, "aimmodelcaches/status"), "app"),
    *cases("get", AIM, "aimclusterservicetemplates", None),
    *cases("create delete patch", "", "namespaces", None),
    *cases("get", "", "namespaces", None),
    *cases("create delete", "", "pods", "app"),
    *cases("create", "", ("pods/exec", "serviceaccounts/token"), "app"),
    *cases("list", "", "nodes", None),
    *cases("create patch delete", AIM, "aimservicetemplates", "app"),
    *cases("create patch delete", AIM, "aimclusterservicetemplates", None),
    *cases("create delete", AIM, "aimservices", "app"),
    *cases("update deletecollection", AIM, "aimmodelcaches", "app"),
    *cases("update", AIM, "aimtemplatecaches/finalizers", "app"),
    *cases("update deletecollection", "", "persistentvolumeclaims", "app"),
    *cases("create patch delete", "storage.k8s.io", "storageclasses", None),
    *cases("patch deletecollection", "batch", "jobs", "app"),
    *cases("patch delete", "", "serviceaccounts", "app"),
    *cases("patch delete", RBAC, ("roles", "rolebindings"), "app"),
    *cases("update delete", "apps", "deployments", "app"),
    *cases("delete", "", "services", "app"),
    *cases("create", "", "events", "app"),
    *cases("bind escalate", RBAC, "roles", "app", name="admin"),
    *cases("escalate", RBAC, "roles", "app", name=CONSENT_ROLE),
    *cases("bind", RBAC, "clusterroles", None, name=CONSENT_ROLE),
    *cases("bind", RBAC, "clusterroles", None, name="cluster-admin"),
    *cases("create", RBAC, ("clusterroles", "clusterrolebindings"), None),
    *cases("get", "coordination.k8s.io", "leases", "app"),
    *cases("delete", "coordination.k8s.io", "leases", "own"),
    *cases("create", "apiextensions.k8s.io", "customresourcedefinitions", None),
    *cases("create", ADMISSION, "validatingadmissionpolicybindings", None),
    *cases("list", "networking.k8s.io", "ingresses", "app"),
    *cases("impersonate", "", ("users", "serviceaccounts"), None),
    ("get", "", "/metrics", None, None),
]
# Confined: the namespaced rules nowhere but in the namespaces named, not across all of them.
ALLOWED_NAMESPACED = [*namespaced_rules("app"), *CLUSTER_RULES]
DENIED_NAMESPACED = [*DENIED, *namespaced_rules("other", "all")]


async def can(kube: KubeClient, aimd: Install, app: str, other: str, case: Case) -> bool:
    verb, group, resource, where, name = case
    spec: dict[str, Any] = {
        "user": aimd.user,
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{aimd.system}",
                   "system:authenticated"],
    }  # fmt: skip
    if resource.startswith("/"):
        spec["nonResourceAttributes"] = {"verb": verb, "path": resource}
    else:
        plural, _, subresource = resource.partition("/")
        attributes = {"verb": verb, "group": group, "resource": plural, "subresource": subresource}
        if where is not None:
            places = {"app": app, "all": "", "own": aimd.system, "other": other}
            attributes["namespace"] = places[where]
        if name is not None:
            attributes["name"] = name
        spec["resourceAttributes"] = attributes
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
    answer = await kube.create(SUBJECT_ACCESS_REVIEWS, review)
    return bool(answer["status"].get("allowed"))


def describe(case: Case) -> str:
    verb, group, resource, where, name = case
    named = f" named {name}" if name else ""
    return f"{verb} {resource}.{group or 'core'}{named} in {where or 'cluster'}"


async def test_the_controller_may_do_what_aimd_does(
    kube: KubeClient, installed: Install, namespace: str
) -> None:
    refused = [
        describe(c) for c in ALLOWED if not await can(kube, installed, namespace, namespace, c)
    ]
    assert not refused, f"the controller may not: {refused}"


async def test_the_controller_may_do_nothing_more(
    kube: KubeClient, installed: Install, namespace: str
) -> None:
    granted = [describe(c) for c in DENIED if await can(kube, installed, namespace, namespace, c)]
    assert not granted, f"the controller may, but should not: {granted}"


async def test_namespaced_the_controller_may_do_what_aimd_does_where_it_serves(
    kube: KubeClient, namespaced: Install
) -> None:
    refused = [
        describe(case)
        for team in namespaced.teams
        for case in ALLOWED_NAMESPACED
        if not await can(kube, namespaced, team, team, case)
    ]
    assert not refused, f"the controller may not: {refused}"


async def test_namespaced_the_controller_may_do_nothing_elsewhere(
    kube: KubeClient, namespaced: Install, namespace: str
) -> None:
    """``namespace`` is one the install does not name."""
    team = namespaced.teams[0]
    granted = [
        describe(case)
        for case in DENIED_NAMESPACED
        if await can(kube, namespaced, team, namespace, case)
    ]
    assert not granted, f"the controller may, but should not: {granted}"


async def test_the_controller_can_give_a_download_job_its_rights_and_no_more(
    kube: KubeClient, as_controller: KubeClient, namespace: str
) -> None:
    """With its own token: the per-cache Role (patch on one model cache's status) and its
    binding are created without bind or escalate, because aimd holds those rights itself; a Role
    granting more than aimd holds is refused. The namespace's consent Role, which grants reading
    Secrets aimd may not read, can be bound (bind on that one name) and not be written."""
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
                "verbs": ["patch"],
            }
        ],
    }
    await as_controller.create(ROLES, role, namespace)

    def binding(name: str, role_name: str) -> dict[str, Any]:
        return {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": cache, "namespace": namespace}],
        }

    await as_controller.create(ROLE_BINDINGS, binding(cache, cache), namespace)
    secrets_rule = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    with pytest.raises(Forbidden):
        await as_controller.create(
            ROLES, {**role, "metadata": {"name": f"{cache}-secrets"}, "rules": [secrets_rule]},
            namespace,
        )  # fmt: skip
    consent = {**role, "metadata": {"name": CONSENT_ROLE},
               "rules": [{**secrets_rule, "resourceNames": ["hf-token"]}]}  # fmt: skip
    with pytest.raises(Forbidden):
        await as_controller.create(ROLES, consent, namespace)
    await kube.create(ROLES, consent, namespace)
    await as_controller.create(ROLE_BINDINGS, binding(f"{cache}-credentials", CONSENT_ROLE),
                               namespace)  # fmt: skip
    await kube.create(ROLES, {**consent, "metadata": {"name": "lookalike"}}, namespace)
    with pytest.raises(Forbidden):
        await as_controller.create(ROLE_BINDINGS, binding(f"{cache}-x", "lookalike"), namespace)


async def test_the_controller_reads_no_secret(
    kube: KubeClient, as_controller: KubeClient, installed: Install, namespace: str
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
    with pytest.raises(Forbidden):
        await as_controller.get(CONFIG_MAPS, "aimd-config", installed.system)
    assert await as_controller.list(SERVICES, namespace)
