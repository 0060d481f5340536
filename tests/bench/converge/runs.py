"""One measured run: aimd as its own process, or the floor, in a namespace of its own.

An aimd run: the namespace is made, ``aimd run`` starts (its own user, the QPS and burst under
test) and becomes ready (every informer synced), the stand-in kubelet starts, the inputs are
created, and the clock runs from "all inputs created" to "every service Running" as the watch
sees it. During the run aimd's /metrics is scraped every ``sample_interval`` seconds for the
work queues' depth. Then aimd is left alone for ``idle`` seconds (writes then: target 0), its
metrics are read a last time and it is stopped; the benchmark strips the finalizers and deletes
the namespace, so the next run finds an API server with nothing else to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from aimd.api import kinds
from aimd.dev.controlplane import free_port
from aimd.kube.client import KubeClient
from aimd.kube.errors import NotFound
from aimd.kube.lease import micro_time
from aimd.kube.resources import LEASES, NAMESPACES, Resource
from tests.bench.converge import audit, flame, procs, promtext
from tests.bench.converge.audit import AuditedControlPlane
from tests.bench.converge.floor import Floor
from tests.bench.converge.scenario import Size, service, template
from tests.bench.converge.standin import CONCURRENCY, StandInKubelet, Watched

Object = dict[str, Any]
WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")
CONTROLLERS = ("template", "templatecache", "modelcache", "service")
SETTLE = 3.0  # seconds after the last Running before the write count is read


@dataclass(frozen=True)
class Rate:
    """``--kube-api-qps`` / ``--kube-api-burst`` (qps <= 0 switches the limiter off), and
    ``--workers`` when the run sets it."""

    qps: float
    burst: int
    workers: int | None = None

    def __str__(self) -> str:
        rate = "unlimited" if self.qps <= 0 else f"{self.qps:g}/{self.burst}"
        return rate if self.workers is None else f"{rate}, {self.workers} workers"

    def flags(self) -> list[str]:
        flags = [f"--kube-api-qps={self.qps:g}", f"--kube-api-burst={self.burst}"]
        return flags if self.workers is None else [*flags, f"--workers={self.workers}"]

    def bound(self, writes: int) -> float:
        """The fewest seconds the limiter allows ``writes`` requests to take (0: none)."""
        return 0.0 if self.qps <= 0 else max(0.0, (writes - self.burst) / self.qps)


@dataclass
class ControllerStats:
    reconciles: float = 0.0
    errors: float = 0.0
    adds: float = 0.0
    retries: float = 0.0
    p50: float = float("nan")
    p99: float = float("nan")
    queue_p50: float = float("nan")
    queue_p99: float = float("nan")
    peak_depth: float = 0.0


@dataclass
class AimdResult:
    size: Size
    rate: Rate
    seconds: float
    writes: int  # rest_client_requests_total, write verbs, until SETTLE after the last Running
    audited: list[audit.Write]  # aimd's writes as the API server logged them, same period
    idle_writes: int
    idle: float
    rss: int
    cpu: float  # aimd's CPU seconds while converging
    apiserver_cpu: float
    etcd_cpu: float
    others_cpu: float  # CPU seconds the rest of the machine (other engineers' work) used meanwhile
    limiter_wait: float  # seconds all requests together waited for the client-side limiter
    limiter_requests: float
    controllers: dict[str, ControllerStats]
    events_dropped: dict[str, float]  # aim_events_dropped_total by reason
    warnings: Counter[str]  # aimd's WARNING/ERROR log lines, by their message's start
    load: tuple[str, str]
    profiled: bool
    depth_samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    @property
    def writes_without_events(self) -> int:
        return len(audit.without_events(self.audited))

    @property
    def events(self) -> int:
        return len(audit.events(self.audited))


@dataclass
class FloorResult:
    seconds: float
    writes: int
    audited: int
    load: tuple[str, str]
    others_cpu: float
    apiserver_cpu: float


async def create_namespace(kube: KubeClient, namespace: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    await kube.create(NAMESPACES, body)


async def gather_limited(coros: list[Any], limit: int = CONCURRENCY) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def create_inputs(kube: KubeClient, namespace: str, size: Size) -> None:
    await gather_limited(
        [
            kube.create(kinds.SERVICE_TEMPLATES, template(i, size), namespace)
            for i in range(size.templates)
        ]
    )
    await gather_limited(
        [kube.create(kinds.SERVICES, service(j, size), namespace) for j in range(size.services)]
    )


async def delete_namespace(kube: KubeClient, namespace: str) -> None:
    """Strips aimd's finalizers (aimd is stopped by now), deletes the namespace and waits until it
    is gone."""

    async def strip(resource: Resource, obj: Object) -> None:
        with contextlib.suppress(NotFound):
            await kube.patch(
                resource, obj["metadata"]["name"], {"metadata": {"finalizers": None}}, namespace
            )

    for resource in (kinds.SERVICES, kinds.TEMPLATE_CACHES):
        items = (await kube.list(resource, namespace))["items"]
        await gather_limited([strip(resource, o) for o in items if o["metadata"].get("finalizers")])
    await kube.delete(NAMESPACES, namespace)
    while True:
        try:
            await kube.get(NAMESPACES, namespace)
        except NotFound:
            return
        await asyncio.sleep(1)


def _writes(samples: list[promtext.Sample]) -> int:
    return int(promtext.total(samples, "rest_client_requests_total", method=WRITE_METHODS))


def _controllers(
    samples: list[promtext.Sample], peaks: dict[str, float]
) -> dict[str, ControllerStats]:
    reconciles = promtext.by_label(samples, "controller_runtime_reconcile_total", "controller")
    errors = promtext.by_label(samples, "controller_runtime_reconcile_errors_total", "controller")
    adds = promtext.by_label(samples, "workqueue_adds_total", "name")
    retries = promtext.by_label(samples, "workqueue_retries_total", "name")
    latency = promtext.buckets(samples, "controller_runtime_reconcile_time_seconds", "controller")
    waits = promtext.buckets(samples, "workqueue_queue_duration_seconds", "name")
    stats = {}
    for name in CONTROLLERS:
        stats[name] = ControllerStats(
            reconciles=reconciles.get(name, 0.0),
            errors=errors.get(name, 0.0),
            adds=adds.get(name, 0.0),
            retries=retries.get(name, 0.0),
            p50=promtext.histogram_quantile(0.5, latency.get(name, [])),
            p99=promtext.histogram_quantile(0.99, latency.get(name, [])),
            queue_p50=promtext.histogram_quantile(0.5, waits.get(name, [])),
            queue_p99=promtext.histogram_quantile(0.99, waits.get(name, [])),
            peak_depth=peaks.get(name, 0.0),
        )
    return stats


def _warnings(log: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    if not log.exists():
        return found
    for line in log.read_text(errors="replace").splitlines():
        for level in ("WARNING", "ERROR", "CRITICAL"):
            if level in line:
                message = line.split(level, 1)[1].strip(" :-]")
                found[f"{level} {message[:70]}"] += 1
                break
    return found


class Sampler:
    """Scrapes aimd's /metrics every ``interval`` seconds: the work queues' depth over time."""

    def __init__(self, session: aiohttp.ClientSession, port: int, interval: float) -> None:
        self.session = session
        self.port = port
        self.interval = interval
        self.peaks: dict[str, float] = {}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.started = time.monotonic()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                scraped = await promtext.scrape(self.session, self.port)
                depth = promtext.by_label(scraped, "workqueue_depth", "name")
                self.samples.append((time.monotonic() - self.started, depth))
                for name, value in depth.items():
                    self.peaks[name] = max(value, self.peaks.get(name, 0.0))
            await asyncio.sleep(self.interval)


async def _ready(
    session: aiohttp.ClientSession, port: int, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"aimd exited with {process.returncode} before it was ready")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError("aimd was not ready within 120 s")


def _start_profiler(pid: int, output: Path, rate: int) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop_profiler(profiler: subprocess.Popen[bytes], output: Path, title: str) -> None:
    profiler.send_signal(signal.SIGINT)
    try:
        profiler.wait(60)
    except subprocess.TimeoutExpired:
        profiler.kill()
        return
    if not output.exists():
        return
    profile = flame.Profile.read(output)
    output.with_suffix(".svg").write_text(flame.svg(profile, title))
    output.with_suffix(".top.txt").write_text(flame.summary(profile, title))


@dataclass
class Bench:
    """What every run of one size shares: the control plane, the admin client, where to save."""

    plane: AuditedControlPlane
    admin: KubeClient
    artifacts: Path
    sample_interval: float = 2.0
    profile_rate: int = 0  # py-spy samples a second; 0: no profile
    apiserver_profile: float = 0.0  # seconds of kube-apiserver CPU profile per run; 0: none
    timeout: float = 7200.0
    runs: int = 0

    def _namespace(self, what: str) -> str:
        self.runs += 1
        return f"bench-{what}-{self.runs}"

    async def aimd(self, size: Size, rate: Rate, idle: float) -> AimdResult:
        namespace = self._namespace("aimd")
        stem = f"{size.services}-{size.templates}-{size.uris}-qps-" + re.sub(
            r"[^a-z0-9]+", "-", str(rate)
        )
        log_path = self.artifacts / f"aimd-{stem}.log"
        metrics_port, health_port = free_port(), free_port()
        await create_namespace(self.admin, namespace)
        process = self._start_aimd(log_path, metrics_port, health_port, rate.flags())
        kubelet = StandInKubelet(self.admin, namespace)
        services = Watched(self.admin, kinds.SERVICES, namespace)
        running = services.tally(lambda s: (s.get("status") or {}).get("status") == "Running")
        session = aiohttp.ClientSession()
        sampler_task: asyncio.Task[None] | None = None
        profiler: subprocess.Popen[bytes] | None = None
        profile_path = self.artifacts / f"profile-{stem}.txt"
        try:
            await _ready(session, health_port, process)
            await kubelet.start()
            await services.start()
            sampler = Sampler(session, metrics_port, self.sample_interval)
            sampler_task = asyncio.create_task(sampler.run())
            apiserver = self.plane.processes["kube-apiserver"].pid
            etcd = self.plane.processes["etcd"].pid
            load_before = procs.load_average()
            await create_inputs(self.admin, namespace, size)
            ours = (process.pid, apiserver, etcd, *self._own_pids())
            cpu = [procs.cpu_seconds(p) for p in ours]
            busy = procs.machine_busy()
            started = time.monotonic()
            if self.profile_rate:
                profiler = _start_profiler(process.pid, profile_path, self.profile_rate)
            apiserver_profile = self._profile_apiserver(f"aimd-{stem}")
            await asyncio.wait_for(
                services.until(lambda: running.value >= size.services), self.timeout
            )
            await apiserver_profile
            seconds = time.monotonic() - started
            used = [procs.cpu_seconds(p) - c for p, c in zip(ours, cpu, strict=True)]
            others = procs.machine_busy() - busy - sum(used)
            load_after = procs.load_average()
            if profiler is not None:
                title = f"aimd, {size} services/templates/URIs, QPS {rate}"
                await asyncio.to_thread(_stop_profiler, profiler, profile_path, title)
                profiler = None
            await asyncio.sleep(SETTLE)
            settled = time.time()
            final = await promtext.scrape(session, metrics_port)
            writes = _writes(final)
            await asyncio.sleep(idle)
            idle_writes = _writes(await promtext.scrape(session, metrics_port)) - writes
            sampler_task.cancel()
            rss = procs.memory(process.pid, "VmHWM")
            limiter = "rest_client_rate_limiter_duration_seconds"
            result = AimdResult(
                size=size,
                rate=rate,
                seconds=seconds,
                writes=writes,
                audited=[],
                idle_writes=idle_writes,
                idle=idle,
                rss=rss,
                cpu=used[0],
                apiserver_cpu=used[1],
                etcd_cpu=used[2],
                others_cpu=others,
                limiter_wait=promtext.total(final, f"{limiter}_sum"),
                limiter_requests=promtext.total(final, f"{limiter}_count"),
                controllers=_controllers(final, sampler.peaks),
                events_dropped=promtext.by_label(final, "aim_events_dropped_total", "reason"),
                warnings=Counter(),
                load=(load_before, load_after),
                profiled=bool(self.profile_rate),
                depth_samples=sampler.samples,
            )
        finally:
            if sampler_task is not None:
                sampler_task.cancel()
            if profiler is not None:
                profiler.kill()
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 60)
            await services.stop()
            await kubelet.stop()
            await session.close()
        result.warnings = _warnings(log_path)
        await delete_namespace(self.admin, namespace)
        every = audit.read(self.plane.audit_log, namespace)
        result.audited = audit.of(every, audit.AIMD_USER, until=settled)
        self._save_depths(stem, result)
        return result

    async def floor(self, size: Size, client: KubeClient) -> FloorResult:
        namespace = self._namespace("floor")
        await create_namespace(self.admin, namespace)
        kubelet = StandInKubelet(self.admin, namespace)
        load_before = procs.load_average()
        try:
            await kubelet.start()
            await create_inputs(self.admin, namespace, size)
            floor = Floor(client, namespace, kubelet)
            ours = [p.pid for p in self.plane.processes.values()] + [os.getpid()]
            apiserver = self.plane.processes["kube-apiserver"].pid
            cpu, busy = sum(procs.cpu_seconds(p) for p in ours), procs.machine_busy()
            apiserver_cpu = procs.cpu_seconds(apiserver)
            apiserver_profile = self._profile_apiserver(f"{namespace}-{size.services}")
            seconds = await asyncio.wait_for(floor.run(size), self.timeout)
            await apiserver_profile
            apiserver_cpu = procs.cpu_seconds(apiserver) - apiserver_cpu
            others = procs.machine_busy() - busy - (sum(procs.cpu_seconds(p) for p in ours) - cpu)
        finally:
            await kubelet.stop()
        load_after = procs.load_average()
        await delete_namespace(self.admin, namespace)
        audited = audit.of(audit.read(self.plane.audit_log, namespace), audit.FLOOR_USER)
        return FloorResult(
            seconds, floor.writes, len(audited), (load_before, load_after), others, apiserver_cpu
        )

    async def watched_floor(self, size: Size, client: KubeClient) -> FloorResult:
        """The floor while a standby aimd watches: every informer on, never leading (the
        benchmark holds its Lease), so it writes nothing. What this adds to the floor is what
        any controller's watches cost the API server, apart from its writes."""
        lease_namespace = self._namespace("lease")
        await create_namespace(self.admin, lease_namespace)
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "aimd-bench-standby"},
            "spec": {
                "holderIdentity": "the-benchmark",
                "leaseDurationSeconds": 86400,
                "acquireTime": micro_time(),
                "renewTime": micro_time(),
            },
        }
        await self.admin.create(LEASES, lease, lease_namespace)
        session = aiohttp.ClientSession()
        metrics_port, health_port = free_port(), free_port()
        election = [
            "--leader-elect",
            f"--leader-election-namespace={lease_namespace}",
            "--leader-election-id=aimd-bench-standby",
            "--leader-election-identity=standby",
        ]
        process = self._start_aimd(
            self.artifacts / f"aimd-standby-{size.services}.log",
            metrics_port,
            health_port,
            election,
        )
        try:
            await _ready(session, health_port, process)
            return await self.floor(size, client)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 60)
            await session.close()
            await delete_namespace(self.admin, lease_namespace)

    def _profile_apiserver(self, stem: str) -> asyncio.Task[None]:
        """kube-apiserver's Go CPU profile over the first ``apiserver_profile`` seconds of a run
        (its /debug/pprof, as admin), saved with ``go tool pprof -top``'s summary beside it."""
        output = self.artifacts / f"apiserver-{stem}.pprof"

        async def fetch() -> None:
            if not self.apiserver_profile:
                return
            url = f"{self.plane.server}/debug/pprof/profile?seconds={self.apiserver_profile:g}"
            curl = await asyncio.create_subprocess_exec(
                "curl",
                "-sSf",
                "--cacert",
                str(self.plane.ca_file),
                "-o",
                str(output),
                "-H",
                f"Authorization: Bearer {self.plane.token}",
                url,
            )
            if await curl.wait() != 0:
                print(f"kube-apiserver profile {stem}: curl failed", flush=True)
                return
            top = await asyncio.create_subprocess_exec(
                "go",
                "tool",
                "pprof",
                "-top",
                "-nodecount=60",
                str(output),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            text, _ = await top.communicate()
            output.with_suffix(".top.txt").write_bytes(text)

        return asyncio.create_task(fetch())

    def _start_aimd(
        self, log_path: Path, metrics_port: int, health_port: int, flags: list[str]
    ) -> subprocess.Popen[bytes]:
        with log_path.open("wb") as log:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aimd",
                    "run",
                    f"--kubeconfig={self.plane.kubeconfig_for(audit.AIMD_USER)}",
                    f"--metrics-bind-address=127.0.0.1:{metrics_port}",
                    "--metrics-secure=false",
                    f"--health-probe-bind-address=127.0.0.1:{health_port}",
                    "--image=example.com/aimd:bench",
                    "--log-level=warning",
                    *flags,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _own_pids(self) -> list[int]:
        """The benchmark itself and the rest of the control plane."""
        rest = [
            p.pid for n, p in self.plane.processes.items() if n not in ("kube-apiserver", "etcd")
        ]
        return [os.getpid(), *rest]

    def _save_depths(self, stem: str, result: AimdResult) -> None:
        lines = ["seconds," + ",".join(CONTROLLERS)]
        for at, depth in result.depth_samples:
            lines.append(f"{at:.1f}," + ",".join(f"{depth.get(c, 0):.0f}" for c in CONTROLLERS))
        (self.artifacts / f"depth-{stem}.csv").write_text("\n".join(lines) + "\n")
