"""manifests/ as kustomize builds it: the objects it holds and the properties the issues ask of
them (least-privilege RBAC, a hardened Deployment with leader election, secure metrics, the
admin's configuration in one ConfigMap, optional components in kubebuilder's config/default way).

`render()` is a small kustomize for the subset manifests/ uses (resources, components, patches
that merge maps or delete an object, namespace, images, replacements), so neither these tests nor
the integration tests need kubectl; where kubectl is installed, one test checks that both build
the same objects, with and without every component.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
COMPONENTS = ("prometheus", "network-policy", "namespaced")
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
NAMESPACED = {
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Deployment",
    "PodDisruptionBudget",
    "Service",
    "ServiceMonitor",
    "PrometheusRule",
    "NetworkPolicy",
}
Object = dict[str, Any]


def _documents(path: Path) -> list[Object]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _field_path(path: str) -> list[str]:
    """`a.b.[name=x].c` → ["a", "b", "[name=x]", "c"]."""
    return [part for part in path.replace(".[", ".\0[").replace("\0", "").split(".") if part]


def _walk(obj: Any, steps: list[str]) -> Any:
    for step in steps:
        if step.startswith("["):
            key, value = step[1:-1].split("=", 1)
            obj = next(item for item in obj if item.get(key) == value)
        else:
            obj = obj[step]
    return obj


def _select(objects: list[Object], selector: dict[str, str]) -> list[Object]:
    return [
        obj
        for obj in objects
        if obj["kind"] == selector["kind"]
        and ("name" not in selector or obj["metadata"]["name"] == selector["name"])
    ]


def _set_image(container: dict[str, Any], images: list[dict[str, str]]) -> None:
    name, _, tag = container["image"].partition(":")
    for image in images:
        if image["name"] == name:
            new_name = image.get("newName", name)
            new_tag = image.get("newTag", tag)
            container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
            if "digest" in image:
                container["image"] = f"{new_name}@{image['digest']}"


def _merge(target: Object, patch: Object) -> None:
    """A strategic-merge patch as far as manifests/ uses one: maps merge, anything else is
    replaced."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _patch(objects: list[Object], patch: Object) -> list[Object]:
    def same(obj: Object) -> bool:
        return (obj["kind"], obj["metadata"]["name"]) == (
            patch["kind"],
            patch["metadata"]["name"],
        ) and obj["metadata"].get("namespace") == patch["metadata"].get(
            "namespace", obj["metadata"].get("namespace")
        )

    matched = [obj for obj in objects if same(obj)]
    assert len(matched) == 1, f"patch of {patch['kind']} {patch['metadata']['name']}: {matched}"
    if patch.get("$patch") == "delete":
        return [obj for obj in objects if not same(obj)]
    _merge(matched[0], patch)
    return objects


KNOWN_FIELDS = {
    "apiVersion", "kind", "namespace", "resources", "components", "patches", "images",
    "replacements",
}  # fmt: skip


