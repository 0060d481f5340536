"""Settings from flags and environment; health and readiness checks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aimd.runtime.health import Checks
from aimd.settings import Settings, parse_bind_address


def test_defaults_follow_kubebuilder() -> None:
    settings = Settings.parse([], environ={})
    assert settings.metrics_bind_address == ":8443"
    assert settings.metrics_secure is True
    assert settings.health_probe_bind_address == ":8081"
    assert settings.leader_elect is False
    assert settings.leader_election_id == "aimd-leader"
    assert (settings.lease_duration, settings.renew_deadline, settings.retry_period) == (15, 10, 2)


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
