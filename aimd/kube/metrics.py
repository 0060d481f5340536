"""Metrics of the kube layer, with client-go's names so Go operators' dashboards read them.

They live in prometheus_client's default registry, next to the process metrics; the runtime's
metrics join them there. ``_created`` series are switched off for the whole process here, the
lowest layer, so that no counter anywhere grows a second series Go exporters do not have.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]


def _rest_client_requests(registry: CollectorRegistry) -> Counter:
    return Counter(
        "rest_client_requests_total",
        "Number of HTTP requests, partitioned by status code, method, and host.",
        ["code", "method", "host"],
        registry=registry,
    )


REST_CLIENT_REQUESTS = _rest_client_requests(REGISTRY)
