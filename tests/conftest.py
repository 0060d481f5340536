"""Shared fixtures: one real control plane per test run, one namespace per test.

The control plane is etcd + kube-apiserver + kube-controller-manager (garbage collector, namespace
controller, PVC protection), built from the pinned modules in tools/testenv and started only when a
test asks for it, so `pytest tests/unit` never builds Go. Its logs are kept under
tests/.artifacts/ when a test failed.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from aimd.api.crds import all_crds
from aimd.dev.controlplane import ControlPlane, RequestFailed, build_binaries

if TYPE_CHECKING:
    from aimd.kube.client import KubeClient

ARTIFACTS = Path(__file__).parent / ".artifacts"


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    workdir = Path(tempfile.mkdtemp(prefix="aimd-testenv-"))
    plane = ControlPlane(binaries=build_binaries(), workdir=workdir, strict_rbac=True)
    plane.start(crds=all_crds())
    try:
        yield plane
    finally:
        plane.stop()
        if request.session.testsfailed:
            kept = ARTIFACTS / "testenv-logs"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(plane.log_dir, kept)
            print(f"\ncontrol-plane logs kept in {kept}")
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    """A client with cluster-admin rights, shared by every test."""
    from aimd.kube.client import KubeClient

    client = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deleted afterwards without waiting for it."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{stem}-{secrets.token_hex(3)}"
    control_plane.api(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    yield name
    try:
        control_plane.api("DELETE", f"/api/v1/namespaces/{name}")
    except RequestFailed as error:
        if error.code != 404:
            raise
