"""Least privilege, measured: every request aimd made in this test run, from the API server's
audit log, against the roles manifests/rbac/ ships, both ways. Each request was allowed by a
shipped rule (not merely by a default role), and each shipped rule was used, or is in
NOT_REQUESTS with the reason it is needed without ever being a request.

The in-process controller runs as aimd's ServiceAccount (tests/integration/controller_identity.py)
and the control plane audits service accounts (ControlPlane strict_rbac). This test runs last
(tests/integration/conftest.py) and only in a run that drove the controller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from aimd.api import kinds
from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient
from aimd.kube.errors import NotFound
from aimd.kube.resources import DEPLOYMENTS, SERVICES
from tests.integration import controller_identity as identity
from tests.integration.test_caching_harness import (
    Running,
    kubelet,
    service,
    template,
    template_cache,
)
from tests.support import eventually

AIM = "aim.eai.amd.com"
RBAC = "rbac.authorization.k8s.io"
# Modules that must have run for the comparison to mean something: they drive the controller,
# its metrics server and its leader election as aimd's identity (and this one, the paths the
# rest of the suite does not take).
DRIVERS = ("test_caching_rules", "test_security_metrics", "test_security_audit")
# Shipped rules that no request of aimd's can show, and why they are needed anyway.
NOT_REQUESTS: dict[tuple[str, str, str], str] = {
    **{
        (AIM, f"{plural}/finalizers", "update"): (
            "checked by the OwnerReferencesPermissionEnforcement admission plugin when aimd "
            "creates a child with blockOwnerDeletion (enabled in the test control plane, so a "
            "missing one fails the create); never a request of its own"
        )
        for plural in (
            "aimservicetemplates",
            "aimclusterservicetemplates",
            "aimservices",
            "aimmodelcaches",
        )
    },
    (RBAC, "roles", "bind"): (
        "checked when aimd creates the RoleBinding to a namespace's Role "
        "aimd-download-credentials (Secrets by consent; tests/integration/"
        "test_security_credentials.py creates one as aimd); never a request of its own"
    ),
}


@dataclass(frozen=True)
class Request:
    verb: str
    group: str
    resource: str  # with /subresource
    namespace: str
    name: str
    code: int
    uri: str
    authorized: bool  # the authorizer's decision; a 403 may also be admission's (a quota)

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return (
            f"{self.verb} {self.resource}.{self.group or 'core'} {self.name}{where} ({self.code})"
        )


@dataclass(frozen=True)
class Rule:
    group: str
    resource: str
    verb: str
    names: tuple[str, ...]
    namespace: str | None  # None: bound cluster-wide

    def allows(self, request: Request) -> bool:
        return (
            (self.group, self.resource, self.verb)
            == (request.group, request.resource, request.verb)
            and (not self.names or request.name in self.names)
            and (self.namespace is None or self.namespace == request.namespace)
        )


def requests_of(user: str, audit: list[dict[str, Any]]) -> list[Request]:
    found = set()
    for event in audit:
        if event.get("user", {}).get("username") != user:
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        found.add(
            Request(
                verb=event["verb"],
                group=ref.get("apiGroup", ""),
                resource=resource,
                namespace=ref.get("namespace", ""),
                name=ref.get("name", ""),
                code=int((event.get("responseStatus") or {}).get("code") or 0),
                uri=event["requestURI"].split("?")[0],
                authorized=(event.get("annotations") or {}).get("authorization.k8s.io/decision")
                != "forbid",
            )
        )
    return sorted(found, key=str)


def shipped_rules() -> list[Rule]:
    """Every (group, resource, verb) the controller is bound to, and where."""
    bound: list[tuple[dict[str, Any], str | None]] = [
        (identity.shipped_role(name), None) for name in identity.CLUSTER_ROLE_FILES
    ]
    bound.append((identity.shipped_role(identity.NAMESPACE_ROLE_FILE), identity.NAMESPACE))
    return [
        Rule(group, resource, verb, tuple(rule.get("resourceNames") or ()), namespace)
        for role, namespace in bound
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


async def test_a_template_change_reaches_its_services_workload(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    """aimd patches a service's Deployment and Service when what it wants of them changes."""
    await kube.create(kinds.SERVICE_TEMPLATES, template("tpl", ("org/m", "hf://org/m")), namespace)
    await kube.create(kinds.SERVICES, service("chat", "tpl", cache=False), namespace)

    async def serving_on(port: int) -> bool:
        try:
            deployment = await kube.get(DEPLOYMENTS, "chat", namespace)
            workload = await kube.get(SERVICES, "chat", namespace)
        except NotFound:
            return False
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = (container["ports"][0]["containerPort"], workload["spec"]["ports"][0]["port"])
        return ports == (port, port)

    await eventually(lambda: serving_on(8000), what="the workload on the template's port")
    await kube.patch(kinds.SERVICE_TEMPLATES, "tpl", {"spec": {"port": 9000}}, namespace)
    await eventually(lambda: serving_on(9000), what="the workload on the new port")


