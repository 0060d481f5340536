"""The Helm chart's uninstall path: a pre-delete hook Job running `aimd uninstall` as its own
ServiceAccount, which holds only what that needs.

Nothing here runs pods, so the last test plays the kubelet: it runs the hook Job's command as a
process with the hook ServiceAccount's token, against the Deployment the chart renders and an
`aimd run` holding the Lease, and stops that process when the Deployment is scaled to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from aimd.api import kinds
from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient
from aimd.kube.errors import ApiError, NotFound
from aimd.kube.resources import DEPLOYMENTS, JOBS, LEASES, PODS
from tests.integration.test_cli_uninstall import controller, finalizers, gone, with_finalizer
from tests.integration.test_deploy_helm import CHART, helm, helm_run, template
from tests.integration.test_deploy_kustomize import resource_of
from tests.integration.test_kube_auth import service_account_token
from tests.support import eventually, sample

__all__ = ["helm"]  # the fixture, shared with test_deploy_helm
Object = dict[str, Any]
HOOK = "helm.sh/hook"


def hooks(helm: Path, namespace: str = "aimd-system", **values: str) -> list[Object]:
    """The uninstall hook's objects, as `helm template` renders them."""
    settings = [f"--set={key}={value}" for key, value in values.items()]
    result = helm_run(
        helm,
        "template",
        "aimd",
        str(CHART),
        f"--namespace={namespace}",
        "--show-only=templates/uninstall-hook.yaml",
        *settings,
    )
    if "could not find template" in result.stderr:  # switched off: nothing rendered
        return []
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[Object], kind: str) -> Object:
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    return found