def render(directory: Path = MANIFESTS, components: Sequence[str] = ()) -> list[Object]:
    """The objects `kustomize build directory` prints, for the subset of kustomize used here;
    ``components`` (names under manifests/) are added as an overlay's `components:` would."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_FIELDS
    assert not unknown, f"render() does not know {unknown} ({directory})"
    objects: list[Object] = []
    for entry in kustomization.get("resources") or []:
        path = directory / entry
        objects += render(path) if path.is_dir() else _documents(path)
    listed = [directory / entry for entry in kustomization.get("components") or []]
    for component in [*listed, *(MANIFESTS / name for name in components)]:
        objects = _apply_component(component, objects)
    for entry in kustomization.get("patches") or []:
        for patch in _documents(directory / entry["path"]):
            objects = _patch(objects, patch)
    if namespace := kustomization.get("namespace"):
        for obj in objects:
            assert obj["kind"] in CLUSTER_SCOPED | NAMESPACED, f"scope of {obj['kind']}?"
            if obj["kind"] in NAMESPACED:
                obj["metadata"]["namespace"] = namespace
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            _set_image(container, kustomization.get("images", []))
    for replacement in kustomization.get("replacements", []):
        source = replacement["source"]
        (origin,) = _select(objects, source)
        value = _walk(origin, _field_path(source["fieldPath"]))
        for target in replacement["targets"]:
            for obj in _select(objects, target["select"]):
                for field_path in target["fieldPaths"]:
                    *parents, leaf = _field_path(field_path)
                    _walk(obj, parents)[leaf] = value
    return objects


def _apply_component(directory: Path, objects: list[Object]) -> list[Object]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component", directory
    assert not set(kustomization) - {"apiVersion", "kind", "resources", "patches"}, directory
    objects = objects + [
        obj
        for entry in kustomization.get("resources") or []
        for obj in _documents(directory / entry)
    ]
    for entry in kustomization.get("patches") or []:
        for patch in _documents(directory / entry["path"]):
            objects = _patch(objects, patch)
    return objects


def by_kind(objects: list[Object], kind: str) -> list[Object]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Object], kind: str, name: str | None = None) -> Object:
    (found,) = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    return found


def identity(obj: Object) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def rules(objects: list[Object]) -> list[Object]:
    return [
        rule for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role")
        for rule in role["rules"]
    ]  # fmt: skip


@pytest.fixture(scope="module")
def objects() -> list[Object]:
    return render()


@pytest.fixture(scope="module")
def manager(objects: list[Object]) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


BASE = [
    ("ClusterRole", "", "aimd-manager"),
    ("ClusterRole", "", "aimd-manager-cluster"),
    ("ClusterRole", "", "aimd-metrics-auth"),
    ("ClusterRole", "", "aimd-metrics-reader"),
    ("ClusterRoleBinding", "", "aimd-manager"),
    ("ClusterRoleBinding", "", "aimd-manager-cluster"),
    ("ClusterRoleBinding", "", "aimd-metrics-auth"),
    ("ConfigMap", "aimd-system", "aimd-config"),
    ("Deployment", "aimd-system", "aimd-controller"),
    ("Namespace", "", "aimd-system"),
    ("PodDisruptionBudget", "aimd-system", "aimd-controller"),
    ("Role", "aimd-system", "aimd-leader-election"),
    ("RoleBinding", "aimd-system", "aimd-leader-election"),
    ("Service", "aimd-system", "aimd-metrics"),
    ("ServiceAccount", "aimd-system", "aimd-controller"),
    ("ValidatingAdmissionPolicy", "", "aimd-model-cache-sources"),
    ("ValidatingAdmissionPolicyBinding", "", "aimd-model-cache-sources"),
]


def test_the_kustomization_holds_everything_aimd_needs_and_no_operator_kinds(
    objects: list[Object],
) -> None:
    """`kubectl apply -k manifests/` works on a cluster without the Prometheus Operator."""
    assert sorted(
        identity(obj) for obj in objects if obj["kind"] != "CustomResourceDefinition"
    ) == sorted(BASE)


def test_components_add_what_they_say() -> None:
    everything = {
        identity(obj)
        for obj in render(components=COMPONENTS)
        if obj["kind"] != "CustomResourceDefinition"
    }
    base = set(BASE)
    assert everything - base == {
        ("ServiceMonitor", "aimd-system", "aimd"),
        ("PrometheusRule", "aimd-system", "aimd"),
        ("NetworkPolicy", "aimd-system", "aimd-controller"),
        ("RoleBinding", "team-a", "aimd-manager"),
        ("RoleBinding", "team-b", "aimd-manager"),
    }
    assert base - everything == {("ClusterRoleBinding", "", "aimd-manager")}


def test_every_manifest_file_parses_and_is_in_a_kustomization() -> None:
    """No file is forgotten: each is a kustomization, a resource or patch one of them lists, or
    the plain Prometheus rules file (loaded by Prometheus, not applied). The samples are apart."""
    listed = set()
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        content = yaml.safe_load(kustomization.read_text())
        entries = [*(content.get("resources") or [])]
        entries += [patch["path"] for patch in content.get("patches") or []]
        for entry in entries:
            listed.add((kustomization.parent / entry).resolve())
    for path in MANIFESTS.rglob("*.yaml"):
        documents = _documents(path)
        assert documents, path
        if path.name == "kustomization.yaml" or "samples" in path.parts:
            continue
        assert path.resolve() in listed or path == MANIFESTS / "prometheus" / "rules.yaml", path


def test_the_optional_parts_are_components_named_in_the_default_kustomization() -> None:
    text = (MANIFESTS / "kustomization.yaml").read_text()
    for name in COMPONENTS:
        assert f"# - {name}/" in text, name
        kind = yaml.safe_load((MANIFESTS / name / "kustomization.yaml").read_text())["kind"]
        assert kind == "Component"


def test_every_crd_of_the_lead_is_included(objects: list[Object]) -> None:
    crds = {crd["spec"]["names"]["plural"] for crd in by_kind(objects, "CustomResourceDefinition")}
    assert crds == {path.stem for path in (MANIFESTS / "crds").glob("*.yaml")}
    assert len(crds) == 5


def test_rbac_has_no_wildcards_no_secrets_and_binds_only_the_consent_role() -> None:
    for rule in rules(render(components=COMPONENTS)):
        for field in ("apiGroups", "resources", "verbs", "nonResourceURLs"):
            assert "*" not in rule.get(field, []), rule
        assert not {"secrets", "configmaps"} & set(rule.get("resources", [])), rule
        assert not {"escalate", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
        if "pods" in rule.get("resources", []):
            assert rule["verbs"] == ["list", "watch"], rule
        if "bind" in rule["verbs"]:
            assert rule == {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["roles"],
                "resourceNames": ["aimd-download-credentials"],
                "verbs": ["bind"],
            }
        if "nonResourceURLs" in rule:
            assert rule == {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}


def test_bindings_name_the_controllers_service_account() -> None:
    objects = render(components=COMPONENTS)
    account = one(objects, "ServiceAccount")["metadata"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]
    bindings = by_kind(objects, "ClusterRoleBinding") + by_kind(objects, "RoleBinding")
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]
    roles = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    for binding in bindings:
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles


def test_the_metrics_reader_role_is_for_prometheus_and_bound_to_nobody(
    objects: list[Object],
) -> None:
    bound = {b["roleRef"]["name"] for b in by_kind(objects, "ClusterRoleBinding")}
    assert "aimd-metrics-reader" not in bound
    assert one(objects, "ClusterRole", "aimd-metrics-reader")["rules"] == [
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}
    ]


def test_namespaced_binds_the_manager_role_only_where_the_controller_looks() -> None:
    objects = render(components=["namespaced"])
    bound = {b["roleRef"]["name"] for b in by_kind(objects, "ClusterRoleBinding")}
    assert bound == {"aimd-manager-cluster", "aimd-metrics-auth"}
    namespaces = sorted(
        b["metadata"]["namespace"]
        for b in by_kind(objects, "RoleBinding")
        if b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "aimd-manager"}
    )  # fmt: skip
    configured = one(objects, "ConfigMap")["data"]["AIMD_NAMESPACES"].split(",")
    assert namespaces == sorted(configured) == ["team-a", "team-b"]
    cluster_scoped = one(objects, "ClusterRole", "aimd-manager-cluster")["rules"]
    assert {r for rule in cluster_scoped for r in rule["resources"]} == {
        "namespaces",
        "storageclasses",
        "aimclusterservicetemplates",
        "aimclusterservicetemplates/status",
        "aimclusterservicetemplates/finalizers",
    }


def test_leader_election_is_limited_to_leases_in_aimds_namespace(objects: list[Object]) -> None:
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == "aimd-system"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]


def test_two_replicas_elect_a_leader(objects: list[Object], manager: dict[str, Any]) -> None:
    assert one(objects, "Deployment")["spec"]["replicas"] == 2
    assert manager["args"][0] == "run"
    assert "--leader-elect" in manager["args"]
    assert "--leader-election-id=aimd-leader" in manager["args"]


def test_the_rate_limit_is_the_recommended_one_not_the_codes_default(
    manager: dict[str, Any],
) -> None:
    # 20/30 (controller-runtime's, the flags' default) is the whole convergence time at a
    # thousand services; the README's table shows both.
    assert "--kube-api-qps=400" in manager["args"]
    assert "--kube-api-burst=600" in manager["args"]


def test_a_drain_leaves_a_replica_to_take_the_lease(objects: list[Object]) -> None:
    budget = one(objects, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()


def test_the_pod_is_hardened(objects: list[Object], manager: dict[str, Any]) -> None:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = manager["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    (tmp,) = [mount for mount in manager["volumeMounts"] if mount["mountPath"] == "/tmp"]
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == tmp["name"]]
    assert "emptyDir" in volume


def test_probes_resources_and_secure_metrics(manager: dict[str, Any]) -> None:
    ports = {port["name"]: port["containerPort"] for port in manager["ports"]}
    assert ports == {"metrics": 8443, "health": 8081}
    assert manager["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert manager["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert "--metrics-bind-address=:8443" in manager["args"]
    assert not any(arg.startswith("--metrics-secure") for arg in manager["args"]), "the default"
    assert "--health-probe-bind-address=:8081" in manager["args"]
    for kind in ("requests", "limits"):
        assert set(manager["resources"][kind]) == {"cpu", "memory"}


def test_the_admins_configuration_is_one_configmap_the_controller_reads(
    objects: list[Object], manager: dict[str, Any]
) -> None:
    env = {var["name"]: var for var in manager["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    config = one(objects, "ConfigMap")
    assert manager["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert manager["image"] == "aimd:0.1.0"
    assert config["data"] == {
        "AIMD_IMAGE": manager["image"],
        "AIMD_ALLOWED_DOWNLOAD_IMAGES": "",
        "AIMD_ALLOWED_ENDPOINTS": "https://huggingface.co,https://*.amazonaws.com",
        "AIMD_REQUIRE_SECRET_CONSENT": "false",
    }
    binding = one(objects, "ValidatingAdmissionPolicyBinding")["spec"]["paramRef"]
    assert (binding["name"], binding["namespace"]) == (
        config["metadata"]["name"],
        config["metadata"]["namespace"],
    )
    assert binding["parameterNotFoundAction"] == "Deny"


def test_a_new_image_reaches_the_download_jobs_too(tmp_path: Path) -> None:
    """`images:` in an overlay changes the controller and AIMD_IMAGE alike, when the overlay
    repeats the base's replacement."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(MANIFESTS / "manager")],
                "images": [{"name": "aimd", "newName": "registry.example/aimd", "newTag": "1.2"}],
                "replacements": yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())[
                    "replacements"
                ],
            }
        )
    )
    objects = render(overlay)
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == one(objects, "ConfigMap")["data"]["AIMD_IMAGE"]
    assert container["image"] == "registry.example/aimd:1.2"


