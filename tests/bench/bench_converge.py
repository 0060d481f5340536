"""Convergence benchmark: N AIMServices over T templates sharing U source URIs, against the floor.

Run with ``python -m tests.bench.bench_converge``: 100/10/5 and 1,000/100/50 (services/templates/
URIs), each with aimd at ``--kube-api-qps``/``--kube-api-burst`` 20/30 (controller-runtime's
defaults) and at 400/600 (what the manifests ship; see the README). ``--large`` adds
10,000/1,000/500; ``--size S/T/U`` (repeatable) replaces the sizes; ``--kube-api-qps Q
--kube-api-burst B`` (both repeatable, paired in order; 0 = no limit) replace the settings;
``--small`` is ``--size 100/10/5``. ``--profile`` samples aimd with py-spy during each run;
``--apiserver-profile SECONDS`` takes kube-apiserver's Go CPU profile over the first SECONDS of
each aimd and floor run (``go tool pprof -top`` beside it), to see what each costs the server.
Not a test (pytest does not collect ``bench_*.py``); it prints tables and asserts nothing.

Each size gets a fresh test control plane whose API server audit-logs aimd's and the floor's
writes (:mod:`tests.bench.converge.audit`). aimd runs as its own process (``aimd run``) with a
user of its own, so its writes, its /metrics and its peak RSS (``VmHWM``) are its own. The
benchmark plays the kubelet for everyone alike (:mod:`~tests.bench.converge.standin`). Reported:
the time from "all inputs created" to "every service Running", against the floor (a script that
makes exactly the minimum writes as fast as the API server allows, with the same kubelet, on the
same control plane; run before and after each aimd run), and against the client-side limiter's own
bound ((minimum - burst) / QPS); aimd's writes without Events against the minimum, per kind;
writes during an idle period afterwards (target 0); peak RSS; and per controller the reconciles
per key and p50/p99 reconcile latency, interpolated from the buckets of aimd's own
``controller_runtime_reconcile_time_seconds`` the way Prometheus's ``histogram_quantile`` does,
and the peak ``workqueue_depth`` sampled during the run. Artifacts (aimd's log, queue depth over
time, profiles) go to ``tests/.artifacts/converge/``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

from aimd.api.crds import all_crds
from aimd.dev.controlplane import build_binaries
from aimd.kube.client import KubeClient
from tests.bench.converge import audit, procs, report
from tests.bench.converge.audit import AuditedControlPlane
from tests.bench.converge.runs import AimdResult, Bench, FloorResult, Rate
from tests.bench.converge.scenario import Size

SMALL, MEDIUM, LARGE = Size(100, 10, 5), Size(1000, 100, 50), Size(10000, 1000, 500)
DEFAULT_RATES = (Rate(20, 30), Rate(400, 600))
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts" / "converge"

Results = list[tuple[AimdResult, list[FloorResult]]]
# (size, the floor with a standby aimd watching, the plain floors of that size)
WATCHED: list[tuple[Size, FloorResult, list[FloorResult]]] = []


def watched_lines() -> list[str]:
    """What watching alone costs: the floor beside a standby aimd against the plain floor."""
    lines = []
    for size, watched, floors in WATCHED:
        plain_s = sum(f.seconds for f in floors) / len(floors)
        plain_cpu = sum(f.apiserver_cpu for f in floors) / len(floors)
        lines.append(
            f"{size}: the floor with a standby aimd watching took {watched.seconds:.1f} s "
            f"(kube-apiserver {watched.apiserver_cpu:.0f} CPU s) against {plain_s:.1f} s "
            f"({plain_cpu:.0f} CPU s) without: watching alone is "
            f"{watched.seconds / plain_s:.2f}x the floor's time."
        )
    return lines


def idle_seconds(size: Size, given: float | None) -> float:
    if given is not None:
        return given
    return 20.0 if size.services <= 100 else 60.0


async def measure_size(
    size: Size, rates: Sequence[Rate], args: argparse.Namespace, artifacts: Path
) -> Results:
    workdir = Path(tempfile.mkdtemp(prefix="aimd-bench-"))
    plane = AuditedControlPlane(binaries=build_binaries(), workdir=workdir)
    plane.start(crds=all_crds())
    try:
        admin = await KubeClient.from_kubeconfig(str(plane.kubeconfig))
        floor_client = await KubeClient.from_kubeconfig(str(plane.kubeconfig_for(audit.FLOOR_USER)))
        bench = Bench(
            plane,
            admin,
            artifacts,
            sample_interval=args.sample_interval,
            profile_rate=args.profile_rate if args.profile else 0,
            apiserver_profile=args.apiserver_profile,
        )
        try:
            # The floor runs before and after each aimd run, and each run is held against the
            # mean of the two beside it: on a shared machine the load moves within minutes.
            floors = [await floor(bench, size, floor_client)]
            results: Results = []
            for rate in rates:
                print(f"{size}: aimd at QPS {rate} ... (load {procs.load_average()})", flush=True)
                run = await bench.aimd(size, rate, idle_seconds(size, args.idle))
                print(f"{size}: aimd at QPS {rate}: {run.seconds:.1f} s", flush=True)
                floors.append(await floor(bench, size, floor_client))
                results.append((run, floors[-2:]))
            if args.watched_floor:
                print(f"{size}: floor with a standby aimd watching ...", flush=True)
                watched = await bench.watched_floor(size, floor_client)
                WATCHED.append((size, watched, floors))
                print(f"{size}: floor with a standby aimd watching {watched.seconds:.1f} s")
        finally:
            await floor_client.close()
            await admin.close()
    finally:
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


async def floor(bench: Bench, size: Size, client: KubeClient) -> FloorResult:
    print(f"{size}: floor ... (load {procs.load_average()})", flush=True)
    result = await bench.floor(size, client)
    print(f"{size}: floor {result.seconds:.1f} s", flush=True)
    return result


def rates_from(args: argparse.Namespace) -> list[Rate]:
    if not args.kube_api_qps:
        return [Rate(r.qps, r.burst, args.workers) for r in DEFAULT_RATES]
    bursts = list(args.kube_api_burst or [])
    rates = []
    for number, qps in enumerate(args.kube_api_qps):
        burst = bursts[number] if number < len(bursts) else max(1, round(qps * 1.5))
        rates.append(Rate(qps, burst, args.workers))
    return rates


def sizes_from(args: argparse.Namespace) -> list[Size]:
    if args.size:
        return [Size.parse(s) for s in args.size]
    if args.small:
        return [SMALL]
    return [SMALL, MEDIUM, LARGE] if args.large else [SMALL, MEDIUM]


async def main_async(args: argparse.Namespace) -> None:
    artifacts = ARTIFACTS
    artifacts.mkdir(parents=True, exist_ok=True)
    sizes, rates = sizes_from(args), rates_from(args)
    print(
        f"convergence benchmark: sizes {', '.join(map(str, sizes))}; QPS/burst "
        f"{', '.join(map(str, rates))}; {os.cpu_count()} CPUs; load {procs.load_average()}",
        flush=True,
    )
    results: Results = []
    for size in sizes:
        results += await measure_size(size, rates, args, artifacts)
    text = "\n".join(
        [
            "",
            report.summary(results),
            "",
            "p50/p99 are interpolated from controller_runtime_reconcile_time_seconds's buckets as "
            "Prometheus's histogram_quantile does; the limiter bound is (minimum writes - burst) "
            "/ QPS, the least time the client-side limiter allows for the minimum.",
            "",
            *watched_lines(),
            "",
            *(report.details(run, floors) for run, floors in results),
        ]
    )
    print(text)
    (artifacts / "report.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="only 100/10/5")
    parser.add_argument("--large", action="store_true", help="add 10,000/1,000/500")
    parser.add_argument("--size", action="append", help="S/T/U, repeatable (replaces the sizes)")
    parser.add_argument(
        "--kube-api-qps", type=float, action="append", help="aimd's QPS, repeatable (0: no limit)"
    )
    parser.add_argument(
        "--kube-api-burst", type=int, action="append", help="aimd's burst, paired with each QPS"
    )
    parser.add_argument("--workers", type=int, help="aimd's --workers (default: aimd's own)")
    parser.add_argument("--idle", type=float, help="idle seconds after convergence (20; 60 ≥1,000)")
    parser.add_argument("--sample-interval", type=float, default=2.0, help="/metrics scrapes (s)")
    parser.add_argument("--profile", action="store_true", help="py-spy each aimd run")
    parser.add_argument(
        "--watched-floor",
        action="store_true",
        help="also run the floor beside a standby aimd (watching, never leading)",
    )
    parser.add_argument("--profile-rate", type=int, default=50, help="py-spy samples a second")
    parser.add_argument(
        "--apiserver-profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="kube-apiserver's CPU profile over each run's first SECONDS (artifacts)",
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # SIGTERM (kill, a CI timeout) stops it as Ctrl-C does, through the finally blocks that stop
    # aimd and the control plane, rather than leaving an API server and etcd running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
