"""`aimd cache ls`, `why` and `retry` against a real API server, as a person runs them."""

from __future__ import annotations

import asyncio
import sys

from aimd.api import kinds
from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient


async def aimd(control_plane: ControlPlane, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aimd",
        *args,
        "--kubeconfig",
        str(control_plane.kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_ls_why_and_retry(
    kube: KubeClient, namespace: str, control_plane: ControlPlane
) -> None:
    body = {
        "apiVersion": kinds.API_VERSION,
        "kind": "AIMModelCache",
        "metadata": {"name": "llama"},
        "spec": {"sourceUri": "hf://org/llama"},
    }
    await kube.create(kinds.MODEL_CACHES, body, namespace)
    status = {
        "status": "Failed",
        "failures": 1,
        "lastDownloadFailure": {
            "reason": "SourceNotFound",
            "message": "hf://org/llama does not exist",
        },
    }
    await kube.patch(
        kinds.MODEL_CACHES, "llama", {"status": status}, namespace, subresource="status"
    )

    code, out, _ = await aimd(control_plane, "cache", "ls", "-n", namespace)
    assert code == 0
    assert out.splitlines()[1].split()[:3] == ["llama", "Failed", "hf://org/llama"]

    code, out, _ = await aimd(control_plane, "cache", "why", "llama", "-n", namespace)
    assert code == 0
    assert "SourceNotFound" in out

    code, out, _ = await aimd(control_plane, "cache", "retry", "llama", "-n", namespace)
    assert (code, out.strip()) == (0, "llama retries now")
    annotations = (await kube.get(kinds.MODEL_CACHES, "llama", namespace))["metadata"][
        "annotations"
    ]
    assert annotations[kinds.ANNOTATION_RETRY]

    code, _, err = await aimd(control_plane, "cache", "why", "missing", "-n", namespace)
    assert code == 1
    assert "not found" in err
