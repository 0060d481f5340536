"""The real-node suite's fixtures: one real single-node cluster per test run (aimd/dev/node.py),
aimd installed on it from manifests/ with kustomize the way the README tells a user, and the
servers its pods download from (the local hub, moto's S3), all inside the node's network
namespace.

Machines without the means (not root, no containerd, ...) skip the suite with one line saying
why. The node is started once, only when a test here asks for it, and stopped at the end of the
run however it ends; its logs are kept in tests/.artifacts/realnode-logs when a test failed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest
import yaml

from aimd.caching.policy import ANNOTATION_ALLOWED_ENDPOINTS
from aimd.dev import netns
from aimd.dev.localhub import LocalHub, serve_hub
from aimd.dev.node import NodeBusy, RealNode, missing_means, running_node
from aimd.kube.client import KubeClient
from aimd.kube.resources import DEPLOYMENTS, LEASES
from tests.conftest import ARTIFACTS
from tests.e2e.realnode.support import SYSTEM, eventually_sync
from tests.support import REPO

MANIFESTS = REPO / "manifests"
# Objects for the Prometheus Operator, whose CRDs this cluster does not have (the README says to
# leave them out then).
PROMETHEUS_KINDS = {"ServiceMonitor", "PrometheusRule", "PodMonitor"}
S3_PORT = 9000


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def node_possible() -> None:
    """Skips, with one line saying why, on a machine that cannot run the node (every test here
    skips from this one place, so the summary shows that line once)."""
    reason = missing_means()
    if reason:
        pytest.skip(f"real-node suite skipped: {reason}")


@pytest.fixture(scope="session")
def real_node(node_possible: None, request: pytest.FixtureRequest) -> Iterator[RealNode]:
    # A SIGTERM (CI giving up, a person's kill) should stop the node like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="aimd-node-"))
    wait = float(os.environ.get("AIMD_REAL_NODE_WAIT", "900"))
    try:
        with running_node(workdir, lock_timeout=wait) as node:
            print(f"\nreal node up: {node.timings}", flush=True)
            node.add_storage_class()
            try:
                yield node
            finally:
                if request.session.testsfailed:
                    kept = ARTIFACTS / "realnode-logs"
                    shutil.rmtree(kept, ignore_errors=True)
                    shutil.copytree(node.log_dir, kept)
                    print(f"\nreal-node logs kept in {kept}")
        print(f"\nreal node stopped in {node.timings.get('stop')}s", flush=True)
    except NodeBusy as error:
        pytest.skip(f"real-node suite skipped: {error}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
async def node_kube(real_node: RealNode) -> AsyncIterator[KubeClient]:
    """Cluster-admin client of the real node's API server."""
    client = await KubeClient.from_kubeconfig(str(real_node.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


@dataclass
class Installed:
    """aimd as installed from manifests/: its namespace and the image its pods run."""

    node: RealNode
    namespace: str = SYSTEM

    def leader(self) -> str | None:
        """The pod name of the replica holding the Lease, if any."""
        lease = self.node.api(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/aimd-leader"
        )
        holder = (lease.get("spec") or {}).get("holderIdentity") or ""
        return holder.rpartition("_")[0] or None


def overlay(directory: Path, image: str) -> Path:
    """A kustomization that uses manifests/ as its base and sets the image to the local build,
    as a user's own overlay would (the base's replacement copies it into AIMD_IMAGE too)."""
    name, _, tag = image.rpartition(":")
    base = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(MANIFESTS, directory)],
                "images": [{"name": "aimd", "newName": name, "newTag": tag}],
                "replacements": base.get("replacements", []),
            }
        )
    )
    return directory


@pytest.fixture(scope="session")
def aimd_installed(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """`kubectl kustomize` of an overlay on manifests/, applied server-side; returns once the
    controller's two replicas are available and one of them leads."""
    rendered = real_node.run_kubectl(
        "kustomize", str(overlay(tmp_path_factory.mktemp("overlay"), real_node.image))
    )
    documents = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] not in PROMETHEUS_KINDS]
    real_node.run_kubectl(
        "apply", "--server-side", "--field-manager=aimd-e2e", "-f", "-",
        stdin=yaml.safe_dump_all(documents),
    )  # fmt: skip
    installed = Installed(real_node)

    def available() -> bool:
        deployment = real_node.api("GET", DEPLOYMENTS.path(SYSTEM, "aimd-controller"))
        return bool((deployment.get("status") or {}).get("availableReplicas") == 2)

    eventually_sync(available, timeout=240, what="aimd-controller 2/2 available")
    eventually_sync(installed.leader, timeout=120, what="a leader holding the Lease")
    assert LEASES.path(SYSTEM, "aimd-leader")
    return installed


@pytest.fixture
def node_namespace(
    real_node: RealNode, node_hub: LocalHub, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace named after the test; deleted afterwards without waiting. Its admin
    allows the local hub and S3 server as download endpoints (docs/security.md), as one would
    for a self-hosted mirror."""
    import re
    import secrets

    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{stem}-{secrets.token_hex(3)}"
    endpoints = f"{node_hub.url},http://{real_node.node_ip}:{S3_PORT}"
    metadata = {"name": name, "annotations": {ANNOTATION_ALLOWED_ENDPOINTS: endpoints}}
    real_node.api(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata},
    )
    yield name
    with contextlib.suppress(Exception):
        real_node.api("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="session")
async def node_hub(real_node: RealNode) -> AsyncIterator[LocalHub]:
    """The local hub, listening on the node IP inside the node's namespace (pods reach it there,
    and so do tests, over the veth)."""
    sock = netns.listening_socket(real_node.network.path, real_node.node_ip)
    async with serve_hub(sock=sock) as hub:
        yield hub


@pytest.fixture(scope="session")
def node_s3(real_node: RealNode) -> Iterator[str]:
    """moto's S3 server on the node IP inside the node's namespace; returns its endpoint."""
    endpoint = f"http://{real_node.node_ip}:{S3_PORT}"
    log = open(real_node.log_dir / "moto.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        ["nsenter", f"--net={real_node.network.path}", "--",
         sys.executable, "-m", "moto.server", "-H", real_node.node_ip, "-p", str(S3_PORT)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"moto exited with {process.returncode}")
        try:
            with urllib.request.urlopen(endpoint, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    try:
        eventually_sync(answers, timeout=60, what="moto's S3 server")
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a machine that cannot run the node, the suite is left out with one line saying why."""
    reason = missing_means()
    here = Path(__file__).parent
    ours = [item for item in items if here in item.path.parents]
    if not reason or not ours:
        return
    items[:] = [item for item in items if item not in ours]
    config.hook.pytest_deselected(items=ours)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"real-node suite skipped ({len(ours)} tests): {reason}")
