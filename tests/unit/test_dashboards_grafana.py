"""The Grafana dashboards: valid JSON with the datasource and namespace variables, every panel
on that datasource, every query on metrics aimd exports (and valid PromQL, checked by promtool),
and the panels issue 6 asks for."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy_metrics import (
    HISTOGRAMS,
    KNOWN_METRICS,
    METRICS,
    metric_names,
    unknown_labels,
)

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
CONTROLLER = DASHBOARDS / "aimd-controller.json"
CACHES = DASHBOARDS / "aimd-caches.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What Grafana puts in for its own variables when it runs a query, for checking one with promtool.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$namespace": ".*", "$job": ".*"}


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries, rows' nested panels included."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets, and the metric queries of variables."""
    found = [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert match, f"variable {variable['name']}: {query}"
            found.append(match.group(1))
    return found


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


ALL = pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.stem)


def test_the_two_dashboards_exist_with_their_own_uids() -> None:
    boards = [load(path) for path in sorted(DASHBOARDS.glob("*.json"))]
    assert {CONTROLLER.name, CACHES.name} <= {path.name for path in DASHBOARDS.glob("*.json")}
    uids = [board["uid"] for board in boards]
    assert len(set(uids)) == len(uids)


@ALL
def test_dashboard_has_datasource_and_namespace_variables(path: Path) -> None:
    board = variables(load(path))
    assert board["datasource"]["type"] == "datasource"
    assert board["datasource"]["query"] == "prometheus"
    namespace = board["namespace"]
    assert namespace["type"] == "query"
    assert namespace["datasource"] == DATASOURCE
    assert namespace["includeAll"]
    assert namespace["multi"]
    assert namespace["allValue"] == ".*"


@ALL
def test_every_panel_queries_the_selected_datasource(path: Path) -> None:
    for panel in panels(load(path)):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


@ALL
def test_every_panel_has_a_title_a_description_and_its_own_id(path: Path) -> None:
    board = load(path)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in panels(board):
        assert panel["title"], panel
        assert panel["description"], panel["title"]


