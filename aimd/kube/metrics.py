"""Metrics of the kube layer, with client-go's names so Go operators' dashboards read them.

They live in prometheus_client's default registry, next to the process metrics; the runtime's
metrics join them there. ``_created`` series are switched off for the whole process here, the
lowest layer, so that no counter anywhere grows a second series Go exporters do not have.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]


def _rest_client_requests(registry: CollectorRegistry) -> Counter:
    return Counter(
        "rest_client_requests_total",
        "Number of HTTP requests, partitioned by status code, method, and host.",
        ["code", "method", "host"],
        registry=registry,
    )


REST_CLIENT_REQUESTS = _rest_client_requests(REGISTRY)

LEADER_ELECTION_MASTER_STATUS = Gauge(
    "leader_election_master_status",
    "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 "
    "indicates master. 'name' is the string used to identify the lease. Please make sure to "
    "group by name.",
    ["name"],
    registry=REGISTRY,
)