def test_metrics_service_and_service_monitor_reach_the_pods_over_https() -> None:
    objects = render(components=["prometheus"])
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (8443, "metrics")
    monitor = one(objects, "ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["scheme"] == "https"
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert endpoint["honorLabels"] is True
    # The alert rules select job="aimd": the job comes from this label of the Service.
    assert service["metadata"]["labels"][monitor["jobLabel"]] == "aimd"


def test_the_prometheus_rule_is_the_one_in_manifests() -> None:
    rule = one(render(components=["prometheus"]), "PrometheusRule")
    assert rule == _documents(MANIFESTS / "prometheus" / "prometheusrule.yaml")[0]


def test_network_policies_let_the_controller_reach_the_api_server_and_downloads_their_sources(
    tmp_path: Path,
) -> None:
    objects = render(components=["network-policy"])
    controller = one(objects, "NetworkPolicy")["spec"]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert controller["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert controller["policyTypes"] == ["Ingress", "Egress"]
    metrics, probes = controller["ingress"]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"metrics": "enabled"}}}]
    assert metrics["ports"] == [{"port": 8443, "protocol": "TCP"}]
    assert probes == {"ports": [{"port": 8081, "protocol": "TCP"}]}
    overlay = tmp_path / "team-a"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"namespace": "team-a", "components": [str(MANIFESTS / "network-policy" / "downloads")]}
        )
    )
    (downloads,) = render(overlay)
    assert downloads["metadata"]["namespace"] == "team-a"
    spec = downloads["spec"]
    assert spec["podSelector"] == {
        "matchExpressions": [{"key": "aim.eai.amd.com/model-cache", "operator": "Exists"}]
    }
    assert "ingress" not in spec
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    ports = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
    assert ports == {(443, "TCP"), (6443, "TCP"), (53, "UDP"), (53, "TCP")}
    assert controller["egress"] == spec["egress"]


def kubectl_kustomize(directory: Path) -> list[Object]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed; render() alone is checked")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"kubectl kustomize does not run here: {result.stderr.strip()[:200]}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("components", [(), COMPONENTS], ids=["default", "every component"])
def test_kubectl_kustomize_builds_the_same_objects(
    components: tuple[str, ...], tmp_path: Path
) -> None:
    directory = MANIFESTS
    if components:
        directory = tmp_path / "overlay"
        directory.mkdir()
        base = os.path.relpath(MANIFESTS, directory)
        (directory / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {"resources": [base], "components": [f"{base}/{name}" for name in components]}
            )
        )
    built = kubectl_kustomize(directory)
    assert sorted(built, key=identity) == sorted(render(components=components), key=identity)
