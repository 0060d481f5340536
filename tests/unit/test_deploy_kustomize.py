"""manifests/ as kustomize builds it: the objects it holds and the properties the issue asks of
them (least-privilege RBAC, a hardened Deployment with leader election, metrics wiring).

`render()` is a small kustomize for the subset manifests/ uses (resources, namespace, images,
replacements), so neither these tests nor the integration test need kubectl; where kubectl is
installed, one test checks that both build the same objects.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
NAMESPACED = {
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Deployment",
    "PodDisruptionBudget",
    "Service",
    "ServiceMonitor",
    "PrometheusRule",
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


def render(directory: Path = MANIFESTS) -> list[Object]:
    """The objects `kustomize build directory` prints, for the subset of kustomize used here."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {
        "apiVersion", "kind", "namespace", "resources", "images", "replacements",
    }  # fmt: skip
    assert not unknown, f"render() does not know {unknown} ({directory})"
    objects: list[Object] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects += render(path) if path.is_dir() else _documents(path)
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


def by_kind(objects: list[Object], kind: str) -> list[Object]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Object], kind: str) -> Object:
    (found,) = by_kind(objects, kind)
    return found


def identity(obj: Object) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


@pytest.fixture(scope="module")
def objects() -> list[Object]:
    return render()


@pytest.fixture(scope="module")
def manager(objects: list[Object]) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_the_kustomization_holds_everything_aimd_needs(objects: list[Object]) -> None:
    assert sorted(
        identity(obj) for obj in objects if obj["kind"] != "CustomResourceDefinition"
    ) == [
        ("ClusterRole", "", "aimd-manager"),
        ("ClusterRoleBinding", "", "aimd-manager"),
        ("Deployment", "aimd-system", "aimd-controller"),
        ("Namespace", "", "aimd-system"),
        ("PodDisruptionBudget", "aimd-system", "aimd-controller"),
        ("PrometheusRule", "aimd-system", "aimd"),
        ("Role", "aimd-system", "aimd-leader-election"),
        ("RoleBinding", "aimd-system", "aimd-leader-election"),
        ("Service", "aimd-system", "aimd-metrics"),
        ("ServiceAccount", "aimd-system", "aimd-controller"),
        ("ServiceMonitor", "aimd-system", "aimd"),
    ]


def test_every_manifest_file_parses_and_is_in_the_kustomization() -> None:
    """No file is forgotten: each is a kustomization, a resource one of them lists, or the
    plain Prometheus rules file (loaded by Prometheus, not applied). The samples are apart."""
    listed = set()
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        for entry in yaml.safe_load(kustomization.read_text())["resources"]:
            listed.add((kustomization.parent / entry).resolve())
    for path in MANIFESTS.rglob("*.yaml"):
        documents = _documents(path)
        assert documents, path
        if path.name == "kustomization.yaml" or "samples" in path.parts:
            continue
        assert path.resolve() in listed or path == MANIFESTS / "prometheus" / "rules.yaml", path


def test_every_crd_of_the_lead_is_included(objects: list[Object]) -> None:
    crds = {crd["spec"]["names"]["plural"] for crd in by_kind(objects, "CustomResourceDefinition")}
    assert crds == {path.stem for path in (MANIFESTS / "crds").glob("*.yaml")}
    assert len(crds) == 5


def test_rbac_has_no_wildcards_and_no_secrets(objects: list[Object]) -> None:
    for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], rule
            assert not {"secrets", "configmaps", "pods"} & set(rule["resources"]), rule
            assert not {"bind", "escalate", "impersonate"} & set(rule["verbs"]), rule
            assert "nonResourceURLs" not in rule


def test_bindings_name_the_controllers_service_account(objects: list[Object]) -> None:
    account = one(objects, "ServiceAccount")["metadata"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]
    for binding in by_kind(objects, "ClusterRoleBinding") + by_kind(objects, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]
    roles = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    for binding in by_kind(objects, "ClusterRoleBinding") + by_kind(objects, "RoleBinding"):
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles


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


def test_probes_and_resources(manager: dict[str, Any]) -> None:
    ports = {port["name"]: port["containerPort"] for port in manager["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert manager["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert manager["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert "--metrics-bind-address=:8080" in manager["args"]
    assert "--health-probe-bind-address=:8081" in manager["args"]
    for kind in ("requests", "limits"):
        assert set(manager["resources"][kind]) == {"cpu", "memory"}


def test_env_gives_the_namespace_and_the_download_image(manager: dict[str, Any]) -> None:
    env = {var["name"]: var for var in manager["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert manager["image"] == "aimd:0.1.0"
    assert env["AIMD_IMAGE"]["value"] == manager["image"]


def test_a_new_image_reaches_the_download_jobs_too(tmp_path: Path) -> None:
    """`kustomize edit set image` in an overlay changes the controller and AIMD_IMAGE alike."""
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
    (container,) = one(render(overlay), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {var["name"]: var.get("value") for var in container["env"]}
    assert container["image"] == env["AIMD_IMAGE"] == "registry.example/aimd:1.2"


def test_metrics_service_and_service_monitor_reach_the_pods(objects: list[Object]) -> None:
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    monitor = one(objects, "ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["honorLabels"] is True
    # The alert rules select job="aimd": the job comes from this label of the Service.
    assert service["metadata"]["labels"][monitor["jobLabel"]] == "aimd"


def test_the_prometheus_rule_is_the_one_in_manifests(objects: list[Object]) -> None:
    rule = one(objects, "PrometheusRule")
    assert rule == _documents(MANIFESTS / "prometheus" / "prometheusrule.yaml")[0]


def test_kubectl_kustomize_builds_the_same_objects(objects: list[Object]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed; render() alone is checked")
    result = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"kubectl kustomize does not run here: {result.stderr.strip()[:200]}")
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(built, key=identity) == sorted(objects, key=identity)
