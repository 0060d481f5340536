"""A stand-in for the kubelet, the Job controller and the PV binder, for a cluster with no nodes.

The local control plane runs no pods. `LocalKubelet` plays their part for aimd's own workloads:
it binds each PersistentVolumeClaim to a directory on this machine, runs each Job's container
command as a local process (volume mounts mapped to those directories, `env` resolved from
values, Secrets and ConfigMaps, the pod's service account as a short-lived token), and writes the
Job's status the way the Job controller would. It is what `aimd dev` and the end-to-end tests use
to move downloads forward; it is not meant for anything else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aimd.kube.client import KubeClient
from aimd.kube.errors import ApiError, NotFound
from aimd.kube.resources import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    JOBS,
    PERSISTENT_VOLUME_CLAIMS,
    SECRETS,
    SERVICE_ACCOUNTS,
)

log = logging.getLogger(__name__)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_finished(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)


def completed_status(start_time: str) -> dict[str, Any]:
    """The status the Job controller writes for a Job whose one pod succeeded.

    The API server checks the transition: `SuccessCriteriaMet` must come with `Complete`, and
    both need a start and a completion time.
    """
    stamp = now()
    return {
        "startTime": start_time,
        "completionTime": stamp,
        "succeeded": 1,
        "active": 0,
        "ready": 0,
        "terminating": 0,
        "conditions": [
            _condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                stamp,
            ),
            _condition(
                "Complete", "CompletionsReached", "Reached expected number of succeeded pods", stamp
            ),
        ],
    }


def failed_status(start_time: str, message: str) -> dict[str, Any]:
    """The status the Job controller writes when the backoff limit is exceeded."""
    stamp = now()
    return {
        "startTime": start_time,
        "failed": 1,
        "active": 0,
        "ready": 0,
        "terminating": 0,
        "conditions": [
            _condition("FailureTarget", "BackoffLimitExceeded", message, stamp),
            _condition("Failed", "BackoffLimitExceeded", message, stamp),
        ],
    }


def deployment_current(deployment: dict[str, Any]) -> bool:
    status = deployment.get("status") or {}
    return bool(
        status.get("observedGeneration") == deployment["metadata"].get("generation")
        and status.get("availableReplicas", 0) == deployment["spec"].get("replicas", 1)
    )


def rolled_out_status(deployment: dict[str, Any]) -> dict[str, Any]:
    replicas = deployment["spec"].get("replicas", 1)
    stamp = now()
    return {
        "observedGeneration": deployment["metadata"].get("generation"),
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
                "lastUpdateTime": stamp,
                "lastTransitionTime": stamp,
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": "ReplicaSet has successfully progressed.",
                "lastUpdateTime": stamp,
                "lastTransitionTime": stamp,
            },
        ],
    }


def _condition(type_: str, reason: str, message: str, stamp: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
    }


@dataclass
class LocalKubelet:
    """Runs the Jobs, binds the PVCs and reports the Deployments of one namespace (or all) on
    this machine.

    `extra_env` is given to every Job before its own env (e.g. `HF_ENDPOINT` of a local hub).
    """

    client: KubeClient
    root: Path
    server: str
    ca_file: str | None = None
    namespace: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    interval: float = 0.5
    aimd_command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "aimd"])
    _running: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def volume_dir(self, namespace: str, claim: str) -> Path:
        return self.root / "volumes" / namespace / claim

    async def run(self) -> None:
        """Polls until cancelled: binds new PVCs, starts every unfinished Job not yet running."""
        try:
            while True:
                await self.sync_once()
                await asyncio.sleep(self.interval)
        finally:
            for task in self._running.values():
                task.cancel()
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def sync_once(self) -> None:
        for claim in (await self.client.list(PERSISTENT_VOLUME_CLAIMS, self.namespace))["items"]:
            if (claim.get("status") or {}).get("phase") != "Bound" and not claim["metadata"].get(
                "deletionTimestamp"
            ):
                await self.bind(claim)
        for deployment in (await self.client.list(DEPLOYMENTS, self.namespace))["items"]:
            if not deployment_current(deployment):
                await self.roll_out(deployment)
        for job in (await self.client.list(JOBS, self.namespace))["items"]:
            key = (
                f"{job['metadata']['namespace']}/{job['metadata']['name']}/{job['metadata']['uid']}"
            )
            if (
                job_finished(job)
                or key in self._running
                or job["metadata"].get("deletionTimestamp")
            ):
                continue
            self._running[key] = asyncio.create_task(self.run_job(job), name=f"job {key}")

    async def bind(self, claim: dict[str, Any]) -> None:
        """Marks a PVC Bound with the capacity it asked for, backed by a local directory."""
        meta = claim["metadata"]
        self.volume_dir(meta["namespace"], meta["name"]).mkdir(parents=True, exist_ok=True)
        requested = claim["spec"].get("resources", {}).get("requests", {})
        status = {
            "phase": "Bound",
            "accessModes": claim["spec"].get("accessModes", ["ReadWriteOnce"]),
            "capacity": {"storage": requested.get("storage", "1Gi")},
        }
        with contextlib.suppress(NotFound):
            await self.client.patch(
                PERSISTENT_VOLUME_CLAIMS,
                meta["name"],
                {"status": status},
                meta["namespace"],
                subresource="status",
            )

    async def roll_out(self, deployment: dict[str, Any]) -> None:
        """Reports every replica of a Deployment ready and available, as the Deployment
        controller would once its pods run (this machine runs no serving pods)."""
        meta = deployment["metadata"]
        with contextlib.suppress(NotFound):
            await self.client.patch(
                DEPLOYMENTS,
                meta["name"],
                {"status": rolled_out_status(deployment)},
                meta["namespace"],
                subresource="status",
            )

    async def run_job(self, job: dict[str, Any]) -> None:
        """Runs the Job's first container to the end and records the outcome in the Job status."""
        meta = job["metadata"]
        namespace = meta["namespace"]
        start_time = now()
        try:
            exit_code, output = await self._run_container(job)
        except Exception as error:  # a Job we cannot even start fails like a pod that cannot
            log.exception("job %s/%s could not start", namespace, meta["name"])
            exit_code, output = 128, str(error)
        if exit_code == 0:
            status = completed_status(start_time)
        else:
            status = failed_status(
                start_time, f"container exited with {exit_code}: {output[-500:]}"
            )
        try:
            await self.client.patch(
                JOBS, meta["name"], {"status": status}, namespace, subresource="status"
            )
        except (NotFound, ApiError) as error:
            log.info("job %s/%s gone or refused its status: %s", namespace, meta["name"], error)

    async def _run_container(self, job: dict[str, Any]) -> tuple[int, str]:
        meta = job["metadata"]
        namespace = meta["namespace"]
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        mounts = self._mounts(namespace, pod, container)
        argv = self._argv(container, mounts)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            **self.extra_env,
            **await self._env(namespace, container),
        }
        service_account = pod.get("serviceAccountName")
        if service_account and pod.get("automountServiceAccountToken", True) is not False:
            env["KUBECONFIG"] = str(
                await self._service_account_kubeconfig(namespace, service_account)
            )
        log.info("running job %s/%s: %s", namespace, meta["name"], " ".join(argv))
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            output, _ = await process.communicate()
        except asyncio.CancelledError:
            process.kill()
            await process.wait()
            raise
        return process.returncode or 0, output.decode(errors="replace")

    def _mounts(
        self, namespace: str, pod: dict[str, Any], container: dict[str, Any]
    ) -> dict[str, Path]:
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod.get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts", []):
            if mount["name"] in claims:
                directory = self.volume_dir(namespace, claims[mount["name"]])
                directory.mkdir(parents=True, exist_ok=True)
                mounts[mount["mountPath"].rstrip("/")] = directory
        return mounts

    def _argv(self, container: dict[str, Any], mounts: dict[str, Path]) -> list[str]:
        """The container's command with mount paths rewritten to their local directories; the
        image's `aimd` entry point becomes this Python's `-m aimd`."""
        argv = [*container.get("command", []), *container.get("args", [])]
        if argv and argv[0] == "aimd":
            argv = [*self.aimd_command, *argv[1:]]
        elif not argv:
            argv = list(self.aimd_command)

        def rewrite(arg: str) -> str:
            for path, directory in mounts.items():
                if arg == path or arg.startswith(f"{path}/"):
                    return str(directory) + arg[len(path) :]
            return arg

        return [rewrite(arg) for arg in argv]

    async def _env(self, namespace: str, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
                continue
            source = var.get("valueFrom", {})
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = await self.client.get(SECRETS, ref["name"], namespace)
                env[var["name"]] = base64.b64decode(secret.get("data", {})[ref["key"]]).decode()
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                config_map = await self.client.get(CONFIG_MAPS, ref["name"], namespace)
                env[var["name"]] = config_map.get("data", {})[ref["key"]]
            elif "fieldRef" in source:
                field_path = source["fieldRef"]["fieldPath"]
                if field_path == "metadata.namespace":
                    env[var["name"]] = namespace
        return env

    async def _service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig holding a fresh token of the pod's service account (TokenRequest API)."""
        review = await self.client.request(
            "POST",
            SERVICE_ACCOUNTS.path(namespace, name, "token"),
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600},
            },
        )
        token = review["status"]["token"]
        cluster = {"server": self.server}
        if self.ca_file:
            cluster["certificate-authority"] = self.ca_file
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "local",
                    "context": {"cluster": "local", "user": name, "namespace": namespace},
                }
            ],
            "current-context": "local",
        }
        path = self.root / "tokens" / namespace / f"{name}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config))
        return path
