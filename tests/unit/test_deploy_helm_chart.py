"""The Helm chart without helm: the files it copies from manifests/ and dashboards/ are current,
and its default values are what manifests/ installs. Rendering is tested in
tests/integration/test_deploy_helm.py, which needs the helm binary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.unit.test_deploy_alerts import RUNBOOK_BASE_URL
from tests.unit.test_deploy_kustomize import one, render

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "aimd"


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def chart() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return loaded


def test_chart_metadata() -> None:
    meta = chart()
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "aimd"
    assert meta["type"] == "application"
    assert meta["appVersion"] == meta["version"]
    assert meta["kubeVersion"] == ">=1.30.0-0", "ValidatingAdmissionPolicy v1"
    assert (CHART / "README.md").exists()


def test_defaults_install_what_manifests_install() -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    defaults = values()
    assert defaults["replicaCount"] == deployment["spec"]["replicas"]
    assert f"{defaults['image']['repository']}:{chart()['appVersion']}" == container["image"]
    assert defaults["podSecurityContext"] == pod["securityContext"]
    assert defaults["securityContext"] == container["securityContext"]
    assert defaults["resources"] == container["resources"]
    assert defaults["leaderElection"] == {"enabled": True, "id": "aimd-leader"}
    assert defaults["metrics"]["port"] == 8443
    assert defaults["metrics"]["secure"] is True
    assert defaults["health"]["port"] == 8081
    assert defaults["kubeApi"] == {"qps": 400, "burst": 600}
    config = one(objects, "ConfigMap")["data"]
    assert ",".join(defaults["config"]["allowedEndpoints"]) == config["AIMD_ALLOWED_ENDPOINTS"]
    assert (
        ",".join(defaults["config"]["allowedDownloadImages"])
        == (config["AIMD_ALLOWED_DOWNLOAD_IMAGES"])
    )
    assert (
        str(defaults["config"]["requireSecretConsent"]).lower()
        == (config["AIMD_REQUIRE_SECRET_CONSENT"])
    )
    assert defaults["namespaces"] == []
    assert defaults["admissionPolicy"] == {"enabled": True}


def test_conventional_values_are_there() -> None:
    defaults = values()
    for key in ("image", "imagePullSecrets", "replicaCount", "resources", "nodeSelector",
                "tolerations", "affinity", "podSecurityContext", "securityContext",
                "serviceAccount", "leaderElection", "metrics", "prometheusRule"):  # fmt: skip
        assert key in defaults, key
    assert set(defaults["metrics"]["serviceMonitor"]) >= {"enabled", "interval", "labels"}


def schema_mismatches(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Keys of values.yaml the schema does not describe, and closed schema objects whose keys
    values.yaml lacks (so every value is documented in both)."""
    properties = schema.get("properties")
    if properties is None or not isinstance(value, dict):
        return []
    problems = [f"{where}.{key}: not in the schema" for key in value.keys() - properties.keys()]
    problems += [
        f"{where}.{key}: no default" for key in properties.keys() - value.keys() - {"global"}
    ]
    for key in value.keys() & properties.keys():
        problems += schema_mismatches(value[key], properties[key], f"{where}.{key}")
    return problems


def test_values_schema_describes_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert schema_mismatches(values(), schema) == []


def test_runbook_links_can_be_moved() -> None:
    """The PrometheusRule template replaces the rules file's base URL with the value."""
    assert values()["prometheusRule"]["runbookBaseUrl"] == RUNBOOK_BASE_URL
    template = (CHART / "templates" / "prometheusrule.yaml").read_text()
    assert f'replace "{RUNBOOK_BASE_URL}" .Values.prometheusRule.runbookBaseUrl' in template
