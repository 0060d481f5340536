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
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from aimd.api import kinds
from aimd.api.crds import all_crds
from aimd.cli.cache import cache_rows, format_table
from aimd.dev.controlplane import REPO_ROOT, ControlPlane, build_binaries, free_port
from aimd.dev.kubelet import LocalKubelet
from aimd.dev.localhub import LocalHub, serve_hub
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


async def dev(args: argparse.Namespace, plane: ControlPlane) -> int:
    from aimd.caching.controller import run as run_controller

    samples = load_samples(args.samples, include_s3=args.include_s3)
    async with contextlib.AsyncExitStack() as stack:
        client = await KubeClient.from_kubeconfig(str(plane.kubeconfig))
        stack.push_async_callback(client.close)
        extra_env: dict[str, str] = {}
        if args.hf_endpoint:
            extra_env["HF_ENDPOINT"] = args.hf_endpoint
        else:
            hub: LocalHub = await stack.enter_async_context(serve_hub())
            for repo in sorted(hf_repos(samples)):
                hub.add_model(repo, size_mib=args.model_mib)
            extra_env["HF_ENDPOINT"] = hub.url
            print(f"local hub at {hub.url} serves: {', '.join(sorted(hub.repos))}", flush=True)
        kubelet = LocalKubelet(
            client,
            plane.workdir / "node",
            server=plane.server,
            ca_file=str(plane.ca_file),
            extra_env=extra_env,
        )
        settings = Settings(
            kubeconfig=str(plane.kubeconfig),
            metrics_bind_address=f"127.0.0.1:{args.metrics_port}",
            metrics_secure=False,  # a local demo: plain HTTP on loopback
            health_probe_bind_address=f"127.0.0.1:{free_port()}",
            image="aimd",
        )
        print(f"metrics at http://127.0.0.1:{args.metrics_port}/metrics", flush=True)
        async with asyncio.TaskGroup() as group:
            controller = group.create_task(run_controller(settings, "aimd", handle_signals=False))
            node = group.create_task(kubelet.run())
            await apply_samples(client, samples)
            try:
                code = await show_progress(client, args.exit_when_ready, args.timeout)
            finally:
                controller.cancel()
                node.cancel()
    return code


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the control plane keeps its data (default: a temporary directory)",
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


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="aimd-dev-"))
    plane = ControlPlane(binaries=build_binaries(), workdir=workdir)
    print(f"starting the local control plane in {workdir}", flush=True)
    plane.start(crds=all_crds())
    print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
    try:
        return asyncio.run(dev(args, plane))
    except KeyboardInterrupt:
        return 0
    finally:
        plane.stop()
