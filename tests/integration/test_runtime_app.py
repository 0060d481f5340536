"""``aimd run``'s process (aimd.runtime.app) against the real API server: exit codes, and one
writer at a time between two real processes on one Lease, one of them with a slow first sync.

The two-process test records every write either process makes (each reconcile writes its
identity into a ConfigMap) and every version of the Lease, in the order the API server committed
them: on this test's own etcd a resourceVersion is the etcd revision, so versions of different
objects compare. A write by a process while the Lease names another (or no one) is a second
writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient
from aimd.kube.lease import micro_time
from aimd.kube.resources import CONFIG_MAPS, LEASES
from aimd.kube.watch import Listed, Watcher
from aimd.runtime import Manager
from aimd.runtime.app import EXIT_CONFIG, EXIT_FAILED, EXIT_LEADERSHIP_LOST, EXIT_OK, run
from aimd.settings import Settings
from tests.integration.runtime_writer import WORK_LABEL
from tests.support import REPO, eventually

LEASE = "writers"
TIMING = ("--lease-duration", "5", "--renew-deadline", "4", "--retry-period", "0.5")
LEASE_DURATION = 5.0


@dataclass(order=True)
class Record:
    revision: int
    kind: str  # "lease" or "write"
    who: str = field(compare=False)


@dataclass
class History:
    """Every version of the Lease and every write to the work ConfigMaps, as watched."""

    records: list[Record] = field(default_factory=list)

    def sink(self, kind: str, who: Callable[[dict[str, Any]], str | None]) -> Any:
        records = self.records

        class Sink:
            def listed(self, listed: Listed) -> None:
                pass

            def bookmark(self, resource_version: str) -> None:
                pass

            def changed(self, event_type: str, obj: dict[str, Any]) -> None:
                name = who(obj)
                if name is not None:
                    records.append(Record(int(obj["metadata"]["resourceVersion"]), kind, name))

        return Sink()

    def writes(self, identity: str) -> int:
        return sum(1 for r in self.records if r.kind == "write" and r.who == identity)

    def holders(self) -> list[str]:
        """The Lease's holder after each change of holder, in commit order."""
        changes: list[str] = []
        for record in sorted(self.records):
            if record.kind == "lease" and (not changes or changes[-1] != record.who):
                changes.append(record.who)
        return changes

    def second_writers(self) -> list[str]:
        holder: str | None = None
        found = []
        for record in sorted(self.records):
            if record.kind == "lease":
                holder = record.who
            elif record.who != holder:
                found.append(f"revision {record.revision}: {record.who} wrote, Lease: {holder!r}")
        return found


@contextlib.asynccontextmanager
async def recording(kube: KubeClient, namespace: str) -> AsyncIterator[History]:
    history = History()
    leases = Watcher(kube, LEASES, namespace, field_selector=f"metadata.name={LEASE}")
    writes = Watcher(kube, CONFIG_MAPS, namespace, label_selector=WORK_LABEL)
    tasks = [
        asyncio.create_task(
            leases.run(history.sink("lease", lambda o: o["spec"].get("holderIdentity") or ""))
        ),
        asyncio.create_task(
            writes.run(history.sink("write", lambda o: (o.get("data") or {}).get("writer")))
        ),
    ]
    try:
        await eventually(
            lambda: _truthy(leases.connected and writes.connected), what="both watches open"
        )
        yield history
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def slow_lists_proxy(plane: ControlPlane, delay: float) -> AsyncIterator[str]:
    """A plain-HTTP proxy to the API server that holds back every LIST of ConfigMaps (not the
    watches, not the Lease) for ``delay`` seconds: real traffic, a slow first sync."""
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

    async def forward(request: web.Request) -> web.StreamResponse:
        if (
            request.method == "GET"
            and request.path.endswith("/configmaps")
            and "watch" not in request.query
        ):
            await asyncio.sleep(delay)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type", "accept")
        }
        body = await request.read()
        async with session.request(
            request.method,
            plane.server + request.path_qs,
            data=body or None,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None),
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            response.content_type = upstream.content_type
            await response.prepare(request)
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await session.close()


