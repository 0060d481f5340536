"""(No tests here.) aimd's own identity in the test control plane: a ServiceAccount bound to the
roles manifests/rbac/ ships, exactly, so an in-process controller that needs a right it does not
ship with fails the test that drove it (and tests/integration/test_security_audit.py compares
every request it made with those roles).

The cluster-scoped roles get a prefix of their own (the deploy tests install the real names);
the rules are the files' rules, read at every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import yaml

from aimd.kube.client import KubeClient
from aimd.kube.errors import AlreadyExists
from aimd.kube.resources import NAMESPACES, ROLE_BINDINGS, ROLES, SERVICE_ACCOUNTS, Resource
from tests.support import REPO

RBAC = "rbac.authorization.k8s.io"
CLUSTER_ROLES = Resource(RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False)
CLUSTER_ROLE_BINDINGS = Resource(
    RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
)
SHIPPED = REPO / "manifests" / "rbac"
# The ClusterRoles aimd's Deployment is bound to, cluster-wide; the Role, in its own namespace.
CLUSTER_ROLE_FILES = ("cluster_role.yaml", "cluster_role_cluster.yaml", "metrics_auth_role.yaml")
NAMESPACE_ROLE_FILE = "leader_election_role.yaml"
NAMESPACE = "aimd-harness"
ACCOUNT = "aimd-controller"
USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
PREFIX = "aimd-harness-"
Object = dict[str, Any]

_kubeconfigs: dict[str, str] = {}
_lock = asyncio.Lock()


def shipped_role(name: str) -> Object:
    loaded: Object = yaml.safe_load((SHIPPED / name).read_text())
    return loaded


async def controller_kubeconfig(admin_kubeconfig: str) -> str:
    """A kubeconfig for the same API server holding a token of aimd's ServiceAccount, which is
    made and bound on first use."""
    async with _lock:
        if admin_kubeconfig not in _kubeconfigs:
            _kubeconfigs[admin_kubeconfig] = await _provision(admin_kubeconfig)
        return _kubeconfigs[admin_kubeconfig]


async def _create(kube: KubeClient, resource: Resource, body: Object) -> None:
    with contextlib.suppress(AlreadyExists):
        await kube.create(resource, body, body["metadata"].get("namespace"))


async def _provision(admin_kubeconfig: str) -> str:
    subject = {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}
    async with await KubeClient.from_kubeconfig(admin_kubeconfig) as kube:
        await _create(kube, NAMESPACES, {"metadata": {"name": NAMESPACE}})
        await _create(
            kube, SERVICE_ACCOUNTS, {"metadata": {"name": ACCOUNT, "namespace": NAMESPACE}}
        )
        for file in CLUSTER_ROLE_FILES:
            role = shipped_role(file)
            name = PREFIX + role["metadata"]["name"]
            await kube.patch(
                CLUSTER_ROLES,
                name,
                {**role, "metadata": {"name": name}},
                patch_type="apply",
                field_manager="aimd-tests",
                force=True,
            )
            await _create(
                kube,
                CLUSTER_ROLE_BINDINGS,
                {
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
                    "subjects": [subject],
                },
            )
        role = shipped_role(NAMESPACE_ROLE_FILE)
        name = role["metadata"]["name"]
        await _create(kube, ROLES, {**role, "metadata": {"name": name, "namespace": NAMESPACE}})
        await _create(
            kube,
            ROLE_BINDINGS,
            {
                "metadata": {"name": name, "namespace": NAMESPACE},
                "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name},
                "subjects": [subject],
            },
        )
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 86400},
        }
        issued = await kube.request(
            "POST", SERVICE_ACCOUNTS.path(NAMESPACE, ACCOUNT, "token"), body=request
        )
    config = json.loads(Path(admin_kubeconfig).read_text())
    config["users"] = [{"name": ACCOUNT, "user": {"token": issued["status"]["token"]}}]
    for context in config["contexts"]:
        context["context"]["user"] = ACCOUNT
    path = Path(admin_kubeconfig).with_name(f"{ACCOUNT}.kubeconfig")
    path.write_text(json.dumps(config))
    return str(path)
