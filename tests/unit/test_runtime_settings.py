"""Settings from flags and environment, and what the manager makes of them; health and
readiness checks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aimd.kube.client import KubeClient
from aimd.kube.throttle import TokenBucketRateLimiter
from aimd.runtime.health import Checks
from aimd.runtime.manager import Manager
from aimd.settings import Settings, parse_bind_address
from tests.support import NoAuth


def test_defaults_follow_kubebuilder() -> None:
    settings = Settings.parse([], environ={})
    assert settings.metrics_bind_address == ":8080"
    assert settings.health_probe_bind_address == ":8081"
    assert settings.leader_elect is False
    assert settings.leader_election_id == "aimd-leader"
    assert (settings.lease_duration, settings.renew_deadline, settings.retry_period) == (15, 10, 2)
    assert (settings.kube_api_qps, settings.kube_api_burst) == (20, 30), "controller-runtime's"
    assert settings.namespaces == (), "every namespace"
    assert (settings.log_format, settings.log_level) == ("text", "info")


def test_rate_limit_namespaces_and_logging_flags_with_environment_fallbacks() -> None:
    settings = Settings.parse(
        ["--kube-api-qps", "50", "--namespaces", "team-a, team-b,,team-a", "--log-format=json"],
        environ={"AIMD_KUBE_API_BURST": "100", "AIMD_LOG_LEVEL": "debug"},
    )
    assert (settings.kube_api_qps, settings.kube_api_burst) == (50, 100)
    assert settings.namespaces == ("team-a", "team-b")
    assert (settings.log_format, settings.log_level) == ("json", "debug")
    from_env = Settings.parse(
        [], environ={"AIMD_NAMESPACES": "ml", "AIMD_KUBE_API_QPS": "-1", "AIMD_LOG_FORMAT": "json"}
    )
    assert from_env.namespaces == ("ml",)
    assert from_env.kube_api_qps == -1, "<= 0: unlimited"
    assert from_env.log_format == "json"


def test_fractional_lease_settings_are_kept() -> None:
    settings = Settings.parse(
        ["--lease-duration", "4.5", "--renew-deadline", "3.5s", "--retry-period", "500ms"],
        environ={},
    )
    assert (settings.lease_duration, settings.renew_deadline, settings.retry_period) == (
        4.5,
        3.5,
        0.5,
    )


def test_flags_win_over_environment_which_wins_over_defaults() -> None:
    environ = {
        "AIMD_WORKERS": "8",
        "AIMD_METRICS_BIND_ADDRESS": ":9090",
        "AIMD_LEADER_ELECT": "true",
        "POD_NAMESPACE": "aimd-system",
        "POD_NAME": "aimd-0",
        "AIMD_LEASE_DURATION": "30s",
        "AIMD_IMAGE": "registry/aimd:1",
    }
    settings = Settings.parse(["--workers", "2", "--renew-deadline", "20"], environ=environ)
    assert settings.workers == 2
    assert settings.metrics_bind_address == ":9090"
    assert settings.leader_elect is True
    assert settings.leader_election_namespace == "aimd-system"
    assert settings.leader_election_identity.startswith("aimd-0_")
    assert settings.lease_duration == 30
    assert settings.renew_deadline == 20
    assert settings.image == "registry/aimd:1"


def test_bare_leader_elect_flag_turns_it_on() -> None:
    settings = Settings.parse(["--leader-elect", "--leader-election-namespace", "x"], environ={})
    assert settings.leader_elect is True


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.workers = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "argv",
    [
        ["--leader-elect"],  # no namespace to put the Lease in
        ["--lease-duration", "5", "--renew-deadline", "10"],
        ["--workers", "0"],
        ["--metrics-bind-address", "nonsense"],
        ["--namespaces", "Not_A_Namespace"],
        ["--kube-api-burst", "0"],
        ["--log-level", "loud"],
    ],
)
def test_inconsistent_settings_are_refused(argv: list[str]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        Settings.parse(argv, environ={})


def test_bind_addresses_are_go_style() -> None:
    assert parse_bind_address(":8080") == ("0.0.0.0", 8080)
    assert parse_bind_address("127.0.0.1:9") == ("127.0.0.1", 9)
    assert parse_bind_address("[::1]:9") == ("::1", 9)
    assert parse_bind_address("0") is None


@dataclass
class FakeInformer:
    name: str
    synced: bool
    last_progress: float


def test_ready_once_every_informer_synced_and_unhealthy_when_a_watch_stalls() -> None:
    now = [1000.0]
    informers = [FakeInformer("pods", True, 990.0), FakeInformer("jobs.batch", False, 999.0)]
    checks = Checks(lambda: informers, stall_timeout=300, clock=lambda: now[0])
    ready, lines = checks.ready()
    assert not ready
    assert "[-]informer jobs.batch not synced" in lines
    informers[1].synced = True
    assert checks.ready()[0]

    assert checks.healthy()[0]
    now[0] = 1295.0
    healthy, lines = checks.healthy()
    assert not healthy
    assert "[-]watch pods: no progress for 305s" in lines


def test_the_manager_throttles_every_client_it_makes_and_fences_the_writers() -> None:
    base = KubeClient(NoAuth("http://127.0.0.1:1"))
    settings = Settings(
        kube_api_qps=5, kube_api_burst=7, leader_elect=True, leader_election_namespace="ns"
    )
    manager = Manager(base, settings, handle_signals=False)
    assert manager.elector is not None
    clients = [manager.client, manager.events.client, manager.elector.client]
    limiters = [client.rate_limiter for client in clients]
    assert all(isinstance(limiter, TokenBucketRateLimiter) for limiter in limiters)
    assert {(limiter.qps, limiter.burst) for limiter in limiters} == {(5, 7)}  # type: ignore[union-attr]
    assert len({id(limiter) for limiter in limiters}) == 3, "a bucket each, as controller-runtime"
    assert manager.client.fence == manager.elector.check
    assert manager.events.client.fence == manager.elector.check
    assert manager.elector.client.fence is None, "the lease itself is never fenced"
    assert base.rate_limiter is None, "the client passed in is left as it was"

    unlimited = Manager(base, Settings(kube_api_qps=0), handle_signals=False)
    assert unlimited.client.rate_limiter is None
    assert unlimited.client.fence is None, "without leader election every replica writes"
