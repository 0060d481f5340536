"""The cache metrics (``aim_*``) dashboards and alerts are built on; names and labels are a
contract (tests/unit/test_deploy_metrics.py).

Gauges are computed from the index at scrape time, so they are always exactly what the caches'
statuses say and nothing has to be kept in step; counters and the histogram count what the
reconcilers did. No ``_created`` series (switched off by :mod:`aimd.kube.metrics`).
"""

from __future__ import annotations

import weakref
from collections import Counter as Tally
from collections.abc import Iterable
from typing import cast

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import aimd.kube.metrics  # noqa: F401  (switches _created series off before anything is made)
from aimd.api.meta import parse_time
from aimd.api.types import ModelCache, TemplateCache
from aimd.runtime.index import Index

TIME_TO_AVAILABLE_BUCKETS = (
    10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
)  # fmt: skip

DOWNLOAD_BYTES = Counter(
    "aim_download_bytes", "Bytes of model data downloaded into caches", ["namespace"]
)
DOWNLOADS_STARTED = Counter(
    "aim_downloads_started", "Download Jobs started (first attempts and retries)", ["namespace"]
)
DOWNLOADS_SUCCEEDED = Counter(
    "aim_downloads_succeeded", "Downloads that completed on a bound volume", ["namespace"]
)
DOWNLOADS_FAILED = Counter(
    "aim_downloads_failed",
    "Downloads (or size probes) that failed, by reason",
    ["namespace", "reason"],
)
DOWNLOAD_RETRIES = Counter(
    "aim_download_retries", "Download attempts started after a failure", ["namespace"]
)
CACHE_REQUESTS = Counter(
    "aim_cache_requests",
    "Requests for a cache: satisfied by an existing one (reused) or by a new download (created)",
    ["namespace", "result"],
)
TIME_TO_AVAILABLE = Histogram(
    "aim_model_cache_time_to_available_seconds",
    "Seconds from a model cache's creation to its first Available",
    ["namespace"],
    buckets=TIME_TO_AVAILABLE_BUCKETS,
)

_INDEXES: weakref.WeakValueDictionary[str, Index] = weakref.WeakValueDictionary()


def watch(model_caches: Index, template_caches: Index) -> None:
    """Tells the collector which indexes the gauges are read from."""
    _INDEXES["model_caches"] = model_caches
    _INDEXES["template_caches"] = template_caches


class CacheCollector(Collector):
    def describe(self) -> Iterable[Metric]:
        return self._families([], [])[:0]

    def collect(self) -> Iterable[Metric]:
        mcs = _INDEXES.get("model_caches")
        tcs = _INDEXES.get("template_caches")
        return self._families(
            cast(list[ModelCache], list(mcs or ())), cast(list[TemplateCache], list(tcs or ()))
        )

    def _families(self, mcs: list[ModelCache], tcs: list[TemplateCache]) -> list[Metric]:
        by_status = GaugeMetricFamily(
            "aim_model_caches", "Model caches by status", labels=["namespace", "status"]
        )
        tc_by_status = GaugeMetricFamily(
            "aim_template_caches", "Template caches by status", labels=["namespace", "status"]
        )
        cached = GaugeMetricFamily(
            "aim_model_cache_bytes", "Bytes held by Available model caches", labels=["namespace"]
        )
        progress = GaugeMetricFamily(
            "aim_download_progress_ratio",
            "Fraction downloaded of a running download",
            labels=["namespace", "model_cache"],
        )
        throughput = GaugeMetricFamily(
            "aim_download_throughput_bytes_per_second",
            "Current speed of a running download",
            labels=["namespace", "model_cache"],
        )
        next_retry = GaugeMetricFamily(
            "aim_model_cache_next_retry_timestamp_seconds",
            "When a Failed model cache retries (Unix time)",
            labels=["namespace", "model_cache"],
        )
        counts: Tally[tuple[str, str]] = Tally()
        bytes_cached: Tally[str] = Tally()
        for mc in mcs:
            namespace = mc["metadata"].get("namespace", "")
            name = mc["metadata"]["name"]
            status = mc["status"]
            state = status.get("status") or "Pending"
            counts[(namespace, state)] += 1
            if state == "Available":
                bytes_cached[namespace] += int(status.get("sizeBytes") or 0)
            elif state == "Progressing" and status.get("progress"):
                done = status["progress"]
                total = done.get("totalBytes") or 0
                if total:
                    progress.add_metric(
                        [namespace, name], (done.get("downloadedBytes") or 0) / total
                    )
                throughput.add_metric([namespace, name], float(done.get("bytesPerSecond") or 0))
            elif state == "Failed":
                retry = parse_time(status.get("nextRetryTime"))
                if retry is not None:
                    next_retry.add_metric([namespace, name], retry.timestamp())
        for (namespace, state), count in sorted(counts.items()):
            by_status.add_metric([namespace, state], count)
        for namespace, total in sorted(bytes_cached.items()):
            cached.add_metric([namespace], total)
        tc_counts: Tally[tuple[str, str]] = Tally()
        for tc in tcs:
            tc_counts[
                (tc["metadata"].get("namespace", ""), tc["status"].get("status") or "Pending")
            ] += 1
        for (namespace, state), count in sorted(tc_counts.items()):
            tc_by_status.add_metric([namespace, state], count)
        return [by_status, tc_by_status, cached, progress, throughput, next_retry]


REGISTRY.register(CacheCollector())
