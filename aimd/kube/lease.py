"""Leader election on a ``coordination.k8s.io/v1`` Lease (client-go's leaderelection, in small).

Timing (defaults 15 s / 10 s / 2 s, as controller-runtime):

- ``lease_duration``: how long a standby waits, from the moment *it observed* the lease change,
  before it may take the lease over. Measured on this process's monotonic clock, never by
  comparing ``renewTime`` with our wall clock, so clock skew between nodes cannot make two
  leaders.
- ``renew_deadline``: how long the leader may go on writing after the start of its last
  successful renewal. It is shorter than ``lease_duration``, so a leader that cannot renew stops
  *before* a standby may take over: the standby counts ``lease_duration`` from when it saw that
  renewal, which is after we sent it.
- ``retry_period``: the wait between attempts; standbys stretch it by up to 120 % at random
  (client-go's jitter factor 1.2) so they do not poll in step.

The Lease's ``leaseDurationSeconds`` is an integer: a fractional ``lease_duration`` is rounded
*up* there, so a standby never waits less than we assume; internally the float is used.

What each replica writes: a standby only reads the Lease (GET) while another holder's lease is
fresh; it writes (create or PUT with the resourceVersion it read, so two candidates cannot both
win) only when the lease is absent, expired or released. The leader PUTs ``renewTime`` every
``retry_period``, from the moment it acquired the lease (:meth:`LeaderElector.hold`, which the
manager runs beside the informers' first sync, as client-go renews beside OnStartedLeading). On
shutdown the leader may release: it writes an empty ``holderIdentity`` so a standby takes over
at once instead of after ``lease_duration``.

Writers are fenced by :meth:`LeaderElector.check`: it raises :class:`LeadershipLost` once this
process's monotonic clock says the last successful renewal began ``renew_deadline`` ago. The
manager installs it as its clients' write fence, so no write leaves after that moment even if
the event loop is too busy to cancel the workers on time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from aimd.kube.client import KubeClient
from aimd.kube.errors import AlreadyExists, ApiError, Conflict, NotFound
from aimd.kube.metrics import LEADER_ELECTION_MASTER_STATUS
from aimd.kube.resources import LEASES

log = logging.getLogger(__name__)

JITTER_FACTOR = 1.2


class LeadershipLost(Exception):
    """The lease could not be renewed within the renew deadline: stop writing now."""


def micro_time(moment: datetime | None = None) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period * JITTER_FACTOR:
            raise ValueError(
                "need lease_duration > renew_deadline > retry_period * 1.2, got "
                f"{lease_duration} / {renew_deadline} / {retry_period}"
            )
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self.is_leader = False
        self._lease: dict[str, Any] | None = None  # the last Lease we read or wrote
        self._observed_spec: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._renewed_at = -math.inf  # when the last successful renewal *began*
        self._gauge = LEADER_ELECTION_MASTER_STATUS.labels(name)
        self._gauge.set(0)

    @property
    def lease_duration_seconds(self) -> int:
        """What we write as ``leaseDurationSeconds``: the duration rounded up, never down."""
        return math.ceil(self.lease_duration)

    @property
    def deadline(self) -> float:
        """The monotonic time after which this process must not write as leader."""
        return self._renewed_at + self.renew_deadline

    def check(self) -> None:
        """The write fence: raises :class:`LeadershipLost` unless we lead and the last
        successful renewal began less than ``renew_deadline`` ago."""
        if not self.is_leader:
            raise LeadershipLost(f"{self.identity} does not hold lease {self._where()}")
        if self.clock() >= self.deadline:
            raise LeadershipLost(self._expired())

    async def acquire(self) -> None:
        """Returns once this replica holds the lease; polls (GET only) while another does."""
        log.info("leader election: %s campaigning for lease %s", self.identity, self._where())
        while True:
            if await self._try_acquire_or_renew():
                break
            await asyncio.sleep(self.retry_period * (1 + JITTER_FACTOR * random.random()))
        self._became_leader()

    async def hold(self) -> None:
        """Renews every ``retry_period`` from the moment of acquisition; raises
        :class:`LeadershipLost` at :attr:`deadline` if no renewal has succeeded by then (an
        attempt in flight is cut off there). Never returns normally."""
        attempted = self._renewed_at
        while True:
            now = self.clock()
            if now >= self.deadline:
                self._lost()
                raise LeadershipLost(self._expired())
            next_attempt = attempted + self.retry_period
            if now < next_attempt:
                await asyncio.sleep(min(next_attempt, self.deadline) - now)
                continue
            attempted = now
            try:
                async with asyncio.timeout(self.deadline - now):
                    renewed = await self._try_acquire_or_renew()
            except TimeoutError:
                log.warning("leader election: renewing lease %s timed out", self._where())
                continue
            if not renewed and self._holder() not in ("", self.identity):
                # Someone else holds it now: no point in trying until the deadline.
                self._lost()
                raise LeadershipLost(
                    f"{self.identity} lost lease {self._where()} to {self._holder()}"
                )

    async def release(self) -> None:
        """Gives the lease up (if we hold it) so a standby need not wait for it to expire."""
        if not self.is_leader or self._lease is None:
            return
        self._lost()
        lease = self._lease
        spec = dict(lease.get("spec") or {})
        now = micro_time()
        spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=now, acquireTime=now)
        try:
            await self.client.replace(LEASES, dict(lease, spec=spec))
            log.info("leader election: %s released the lease", self.identity)
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            log.warning("leader election: releasing the lease failed: %s", error)

    # -- one attempt --------------------------------------------------------------------------

    async def _try_acquire_or_renew(self) -> bool:
        started = self.clock()
        now = micro_time()
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except NotFound:
            return await self._create(now, started)
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            log.warning("leader election: reading the lease failed: %s", error)
            return False

        spec: dict[str, Any] = lease.get("spec") or {}
        if spec != self._observed_spec:
            self._observed_spec = spec
            self._observed_at = self.clock()
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and self.clock() < self._observed_at + duration:
            return False  # someone else leads and their lease is fresh: write nothing

        new_spec = dict(spec)
        new_spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=self.lease_duration_seconds,
            renewTime=now,
        )
        if holder != self.identity:
            new_spec["acquireTime"] = now
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if holder else 0
            )
        try:
            written = await self.client.replace(LEASES, dict(lease, spec=new_spec))
        except Conflict:
            return False  # someone wrote in between; look again next round
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            log.warning("leader election: updating the lease failed: %s", error)
            return False
        self._wrote(written, started)
        return True

    async def _create(self, now: str, started: float) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_duration_seconds,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            created = await self.client.create(LEASES, body, self.namespace)
        except AlreadyExists:
            return False
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            log.warning("leader election: creating the lease failed: %s", error)
            return False
        self._wrote(created, started)
        return True

    def _wrote(self, lease: dict[str, Any], started: float) -> None:
        """A write of ours succeeded. The renewal counts from when the attempt *began*: the API
        server may have committed it at any moment after that, and a standby counts from when
        it saw the commit, so our deadline can only fall before a standby's."""
        lease.get("metadata", {}).pop("managedFields", None)
        self._lease = lease
        self._observed_spec = lease.get("spec") or {}
        self._observed_at = self.clock()
        self._renewed_at = started

    def _became_leader(self) -> None:
        self.is_leader = True
        self._gauge.set(1)
        log.info("leader election: %s became leader of %s", self.identity, self._where())

    def _holder(self) -> str:
        return str((self._observed_spec or {}).get("holderIdentity") or "")

    def _where(self) -> str:
        return f"{self.namespace}/{self.name}"

    def _expired(self) -> str:
        return (
            f"{self.identity} could not renew lease {self._where()} within its "
            f"{self.renew_deadline:g}s renew deadline"
        )

    def _lost(self) -> None:
        self.is_leader = False
        self._gauge.set(0)
