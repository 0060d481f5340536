"""Generated files are what their one source makes (tools/generate): the CRDs, the
PrometheusRule, the Helm chart's copies and its version."""

from __future__ import annotations

from aimd import __version__
from aimd.dev import generate


def test_every_generated_file_is_current() -> None:
    stale = [str(path.relative_to(generate.REPO)) for path in generate.stale()]
    assert stale == [], "run tools/generate and commit the result"


def test_the_chart_carries_the_one_version() -> None:
    text = (generate.CHART / "Chart.yaml").read_text()
    assert f"version: {__version__}" in text
    assert f'appVersion: "{__version__}"' in text


def test_the_prometheus_rule_holds_the_rules_files_groups() -> None:
    import yaml

    rule = yaml.safe_load(generate.PROMETHEUS_RULE.read_text())
    assert rule == generate.prometheus_rule(yaml.safe_load(generate.RULES.read_text())["groups"])
