"""The local kubelet stand-in runs Jobs the way a node would and records their outcome."""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path
from typing import Any

from aimd.dev.controlplane import ControlPlane
from aimd.dev.kubelet import LocalKubelet, job_finished
from aimd.kube.client import KubeClient
from aimd.kube.resources import JOBS, PERSISTENT_VOLUME_CLAIMS, SECRETS, SERVICE_ACCOUNTS
from tests.support import eventually

WRITE_ARGV = """
import os, sys
with open(sys.argv[1], "w") as out:
    words = [os.environ["GREETING"], os.environ["SECRET"], str("KUBECONFIG" in os.environ)]
    out.write(" ".join(words))
"""


def job(name: str, argv: list[str], **pod: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "example.com/any:1",
                            "command": argv,
                            "env": [
                                {"name": "GREETING", "value": "hello"},
                                {
                                    "name": "SECRET",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "creds", "key": "token"}
                                    },
                                },
                            ],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "store"}}],
                    **pod,
                }
            },
        },
    }


async def test_jobs_run_locally_with_volumes_env_and_outcome(
    kube: KubeClient, namespace: str, control_plane: ControlPlane, tmp_path: Path
) -> None:
    await kube.create(
        PERSISTENT_VOLUME_CLAIMS,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "store"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "2Gi"}},
            },
        },
        namespace,
    )
    await kube.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"token": base64.b64encode(b"s3cret").decode()},
        },
        namespace,
    )
    await kube.create(
        SERVICE_ACCOUNTS,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner"}},
        namespace,
    )
    await kube.create(
        JOBS,
        job(
            "writes",
            [sys.executable, "-c", WRITE_ARGV, "/data/out.txt"],
            serviceAccountName="runner",
        ),
        namespace,
    )
    await kube.create(JOBS, job("fails", [sys.executable, "-c", "raise SystemExit(3)"]), namespace)

    kubelet = LocalKubelet(
        kube,
        tmp_path,
        server=control_plane.server,
        ca_file=str(control_plane.ca_file),
        namespace=namespace,
    )
    runner = asyncio.create_task(kubelet.run())
    try:

        async def finished(name: str) -> dict[str, Any] | None:
            current = await kube.get(JOBS, name, namespace)
            return current if job_finished(current) else None

        written = await eventually(
            lambda: finished("writes"), timeout=60, what="job writes to finish"
        )
        failed = await eventually(lambda: finished("fails"), timeout=60, what="job fails to finish")
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    assert {c["type"] for c in written["status"]["conditions"]} == {
        "SuccessCriteriaMet",
        "Complete",
    }
    assert written["status"]["succeeded"] == 1
    assert (kubelet.volume_dir(namespace, "store") / "out.txt").read_text() == "hello s3cret True"
    assert {c["type"] for c in failed["status"]["conditions"]} == {"FailureTarget", "Failed"}
    assert (
        "exited with 3"
        in next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")["message"]
    )
    claim = await kube.get(PERSISTENT_VOLUME_CLAIMS, "store", namespace)
    assert claim["status"]["phase"] == "Bound"
