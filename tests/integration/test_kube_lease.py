"""Lease rules on a hand-turned monotonic clock against the real API server."""

from __future__ import annotations

import pytest

from aimd.kube.client import KubeClient
from aimd.kube.lease import LeaderElector, LeadershipLost
from aimd.kube.resources import LEASES


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def elector(kube: KubeClient, namespace: str, identity: str, clock: Clock) -> LeaderElector:
    return LeaderElector(
        kube, namespace, "rules", identity, lease_duration=15, renew_deadline=10, retry_period=2,
        clock=clock,
    )  # fmt: skip


async def test_a_standby_waits_a_lease_duration_from_what_it_observed(
    kube: KubeClient, namespace: str
) -> None:
    clock = Clock()
    first, second = elector(kube, namespace, "a", clock), elector(kube, namespace, "b", clock)
    assert await first._try_acquire_or_renew()

    # The holder's renewTime is ancient by the wall clock (a skewed node, say); it does not
    # matter: the standby counts from when it saw the record, on its own monotonic clock.
    lease = await kube.get(LEASES, "rules", namespace)
    lease["spec"]["renewTime"] = "2001-01-01T00:00:00.000000Z"
    await kube.replace(LEASES, lease)

    assert not await second._try_acquire_or_renew()
    clock.now += 14
    assert not await second._try_acquire_or_renew(), "unchanged for 14 s < 15 s: still fresh"
    clock.now += 2
    assert await second._try_acquire_or_renew(), "unchanged for 16 s: expired, taken over"
    lease = await kube.get(LEASES, "rules", namespace)
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1


async def test_renewals_keep_standbys_out(kube: KubeClient, namespace: str) -> None:
    clock = Clock()
    leader, standby = elector(kube, namespace, "a", clock), elector(kube, namespace, "b", clock)
    assert await leader._try_acquire_or_renew()
    assert not await standby._try_acquire_or_renew()
    for _ in range(5):
        clock.now += 10
        assert await leader._try_acquire_or_renew()
        assert not await standby._try_acquire_or_renew()


async def test_a_released_lease_is_taken_at_once(kube: KubeClient, namespace: str) -> None:
    clock = Clock()
    leader, standby = elector(kube, namespace, "a", clock), elector(kube, namespace, "b", clock)
    await leader.acquire()
    assert leader.is_leader
    assert not await standby._try_acquire_or_renew()
    await leader.release()
    assert not leader.is_leader
    assert await standby._try_acquire_or_renew(), "no holder: no need to wait"


async def test_a_fractional_lease_duration_is_rounded_up_never_down(
    kube: KubeClient, namespace: str
) -> None:
    clock = Clock()
    leader = LeaderElector(
        kube, namespace, "fractional", "a", lease_duration=4.5, renew_deadline=3, retry_period=1,
        clock=clock,
    )  # fmt: skip
    standby = LeaderElector(
        kube, namespace, "fractional", "b", lease_duration=4.5, renew_deadline=3, retry_period=1,
        clock=clock,
    )  # fmt: skip
    assert await leader._try_acquire_or_renew()
    lease = await kube.get(LEASES, "fractional", namespace)
    assert lease["spec"]["leaseDurationSeconds"] == 5, "4.5 s held: a standby waits 5, not 4"

    assert not await standby._try_acquire_or_renew()
    clock.now += 4.6
    assert not await standby._try_acquire_or_renew(), "4.6 s < the 5 s the Lease says"
    clock.now += 0.5
    assert await standby._try_acquire_or_renew()


async def test_the_write_fence_closes_at_the_renew_deadline_counted_from_the_attempt(
    kube: KubeClient, namespace: str
) -> None:
    clock = Clock()
    leader = elector(kube, namespace, "a", clock)
    await leader.acquire()
    leader.check()
    clock.now += 9.9
    leader.check()
    clock.now += 0.1
    with pytest.raises(LeadershipLost, match="renew deadline"):
        leader.check()