def job_args(objects: list[Object]) -> list[str]:
    (container,) = by_kind(objects, "Job")["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    return args


def test_the_uninstall_hook_runs_before_helm_deletes_and_cleans_up_after_itself(
    helm: Path,
) -> None:
    objects = hooks(helm)
    assert sorted(obj["kind"] for obj in objects) == [
        "ClusterRole", "ClusterRoleBinding", "Job", "Role", "RoleBinding", "ServiceAccount",
    ]  # fmt: skip
    for obj in objects:
        annotations = obj["metadata"]["annotations"]
        assert annotations[HOOK] == "pre-delete"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        if obj["kind"] != "Job":  # its rights exist before the Job starts
            assert int(annotations["helm.sh/hook-weight"]) < 0
    assert job_args(objects) == [
        "uninstall",
        "--stop-controller=aimd-system/aimd-controller",
        "--leader-election-namespace=aimd-system",
        "--leader-election-id=aimd-leader",
        "--timeout=120",
    ]
    pod = by_kind(objects, "Job")["spec"]["template"]
    selector = by_kind(template(helm), "Deployment")["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= pod["metadata"]["labels"].items(), "not one of its own pods"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_hook_can_delete_caches_or_be_switched_off(helm: Path) -> None:
    objects = hooks(helm, **{"uninstall.deleteCaches": "true"})
    assert job_args(objects)[-2:] == ["--delete-caches", "--keep-available"]
    rules = by_kind(objects, "ClusterRole")["rules"]
    assert any("aimmodelcaches" in r["resources"] and "delete" in r["verbs"] for r in rules)
    everything = {"uninstall.deleteCaches": "true", "uninstall.keepAvailable": "false"}
    assert job_args(hooks(helm, **everything))[-1] == "--delete-caches"
    assert hooks(helm, **{"uninstall.enabled": "false"}) == []
    without = hooks(helm)
    rules = by_kind(without, "ClusterRole")["rules"]
    assert not any("delete" in r["verbs"] for r in rules), "no delete unless asked"


async def test_the_api_server_accepts_the_hook_objects(
    helm: Path, kube: KubeClient, namespace: str
) -> None:
    """A dry run with strict field validation, so a misspelt field fails."""
    params = {"dryRun": "All", "fieldManager": "helm", "fieldValidation": "Strict", "force": "true"}
    for obj in hooks(helm, namespace, **{"uninstall.deleteCaches": "true"}):
        resource = JOBS if obj["kind"] == "Job" else resource_of(obj)
        await kube.request(
            "PATCH",
            resource.path(obj["metadata"].get("namespace"), obj["metadata"]["name"]),
            params=params,
            body=obj,
            content_type="application/apply-patch+yaml",
        )


@contextlib.asynccontextmanager
async def applied(kube: KubeClient, objects: list[Object]) -> AsyncIterator[None]:
    """The objects created, and deleted afterwards (the cluster-wide ones outlive a namespace)."""
    try:
        for obj in objects:
            await kube.create(resource_of(obj), obj, obj["metadata"].get("namespace"))
        yield
    finally:
        for obj in reversed(objects):
            with contextlib.suppress(NotFound):
                await kube.delete(
                    resource_of(obj), obj["metadata"]["name"], obj["metadata"].get("namespace")
                )


def token_kubeconfig(control_plane: ControlPlane, token: str, path: Path) -> Path:
    config: dict[str, Any] = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["users"] = [{"name": "hook", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "hook"
    path.write_text(yaml.safe_dump(config))
    return path


async def stand_in_pod(kube: KubeClient, namespace: str, labels: dict[str, str]) -> Object | None:
    """The controller's pod, as the Deployment's selector finds it (never scheduled)."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "controller-0", "labels": labels},
        "spec": {"containers": [{"name": "manager", "image": "aimd:test"}]},
    }
    try:
        created: Object = await kube.create(PODS, body, namespace)
    except ApiError:  # the namespace's default ServiceAccount is not there yet
        return None
    return created


async def test_the_hooks_command_with_the_hooks_rights_stops_aimd_and_frees_its_objects(
    helm: Path, kube: KubeClient, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    release = f"aimd-{secrets.token_hex(3)}"  # cluster-wide names of its own
    lease = f"{release}-leader"
    values = {"fullnameOverride": release, "leaderElection.id": lease}
    hook = hooks(helm, namespace, **values)
    rights = [obj for obj in hook if obj["kind"] != "Job"]
    deployment = by_kind(template(helm, namespace, **values), "Deployment")
    args = job_args(hook)
    await kube.create(kinds.SERVICE_TEMPLATES, sample("aimservicetemplate"), namespace)
    await kube.create(kinds.SERVICES, sample("aimservice"), namespace)

    async with (
        applied(kube, [*rights, deployment]),
        controller(control_plane.kubeconfig, namespace, lease) as running,
    ):
        labels = deployment["spec"]["selector"]["matchLabels"]
        await eventually(functools.partial(stand_in_pod, kube, namespace, labels), what="pod")
        await eventually(
            functools.partial(with_finalizer, kube, kinds.SERVICES, "chat", namespace),
            what="aimd's finalizer on aimsvc/chat",
        )

        async def kubelet() -> None:
            """Stops the controller's process and pod once its Deployment is scaled to 0."""
            name = deployment["metadata"]["name"]

            async def scaled_down() -> bool:
                found = await kube.get(DEPLOYMENTS, name, namespace)
                return bool(found["spec"]["replicas"] == 0)

            await eventually(scaled_down, timeout=120, what="the Deployment scaled to 0")
            running.send_signal(signal.SIGTERM)
            await running.wait()
            await kube.delete(PODS, "controller-0", namespace)

        token = await service_account_token(kube, namespace, f"{release}-uninstall")
        env = {key: value for key, value in os.environ.items() if not key.startswith("KUBERN")}
        env["KUBECONFIG"] = str(token_kubeconfig(control_plane, token, tmp_path / "hook"))
        stopping = asyncio.create_task(kubelet())
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aimd",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        await stopping

    assert process.returncode == 0, out.decode() + err.decode()
    assert f"Scaled Deployment {namespace}/{release}-controller to 0" in out.decode()
    assert (await kube.get(LEASES, lease, namespace))["spec"].get("holderIdentity") in ("", None)
    assert finalizers(await kube.get(kinds.SERVICES, "chat", namespace)) == []
    tcs = (await kube.list(kinds.TEMPLATE_CACHES, namespace))["items"]
    assert tcs
    assert all(finalizers(tc) == [] for tc in tcs)
    await kube.delete(kinds.SERVICES, "chat", namespace)
    await eventually(lambda: gone(kube, kinds.SERVICES, "chat", namespace), what="aimsvc gone")
