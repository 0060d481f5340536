"""The cache gauges are read from the index at scrape time, with the contract's labels."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from aimd.caching import metrics
from aimd.runtime.index import Index


def cache(name: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
        "spec": {"sourceUri": f"hf://o/{name}"},
        "status": {"status": status, **extra},
    }


def test_gauges_follow_the_caches_statuses() -> None:
    mcs, tcs = Index(), Index()
    mcs.apply(cache("a", "Available", sizeBytes=100))
    mcs.apply(cache("b", "Progressing", progress={"totalBytes": 10, "downloadedBytes": 5,
                                                  "bytesPerSecond": 2}))  # fmt: skip
    mcs.apply(cache("c", "Failed", nextRetryTime="2026-01-01T00:00:00Z"))
    tcs.apply(cache("t", "Progressing"))
    metrics.watch(mcs, tcs)
    sample = REGISTRY.get_sample_value
    assert sample("aim_model_caches", {"namespace": "ns", "status": "Available"}) == 1
    assert sample("aim_template_caches", {"namespace": "ns", "status": "Progressing"}) == 1
    assert sample("aim_model_cache_bytes", {"namespace": "ns"}) == 100
    assert sample("aim_download_progress_ratio", {"namespace": "ns", "model_cache": "b"}) == 0.5
    throughput = {"namespace": "ns", "model_cache": "b"}
    assert sample("aim_download_throughput_bytes_per_second", throughput) == 2
    retry = {"namespace": "ns", "model_cache": "c"}
    assert sample("aim_model_cache_next_retry_timestamp_seconds", retry) == 1767225600
    assert sample("aim_download_progress_ratio", {"namespace": "ns", "model_cache": "a"}) is None
