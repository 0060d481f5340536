"""Lease rules on a hand-turned monotonic clock against the real API server."""

from __future__ import annotations

from aimd.kube.client import KubeClient
from aimd.kube.lease import LeaderElector
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
