"""The manager: wires informers, controllers, leader election and the HTTP endpoints, and runs
them in one ``asyncio.TaskGroup``.

Lifecycle of :meth:`Manager.run`:

1. The ``/metrics`` and ``/healthz``+``/readyz`` servers start; SIGTERM and SIGINT are trapped.
2. Every informer starts listing and watching, on every replica: a standby keeps warm indexes so
   it can take over within one lease duration.
3. With ``--leader-elect`` the replica campaigns for the Lease (standbys only read it). From the
   moment it wins, it renews the Lease every retry period, *while* its informers sync (a cold
   replica's first lists may take longer than a lease duration). Once every informer has synced
   the controllers' workers start; keys enqueued before then (every ADDED of the initial lists)
   are waiting in the queues.
4. One writer at a time: every write the manager's clients send (reconciles and Events) passes
   the elector's fence, which refuses it once this process's monotonic clock says the last
   successful renewal began ``renew_deadline`` ago — before any standby may take the Lease
   (``lease_duration`` after it saw that renewal). At that moment the renewal loop also raises
   :class:`~aimd.kube.lease.LeadershipLost`: every worker is cancelled at once (an in-flight write
   abandoned mid-request) and ``run()`` raises it, so the process exits and comes back as a
   standby.
5. SIGTERM (or :meth:`Manager.stop`): no new reconcile starts, running ones get
   ``shutdown_grace`` seconds to finish (the Lease is still renewed meanwhile), recorded Events
   are flushed, the lease is released (if configured) so a standby takes over at once, then
   informers and servers stop and ``run()`` returns.

Clients: the one passed in is never used directly. Reconcilers write through ``manager.client``
(rate-limited by ``--kube-api-qps``/``--kube-api-burst``, which the informers share; fenced by the
lease). Leader election and the Event recorder each get a bucket of their own with the same
settings, as in controller-runtime, so neither waits behind a flood of reconcile writes.

Namespaced mode (``--namespaces a,b``): every namespaced informer declared without a namespace
watches only those (one list+watch each, one index); cluster-scoped informers are unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Hashable
from typing import Any

from aiohttp import web

from aimd.kube.client import KubeClient
from aimd.kube.lease import LeaderElector, LeadershipLost
from aimd.kube.resources import Resource
from aimd.kube.throttle import token_bucket
from aimd.runtime.controller import Controller, LogKey, Reconcile, namespace_name
from aimd.runtime.events import EventRecorder
from aimd.runtime.health import Checks, bound_port, health_app, metrics_app, serve
from aimd.runtime.informer import Informer, Transform
from aimd.settings import Settings, parse_bind_address

log = logging.getLogger(__name__)


class Manager:
    def __init__(
        self,
        client: KubeClient,
        settings: Settings | None = None,
        *,
        handle_signals: bool = True,
        component: str = "aimd",
    ) -> None:
        self.settings = settings or Settings()
        self.handle_signals = handle_signals
        qps, burst = self.settings.kube_api_qps, self.settings.kube_api_burst
        self.elector: LeaderElector | None = None
        if self.settings.leader_elect:
            assert self.settings.leader_election_namespace  # Settings.validate() checked it
            self.elector = LeaderElector(
                client.with_rate_limiter(token_bucket(qps, burst)).with_fence(None),
                self.settings.leader_election_namespace,
                self.settings.leader_election_id,
                self.settings.leader_election_identity,
                lease_duration=self.settings.lease_duration,
                renew_deadline=self.settings.renew_deadline,
                retry_period=self.settings.retry_period,
            )
        fence = self.elector.check if self.elector is not None else None
        self.client = client.with_rate_limiter(token_bucket(qps, burst)).with_fence(fence)
        self.events = EventRecorder(
            client.with_rate_limiter(token_bucket(qps, burst)).with_fence(fence),
            component,
            self.settings.leader_election_identity,
        )
        self._informers: dict[tuple[Hashable, ...], Informer] = {}
        self._controllers: list[Controller[Any]] = []
        self.checks = Checks(
            lambda: list(self._informers.values()), self.settings.watch_stall_timeout
        )
        self.metrics_port: int | None = None
        self.health_port: int | None = None
        self._stopping = asyncio.Event()
        self._leading = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._informer_tasks: list[asyncio.Task[None]] = []
        self._workers: asyncio.TaskGroup | None = None

    # -- declaring ----------------------------------------------------------------------------

    def informer(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        transform: Transform | None = None,
    ) -> Informer:
        """The shared informer for ``resource`` (in ``namespace``, else everywhere — or, with
        ``--namespaces``, in those); the same object for the same arguments. One created while
        running starts at once. ``transform`` shapes each object as it enters the index (the
        first declaration's wins)."""
        key = (resource, namespace, label_selector)
        informer = self._informers.get(key)
        if informer is None:
            scoped = namespace is None and resource.namespaced and self.settings.namespaces
            informer = Informer(
                self.client,
                resource,
                namespace,
                namespaces=self.settings.namespaces if scoped else (),
                label_selector=label_selector,
                transform=transform,
            )
            self._informers[key] = informer
            if self._group is not None:
                self._start_informer(informer)
        return informer

    def _start_informer(self, informer: Informer) -> None:
        assert self._group is not None
        task = self._group.create_task(informer.run(), name=f"informer {informer.name}")
        self._informer_tasks.append(task)

    def controller(
        self,
        name: str,
        reconcile: Reconcile[Any],
        workers: int | None = None,
        *,
        log_key: LogKey[Any] = namespace_name,
    ) -> Controller[Any]:
        """A controller whose workers run while this replica leads (``workers`` defaults to
        ``--workers``). Names must be unique: they label the metrics and the log lines.
        ``log_key`` maps a key to the namespace and name its reconcile's log lines carry."""
        if any(c.name == name for c in self._controllers):
            raise ValueError(f"a controller named {name!r} exists already")
        controller: Controller[Any] = Controller(
            name, reconcile, workers or self.settings.workers, log_key=log_key
        )
        self._controllers.append(controller)
        if self._workers is not None:
            self._workers.create_task(controller.run(), name=f"controller {name}")
        return controller

    # -- state --------------------------------------------------------------------------------

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    @property
    def is_leader(self) -> bool:
        """True while this replica's controllers may write (always, without leader election)."""
        return self._leading.is_set()

    @property
    def ready(self) -> bool:
        return self.checks.ready()[0]

    def stop(self) -> None:
        """Asks :meth:`run` to shut down gracefully (what SIGTERM does); before ``run`` it makes
        ``run`` return at once."""
        self._stopping.set()

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Runs until :meth:`stop` or SIGTERM (returns) or leadership is lost (raises
        :class:`~aimd.kube.lease.LeadershipLost`). Once per manager."""
        runners = await self._start_servers()
        self._trap_signals(True)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for informer in self._informers.values():
                    self._start_informer(informer)
                control = group.create_task(self._control(), name="control")
                events = group.create_task(self.events.run(), name="events")
                await self._stopping.wait()
                log.info("manager: stopping")
                await self._drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.events.flush(), 5)
                control.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await control
                events.cancel()
                if self.elector is not None and self.settings.leader_election_release_on_cancel:
                    await self.elector.release()
                self._leading.clear()
                for task in self._informer_tasks:
                    task.cancel()
        except BaseExceptionGroup as group_error:
            lost = _first(group_error, LeadershipLost)
            if lost is not None:
                self._leading.clear()
                raise lost from None
            raise
        finally:
            self._group = None
            self._informer_tasks.clear()
            self._trap_signals(False)
            for runner in runners:
                await runner.cleanup()
        log.info("manager: stopped")

    async def _control(self) -> None:
        """Campaign; then, while leading, renew and run the workers side by side: the first
        LeadershipLost (the renewal loop's, or a fenced write's) cancels everything."""
        if self.elector is not None:
            await self.elector.acquire()
        self._leading.set()
        try:
            async with asyncio.TaskGroup() as leading:
                if self.elector is not None:
                    leading.create_task(self.elector.hold(), name="lease renewal")
                leading.create_task(self._run_controllers(), name="controllers")
        except BaseExceptionGroup as group_error:
            lost = _first(group_error, LeadershipLost)
            if lost is None:
                raise
            self._leading.clear()
            log.error("manager: leadership lost (%s); stopping every controller now", lost)
            raise lost from None

    async def _run_controllers(self) -> None:
        await asyncio.gather(*(informer.wait_synced() for informer in self._informers.values()))
        if self.elector is not None:
            self.elector.check()  # a sync that outlived the lease starts no worker
        log.info("manager: leading and synced, starting %d controllers", len(self._controllers))
        async with asyncio.TaskGroup() as workers:
            self._workers = workers
            for controller in self._controllers:
                workers.create_task(controller.run(), name=f"controller {controller.name}")
        self._workers = None

    async def _drain(self) -> None:
        grace = self.settings.shutdown_grace
        results = await asyncio.gather(*(c.drain(grace) for c in self._controllers))
        if not all(results):
            log.warning("manager: cancelling reconciles still running after %.0fs", grace)

    async def _start_servers(self) -> list[web.AppRunner]:
        runners = []
        metrics = parse_bind_address(self.settings.metrics_bind_address)
        if metrics is not None:
            runner = await serve(metrics_app(), *metrics)
            self.metrics_port = bound_port(runner)
            runners.append(runner)
        health = parse_bind_address(self.settings.health_probe_bind_address)
        if health is not None:
            runner = await serve(health_app(self.checks), *health)
            self.health_port = bound_port(runner)
            runners.append(runner)
        return runners

    def _trap_signals(self, install: bool) -> None:
        if not self.handle_signals:
            return
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                if install:
                    loop.add_signal_handler(signum, self.stop)
                else:
                    loop.remove_signal_handler(signum)


def _first(group: BaseExceptionGroup[Any], kind: type[LeadershipLost]) -> LeadershipLost | None:
    """The first ``kind`` among the leaves of a (nested) exception group."""
    for error in group.exceptions:
        if isinstance(error, kind):
            return error
        if isinstance(error, BaseExceptionGroup):
            found = _first(error, kind)
            if found is not None:
                return found
    return None
