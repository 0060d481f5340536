"""`aimd dev`: aimd end to end on this machine, no cluster and no internet needed.

It starts the local control plane (etcd, kube-apiserver, kube-controller-manager), installs the
CRDs, runs the controller in this process, runs download Jobs locally through `LocalKubelet`, and
applies the samples. Unless `--hf-endpoint` names a real hub, the Jobs download from a local hub
that serves a small synthetic model for every hf:// source of the samples, so the caches really
move from Pending to Available on this machine. The terminal shows the caches as they change;
`export KUBECONFIG=...` (printed at start) lets kubectl look at the same cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from aimd import logs
from aimd.api import kinds
from aimd.api.crds import all_crds
from aimd.cli.cache import cache_rows, format_table
from aimd.dev import netns
from aimd.dev.controlplane import REPO_ROOT, ControlPlane, build_binaries, free_port
from aimd.dev.kubelet import LocalKubelet
from aimd.dev.localhub import LocalHub, serve_hub
from aimd.dev.node import NodeBusy, RealNode, missing_means, running_node
from aimd.kube.client import KubeClient
from aimd.kube.errors import AlreadyExists
from aimd.kube.resources import SECRETS, Resource
from aimd.settings import Settings

log = logging.getLogger(__name__)

SAMPLES_DIR = REPO_ROOT / "manifests" / "samples"
NAMESPACE = "default"
BY_KIND: dict[str, Resource] = {r.kind: r for r in kinds.ALL_KINDS}


def load_samples(directory: Path, include_s3: bool) -> list[dict[str, Any]]:
    """The samples to apply, templates first; s3:// sources need a store the demo does not have."""
    samples = [yaml.safe_load(path.read_text()) for path in sorted(directory.glob("*.yaml"))]
    if not include_s3:
        samples = [s for s in samples if "s3://" not in yaml.safe_dump(s)]
    order = [r.kind for r in kinds.ALL_KINDS]
    return sorted(samples, key=lambda s: order.index(s["kind"]))


def hf_repos(samples: list[dict[str, Any]]) -> set[str]:
    """The hub repos the samples name (`hf://org/name[@rev]` → `org/name`)."""
    repos = set()
    for sample in samples:
        spec = sample.get("spec", {})
        uris = [s["sourceUri"] for s in spec.get("modelSources", [])] + [spec.get("sourceUri", "")]
        repos |= {u.removeprefix("hf://").partition("@")[0] for u in uris if u.startswith("hf://")}
    return repos