@ALL
def test_panels_fit_the_grid_without_overlapping(path: Path) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in load(path)["panels"]:
        box = panel["gridPos"]
        assert 0 <= box["x"] < box["x"] + box["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(box["x"], box["x"] + box["w"])
            for y in range(box["y"], box["y"] + box["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


@ALL
def test_every_query_uses_only_metrics_aimd_exports(path: Path) -> None:
    for expr in queries(load(path)):
        used = metric_names(expr)
        assert used, expr
        assert used <= KNOWN_METRICS, f"unknown metrics {used - KNOWN_METRICS} in {expr}"
        assert not unknown_labels(expr), f"labels no metric has: {unknown_labels(expr)} in {expr}"


def test_controller_dashboard_works_for_any_controller_runtime_operator() -> None:
    """No aimd metric in it, and every query filtered by the namespace and job variables."""
    board = load(CONTROLLER)
    assert "job" in variables(board)
    for expr in queries(board):
        assert not any(name.startswith("aim_") for name in metric_names(expr)), expr
    for panel in panels(board):
        for target in panel["targets"]:
            for selector in re.findall(r"\{([^}]*)\}", target["expr"]):
                assert 'namespace=~"$namespace"' in selector, target["expr"]
                assert 'job=~"$job"' in selector, target["expr"]


def test_cache_panels_follow_the_namespace_variable() -> None:
    """Cache metrics carry the cache's namespace; informer metrics carry aimd's, so the watch
    panels are the only ones that ignore the variable."""
    for panel in panels(load(CACHES)):
        for target in panel["targets"]:
            for name in metric_names(target["expr"]):
                if not name.startswith("aim_informer_"):
                    assert re.search(rf'{name}\{{[^}}]*namespace=~"\$namespace"', target["expr"])


@pytest.mark.parametrize(
    ("path", "needed"),
    [
        (
            CONTROLLER,
            {
                "controller_runtime_reconcile_total",  # reconcile rate
                "controller_runtime_reconcile_errors_total",  # errors
                "controller_runtime_reconcile_time_seconds_bucket",  # latency percentiles
                "workqueue_depth",
                "workqueue_queue_duration_seconds_bucket",  # queue latency
                "workqueue_retries_total",
                "controller_runtime_active_workers",
                "leader_election_master_status",
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
            },
        ),
        (
            CACHES,
            {
                "aim_model_caches",  # caches by status
                "aim_template_caches",
                "aim_download_progress_ratio",  # downloads in flight with progress
                "aim_download_throughput_bytes_per_second",
                "aim_downloads_failed_total",  # failures by reason
                "aim_cache_requests_total",  # reuse ratio
                "aim_model_cache_time_to_available_seconds_bucket",
                "aim_informer_last_event_timestamp_seconds",  # watch health
            },
        ),
    ],
    ids=lambda value: value.stem if isinstance(value, Path) else "",
)
def test_dashboard_shows_what_issue_6_lists(path: Path, needed: set[str]) -> None:
    used = set().union(*(metric_names(expr) for expr in queries(load(path))))
    assert needed <= used, f"missing {needed - used}"


def test_failures_are_shown_by_reason() -> None:
    exprs = [expr for expr in queries(load(CACHES)) if "aim_downloads_failed_total" in expr]
    assert any("by (reason)" in expr for expr in exprs)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return path


def filled_in(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


# One value per label, as aimd would export it; the cache metrics' namespace is the cache's.
LABEL_VALUES = {
    "controller": "modelcache", "name": "modelcache", "result": "reused", "code": "200",
    "method": "GET", "verb": "GET", "host": "10.0.0.1:443", "resource": "aimmodelcaches",
    "type": "added",
    "reason": "AuthFailed", "status": "Progressing", "model_cache": "llama", "namespace": "ml",
}  # fmt: skip
TARGET = {"job": "aimd", "instance": "10.0.0.1:8080", "pod": "aimd-0", "namespace": "aimd-system"}


def aimd_like_series() -> list[dict[str, str]]:
    """Two hours, one sample a minute, of one series per metric with every label of the
    contract: counters grow, gauges hold, histograms observe into two buckets."""
    series = []
    for name, labels in METRICS.items():
        values = {**TARGET, **{label: LABEL_VALUES[label] for label in labels}}
        if name.endswith("_total"):
            series.append((name, values, "0+10x120"))
        elif name in HISTOGRAMS:
            series += [
                (f"{name}_bucket", {**values, "le": "1"}, "0+1x120"),
                (f"{name}_bucket", {**values, "le": "+Inf"}, "0+2x120"),
                (f"{name}_sum", values, "0+3x120"),
                (f"{name}_count", values, "0+2x120"),
            ]
        else:
            series.append((name, values, "1x120"))
    series.append(("up", TARGET, "1x120"))
    return [
        {"series": name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}",
         "values": values}
        for name, labels, values in series
    ]  # fmt: skip


@ALL
def test_promtool_parses_every_query(path: Path, tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule promtool must accept."""
    rules = [
        {"record": f"dashboard:query_{number}", "expr": filled_in(expr)}
        for number, expr in enumerate(queries(load(path)))
    ]
    rules_file = tmp_path / "queries.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@ALL
def test_every_query_returns_data_from_series_shaped_like_aimds(path: Path, tmp_path: Path) -> None:
    """No panel silently empty because it matches, joins or groups on a label aimd's series do
    not have: each query becomes an alert that fires when the query returns anything, and
    promtool evaluates them over series with exactly the contract's labels."""
    exprs = [filled_in(expr) for expr in queries(load(path))]
    rules = [{"alert": f"Query{number}", "expr": f"count({expr}) > 0"}
             for number, expr in enumerate(exprs)]  # fmt: skip
    (tmp_path / "queries.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]})
    )
    checks = [{"eval_time": "2h", "alertname": rule["alert"], "exp_alerts": [{"exp_labels": {}}]}
              for rule in rules]  # fmt: skip
    suite = {
        "rule_files": ["queries.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": aimd_like_series(),
                   "alert_rule_test": checks}],
    }  # fmt: skip
    (tmp_path / "queries_test.yaml").write_text(yaml.safe_dump(suite))
    result = subprocess.run(
        [promtool(), "test", "rules", "queries_test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    empty = sorted({int(n) for n in re.findall(r"alertname: Query(\d+)", output)})
    assert result.returncode == 0, "no data from:\n" + "\n".join(exprs[n] for n in empty)
