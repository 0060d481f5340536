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
# helm renders offline for Kubernetes 1.20 unless told; the chart needs 1.30 (kubeVersion).
KUBE_VERSION = "--kube-version=1.35.0"
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
    "networkPolicy.enabled": "true",
}
NAMESPACED = {"namespaces[0]": "team-a", "namespaces[1]": "team-b"}
# Annotations only Helm adds: a new configuration rolls the pods.
HELM_ANNOTATIONS = {"checksum/config"}
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
    if args and args[0] in ("template", "lint"):
        args = (args[0], KUBE_VERSION, *args[1:])
    return subprocess.run(
        [str(helm), *args], env=environment, capture_output=True, text=True, check=False
    )


def without_helm_labels(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {
            key: without_helm_labels(item)
            for key, item in value.items()
            if key not in HELM_LABELS | HELM_ANNOTATIONS
        }
        if "annotations" in kept and not kept["annotations"]:
            del kept["annotations"]
        return kept
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
    found: dict[str, Any] = container
    return found


def test_the_chart_lints_clean(helm: Path) -> None:
    settings = [f"--set={key}={value}" for key, value in EVERYTHING_ON.items()]
    result = helm_run(helm, "lint", "--strict", str(CHART), *settings)
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard(obj: Object) -> bool:
    return obj["kind"] == "ConfigMap" and "-dashboard-" in obj["metadata"]["name"]


@pytest.mark.parametrize(
    ("values", "components"),
    [
        ({}, []),
        (EVERYTHING_ON, ["prometheus", "network-policy"]),
        (NAMESPACED, ["namespaced"]),
    ],
    ids=["defaults", "everything on", "namespaced"],
)
def test_release_aimd_installs_the_same_objects_as_manifests(
    helm: Path, values: dict[str, str], components: list[str]
) -> None:
    """Everything but the Namespace (helm install --create-namespace makes it) and the
    dashboards (not part of manifests/), with the components that match the values."""
    rendered = [without_helm_labels(obj) for obj in template(helm, **values) if not dashboard(obj)]
    expected = [obj for obj in render(components=components) if obj["kind"] != "Namespace"]
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
    objects = template(helm)
    kinds = {obj["kind"] for obj in objects}
    assert not {"ServiceMonitor", "PrometheusRule", "NetworkPolicy"} & kinds
    assert not [obj for obj in objects if dashboard(obj)]
    assert {"Deployment", "Service", "Role", "ClusterRole", "ValidatingAdmissionPolicy"} <= kinds


def config(objects: list[Object]) -> dict[str, str]:
    data: dict[str, str] = find(objects, "ConfigMap", "aimd-config")["data"]
    return data


def test_the_image_reaches_the_download_jobs_unless_they_get_their_own(helm: Path) -> None:
    objects = template(helm, **{"image.repository": "registry.example/aimd", "image.tag": "1.2"})
    assert manager(objects)["image"] == config(objects)["AIMD_IMAGE"] == "registry.example/aimd:1.2"
    objects = template(helm, downloadImage="registry.example/fetch:3")
    assert config(objects)["AIMD_IMAGE"] == "registry.example/fetch:3"


def test_what_the_admin_allows_reaches_the_controller_and_the_admission_policy(
    helm: Path,
) -> None:
    objects = template(
        helm,
        **{
            "config.allowedDownloadImages[0]": "registry.example/fetch:3",
            "config.allowedEndpoints[0]": "http://minio.storage.svc:9000",
            "config.requireSecretConsent": "true",
        },
    )
    assert config(objects) == {
        "AIMD_IMAGE": "aimd:0.1.0",
        "AIMD_ALLOWED_DOWNLOAD_IMAGES": "registry.example/fetch:3",
        "AIMD_ALLOWED_ENDPOINTS": "http://minio.storage.svc:9000",
        "AIMD_REQUIRE_SECRET_CONSENT": "true",
    }
    assert manager(objects)["envFrom"] == [{"configMapRef": {"name": "aimd-config"}}]
    param = find(objects, "ValidatingAdmissionPolicyBinding")["spec"]["paramRef"]
    assert (param["name"], param["namespace"]) == ("aimd-config", "aimd-system")
    pod = find(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert (
        pod["checksum/config"]
        != find(template(helm), "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]
    ), "a new configuration rolls the pods"
    result = helm_run(
        helm, "template", "aimd", str(CHART), "--set=config.allowedEndpoints[0]=minio:9000"
    )
    assert result.returncode != 0
    assert "/config/allowedEndpoints/0" in result.stderr
    off = template(helm, **{"admissionPolicy.enabled": "false"})
    assert not {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} & {
        obj["kind"] for obj in off
    }


def test_metrics_are_secure_and_readers_are_bound(helm: Path) -> None:
    subject = {"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}
    objects = template(
        helm,
        **{f"metrics.reader.subjects[0].{key}": value for key, value in subject.items()},
        **{"metrics.serviceMonitor.enabled": "true", "metrics.certSecret": "aimd-metrics-tls"},
    )
    assert find(objects, "ClusterRoleBinding", "aimd-metrics-reader")["subjects"] == [subject]
    assert "--metrics-cert-path=/tmp/k8s-metrics-server/metrics-certs" in manager(objects)["args"]
    volumes = find(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "metrics-certs", "secret": {"secretName": "aimd-metrics-tls"}} in volumes
    (endpoint,) = find(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    plain = template(helm, **{"metrics.secure": "false", "metrics.port": "8080"})
    assert "--metrics-secure=false" in manager(plain)["args"]
    assert "ClusterRole" not in {
        obj["kind"] for obj in plain if obj["metadata"]["name"] == "aimd-metrics-auth"
    }


def test_namespaced_binds_the_rules_in_each_namespace_and_confines_downloads_there(
    helm: Path,
) -> None:
    objects = template(helm, **NAMESPACED, **{"networkPolicy.enabled": "true"})
    assert config(objects)["AIMD_NAMESPACES"] == "team-a,team-b"
    assert {b["metadata"]["name"] for b in objects if b["kind"] == "ClusterRoleBinding"} == {
        "aimd-manager-cluster",
        "aimd-metrics-auth",
    }
    downloads = [
        obj
        for obj in objects
        if obj["kind"] == "NetworkPolicy" and obj["metadata"]["name"] == "aimd-downloads"
    ]
    assert sorted(obj["metadata"]["namespace"] for obj in downloads) == ["team-a", "team-b"]


def test_more_than_one_replica_needs_leader_election(helm: Path) -> None:
    result = helm_run(helm, "template", "aimd", str(CHART), "--set=leaderElection.enabled=false")
    assert result.returncode != 0
    assert "leaderElection.enabled" in result.stderr
    single = template(helm, **{"leaderElection.enabled": "false", "replicaCount": "1"})
    assert "--leader-elect" not in manager(single)["args"]
    assert not {"Role", "PodDisruptionBudget"} & {obj["kind"] for obj in single}


def test_metrics_can_be_switched_off(helm: Path) -> None:
    objects = template(
        helm, **{**EVERYTHING_ON, "networkPolicy.enabled": "false", "metrics.enabled": "false"}
    )
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
    for binding in (obj for obj in objects if obj["kind"] == "ClusterRoleBinding"):
        assert binding["subjects"][0]["name"] == "ops"


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
    maps = [obj for obj in template(helm, **EVERYTHING_ON) if dashboard(obj)]
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
    namespaced = template(helm, namespace, **{"namespaces[0]": namespace})
    objects += [obj for obj in namespaced if obj["kind"] == "RoleBinding"]
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