def secret_keys(samples: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(Secret, key) pairs the samples' env refers to; the demo creates them with placeholders."""
    keys = set()
    for sample in samples:
        spec = sample.get("spec", {})
        for source in [spec, *spec.get("modelSources", [])]:
            for var in source.get("env") or []:
                ref = (var.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    keys.add((ref["name"], ref["key"]))
    return keys


async def apply_samples(client: KubeClient, samples: list[dict[str, Any]]) -> None:
    for name, key in sorted(secret_keys(samples)):
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "data": {key: base64.b64encode(b"demo-token").decode()},
        }
        with contextlib.suppress(AlreadyExists):
            await client.create(SECRETS, secret, NAMESPACE)
    for sample in samples:
        resource = BY_KIND[sample["kind"]]
        with contextlib.suppress(AlreadyExists):
            await client.create(resource, sample, NAMESPACE if resource.namespaced else None)


async def everything_ready(client: KubeClient) -> tuple[bool, str]:
    """Whether every cache is Available and every service Running, and the table to show."""
    mcs = (await client.list(kinds.MODEL_CACHES, NAMESPACE))["items"]
    tcs = (await client.list(kinds.TEMPLATE_CACHES, NAMESPACE))["items"]
    svcs = (await client.list(kinds.SERVICES, NAMESPACE))["items"]
    table = format_table(cache_rows(mcs, tcs, svcs))
    services = "\n".join(
        f"aimsvc/{s['metadata']['name']}: {(s.get('status') or {}).get('status', 'Pending')}"
        for s in svcs
    )
    ready = (
        bool(mcs)
        and all((o.get("status") or {}).get("status") == "Available" for o in [*mcs, *tcs])
        and all((s.get("status") or {}).get("status") == "Running" for s in svcs)
    )
    return ready, f"{table}\n{services}".strip()


async def show_progress(client: KubeClient, exit_when_ready: bool, give_up_after: float) -> int:
    shown = ""
    deadline = time.monotonic() + give_up_after
    while True:
        ready, view = await everything_ready(client)
        if view != shown:
            print(f"\n{time.strftime('%H:%M:%S')}\n{view}", flush=True)
            shown = view
        if ready and exit_when_ready:
            print("\nevery cache is Available and every service Running", flush=True)
            return 0
        if exit_when_ready and time.monotonic() > deadline:
            print(f"\nnot ready after {give_up_after:.0f}s", file=sys.stderr, flush=True)
            return 1
        await asyncio.sleep(1.0)


def sample_endpoints(samples: list[dict[str, Any]]) -> tuple[str, ...]:
    """The endpoints (HF_ENDPOINT, AWS_ENDPOINT_URL*) the samples' env sets, each once."""
    found: dict[str, None] = {}
    for sample in samples:
        spec = sample.get("spec", {})
        for source in [spec, *spec.get("modelSources", [])]:
            for var in source.get("env") or []:
                name = var.get("name", "")
                if (name == "HF_ENDPOINT" or name.startswith("AWS_ENDPOINT_URL")) and var.get(
                    "value"
                ):
                    found[var["value"]] = None
    return tuple(found)


def for_real_node(samples: list[dict[str, Any]], hub_url: str, image: str) -> list[dict[str, Any]]:
    """The samples as the real node can run them: templates served by the image's `serve-cache`
    (their own images cannot be pulled here, and the node has no GPUs), and every hf:// source
    downloaded from the local hub inside the node's namespace."""
    adapted = []
    hub_env = {"name": "HF_ENDPOINT", "value": hub_url}
    for sample in copy.deepcopy(samples):
        spec = sample.get("spec", {})
        if "modelSources" in spec:
            spec["image"] = image
            spec.pop("resources", None)
            for source in spec["modelSources"]:
                if source["sourceUri"].startswith("hf://"):
                    source["env"] = [*source.get("env", []), hub_env]
        elif str(spec.get("sourceUri", "")).startswith("hf://"):
            spec["env"] = [*spec.get("env", []), hub_env]
        adapted.append(sample)
    return adapted


async def dev(args: argparse.Namespace, plane: ControlPlane | RealNode) -> int:
    """The controller in this process over `plane`, the samples applied, progress shown.

    With the local control plane `LocalKubelet` runs the Jobs here; on the real node they run
    as pods, downloading from a hub that listens inside the node's network namespace.
    """
    from aimd.caching.controller import run as run_controller

    samples = load_samples(args.samples, include_s3=args.include_s3)
    real = isinstance(plane, RealNode)
    async with contextlib.AsyncExitStack() as stack:
        client = await KubeClient.from_kubeconfig(str(plane.kubeconfig))
        stack.push_async_callback(client.close)
        extra_env: dict[str, str] = {}
        if args.hf_endpoint:
            extra_env["HF_ENDPOINT"] = args.hf_endpoint
        else:
            sock = None
            if isinstance(plane, RealNode):
                sock = netns.listening_socket(plane.network.path, plane.node_ip)
            hub: LocalHub = await stack.enter_async_context(serve_hub(sock=sock))
            for repo in sorted(hf_repos(samples)):
                hub.add_model(repo, size_mib=args.model_mib)
            extra_env["HF_ENDPOINT"] = hub.url
            print(f"local hub at {hub.url} serves: {', '.join(sorted(hub.repos))}", flush=True)
        if isinstance(plane, RealNode):
            samples = for_real_node(samples, extra_env["HF_ENDPOINT"], plane.serve_image)
            plane.add_storage_class()
            # The samples' models are tens of GiB by their size; a local volume's capacity is
            # only what it declares, and the demo's files are small.
            plane.add_local_volumes(len(samples) + 2, size="100Gi")
        settings = Settings(
            kubeconfig=str(plane.kubeconfig),
            metrics_bind_address=f"127.0.0.1:{args.metrics_port}",
            metrics_secure=False,  # a local demo: plain HTTP on loopback
            # The demo is its own admin: it allows the endpoints its samples name (the local hub,
            # a MinIO for the s3:// sample) besides the public ones.
            allowed_endpoints=(*Settings().allowed_endpoints, *sample_endpoints(samples)),
            health_probe_bind_address=f"127.0.0.1:{free_port()}",
            image=plane.image if isinstance(plane, RealNode) else "aimd",
        )
        print(f"metrics at http://127.0.0.1:{args.metrics_port}/metrics", flush=True)
        async with asyncio.TaskGroup() as group:
            tasks: list[asyncio.Task[Any]] = [
                group.create_task(
                    run_controller(settings, settings.image or "aimd", handle_signals=False)
                )
            ]
            if not real:
                kubelet = LocalKubelet(
                    client,
                    plane.workdir / "node",
                    server=plane.server,
                    ca_file=str(plane.ca_file),
                    extra_env=extra_env,
                )
                tasks.append(group.create_task(kubelet.run()))
            await apply_samples(client, samples)
            try:
                code = await show_progress(client, args.exit_when_ready, args.timeout)
            finally:
                for task in tasks:
                    task.cancel()
    return code


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the control plane keeps its data (default: a temporary directory)",
    )
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="run a real single-node cluster (containerd, kubelet; root on Linux) instead of the "
        "local control plane, so downloads run as pods",
    )
    parser.add_argument("--samples", type=Path, default=SAMPLES_DIR, help="manifests to apply")
    parser.add_argument(
        "--include-s3", action="store_true", help="also apply samples with s3:// sources"
    )
    parser.add_argument(
        "--hf-endpoint", help="download hf:// sources from this hub instead of the local demo hub"
    )
    parser.add_argument("--model-mib", type=float, default=8, help="size of each demo model (MiB)")
    parser.add_argument("--metrics-port", type=int, default=8080)
    parser.add_argument(
        "--exit-when-ready", action="store_true", help="exit 0 once every cache is Available"
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="with --exit-when-ready: give up after (s)"
    )


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_like_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP end `aimd dev` the way Ctrl-C does: KeyboardInterrupt, so every
    `finally` runs and the processes it started are stopped. The first of these signals also
    makes the process ignore the next ones, so a second cannot cut that clean-up short."""

    def stop(signum: int, frame: FrameType | None) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def print_how_to_reach(plane: ControlPlane | RealNode) -> None:
    print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
    if isinstance(plane, RealNode):
        print(
            f"the real node's API server is {plane.server}, inside network namespace "
            f"{plane.network.name} (reached from here over {plane.network.host_link}); "
            f"kubectl is {plane.kubectl}; pods and their logs: "
            f"{plane.kubectl} get pods -A",
            flush=True,
        )


def main(args: argparse.Namespace) -> int:
    logs.setup("text", "warning")  # the terminal shows the caches; the controller's log is quiet
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="aimd-dev-"))
    with stop_like_ctrl_c():
        try:
            if args.real_node:
                return _run_on_real_node(args, workdir)
            plane = ControlPlane(binaries=build_binaries(), workdir=workdir)
            print(f"starting the local control plane in {workdir}", flush=True)
            plane.start(crds=all_crds())
            try:
                print_how_to_reach(plane)
                return asyncio.run(dev(args, plane))
            finally:
                plane.stop()
        except KeyboardInterrupt:
            return 0
        finally:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _run_on_real_node(args: argparse.Namespace, workdir: Path) -> int:
    reason = missing_means()
    if reason:
        print(f"aimd dev --real-node: {reason}", file=sys.stderr, flush=True)
        return 2
    print(f"starting the real node in {workdir}", flush=True)
    wait = float(os.environ.get("AIMD_REAL_NODE_WAIT", "0"))
    try:
        with running_node(workdir, lock_timeout=wait) as node:
            print(f"real node ready ({node.timings})", flush=True)
            for crd in all_crds():
                node.install_crd(crd)
            print_how_to_reach(node)
            return asyncio.run(dev(args, node))
    except NodeBusy as error:
        print(f"aimd dev --real-node: {error}", file=sys.stderr, flush=True)
        return 2