def kubeconfig_for(plane: ControlPlane, server: str, path: Path) -> Path:
    config = json.loads(plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"] = {"server": server}
    path.write_text(json.dumps(config))
    return path


@dataclass
class Process:
    identity: str
    process: asyncio.subprocess.Process
    log: Path

    async def exit_code(self, timeout: float = 60) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


async def start(identity: str, kubeconfig: Path, namespace: str, logs: Path) -> Process:
    log = logs / f"{identity}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.runtime_writer",
            f"--kubeconfig={kubeconfig}",
            "--leader-elect",
            f"--leader-election-namespace={namespace}",
            f"--leader-election-id={LEASE}",
            f"--leader-election-identity={identity}",
            *TIMING,
            "--metrics-bind-address=0",
            "--health-probe-bind-address=0",
            "--log-format=json",
            f"--work-namespace={namespace}",
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    return Process(identity, process, log)


async def _truthy(value: Any) -> Any:
    return value or None


async def holder(kube: KubeClient, namespace: str) -> str | None:
    try:
        lease = await kube.get(LEASES, LEASE, namespace)
    except Exception:
        return None
    return lease["spec"].get("holderIdentity") or None


async def make_work(kube: KubeClient, namespace: str) -> None:
    body = {"metadata": {"name": "work", "labels": {WORK_LABEL: "yes"}}, "data": {}}
    await kube.create(CONFIG_MAPS, body, namespace)


async def test_a_slow_syncing_leader_keeps_its_lease_and_never_writes_beside_another(
    control_plane: ControlPlane, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    await make_work(kube, namespace)
    processes: list[Process] = []
    try:
        async with (
            recording(kube, namespace) as history,
            slow_lists_proxy(control_plane, delay=3 * LEASE_DURATION) as proxy,
        ):
            slow_config = kubeconfig_for(control_plane, proxy, tmp_path / "slow.kubeconfig")
            slow = await start("slow", slow_config, namespace, tmp_path)
            processes.append(slow)
            await eventually(
                lambda: holder(kube, namespace), what="the slow process to take the Lease"
            )
            fast = await start("fast", control_plane.kubeconfig, namespace, tmp_path)
            processes.append(fast)
            # The fast one lists at once and campaigns through the whole slow sync (three lease
            # durations); the slow one must keep renewing meanwhile.
            await eventually(
                lambda: _truthy(history.writes("slow") >= 1), timeout=120, what="slow writes"
            )
            slow.process.send_signal(signal.SIGTERM)
            slow_exit = await slow.exit_code()
            await eventually(
                lambda: _truthy(history.writes("fast") >= 3), timeout=60, what="fast writes"
            )
            fast.process.send_signal(signal.SIGTERM)
            fast_exit = await fast.exit_code()
            await eventually(
                lambda: _truthy(history.holders()[-1:] == [""]), what="the release seen"
            )

        assert history.second_writers() == []
        assert history.holders() == ["slow", "", "fast", ""], "held through the sync, handed over"
        assert slow_exit == EXIT_OK, slow.log.read_text()[-3000:]
        assert fast_exit == EXIT_OK, fast.log.read_text()[-3000:]
    finally:
        for process in processes:
            if process.process.returncode is None:
                process.process.kill()
                await process.process.wait()


async def test_losing_the_lease_exits_3_with_one_clear_line_and_no_traceback(
    control_plane: ControlPlane, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    await make_work(kube, namespace)
    async with recording(kube, namespace) as history:
        process = await start("victim", control_plane.kubeconfig, namespace, tmp_path)
        try:
            await eventually(
                lambda: _truthy(history.writes("victim") >= 2), timeout=60, what="victim writes"
            )
            lease = await kube.get(LEASES, LEASE, namespace)
            lease["spec"].update(
                holderIdentity="thief", renewTime=micro_time(), leaseDurationSeconds=3600
            )
            await kube.replace(LEASES, lease)
            assert await process.exit_code() == EXIT_LEADERSHIP_LOST
        finally:
            if process.process.returncode is None:
                process.process.kill()
                await process.process.wait()
        await eventually(lambda: _truthy(history.holders()[-1:] == ["thief"]), what="the theft")
    assert "Traceback" not in process.log.read_text()
    errors = [line["msg"] for line in process.lines() if line["level"] == "error"]
    assert any("leader election lost" in msg and "code 3" in msg for msg in errors), errors


def settings(namespace: str, kubeconfig: str) -> Settings:
    return Settings(
        kubeconfig=kubeconfig,
        metrics_bind_address="0",
        health_probe_bind_address="0",
        leader_election_namespace=namespace,
    )


async def test_run_returns_0_after_a_clean_stop_2_without_a_client_1_when_setup_fails(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    declared: list[Manager] = []
    stoppers: list[asyncio.Task[None]] = []

    def setup(manager: Manager) -> None:
        manager.informer(CONFIG_MAPS, namespace)
        declared.append(manager)

        async def stop_when_ready() -> None:
            await eventually(lambda: _truthy(manager.ready), what="manager ready")
            manager.stop()

        stoppers.append(asyncio.create_task(stop_when_ready()))

    config = settings(namespace, str(control_plane.kubeconfig))
    assert await run(config, setup, handle_signals=False) == EXIT_OK
    assert declared[0].informers[0].synced
    await stoppers[0]

    missing = settings(namespace, str(tmp_path / "absent"))
    assert await run(missing, setup, handle_signals=False) == EXIT_CONFIG

    def broken(manager: Manager) -> None:
        raise RuntimeError("a bug in setup")

    assert await run(config, broken, handle_signals=False) == EXIT_FAILED
