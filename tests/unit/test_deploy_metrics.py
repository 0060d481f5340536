"""The metric names that dashboards and alerts may use, and a reader of PromQL that finds the
metrics an expression selects. test_deploy_alerts and test_dashboards_* check against these.

The names are the contract of SPEC §3: the controller-runtime names (so dashboards and alerts made
for Go operators work unchanged) and aimd's own `aim_` metrics.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import aimd

WORKQUEUE = frozenset({"name", "controller"})
# Every series' labels as aimd exports them (histograms: the labels besides `le`).
METRICS: dict[str, frozenset[str]] = {
    name: frozenset(labels)
    for name, labels in {
        "controller_runtime_reconcile_total": {"controller", "result"},
        "controller_runtime_reconcile_errors_total": {"controller"},
        "controller_runtime_reconcile_time_seconds": {"controller"},
        "controller_runtime_active_workers": {"controller"},
        "controller_runtime_max_concurrent_reconciles": {"controller"},
        "controller_runtime_terminal_reconcile_errors_total": {"controller"},
        "controller_runtime_reconcile_panics_total": {"controller"},
        "workqueue_depth": WORKQUEUE,
        "workqueue_adds_total": WORKQUEUE,
        "workqueue_queue_duration_seconds": WORKQUEUE,
        "workqueue_work_duration_seconds": WORKQUEUE,
        "workqueue_retries_total": WORKQUEUE,
        "workqueue_unfinished_work_seconds": WORKQUEUE,
        "workqueue_longest_running_processor_seconds": WORKQUEUE,
        "rest_client_requests_total": {"code", "method", "host"},
        "rest_client_rate_limiter_duration_seconds": {"verb", "host"},
        "aim_events_dropped_total": {"reason"},
        "leader_election_master_status": {"name"},
        "process_cpu_seconds_total": set(),
        "process_resident_memory_bytes": set(),
        "aim_informer_events_total": {"resource", "type"},
        "aim_informer_relists_total": {"resource", "reason"},
        "aim_informer_last_event_timestamp_seconds": {"resource"},
        "aim_model_caches": {"namespace", "status"},
        "aim_template_caches": {"namespace", "status"},
        "aim_model_cache_bytes": {"namespace"},
        "aim_download_progress_ratio": {"namespace", "model_cache"},
        "aim_download_throughput_bytes_per_second": {"namespace", "model_cache"},
        "aim_model_cache_next_retry_timestamp_seconds": {"namespace", "model_cache"},
        "aim_download_bytes_total": {"namespace"},
        "aim_downloads_started_total": {"namespace"},
        "aim_downloads_succeeded_total": {"namespace"},
        "aim_downloads_failed_total": {"namespace", "reason"},
        "aim_download_retries_total": {"namespace"},
        "aim_cache_requests_total": {"namespace", "result"},
        "aim_model_cache_time_to_available_seconds": {"namespace"},
    }.items()
}
HISTOGRAMS = frozenset(
    {
        "controller_runtime_reconcile_time_seconds",
        "workqueue_queue_duration_seconds",
        "workqueue_work_duration_seconds",
        "aim_model_cache_time_to_available_seconds",
        "rest_client_rate_limiter_duration_seconds",
    }
)
# `up` is not exported by aimd: Prometheus records it for every scrape.
SYNTHETIC = frozenset({"up"})
# What Prometheus adds to every series it scrapes (the ServiceMonitor; docs/runbooks.md for a
# plain scrape config).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})


def series_labels(name: str) -> frozenset[str]:
    """The labels a series of that name carries once scraped."""
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    if base in HISTOGRAMS:
        return METRICS[base] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
    return METRICS.get(name, frozenset()) | TARGET_LABELS


KNOWN_METRICS = (
    frozenset(METRICS.keys() - HISTOGRAMS)
    | SYNTHETIC
    | {f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)

# Issue 6 item 1: written separately from the runtime's metrics.
CACHE_METRICS = frozenset(
    name for name in KNOWN_METRICS if name.startswith("aim_") and "informer" not in name
)

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*(?![\w:])")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    }
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (Grafana's `$variables` allowed in it).

    Strings, label matchers, ranges and grouping labels are dropped first, so what is left that
    looks like a name and is not a function call or a keyword is a metric.
    """
    text = _VARIABLES.sub("", _STRINGS.sub('""', expr))
    text = _BRACKETS.sub("", _BRACES.sub("", text))
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        after = text[match.end() :].lstrip()
        if after.startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def label_names(expr: str) -> set[str]:
    """The label names an expression matches on or groups by."""
    text = _STRINGS.sub('""', expr)
    names = {match.group(1) for match in re.finditer(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", text)}
    for group in _GROUPING.finditer(_VARIABLES.sub("", text)):
        inside = group.group()[group.group().index("(") + 1 : -1]
        names |= {label.strip() for label in inside.split(",") if label.strip()}
    return names


def unknown_labels(expr: str) -> set[str]:
    """Labels the expression uses that none of its metrics carry."""
    carried = set().union(*(series_labels(name) for name in metric_names(expr)))
    return label_names(expr) - carried


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('up{job="aimd"} == 1', {"up"}),
        ("absent(up)", {"up"}),
        (
            'sum by (job, le) (rate(workqueue_queue_duration_seconds_bucket{job="a"}[5m])) > 1e3',
            {"workqueue_queue_duration_seconds_bucket"},
        ),
        (
            "a_total / on (x, y) group_left (z) b_total unless c offset 5m",
            {"a_total", "b_total", "c"},
        ),
        (
            'sum(rate(x_total{namespace=~"$namespace"}[$__rate_interval])) by (reason)',
            {"x_total"},
        ),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
        ("time() - ts_seconds > 900", {"ts_seconds"}),
        ("histogram_quantile(0.99, sum(rate(h_bucket[5m])) without (pod))", {"h_bucket"}),
    ],
)
def test_metric_names_finds_exactly_the_selected_metrics(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum by (c, le) (rate(x_bucket{job="a", name=~"b"}[5m]))', {"c", "le", "job", "name"}),
        ("a / on (x) group_left (y) b", {"x", "y"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', set()),
    ],
)  # fmt: skip
def test_label_names_finds_matchers_and_groupings(expr: str, expected: set[str]) -> None:
    assert label_names(expr) == expected


def test_unknown_labels_are_found() -> None:
    assert unknown_labels("sum by (controller) (workqueue_depth)") == set()
    assert unknown_labels("sum by (queue) (workqueue_depth)") == {"queue"}
    assert (
        unknown_labels('sum by (le) (rate(workqueue_work_duration_seconds_bucket{pod="p"}[1m]))')
        == set()
    )


def test_histograms_are_in_the_contract() -> None:
    assert METRICS.keys() >= HISTOGRAMS
    assert all(
        name.startswith(("controller_runtime_", "workqueue_", "rest_client_", "aim_"))
        for name in HISTOGRAMS
    )


def exported_metrics() -> set[str]:
    """The sample names of every metric that importing aimd's modules registers."""
    for module in pkgutil.walk_packages(aimd.__path__, "aimd."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    names = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def test_aimd_exports_the_controller_runtime_and_informer_metrics() -> None:
    missing = KNOWN_METRICS - CACHE_METRICS - SYNTHETIC - exported_metrics()
    assert not missing, f"dashboards and alerts use metrics aimd does not export: {missing}"


def test_aimd_exports_the_cache_metrics() -> None:
    exported = exported_metrics() & CACHE_METRICS
    if not exported:
        pytest.skip("the cache metrics (issue 6 item 1) are not written yet")
    assert exported == CACHE_METRICS, f"missing: {CACHE_METRICS - exported}"


def registered() -> dict[str, frozenset[str]]:
    """Label names by metric name (counters without `_total`) of what aimd registers: declared
    ones for prometheus_client's metric objects, those of the current samples for collectors
    that build their families at scrape time."""
    exported_metrics()
    found: dict[str, frozenset[str]] = {}
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("aimd."):
            for value in vars(module).values():
                if isinstance(value, MetricWrapperBase):
                    found[value._name] = frozenset(value._labelnames)
    for family in REGISTRY.collect():
        for sample in family.samples:
            found.setdefault(family.name, frozenset(set(sample.labels) - {"le"}))
    return found


def test_aimd_exports_the_labels_dashboards_and_alerts_rely_on() -> None:
    contract = {re.sub(r"_total$", "", name): labels for name, labels in METRICS.items()}
    found = registered()
    assert "controller_runtime_reconcile" in found
    for name, labels in found.items():
        if name in contract:
            assert labels == contract[name], f"{name}: {sorted(labels)} != {sorted(contract[name])}"
