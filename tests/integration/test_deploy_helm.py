"""The Helm chart rendered by helm: lint-clean, the same objects as manifests/ by default, its
values doing what they say, and every object it can render accepted by the API server (a
server-side dry run with strict field validation).

helm is `$AIMD_HELM`, else on PATH, else built once from its Go module (like the control plane)
into ~/.cache/aimd-helm; without helm and without Go these tests are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient
from aimd.kube.resources import CONFIG_MAPS
from tests.integration.test_deploy_kustomize import monitoring_crd, resource_of
from tests.unit.test_deploy_kustomize import identity, render

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "aimd"
HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
HELM_VERSION = "v3.20.2"
HELM_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aimd-helm"
# Labels only Helm adds; without them a Helm object must equal its kustomize twin.
HELM_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
}
EVERYTHING_ON = {
    "metrics.serviceMonitor.enabled": "true",
    "prometheusRule.enabled": "true",
    "grafanaDashboards.enabled": "true",
}
Object = dict[str, Any]


@pytest.fixture(scope="module")
def helm() -> Path:
    found = os.environ.get("AIMD_HELM") or shutil.which("helm")
    if found:
        return Path(found)
    cached = HELM_CACHE / HELM_VERSION / "helm"
    if cached.exists():
        return cached
    go = shutil.which("go")
    if go is None:
        pytest.skip(f"no helm and no Go to build it (go install {HELM_MODULE}@{HELM_VERSION})")
    partial = HELM_CACHE / f"{HELM_VERSION}.partial"
    environment = {**os.environ, "GOBIN": str(partial), "CGO_ENABLED": "0", "GOFLAGS": ""}
    result = subprocess.run(
        [go, "install", "-trimpath", "-ldflags=-s -w", f"{HELM_MODULE}@{HELM_VERSION}"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert result.returncode == 0, f"building helm failed:\n{result.stderr[-2000:]}"
    partial.rename(cached.parent)
    return cached


def template(helm: Path, namespace: str = "aimd-system", **values: str) -> list[Object]:
    """`helm template aimd charts/aimd` with `--set key=value` for each of `values`: the release,
    without the hooks that run around it (tests/integration/test_deploy_helm_uninstall.py)."""
    settings = [f"--set={key}={value}" for key, value in values.items()]
    result = helm_run(
        helm,
        "template",
        "aimd",
        str(CHART),
        f"--namespace={namespace}",
        "--include-crds",
        "--no-hooks",
        *settings,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def helm_run(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = HELM_CACHE / "home"  # helm wants writable config and cache folders
    environment = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return subprocess.run(
        [str(helm), *args], env=environment, capture_output=True, text=True, check=False
    )


def without_helm_labels(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: without_helm_labels(item) for key, item in value.items() if key not in HELM_LABELS
        }
    if isinstance(value, list):
        return [without_helm_labels(item) for item in value]
    return value


def find(objects: list[Object], kind: str, name: str | None = None) -> Object:
    (found,) = [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    return found


def manager(objects: list[Object]) -> dict[str, Any]:
    (container,) = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_the_chart_lints_clean(helm: Path) -> None:
    settings = [f"--set={key}={value}" for key, value in EVERYTHING_ON.items()]
    result = helm_run(helm, "lint", "--strict", str(CHART), *settings)
    assert result.returncode == 0, result.stdout + result.stderr


def test_release_aimd_installs_the_same_objects_as_manifests(helm: Path) -> None:
    """Everything but the Namespace (helm install --create-namespace makes it) and the
    dashboards (not part of manifests/)."""
    rendered = [
        without_helm_labels(obj)
        for obj in template(helm, **EVERYTHING_ON)
        if obj["kind"] != "ConfigMap"
    ]
    expected = [obj for obj in render() if obj["kind"] != "Namespace"]
    assert sorted(map(identity, rendered)) == sorted(map(identity, expected))
    for obj in expected:
        (twin,) = [candidate for candidate in rendered if identity(candidate) == identity(obj)]
        assert twin == obj, f"{identity(obj)} differs"


def test_misspelt_or_mistyped_values_are_refused(helm: Path) -> None:
    for setting, complaint in (
        ("replicas=3", "additional properties 'replicas' not allowed"),
        ("replicaCount=two", "/replicaCount"),
        ("metrics.serviceMonitor.interval=often", "/metrics/serviceMonitor/interval"),
    ):
        result = helm_run(helm, "template", "aimd", str(CHART), f"--set={setting}")
        assert result.returncode != 0, setting
        assert complaint in result.stderr, result.stderr


def test_optional_parts_are_off_by_default(helm: Path) -> None:
    kinds = {obj["kind"] for obj in template(helm)}
    assert not {"ServiceMonitor", "PrometheusRule", "ConfigMap"} & kinds
    assert {"Deployment", "Service", "Role", "ClusterRole"} <= kinds


def test_the_image_reaches_the_download_jobs_unless_they_get_their_own(helm: Path) -> None:
    objects = template(helm, **{"image.repository": "registry.example/aimd", "image.tag": "1.2"})
    env = {var["name"]: var.get("value") for var in manager(objects)["env"]}
    assert manager(objects)["image"] == env["AIMD_IMAGE"] == "registry.example/aimd:1.2"
    objects = template(helm, downloadImage="registry.example/fetch:3")
    env = {var["name"]: var.get("value") for var in manager(objects)["env"]}
    assert env["AIMD_IMAGE"] == "registry.example/fetch:3"


def test_more_than_one_replica_needs_leader_election(helm: Path) -> None:
    result = helm_run(helm, "template", "aimd", str(CHART), "--set=leaderElection.enabled=false")
    assert result.returncode != 0
    assert "leaderElection.enabled" in result.stderr
    single = template(helm, **{"leaderElection.enabled": "false", "replicaCount": "1"})
    assert "--leader-elect" not in manager(single)["args"]
    assert not {"Role", "PodDisruptionBudget"} & {obj["kind"] for obj in single}


def test_metrics_can_be_switched_off(helm: Path) -> None:
    objects = template(helm, **{**EVERYTHING_ON, "metrics.enabled": "false"})
    assert not {"Service", "ServiceMonitor"} & {obj["kind"] for obj in objects}
    assert "--metrics-bind-address=0" in manager(objects)["args"]
    assert [port["name"] for port in manager(objects)["ports"]] == ["health"]


def test_scheduling_values_reach_the_pod(helm: Path) -> None:
    objects = template(
        helm,
        **{
            "nodeSelector.pool": "system",
            "tolerations[0].key": "dedicated",
            "tolerations[0].operator": "Exists",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].key": "zone",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].operator": "Exists",
            "podSecurityContext.fsGroup": "65532",
            "priorityClassName": "system-cluster-critical",
        },
    )
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert list(pod["affinity"]) == ["nodeAffinity"]
    assert pod["securityContext"]["fsGroup"] == 65532
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["priorityClassName"] == "system-cluster-critical"


def test_an_existing_service_account_must_be_named(helm: Path) -> None:
    result = helm_run(helm, "template", "aimd", str(CHART), "--set=serviceAccount.create=false")
    assert result.returncode != 0
    assert "serviceAccount.name" in result.stderr
    objects = template(helm, **{"serviceAccount.create": "false", "serviceAccount.name": "ops"})
    assert "ServiceAccount" not in {obj["kind"] for obj in objects}
    assert find(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    assert find(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "ops"


def test_runbook_links_follow_the_value(helm: Path) -> None:
    wiki = "https://wiki.example/aimd"
    objects = template(
        helm, **{"prometheusRule.enabled": "true", "prometheusRule.runbookBaseUrl": wiki}
    )
    groups = find(objects, "PrometheusRule")["spec"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules
    for rule in rules:
        assert (
            rule["annotations"]["runbook_url"]
            == f"https://wiki.example/aimd#{rule['alert'].lower()}"
        )


def test_dashboards_ship_as_configmaps_for_grafana(helm: Path) -> None:
    maps = [obj for obj in template(helm, **EVERYTHING_ON) if obj["kind"] == "ConfigMap"]
    shipped = {}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        for key, text in config_map["data"].items():
            shipped[key] = json.loads(text)
    dashboards = REPO / "dashboards"
    assert shipped == {
        path.name: json.loads(path.read_text()) for path in dashboards.glob("*.json")
    }


async def test_the_api_server_accepts_everything_the_chart_renders(
    helm: Path, kube: KubeClient, control_plane: ControlPlane, namespace: str
) -> None:
    """A dry run (nothing is stored) with strict field validation, so a misspelt field fails."""
    control_plane.install_crd(monitoring_crd("servicemonitors", "ServiceMonitor"))
    control_plane.install_crd(monitoring_crd("prometheusrules", "PrometheusRule"))
    objects = template(helm, namespace, **EVERYTHING_ON, **{"nodeSelector.pool": "system"})
    params = {"dryRun": "All", "fieldManager": "helm", "fieldValidation": "Strict", "force": "true"}
    for obj in objects:
        resource = CONFIG_MAPS if obj["kind"] == "ConfigMap" else resource_of(obj)
        await kube.request(
            "PATCH",
            resource.path(obj["metadata"].get("namespace"), obj["metadata"]["name"]),
            params=params,
            body=obj,
            content_type="application/apply-patch+yaml",
        )
