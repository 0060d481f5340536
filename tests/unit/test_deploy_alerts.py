"""The alert rules: the plain rules file and the PrometheusRule hold the same groups, every alert
says how bad it is, what happened and where its runbook is, uses only metrics aimd exports, and
has promtool unit tests that see it fire and stay quiet.

tools/generate writes prometheusrule.yaml from rules.yaml (tests/unit/test_generate.py checks it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.unit.test_deploy_metrics import KNOWN_METRICS, metric_names, unknown_labels

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "manifests" / "prometheus" / "rules.yaml"
RUNBOOKS = REPO / "docs" / "runbooks.md"
PROMTOOL_TESTS = sorted((REPO / "tests" / "promtool").glob("*_test.yaml"))
RUNBOOK_BASE_URL = "https://github.com/eai-amd/aimd/blob/main/docs/runbooks.md"
ALERTS = {
    "AimdControllerDown",
    "AimdNoLeader",
    "AimdReconcileErrorsHigh",
    "AimdWorkQueueBackingUp",
    "AimdWatchStale",
    "AimdCacheDownloadFailingRepeatedly",
    "AimdCacheStuckNotAvailable",
    "AimdDownloadsStalled",
}
SEVERITIES = {"critical", "warning", "info"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def runbook_anchors() -> set[str]:
    """GitHub's anchors for the headings of docs/runbooks.md."""
    anchors = set()
    for line in RUNBOOKS.read_text().splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_the_alerts_of_issue_6_are_all_there_once() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert sorted(names) == sorted(ALERTS)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_says_how_bad_what_happened_and_where_its_runbook_is(
    rule: dict[str, Any],
) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert len(annotations["description"]) > len(annotations["summary"])
    url = urlsplit(annotations["runbook_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == RUNBOOK_BASE_URL
    assert url.fragment == rule["alert"].lower()
    assert url.fragment in runbook_anchors(), f"no section {rule['alert']} in docs/runbooks.md"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_uses_only_metrics_aimd_exports_and_selects_aimd(rule: dict[str, Any]) -> None:
    used = metric_names(rule["expr"])
    assert used, rule["expr"]
    assert used <= KNOWN_METRICS, f"unknown metrics {used - KNOWN_METRICS}"
    assert not unknown_labels(rule["expr"]), f"labels no metric has: {unknown_labels(rule['expr'])}"
    selectors = re.findall(r"\b[a-z_:]+\{([^}]*)\}", rule["expr"])
    assert selectors, rule["expr"]
    assert all('job="aimd"' in selector for selector in selectors), rule["expr"]


def test_every_alert_has_promtool_tests_that_see_it_fire_and_stay_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in PROMTOOL_TESTS:
        suite = load(path)
        assert suite["rule_files"] == ["../../manifests/prometheus/rules.yaml"], path
        for test in suite["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert firing == ALERTS, f"never seen firing: {ALERTS - firing}"
    assert quiet == ALERTS, f"never seen quiet: {ALERTS - quiet}"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return path


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    assert PROMTOOL_TESTS
    result = subprocess.run(
        [promtool(), "test", "rules", *map(str, PROMTOOL_TESTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
