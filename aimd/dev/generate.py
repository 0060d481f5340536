"""Every generated file of the repository, written from its one source (`tools/generate`).

- the CRDs, from :mod:`aimd.api.crds`, into ``manifests/crds/`` and the chart's ``crds/``;
- the PrometheusRule, from the plain rules file Prometheus and promtool read;
- the chart's copies of files kustomize installs (RBAC, the admission policy, the rules, the
  dashboards), so the chart and ``manifests/`` cannot drift apart;
- the chart's ``version`` and ``appVersion``, from ``aimd.__version__`` (the version is written
  once).

``python -m aimd.dev.generate`` writes them; ``--check`` changes nothing and lists what is stale
(CI fails on it, through a unit test).
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from aimd import __version__
from aimd.api import crds

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "aimd"
RULES = REPO / "manifests" / "prometheus" / "rules.yaml"
PROMETHEUS_RULE = REPO / "manifests" / "prometheus" / "prometheusrule.yaml"
# chart file or folder → the file or folder of the repository it is a copy of
CHART_COPIES = {
    "files/rules.yaml": "manifests/prometheus/rules.yaml",
    "files/rbac/cluster_role.yaml": "manifests/rbac/cluster_role.yaml",
    "files/rbac/cluster_role_cluster.yaml": "manifests/rbac/cluster_role_cluster.yaml",
    "files/rbac/metrics_auth_role.yaml": "manifests/rbac/metrics_auth_role.yaml",
    "files/rbac/metrics_reader_role.yaml": "manifests/rbac/metrics_reader_role.yaml",
    "files/policy/validating_admission_policy.yaml": (
        "manifests/policy/validating_admission_policy.yaml"
    ),
    "files/dashboards": "dashboards",
}


def prometheus_rule(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The Prometheus Operator's PrometheusRule holding ``groups``."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "aimd",
            "namespace": "aimd-system",
            "labels": {"app.kubernetes.io/name": "aimd"},
        },
        "spec": {"groups": groups},
    }


def render_prometheus_rule() -> str:
    def block_for_multiline(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(str, block_for_multiline)
    groups = yaml.safe_load(RULES.read_text())["groups"]
    body = yaml.dump(prometheus_rule(groups), Dumper=Dumper, sort_keys=False, width=100)
    return "# Generated from rules.yaml by tools/generate; edit rules.yaml.\n" + body


def chart_metadata() -> str:
    text = (CHART / "Chart.yaml").read_text()
    text = re.sub(r"(?m)^version: .*$", f"version: {__version__}", text)
    return re.sub(r"(?m)^appVersion: .*$", f'appVersion: "{__version__}"', text)


def generated() -> dict[Path, Callable[[], str]]:
    """Every generated file and how to make its text."""
    files: dict[Path, Callable[[], str]] = {}
    for crd in crds.all_crds():
        for folder in (REPO / "manifests" / "crds", CHART / "crds"):
            files[folder / crds.file_name(crd)] = functools.partial(crds.render, crd)
    files[PROMETHEUS_RULE] = render_prometheus_rule
    for copy, source in CHART_COPIES.items():
        original = REPO / source
        sources = sorted(original.iterdir()) if original.is_dir() else [original]
        for path in sources:
            target = CHART / copy / path.name if original.is_dir() else CHART / copy
            files[target] = path.read_text
    files[CHART / "Chart.yaml"] = chart_metadata
    return files


def strays() -> list[Path]:
    """Files in a generated folder that nothing generates (a CRD or dashboard since removed)."""
    made = set(generated())
    folders = {path.parent for path in made if path.parent.name in ("crds", "dashboards")}
    return sorted(p for folder in folders for p in folder.iterdir() if p not in made)


def stale() -> list[Path]:
    """The generated files whose text is not what the generator makes, and the strays."""
    out_of_date = [
        path
        for path, make in generated().items()
        if not path.exists() or path.read_text() != make()
    ]
    return sorted(out_of_date + strays())


def write() -> list[Path]:
    """Writes every generated file that is stale, removes strays; returns what changed."""
    changed = stale()
    for path in strays():
        path.unlink()
    for path, make in generated().items():
        if path in changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(make())
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list stale files, change none")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for path in out_of_date:
            print(f"stale: {path.relative_to(REPO)}")
        return 1 if out_of_date else 0
    for path in write():
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