async def test_a_model_cache_still_needed_is_handed_to_the_template_cache_that_needs_it(
    kube: KubeClient, namespace: str, aimd: Running
) -> None:
    """D8: deleting the template cache that made a cache not yet Available relabels the cache
    for the other one that needs its source."""
    source = ("org/shared", "hf://org/shared")
    for name in ("first", "second"):
        await kube.create(kinds.SERVICE_TEMPLATES, template(name, source), namespace)
    async with kubelet(kube, namespace, hold=lambda job: True):
        await kube.create(kinds.TEMPLATE_CACHES, template_cache("first", "first"), namespace)

        async def made_by(creator: str) -> bool:
            caches = (await kube.list(kinds.MODEL_CACHES, namespace))["items"]
            labels = [(mc["metadata"].get("labels") or {}) for mc in caches]
            return [label.get(kinds.LABEL_CREATED_BY_TEMPLATE_CACHE) for label in labels] == [
                creator
            ]

        await eventually(lambda: made_by("first"), what="first's model cache")
        (made,) = (await kube.list(kinds.MODEL_CACHES, namespace))["items"]
        await kube.create(kinds.TEMPLATE_CACHES, template_cache("second", "second"), namespace)
        await kube.delete(kinds.TEMPLATE_CACHES, "first", namespace)
        await eventually(lambda: made_by("second"), what="the cache handed to second")
        (handed,) = (await kube.list(kinds.MODEL_CACHES, namespace))["items"]
        assert handed["metadata"]["uid"] == made["metadata"]["uid"], "kept, not made anew"


@pytest.mark.runs_last
def test_every_request_aimd_made_was_shipped_to_it_and_every_shipped_rule_was_used(
    control_plane: ControlPlane, request: pytest.FixtureRequest
) -> None:
    ran = {item.module.__name__.rsplit(".", 1)[-1] for item in request.session.items}  # type: ignore[attr-defined]
    missing = [module for module in DRIVERS if module not in ran]
    if missing:
        pytest.skip(f"needs the integration suite's {', '.join(missing)} in the same run")
    audit = [json.loads(line) for line in control_plane.audit_log.read_text().splitlines()]
    requests = requests_of(identity.USER, audit)
    assert len(requests) > 50, "the controller made hardly any request: is it audited?"
    rules = shipped_rules()

    refused = [str(r) for r in requests if not r.authorized]
    assert not refused, f"requests aimd made and RBAC refused: {refused}"
    unshipped = [str(r) for r in requests if not any(rule.allows(r) for rule in rules)]
    assert not unshipped, f"requests no shipped rule allows: {unshipped}"

    used = {
        (rule.group, rule.resource, rule.verb)
        for rule in rules
        if any(rule.allows(r) for r in requests)
    }
    shipped = {(rule.group, rule.resource, rule.verb) for rule in rules}
    unused = sorted(shipped - used - NOT_REQUESTS.keys())
    assert not unused, f"shipped rules aimd never used (trim them, or say why): {unused}"
    stale = sorted(NOT_REQUESTS.keys() & used)
    assert not stale, f"rules said never to be requests, yet requested: {stale}"
    assert NOT_REQUESTS.keys() <= shipped, sorted(NOT_REQUESTS.keys() - shipped)
    print(f"\naimd made {len(requests)} distinct requests, all allowed by the shipped roles;")
    print(f"{len(used)} of {len(shipped)} shipped rules used, the rest: {sorted(NOT_REQUESTS)}")
